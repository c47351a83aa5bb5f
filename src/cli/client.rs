//! The client subcommands: one request to the daemon's control socket, the answer printed for
//! people (or as JSON with `--json`), and a plain message when no daemon is listening.

use std::io::Write;
use std::path::Path;

use processcontrol::adapters::control::{self, Request};
use processcontrol::adapters::human;
use serde_json::Value;

use super::exit;

/// Exit status when the daemon answered with an error or could not be reached.
pub const FAILED: u8 = 1;

/// Sends one request and prints the answer; `json` prints it raw.
pub fn call(socket: &Path, request: Request, json: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::usage(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        if request.follows() {
            return follow(socket, &request).await;
        }
        let is_status = matches!(request, Request::Status { .. });
        let is_stream_like = matches!(request, Request::Logs { .. } | Request::Events { .. });
        match control::request(socket, &request).await {
            Err(e) => {
                eprintln!("processcontrol: {e}");
                FAILED
            }
            Ok(response) => match response.into_result() {
                Err(message) => {
                    eprintln!("processcontrol: {message}");
                    FAILED
                }
                Ok(value) if json => {
                    println!("{value}");
                    0
                }
                Ok(value) if is_status => {
                    print_status_table(&value);
                    0
                }
                Ok(Value::Array(items)) if is_stream_like => {
                    for item in items {
                        if !print_item(&item) {
                            break;
                        }
                    }
                    0
                }
                Ok(value) => {
                    println!("{value}");
                    0
                }
            },
        }
    })
}

async fn follow(socket: &Path, request: &Request) -> u8 {
    let mut stream = match control::request_stream(socket, request).await {
        Ok(control::Streamed::Stream(stream)) => stream,
        Ok(control::Streamed::Response(response)) => {
            // Not a stream: an error such as an unknown process.
            return match response.into_result() {
                Ok(value) => {
                    println!("{value}");
                    0
                }
                Err(message) => {
                    eprintln!("processcontrol: {message}");
                    FAILED
                }
            };
        }
        Err(e) => {
            eprintln!("processcontrol: {e}");
            return FAILED;
        }
    };
    loop {
        match stream.next().await {
            // The reader left (`| head`): so do we.
            Ok(Some(item)) if !print_item(&item) => return 0,
            Ok(Some(_)) => {}
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("processcontrol: {e}");
                return FAILED;
            }
        }
    }
}

/// A log line as `time stream text`; an event as its JSON line. `false` once stdout is
/// closed.
fn print_item(item: &Value) -> bool {
    let mut out = std::io::stdout().lock();
    match (item.get("text"), item.get("stream")) {
        (Some(Value::String(text)), Some(Value::String(stream))) => {
            let time = item.get("time").and_then(Value::as_str).unwrap_or("");
            writeln!(out, "{time} {stream} {text}")
        }
        _ => writeln!(out, "{item}"),
    }
    .and_then(|()| out.flush())
    .is_ok()
}

fn print_status_table(value: &Value) {
    let rows = value.as_array().cloned().unwrap_or_default();
    let headers = [
        "NAME", "STATE", "PID", "INSTANCE", "UPTIME", "EXIT", "RESTARTS", "BREAKER", "READY",
        "RSS", "CPU",
    ];
    let mut table: Vec<Vec<String>> = vec![headers.iter().map(|h| h.to_string()).collect()];
    let mut notes = Vec::new();
    for row in &rows {
        let text = |key: &str| match &row[key] {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = text("name");
        if let Some(blocked) = row["blocked"].as_str() {
            notes.push(format!("{name}: {blocked}"));
        }
        if let Some(error) = row["last_error"].as_str() {
            let when = row["last_error_time"]
                .as_str()
                .and_then(human::clock_of)
                .map_or_else(String::new, |t| format!(" at {t}"));
            notes.push(format!("{name}: last error{when}: {error}"));
        }
        table.push(vec![
            name,
            text("state"),
            text("pid"),
            text("instance"),
            row["uptime"].as_u64().map_or("-".into(), human_duration),
            exit_text(&row["exit"]),
            text("restarts"),
            text("breaker"),
            match (row["has_readiness"].as_bool(), row["ready"].as_bool()) {
                (Some(false), _) => "-".into(),
                (_, Some(true)) => "yes".into(),
                _ => "no".into(),
            },
            row["rss"].as_u64().map_or("-".into(), human_bytes),
            row["cpu"].as_u64().map_or("-".into(), |c| format!("{c}%")),
        ]);
    }
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = std::io::stdout().lock();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
}

/// The last exit in a table cell: `0`, `1`, `SIGKILL`, `oom`, or `-` before any.
fn exit_text(exit: &Value) -> String {
    if let Some(code) = exit["code"].as_i64() {
        return code.to_string();
    }
    if let Some(signal) = exit["signal"].as_i64() {
        return i32::try_from(signal)
            .ok()
            .and_then(human::signal_name)
            .map_or_else(|| format!("signal {signal}"), str::to_string);
    }
    match exit.as_str() {
        Some("oom_killed") => "oom".into(),
        _ => "-".into(),
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    human::bytes(b)
}
