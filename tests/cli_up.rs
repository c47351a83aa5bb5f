//! `processcontrol up` and its clients, end to end: the real binary, a real config file, the
//! control socket. Waits are on the daemon's answers (polled through `status`, the only way a
//! client observes it) and always bounded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[path = "support/daemon.rs"]
mod daemon;

use daemon::{Daemon, BIN, WAIT};

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn dependencies_start_in_order_behind_a_health_gate_and_stop_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("db-ready");
    let config = format!(
        r#"
[processes.db]
command = "sleep 1000"
readiness = {{ exec = "test -e {flag}", period = "100ms" }}

[processes.app]
command = "sleep 1000"
depends_on = {{ db = "healthy" }}

[processes.edge]
command = "sleep 1000"
depends_on = ["app"]
"#,
        flag = flag.display()
    );
    let d = Daemon::start(&config);
    d.wait_state("db", "running");
    // db runs but is not ready: app waits, with the reason shown.
    let app = d.process("app").unwrap();
    assert_eq!(app["state"], "starting");
    assert!(
        app["blocked"]
            .as_str()
            .unwrap()
            .contains("waiting for db to be healthy"),
        "{app}"
    );
    let table = String::from_utf8(d.cli(&["status"]).stdout).unwrap();
    assert!(
        table.contains("app: waiting for db to be healthy"),
        "{table}"
    );
    std::fs::write(&flag, "").unwrap();
    d.wait_state("app", "running");
    d.wait_state("edge", "running");
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn shutdown_stops_in_reverse_dependency_order() {
    let config = r#"
[processes.first]
command = "trap 'echo first-stop >> STOPS; exit 0' TERM; while :; do sleep 0.05; done"
[processes.second]
command = "trap 'echo second-stop >> STOPS; exit 0' TERM; while :; do sleep 0.05; done"
depends_on = ["first"]
[processes.third]
command = "trap 'echo third-stop >> STOPS; exit 0' TERM; while :; do sleep 0.05; done"
depends_on = ["second"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let stops = dir.path().join("stops");
    let d = Daemon::start(&config.replace("STOPS", &stops.display().to_string()));
    d.wait_state("third", "running");
    // The traps are set once each shell has started its loop.
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let order = std::fs::read_to_string(&stops).unwrap();
    assert_eq!(order, "third-stop\nsecond-stop\nfirst-stop\n");
}

#[test]
fn control_commands_through_the_socket() {
    let d = Daemon::start(
        r#"
[processes.web]
command = "echo hello from web; exec sleep 1000"
[processes.job]
command = "sleep 1000"
"#,
    );
    let web = d.wait_state("web", "running");
    let pid = web["pid"].as_u64().unwrap();
    d.wait_state("job", "running");

    let out = d.cli(&["restart", "web"]);
    assert!(out.status.success());
    let web = d.wait("web restarted", |s| {
        s.iter()
            .any(|p| p["name"] == "web" && p["instance"] == 2 && p["state"] == "running")
    });
    let web = web.iter().find(|p| p["name"] == "web").unwrap();
    assert_eq!(web["restarts"], 1);
    assert!(!pid_alive(pid));

    assert!(d.cli(&["stop", "job", "--grace", "1s"]).status.success());
    d.wait_state("job", "stopped");
    assert!(d.cli(&["start", "job"]).status.success());
    d.wait_state("job", "running");
    assert!(d.cli(&["kill", "job"]).status.success());
    d.wait_state("job", "killed");
    assert!(d.cli(&["reset", "job"]).status.success());

    let logs = String::from_utf8(d.cli(&["logs", "web", "-n", "10"]).stdout).unwrap();
    assert!(logs.contains("hello from web"), "{logs}");
    let events = d.events();
    assert!(events
        .iter()
        .any(|e| e["process"] == "web" && e["cause"] == "manual_restart"));
    assert!(events
        .iter()
        .any(|e| e["process"] == "job" && e["to"] == "killed"));

    // Unknown process, and --all.
    let out = d.cli(&["restart", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process named \"nope\""));
    assert!(d.cli(&["stop", "--all"]).status.success());
    d.wait("all stopped", |s| {
        s.iter()
            .all(|p| p["state"] == "stopped" || p["state"] == "killed")
    });

    // Follow mode streams new lines until the client leaves.
    let mut follow = Command::new(BIN)
        .args(["events", "-f"])
        .env("PROCESSCONTROL_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // Give the follower time to subscribe before the event it must see (no event tells us).
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.cli(&["start", "web"]).status.success());
    let mut saw = false;
    for line in lines.by_ref().take(20) {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["process"] == "web" && v["cause"] == "start" {
            saw = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(saw, "events -f showed the start");
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn reload_restarts_changed_starts_added_stops_removed_and_keeps_unchanged() {
    let d = Daemon::start(
        r#"
[processes.keep]
command = "sleep 1000"
[processes.change]
command = "sleep 1000"
[processes.remove]
command = "sleep 1000"
"#,
    );
    let keep_pid = d.wait_state("keep", "running")["pid"].as_u64().unwrap();
    let change_pid = d.wait_state("change", "running")["pid"].as_u64().unwrap();
    let remove_pid = d.wait_state("remove", "running")["pid"].as_u64().unwrap();
    std::fs::write(
        &d.config,
        r#"
[processes.keep]
command = "sleep 1000"
[processes.change]
command = "sleep 2000"
[processes.add]
command = "sleep 1000"
"#,
    )
    .unwrap();
    let out = d.cli(&["reload", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &answer["reload"];
    assert_eq!(report["unchanged"], serde_json::json!(["keep"]));
    assert_eq!(report["changed"], serde_json::json!(["change"]));
    assert_eq!(report["removed"], serde_json::json!(["remove"]));
    assert_eq!(report["added"], serde_json::json!(["add"]));
    d.wait_state("add", "running");
    let status = d.wait_state("change", "running");
    assert_ne!(status["pid"].as_u64().unwrap(), change_pid);
    assert_eq!(
        d.process("keep").unwrap()["pid"].as_u64().unwrap(),
        keep_pid,
        "unchanged keeps its pid"
    );
    assert!(d.process("remove").is_none());
    assert!(!pid_alive(remove_pid) && !pid_alive(change_pid));

    // An invalid new config is rejected with its errors; the running set stays.
    std::fs::write(&d.config, "[processes.keep]\ncommand = 42\n").unwrap();
    let out = d.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("processcontrol.toml:2:11"), "{err}");
    assert_eq!(
        d.process("keep").unwrap()["pid"].as_u64().unwrap(),
        keep_pid
    );
    assert!(d.process("add").is_some());
    d.stop();
}

#[test]
fn sighup_reloads() {
    let d = Daemon::start("[processes.a]\ncommand = \"sleep 1000\"\n");
    d.wait_state("a", "running");
    std::fs::write(
        &d.config,
        "[processes.a]\ncommand = \"sleep 1000\"\n[processes.b]\ncommand = \"sleep 1000\"\n",
    )
    .unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    d.wait_state("b", "running");
    d.stop();
}

#[test]
fn malformed_requests_do_not_disturb_the_daemon() {
    let d = Daemon::start("[processes.a]\ncommand = \"sleep 1000\"\n");
    d.wait_state("a", "running");
    let mut bad = UnixStream::connect(&d.socket).unwrap();
    bad.set_read_timeout(Some(WAIT)).unwrap();
    bad.write_all(b"this is not json\n").unwrap();
    let mut reader = BufReader::new(bad.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], false, "{line}");
    // An oversized line.
    let mut huge = UnixStream::connect(&d.socket).unwrap();
    huge.set_read_timeout(Some(WAIT)).unwrap();
    let _ = huge.write_all(&vec![b'x'; 200 * 1024]);
    // A half-sent request, left hanging.
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(b"{\"cmd\":\"sta").unwrap();
    // Meanwhile, a proper client is served.
    assert_eq!(d.process("a").unwrap()["state"], "running");
    d.stop();
}

#[test]
fn another_uid_is_refused() {
    let d = Daemon::start("[processes.a]\ncommand = \"sleep 1000\"\n");
    d.wait_state("a", "running");
    // Let uid 65534 reach the socket's directory; the socket itself stays 0600.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "status",
        ])
        .env("PROCESSCONTROL_SOCKET", &d.socket)
        .output();
    match out {
        Ok(out) if out.status.code().is_some() => {
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("permission denied") || err.contains("Permission denied"),
                "{err}"
            );
        }
        other => eprintln!("skipped: cannot switch uid with setpriv here ({other:?})"),
    }
    assert_eq!(d.process("a").unwrap()["state"], "running");
    d.stop();
}

#[test]
fn no_daemon_is_said_plainly() {
    let out = Command::new(BIN)
        .args(["status"])
        .env("PROCESSCONTROL_SOCKET", "/tmp/surely-no-daemon-here.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no processcontrol daemon is listening"),
        "{err}"
    );
}

