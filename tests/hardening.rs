//! Hardening (issue 14), end to end with the real binary: what a service's user can do to the
//! supervisor, output that must never be lost, and a stdout that stalls. Run as root (as CI
//! does); a test needing something this machine lacks says why it skipped.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_processcontrol");
const WAIT: Duration = Duration::from_secs(30);

/// Every `up` starts by cleaning up after dead supervisors. The tests of point 8 kill a
/// daemon and check that the *next* one cleans up: no other daemon may start in between.
static STARTING: std::sync::RwLock<()> = std::sync::RwLock::new(());

thread_local! {
    /// This thread holds [`STARTING`] exclusively (its own daemons start without it).
    static EXCLUSIVE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` while no daemon of another test can start.
fn alone<T>(f: impl FnOnce() -> T) -> T {
    let _alone = STARTING.write().unwrap_or_else(|p| p.into_inner());
    EXCLUSIVE.set(true);
    let result = f();
    EXCLUSIVE.set(false);
    result
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// An `up` daemon on a private socket, with its stdout where the test says.
struct Daemon {
    child: Child,
    /// Holds the config file for the daemon's lifetime.
    _dir: tempfile::TempDir,
    socket: PathBuf,
    /// What the daemon wrote on stderr so far (its warnings).
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(config: &str, stdout: Stdio) -> Daemon {
        Daemon::start_with(config, stdout, None, &[])
    }

    /// With a given socket path, and environment changes (`None`: removed).
    fn start_with(
        config: &str,
        stdout: Stdio,
        socket: Option<&Path>,
        env: &[(&str, Option<&str>)],
    ) -> Daemon {
        Daemon::start_on(config, stdout, socket, env, |_| {})
    }

    /// Like [`Daemon::start_with`], with a last change to the command (which may also send
    /// stderr elsewhere; it is collected only while it is a pipe).
    fn start_on(
        config: &str,
        stdout: Stdio,
        socket: Option<&Path>,
        env: &[(&str, Option<&str>)],
        adjust: impl FnOnce(&mut Command),
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = socket.map_or_else(|| dir.path().join("pc.sock"), Path::to_path_buf);
        let path = dir.path().join("processcontrol.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(BIN);
        for (key, value) in env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        command
            .args(["up", "-c"])
            .arg(&path)
            .arg("--socket")
            .arg(&socket)
            .stdout(stdout)
            .stderr(Stdio::piped());
        adjust(&mut command);
        // Held until the socket answers: by then the daemon's clean-up is done.
        let _starting =
            (!EXCLUSIVE.get()).then(|| STARTING.read().unwrap_or_else(|p| p.into_inner()));
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let collected = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = read_on(&mut pipe, &mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    eprint!("{text}");
                    collected.lock().unwrap().push_str(&text);
                }
            });
        }
        let d = Daemon {
            child,
            _dir: dir,
            socket,
            stderr,
        };
        d.wait("the socket", |_| true);
        drop(_starting);
        d
    }

    /// Runs a client command; one that has not answered within 10 s is killed (a wedged
    /// daemon must fail the test, not hang it).
    fn cli(&self, args: &[&str]) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .env("PROCESSCONTROL_SOCKET", &self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read meanwhile: an answer larger than a pipe's buffer would block the client.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = read_on(&mut pipe, &mut buf) {
                        bytes.extend_from_slice(&buf[..n]);
                    }
                }
                bytes
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            // A client's exit has no event to wait on from here.
            std::thread::sleep(Duration::from_millis(10));
        }
        Output {
            status: child.wait().unwrap(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
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

    /// Polls `status` until `f` holds.
    fn wait(&self, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.status() {
                if f(&status) {
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon's stderr has a line containing every one of `needles`.
    fn wait_stderr(&self, needles: &[&str]) -> String {
        poll(&format!("a warning with {needles:?}"), || {
            self.stderr
                .lock()
                .unwrap()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    fn terminate(&mut self) -> i32 {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the daemon did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `read`, again after a signal: a stop and resume of the test process (a frozen cgroup,
/// a debugger) makes blocking calls fail with EINTR even without signal handlers.
fn read_on(from: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match from.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Polls `f` until it returns `Some`, failing after `WAIT` (for files and pipes, which have no
/// event the test could await).
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----- 1. exec probes run as the process ---------------------------------------------------

#[test]
fn exec_probes_run_with_the_process_user_group_env_and_cwd() {
    if !is_root() {
        eprintln!("skipped: switching to user `nobody` needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `nobody` must reach the directory and write the probe's report.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = work.join("probe");
    let config = format!(
        r#"
[processes.svc]
command = ["sleep", "1000"]
user = "nobody"
cwd = "{work}"
env = {{ PROBE_MARK = "from-env" }}
liveness = {{ exec = ["/bin/sh", "-c", "echo $(id -u) $(id -g) $PROBE_MARK $(pwd) > probe.tmp && mv probe.tmp probe"], period = "100ms" }}
"#,
        work = work.display()
    );
    let _daemon = Daemon::start(&config, Stdio::null());
    let seen = poll("the probe's report", || {
        std::fs::read_to_string(&report).ok()
    });
    assert_eq!(
        seen.trim(),
        format!("65534 65534 from-env {}", work.display()),
        "the probe ran as someone else than the process"
    );
}

// ----- 2. log files cannot be redirected by the service's user -------------------------------

#[test]
fn log_files_refuse_planted_symlinks_and_fifos_and_are_created_0640() {
    if !is_root() {
        eprintln!("skipped: a log directory owned by another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A root-only file the service would like to append to.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The log directory belongs to the service's user, who plants things in it.
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("evil.log")).unwrap();
    let fifo = std::ffi::CString::new(logs.join("fifo.log").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    std::os::unix::fs::chown(logs.join("fifo.log"), Some(65534), Some(65534)).unwrap();
    // The service's own regular file, to append its lines to in our name.
    std::fs::write(logs.join("theirs.log"), "").unwrap();
    std::os::unix::fs::chown(logs.join("theirs.log"), Some(65534), Some(65534)).unwrap();
    let config = format!(
        r#"
[supervisor]
log_dir = "{logs}"

[processes.evil]
command = "echo appended by the service; exec sleep 1000"
user = "nobody"
logs = {{ file = true }}

[processes.fifo]
command = "echo into a fifo; exec sleep 1000"
user = "nobody"
logs = {{ file = true }}

[processes.theirs]
command = "echo written as root; exec sleep 1000"
user = "nobody"
logs = {{ file = true }}

[processes.plain]
command = "echo hello; exec sleep 1000"
logs = {{ file = true }}
"#,
        logs = logs.display()
    );
    let daemon = Daemon::start(&config, Stdio::null());
    let plain = logs.join("plain.log");
    poll("plain.log", || {
        std::fs::read_to_string(&plain)
            .ok()
            .filter(|t| t.contains("hello"))
    });
    let meta = std::fs::symlink_metadata(&plain).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    daemon.wait_stderr(&["evil.log", "refusing"]);
    daemon.wait_stderr(&["fifo.log", "refusing"]);
    daemon.wait_stderr(&["theirs.log", "owned by another user"]);
    assert_eq!(
        std::fs::read_to_string(logs.join("theirs.log")).unwrap(),
        ""
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n");
    // The daemon itself is fine.
    assert!(daemon.status().is_some());
}

// ----- 3. a stalled stdout wedges nothing --------------------------------------------------

/// A pipe with a small buffer: the daemon's stdout, which the test does not read.
fn small_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: just created, owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    (read, write)
}

/// Bytes waiting in a pipe or a socket.
fn pending(read: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut n) };
    usize::try_from(n).unwrap_or(0)
}

const FLOOD: &str = r#"
[processes.flood]
command = "seq 1 100000; while :; do echo after; sleep 0.1; done"

[processes.ticker]
command = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"
"#;

/// Starts the flooding daemon and waits until its stdout (and its stderr too, with
/// `stderr_too`: `up 2>&1 | less`) is stalled and the flood is past it.
fn stalled_daemon(stderr_too: bool) -> (Daemon, OwnedFd) {
    let (read, write) = small_pipe();
    let stderr = stderr_too.then(|| write.try_clone().unwrap());
    // On one CPU (a small container), as the runtime then has a single worker: a blocking
    // write on it would stop everything.
    let daemon = Daemon::start_on(FLOOD, Stdio::from(write), None, &[], |command| {
        use std::os::unix::process::CommandExt;
        if let Some(stderr) = stderr {
            command.stderr(stderr);
        }
        // SAFETY: sched_setaffinity is async-signal-safe and touches only the set we pass.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // Output has reached stdout (the pipe then holds what a first write left; the next write
    // may wait for a free page, so "full" is not a byte count).
    poll("output on stdout", || (pending(&read) > 0).then_some(()));
    // The whole flood (700 KB, far more than the pipe and the printer's queue hold) went
    // through the capture, although stdout takes nothing.
    poll("the flood to be captured", || {
        let out = daemon.cli(&["logs", "flood", "-n", "200"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("after")
            .then_some(())
    });
    if stderr_too {
        fill_to_the_brim(daemon.child.id());
    }
    (daemon, read)
}

/// Fills the pipe that is `pid`'s stdout until not one more byte fits: the printer's stuck
/// write may have left room in the pipe's page, where a short line would still fit.
fn fill_to_the_brim(pid: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    // A new open file description of the same pipe: O_NONBLOCK here leaves the daemon's alone.
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/1"))
        .unwrap();
    // Newlines only, one at a time: the reader (if any) sees empty lines.
    while pipe.write(b"\n").is_ok() {}
}

#[test]
fn a_stalled_stdout_leaves_the_control_socket_and_other_processes_working() {
    let (daemon, read) = stalled_daemon(false);
    // Every command answers, and the other process keeps running and being captured.
    let ticks = |d: &Daemon| -> u64 {
        let out = d.cli(&["logs", "ticker", "-n", "1"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no tick in {text:?}"))
    };
    let first = ticks(&daemon);
    for _ in 0..5 {
        assert!(
            daemon.status().is_some(),
            "status failed while stdout is stalled"
        );
    }
    poll("the ticker to go on", || {
        (ticks(&daemon) > first + 3).then_some(())
    });
    let out = daemon.cli(&["stop", "ticker"]);
    assert!(out.status.success(), "{out:?}");
    let out = daemon.cli(&["start", "ticker"]);
    assert!(out.status.success(), "{out:?}");
    // Once stdout flows again, the gap is marked with the number of lines dropped.
    let mut reader = std::fs::File::from(read);
    let marker = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match read_on(&mut reader, &mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&seen);
            // `flood  | [processcontrol: N lines dropped]` (the name padded to `ticker`'s).
            if let Some(line) = text.lines().find(|l| {
                l.starts_with("flood  | [processcontrol: ") && l.ends_with(" lines dropped]")
            }) {
                return Some(line.to_string());
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    while !marker.is_finished() {
        assert!(Instant::now() < deadline, "no drop marker on stdout");
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = marker.join().unwrap().expect("a drop marker before EOF");
    let dropped: u64 = line
        .trim_start_matches("flood  | [processcontrol: ")
        .trim_end_matches(" lines dropped]")
        .parse()
        .unwrap();
    assert!(dropped > 0, "{line}");
}

#[test]
fn sigterm_stops_the_daemon_while_its_stdout_is_stalled() {
    let (mut daemon, _read) = stalled_daemon(false);
    let started = Instant::now();
    assert_eq!(daemon.terminate(), 0);
    // The processes stop within their grace (10 s by default; these exit at SIGTERM).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
}

/// Narration and warnings are said from runtime workers: with stderr stalled too, every
/// decision (a stop, a start, the shutdown) would otherwise wait for a reader that never comes.
#[test]
fn a_stalled_stdout_and_stderr_leave_the_daemon_working() {
    let (mut daemon, _read) = stalled_daemon(true);
    for _ in 0..3 {
        assert!(daemon.status().is_some(), "status failed while stalled");
    }
    for command in ["stop", "start", "restart"] {
        let out = daemon.cli(&[command, "ticker"]);
        assert!(out.status.success(), "{command} while stalled: {out:?}");
    }
    daemon.wait("the ticker running again", |s| {
        s.iter()
            .any(|p| p["name"] == "ticker" && p["state"] == "running")
    });
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn run_stops_at_sigterm_while_its_stdout_and_stderr_are_stalled() {
    let (read, write) = small_pipe();
    let mut child = Command::new(BIN)
        .args(["run", "--restart", "never", "--", "seq", "1", "100000"])
        .stdout(Stdio::from(write.try_clone().unwrap()))
        .stderr(Stdio::from(write))
        .spawn()
        .unwrap();
    // The narration's first line or the program's output is there; then not one more byte
    // fits, so the program and any other writer wait.
    poll("output in the pipe", || (pending(&read) > 0).then_some(()));
    fill_to_the_brim(child.id());
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = poll("run to exit", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
}

// ----- 4. `run` passes output through, byte for byte -----------------------------------------

/// `processcontrol run --restart never -- argv` with stdout into a file; returns the bytes.
fn run_into_file(argv: &[&str]) -> (i32, Vec<u8>) {
    run_into_file_with(&[], argv)
}

/// Like [`run_into_file`], with more flags for `run`.
fn run_into_file_with(flags: &[&str], argv: &[&str]) -> (i32, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let status = Command::new(BIN)
        .args(["run", "--restart", "never"])
        .args(flags)
        .arg("--")
        .args(argv)
        .stdout(out)
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read(&out_path).unwrap(),
    )
}

#[test]
fn run_passes_three_million_lines_through_unchanged() {
    let (code, got) = run_into_file(&["seq", "1", "3000000"]);
    assert_eq!(code, 0);
    let mut expected = Vec::with_capacity(got.len());
    for i in 1..=3_000_000u32 {
        writeln!(expected, "{i}").unwrap();
    }
    assert_eq!(got.len(), expected.len(), "length differs");
    assert!(got == expected, "content differs");
}

#[test]
fn run_passes_binary_output_and_long_lines_through_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    // Every byte value (invalid UTF-8, NUL, CR), a 100 KB line, and no final newline.
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    data.extend(std::iter::repeat_n(b'x', 100_000));
    data.extend_from_slice(b"\r\n\xff\xfe no newline at the end");
    std::fs::write(&input, &data).unwrap();
    let (code, got) = run_into_file(&["cat", input.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        got == data,
        "got {} bytes, expected {}",
        got.len(),
        data.len()
    );
}

/// With a log file the output must be captured too: it is then copied as read, with
/// backpressure, not printed line by line (which dropped lines and rewrote bytes).
#[test]
fn run_with_a_log_file_passes_output_through_unchanged_too() {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().to_str().unwrap();
    let (code, got) = run_into_file_with(
        &["--log-dir", dir, "--name", "seq"],
        &["seq", "1", "1000000"],
    );
    assert_eq!(code, 0);
    let mut expected = Vec::with_capacity(got.len());
    for i in 1..=1_000_000u32 {
        writeln!(expected, "{i}").unwrap();
    }
    assert_eq!(got.len(), expected.len(), "length differs");
    assert!(got == expected, "content differs");
    // The log file saw the output too (its writer may drop lines on a slow disk, never
    // silently: the last line is there or a drop marker is).
    let file = std::fs::read_to_string(logs.path().join("seq.log")).unwrap();
    assert!(
        file.ends_with("1000000\n") || file.contains("lines dropped"),
        "{}",
        &file[file.len().saturating_sub(200)..]
    );
    let input = logs.path().join("in");
    let mut data: Vec<u8> = (0..=255u8).cycle().take(256 * 64).collect();
    data.extend(std::iter::repeat_n(b'x', 100_000));
    data.extend_from_slice(b"\r\n\xff\xfe no newline at the end");
    std::fs::write(&input, &data).unwrap();
    let (code, got) = run_into_file_with(
        &["--log-dir", dir, "--name", "cat"],
        &["cat", input.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(
        got == data,
        "got {} bytes, expected {}",
        got.len(),
        data.len()
    );
}

#[test]
fn the_last_line_of_a_crashing_program_always_arrives() {
    for round in 0..30 {
        let out = Command::new(BIN)
            .args(["run", "--restart", "never", "--", "sh", "-c"])
            .arg("echo hello; i=0; while [ $i -lt 4000 ]; do i=$((i+1)); echo line $i; done; echo last words >&2; echo last line; kill -SEGV $$")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + libc::SIGSEGV),
            "round {round}: {out:?}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"hello"), "round {round}");
        assert_eq!(lines.len(), 4002, "round {round}");
        assert_eq!(lines.last(), Some(&"last line"), "round {round}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("last words"),
            "round {round}: {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ----- 5. READY=1 as the very first instruction ----------------------------------------------

/// Compiles a program whose first action is `READY=1` to `$NOTIFY_SOCKET`, then sleeps.
fn notify_first_program(dir: &Path) -> Option<PathBuf> {
    let source = dir.join("ready_first.c");
    std::fs::write(
        &source,
        r#"
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(void) {
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (!path || fd < 0) return 2;
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (sendto(fd, "READY=1", 7, 0, (struct sockaddr *)&addr, sizeof addr) != 7) return 3;
    for (;;) pause();
}
"#,
    )
    .unwrap();
    let program = dir.join("ready_first");
    let built = Command::new("cc")
        .arg("-O2")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .output();
    match built {
        Ok(out) if out.status.success() => Some(program),
        other => {
            eprintln!("skipped: cannot compile a C helper with `cc`: {other:?}");
            None
        }
    }
}

#[test]
fn ready_sent_as_the_first_instruction_is_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(program) = notify_first_program(dir.path()) else {
        return;
    };
    let mut config = String::new();
    for i in 0..40 {
        config.push_str(&format!(
            "[processes.n{i}]\ncommand = [\"{}\"]\nnotify = true\n\n",
            program.display()
        ));
    }
    let daemon = Daemon::start(&config, Stdio::null());
    let status = daemon.wait("every process running", |s| {
        s.len() == 40 && s.iter().all(|p| p["state"] == "running")
    });
    assert_eq!(status.len(), 40);
    // READY=1 is sent at once; give it the whole wait to be heard.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = daemon.status().unwrap();
        let not_ready: Vec<&Value> = status.iter().filter(|p| p["ready"] != true).collect();
        if not_ready.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 40 never became ready: {:?}",
            not_ready.len(),
            not_ready.iter().map(|p| &p["name"]).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ----- 6. the HTTP listener: a connection cap, warned about once --------------------------

/// What the listener's cap is (`http::Limits::default().max_connections`).
const HTTP_CAP: usize = 64;

/// Any local user can connect to the HTTP port. Connections over the cap are closed as soon as
/// they are accepted, while those under it are still served (they would each hold one of the
/// daemon's descriptors until their header timeout), and the flood is one warning, not one per
/// connection.
#[test]
fn http_connections_over_the_cap_are_closed_at_once_and_warned_about_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[supervisor]\nhttp = \"127.0.0.1:{port}\"\n\n[processes.a]\ncommand = \"sleep 1000\"\n"
    );
    let mut daemon = Daemon::start(&config, Stdio::null());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let connect = || std::net::TcpStream::connect_timeout(&addr, WAIT).unwrap();
    // Accepted in the order they connected: these fill every slot and send nothing.
    let held: Vec<std::net::TcpStream> = (0..HTTP_CAP).map(|_| connect()).collect();
    let over: Vec<std::net::TcpStream> = (0..100).map(|_| connect()).collect();
    for mut stream in over {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match read_on(&mut stream, &mut [0u8; 16]) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a connection over the cap was served: {other:?}"),
        }
    }
    // Without the cap, those would have waited for their own header timeout, which closes
    // the earlier ones first: every held connection must still be open.
    for stream in &held {
        stream.set_nonblocking(true).unwrap();
        match (&*stream).read(&mut [0u8; 16]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a connection under the cap was closed: {other:?}"),
        }
    }
    assert!(daemon.status().is_some(), "status during the flood");
    drop(held);
    assert_eq!(daemon.terminate(), 0);
    // The shutdown's summary comes after every warning of the flood.
    daemon.wait_stderr(&["a: stopped"]);
    let warnings = daemon
        .stderr
        .lock()
        .unwrap()
        .lines()
        .filter(|l| l.contains("connections open, closing the one from"))
        .count();
    assert_eq!(warnings, 1, "100 refused connections, one warning");
}

// ----- 7. runtime directories nobody else can prepare -----------------------------------------

/// The `NOTIFY_SOCKET` a process of the daemon was given.
fn notify_socket_of(pid: u64) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"NOTIFY_SOCKET="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("a NOTIFY_SOCKET")
}

const NOTIFIED: &str = "[processes.n]\ncommand = [\"sleep\", \"1000\"]\nnotify = true\n";

#[test]
fn notify_sockets_live_in_a_checked_private_directory() {
    if !is_root() {
        eprintln!("skipped: the root default (/run/processcontrol) needs root");
        return;
    }
    let daemon = Daemon::start_with(NOTIFIED, Stdio::null(), None, &[("XDG_RUNTIME_DIR", None)]);
    let status = daemon.wait("n running", |s| s.iter().any(|p| p["state"] == "running"));
    let pid = status[0]["pid"].as_u64().unwrap();
    let socket = PathBuf::from(notify_socket_of(pid));
    assert!(
        socket.starts_with("/run/processcontrol/"),
        "{}",
        socket.display()
    );
    let dir = socket.parent().unwrap();
    for d in [dir, Path::new("/run/processcontrol")] {
        let meta = std::fs::symlink_metadata(d).unwrap();
        assert!(meta.is_dir(), "{}", d.display());
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
        assert_eq!(
            meta.permissions().mode() & 0o022,
            0,
            "{} is writable by others",
            d.display()
        );
    }
}

#[test]
fn a_runtime_directory_prepared_by_someone_else_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let xdg = base.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    // Someone made `processcontrol` a symlink to a directory of theirs.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::symlink(&theirs, xdg.join("processcontrol")).unwrap();
    let config = base.path().join("pc.toml");
    std::fs::write(&config, NOTIFIED).unwrap();
    let mut up = Command::new(BIN)
        .args(["up", "-c"])
        .arg(&config)
        .arg("--socket")
        .arg(base.path().join("pc.sock"))
        .env("XDG_RUNTIME_DIR", &xdg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let code = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("`up` used a runtime directory someone else prepared");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    up.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&theirs).unwrap().count(),
        0,
        "something was created in their directory"
    );
}

// ----- 8. what a killed supervisor leaves is removed by the next one --------------------------

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

#[test]
fn the_next_up_kills_what_a_sigkilled_predecessor_left_and_takes_its_socket() {
    alone(next_up_kills_what_a_sigkilled_predecessor_left);
}

fn next_up_kills_what_a_sigkilled_predecessor_left() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let socket = dir.path().join("shared.sock");
    let config = format!(
        "[processes.forker]\ncommand = \"sleep 1000 & echo $! > {}.tmp && mv {0}.tmp {0}; wait\"\n",
        pidfile.display()
    );
    let mut first = Daemon::start_with(&config, Stdio::null(), Some(&socket), &[]);
    let grandchild: u64 = poll("the grandchild's pid", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The leader dies with its supervisor (parent-death signal); what it forked does not.
    assert!(
        pid_alive(grandchild),
        "the grandchild died with the supervisor"
    );
    std::fs::remove_file(&pidfile).unwrap();
    let quiet = "[processes.quiet]\ncommand = [\"sleep\", \"1000\"]\n";
    let second = Daemon::start_with(quiet, Stdio::null(), Some(&socket), &[]);
    // Its line names the grandchild (the leader, killed by the parent-death signal, may still
    // be exiting then, and be named in a line of its own).
    second.wait_stderr(&[
        "killed a process left running by a supervisor that died",
        &format!("pid={grandchild} "),
    ]);
    poll("the leftover to die", || {
        (!pid_alive(grandchild)).then_some(())
    });
    assert!(second.status().is_some());
}

/// With `cgroup = true`, a descendant that cleared its environment (no marker) and left the
/// process group is still in its instance's cgroup: the next `up` kills it and removes the
/// dead supervisor's cgroups.
#[test]
fn the_next_up_empties_and_removes_a_sigkilled_predecessors_cgroups() {
    if !is_root() {
        eprintln!("skipped: creating cgroups needs root");
        return;
    }
    alone(next_up_empties_and_removes_dead_cgroups);
}

fn next_up_empties_and_removes_dead_cgroups() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaper");
    let config = format!(
        "[processes.forker]\ncgroup = true\ncommand = \"setsid env -i sleep 1000 & echo $! > {}.tmp && mv {0}.tmp {0}; wait\"\n",
        pidfile.display()
    );
    let mut first = Daemon::start(&config, Stdio::null());
    let escaper: u64 = poll("the escaper's pid", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    let cgroup_name = format!("processcontrol-{}", first.child.id());
    let cgroups = || -> Vec<PathBuf> {
        let out = Command::new("find")
            .args(["/sys/fs/cgroup", "-maxdepth", "8", "-type", "d", "-name"])
            .arg(&cgroup_name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect()
    };
    if cgroups().is_empty() {
        eprintln!("skipped: this host gave the daemon no cgroup ({cgroup_name} not found)");
        return;
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(pid_alive(escaper), "the escaper died with the supervisor");
    assert!(
        !cgroups().is_empty(),
        "the cgroups went with the supervisor"
    );
    let quiet = "[processes.quiet]\ncommand = [\"sleep\", \"1000\"]\n";
    let second = Daemon::start(quiet, Stdio::null());
    second.wait_stderr(&["removed the cgroup of a supervisor that died", &cgroup_name]);
    poll("the escaper to die", || (!pid_alive(escaper)).then_some(()));
    assert_eq!(cgroups(), Vec::<PathBuf>::new());
}

// ----- 9. the smaller ones ---------------------------------------------------------------------

#[test]
fn descriptors_inherited_without_cloexec_do_not_reach_children() {
    use std::os::unix::process::CommandExt;
    let leaked = std::fs::File::open("/dev/null").unwrap();
    let raw = leaked.as_raw_fd();
    let mut command = Command::new(BIN);
    command.args([
        "run",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "if [ -e /proc/self/fd/57 ]; then echo leaked; else echo sealed; fi",
    ]);
    // SAFETY: dup2 is async-signal-safe; fd 57 is left open without close-on-exec, as a
    // careless parent would.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, 57) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sealed");
}

/// A same-user client that asks for a large answer (1 MB of log lines) and never reads it is
/// disconnected once a write has been blocked for the write timeout (10 s): it cannot hold a
/// connection slot and the answer's memory for ever.
#[test]
fn a_control_client_that_stops_reading_is_disconnected() {
    let config = "[processes.big]\ncommand = \"i=0; while [ $i -lt 1000 ]; do i=$((i+1)); printf '%01000d\\n' $i; done; exec sleep 1000\"\n";
    let daemon = Daemon::start(config, Stdio::null());
    poll("the 1000th line in the ring", || {
        let out = daemon.cli(&["logs", "big", "-n", "1"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("0001000")
            .then_some(())
    });
    let mut client = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    client
        .write_all(b"{\"cmd\":\"logs\",\"name\":\"big\",\"lines\":1000}\n")
        .unwrap();
    // Never read: wait for the hang-up alone (data waiting to be read does not wake this).
    // SAFETY: epoll on descriptors we own, with a valid event buffer.
    let hung_up = unsafe {
        let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(epoll >= 0);
        let mut event = libc::epoll_event {
            events: libc::EPOLLRDHUP as u32,
            u64: 0,
        };
        assert_eq!(
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, client.as_raw_fd(), &mut event),
            0
        );
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }];
        let deadline = Instant::now() + WAIT;
        let n = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = libc::epoll_wait(epoll, ready.as_mut_ptr(), 1, left.as_millis() as i32);
            // A signal to the test process is no answer from the daemon.
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        libc::close(epoll);
        n == 1
    };
    assert!(hung_up, "the daemon kept a client that stopped reading");
    assert!(daemon.status().is_some());
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A size from `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `status` of many processes is written as it is serialized: clients that ask for it and
/// never read hold a write buffer each, not a whole answer (here ~1 MB of JSON, and several
/// times that as the JSON tree it was made from), so forty of them leave the daemon's peak
/// memory nearly where it was, and `status` keeps answering meanwhile.
#[test]
fn status_answers_are_streamed_so_clients_that_never_read_cost_little() {
    const PROCESSES: usize = 2000;
    const CLIENTS: usize = 40;
    // Long names, and every process but one waiting for it (never ready: it never sends
    // READY=1), so the answer is large while only one process runs.
    let gate = format!("gate{}", "g".repeat(60));
    let mut config =
        format!("[processes.{gate}]\ncommand = [\"sleep\", \"1000\"]\nnotify = true\n\n");
    for i in 0..PROCESSES {
        config.push_str(&format!(
            "[processes.p{i:05}{}]\ncommand = [\"sleep\", \"1000\"]\ndepends_on = {{ {gate} = \"healthy\" }}\n\n",
            "x".repeat(58)
        ));
    }
    let daemon = Daemon::start(&config, Stdio::null());
    daemon.wait("every process waiting for the gate", |s| {
        s.len() == PROCESSES + 1
            && s.iter().filter(|p| p["blocked"].is_string()).count() == PROCESSES
    });
    let size = daemon.cli(&["status", "--json"]).stdout.len();
    assert!(
        size > 512 * 1024,
        "{size} bytes fit in the sockets' buffers"
    );
    let pid = daemon.child.id();
    // The peak starts from here, not from the boot (which would hide a smaller growth).
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("cannot reset the daemon's peak memory ({e}): measured from its boot's peak");
    }
    let before = proc_status_kib(pid, "VmHWM:");
    let clients: Vec<std::os::unix::net::UnixStream> = (0..CLIENTS)
        .map(|_| {
            let mut client = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
            client.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
            client
        })
        .collect();
    // Each answer has begun (and stalled: nobody reads).
    for client in &clients {
        poll("the answer's first bytes", || {
            (pending(client) > 0).then_some(())
        });
    }
    let statuses = daemon.status().expect("status answers while clients stall");
    assert_eq!(statuses.len(), PROCESSES + 1);
    let grown = proc_status_kib(pid, "VmHWM:").saturating_sub(before);
    eprintln!(
        "peak resident memory grew by {grown} KiB with {CLIENTS} stalled status answers of {size} bytes"
    );
    assert!(
        grown < 16 * 1024,
        "{grown} KiB more at the peak with {CLIENTS} clients that never read a {size}-byte status"
    );
    drop(clients);
}

