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
