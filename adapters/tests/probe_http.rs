//! HTTP probe against real in-process servers on 127.0.0.1.

use std::time::{Duration, Instant};

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use processcontrol_adapters::probe::{
    FailureReason, HttpProbe, ProbeConfigError, ProbeOutcome, MAX_CONNECTION_AGE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Generous bound for anything that should happen "promptly".
const BOUND: Duration = Duration::from_secs(10);

/// What the test server does with each connection after reading the request head.
#[derive(Clone, Copy)]
enum Behavior {
    /// Answer with this status and a short body, then close.
    Respond(u16),
    /// Accept and never answer (the socket stays open).
    Hang,
    /// Send headers announcing 100 bytes, send 10, then stall.
    SlowBody,
    /// Send headers announcing 1 MiB, send 200 KiB, then stall.
    BigBodyThenStall,
    /// Close right after reading the request.
    CloseWithoutAnswer,
}

/// Starts a server; returns its address and a receiver of every request head it read.
async fn server(behavior: Behavior) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, heads_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let heads_tx = heads_tx.clone();
            tokio::spawn(handle(stream, behavior, heads_tx));
        }
    });
    (addr, heads_rx)
}

async fn handle(mut stream: TcpStream, behavior: Behavior, heads: mpsc::UnboundedSender<String>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = heads.send(String::from_utf8_lossy(&buf).into_owned());
    match behavior {
        Behavior::Respond(status) => {
            let response =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Behavior::Hang => std::future::pending::<()>().await,
        Behavior::SlowBody => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            std::future::pending::<()>().await;
        }
        Behavior::BigBodyThenStall => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                .await;
            let _ = stream.write_all(&vec![b'x'; 200 * 1024]).await;
            std::future::pending::<()>().await;
        }
        Behavior::CloseWithoutAnswer => {}
    }
}

fn reason(outcome: &ProbeOutcome) -> Option<FailureReason> {
    match outcome {
        ProbeOutcome::Passed => None,
        ProbeOutcome::Failed(f) => Some(f.reason),
    }
}

async fn check(probe: &HttpProbe) -> (ProbeOutcome, Duration) {
    let started = Instant::now();
    let outcome = timeout(BOUND, probe.check())
        .await
        .expect("check exceeded the test bound: the probe is stuck");
    (outcome, started.elapsed())
}

#[tokio::test]
async fn healthy_statuses_pass_and_request_carries_path_query_and_host() {
    for status in [200u16, 204, 302, 399] {
        let (addr, mut heads) = server(Behavior::Respond(status)).await;
        let url = format!("http://{addr}/healthz?deep=1");
        let probe = HttpProbe::new(&url, None, Duration::from_secs(5)).unwrap();
        let (outcome, _) = check(&probe).await;
        assert_eq!(outcome, ProbeOutcome::Passed, "status {status}");
        let head = timeout(BOUND, heads.recv()).await.unwrap().unwrap();
        assert!(
            head.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {addr}\r\n")),
            "{head}"
        );
    }
}

#[tokio::test]
async fn query_without_path_is_sent_as_root_path() {
    let (addr, mut heads) = server(Behavior::Respond(200)).await;
    let probe =
        HttpProbe::new(&format!("http://{addr}?ping"), None, Duration::from_secs(5)).unwrap();
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let head = timeout(BOUND, heads.recv()).await.unwrap().unwrap();
    assert!(head.starts_with("GET /?ping HTTP/1.1\r\n"), "{head}");
}

#[tokio::test]
async fn host_header_override_is_sent() {
    let (addr, mut heads) = server(Behavior::Respond(200)).await;
    let probe = HttpProbe::new(
        &format!("http://{addr}"),
        Some("svc.example"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let head = timeout(BOUND, heads.recv()).await.unwrap().unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("host: svc.example\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn unhealthy_statuses_fail_with_the_status() {
    for status in [400u16, 404, 500, 503] {
        let (addr, _heads) = server(Behavior::Respond(status)).await;
        let probe =
            HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_secs(5)).unwrap();
        let (outcome, _) = check(&probe).await;
        assert_eq!(
            reason(&outcome),
            Some(FailureReason::Status(status)),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn hanging_endpoint_times_out_within_the_timeout() {
    let (addr, _heads) = server(Behavior::Hang).await;
    let probe =
        HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_millis(300)).unwrap();
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Timeout),
        "{outcome:?}"
    );
    assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    let ProbeOutcome::Failed(f) = outcome else {
        unreachable!()
    };
    assert!(
        f.message.contains("waiting for the response"),
        "{}",
        f.message
    );
}

#[tokio::test]
async fn slow_body_times_out() {
    let (addr, _heads) = server(Behavior::SlowBody).await;
    let probe =
        HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_millis(300)).unwrap();
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Timeout),
        "{outcome:?}"
    );
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    let ProbeOutcome::Failed(f) = outcome else {
        unreachable!()
    };
    assert!(f.message.contains("reading the body"), "{}", f.message);
}