/// A `logs -f` of a quiet process, or an `events -f` of a quiet daemon, whose client left
/// must end at once, not at the next line or event (never, here): 10,000 abandoned follows,
/// one after the other, would otherwise hold a few KiB each (24 MB for `logs -f`).
#[test]
fn follow_streams_end_when_their_client_leaves() {
    let daemon = Daemon::start(
        "[processes.quiet]\ncommand = [\"sleep\", \"1000\"]\n",
        Stdio::null(),
    );
    for request in [
        &b"{\"cmd\":\"logs\",\"name\":\"quiet\",\"follow\":true,\"lines\":0}\n"[..],
        b"{\"cmd\":\"events\",\"follow\":true,\"lines\":0}\n",
    ] {
        let follow = || {
            let mut client = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
            client.write_all(request).unwrap();
            // The stream's start: the daemon follows from now on.
            let mut start = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut start).unwrap();
            assert!(start.contains("\"stream\":true"), "{start}");
        };
        // Warm up the allocator, then measure.
        for _ in 0..1000 {
            follow();
        }
        let before = rss_kib(daemon.child.id());
        for _ in 0..10_000 {
            follow();
        }
        assert!(daemon.status().is_some());
        let grown = rss_kib(daemon.child.id()).saturating_sub(before);
        let what = String::from_utf8_lossy(request);
        eprintln!("resident memory grew by {grown} KiB over 10,000 abandoned {what}");
        assert!(
            grown < 8 * 1024,
            "{grown} KiB more after 10,000 abandoned {what}"
        );
    }
}

