//! Shared by the integration tests: one runtime and one host per test binary (the launcher's
//! reaper waits for any child, so there is one per OS process), bounded waits, and the
//! zombie check every test ends with.

#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use processcontrol::adapters::logs::FollowEvent;
use processcontrol::{Host, Status, Supervisor};

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(30);

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Runs a test body on the shared runtime.
pub fn run<F: Future<Output = ()>>(body: F) {
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    rt.block_on(body);
}

/// The shared host (created on first use inside the shared runtime).
pub fn host() -> Arc<Host> {
    Host::global().expect("the host starts")
}

/// Waits for a status, failing the test after `WAIT`.
pub async fn wait_for(sup: &Supervisor, what: &str, f: impl FnMut(&Status) -> bool) -> Status {
    match tokio::time::timeout(WAIT, sup.wait_for(f)).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => panic!(
            "timed out waiting for {what}; last status {:?}",
            sup.status()
        ),
    }
}

/// Waits until the process `name` prints a line containing `needle`, which the test's child
/// prints once it is set up (signal traps installed, children forked...).
pub async fn wait_for_line(name: &str, needle: &str) -> String {
    let ring = host().logs(name).expect("a log ring");
    let (tail, mut follower) = ring.follow(usize::MAX);
    if let Some(line) = tail.into_iter().find(|l| l.text.contains(needle)) {
        return line.text;
    }
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match follower.next().await {
                Some(FollowEvent::Line(line)) if line.text.contains(needle) => return line.text,
                Some(_) => {}
                None => panic!("log of {name} ended before {needle:?}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{name} never printed {needle:?}"))
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until each of `pids` runs `program` (its exec has completed: until then its
/// environment, and so its instance marker, cannot be read).
pub async fn wait_exec(pids: &[u32], program: &str) {
    let comm = |p: &u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let all_there = async {
        while pids.iter().any(|p| comm(p).trim_end() != program) {
            // /proc has no event for "this process finished its exec".
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, all_there)
        .await
        .unwrap_or_else(|_| panic!("not all of {pids:?} run {program}"));
}

/// Waits until none of `pids` is alive.
pub async fn wait_dead(pids: &[u32]) {
    let all_dead = async {
        while pids.iter().any(|p| alive(*p)) {
            // /proc has no event for "this pid died" we could await from here.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, all_dead)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still alive: {:?}",
                pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
            )
        });
}

/// Zombie children of this test process: there must be none once a test is over (the reaper
/// gets a moment, since reaping follows SIGCHLD asynchronously).
pub async fn assert_no_zombies() {
    let me = std::process::id();
    let zombies = || -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let mut fields = rest.split_whitespace();
                let state = fields.next();
                let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
                state == Some("Z") && ppid == Some(me)
            })
            .collect()
    };
    let none = async {
        while !zombies().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), none)
        .await
        .is_err()
    {
        panic!("zombies left: {:?}", zombies());
    }
}

/// Pids of the processes whose environment carries `needle` (to find a test's descendants).
pub fn pids_with_env(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

// ----- added for tests/health_limits.rs --------------------------------------------------------

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use processcontrol::{Event, What};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};

/// Requests a [`HealthServer`] answered so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Answered 200.
    pub ok: u64,
    /// Answered 500.
    pub failed: u64,
}

