//! The control socket end to end: real sockets in a temporary directory, a fake handler.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processcontrol_adapters::control::{
    request, request_stream, serve, ClientError, Connection, ControlError, Handler, Reply, Request,
    Response, Server, ServerConfig, Streamed, MAX_REQUEST_LINE,
};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pc-control-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("control.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Echoes every request as `{"echo": request}`, with a few special names:
/// `restart missing` fails, `kill panic` panics, `status slow` takes 200 ms, `logs list
/// -n N` answers a listed result of N items ([`listed`]). Follow
/// requests stream the echo, then `{"n":0}` and `{"n":1}`; a stream for the process
/// `finite` then ends, any other one waits until the client leaves and reports that on
/// `closed`. `shutdown` fires `stop`.
struct Fake {
    calls: AtomicUsize,
    closed: mpsc::UnboundedSender<()>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

#[async_trait::async_trait]
impl Handler for Fake {
    async fn handle(&self, request: Request) -> Reply {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let echo = json!({ "echo": request });
        match &request {
            Request::Restart {
                name: Some(name), ..
            } if name == "missing" => Reply::error("no process named missing"),
            Request::Kill { name, .. } if name == "panic" => panic!("the fake handler panics"),
            Request::Logs {
                name,
                follow: false,
                lines,
            } if name == "list" => Reply::list((0..lines.unwrap_or(0)).map(listed)),
            Request::Status { name: Some(name) } if name == "slow" => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Reply::ok(echo)
            }
            Request::Shutdown { .. } => {
                if let Some(stop) = self.stop.lock().unwrap().take() {
                    let _ = stop.send(());
                }
                Reply::ok(echo)
            }
            r if r.follows() => {
                let finite = matches!(r, Request::Logs { name, .. } if name == "finite");
                let (tx, rx) = mpsc::channel(8);
                let closed = self.closed.clone();
                tokio::spawn(async move {
                    for item in [echo, json!({"n": 0}), json!({"n": 1})] {
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                    if !finite {
                        tx.closed().await;
                        let _ = closed.send(());
                    }
                });
                Reply::Stream(rx)
            }
            _ => Reply::ok(echo),
        }
    }
}

/// A running server and what the test needs to watch it.
struct Running {
    dir: TempDir,
    path: PathBuf,
    fake: Arc<Fake>,
    closed: mpsc::UnboundedReceiver<()>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    async fn start(config: ServerConfig) -> Running {
        let dir = TempDir::new();
        let path = dir.sock();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let (by_request_tx, by_request) = oneshot::channel();
        let fake = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            closed: closed_tx,
            stop: Mutex::new(Some(by_request_tx)),
        });
        let (stop, by_test) = oneshot::channel::<()>();
        let server = Server::bind(&path).await.unwrap().with_config(config);
        let handler: Arc<dyn Handler> = fake.clone();
        let task = tokio::spawn(server.run(handler, async move {
            tokio::select! {
                _ = by_test => {}
                _ = by_request => {}
            }
        }));
        Running {
            dir,
            path,
            fake,
            closed,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn default() -> Running {
        Running::start(ServerConfig::default()).await
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            timeout(BOUND, task).await.unwrap().unwrap();
        }
    }

    async fn expect_closed(&mut self) {
        timeout(BOUND, self.closed.recv())
            .await
            .expect("the handler's stream sender never saw the stream closed")
            .unwrap();
    }
}

/// A raw connection that reads line by line.
struct Raw {
    read: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Raw {
    async fn connect(path: &Path) -> Raw {
        let (read, write) = UnixStream::connect(path).await.unwrap().into_split();
        Raw {
            read: BufReader::new(read),
            write,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// The next line without its newline; `None` at the end (or a reset after it).
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match timeout(BOUND, self.read.read_line(&mut line))
            .await
            .expect("no line from the server")
        {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                assert!(line.ends_with('\n'), "unterminated line {line:?}");
                line.pop();
                Some(line)
            }
        }
    }

    async fn error(&mut self) -> String {
        let line = self
            .line()
            .await
            .expect("the connection closed without a line");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], json!(false), "{line}");
        v["error"].as_str().unwrap().to_string()
    }

    async fn expect_closed(&mut self) {
        assert_eq!(self.line().await, None, "the server should have closed");
    }
}