fn check(config: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pc.toml");
    std::fs::write(&path, config).unwrap();
    Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_rejects_nul_bytes_unknown_accounts_and_out_of_range_ids() {
    let out = check(
        "[processes.a]\ncommand = [\"sleep\", \"1\\u0000000\"]\n\n[processes.b]\ncommand = \"sleep 1\\u0000\"\n\n[processes.c]\ncommand = [\"sleep\", \"1\"]\nuser = 4294967295\n\n[processes.d]\ncommand = [\"sleep\", \"1\"]\ngroup = \"4294967295\"\n\n[processes.e]\ncommand = [\"sleep\", \"1\"]\nuser = \"no-such-user-here\"\n\n[processes.f]\ncommand = [\"sleep\", \"1\"]\ngroup = \"no-such-group-here\"\n",
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processes.a.command[1]: contains a NUL character"),
        "{err}"
    );
    assert!(
        err.contains("processes.b.command") && err.contains("NUL"),
        "{err}"
    );
    assert!(err.contains("processes.c.user"), "{err}");
    assert!(
        err.contains("processes.d.group") && err.contains("out of range"),
        "{err}"
    );
    assert!(err.contains("processes.e.user: unknown user"), "{err}");
    assert!(err.contains("processes.f.group: unknown group"), "{err}");
}

#[test]
fn check_suggests_the_nearest_dependency_instead_of_listing_every_name() {
    let mut config = String::from("[processes.database]\ncommand = [\"sleep\", \"1\"]\n\n[processes.app]\ncommand = [\"sleep\", \"1\"]\ndepends_on = [\"databse\"]\n\n");
    for i in 0..3000 {
        config.push_str(&format!(
            "[processes.p{i}]\ncommand = [\"sleep\", \"1\"]\ndepends_on = [\"missing{i}\"]\n\n"
        ));
    }
    let out = check(&config);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did you mean `database`?"),
        "{}",
        &err[..err.len().min(2000)]
    );
    // One short line per mistake, not every name on each.
    assert!(err.len() < 3002 * 400, "{} bytes of errors", err.len());
}
