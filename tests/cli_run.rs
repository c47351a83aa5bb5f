//! `processcontrol run`, end to end: the real binary, real programs, real signals. Events are
//! read from `--events -` (stdout) as they are written, so tests wait on events, not on time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");
const WAIT: Duration = Duration::from_secs(30);

/// A running `processcontrol run` whose events are read line by line.
struct Run {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--events")
            .arg("-")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (tx, events) = mpsc::channel();
        // Stdout carries only events; the program's output (and the narration) is on stderr
        // and arrives as JSON strings.
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let events_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|e| panic!("not an event on stdout: {line}: {e}"));
                if events_tx.send(v).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(Value::String(line)).is_err() {
                    break;
                }
            }
        });
        Run {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event (after those already seen) matching `f`.
    fn wait_event(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if f(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no event {what} in time; seen: {:#?}", self.seen),
            }
        }
    }

    /// The first item matching `f`, seen already or to come: the program's output (on stderr)
    /// and the events (on stdout) are not ordered with each other.
    fn find_or_wait(&mut self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        match self.seen.iter().find(|v| f(v)) {
            Some(v) => v.clone(),
            None => self.wait_event(what, f),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }

    /// Waits for the exit status, reading the remaining events.
    fn wait(mut self) -> (i32, Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.seen.extend(self.events.try_iter());
                // Events written just before exit may still be in the reader thread.
                while let Ok(v) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(v);
                }
                return (status.code().unwrap_or(-1), self.seen);
            }
            assert!(
                Instant::now() < deadline,
                "processcontrol did not exit; events: {:#?}",
                self.seen
            );
            // The child's exit has no event we can select on from here without a pidfd.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn transition(v: &Value, to: &str) -> bool {
    v["event"] == "transition" && v["to"] == to
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

fn usage_error(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("run").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "exit 2 for {args:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line for {args:?}: {stderr}");
    stderr
}

#[test]
fn crash_loop_until_the_breaker_gives_up() {
    let run = Run::start(&[
        "--backoff-initial",
        "10ms",
        "--backoff-max",
        "50ms",
        "--max-restarts",
        "3",
        "--breaker-cooldown",
        "never",
        "--",
        "sh",
        "-c",
        "exit 1",
    ]);
    let (code, events) = run.wait();
    assert_eq!(code, 125, "gave up");
    let spawned = events.iter().filter(|v| v["cause"] == "spawned").count();
    assert_eq!(spawned, 4, "the first start and three restarts");
    let last = events
        .iter()
        .rev()
        .find(|v| v["event"] == "transition")
        .unwrap();
    assert_eq!(last["to"], "breaker_open");
    assert!(events.iter().any(|v| v["exit"]["code"] == 1));
}