/// A tiny HTTP responder on loopback for probe tests: every request gets `200 OK`, or `500`
/// while it is switched to failing (or for the next `fail_next` requests). It counts what it
/// answered, and the count is bumped before the answer is written, so a probe never sees an
/// answer the count does not include yet.
pub struct HealthServer {
    /// Where it listens.
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    fail_budget: Arc<AtomicU64>,
    served: watch::Receiver<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start(healthy: bool) -> HealthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let healthy = Arc::new(AtomicBool::new(healthy));
        let fail_budget = Arc::new(AtomicU64::new(0));
        let (tx, served) = watch::channel(Served::default());
        let tx = Arc::new(tx);
        let (h, b) = (healthy.clone(), fail_budget.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, b, tx) = (h.clone(), b.clone(), tx.clone());
                tokio::spawn(async move {
                    // Read the request head (a probe sends no body).
                    let mut buf = Vec::with_capacity(1024);
                    let mut chunk = [0u8; 1024];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
                            break;
                        }
                    }
                    let budget_fail = b
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let ok = h.load(Ordering::SeqCst) && !budget_fail;
                    tx.send_modify(|s| if ok { s.ok += 1 } else { s.failed += 1 });
                    let answer: &[u8] = if ok {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
                    };
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        HealthServer {
            addr,
            healthy,
            fail_budget,
            served,
            task,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers 200 (true) or 500 (false) from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Answers 500 to the next `n` requests, whatever the switch says.
    pub fn fail_next(&self, n: u64) {
        self.fail_budget.store(n, Ordering::SeqCst);
    }

    /// What was answered so far.
    pub fn served(&self) -> Served {
        *self.served.borrow()
    }

    /// Waits until the answers so far satisfy `f`, failing the test after `WAIT`.
    pub async fn wait_served(&self, what: &str, mut f: impl FnMut(&Served) -> bool) -> Served {
        let mut rx = self.served.clone();
        let served = match tokio::time::timeout(WAIT, rx.wait_for(|s| f(s))).await {
            Ok(Ok(s)) => *s,
            Ok(Err(_)) => panic!("health server stopped while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}; served {:?}",
                *self.served.borrow()
            ),
        };
        served
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the next event satisfying `f`, failing the test after `WAIT`. Events before it are
/// consumed.
pub async fn next_event(
    events: &mut processcontrol::Events,
    what: &str,
    mut f: impl FnMut(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if f(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    panic!("event stream closed while waiting for {what}")
                }
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for event {what}"))
}

/// Asserts that none of `events` is a limit violation or a state change: `why` says what
/// should have kept the process as it was.
pub fn assert_unchanged(events: &[Event], why: &str) {
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.what, What::LimitExceeded { .. } | What::Transition { .. })),
        "{why}: {events:?}"
    );
}

/// The events received so far and not consumed yet.
pub fn drain_events(events: &mut processcontrol::Events) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match events.try_recv() {
            Ok(event) => out.push(event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// Asserts that the status keeps satisfying `f` for `window` (for things that must *not*
/// happen, which no event can announce). Returns the last status.
pub async fn assert_holds_for(
    sup: &Supervisor,
    what: &str,
    window: Duration,
    mut f: impl FnMut(&Status) -> bool,
) -> Status {
    assert!(
        f(&sup.status()),
        "{what} does not hold at the start: {:?}",
        sup.status()
    );
    if let Ok(Ok(s)) = tokio::time::timeout(window, sup.wait_for(|s| !f(s))).await {
        panic!("{what} stopped holding: {s:?}");
    }
    sup.status()
}

/// The lines the process `name` printed so far (from its ring).
pub fn log_lines(name: &str) -> Vec<String> {
    let ring = host().logs(name).expect("a log ring");
    let (tail, _follower) = ring.follow(usize::MAX);
    tail.into_iter().map(|l| l.text.to_string()).collect()
}

/// A loopback port that was free a moment ago (for a child that listens on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A process running a shell script.
pub fn sh(name: &str, script: &str) -> processcontrol::ProcessSpec {
    processcontrol::ProcessSpec::new(name, ["/bin/sh", "-c", script])
}

/// Restarts fast enough for tests: 20 ms doubling to 200 ms, no jitter, a streak ends after
/// 500 ms up.
pub fn fast_backoff() -> processcontrol::BackoffPolicy {
    processcontrol::BackoffPolicy {
        initial: Duration::from_millis(20),
        factor: 2.0,
        max: Duration::from_millis(200),
        jitter: 0.0,
        reset_after: Duration::from_millis(500),
    }
}
