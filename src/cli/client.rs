//! The client subcommands: one request to the daemon's control socket, the answer printed for
//! people (or as JSON with `--json`), and a plain message when no daemon is listening. A command
//! (`start`, `stop`, `restart`...) waits for its outcome, which the daemon observes and
//! streams: one line per process as soon as it is known.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use processcontrol::adapters::control::{self, Request};
use processcontrol::adapters::human;
use serde_json::Value;

use super::args::WaitArgs;
use super::exit;

/// Exit status when the daemon answered with an error or could not be reached, or a
/// command's target was not reached.
pub const FAILED: u8 = 1;

/// Exit status when a command's outcome did not come within `--timeout` (as `timeout(1)`).
pub const TIMED_OUT: u8 = 124;

/// How much longer than `--timeout` the client waits for the daemon's last word: the daemon
/// ends the answer at the timeout itself; this only bounds a daemon that is wedged.
const GRACE: Duration = Duration::from_secs(10);

/// Sends a command and prints one line per process as each outcome comes (or, with
/// `--json`, one object at the end); the exit status says whether every target was reached.
pub fn command(socket: &Path, request: Request, wait: &WaitArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::usage(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let mut told = Told::new(wait.json);
        let bound = wait.timeout + GRACE;
        let error = match tokio::time::timeout(bound, told.ask(socket, &request)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!(
                "the daemon did not finish its answer within {}",
                human::duration(bound)
            )),
        };
        told.finish(error)
    })
}

/// What the daemon told of a command so far.
struct Told {
    json: bool,
    outcomes: Vec<Value>,
    summary: Option<String>,
    reload: Option<Value>,
}

impl Told {
    fn new(json: bool) -> Told {
        Told {
            json,
            outcomes: Vec::new(),
            summary: None,
            reload: None,
        }
    }

    /// Reads the answer to the end, printing each line as it comes.
    async fn ask(&mut self, socket: &Path, request: &Request) -> Result<(), String> {
        let stream = control::request_stream(socket, request)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = match stream {
            control::Streamed::Stream(stream) => stream,
            control::Streamed::Response(response) => {
                let item = response.into_result()?;
                self.take(item);
                return Ok(());
            }
        };
        while let Some(item) = stream.next().await.map_err(|e| e.to_string())? {
            self.take(item);
        }
        Ok(())
    }

    fn take(&mut self, item: Value) {
        if let Some(summary) = item.get("summary").and_then(Value::as_str) {
            if !self.json {
                println!("{summary}");
            }
            self.summary = Some(summary.to_string());
        } else if let Some(report) = item.get("reload") {
            self.reload = Some(report.clone());
        } else {
            if !self.json {
                let message = item["message"].as_str().unwrap_or_default();
                if item["ok"] == Value::Bool(true) {
                    println!("{message}");
                } else {
                    eprintln!("{message}");
                }
            }
            self.outcomes.push(item);
        }
    }

    /// Prints the JSON object (with `--json`) and gives the exit status.
    fn finish(self, error: Option<String>) -> u8 {
        let failed: Vec<&Value> = self
            .outcomes
            .iter()
            .filter(|o| o["ok"] != Value::Bool(true))
            .collect();
        let code = if error.is_some() || failed.iter().any(|o| o["outcome"] != "timeout") {
            FAILED
        } else if !failed.is_empty() {
            TIMED_OUT
        } else {
            0
        };
        if self.json {
            let mut object = serde_json::Map::new();
            object.insert("ok".into(), Value::Bool(code == 0));
            object.insert("processes".into(), Value::Array(self.outcomes));
            if let Some(summary) = self.summary {
                object.insert("summary".into(), Value::String(summary));
            }
            if let Some(report) = self.reload {
                object.insert("reload".into(), report);
            }
            if let Some(error) = &error {
                object.insert("error".into(), Value::String(error.clone()));
            }
            println!("{}", Value::Object(object));
        } else if let Some(error) = &error {
            eprintln!("processcontrol: {error}");
        }
        code
    }
}

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
            return follow(socket, &request, json).await;
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
                Ok(Value::Array(items)) if is_stream_like => {
                    for item in items {
                        if !print_item(&item, json) {
                            break;
                        }
                    }
                    0
                }
                Ok(value) if json => {
                    println!("{value}");
                    0
                }
                Ok(value) if is_status && matches!(request, Request::Status { name: Some(_) }) => {
                    print_detail(&value[0]);
                    0
                }
                Ok(value) if is_status => {
                    print_status_table(&value);
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

async fn follow(socket: &Path, request: &Request, json: bool) -> u8 {
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
            Ok(Some(item)) if !print_item(&item, json) => return 0,
            Ok(Some(_)) => {}
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("processcontrol: {e}");
                return FAILED;
            }
        }
    }
}