#[tokio::test]
async fn body_beyond_the_read_cap_passes_without_waiting_for_the_rest() {
    let (addr, _heads) = server(Behavior::BigBodyThenStall).await;
    let probe = HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_secs(3)).unwrap();
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(outcome, ProbeOutcome::Passed);
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn refused_connection_fails_as_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let probe = HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_secs(5)).unwrap();
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Refused),
        "{outcome:?}"
    );
    assert!(elapsed < Duration::from_secs(5));
}

#[tokio::test]
async fn connection_closed_without_answer_is_io() {
    let (addr, _heads) = server(Behavior::CloseWithoutAnswer).await;
    let probe = HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_secs(5)).unwrap();
    let (outcome, _) = check(&probe).await;
    assert_eq!(reason(&outcome), Some(FailureReason::Io), "{outcome:?}");
}

#[tokio::test]
async fn unresolvable_host_fails_as_dns_within_the_timeout() {
    // `.invalid` is reserved (RFC 2606) and never resolves. Without a reachable resolver
    // the lookup may instead hang, which must still end at the timeout.
    let probe =
        HttpProbe::new("http://no-such-host.invalid/", None, Duration::from_secs(3)).unwrap();
    let (outcome, elapsed) = check(&probe).await;
    eprintln!("{outcome:?} after {elapsed:?}");
    match reason(&outcome) {
        Some(FailureReason::Dns) => {}
        Some(FailureReason::Timeout) => {
            let ProbeOutcome::Failed(f) = &outcome else {
                unreachable!()
            };
            assert!(f.message.contains("resolving"), "{}", f.message);
        }
        other => panic!("unexpected {other:?}: {outcome:?}"),
    }
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn localhost_name_is_resolved() {
    let (addr, _heads) = server(Behavior::Respond(200)).await;
    let probe = HttpProbe::new(
        &format!("http://localhost:{}/", addr.port()),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    // localhost may resolve to ::1 first; the probe must fall back to 127.0.0.1.
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
}

// ----- connection reuse ------------------------------------------------------------------

/// What the keep-alive server does with one request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// 200 with a 2-byte body; the connection stays open for more requests.
    Ok,
    /// This status with a 2-byte body; the connection stays open.
    Status(u16),
    /// 200, then the server closes the connection (without announcing it in a header), as
    /// a server with a very short keep-alive idle timeout does.
    OkThenClose,
    /// 200 with `Connection: close`, but the server keeps its end open.
    OkSayingClose,
    /// 200 announcing 1 MiB, 200 KiB of it sent, then nothing more.
    BigBody,
    /// Close the connection without answering.
    Close,
    /// Reset the connection (SO_LINGER 0) without answering.
    Reset,
    /// Never answer (but notice when the client closes).
    Hang,
}

/// What the keep-alive server observed.
#[derive(Debug)]
enum Seen {
    /// Request `nth` (from 0) on connection `conn` (from 0, in accept order), and its head.
    Request {
        conn: usize,
        nth: usize,
        head: String,
    },
    /// The client closed connection `conn` (the server read end-of-file or an error).
    Closed(usize),
}

/// A keep-alive HTTP/1.1 server: `reply(conn, nth)` decides each request's fate. Every
/// request is reported before it is answered, so when a check returns, the requests it
/// made are already in the receiver.
async fn keep_alive_server(
    reply: impl Fn(usize, usize) -> Reply + Send + Sync + 'static,
) -> (std::net::SocketAddr, Observer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let reply = Arc::new(reply);
    let accepted = AtomicUsize::new(0);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let conn = accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_keep_alive(stream, conn, reply.clone(), tx.clone()));
        }
    });
    let observer = Observer {
        rx,
        requests: VecDeque::new(),
        closed: HashSet::new(),
    };
    (addr, observer)
}

