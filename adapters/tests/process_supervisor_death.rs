//! A supervisor killed with SIGKILL takes its children with it.
//!
//! The test binary re-executes itself as the supervisor (selected by an environment
//! variable), SIGKILLs it, and checks that every child it had started is dead within a
//! second. This test process makes itself a child subreaper, so the orphans are reparented
//! to it and their death is observed exactly with `waitpid` rather than by polling.
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

#[path = "process_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use processcontrol_adapters::process::{
    find_stale_processes, Launcher, OutputMode, ProcessSpec, MARKER_VAR,
};

/// Set in the re-executed test binary to make it play the supervisor.
const ROLE: &str = "PC_TEST_SUPERVISOR_ROLE";

/// The supervisor role: start three sleeping children and one child with a grandchild,
/// print their pids, and wait to be killed.
#[test]
fn supervisor_role() {
    if std::env::var_os(ROLE).is_none() {
        return; // only meaningful when re-executed by the test below
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let launcher = Launcher::new().expect("launcher");
        let mut children = Vec::new();
        for _ in 0..3 {
            let spec = ProcessSpec::new("sleep")
                .arg("1000")
                .stdout(OutputMode::Null)
                .stderr(OutputMode::Null);
            children.push(launcher.spawn(spec).await.expect("spawn"));
        }
        let spec = ProcessSpec::new("/bin/sh")
            .arg("-c")
            .arg("sleep 1000 & echo $!; wait")
            .stderr(OutputMode::Null);
        let mut parent = launcher.spawn(spec).await.expect("spawn");
        let mut out = tokio::io::BufReader::new(parent.take_stdout().expect("stdout"));
        let mut grandchild = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut grandchild)
            .await
            .expect("grandchild pid");
        let pids: Vec<String> = children
            .iter()
            .chain(Some(&parent))
            .map(|c| c.pid().to_string())
            .collect();
        println!("PIDS {}", pids.join(" "));
        println!("GRANDCHILD {}", grandchild.trim());
        std::future::pending::<()>().await;
    });
}

/// The pids after `tag` in `line`, if it has the tag (libtest may print its own
/// `test supervisor_role ... ` before it on the same line).
fn pids_after(line: &str, tag: &str) -> Option<Vec<i32>> {
    let start = line.find(tag)? + tag.len();
    Some(
        line[start..]
            .split_whitespace()
            .map(|p| p.parse().expect("pid"))
            .collect(),
    )
}

/// Kills the supervisor and reaps it if the test fails before doing so, so that a failure
/// leaves nothing running.
struct SupervisorGuard(std::process::Child);

impl Drop for SupervisorGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn children_die_within_a_second_of_a_sigkilled_supervisor() {
    if std::env::var_os(ROLE).is_some() {
        return;
    }
    prctl::set_child_subreaper(true).expect("subreaper");
    let supervisor = Command::new(std::env::current_exe().expect("own binary"))
        .args([
            "--exact",
            "supervisor_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the supervisor");
    let mut supervisor = SupervisorGuard(supervisor);

    let stdout = supervisor.0.stdout.take().expect("stdout");
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut children = None;
    let mut grandchild = None;
    while children.is_none() || grandchild.is_none() {
        let line = line_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the supervisor reports its children");
        if let Some(pids) = pids_after(&line, "PIDS ") {
            children = Some(pids);
        } else if let Some(pids) = pids_after(&line, "GRANDCHILD ") {
            grandchild = pids.first().copied();
        }
    }
    let (children, grandchild) = (children.expect("pids"), grandchild.expect("pid"));
    assert_eq!(children.len(), 4);

    let supervisor_pid = Pid::from_raw(i32::try_from(supervisor.0.id()).expect("pid"));
    kill(supervisor_pid, Signal::SIGKILL).expect("kill the supervisor");
    let killed_at = Instant::now();
    supervisor.0.wait().expect("reap the supervisor");

    // The orphans are now our children (we are their nearest subreaper): wait for each.
    let (dead_tx, dead_rx) = mpsc::channel();
    for pid in children.iter().copied() {
        let dead_tx = dead_tx.clone();
        thread::spawn(move || {
            let _ = dead_tx.send((pid, waitpid(Pid::from_raw(pid), None)));
        });
    }
    let deadline = killed_at + Duration::from_secs(1);
    let mut outcome = Vec::new();
    for _ in &children {
        let left = deadline.saturating_duration_since(Instant::now());
        match dead_rx.recv_timeout(left) {
            Ok(result) => outcome.push(result),
            Err(_) => {
                for pid in &children {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
                let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
                panic!("children still alive 1 s after the supervisor died: {outcome:?}");
            }
        }
    }
    for (pid, status) in outcome {
        assert!(
            matches!(status, Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))),
            "child {pid} ended with {status:?}"
        );
    }

    // Documented limitation: the grandchild is not covered by the parent-death signal. It
    // still carries the dead supervisor's marker, which is how a successor finds it.
    let grandchild_u32 = u32::try_from(grandchild).expect("pid");
    assert!(support::is_running(grandchild_u32));
    let stale = find_stale_processes();
    let found = stale
        .iter()
        .find(|p| p.pid == grandchild_u32)
        .unwrap_or_else(|| panic!("grandchild not reported stale: {stale:?}"));
    assert!(
        found.marker.starts_with(&format!("{}:", supervisor.0.id())),
        "{MARKER_VAR}={}",
        found.marker
    );
    kill(Pid::from_raw(grandchild), Signal::SIGKILL).expect("kill the grandchild");
    assert!(matches!(
        waitpid(Pid::from_raw(grandchild), None),
        Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _))
    ));
    support::assert_no_zombie_children();
}
