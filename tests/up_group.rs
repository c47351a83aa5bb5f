//! The group machine through `processcontrol up`, end to end: stop order by dependencies (not
//! by file order) with each layer stopped in parallel, readiness from `notify`, the
//! `shutdown_grace` deadline, `start NAME` pulling in its dependencies, and a reload that
//! restarts a changed process through its own machine. Supervised shell scripts write what
//! happens to them into a file the test reads; every wait is bounded.

#[path = "support/daemon.rs"]
mod daemon;

use std::path::Path;

use daemon::{wait_file, Daemon};
use serde_json::Value;

/// A shell script that logs `NAME-up` once its TERM trap is set, then on TERM logs
/// `NAME-term`, takes `secs` seconds and logs `NAME-exit`.
fn trapped(name: &str, log: &Path, secs: &str) -> String {
    let log = log.display();
    format!(
        "trap 'echo {name}-term >> {log}; sleep {secs}; echo {name}-exit >> {log}; exit 0' TERM; \
         echo {name}-up >> {log}; while :; do sleep 0.05; done"
    )
}

fn position(log: &str, line: &str) -> usize {
    log.lines()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("{line} missing from:\n{log}"))
}

/// The index of the first event matching `f` in the daemon's history.
fn event_index(events: &[Value], what: &str, f: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no event for {what} in {events:#?}"))
}

fn is_transition(e: &Value, process: &str, to: &str) -> bool {
    e["process"] == process && e["event"] == "transition" && e["to"] == to
}

#[test]
fn shutdown_follows_dependencies_not_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // web is written before what it depends on; cache depends on web.
    let config = format!(
        r#"
[processes.web]
command = "{web}"
depends_on = {{ db = "started" }}

[processes.cache]
command = "{cache}"
depends_on = {{ web = "started" }}

[processes.db]
command = "{db}"
"#,
        web = trapped("web", &log, "0.3"),
        cache = trapped("cache", &log, "0.3"),
        db = trapped("db", &log, "0.3"),
    );
    let d = Daemon::start(&config);
    wait_file(&log, "every trap set", |l| {
        ["web-up", "cache-up", "db-up"]
            .iter()
            .all(|u| l.lines().any(|x| x == *u))
    });
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let log = std::fs::read_to_string(&log).unwrap();
    // Each dependency is signalled only once its dependent has exited.
    assert!(
        position(&log, "cache-exit") < position(&log, "web-term"),
        "{log}"
    );
    assert!(
        position(&log, "web-exit") < position(&log, "db-term"),
        "{log}"
    );
}

#[test]
fn independent_processes_stop_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let config = ["a", "b", "c"]
        .iter()
        .map(|n| format!("[processes.{n}]\ncommand = \"{}\"\n", trapped(n, &log, "1")))
        .collect::<String>();
    let d = Daemon::start(&config);
    wait_file(&log, "every trap set", |l| l.lines().count() == 3);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let log = std::fs::read_to_string(&log).unwrap();
    // All three were asked to stop before any of them had finished: in parallel, so the
    // shutdown takes one second, not three.
    let first_exit = ["a", "b", "c"]
        .iter()
        .map(|n| position(&log, &format!("{n}-exit")))
        .min()
        .unwrap();
    for n in ["a", "b", "c"] {
        assert!(position(&log, &format!("{n}-term")) < first_exit, "{log}");
    }
}