#[test]
fn invalid_configs_are_rejected_with_positions_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (config, needles) in [
        ("[processes.a]\ncommand = \"true\"\nrestart = \"sometimes\"\n", &["bad.toml:3:11", "restart"][..]),
        ("[processes.a]\ncommand = \"true\"\nbackoff = { initial = \"soon\" }\n", &["bad.toml:3:23", "duration"][..]),
        ("[processes.a]\ncommand = \"true\"\nstop = { signal = \"SIGNOPE\" }\n", &["bad.toml:3:19", "SIGNOPE"][..]),
        ("[processes.a]\ncommand = \"true\"\nlimits.memory = { max = \"lots\" }\n", &["bad.toml:3:", "size"][..]),
        ("[processes.a]\ncommand = \"true\"\ncolour = \"blue\"\n", &["bad.toml:3:1", "colour"][..]),
        ("[processes.a]\ncommand = [\"/no/such/program\"]\n", &["bad.toml:2:", "not found"][..]),
        (
            "[processes.a]\ncommand = \"true\"\ndepends_on = [\"b\"]\n[processes.b]\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
            &["cycle", "a -> b -> a"][..],
        ),
        ("[processes.a]\ncommand = \"true\"\nliveness = { http = \"http://127.0.0.1:0/\" }\n", &["bad.toml:3:", "port"][..]),
    ] {
        std::fs::write(&path, config).unwrap();
        let out = Command::new(BIN).arg("check").arg("-c").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
        // `up` refuses the same file before starting anything.
        let out = Command::new(BIN)
            .arg("up")
            .arg("-c")
            .arg(&path)
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(!Path::new(&dir.path().join("s.sock")).exists());
    }
}
