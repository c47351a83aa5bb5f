//! The client commands wait for their outcome and fail honestly, end to end with the real
//! binary: a restart refused by the breaker exits non-zero naming it, `stop` returns once the
//! process is gone, `restart` tells the pids, `--no-wait` and `--timeout`, `signal`,
//! `restart --force`, and the summaries `up` narrates.
//!
//! Every client call is bounded by its own `--timeout` (30 s by default, plus 10 s for a wedged
//! daemon); every other wait by [`WAIT`].

use std::process::Output;
use std::time::Instant;

use serde_json::Value;

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/http.rs"]
mod http;

use daemon::{wait_file, Daemon, WAIT};

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pid_of(d: &Daemon, name: &str) -> u64 {
    d.process(name).unwrap()["pid"].as_u64().unwrap()
}

#[test]
fn a_restart_refused_by_the_breaker_exits_non_zero_and_names_it() {
    let d = Daemon::start(
        r#"
[processes.web]
command = "exec sleep 1000"
breaker = { max_restarts = 2 }
"#,
    );
    d.wait_state("web", "running");
    for _ in 0..2 {
        let out = d.cli(&["restart", "web"]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = d.cli(&["restart", "web"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr(&out);
    assert!(
        said.starts_with("web: breaker open after 2 restarts in 60 s; next trial at "),
        "{said}"
    );
    assert!(
        said.trim_end()
            .ends_with("; 'processcontrol reset web' closes it"),
        "{said}"
    );
    let web = d.process("web").unwrap();
    assert_eq!(web["state"], "breaker_open");
    assert!(web["next_trial"].is_string(), "{web}");
    d.stop();
}

#[test]
fn restart_force_resets_the_breaker_first() {
    let d = Daemon::start(
        r#"
[processes.web]
command = "exec sleep 1000"
breaker = { max_restarts = 1 }
"#,
    );
    d.wait_state("web", "running");
    assert!(d.cli(&["restart", "web"]).status.success());
    // The window is full: a plain restart would open the breaker; --force empties it first.
    let out = d.cli(&["restart", "--force", "web", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["processes"][0]["outcome"], "restarted", "{answer}");
    // A plain restart now opens it...
    let out = d.cli(&["restart", "web", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["ok"], false);
    assert_eq!(
        answer["processes"][0]["outcome"], "breaker_open",
        "{answer}"
    );
    assert_eq!(d.process("web").unwrap()["breaker"], "open");
    // ...and --force closes the open breaker and starts it.
    let out = d.cli(&["restart", "--force", "web"]);
    assert!(out.status.success(), "{out:?}");
    let said = stdout(&out);
    assert!(
        said.starts_with("web: started, pid ") && said.contains("(its breaker was open)"),
        "{said}"
    );
    let web = d.process("web").unwrap();
    assert_eq!(web["state"], "running");
    assert_eq!(web["breaker"], "closed");
    d.stop();
}

#[test]
fn stop_returns_once_the_process_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("trapped");
    // The program takes half a second to stop after SIGTERM.
    let d = Daemon::start(&format!(
        r#"
[processes.slow]
command = "trap 'sleep 0.5; exit 0' TERM; touch {mark}; while :; do sleep 0.1; done"
"#,
        mark = mark.display()
    ));
    wait_file(&mark, "the trap", |_| mark.exists());
    let pid = pid_of(&d, "slow");
    let out = d.cli(&["stop", "slow"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!pid_alive(pid), "stop returned while pid {pid} is alive");
    let said = stdout(&out);
    assert!(said.starts_with("slow: stopped in "), "{said}");
    assert!(said.contains(&format!("pid {pid} exited with 0")), "{said}");
    assert_eq!(d.process("slow").unwrap()["state"], "stopped");
    // Stopping it again says so.
    let again = d.cli(&["stop", "slow"]);
    assert!(again.status.success());
    assert_eq!(stdout(&again), "slow: already stopped\n");
    d.stop();
}

#[test]
fn restart_tells_the_old_and_new_pid_and_waits_for_readiness() {
    let d = Daemon::start(
        r#"
[processes.web]
command = "exec sleep 1000"
readiness = { exec = "true", period = "100ms" }
"#,
    );
    d.wait("web ready", |s| s[0]["ready"] == true);
    let old = pid_of(&d, "web");
    let out = d.cli(&["restart", "web"]);
    assert!(out.status.success(), "{out:?}");
    let web = d.process("web").unwrap();
    // Ready when the command returned, not some time later.
    assert_eq!(web["ready"], true, "{web}");
    let new = web["pid"].as_u64().unwrap();
    let said = stdout(&out);
    assert!(
        said.starts_with(&format!("web: restarted, pid {old} -> {new}, ready in ")),
        "{said}"
    );
    assert!(!pid_alive(old));
    d.stop();
}

/// A program that ignores SIGTERM, with a minute's grace: a stop takes a minute.
fn stubborn(dir: &tempfile::TempDir) -> (Daemon, u64) {
    let mark = dir.path().join("ignoring");
    let d = Daemon::start(&format!(
        r#"
[processes.stubborn]
command = "trap '' TERM; touch {mark}; while :; do sleep 0.1; done"
stop = {{ grace = "60s" }}
"#,
        mark = mark.display()
    ));
    wait_file(&mark, "the trap", |_| mark.exists());
    let pid = pid_of(&d, "stubborn");
    (d, pid)
}

#[test]
fn no_wait_returns_before_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (d, pid) = stubborn(&dir);
    let out = d.cli(&["stop", "stubborn", "--no-wait"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "stubborn: stop asked, not waiting\n");
    // The stop was taken, and the process is still there: nothing waited for it.
    let now = d.wait_state("stubborn", "shutting_down");
    assert_eq!(now["pid"].as_u64(), Some(pid));
    assert!(pid_alive(pid));
    assert!(d.cli(&["kill", "stubborn"]).status.success());
    assert!(!pid_alive(pid));
    d.stop();
}

#[test]
fn a_timeout_exits_non_zero_naming_what_the_process_does() {
    let dir = tempfile::tempdir().unwrap();
    let (d, pid) = stubborn(&dir);
    let asked = Instant::now();
    let out = d.cli(&["stop", "stubborn", "--timeout", "1s"]);
    assert!(asked.elapsed() < WAIT);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert_eq!(
        stderr(&out),
        format!("stubborn: not stopped after 1 s: still stopping, pid {pid}\n")
    );
    let out = d.cli(&["kill", "stubborn", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["processes"][0]["outcome"], "killed", "{answer}");
    assert_eq!(answer["processes"][0]["pid_before"], pid);
    assert!(!pid_alive(pid));
    d.stop();
}

#[test]
fn start_names_the_dependency_it_waits_for_when_time_is_up() {
    let d = Daemon::start(
        r#"
[processes.db]
command = "exec sleep 1000"
readiness = { exec = "false", period = "100ms" }
[processes.web]
command = "exec sleep 1000"
depends_on = { db = "healthy" }
"#,
    );
    d.wait_state("db", "running");
    let out = d.cli(&["start", "web", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert_eq!(
        stderr(&out),
        "web: not up after 1 s: waiting for db to be healthy\n"
    );
    d.stop();
}

#[test]
fn signal_reaches_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("trapped");
    let hups = dir.path().join("hups");
    let d = Daemon::start(&format!(
        r#"
[processes.web]
command = "trap 'echo hup >> {hups}' HUP; touch {mark}; while :; do sleep 0.1; done"
"#,
        mark = mark.display(),
        hups = hups.display()
    ));
    wait_file(&mark, "the trap", |_| mark.exists());
    let pid = pid_of(&d, "web");
    let out = d.cli(&["signal", "web", "HUP"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        format!("web: SIGHUP sent to its processes (pid {pid})\n")
    );
    wait_file(&hups, "the trap's line", |text| text == "hup\n");
    // The program handled it and runs on.
    assert_eq!(pid_of(&d, "web"), pid);

    // A process with no instance gets nothing, and the command says so.
    assert!(d.cli(&["stop", "web"]).status.success());
    let out = d.cli(&["signal", "web", "HUP"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "web: not running (stopped); no signal sent\n");
    // A signal that does not exist is a usage error naming it.
    let out = d.cli(&["signal", "web", "SIGNOPE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SIGNOPE"), "{}", stderr(&out));
    d.stop();
}

#[test]
fn up_narrates_the_start_reload_and_shutdown_summaries_and_shutdown_waits() {
    let config = |extra: &str| {
        format!(
            r#"
[processes.db]
command = "exec sleep 1000"
readiness = {{ exec = "true", period = "100ms" }}
[processes.web]
command = "exec sleep 1000"
depends_on = {{ db = "healthy" }}
{extra}"#
        )
    };
    let mut d = Daemon::start_narrating(&config(""));
    d.wait_state("web", "running");
    let narrated = d.dir.path().join("up.stderr");
    let narration = wait_file(&narrated, "the start summary", |t| {
        t.contains("2 processes up")
    });
    let started = narration
        .lines()
        .find(|l| l.contains("2 processes up"))
        .unwrap();
    // Every start sent: db was ready by then (web waited for it).
    assert!(
        started.contains(" 2 processes up, db ready, in "),
        "{started}"
    );

    std::fs::write(
        &d.config,
        config("[processes.job]\ncommand = \"exec sleep 1000\"\n"),
    )
    .unwrap();
    let out = d.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = stdout(&out);
    assert!(said.contains("job: started, pid "), "{said}");
    assert!(
        said.ends_with("reloaded: started job; 2 unchanged\n"),
        "{said}"
    );
    wait_file(&narrated, "the reload summary", |text| {
        text.contains("reloaded: started job; 2 unchanged")
    });

    let out = d.cli(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let said = stdout(&out);
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("stopped ") && last.contains(" in "),
        "{said}"
    );
    for name in ["db", "web", "job"] {
        assert!(said.contains(&format!("{name}: stopped in ")), "{said}");
    }
    // The daemon ends by itself, and its narration ends with the same summary.
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the daemon did not end");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let narration = d.narration();
    let summary = narration.lines().last().unwrap_or_default();
    assert!(summary.ends_with(last), "{narration}");
    // Web depends on db: it stopped first.
    assert!(
        last.find("web").unwrap() < last.find("db").unwrap(),
        "{last}"
    );
}

#[test]
fn a_start_that_cannot_spawn_exits_non_zero_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("gone");
    std::fs::create_dir(&cwd).unwrap();
    let d = Daemon::start(&format!(
        r#"
[processes.bad]
command = "exec sleep 1000"
cwd = "{cwd}"
"#,
        cwd = cwd.display()
    ));
    d.wait_state("bad", "running");
    assert!(d.cli(&["stop", "bad"]).status.success());
    std::fs::remove_dir(&cwd).unwrap();
    let out = d.cli(&["start", "bad"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = stderr(&out);
    assert!(
        said.starts_with(&format!(
            "bad: cannot start: working directory \"{}\" is unusable: ",
            cwd.display()
        )),
        "{said}"
    );
    d.stop();
}

#[test]
fn status_name_shows_the_probes_verdicts_limits_tree_and_logs() {
    let port = http::http_server("503 Service Unavailable");
    let d = Daemon::start(&format!(
        r#"
[processes.web]
command = "echo serving; exec sleep 1000"
liveness = {{ http = "http://127.0.0.1:{port}/healthz", period = "100ms", failure_threshold = 1000 }}
limits = {{ memory = {{ max = "1GiB" }} }}
"#
    ));
    let deadline = Instant::now() + WAIT;
    let detail = loop {
        let out = d.cli(&["status", "web", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let detail: Value = serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone();
        let failed = detail["probes"][0]["failing"].as_u64().unwrap_or(0) >= 2;
        let sampled = detail["limits"][0]["current"].is_u64();
        if failed && sampled && !detail["logs"].as_array().unwrap().is_empty() {
            break detail;
        }
        assert!(Instant::now() < deadline, "no detail: {detail}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let probe = &detail["probes"][0];
    assert_eq!(probe["probe"], "liveness");
    assert_eq!(
        probe["check"],
        format!("GET http://127.0.0.1:{port}/healthz")
    );
    assert_eq!(probe["failure_threshold"], 1000);
    let last = probe["last"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ok"], false);
    assert_eq!(last["reason"], "GET /healthz -> 503 Service Unavailable");
    assert!(last["time"].is_string());
    assert_eq!(detail["limits"][0]["resource"], "memory");
    assert_eq!(detail["limits"][0]["max"], 1u64 << 30);
    assert!(
        detail["command"]
            .as_str()
            .unwrap()
            .ends_with("'echo serving; exec sleep 1000'"),
        "{detail}"
    );
    assert_eq!(detail["tree"][0]["pid"], detail["pid"]);
    assert_eq!(detail["tree"][0]["command"], "sleep 1000");
    assert_eq!(detail["logs"][0]["text"], "serving");
    // The same for people.
    let out = d.cli(&["status", "web"]);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("web: running, pid {}", detail["pid"])),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "liveness: GET http://127.0.0.1:{port}/healthz every 100 ms, failing "
        )),
        "{text}"
    );
    assert!(
        text.contains(" failed: GET /healthz -> 503 Service Unavailable"),
        "{text}"
    );
    assert!(text.contains("  limit      memory "), "{text}");
    assert!(text.contains(" of 1 GiB (then restart)"), "{text}");
    assert!(text.contains("| serving"), "{text}");
    d.stop();
}