/// A log line as `time stream text` (as JSON with `json`); an event as its JSON line. `false`
/// once stdout is closed.
fn print_item(item: &Value, json: bool) -> bool {
    let mut out = std::io::stdout().lock();
    match (item.get("text"), item.get("stream")) {
        (Some(Value::String(text)), Some(Value::String(stream))) if !json => {
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

/// `status NAME`: one process in detail, as `systemctl status` shows a unit.
fn print_detail(p: &Value) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let clock = |v: &Value| v.as_str().and_then(human::clock_of);
    let mut head = format!("{}: {}", text(&p["name"]), text(&p["state"]));
    if let Some(pid) = p["pid"].as_u64() {
        head.push_str(&format!(", pid {pid}"));
    }
    if let Some(up) = p["uptime"].as_u64() {
        head.push_str(&format!(
            ", up {}",
            human::duration(Duration::from_secs(up))
        ));
    }
    if let Some(instance) = p["instance"].as_u64() {
        head.push_str(&format!(", instance {instance}"));
    }
    let mut rows: Vec<(&str, String)> = vec![("command", text(&p["command"]))];
    let breaker = match (text(&p["breaker"]).as_str(), clock(&p["next_trial"])) {
        ("open", Some(at)) => format!("open, next trial at {at}"),
        ("open", None) => "open, no further trial".into(),
        (other, _) => other.replace('_', "-"),
    };
    rows.push((
        "restarts",
        format!("{} (breaker {breaker})", text(&p["restarts"])),
    ));
    if !p["exit"].is_null() {
        let when = clock(&p["exit_time"]).map_or_else(String::new, |t| format!(" at {t}"));
        rows.push(("last exit", format!("{}{when}", exit_reason(&p["exit"]))));
    }
    if let Some(error) = p["last_error"].as_str() {
        let when = clock(&p["last_error_time"]).map_or_else(String::new, |t| format!(" at {t}"));
        rows.push(("last error", format!("{error}{when}")));
    }
    if p["has_readiness"] == Value::Bool(true) {
        let ready = if p["ready"] == Value::Bool(true) {
            "yes"
        } else {
            "no"
        };
        rows.push(("ready", ready.into()));
    }
    if let Some(blocked) = p["blocked"].as_str() {
        rows.push(("waits", blocked.into()));
    }
    if let (Some(action), Some(at)) = (p["next_action"].as_str(), clock(&p["next_action_time"])) {
        let action = match action {
            "kill" => "kill (the stop grace ends)",
            "kill_again" => "kill again",
            "trial_start" => "trial start (the breaker's cooldown ends)",
            "streak_end" => "the crash streak ends (stable uptime)",
            other => other,
        };
        rows.push(("next", format!("{action} at {at}")));
    }
    if let Some(rss) = p["rss"].as_u64() {
        let cpu = p["cpu"]
            .as_u64()
            .map_or_else(String::new, |c| format!(", cpu {c}%"));
        rows.push(("usage", format!("rss {}{cpu}", human::bytes(rss))));
    }
    for probe in p["probes"].as_array().into_iter().flatten() {
        let every = probe["period_ms"].as_u64().map_or_else(String::new, |ms| {
            format!(" every {}", human::duration(Duration::from_millis(ms)))
        });
        let failing = probe["failing"].as_u64().unwrap_or(0);
        let verdict = match (failing, probe["last"].as_array().map_or(0, Vec::len)) {
            (_, 0) => "no verdict yet".to_string(),
            (0, _) => "passing".to_string(),
            (n, _) => format!("failing {n}/{}", text(&probe["failure_threshold"])),
        };
        rows.push((
            "probe",
            format!(
                "{}: {}{every}, {verdict}",
                text(&probe["probe"]),
                text(&probe["check"])
            ),
        ));
        for v in probe["last"].as_array().into_iter().flatten() {
            let at = clock(&v["time"]).unwrap_or_default();
            let line = match v["reason"].as_str() {
                Some(reason) => format!("  {at} failed: {reason}"),
                None => format!("  {at} passed"),
            };
            rows.push(("", line));
        }
    }
    for limit in p["limits"].as_array().into_iter().flatten() {
        let resource = text(&limit["resource"]);
        let amount = |v: &Value| match (resource.as_str(), v.as_u64()) {
            (_, None) => "-".to_string(),
            ("memory", Some(b)) => human::bytes(b),
            ("cpu", Some(c)) => format!("{c}%"),
            (_, Some(n)) => n.to_string(),
        };
        let sustain = limit["for_ms"]
            .as_u64()
            .filter(|ms| *ms > 0)
            .map_or_else(String::new, |ms| {
                format!("for {}, ", human::duration(Duration::from_millis(ms)))
            });
        rows.push((
            "limit",
            format!(
                "{resource} {} of {} ({sustain}then {})",
                amount(&limit["current"]),
                amount(&limit["max"]),
                text(&limit["action"])
            ),
        ));
    }
    for (i, process) in p["tree"].as_array().into_iter().flatten().enumerate() {
        let depth = process["depth"].as_u64().unwrap_or(0) as usize;
        let line = format!(
            "{}{} {}",
            "  ".repeat(depth),
            text(&process["pid"]),
            text(&process["command"])
        );
        rows.push((if i == 0 { "tree" } else { "" }, line));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{head}");
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<10} {value}");
    }
    let logs = p["logs"].as_array().cloned().unwrap_or_default();
    if !logs.is_empty() {
        let _ = writeln!(out, "  logs");
        for line in logs {
            let at = clock(&line["time"]).unwrap_or_default();
            let mark = if line["stream"] == "stderr" { '!' } else { '|' };
            let _ = writeln!(out, "    {at} {mark} {}", text(&line["text"]));
        }
    }
}

/// How a main process ended, for people, from its JSON form.
fn exit_reason(exit: &Value) -> String {
    if let Some(code) = exit["code"].as_i64() {
        return format!("exited with {code}");
    }
    if let Some(signal) = exit["signal"].as_i64() {
        return format!(
            "killed by {}",
            human::signal(i32::try_from(signal).unwrap_or(0))
        );
    }
    "killed by the OOM killer".into()
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