#[test]
fn half_open_trial_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ok");
    let script = format!("test -e {} && exec sleep 1000; exit 1", flag.display());
    let mut run = Run::start(&[
        "--backoff-initial",
        "10ms",
        "--max-restarts",
        "2",
        "--breaker-cooldown",
        "300ms",
        "--reset-after",
        "200ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    run.wait_event("breaker_open", |v| transition(v, "breaker_open"));
    std::fs::write(&flag, "").unwrap();
    run.wait_event("the trial", |v| v["cause"] == "cooldown_elapsed");
    run.wait_event("running", |v| transition(v, "running"));
    run.wait_event("breaker closed", |v| v["event"] == "breaker_closed");
    run.signal(libc::SIGTERM);
    let (code, _) = run.wait();
    assert_eq!(code, 128 + 15, "sleep was ended by the stop signal");
}

#[test]
fn sigterm_stops_gracefully_then_kills_after_grace() {
    let mut run = Run::start(&[
        "--stop-grace",
        "500ms",
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; sleep 1000 & wait",
    ]);
    run.wait_event("the trap set", |v| v == "ready");
    let running = run.find_or_wait("running", |v| transition(v, "running"));
    let pid = running["pid"].as_u64().unwrap();
    let asked = Instant::now();
    run.signal(libc::SIGTERM);
    run.wait_event("shutting down", |v| transition(v, "shutting_down"));
    let (code, events) = run.wait();
    let took = asked.elapsed();
    assert_eq!(code, 137, "killed after the grace period");
    assert!(
        took >= Duration::from_millis(500),
        "not before the grace ended: {took:?}"
    );
    assert!(!alive(pid));
    assert!(events.iter().any(|v| transition(v, "stopped")));
}

#[test]
fn sigint_is_a_graceful_stop_and_the_exit_code_passes_through() {
    let mut run = Run::start(&[
        "--",
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    run.wait_event("the trap set", |v| v == "ready");
    run.signal(libc::SIGINT);
    let (code, _) = run.wait();
    assert_eq!(code, 7);
}

#[test]
fn exit_codes_pass_through() {
    for (script, expected) in [
        ("exit 0", 0),
        ("exit 42", 42),
        ("kill -9 $$", 137),
        ("kill -15 $$", 143),
    ] {
        let (code, _) = Run::start(&["--restart", "never", "--", "sh", "-c", script]).wait();
        assert_eq!(code, expected, "{script}");
    }
    // A clean exit under on-failure is done: exit 0, no restart.
    let (code, events) = Run::start(&["--", "true"]).wait();
    assert_eq!(code, 0);
    assert_eq!(events.iter().filter(|v| v["cause"] == "spawned").count(), 1);
}

#[test]
fn a_failing_health_check_restarts_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    let check = format!("test -e {}", flag.display());
    let mut run = Run::start(&[
        "--health-exec",
        &check,
        "--health-period",
        "100ms",
        "--health-failures",
        "2",
        "--backoff-initial",
        "10ms",
        "--max-restarts",
        "100",
        "--",
        "sleep",
        "1000",
    ]);
    run.wait_event("a liveness restart", |v| v["cause"] == "liveness_failed");
    std::fs::write(&flag, "").unwrap();
    let running = run.wait_event("running again", |v| transition(v, "running"));
    let instance = running["instance"].as_u64().unwrap();
    // It stays up: several periods later it is still the same instance (the next restart
    // would be an event; none may come).
    let quiet = run.events.recv_timeout(Duration::from_millis(800));
    if let Ok(v) = &quiet {
        assert!(
            v["cause"] != "liveness_failed",
            "restarted although healthy: {v}"
        );
    }
    run.signal(libc::SIGTERM);
    let (_, events) = run.wait();
    assert!(events
        .iter()
        .all(|v| v["instance"].as_u64().is_none_or(|i| i <= instance + 1)));
}

fn memory_hog(action: &str) -> (i32, Vec<Value>) {
    let hog = "import time\nb = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('hog', flush=True)\ntime.sleep(1000)";
    let mut run = Run::start(&[
        "--max-memory",
        "100MiB",
        "--limit-for",
        "0s",
        "--limit-action",
        action,
        "--max-restarts",
        "1",
        "--breaker-cooldown",
        "never",
        "--stop-grace",
        "2s",
        "--",
        "python3",
        "-c",
        hog,
    ]);
    run.wait_event("the limit", |v| v["event"] == "limit_exceeded");
    if action == "warn" || action == "restart" {
        if action == "restart" {
            run.wait_event("a restart", |v| {
                v["cause"] == "limit_exceeded" && v["to"] == "restarting"
            });
        }
        run.signal(libc::SIGTERM);
    }
    run.wait()
}

#[test]
fn each_limit_action_on_a_memory_hog() {
    let (code, events) = memory_hog("kill");
    assert_eq!(code, 137);
    assert!(events.iter().any(|v| transition(v, "killed")));

    let (code, events) = memory_hog("graceful-shutdown");
    assert_eq!(code, 143, "python ends on SIGTERM");
    assert!(events
        .iter()
        .any(|v| transition(v, "shutting_down") && v["cause"] == "limit_exceeded"));

    let (_, events) = memory_hog("warn");
    assert!(
        !events.iter().any(|v| transition(v, "restarting")),
        "warn changes nothing"
    );

    let (_, events) = memory_hog("restart");
    assert!(events
        .iter()
        .any(|v| v["cause"] == "limit_exceeded" && v["resource"] == "memory"));
}

#[test]
fn every_bad_flag_is_one_line_naming_it_and_exit_2() {
    for (args, flag) in [
        (&["--restart", "sometimes", "--", "true"][..], "--restart"),
        (
            &["--backoff-initial", "soon", "--", "true"][..],
            "--backoff-initial",
        ),
        (
            &["--stop-grace", "10parsecs", "--", "true"][..],
            "--stop-grace",
        ),
        (&["--max-memory", "lots", "--", "true"][..], "--max-memory"),
        (
            &["--stop-signal", "SIGNOPE", "--", "true"][..],
            "--stop-signal",
        ),
        (
            &["--breaker-cooldown", "later", "--", "true"][..],
            "--breaker-cooldown",
        ),
        (
            &["--limit-action", "explode", "--", "true"][..],
            "--limit-action",
        ),
        (
            &["--backoff-factor", "0.5", "--", "true"][..],
            "--backoff-factor",
        ),
        (
            &["--backoff-jitter", "2", "--", "true"][..],
            "--backoff-jitter",
        ),
        (
            &["--health-http", "ftp://x", "--", "true"][..],
            "--health-http",
        ),
        (
            &["--health-tcp", "localhost:0", "--", "true"][..],
            "--health-tcp",
        ),
        (
            &["--health-failures", "0", "--", "true"][..],
            "--health-failures",
        ),
        (&["--env", "NOEQUALS", "--", "true"][..], "--env"),
        (&["--", "/no/such/program"][..], "PROGRAM"),
    ] {
        let err = usage_error(args);
        assert!(err.contains(flag), "{flag} not named in: {err}");
    }
    // A missing program argument.
    let out = Command::new(BIN).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_sigkilled_supervisor_takes_its_child_along() {
    let mut run = Run::start(&["--", "sleep", "1000"]);
    let running = run.wait_event("running", |v| transition(v, "running"));
    let pid = running["pid"].as_u64().unwrap();
    run.signal(libc::SIGKILL);
    let _ = run.child.wait();
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(pid),
        "the child outlived its supervisor by more than a second"
    );
}

#[test]
fn as_pid_1_it_reaps_orphaned_grandchildren() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: this machine does not allow `unshare --pid --fork --mount-proc` ({probe:?})"
        );
        return;
    }
    // The orphan (reparented to PID 1, our supervisor) exits after 0.2 s; a second later no
    // zombie may be left in the namespace.
    let script = "(sleep 0.2 &); sleep 1; for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null; case $l in *') Z '*) echo zombie: $l; exit 1;; esac; done; exit 0";
    let out = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            BIN,
            "run",
            "--restart",
            "never",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Path::new(BIN).exists());
}
