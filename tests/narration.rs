//! What the operator is told, end to end with the real binary: the narrated decisions of a
//! crash loop (plain in a file, coloured on a terminal), reasons in `status` and events,
//! `events -n` and `events -f` with their backlog, a TCP probe that closes without a reset, and
//! `run --events - | head` that ends.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/http.rs"]
mod http;
use http::http_server;

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");
const WAIT: Duration = Duration::from_secs(30);

/// Waits for `child` to exit, at most [`WAIT`].
fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not end within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A crash loop that gives up after two restarts.
const CRASH_LOOP: [&str; 8] = [
    "--max-restarts",
    "2",
    "--breaker-cooldown",
    "never",
    "--backoff-initial",
    "10ms",
    "--",
    "/bin/sh",
];

#[test]
fn a_crash_loop_is_narrated_in_plain_text_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.txt");
    let mut child = Command::new(BIN)
        .arg("run")
        .args(CRASH_LOOP)
        .args(["-c", "exit 3"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert_eq!(wait_exit(&mut child), 125, "gave up");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "escape codes in a file: {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    let said = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(said("sh: started, pid "), "{text}");
    assert!(
        said("sh: exited with 3 (unexpected), restart 1 in "),
        "{text}"
    );
    assert!(
        said("sh: exited with 3 (unexpected), restart 2 in "),
        "{text}"
    );
    assert!(
        said("sh: gave up: 2 restarts in 60 s, breaker open, no further trial"),
        "{text}"
    );
    // Every line starts with the time of day.
    for line in &lines {
        let time = line.split(' ').next().unwrap();
        assert!(
            time.len() == 8 && time.chars().filter(|c| *c == ':').count() == 2,
            "{line}"
        );
    }
}

#[test]
fn quiet_tells_nothing() {
    let out = Command::new(BIN)
        .args(["-q", "run"])
        .args(CRASH_LOOP)
        .args(["-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn json_log_format_narrates_the_events_as_json() {
    let out = Command::new(BIN)
        .args(["--log-format", "json", "run"])
        .args(CRASH_LOOP)
        .args(["-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let events: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["to"] == "breaker_open" && e["reason"] == "2 restarts in 60 s"),
        "{stderr}"
    );
}

/// `script` gives the command a pseudo-terminal; `None` (with the reason printed) where it is
/// missing.
fn under_a_terminal(args: &[&str], no_color: bool) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return None;
    }
    let command = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let mut child = cmd.spawn().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    wait_exit(&mut child);
    Some(out)
}

#[test]
fn a_crash_loop_is_coloured_on_a_terminal_unless_no_color() {
    let mut args = vec!["run"];
    args.extend(CRASH_LOOP);
    args.extend(["-c", "exit 3"]);
    let Some(out) = under_a_terminal(&args, false) else {
        return;
    };
    assert!(out.contains("gave up: 2 restarts in 60 s"), "{out:?}");
    // The failure is red.
    assert!(out.contains("\x1b[31mgave up: "), "{out:?}");
    let plain = under_a_terminal(&args, true).unwrap();
    assert!(plain.contains("gave up: 2 restarts in 60 s"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
}

#[test]
fn events_on_stdout_end_when_their_reader_leaves() {
    let mut child = Command::new(BIN)
        .args(["-q", "run", "--events", "-", "--restart", "always"])
        .args(["--backoff-initial", "10ms", "--max-restarts", "1000"])
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo program output; sleep 0.05; exit 3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Only events on stdout: the program's output went to stderr.
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(event["event"].is_string(), "{line}");
    }
    // Like `| head -3`: the reader leaves.
    drop(stdout);
    wait_exit(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("program output"), "{stderr}");
}

/// A TCP server on loopback that counts connections closed cleanly (EOF) and by a reset.
fn tcp_server() -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (clean, resets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, r) = (clean.clone(), resets.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        r.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    });
    (port, clean, resets)
}

struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Daemon {
    fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pc.sock");
        let path = dir.path().join("processcontrol.toml");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(BIN)
            .args(["-q", "up", "-c"])
            .arg(&path)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            _dir: dir,
            socket,
        };
        d.wait("the socket", |_| true);
        d
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("PROCESSCONTROL_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    fn status(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }

    fn wait(&self, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.status() {
                if f(&status) {
                    return status;
                }
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["events"];
        all.extend(args);
        let out = self.cli(&all);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_exit(&mut self.child);
    }
}

#[test]
fn a_failed_http_liveness_names_its_reason_in_status_and_events() {
    let port = http_server("503 Service Unavailable");
    let d = Daemon::start(&format!(
        r#"
[processes.web]
command = "exec sleep 1000"
liveness = {{ http = "http://127.0.0.1:{port}/healthz", period = "100ms", failure_threshold = 2 }}
breaker = {{ max_restarts = 100 }}
"#
    ));
    let status = d.wait("a liveness failure in last_error", |s| {
        s[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("liveness failed 2/2"))
    });
    assert_eq!(
        status[0]["last_error"],
        "liveness failed 2/2: GET /healthz -> 503 Service Unavailable"
    );
    assert!(status[0]["last_error_time"].is_string());
    let one = d.cli(&["status", "web", "--json"]);
    let one: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one[0]["last_error"], status[0]["last_error"]);
    let events = d.events(&[]);
    let failed = events
        .iter()
        .find(|e| e["event"] == "probe_failed" && e["consecutive"] == 2)
        .expect("a probe_failed event");
    assert_eq!(failed["probe"], "liveness");
    assert_eq!(failed["failure"], "http_status");
    assert_eq!(failed["threshold"], 2);
    assert_eq!(failed["reason"], "GET /healthz -> 503 Service Unavailable");
    let restart = events
        .iter()
        .find(|e| e["event"] == "transition" && e["cause"] == "liveness_failed")
        .expect("a liveness restart");
    assert_eq!(
        restart["reason"],
        "liveness failed 2/2: GET /healthz -> 503 Service Unavailable"
    );
}

#[test]
fn events_n_and_follow_start_with_the_recent_events() {
    let d = Daemon::start(
        r#"
[processes.one]
command = "exec sleep 1000"
[processes.two]
command = "exec sleep 1000"
"#,
    );
    d.wait("both running", |s| {
        s.iter().all(|p| p["state"] == "running")
    });
    let all = d.events(&[]);
    assert!(all.len() >= 4, "{all:?}");
    let last_two = d.events(&["-n", "2"]);
    assert_eq!(last_two, all[all.len() - 2..]);

    let mut follow = Command::new(BIN)
        .args(["events", "-f", "-n", "3"])
        .env("PROCESSCONTROL_SOCKET", d.socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    let backlog: Vec<Value> = (0..3).map(|_| next()).collect();
    assert_eq!(
        backlog,
        all[all.len() - 3..],
        "the recent events come first"
    );
    // Then the new ones.
    assert!(d.cli(&["restart", "one"]).status.success());
    let new = next();
    assert_eq!(new["process"], "one", "{new}");
    assert!(!all.contains(&new));
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn status_shows_exit_ready_and_usage_for_every_process() {
    let d = Daemon::start(
        r#"
[processes.plain]
command = "exec sleep 1000"
[processes.done]
command = "exit 4"
restart = "never"
"#,
    );
    let status = d.wait("usage of plain, done failed", |s| {
        s.iter()
            .any(|p| p["name"] == "plain" && p["rss"].as_u64().is_some_and(|r| r > 0))
            && s.iter()
                .any(|p| p["name"] == "done" && p["state"] == "failed")
    });
    let plain = status.iter().find(|p| p["name"] == "plain").unwrap();
    assert_eq!(plain["has_readiness"], false);
    let table = String::from_utf8(d.cli(&["status"]).stdout).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "STATE", "PID", "INSTANCE", "UPTIME", "EXIT", "RESTARTS", "BREAKER", "READY",
            "RSS", "CPU"
        ]
    );
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let done = row("done");
    assert_eq!(done[5], "4", "EXIT: {table}");
    assert_eq!(done[8], "-", "READY without a readiness condition: {table}");
    let plain = row("plain");
    assert_eq!(plain[8], "-", "{table}");
    assert!(plain[9].parse::<f64>().is_ok(), "RSS: {table}");
}

#[test]
fn the_tcp_probe_closes_without_a_reset_unless_asked() {
    let (port, clean, resets) = tcp_server();
    let mut child = Command::new(BIN)
        .args(["-q", "run", "--health-tcp", &format!("127.0.0.1:{port}")])
        .args(["--health-period", "50ms", "--", "/bin/sleep", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while clean.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "no probe connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_exit(&mut child);
    assert_eq!(resets.load(Ordering::SeqCst), 0, "the server saw resets");

    let (port, _, resets) = tcp_server();
    let d = Daemon::start(&format!(
        r#"
[processes.db]
command = "exec sleep 1000"
readiness = {{ tcp = "127.0.0.1:{port}", tcp_reset = true, period = "50ms" }}
"#
    ));
    let deadline = Instant::now() + WAIT;
    while resets.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "tcp_reset = true sent no reset");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(d);
}

#[test]
fn an_exec_probe_failure_names_the_last_line_it_printed() {
    let d = Daemon::start(
        r#"
[processes.db]
command = "exec sleep 1000"
liveness = { exec = "echo checking; echo 'no response from db' >&2; exit 2", period = "100ms", failure_threshold = 2 }
breaker = { max_restarts = 100 }
"#,
    );
    let status = d.wait("an exec liveness failure in last_error", |s| {
        s[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("liveness failed 2/2"))
    });
    assert_eq!(
        status[0]["last_error"],
        "liveness failed 2/2: exited with 2: no response from db"
    );
    let events = d.events(&[]);
    let failed = events
        .iter()
        .find(|e| e["event"] == "probe_failed")
        .expect("a probe_failed event");
    assert_eq!(failed["failure"], "exit_code");
    assert_eq!(failed["reason"], "exited with 2: no response from db");
}
