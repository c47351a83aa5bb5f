//! The everyday pieces of issue 12, end to end with the real binary: systemd notification of
//! the supervisor itself, `up --exit-on-end` / `--exit-code-from`, `run --config`, `run`
//! without `--`, completions, the man page, `env_file`, the account's variables for `user`,
//! and the checks that name what is wrong.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::WAIT;

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pc.toml");
    std::fs::write(&path, text.replace("DIR", &dir.display().to_string())).unwrap();
    path
}

fn up(dir: &Path, config: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["up", "-c"])
        .arg(config)
        .arg("--socket")
        .arg(dir.join("pc.sock"))
        .args(extra)
        .stdout(Stdio::null());
    c
}

/// A child that is stopped (SIGTERM, then SIGKILL after `WAIT`) when the test ends, even by
/// a panic: a daemon left behind would keep its processes running.
struct Stopped(Child);

impl std::ops::Deref for Stopped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Stopped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        sigterm(&self.0);
        let deadline = Instant::now() + WAIT;
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child's exit, failing after `WAIT`.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// The messages a fake service manager receives.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        Manager {
            socket,
            seen: Vec::new(),
        }
    }

    /// Receives until a message containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {needle:?} (seen {:?}): {e}", self.seen));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(message.clone());
            if message.contains(needle) {
                return message;
            }
        }
    }
}

#[test]
fn up_tells_systemd_when_ready_how_it_goes_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
[processes.web]
command = "echo \"NS=$NOTIFY_SOCKET WD=$WATCHDOG_USEC\" > DIR/env; exec sleep 1000"
readiness = { exec = ["test", "-e", "DIR/ready"], period = "50ms" }
"#,
    );
    let mut manager = Manager::bind(&dir.path().join("notify.sock"));
    let child = up(dir.path(), &config, &[])
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "200000")
        .spawn()
        .map(Stopped)
        .unwrap();
    let waiting = manager.wait_for("its readiness probe has not passed");
    assert!(
        waiting.contains("STATUS=0 of 1 process(es) ready; web:"),
        "{waiting}"
    );
    manager.wait_for("WATCHDOG=1");
    assert!(
        !manager.seen.iter().any(|m| m.contains("READY=1")),
        "READY=1 before web was ready: {:?}",
        manager.seen
    );
    std::fs::write(dir.path().join("ready"), "").unwrap();
    let ready = manager.wait_for("READY=1");
    assert!(ready.contains("STATUS=1 process(es) ready"), "{ready}");
    // The supervisor's own variables are not handed to what it runs.
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    assert_eq!(env.trim(), "NS= WD=");
    sigterm(&child);
    manager.wait_for("STOPPING=1");
    let mut child = child;
    assert!(wait_exit(&mut child).success());
}

#[test]
fn run_tells_systemd_when_its_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = Manager::bind(&dir.path().join("notify.sock"));
    let mut child = Command::new(BIN)
        .args(["run", "sleep", "1000"])
        .env("NOTIFY_SOCKET", dir.path().join("notify.sock"))
        .spawn()
        .map(Stopped)
        .unwrap();
    let ready = manager.wait_for("READY=1");
    assert!(ready.contains("STATUS=1 process(es) ready"), "{ready}");
    sigterm(&child);
    manager.wait_for("STOPPING=1");
    wait_exit(&mut child);
}

#[test]
fn up_exits_on_end_with_the_status_of_how_it_went() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[processes.a]\ncommand = \"exit 0\"\n[processes.b]\ncommand = \"sleep 0.2\"\n",
    );
    let mut child = up(dir.path(), &config, &["--exit-on-end"])
        .spawn()
        .map(Stopped)
        .unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(0));

    // The first failure, in file order, gives the status; the config key does the same.
    let config = write_config(
        dir.path(),
        "[supervisor]\nexit_on_end = true\n[processes.a]\ncommand = \"sleep 0.2\"\n\
         [processes.b]\ncommand = \"exit 4\"\nrestart = \"never\"\n",
    );
    let mut child = up(dir.path(), &config, &[]).spawn().map(Stopped).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(4));
}

