//! Notify sockets with real datagrams from this process and from helper processes.
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processcontrol_adapters::notify::{
    Notification, NotifyError, NotifyMessage, NotifySocket, NotifyStats, MAX_DATAGRAM,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pc-notify-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn me() -> u32 {
    std::process::id()
}

fn send(path: &Path, datagram: &[u8]) {
    let socket = StdDatagram::unbound().unwrap();
    socket.send_to(datagram, path).unwrap();
}

async fn recv(rx: &mut mpsc::Receiver<NotifyMessage>) -> NotifyMessage {
    timeout(BOUND, rx.recv())
        .await
        .expect("no notification in time")
        .expect("notify socket stopped")
}

#[tokio::test]
async fn ready_status_watchdog_and_stopping_arrive_from_an_allowed_pid() {
    let dir = TempDir::new();
    let (tx, mut rx) = mpsc::channel(8);
    let socket = NotifySocket::bind(&dir.0, 7, |pid| pid == me(), tx).unwrap();
    assert_eq!(socket.path(), dir.0.join("notify-7.sock"));

    send(
        socket.path(),
        b"READY=1\nSTATUS=Listening on :8080\nMAINPID=4321\nX_CUSTOM=1",
    );
    assert_eq!(
        recv(&mut rx).await,
        NotifyMessage {
            tag: 7,
            pid: me(),
            notes: vec![
                Notification::Ready,
                Notification::Status("Listening on :8080".into()),
                Notification::MainPid(4321),
            ],
        }
    );
    send(socket.path(), b"WATCHDOG=1");
    assert_eq!(recv(&mut rx).await.notes, [Notification::Watchdog]);
    send(socket.path(), b"STOPPING=1\n");
    assert_eq!(recv(&mut rx).await.notes, [Notification::Stopping]);
    assert_eq!(
        socket.stats(),
        NotifyStats {
            delivered: 3,
            ..NotifyStats::default()
        }
    );
}

#[tokio::test]
async fn malformed_and_oversized_datagrams_are_ignored() {
    let dir = TempDir::new();
    let (tx, mut rx) = mpsc::channel(8);
    let socket = NotifySocket::bind(&dir.0, 1, |pid| pid == me(), tx).unwrap();
    let mut oversized = b"STATUS=".to_vec();
    oversized.resize(MAX_DATAGRAM + 100, b'x');
    for bad in [&b""[..], b"READY=1\0", b"READY=1\n\xff\xfe", &oversized] {
        send(socket.path(), bad);
    }
    for unrecognized in [
        &b"READY=0"[..],
        b"no equals sign",
        b"MAINPID=abc",
        b"FDSTORE=1",
    ] {
        send(socket.path(), unrecognized);
    }
    // Datagrams are processed in order: once this arrives, all of the above were seen.
    send(socket.path(), b"READY=1");
    let first = recv(&mut rx).await;
    assert_eq!(first.notes, [Notification::Ready]);
    assert_eq!(
        socket.stats(),
        NotifyStats {
            delivered: 1,
            rejected_sender: 0,
            malformed: 4,
            unrecognized: 4,
        }
    );
    // A datagram of exactly the maximum size is fine.
    let mut max = b"STATUS=".to_vec();
    max.resize(MAX_DATAGRAM, b'y');
    send(socket.path(), &max);
    let msg = recv(&mut rx).await;
    assert!(matches!(&msg.notes[..], [Notification::Status(s)] if s.len() == MAX_DATAGRAM - 7));
}

#[tokio::test]
async fn a_non_member_sender_is_ignored_and_counted() {
    let dir = TempDir::new();
    let (tx, mut rx) = mpsc::channel(8);
    // Only this test process is a member; a python3 child is not.
    let socket = NotifySocket::bind(&dir.0, 2, |pid| pid == me(), tx).unwrap();
    let status = Command::new("python3")
        .args([
            "-c",
            "import os, socket\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])",
        ])
        .env("NOTIFY_SOCKET", socket.path())
        .status()
        .expect("python3");
    assert!(status.success());
    send(socket.path(), b"STATUS=from the member");
    let msg = recv(&mut rx).await;
    assert_eq!(msg.pid, me());
    assert_eq!(msg.notes, [Notification::Status("from the member".into())]);
    assert_eq!(socket.stats().rejected_sender, 1);
    assert_eq!(socket.stats().delivered, 1);
}

#[tokio::test]
async fn the_reported_pid_is_the_real_sender_and_passed_fds_are_closed() {
    let dir = TempDir::new();
    let (tx, mut rx) = mpsc::channel(8);
    let members: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let check = members.clone();
    let socket = NotifySocket::bind(
        &dir.0,
        3,
        move |pid| check.lock().unwrap().contains(&pid),
        tx,
    )
    .unwrap();
    // The child sends only after we have added its pid to the member set; it also
    // passes a file descriptor, which must not leak into this process.
    let marker = dir.0.join("passed-fd-marker");
    std::fs::write(&marker, b"x").unwrap();
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import os, socket, sys\n\
             sys.stdin.readline()\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             s.connect(os.environ['NOTIFY_SOCKET'])\n\
             f = open(os.environ['MARKER'])\n\
             socket.send_fds(s, [b'READY=1\\nMAINPID=77'], [f.fileno()])",
        ])
        .env("NOTIFY_SOCKET", socket.path())
        .env("MARKER", &marker)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    members.lock().unwrap().insert(child.id());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let msg = recv(&mut rx).await;
    assert_eq!(msg.pid, child.id());
    assert_eq!(msg.notes, [Notification::Ready, Notification::MainPid(77)]);
    assert!(child.wait().unwrap().success());
    // No fd of ours refers to the marker file.
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            assert_ne!(target, marker, "a passed fd leaked");
        }
    }
    assert_eq!(socket.stats().rejected_sender, 0);
}

