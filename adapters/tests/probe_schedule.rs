//! The probe schedule: timing, non-overlap, timeout enforcement and cancellation (with a
//! scripted check on a paused clock), plus an end-to-end run against a real HTTP server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processcontrol_adapters::probe::{
    Check, FailureReason, HttpProbe, ProbeConfigError, ProbeOutcome, ProbeReport, ProbeSchedule,
    TcpProbe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};

const BOUND: Duration = Duration::from_secs(10);

/// A check that takes `duration` (or forever), records when each run started and how many
/// run at once, and signals when it is dropped.
struct Scripted {
    duration: Option<Duration>,
    timeout: Duration,
    starts: Arc<Mutex<Vec<Instant>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
    _dropped: Option<oneshot::Sender<()>>,
}

impl Scripted {
    fn new(duration: Option<Duration>, timeout: Duration) -> Self {
        Scripted {
            duration,
            timeout,
            starts: Arc::default(),
            running: Arc::default(),
            max_running: Arc::default(),
            _dropped: None,
        }
    }
}

struct RunningGuard(Arc<AtomicUsize>);
impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Check for Scripted {
    async fn check(&self) -> ProbeOutcome {
        self.starts.lock().unwrap().push(Instant::now());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let _guard = RunningGuard(self.running.clone());
        match self.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
        ProbeOutcome::Passed
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

async fn recv(rx: &mut mpsc::Receiver<ProbeReport>) -> ProbeReport {
    timeout(BOUND, rx.recv())
        .await
        .expect("no report in time")
        .expect("schedule ended")
}

#[tokio::test(start_paused = true)]
async fn first_check_after_initial_delay_then_every_period() {
    let probe = Scripted::new(Some(Duration::from_millis(10)), Duration::from_secs(1));
    let starts = probe.starts.clone();
    let t0 = Instant::now();
    let schedule =
        ProbeSchedule::new(probe, Duration::from_millis(500), Duration::from_secs(2)).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let _task = schedule.spawn(42, tx);
    for expected_seq in 0..4 {
        let report = recv(&mut rx).await;
        assert_eq!(report.tag, 42);
        assert_eq!(report.seq, expected_seq);
        assert_eq!(report.outcome, ProbeOutcome::Passed);
        assert_eq!(report.elapsed, Duration::from_millis(10));
    }
    let offsets: Vec<Duration> = starts.lock().unwrap().iter().map(|s| *s - t0).collect();
    assert_eq!(
        offsets,
        [500, 2500, 4500, 6500].map(Duration::from_millis).to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn slow_checks_never_overlap_and_missed_periods_are_skipped() {
    // Each check takes 2.5 periods (within its timeout): the next one starts at the first
    // period boundary after it ends, never concurrently.
    let probe = Scripted::new(Some(Duration::from_millis(2500)), Duration::from_secs(10));
    let starts = probe.starts.clone();
    let max_running = probe.max_running.clone();
    let t0 = Instant::now();
    let schedule = ProbeSchedule::new(probe, Duration::ZERO, Duration::from_secs(1)).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let _task = schedule.spawn(1, tx);
    for _ in 0..3 {
        recv(&mut rx).await;
    }
    assert_eq!(max_running.load(Ordering::SeqCst), 1);
    let offsets: Vec<Duration> = starts.lock().unwrap().iter().map(|s| *s - t0).collect();
    assert_eq!(offsets[..3], [0, 3000, 6000].map(Duration::from_millis));
}

#[tokio::test(start_paused = true)]
async fn a_check_ignoring_its_timeout_is_cut_off() {
    let probe = Scripted::new(None, Duration::from_millis(300));
    let running = probe.running.clone();
    let schedule = ProbeSchedule::new(probe, Duration::ZERO, Duration::from_secs(1)).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let _task = schedule.spawn(7, tx);
    for seq in 0..2 {
        let report = recv(&mut rx).await;
        assert_eq!(report.seq, seq);
        assert_eq!(report.elapsed, Duration::from_millis(300));
        match report.outcome {
            ProbeOutcome::Failed(f) => assert_eq!(f.reason, FailureReason::Timeout),
            ProbeOutcome::Passed => panic!("a hung check passed"),
        }
        // The abandoned check future was dropped, not left running.
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_task_cancels_an_in_flight_check() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let mut probe = Scripted::new(None, Duration::from_secs(3600));
    probe._dropped = Some(dropped_tx);
    let running = probe.running.clone();
    let starts = probe.starts.clone();
    let schedule = ProbeSchedule::new(probe, Duration::ZERO, Duration::from_secs(1)).unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let task = schedule.spawn(1, tx);
    // Wait until the check is in flight.
    timeout(BOUND, async {
        while starts.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(running.load(Ordering::SeqCst), 1);
    task.stop();
    // The schedule, and with it the probe, is dropped.
    assert!(timeout(BOUND, dropped_rx).await.unwrap().is_err());
    assert_eq!(running.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_receiver_ends_the_schedule() {
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let mut probe = Scripted::new(Some(Duration::from_millis(10)), Duration::from_secs(1));
    probe._dropped = Some(dropped_tx);
    let schedule = ProbeSchedule::new(probe, Duration::ZERO, Duration::from_secs(1)).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let task = schedule.spawn(1, tx);
    recv(&mut rx).await;
    drop(rx);
    // The schedule ended by itself (the task handle is still held): the probe is dropped.
    assert!(timeout(BOUND, dropped_rx).await.unwrap().is_err());
    drop(task);
}

#[test]
fn zero_period_is_rejected() {
    let probe = TcpProbe::new("127.0.0.1:1", Duration::from_secs(1)).unwrap();
    assert_eq!(
        ProbeSchedule::new(probe, Duration::ZERO, Duration::ZERO).unwrap_err(),
        ProbeConfigError::ZeroPeriod
    );
}

#[tokio::test]
async fn end_to_end_against_a_real_server_reports_status_changes() {
    // The server answers 200 to the first two requests and 503 afterwards.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut served = 0u32;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            served += 1;
            let status = if served <= 2 { 200 } else { 503 };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    let probe = HttpProbe::new(&format!("http://{addr}/"), None, Duration::from_secs(2)).unwrap();
    let schedule = ProbeSchedule::new(probe, Duration::ZERO, Duration::from_millis(50)).unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let _task = schedule.spawn(9, tx);
    let mut outcomes = Vec::new();
    for seq in 0..4 {
        let report = recv(&mut rx).await;
        assert_eq!((report.tag, report.seq), (9, seq));
        outcomes.push(match report.outcome {
            ProbeOutcome::Passed => None,
            ProbeOutcome::Failed(f) => Some(f.reason),
        });
    }
    assert_eq!(
        outcomes,
        [
            None,
            None,
            Some(FailureReason::Status(503)),
            Some(FailureReason::Status(503))
        ]
    );
}
