//! Who may talk to the control socket: `SO_PEERCRED` on both sides, with helper processes
//! running as `nobody` (via `setpriv`) when the tests run as root. What cannot be
//! exercised here (not root, no `setpriv` or `python3`) is said on stderr and skipped.
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use processcontrol_adapters::control::{
    peer_allowed, peer_credentials, request, ClientError, Connection, Handler, Reply, Request,
    Response, Server,
};
use serde_json::json;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;
const PYTHON: &str = "/usr/bin/python3";

/// A fresh directory under the system temp dir that other users may pass through (0711),
/// removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pc-control-peer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether helpers can run as `nobody`; says why not otherwise.
fn can_switch_user(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{test}: skipped: the tests do not run as root, so no peer with another uid can be made");
        return false;
    }
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(Command::new("setpriv").arg("--version")) {
        eprintln!("{test}: skipped: setpriv is not available");
        return false;
    }
    if !works(Command::new(PYTHON).arg("--version")) {
        eprintln!("{test}: skipped: {PYTHON} is not available");
        return false;
    }
    true
}

/// `setpriv` running a Python script as `nobody`, optionally keeping CAP_DAC_OVERRIDE
/// (so that it can reach a 0600 socket and show what the server does then).
fn as_nobody(dac_override: bool, script: &str, arg: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ]);
    if dac_override {
        cmd.args(["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]);
    }
    cmd.args([PYTHON, "-c", script]).arg(arg);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Connects, sends a status request and prints what comes back, or `connect-error ERRNO`.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-error", e.errno)
    sys.exit(0)
try:
    s.sendall(b'{"cmd":"status"}\n')
except OSError:
    pass  # the server may have answered and closed already
data = b""
while True:
    try:
        chunk = s.recv(4096)
    except ConnectionResetError:
        break
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;

async fn run(mut cmd: Command) -> Output {
    timeout(
        BOUND,
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .expect("the helper hung")
    .unwrap()
}

/// Counts requests; answers every one.
struct Counting(AtomicUsize);

#[async_trait::async_trait]
impl Handler for Counting {
    async fn handle(&self, _request: Request) -> Reply {
        self.0.fetch_add(1, Ordering::SeqCst);
        Reply::ok(json!("fine"))
    }
}

#[test]
fn a_socket_pair_reports_this_process() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    for end in [&a, &b] {
        let cred = peer_credentials(end).unwrap();
        assert_eq!(cred.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(cred.gid, nix::unistd::getegid().as_raw());
        assert_eq!(cred.pid, std::process::id() as i32);
    }
    // Not a socket: an error, not garbage.
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(peer_credentials(&file).is_err());
}

#[test]
fn only_the_same_user_or_root_may_talk() {
    assert!(peer_allowed(1000, 1000));
    assert!(peer_allowed(0, 1000));
    assert!(peer_allowed(0, 0));
    assert!(!peer_allowed(1001, 1000));
    assert!(!peer_allowed(NOBODY, 0));
}

#[tokio::test]
async fn the_credential_check_sees_another_uid() {
    if !can_switch_user("the_credential_check_sees_another_uid") {
        return;
    }
    // A plain listener anyone may connect to, so that `nobody` gets through without
    // privileges; the server's own socket is 0600 and keeps `nobody` out (see below).
    let dir = TempDir::new();
    let path = dir.0.join("open.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let helper = run(as_nobody(false, CLIENT, &path));
    let accepted = async {
        let (stream, _) = listener.accept().await.unwrap();
        let cred = peer_credentials(&stream).unwrap();
        drop(stream);
        cred
    };
    let (output, cred) = tokio::join!(helper, timeout(BOUND, accepted));
    let cred = cred.expect("the helper never connected");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(cred.uid, NOBODY);
    assert_eq!(cred.gid, NOBODY);
    assert!(cred.pid > 0);
    assert!(!peer_allowed(cred.uid, nix::unistd::geteuid().as_raw()));
}

#[tokio::test]
async fn another_user_cannot_reach_the_socket_or_is_refused_by_the_server() {
    if !can_switch_user("another_user_cannot_reach_the_socket_or_is_refused_by_the_server") {
        return;
    }
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    let handler = Arc::new(Counting(AtomicUsize::new(0)));
    let server = Server::bind(&path).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(handler.clone(), stopped));

    // The 0600 mode alone keeps an ordinary other user out.
    let output = run(as_nobody(false, CLIENT, &path)).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("connect-error {}", libc::EACCES)
    );

    // One that gets past file permissions (CAP_DAC_OVERRIDE) meets SO_PEERCRED.
    let output = run(as_nobody(true, CLIENT, &path)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("setpriv") {
        eprintln!(
            "the SO_PEERCRED refusal over the real socket is not exercised: setpriv cannot keep \
             CAP_DAC_OVERRIDE for uid {NOBODY} here: {}",
            stderr.trim()
        );
    } else {
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!(
                "{{\"ok\":false,\"error\":\"permission denied: uid {NOBODY} may not control this daemon\"}}\n"
            )
        );
        assert_eq!(
            handler.0.load(Ordering::SeqCst),
            0,
            "the handler heard a refused peer"
        );
    }

    // The daemon's own user is still served.
    let answer = request(&path, &Request::Status { name: None })
        .await
        .unwrap();
    assert_eq!(answer, Response::Ok(json!("fine")));
    stop.send(()).unwrap();
    timeout(BOUND, task).await.unwrap().unwrap();
}

/// Listens as `nobody`, says `ready`, accepts one connection and leaves.
const LISTENER: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(1)
s.settimeout(10)
print("ready", flush=True)
try:
    c, _ = s.accept()
    c.close()
except OSError:
    pass
"#;

#[tokio::test]
async fn the_client_does_not_trust_another_users_daemon() {
    if !can_switch_user("the_client_does_not_trust_another_users_daemon") {
        return;
    }
    let dir = TempDir::new();
    let theirs = dir.0.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let path = theirs.join("control.sock");
    let mut child = as_nobody(false, LISTENER, &path).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line
    });
    let ready = timeout(BOUND, ready).await.unwrap().unwrap();
    assert_eq!(ready.trim(), "ready", "the listener did not start");
    match Connection::connect(&path).await {
        Err(e @ ClientError::UntrustedDaemon { uid: NOBODY, .. }) => {
            assert!(e.to_string().contains("runs as uid 65534"), "{e}")
        }
        other => panic!("expected UntrustedDaemon, got {other:?}"),
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap());
    assert!(timeout(BOUND, status).await.unwrap().unwrap().success());
}