async fn serve_keep_alive(
    mut stream: TcpStream,
    conn: usize,
    reply: Arc<impl Fn(usize, usize) -> Reply>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut nth = 0;
    let mut hanging = false;
    loop {
        // Probe requests have no body: each head ends a request.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let _ = seen.send(Seen::Request {
                conn,
                nth,
                head: String::from_utf8_lossy(&head).into_owned(),
            });
            let answer = |status: u16, extra: &str| {
                format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n{extra}\r\nok")
            };
            match reply(conn, nth) {
                Reply::Ok => {
                    let _ = stream.write_all(answer(200, "").as_bytes()).await;
                }
                Reply::Status(status) => {
                    let _ = stream.write_all(answer(status, "").as_bytes()).await;
                }
                Reply::OkThenClose => {
                    let _ = stream.write_all(answer(200, "").as_bytes()).await;
                    return;
                }
                Reply::OkSayingClose => {
                    let text = answer(200, "Connection: close\r\n");
                    let _ = stream.write_all(text.as_bytes()).await;
                }
                Reply::BigBody => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                        .await;
                    let _ = stream.write_all(&vec![b'x'; 200 * 1024]).await;
                    hanging = true;
                }
                Reply::Close => return,
                Reply::Reset => {
                    let _ = stream.set_zero_linger();
                    return;
                }
                Reply::Hang => hanging = true,
            }
            nth += 1;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = seen.send(Seen::Closed(conn));
                return;
            }
            Ok(n) if !hanging => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
        }
    }
}

/// What the test has learned from a keep-alive server's reports so far.
struct Observer {
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Requests not yet taken by the test.
    requests: VecDeque<(usize, usize, String)>,
    /// Connections the client has closed.
    closed: HashSet<usize>,
}

impl Observer {
    fn absorb(&mut self, seen: Seen) {
        match seen {
            Seen::Request { conn, nth, head } => self.requests.push_back((conn, nth, head)),
            Seen::Closed(conn) => {
                self.closed.insert(conn);
            }
        }
    }

    fn absorb_pending(&mut self) {
        while let Ok(seen) = self.rx.try_recv() {
            self.absorb(seen);
        }
    }

    async fn absorb_next(&mut self) {
        let seen = self.rx.recv().await.expect("server gone");
        self.absorb(seen);
    }

    /// The requests seen since the last call, with their heads.
    fn heads(&mut self) -> Vec<(usize, usize, String)> {
        self.absorb_pending();
        self.requests.drain(..).collect()
    }

    /// The (connection, request number) pairs seen since the last call.
    fn requests(&mut self) -> Vec<(usize, usize)> {
        self.heads().into_iter().map(|(c, n, _)| (c, n)).collect()
    }

    /// The connections the client has closed so far.
    fn closed_so_far(&mut self) -> HashSet<usize> {
        self.absorb_pending();
        self.closed.clone()
    }

    /// Waits for the next request not yet taken.
    async fn next_request(&mut self) -> (usize, usize, String) {
        timeout(BOUND, async {
            loop {
                if let Some(request) = self.requests.pop_front() {
                    return request;
                }
                self.absorb_next().await;
            }
        })
        .await
        .expect("no request reached the server")
    }

    /// Waits until the client has closed connection `conn`.
    async fn closed(&mut self, conn: usize) {
        timeout(BOUND, async {
            while !self.closed.contains(&conn) {
                self.absorb_next().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("connection {conn} was not closed by the probe"));
    }
}

fn probe_for(addr: std::net::SocketAddr, limit: Duration) -> HttpProbe {
    HttpProbe::new(&format!("http://{addr}/healthz"), None, limit).unwrap()
}

#[tokio::test]
async fn checks_share_one_kept_alive_connection() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::Ok).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert!(probe.reuses_connection(), "reuse is the default");
    for _ in 0..5 {
        assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    }
    let heads = seen.heads();
    assert!(
        seen.closed_so_far().is_empty(),
        "closed between passing checks"
    );
    let pairs: Vec<_> = heads.iter().map(|(c, n, _)| (*c, *n)).collect();
    assert_eq!(pairs, [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]);
    for (_, _, head) in &heads {
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection:"),
            "a kept connection must not ask to close: {head}"
        );
    }
    // Dropping the probe closes its idle connection.
    drop(probe);
    seen.closed(0).await;
}

#[tokio::test]
async fn without_reuse_every_check_connects_and_asks_to_close() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::Ok).await;
    let probe = probe_for(addr, Duration::from_secs(5)).reuse_connection(false);
    assert!(!probe.reuses_connection());
    for i in 0..3 {
        assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
        let (conn, nth, head) = seen.next_request().await;
        assert_eq!((conn, nth), (i, 0));
        assert!(
            head.to_ascii_lowercase().contains("connection: close\r\n"),
            "{head}"
        );
        // The probe closes it although the server would keep it open.
        seen.closed(i).await;
    }
}