#[tokio::test]
async fn socket_file_is_removed_on_drop_and_stale_ones_are_replaced() {
    let dir = TempDir::new();
    let (tx, mut rx) = mpsc::channel(8);
    let stale = dir.0.join("notify-4.sock");
    let old = StdDatagram::bind(&stale).unwrap();
    drop(old); // leaves the file behind, like a crashed supervisor
    let socket = NotifySocket::bind(&dir.0, 4, |_| true, tx.clone()).unwrap();
    send(socket.path(), b"READY=1");
    assert_eq!(recv(&mut rx).await.notes, [Notification::Ready]);
    let path = socket.path().to_owned();
    drop(socket);
    assert!(!path.exists(), "socket file left behind");

    // A newer socket at the same path is not removed by an older one being dropped.
    let older = NotifySocket::bind(&dir.0, 5, |_| true, tx.clone()).unwrap();
    let newer = NotifySocket::bind(&dir.0, 5, |_| true, tx).unwrap();
    drop(older);
    assert!(newer.path().exists());
    send(newer.path(), b"STATUS=newer");
    assert_eq!(
        recv(&mut rx).await.notes,
        [Notification::Status("newer".into())]
    );
}

#[tokio::test]
async fn setup_errors_are_clear() {
    let dir = TempDir::new();
    let (tx, _rx) = mpsc::channel(8);
    std::fs::write(dir.0.join("notify-6.sock"), b"not a socket").unwrap();
    let err = NotifySocket::bind(&dir.0, 6, |_| true, tx.clone()).unwrap_err();
    assert!(matches!(err, NotifyError::PathOccupied { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(dir.0.join("notify-6.sock")).unwrap(),
        b"not a socket"
    );

    let long = dir.0.join("d".repeat(120));
    let err = NotifySocket::bind(&long, 6, |_| true, tx.clone()).unwrap_err();
    assert!(matches!(err, NotifyError::PathTooLong { .. }), "{err:?}");

    let err = NotifySocket::bind(&dir.0.join("missing"), 6, |_| true, tx).unwrap_err();
    assert!(matches!(err, NotifyError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn dropping_the_receiver_stops_listening_without_error() {
    let dir = TempDir::new();
    let (tx, rx) = mpsc::channel(8);
    let socket = NotifySocket::bind(&dir.0, 8, |_| true, tx).unwrap();
    drop(rx);
    // Datagrams sent afterwards are simply not processed; nothing panics.
    send(socket.path(), b"READY=1");
    drop(socket);
}