/// Item `i` of a `logs list` answer: about 100 bytes with keys out of order, as a struct
/// serializes them.
fn listed(i: usize) -> impl serde::Serialize {
    #[derive(serde::Serialize)]
    struct Item {
        n: usize,
        line: String,
        at: Option<u64>,
    }
    Item {
        n: i,
        line: format!("line {i} {}", "é".repeat(40)),
        at: (i % 2 == 0).then_some(1_700_000_000),
    }
}

fn status(name: Option<&str>) -> Request {
    Request::Status {
        name: name.map(str::to_string),
    }
}

/// A normal client, served while another one misbehaves.
async fn served(path: &Path) {
    let response = timeout(BOUND, request(path, &status(Some("other"))))
        .await
        .expect("a normal client was held up")
        .unwrap();
    assert_eq!(
        response,
        Response::Ok(json!({"echo": {"cmd": "status", "name": "other"}}))
    );
}

fn every_plain_request() -> Vec<Request> {
    let name = || "web".to_string();
    vec![
        Request::Status { name: None },
        Request::Status { name: Some(name()) },
        Request::Start {
            name: Some(name()),
            all: false,
            wait_ms: None,
        },
        Request::Start {
            name: None,
            all: true,
            wait_ms: None,
        },
        Request::Stop {
            name: Some(name()),
            all: false,
            grace_ms: Some(1500),
            wait_ms: None,
        },
        Request::Stop {
            name: None,
            all: true,
            grace_ms: None,
            wait_ms: None,
        },
        Request::Restart {
            name: Some(name()),
            all: false,
            force: false,
            wait_ms: None,
        },
        Request::Kill {
            name: name(),
            wait_ms: None,
        },
        Request::Reset {
            name: name(),
            wait_ms: None,
        },
        Request::Signal {
            name: name(),
            signal: "HUP".into(),
        },
        Request::Logs {
            name: name(),
            follow: false,
            lines: Some(20),
        },
        Request::Logs {
            name: name(),
            follow: false,
            lines: None,
        },
        Request::Events {
            follow: false,
            lines: None,
        },
        Request::Reload { wait_ms: None },
        Request::Shutdown { wait_ms: None },
    ]
}