#[test]
fn up_exit_code_from_ends_with_that_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[processes.server]\ncommand = \"sleep 1000\"\n\
         [processes.tests]\ncommand = \"sleep 0.2; exit 7\"\nrestart = \"never\"\n",
    );
    let started = Instant::now();
    let mut child = up(dir.path(), &config, &["--exit-code-from", "tests"])
        .spawn()
        .map(Stopped)
        .unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(7));
    // `server` was stopped, not waited for.
    assert!(started.elapsed() < Duration::from_secs(15));

    let out = up(dir.path(), &config, &["--exit-code-from", "test"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean `tests`?"), "{err}");
}

#[test]
fn run_runs_one_process_of_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.env"),
        "# the app's settings\nGREETING=\"hello there\"\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        "[processes.hello]\ncommand = \"echo $GREETING from config; exit 3\"\n\
         restart = \"never\"\nenv_file = \"app.env\"\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello there from config\n"
    );

    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .arg("helo")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `hello`?"));
}

#[test]
fn run_needs_no_double_dash_and_keeps_clap_tips() {
    // Everything after the program is the program's, flags included.
    let out = Command::new(BIN)
        .args([
            "run",
            "--restart",
            "never",
            "sh",
            "-c",
            "echo $0; exit 5",
            "--restart",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    // (`sh -c SCRIPT ARG`: ARG is the script's $0.)
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--restart\n");

    let out = Command::new(BIN)
        .args(["run", "--restrat", "never", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--restart"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

fn output(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn completions_and_the_man_page() {
    for (shell, needle) in [
        ("bash", "complete -F _processcontrol"),
        ("zsh", "#compdef processcontrol"),
        ("fish", "complete -c processcontrol"),
    ] {
        let out = output(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("exit-code-from"), "{shell} completes flags");
    }
    // bash loads it.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pc.bash");
    std::fs::write(&script, output(&["completions", "bash"]).stdout).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p processcontrol",
            script.display()
        ))
        .output();
    match loaded {
        Ok(out) => assert!(
            String::from_utf8_lossy(&out.stdout).contains("_processcontrol"),
            "{out:?}"
        ),
        Err(e) => eprintln!("skipped loading the bash completion: {e}"),
    }
    assert_eq!(output(&["completions", "tcsh"]).status.code(), Some(2));

    let man = output(&["man"]);
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH processcontrol 1"),
        "{page}"
    );
    for needle in ["keeps programs running", "completions", "up"] {
        assert!(page.contains(needle), "{needle} not in the man page");
    }
}

#[test]
fn env_files_and_the_accounts_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.env"),
        "# comment\nexport A=from-file\nB='single $quoted'\nC=\"double \\\"x\\\"\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("more.env"), "B=later-file\n").unwrap();
    let root = nix_is_root();
    let user_line = if root { "user = \"nobody\"\n" } else { "" };
    let config = write_config(
        dir.path(),
        &format!(
            "[processes.a]\ncommand = \"echo A=$A B=$B C=$C D=$D HOME=$HOME USER=$USER LOGNAME=$LOGNAME SHELL=$SHELL; exec sleep 1000\"\n\
             env_file = [\"base.env\", \"more.env\"]\nenv = {{ D = \"from-env\", A = \"env-wins\" }}\n{user_line}"
        ),
    );
    let check = output(&["check", "-c", config.to_str().unwrap()]);
    assert!(check.status.success(), "{check:?}");
    let mut child = up(dir.path(), &config, &[]).spawn().map(Stopped).unwrap();
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let logs = Command::new(BIN)
            .args(["logs", "a", "--socket"])
            .arg(dir.path().join("pc.sock"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&logs.stdout).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains("A=")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no output: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.contains("A=env-wins B=later-file C=double \"x\" D=from-env"),
        "{line}"
    );
    if root {
        assert!(
            line.contains("HOME=/nonexistent USER=nobody LOGNAME=nobody SHELL=/usr/sbin/nologin"),
            "{line}"
        );
    } else {
        eprintln!("skipped the `user` part: running as `nobody` needs root");
    }
    sigterm(&child);
    wait_exit(&mut child);
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn check_names_missing_files_unknown_accounts_and_near_misses() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needles) in [
        (
            "[processes.a]\ncommand = \"true\"\nenv_file = \"missing.env\"\n",
            &["pc.toml:3:12:", "env_file: cannot read", "missing.env"][..],
        ),
        (
            "[processes.a]\ncommand = \"true\"\nuser = \"nosuchuser-pc\"\n",
            &["pc.toml:3:8:", "unknown user"][..],
        ),
        (
            "[processes.a]\ncommand = \"true\"\ngroup = \"nosuchgroup-pc\"\n",
            &["pc.toml:3:9:", "unknown group"][..],
        ),
        (
            "[processes.web]\ncommand = \"true\"\n[processes.b]\ncommand = \"true\"\ndepends_on = [\"wb\"]\n",
            &["unknown process `wb`; did you mean `web`?"][..],
        ),
        (
            "[processes.web]\ncommand = \"true\"\n[processes.b]\ncommand = \"true\"\ndepends_on = { web = \"helthy\" }\n",
            &["unknown condition; did you mean `healthy`?"][..],
        ),
    ] {
        let config = write_config(dir.path(), text);
        let out = output(&["check", "-c", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }
    }
}

#[test]
fn run_reaches_the_other_process_keys_by_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    // exit_codes.success: 3 is a clean exit, so on-failure does not restart.
    let out = Command::new(BIN)
        .args([
            "run",
            "--success-exit-codes",
            "0,3",
            "--restart",
            "on-failure",
        ])
        .args(["sh", "-c", "echo started; exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");

    // env_file under --env.
    std::fs::write(dir.path().join("app.env"), "A=from-file\nB=from-file\n").unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("--env-file")
        .arg(dir.path().join("app.env"))
        .args([
            "--env",
            "B=from-flag",
            "--restart",
            "never",
            "sh",
            "-c",
            "echo $A $B",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-file from-flag\n"
    );

    // logs.file: the output also goes to DIR/NAME.log (written while the program runs; that
    // the last lines are drained before `run` exits is issue 14's business).
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--log-dir")
        .arg(dir.path())
        .args(["--name", "app", "sh", "-c", "echo to-file; exec sleep 1000"])
        .stdout(Stdio::null())
        .spawn()
        .map(Stopped)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(dir.path().join("app.log")).is_ok_and(|l| l.contains("to-file"))
    {
        assert!(Instant::now() < deadline, "nothing in app.log");
        std::thread::sleep(Duration::from_millis(20));
    }
    sigterm(&child);
    wait_exit(&mut child);

    for (args, needle) in [
        (&["--log-dir", "/nonexistent-dir"][..], "not a directory"),
        (&["--user", "nosuchuser-pc"][..], "no such user"),
        (&["--env-file", "/nonexistent/app.env"][..], "--env-file"),
        (&["--readiness-tcp", "nonsense"][..], "--readiness-*"),
    ] {
        let out = Command::new(BIN)
            .arg("run")
            .args(args)
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn run_readiness_flags_drive_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let port = support::free_port();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--http",
            &port.to_string(),
            "--readiness-period",
            "50ms",
        ])
        .arg("--readiness-exec")
        .arg(format!("test -e {}", flag.display()))
        .args(["sleep", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .map(Stopped)
        .unwrap();
    let readyz = || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).ok()?;
        Some(answer)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(answer) = readyz() {
            if answer.contains("readiness probe") {
                assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "never not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&flag, "").unwrap();
    loop {
        if readyz().is_some_and(|a| a.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child);
    wait_exit(&mut child);
}