#[test]
fn a_notify_dependency_gates_healthy_until_ready() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // Sends READY=1 only once the test says so.
    let script = format!(
        "import os, socket, time\n\
         while not os.path.exists('{go}'): time.sleep(0.02)\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n",
        go = go.display()
    );
    let config = format!(
        r#"
[processes.dependent]
command = "sleep 1000"
depends_on = {{ n = "healthy" }}

[processes.n]
command = ["python3", "-c", {script:?}]
notify = true
"#
    );
    let d = Daemon::start(&config);
    d.wait_state("n", "running");
    // Running is not ready for a notify process: the dependent waits, and says why.
    let dependent = d.wait("the dependent to wait for n", |s| {
        s.iter().any(|p| {
            p["name"] == "dependent"
                && p["blocked"]
                    .as_str()
                    .is_some_and(|b| b.contains("waiting for n to be healthy"))
        })
    });
    let dependent = dependent.iter().find(|p| p["name"] == "dependent").unwrap();
    assert_eq!(dependent["state"], "starting", "{dependent}");
    assert!(dependent["pid"].is_null(), "{dependent}");
    std::fs::write(&go, "").unwrap();
    d.wait_state("dependent", "running");
    let events = d.events();
    let ready = event_index(&events, "n ready", |e| {
        e["process"] == "n" && e["event"] == "ready" && e["ready"] == true
    });
    let started = event_index(&events, "dependent starting", |e| {
        is_transition(e, "dependent", "starting")
    });
    assert!(ready < started, "{events:#?}");
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn shutdown_grace_cuts_a_long_stop_grace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let config = format!(
        r#"
[supervisor]
shutdown_grace = "1s"

[processes.stubborn]
command = "trap '' TERM; echo up >> {log}; while :; do sleep 0.05; done"
stop = {{ grace = "60s" }}
"#,
        log = log.display()
    );
    let d = Daemon::start(&config);
    wait_file(&log, "the trap set", |l| l.contains("up"));
    let pid = d.wait_state("stubborn", "running")["pid"].as_u64().unwrap();
    // `stop` waits at most 30 s for the daemon to exit: only the 1 s shutdown_grace, not the
    // process's own 60 s, can end it in time.
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the stubborn process outlived the shutdown"
    );
}

#[test]
fn start_pulls_in_what_it_depends_on_and_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("db-ready");
    let config = format!(
        r#"
[processes.web]
command = "sleep 1000"
depends_on = {{ db = "healthy" }}

[processes.db]
command = "sleep 1000"
readiness = {{ exec = "test -e {flag}", period = "100ms" }}
"#,
        flag = flag.display()
    );
    std::fs::write(&flag, "").unwrap();
    let d = Daemon::start(&config);
    d.wait_state("web", "running");
    assert!(d.cli(&["stop", "--all"]).status.success());
    d.wait("everything stopped", |s| {
        s.iter()
            .all(|p| p["state"] == "stopped" && p["pid"].is_null())
    });
    std::fs::remove_file(&flag).unwrap();
    let before = d.events().len();
    // Only web is asked for: db comes first, and web waits until db is healthy (not the
    // client: db becomes healthy only once the test says so).
    assert!(d.cli(&["start", "web", "--no-wait"]).status.success());
    d.wait_state("db", "running");
    d.wait("web to wait for db", |s| {
        s.iter().any(|p| {
            p["name"] == "web"
                && p["blocked"]
                    .as_str()
                    .is_some_and(|b| b.contains("waiting for db to be healthy"))
        })
    });
    std::fs::write(&flag, "").unwrap();
    d.wait_state("web", "running");
    let events = d.events();
    let events = &events[before.min(events.len())..];
    let ready = event_index(events, "db ready", |e| {
        e["process"] == "db" && e["event"] == "ready" && e["ready"] == true
    });
    let started = event_index(events, "web starting", |e| {
        is_transition(e, "web", "starting")
    });
    assert!(ready < started, "{events:#?}");
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