#[tokio::test]
async fn every_request_kind_round_trips() {
    let mut server = Running::default().await;
    // Answered on fresh connections and on one kept-alive connection alike (`shutdown`,
    // which stops the fake, comes at the end).
    let mut conn = Connection::connect(&server.path).await.unwrap();
    for req in every_plain_request() {
        if matches!(req, Request::Shutdown { .. }) {
            continue;
        }
        let expected = Response::Ok(json!({ "echo": req }));
        assert_eq!(conn.request(&req).await.unwrap(), expected, "{req:?}");
        assert_eq!(request(&server.path, &req).await.unwrap(), expected);
        let echoed: Request = serde_json::from_value(
            conn.request(&req).await.unwrap().into_result().unwrap()["echo"].clone(),
        )
        .unwrap();
        assert_eq!(echoed, req);
    }
    // A failure is an answer, not a client error.
    let missing = Request::Restart {
        name: Some("missing".into()),
        all: false,
        force: false,
        wait_ms: None,
    };
    assert_eq!(
        request(&server.path, &missing).await.unwrap(),
        Response::Error("no process named missing".into())
    );
    // Follow requests stream.
    let follows = [
        Request::Logs {
            name: "web".into(),
            follow: true,
            lines: Some(5),
        },
        Request::Events {
            follow: true,
            lines: None,
        },
    ];
    for req in follows {
        let Streamed::Stream(mut stream) = request_stream(&server.path, &req).await.unwrap() else {
            panic!("{req:?} did not stream");
        };
        assert_eq!(stream.next().await.unwrap(), Some(json!({ "echo": req })));
        assert_eq!(stream.next().await.unwrap(), Some(json!({"n": 0})));
        assert_eq!(stream.next().await.unwrap(), Some(json!({"n": 1})));
        drop(stream);
        server.expect_closed().await;
        // `request` refuses a stream rather than reading it to an end that may not come.
        assert!(matches!(
            request(&server.path, &req).await,
            Err(ClientError::UnexpectedStream)
        ));
        server.expect_closed().await;
    }
    // And `request_stream` takes plain answers too.
    let Streamed::Response(answer) = request_stream(&server.path, &missing).await.unwrap() else {
        panic!("a plain answer came as a stream");
    };
    assert_eq!(answer, Response::Error("no process named missing".into()));
    let answer = conn
        .request(&Request::Shutdown { wait_ms: None })
        .await
        .unwrap();
    assert_eq!(answer, Response::Ok(json!({"echo": {"cmd": "shutdown"}})));
    timeout(BOUND, server.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_wire_format_is_as_documented() {
    let mut server = Running::default().await;
    let mut raw = Raw::connect(&server.path).await;
    raw.send(b"{\"cmd\":\"status\"}\n").await;
    assert_eq!(
        raw.line().await.unwrap(),
        r#"{"ok":true,"result":{"echo":{"cmd":"status"}}}"#
    );
    // Defaults for flags and options; unknown fields are ignored; blank lines skipped.
    // (The fake echoes through a `Value`, whose keys come out sorted.)
    raw.send(b"\n  \n{\"cmd\":\"stop\",\"name\":\"web\",\"grace_ms\":500,\"x\":1}\n")
        .await;
    assert_eq!(
        raw.line().await.unwrap(),
        r#"{"ok":true,"result":{"echo":{"all":false,"cmd":"stop","grace_ms":500,"name":"web"}}}"#
    );
    raw.send(b"{\"cmd\":\"restart\",\"name\":\"missing\"}\n")
        .await;
    assert_eq!(
        raw.line().await.unwrap(),
        r#"{"ok":false,"error":"no process named missing"}"#
    );
    raw.send(b"{\"cmd\":\"events\",\"follow\":true}\n").await;
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"stream":true}"#);
    assert_eq!(
        raw.line().await.unwrap(),
        r#"{"ok":true,"line":{"echo":{"cmd":"events","follow":true}}}"#
    );
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"line":{"n":0}}"#);
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"line":{"n":1}}"#);
    drop(raw);
    server.expect_closed().await;
    // A finite stream ends with an end line, and the connection closes.
    let mut raw = Raw::connect(&server.path).await;
    raw.send(b"{\"cmd\":\"logs\",\"name\":\"finite\",\"follow\":true}\n")
        .await;
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"stream":true}"#);
    for _ in 0..3 {
        assert!(raw
            .line()
            .await
            .unwrap()
            .starts_with(r#"{"ok":true,"line":"#));
    }
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"end":true}"#);
    raw.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_finite_stream_ends_for_the_client() {
    let mut server = Running::default().await;
    let req = Request::Logs {
        name: "finite".into(),
        follow: true,
        lines: None,
    };
    let Streamed::Stream(mut stream) = request_stream(&server.path, &req).await.unwrap() else {
        panic!("no stream");
    };
    let mut items = Vec::new();
    while let Some(item) = stream.next().await.unwrap() {
        items.push(item);
    }
    assert_eq!(items.len(), 3);
    assert_eq!(stream.next().await.unwrap(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_a_follow_ends_the_handlers_stream() {
    let mut server = Running::default().await;
    let req = Request::Events {
        follow: true,
        lines: None,
    };
    let Streamed::Stream(mut stream) = request_stream(&server.path, &req).await.unwrap() else {
        panic!("no stream");
    };
    assert!(stream.next().await.unwrap().is_some());
    drop(stream);
    server.expect_closed().await;
    // Closing only the writing half ends a stream too, as documented.
    let mut raw = Raw::connect(&server.path).await;
    raw.send(b"{\"cmd\":\"events\",\"follow\":true}\n").await;
    assert_eq!(raw.line().await.unwrap(), r#"{"ok":true,"stream":true}"#);
    raw.write.shutdown().await.unwrap();
    server.expect_closed().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_socket_is_private_and_removed_on_shutdown() {
    let mut server = Running::default().await;
    let meta = std::fs::symlink_metadata(&server.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // Nothing is left of the private directory the socket was bound in.
    let entries: Vec<_> = std::fs::read_dir(&server.dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("control.sock")]);
    server.shutdown().await;
    assert!(!server.path.exists(), "the socket outlived the server");
    match request(&server.path, &status(None)).await {
        Err(ClientError::NoDaemon { path }) => assert_eq!(path, server.path),
        other => panic!("expected NoDaemon, got {other:?}"),
    }
}

#[tokio::test]
async fn a_shutdown_request_is_answered_then_the_server_stops() {
    let mut server = Running::default().await;
    let req = Request::Events {
        follow: true,
        lines: None,
    };
    let Streamed::Stream(mut stream) = request_stream(&server.path, &req).await.unwrap() else {
        panic!("no stream");
    };
    for _ in 0..3 {
        assert!(stream.next().await.unwrap().is_some());
    }
    let answer = request(&server.path, &Request::Shutdown { wait_ms: None })
        .await
        .unwrap();
    assert_eq!(answer, Response::Ok(json!({"echo": {"cmd": "shutdown"}})));
    // The follower is told, and its handler's sender sees the stream closed.
    match timeout(BOUND, stream.next()).await.unwrap() {
        Err(ClientError::StreamEnded(why)) => assert_eq!(why, "the daemon is shutting down"),
        other => panic!("expected the stream to be cut short, got {other:?}"),
    }
    server.expect_closed().await;
    timeout(BOUND, server.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!server.path.exists());
}

#[tokio::test]
async fn serve_binds_serves_and_cleans_up() {
    let dir = TempDir::new();
    let path = dir.sock();
    let (closed, _closed_rx) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        calls: AtomicUsize::new(0),
        closed,
        stop: Mutex::new(None),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let path = path.clone();
        async move { serve(&path, fake, stopped).await }
    });
    let mut tries = 0;
    let answer = loop {
        match request(&path, &status(None)).await {
            Err(ClientError::NoDaemon { .. }) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(answer, Response::Ok(json!({"echo": {"cmd": "status"}})));
    stop.send(()).unwrap();
    timeout(BOUND, task).await.unwrap().unwrap().unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn a_live_socket_is_not_replaced() {
    let mut server = Running::default().await;
    match Server::bind(&server.path).await {
        Err(e @ ControlError::AlreadyRunning { .. }) => assert_eq!(
            e.to_string(),
            format!("another daemon is listening on {}", server.path.display())
        ),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    // The first daemon was not disturbed.
    served(&server.path).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_stale_socket_is_replaced() {
    let dir = TempDir::new();
    let path = dir.sock();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the stale socket file should remain");
    assert!(matches!(
        request(&path, &status(None)).await,
        Err(ClientError::NoDaemon { .. })
    ));
    let server = Server::bind(&path).await.unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    // Dropping a server that never ran removes its socket too.
    drop(server);
    assert!(!path.exists());
}

#[tokio::test]
async fn something_else_at_the_path_is_left_alone() {
    let dir = TempDir::new();
    let path = dir.sock();
    std::fs::write(&path, "precious").unwrap();
    match Server::bind(&path).await {
        Err(e @ ControlError::NotASocket { .. }) => {
            assert!(e.to_string().contains("is not a socket"), "{e}")
        }
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    let long = dir.0.join("x".repeat(120));
    assert!(matches!(
        Server::bind(&long).await,
        Err(ControlError::PathTooLong { .. })
    ));
}

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_connection_carries_on() {
    let mut server = Running::default().await;
    let mut bad = Raw::connect(&server.path).await;
    for line in [
        &b"{\"cmd\":\n"[..],
        b"not json at all\n",
        b"[1,2,3]\n",
        b"[\"status\"]\n",
        b"{\"cmd\":\"explode\"}\n",
        b"{\"cmd\":\"kill\"}\n",
        b"{\"cmd\":\"stop\",\"grace_ms\":-1}\n",
    ] {
        bad.send(line).await;
        let error = bad.error().await;
        assert!(error.starts_with("malformed request: "), "{error}");
        served(&server.path).await;
    }
    bad.send(b"{\"cmd\":\"status\"}\n").await;
    assert!(bad.line().await.unwrap().starts_with(r#"{"ok":true"#));
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_gets_an_error_and_the_connection_carries_on() {
    let mut server = Running::default().await;
    let mut bad = Raw::connect(&server.path).await;
    bad.send(b"{\"cmd\":\"status\",\"name\":\"\xff\xfe\"}\n")
        .await;
    assert_eq!(bad.error().await, "request is not valid UTF-8");
    served(&server.path).await;
    bad.send(b"{\"cmd\":\"status\"}\n").await;
    assert!(bad.line().await.unwrap().starts_with(r#"{"ok":true"#));
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_line_gets_an_error_and_a_close() {
    let mut server = Running::default().await;
    // Exactly the limit is fine.
    let mut fits = b"{\"cmd\":\"status\"}".to_vec();
    fits.resize(MAX_REQUEST_LINE, b' ');
    fits.push(b'\n');
    let mut raw = Raw::connect(&server.path).await;
    raw.send(&fits).await;
    assert!(raw.line().await.unwrap().starts_with(r#"{"ok":true"#));
    // One byte more is not; the writer may see the connection close under it.
    let mut bad = Raw::connect(&server.path).await;
    let mut huge = vec![b'a'; MAX_REQUEST_LINE + 1];
    huge.extend_from_slice(&[b'b'; 8192]);
    huge.push(b'\n');
    let writer = tokio::spawn(async move {
        let _ = bad.write.write_all(&huge).await;
        bad.write
    });
    let error = bad_error(&mut bad.read).await;
    assert_eq!(
        error,
        format!("request line longer than {MAX_REQUEST_LINE} bytes; closing the connection")
    );
    served(&server.path).await;
    let mut rest = Vec::new();
    let _ = timeout(BOUND, bad.read.read_to_end(&mut rest))
        .await
        .unwrap();
    drop(writer.await.unwrap());
    served(&server.path).await;
    server.shutdown().await;
}

async fn bad_error(read: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> String {
    let mut line = String::new();
    timeout(BOUND, read.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(v["ok"], json!(false));
    v["error"].as_str().unwrap().to_string()
}

fn quick() -> ServerConfig {
    ServerConfig {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_half_sent_request_times_out_while_others_are_served() {
    let mut server = Running::start(quick()).await;
    let mut bad = Raw::connect(&server.path).await;
    bad.send(b"{\"cmd\":\"sta").await;
    let started = std::time::Instant::now();
    served(&server.path).await;
    assert_eq!(
        bad.error().await,
        "incomplete request: no newline within 300 ms; closing the connection"
    );
    bad.expect_closed().await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    // An idle connection is closed without a word.
    let mut idle = Raw::connect(&server.path).await;
    idle.expect_closed().await;
    assert_eq!(server.fake.calls.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_is_an_error_answer() {
    let mut server = Running::default().await;
    let answer = request(
        &server.path,
        &Request::Kill {
            name: "panic".into(),
            wait_ms: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        Response::Error("internal error: the daemon failed to handle the request".into())
    );
    served(&server.path).await;
    server.shutdown().await;
}

#[tokio::test]
async fn many_clients_are_served_at_once() {
    let mut server = Running::default().await;
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for i in 0..64 {
        let path = server.path.clone();
        clients.push(tokio::spawn(async move {
            let mut conn = Connection::connect(&path).await.unwrap();
            for j in 0..5 {
                let name = if j == 0 {
                    "slow".to_string()
                } else {
                    format!("p{i}-{j}")
                };
                let req = status(Some(&name));
                let answer = conn.request(&req).await.unwrap();
                assert_eq!(answer, Response::Ok(json!({ "echo": req })));
            }
        }));
    }
    for client in clients {
        timeout(BOUND, client).await.unwrap().unwrap();
    }
    // 64 slow requests of 200 ms each were handled side by side.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.fake.calls.load(Ordering::SeqCst), 64 * 5);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let mut server = Running::start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut a = Connection::connect(&server.path).await.unwrap();
    let mut b = Connection::connect(&server.path).await.unwrap();
    assert!(matches!(
        a.request(&status(None)).await,
        Ok(Response::Ok(_))
    ));
    assert!(matches!(
        b.request(&status(None)).await,
        Ok(Response::Ok(_))
    ));
    let answer = request(&server.path, &status(None)).await.unwrap();
    assert_eq!(
        answer,
        Response::Error("too many connections (2); try again later".into())
    );
    drop(a);
    // The slot frees once the first connection's task has noticed the close.
    let mut tries = 0;
    loop {
        match request(&server.path, &status(None)).await.unwrap() {
            Response::Ok(_) => break,
            Response::Error(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("the slot never freed: {other:?}"),
        }
    }
    assert!(matches!(
        b.request(&status(None)).await,
        Ok(Response::Ok(_))
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn no_daemon_is_said_plainly() {
    let dir = TempDir::new();
    let path = dir.sock();
    let err = request(&path, &status(None)).await.unwrap_err();
    assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no processcontrol daemon is listening on {} (is `processcontrol up` running?)",
            path.display()
        )
    );
    let err = request_stream(
        &path,
        &Request::Events {
            follow: true,
            lines: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::NoDaemon { .. }), "{err:?}");
}

/// A listed answer is, byte for byte, the line of the same array answered whole, however many
/// chunks it takes: the wire format does not change.
#[tokio::test]
async fn a_listed_answer_is_the_same_line_as_a_whole_one() {
    let mut server = Running::default().await;
    let mut raw = Raw::connect(&server.path).await;
    for n in [0usize, 1, 3, 2000] {
        raw.send(format!("{{\"cmd\":\"logs\",\"name\":\"list\",\"lines\":{n}}}\n").as_bytes())
            .await;
        let whole: Vec<Value> = (0..n)
            .map(|i| serde_json::to_value(listed(i)).unwrap())
            .collect();
        let expected =
            processcontrol_adapters::control::Frame::Result(Value::Array(whole)).to_line();
        let line = raw.line().await.unwrap();
        assert_eq!(line.len() + 1, expected.len(), "{n} items");
        assert_eq!(format!("{line}\n").as_bytes(), &expected[..], "{n} items");
    }
    // The connection carries on after it, like after any answer.
    raw.send(b"{\"cmd\":\"status\"}\n").await;
    assert_eq!(
        raw.line().await.unwrap(),
        r#"{"ok":true,"result":{"echo":{"cmd":"status"}}}"#
    );
    server.shutdown().await;
}

/// A client that stops reading a listed answer is disconnected after the write timeout, and
/// others are served meanwhile.
#[tokio::test]
async fn a_listed_answer_nobody_reads_is_cut_after_the_write_timeout() {
    let mut server = Running::start(ServerConfig {
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut stalled = UnixStream::connect(&server.path).await.unwrap();
    // Far more than the socket's buffers take.
    stalled
        .write_all(b"{\"cmd\":\"logs\",\"name\":\"list\",\"lines\":200000}\n")
        .await
        .unwrap();
    served(&server.path).await;
    let stalled = stalled.into_std().unwrap();
    let stalled = tokio::task::spawn_blocking(move || {
        assert!(
            hung_up(&stalled),
            "the stalled client was never disconnected"
        );
        stalled
    })
    .await
    .unwrap();
    // Now read: what was sent before the cut, then the end, without a whole line.
    let mut stalled = UnixStream::from_std(stalled).unwrap();
    let mut got = Vec::new();
    timeout(BOUND, stalled.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got.starts_with(br#"{"ok":true,"result":[{"#));
    assert!(
        !got.ends_with(b"\n"),
        "the whole answer was sent: {} bytes",
        got.len()
    );
    served(&server.path).await;
    server.shutdown().await;
}

/// Waits (at most [`BOUND`]) until the peer of `stream` hangs up, without reading: data
/// waiting to be read does not wake this, the hang-up does.
fn hung_up(stream: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, left.as_millis() as i32) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return n == 1 && fd.revents & libc::POLLRDHUP != 0;
    }
}