#[tokio::test]
async fn server_closing_after_each_response_causes_no_failure() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::OkThenClose).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    for _ in 0..5 {
        let (outcome, _) = check(&probe).await;
        assert_eq!(outcome, ProbeOutcome::Passed);
    }
    // Each check used a connection of its own, at most once after a stale attempt.
    let mut fresh = seen.requests();
    fresh.retain(|(_, nth)| *nth == 0);
    assert!(fresh.len() >= 5, "{fresh:?}");
}

#[tokio::test]
async fn a_connection_closed_under_the_request_is_retried_once_on_a_fresh_one() {
    // The server answers the first request of each connection and drops the connection at
    // the second one: exactly the race of a server's idle timeout with the next check.
    for drop_as in [Reply::Close, Reply::Reset] {
        let (addr, mut seen) =
            keep_alive_server(move |_, nth| if nth == 0 { Reply::Ok } else { drop_as }).await;
        let probe = probe_for(addr, Duration::from_secs(5));
        for i in 0..4 {
            let (outcome, _) = check(&probe).await;
            assert_eq!(outcome, ProbeOutcome::Passed, "{drop_as:?}, check {i}");
        }
        assert_eq!(
            seen.requests(),
            [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0)],
            "{drop_as:?}"
        );
    }
}

#[tokio::test]
async fn the_retry_happens_once_and_only_on_a_kept_connection() {
    // Only the very first request is answered.
    let (addr, mut seen) = keep_alive_server(|conn, nth| {
        if (conn, nth) == (0, 0) {
            Reply::Ok
        } else {
            Reply::Close
        }
    })
    .await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let (outcome, _) = check(&probe).await;
    assert_eq!(reason(&outcome), Some(FailureReason::Io), "{outcome:?}");
    assert_eq!(seen.requests(), [(0, 0), (0, 1), (1, 0)]);
    // A fresh connection that fails is not retried.
    let (outcome, _) = check(&probe).await;
    assert_eq!(reason(&outcome), Some(FailureReason::Io), "{outcome:?}");
    assert_eq!(seen.requests(), [(2, 0)]);
}

#[tokio::test]
async fn a_failed_check_drops_the_connection() {
    let (addr, mut seen) = keep_alive_server(|conn, nth| match (conn, nth) {
        (0, 1) => Reply::Status(500),
        _ => Reply::Ok,
    })
    .await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let (outcome, _) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Status(500)),
        "{outcome:?}"
    );
    assert_eq!(seen.requests(), [(0, 0), (0, 1)]);
    seen.closed(0).await;
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(1, 0), (1, 1)]);
}

#[tokio::test]
async fn a_timed_out_check_drops_the_connection_and_the_next_connects_fresh() {
    let (addr, mut seen) = keep_alive_server(|conn, nth| match (conn, nth) {
        (0, 1) => Reply::Hang,
        _ => Reply::Ok,
    })
    .await;
    let probe = probe_for(addr, Duration::from_millis(300));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Timeout),
        "{outcome:?}"
    );
    let ProbeOutcome::Failed(f) = &outcome else {
        unreachable!()
    };
    assert!(
        f.message.contains("waiting for the response"),
        "{}",
        f.message
    );
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    assert_eq!(seen.requests(), [(0, 0), (0, 1)]);
    seen.closed(0).await;
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(1, 0)]);
}

#[tokio::test]
async fn the_retry_is_bounded_by_the_same_timeout() {
    // The kept connection is dropped at the second request, and every fresh one hangs.
    let (addr, mut seen) = keep_alive_server(|conn, nth| match (conn, nth) {
        (0, 0) => Reply::Ok,
        (0, _) => Reply::Close,
        _ => Reply::Hang,
    })
    .await;
    let probe = probe_for(addr, Duration::from_millis(400));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let (outcome, elapsed) = check(&probe).await;
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Timeout),
        "{outcome:?}"
    );
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1400), "{elapsed:?}");
    assert_eq!(seen.requests(), [(0, 0), (0, 1), (1, 0)]);
}