/// `stop db`, then `stop --all` and `start --all` while db is still stopping: everything comes
/// back. (The group once forgot that db's stop had been sent, believed it up, and never started
/// it again; web waited for it forever.)
#[test]
fn start_all_brings_back_a_process_still_stopping_from_stop_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let config = format!(
        r#"
[processes.web]
command = "sleep 1000"
depends_on = {{ db = "started" }}

[processes.db]
command = "{db}"
"#,
        db = trapped("db", &log, "1")
    );
    let d = Daemon::start(&config);
    d.wait_state("web", "running");
    let first = d.wait_state("db", "running")["pid"].as_u64().unwrap();
    assert!(d.cli(&["stop", "db", "--no-wait"]).status.success());
    assert!(d.cli(&["stop", "--all", "--no-wait"]).status.success());
    assert!(d.cli(&["start", "--all", "--no-wait"]).status.success());
    d.wait("db and web running again", |s| {
        s.iter().all(|p| p["state"] == "running")
            && s.iter()
                .any(|p| p["name"] == "db" && p["pid"].as_u64().is_some_and(|pid| pid != first))
    });
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn reload_restarts_a_changed_process_through_its_machine() {
    let config = |value: &str| {
        format!(
            r#"
[processes.web]
command = "sleep 1000"
env = {{ VERSION = "{value}" }}

[processes.other]
command = "sleep 1000"
"#
        )
    };
    let d = Daemon::start(&config("1"));
    let before = d.wait_state("web", "running");
    let other = d.wait_state("other", "running");
    std::fs::write(&d.config, config("2")).unwrap();
    let out = d.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    let after = d.wait("web's new instance", |s| {
        s.iter().any(|p| {
            p["name"] == "web" && p["state"] == "running" && p["instance"] != before["instance"]
        })
    });
    let web = after.iter().find(|p| p["name"] == "web").unwrap();
    // The same machine: its history goes on (one restart), and the restart says why.
    assert_eq!(web["restarts"], 1, "{web}");
    assert_ne!(web["pid"], before["pid"]);
    let events = d.events();
    event_index(&events, "web restarting for the reload", |e| {
        is_transition(e, "web", "restarting") && e["cause"] == "reload"
    });
    // The unchanged process was not touched.
    let untouched = after.iter().find(|p| p["name"] == "other").unwrap();
    assert_eq!(untouched["pid"], other["pid"]);
    assert_eq!(untouched["restarts"], 0);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_config_beyond_the_open_file_limit_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("processcontrol.toml");
    let marker = dir.path().join("started");
    let config: String = (0..100)
        .map(|i| {
            format!(
                "[processes.p{i}]\ncommand = \"touch {} && sleep 1000\"\n",
                marker.display()
            )
        })
        .collect();
    std::fs::write(&path, config).unwrap();
    for command in ["check", "up"] {
        // A hard limit of 128: 100 processes need about 364.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n 128 && exec {} {command} -c {}{}",
                daemon::BIN,
                path.display(),
                if command == "up" {
                    format!(" --socket {}/pc.sock", dir.path().display())
                } else {
                    String::new()
                }
            ))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("100 processes need about 364 open files, but the limit is 128")
                && stderr.contains("ulimit -n 364"),
            "{command}: {stderr}"
        );
        assert!(!marker.exists(), "{command} started something");
    }
}

#[test]
fn a_reload_that_cannot_be_built_changes_nothing_and_check_refuses_it_too() {
    let good = r#"
[processes.a]
command = "sleep 1000"

[processes.b]
command = "sleep 1000"
"#;
    // `a` changed (it would be restarted), `b` asks for a log ring smaller than one line.
    let bad = r#"
[processes.a]
command = "sleep 1000"
env = { CHANGED = "1" }

[processes.b]
command = "sleep 1000"
logs = { bytes = "4KiB" }
"#;
    let d = Daemon::start(good);
    let a = d.wait_state("a", "running");
    let b = d.wait_state("b", "running");
    std::fs::write(&d.config, bad).unwrap();
    let check = d.cli(&["check", "-c", d.config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("process b: logs"), "{stderr}");
    let reload = d.cli(&["reload"]);
    assert!(!reload.status.success(), "{reload:?}");
    let after = d.status().unwrap();
    for (name, before) in [("a", &a), ("b", &b)] {
        let now = after.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(now["state"], "running", "{now}");
        assert_eq!(now["pid"], before["pid"], "{name} was touched: {now}");
    }
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}
