//! Shared helpers for the process adapter's integration tests.
//!
//! One launcher per test binary: its reaper calls `waitpid(-1)`, so two would steal each
//! other's statuses. Tests run in parallel threads and share it through one runtime.
#![allow(dead_code)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use processcontrol_adapters::process::{Launcher, OutputPipe};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::runtime::Runtime;

/// Upper bound for anything a test waits on: generous for a loaded 2-core machine, yet a
/// hang still fails.
pub const BOUND: Duration = Duration::from_secs(10);

struct Harness {
    runtime: Runtime,
    launcher: Launcher,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let launcher = {
            let _entered = runtime.enter();
            Launcher::new().expect("launcher")
        };
        Harness { runtime, launcher }
    })
}

/// The test binary's launcher.
pub fn launcher() -> Launcher {
    harness().launcher.clone()
}

/// Runs one test body on the shared runtime, bounded, then checks that no zombie child of
/// the test process is left behind.
pub fn run<F: Future<Output = ()> + Send + 'static>(body: F) {
    let h = harness();
    h.runtime
        .block_on(async move {
            tokio::time::timeout(Duration::from_secs(60), tokio::spawn(body))
                .await
                .expect("test body timed out")
        })
        .expect("test body panicked");
    assert_no_zombie_children();
}

/// Awaits `fut` at most `BOUND`, failing the test with `what` otherwise.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Asserts that `fut` does NOT complete within `window` (it is dropped afterwards).
pub async fn stays_pending<T: std::fmt::Debug>(
    what: &str,
    window: Duration,
    fut: impl Future<Output = T>,
) {
    if let Ok(v) = tokio::time::timeout(window, fut).await {
        panic!("{what} resolved too early: {v:?}");
    }
}

/// Reads one line from a child's pipe (bounded); `None` at end of file.
pub async fn read_line(reader: &mut BufReader<OutputPipe>) -> Option<String> {
    let mut line = String::new();
    let n = bounded("a line of output", reader.read_line(&mut line))
        .await
        .expect("read");
    (n > 0).then(|| line.trim_end().to_owned())
}

/// Reads the next line as a pid (a script's `echo $$` or `echo $!`).
pub async fn read_pid(reader: &mut BufReader<OutputPipe>) -> u32 {
    read_line(reader)
        .await
        .expect("pid")
        .parse()
        .expect("number")
}

/// Reads all remaining lines (bounded).
pub async fn read_all_lines(reader: &mut BufReader<OutputPipe>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = read_line(reader).await {
        lines.push(line);
    }
    lines
}

/// `/proc/<pid>/stat` fields: (state, ppid, pgid, session).
pub fn stat_of(pid: u32) -> Option<(char, u32, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    let sid = f.next()?.parse().ok()?;
    Some((state, ppid, pgid, sid))
}

/// Whether `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    matches!(stat_of(pid), Some((state, ..)) if state != 'Z' && state != 'X')
}

/// Zombie processes whose parent is this test process.
pub fn zombie_children() -> HashSet<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| matches!(stat_of(*pid), Some(('Z', ppid, _, _)) if ppid == me))
        .collect()
}

/// Fails if a zombie child of the test process persists. A zombie is legitimately visible
/// for the instant between a child's death and the reaper's pass (other tests run in
/// parallel), so only one still present after the bound is a leak. No event exists for an
/// outsider to await here, hence the bounded re-check.
pub fn assert_no_zombie_children() {
    let mut suspects = zombie_children();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !suspects.is_empty() {
        assert!(
            Instant::now() < deadline,
            "zombie children left unreaped: {suspects:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
        let now = zombie_children();
        suspects.retain(|pid| now.contains(pid));
    }
}