#[tokio::test]
async fn dropping_a_check_closes_its_connection() {
    let (addr, mut seen) =
        keep_alive_server(|_, nth| if nth == 0 { Reply::Ok } else { Reply::Hang }).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.next_request().await.0, 0);
    {
        let check = probe.check();
        tokio::pin!(check);
        // Run the check until its request reached the server, then drop it.
        tokio::select! {
            outcome = &mut check => panic!("finished against a hanging server: {outcome:?}"),
            (conn, nth, _) = seen.next_request() => assert_eq!((conn, nth), (0, 1)),
        }
    }
    seen.closed(0).await;
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(1, 0)]);
}

#[tokio::test]
async fn connection_close_from_the_server_means_the_next_check_connects_fresh() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::OkSayingClose).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
        assert_eq!(seen.requests(), [(i, 0)]);
    }
}

#[tokio::test]
async fn a_body_left_unread_is_not_reused() {
    let (addr, mut seen) =
        keep_alive_server(|conn, _| if conn == 0 { Reply::BigBody } else { Reply::Ok }).await;
    let probe = probe_for(addr, Duration::from_secs(3));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(0, 0)]);
    seen.closed(0).await;
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(1, 0)]);
}

#[tokio::test]
async fn a_connection_is_replaced_once_it_reaches_the_max_age() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::Ok).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    // Just under the bound it is still reused (the clock is moved, not waited for).
    tokio::time::pause();
    tokio::time::advance(MAX_CONNECTION_AGE - Duration::from_secs(1)).await;
    tokio::time::resume();
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(0, 0), (0, 1)]);
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(1)).await;
    tokio::time::resume();
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(1, 0)]);
    seen.closed(0).await;
}

#[tokio::test]
async fn clones_do_not_share_the_connection() {
    let (addr, mut seen) = keep_alive_server(|_, _| Reply::Ok).await;
    let probe = probe_for(addr, Duration::from_secs(5));
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    let clone = probe.clone();
    assert!(clone.reuses_connection());
    assert_eq!(check(&clone).await.0, ProbeOutcome::Passed);
    assert_eq!(check(&probe).await.0, ProbeOutcome::Passed);
    assert_eq!(check(&clone).await.0, ProbeOutcome::Passed);
    assert_eq!(seen.requests(), [(0, 0), (1, 0), (0, 1), (1, 1)]);
}

#[test]
fn construction_errors_name_the_problem() {
    let t = Duration::from_secs(1);
    let err = HttpProbe::new("https://example.com/", None, t).unwrap_err();
    assert!(
        matches!(err, ProbeConfigError::UnsupportedScheme { ref scheme, .. } if scheme == "https")
    );
    assert!(err.to_string().contains("https"), "{err}");

    let err = HttpProbe::new("http://127.0.0.1:0/", None, t).unwrap_err();
    assert!(
        matches!(err, ProbeConfigError::InvalidPort { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("port"), "{err}");

    let err = HttpProbe::new("http://127.0.0.1:99999/", None, t).unwrap_err();
    assert!(
        matches!(err, ProbeConfigError::InvalidPort { .. }),
        "{err:?}"
    );

    let err = HttpProbe::new("http://127.0.0.1:8080/", None, Duration::ZERO).unwrap_err();
    assert_eq!(err, ProbeConfigError::ZeroTimeout);
    assert!(err.to_string().contains("timeout"), "{err}");

    for bad in [
        "",
        "not a url",
        "http://",
        "/just/a/path",
        "127.0.0.1:80",
        "http://[::1/",
    ] {
        let err = HttpProbe::new(bad, None, t).unwrap_err();
        assert!(
            matches!(
                err,
                ProbeConfigError::InvalidUrl { .. } | ProbeConfigError::MissingHost { .. }
            ),
            "{bad:?} gave {err:?}"
        );
    }
    let err = HttpProbe::new("ftp://host/", None, t).unwrap_err();
    assert!(
        matches!(err, ProbeConfigError::UnsupportedScheme { .. }),
        "{err:?}"
    );

    let err = HttpProbe::new("http://user:pw@host/", None, t).unwrap_err();
    assert!(matches!(err, ProbeConfigError::UserInfo { .. }), "{err:?}");

    let err = HttpProbe::new("http://host/", Some("a\r\nb"), t).unwrap_err();
    assert!(
        matches!(err, ProbeConfigError::InvalidHostHeader { .. }),
        "{err:?}"
    );

    let ok = HttpProbe::new("http://[::1]:8080/x?y=1", Some("svc"), t).unwrap();
    assert_eq!(ok.timeout(), t);
    HttpProbe::new("HTTP://Example.com", None, t).unwrap();
}
