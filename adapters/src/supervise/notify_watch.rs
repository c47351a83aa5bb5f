//! The sd_notify protocol for one instance: a `NOTIFY_SOCKET` served before the spawn, its
//! `READY=1` reported as a passed readiness check, its `WATCHDOG=1` pings as passed liveness
//! checks, and every watchdog interval without a ping as a failed one. The core counts them
//! like any probe's results.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use processcontrol_core::{Input, Instance, ProbeFailure, ProbeResult, ProbeRole};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::notify::{Notification, NotifyError, NotifyMessage, NotifySocket};
use crate::ports::Reporter;

/// A served notify socket; dropping it stops serving and removes the socket file.
pub(crate) struct NotifyWatch {
    /// The instance's leader, once spawned (0 before): only members of its process group may
    /// notify.
    leader: Arc<watch::Sender<u32>>,
    task: JoinHandle<()>,
}

/// Whether `pid` belongs to the instance led by `leader` (its process group).
fn member(pid: u32, leader: u32) -> bool {
    // The leader itself is our unreaped child: its pid cannot have been reused, even if it
    // has already exited after notifying.
    pid == leader
        || nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .is_ok_and(|pgid| pgid.as_raw() as u32 == leader)
}

impl NotifyWatch {
    /// Serves `<dir>/notify-<tag>.sock` for `instance`; returns it and the path for
    /// `NOTIFY_SOCKET`.
    ///
    /// The socket exists before the spawn and the child may notify as its very first
    /// instruction, before the spawner knows its pid: such messages are held (in order) until
    /// [`NotifyWatch::spawned`] names the leader, then checked like any other.
    pub(crate) fn start(
        dir: &Path,
        tag: u64,
        instance: Instance,
        watchdog: Option<Duration>,
        report: Reporter,
    ) -> Result<(NotifyWatch, PathBuf), NotifyError> {
        let (leader, mut known) = watch::channel(0u32);
        let leader = Arc::new(leader);
        let member_of = leader.clone();
        // A message counts only from the instance's own process group; before the leader is
        // known it is let through here and checked below, once it is.
        let is_member = move |pid: u32| {
            let leader = *member_of.borrow();
            leader == 0 || member(pid, leader)
        };
        let (tx, mut rx) = mpsc::channel::<NotifyMessage>(64);
        let socket = NotifySocket::bind(dir, tag, is_member, tx)?;
        let path = socket.path().to_path_buf();
        let task = tokio::spawn(async move {
            let _socket = socket;
            let probe = |role, result| Input::Probe {
                instance,
                role,
                result,
            };
            let period = watchdog.unwrap_or(Duration::from_secs(86_400 * 365));
            let deadline = tokio::time::sleep(period);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    message = rx.recv() => {
                        let Some(message) = message else { return };
                        let Ok(leader) = known.wait_for(|l| *l != 0).await.map(|l| *l) else {
                            return;
                        };
                        if !member(message.pid, leader) {
                            tracing::debug!(%instance, pid = message.pid, "early notify datagram from a non-member ignored");
                            continue;
                        }
                        for note in message.notes {
                            match note {
                                Notification::Ready => report.fact(probe(ProbeRole::Readiness, ProbeResult::Pass)),
                                Notification::Watchdog if watchdog.is_some() => {
                                    report.fact(probe(ProbeRole::Liveness, ProbeResult::Pass));
                                    deadline.as_mut().reset(tokio::time::Instant::now() + period);
                                }
                                Notification::Status(text) => tracing::info!(%instance, status = %text, "notify"),
                                other => tracing::debug!(%instance, ?other, "notify"),
                            }
                        }
                    }
                    () = &mut deadline, if watchdog.is_some() => {
                        report.fact(probe(ProbeRole::Liveness, ProbeResult::Fail(ProbeFailure::Watchdog)));
                        deadline.as_mut().reset(tokio::time::Instant::now() + period);
                    }
                }
            }
        });
        Ok((NotifyWatch { leader, task }, path))
    }

    /// The instance started with this leader: its group may notify from now on.
    pub(crate) fn spawned(&self, leader: u32) {
        self.leader.send_replace(leader);
    }
}

impl Drop for NotifyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
