//! TCP probe against real sockets on 127.0.0.1.

use std::time::{Duration, Instant};

use processcontrol_adapters::probe::{FailureReason, ProbeConfigError, ProbeOutcome, TcpProbe};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

fn reason(outcome: &ProbeOutcome) -> Option<FailureReason> {
    match outcome {
        ProbeOutcome::Passed => None,
        ProbeOutcome::Failed(f) => Some(f.reason),
    }
}

#[tokio::test]
async fn listening_port_passes_and_connection_is_really_made() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = TcpProbe::new(&addr.to_string(), Duration::from_secs(5)).unwrap();
    let outcome = timeout(BOUND, probe.check()).await.unwrap();
    assert_eq!(outcome, ProbeOutcome::Passed);
    // The probe's connection is waiting in the accept queue.
    let accepted = timeout(BOUND, listener.accept()).await.unwrap();
    assert!(accepted.is_ok());
}

#[tokio::test]
async fn closed_port_fails_as_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let probe = TcpProbe::new(&addr.to_string(), Duration::from_secs(5)).unwrap();
    let outcome = timeout(BOUND, probe.check()).await.unwrap();
    assert_eq!(
        reason(&outcome),
        Some(FailureReason::Refused),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn full_accept_queue_times_out_within_the_timeout() {
    // A listener with backlog 1 that never accepts: once its queue is full, further SYNs
    // are dropped and connects hang, like a wedged service.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    let probe = TcpProbe::new(&addr.to_string(), Duration::from_millis(300)).unwrap();
    // Fill the queue (its exact capacity is kernel-dependent), then expect a timeout.
    let mut timed_out = false;
    for _ in 0..16 {
        let started = Instant::now();
        let outcome = timeout(BOUND, probe.check()).await.unwrap();
        match reason(&outcome) {
            None => {
                fillers.push(
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
            Some(FailureReason::Timeout) => {
                let elapsed = started.elapsed();
                assert!(elapsed >= Duration::from_millis(290), "{elapsed:?}");
                assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
                timed_out = true;
                break;
            }
            other => panic!("unexpected {other:?}: {outcome:?}"),
        }
    }
    assert!(timed_out, "the accept queue never filled up");
}

#[tokio::test]
async fn localhost_name_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = TcpProbe::new(&format!("localhost:{port}"), Duration::from_secs(5)).unwrap();
    assert_eq!(
        timeout(BOUND, probe.check()).await.unwrap(),
        ProbeOutcome::Passed
    );
}

#[tokio::test]
async fn unresolvable_name_fails_as_dns() {
    let probe = TcpProbe::new("no-such-host.invalid:80", Duration::from_secs(3)).unwrap();
    let outcome = timeout(BOUND, probe.check()).await.unwrap();
    assert!(
        matches!(
            reason(&outcome),
            Some(FailureReason::Dns | FailureReason::Timeout)
        ),
        "{outcome:?}"
    );
}

#[test]
fn construction_errors_name_the_problem() {
    let t = Duration::from_secs(1);
    for (addr, port_error) in [
        ("127.0.0.1:0", true),
        ("127.0.0.1", true),
        ("127.0.0.1:", true),
        ("127.0.0.1:http", true),
        (":80", false),
        ("::1:80", false),
    ] {
        let err = TcpProbe::new(addr, t).unwrap_err();
        if port_error {
            assert!(
                matches!(err, ProbeConfigError::InvalidPort { .. }),
                "{addr}: {err:?}"
            );
            assert!(err.to_string().contains("port"), "{err}");
        }
        assert!(err.to_string().contains(addr), "{err}");
    }
    assert_eq!(
        TcpProbe::new("127.0.0.1:1", Duration::ZERO).unwrap_err(),
        ProbeConfigError::ZeroTimeout
    );
    assert_eq!(TcpProbe::new("[::1]:22", t).unwrap().timeout(), t);
}
