//! HTTP probe against real in-process servers on 127.0.0.1.

use std::time::{Duration, Instant};

use processcontrol_adapters::probe::{FailureReason, HttpProbe, ProbeConfigError, ProbeOutcome};
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
