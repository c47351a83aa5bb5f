//! The registry of live instances and the single reaper that feeds it.
//!
//! Every child of the supervisor process is reaped here, by one `waitpid(-1, WNOHANG)` loop
//! driven by SIGCHLD. The loop runs with the registry lock held, and the spawner holds the
//! same lock from `fork` until the new leader is registered: so a status is never reaped
//! before its waiter exists, and std's own `waitpid` on a child whose `exec` failed can
//! never be preempted (std asserts that this wait succeeds).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::Signal as SignalStream;
use tokio::sync::watch;

use super::error::{SignalError, SignalTarget};
use super::scan;
use super::status::ExitStatus;
use super::SignalReport;
use crate::cgroup::InstanceCgroup;

/// How many times `kill_group` rescans for escapees that forked while being killed.
const KILL_ROUNDS: usize = 4;

/// State shared by the launcher, its spawner thread, its reaper and every child handle.
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    /// The supervisor's pid: the root of every descendant search.
    pub(crate) supervisor_pid: Pid,
    /// Distinguishes this launcher's markers from those of an earlier supervisor that had
    /// the same pid.
    launcher_id: String,
    next_instance: AtomicU64,
}

/// Live instances, guarded by one lock that also serialises fork and reap.
pub(crate) struct Registry {
    /// Instances not yet gone, by instance id.
    pub(crate) instances: HashMap<u64, Entry>,
    /// Unreaped leaders: pid to instance id, used by the reaper to route statuses.
    pub(crate) leaders: HashMap<i32, u64>,
    /// Set when the reaper stops: nothing can be reaped any more, so nothing is spawned.
    pub(crate) stopped: bool,
}

/// What the registry knows about one instance.
pub(crate) struct Entry {
    pub(crate) leader: Pid,
    pub(crate) marker: Arc<str>,
    /// The leader's pidfd, dropped once the leader is reaped.
    pub(crate) pidfd: Option<OwnedFd>,
    /// The instance's cgroup, if it has one: killed as a whole, and must be empty for `gone`.
    pub(crate) cgroup: Option<InstanceCgroup>,
    pub(crate) leader_reaped: bool,
    /// Once seen empty after the leader was reaped, a process group can never refill, and its
    /// id may be reused: it is never signalled again.
    pub(crate) group_empty: bool,
    pub(crate) exit_tx: watch::Sender<Option<ExitStatus>>,
    pub(crate) gone_tx: watch::Sender<bool>,
}

impl Entry {
    /// The process group id, equal to the leader's pid because the leader called `setsid`.
    pub(crate) fn pgid(&self) -> Pid {
        self.leader
    }
}

impl Shared {
    pub(crate) fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Shared {
            registry: Mutex::new(Registry {
                instances: HashMap::new(),
                leaders: HashMap::new(),
                stopped: false,
            }),
            supervisor_pid: Pid::this(),
            launcher_id: format!("{nanos:x}"),
            next_instance: AtomicU64::new(1),
        }
    }

    /// Locks the registry. A panic while it was held cannot leave it inconsistent in a way
    /// that matters more than losing the reaper, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh instance id and its marker value.
    pub(crate) fn next_marker(&self) -> (u64, Arc<str>) {
        let id = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let marker = format!("{}:{}.{id}", self.supervisor_pid, self.launcher_id);
        (id, marker.into())
    }

    /// Reaps every child that has exited; returns the instances whose leader is reaped and
    /// whose group is empty (candidates for `gone`), or nothing if nothing was reaped.
    pub(crate) fn reap(&self) -> Vec<(u64, Arc<str>)> {
        let mut reg = self.lock();
        if reap_all(&mut reg) == 0 {
            return Vec::new();
        }
        // Still under the lock, so our own spawner cannot reuse a just-freed pgid number
        // before it is seen empty.
        empty_groups(&mut reg)
    }

    /// Resolves `gone` for the candidates that no live marked descendant belongs to.
    ///
    /// `alive` comes from a /proc scan made without the lock: an empty group with no live
    /// marked process cannot gain members again, so the answer cannot go stale meanwhile.
    pub(crate) fn settle(&self, pending: &[(u64, Arc<str>)], alive: &[scan::Marked]) {
        let mut reg = self.lock();
        for (id, marker) in pending {
            if alive.iter().any(|p| p.marker == marker.as_ref()) {
                continue;
            }
            if let Some(entry) = reg.instances.remove(id) {
                tracing::debug!(leader = entry.leader.as_raw(), %marker, "instance gone");
                entry.gone_tx.send_replace(true);
            }
        }
    }

    /// Sends `signal` to an instance: its group (which holds the leader until it is reaped,
    /// since a session leader can leave neither), its leader alone when the group cannot be
    /// reached, and its marked escapees. Every target is attempted; the first refusal other
    /// than "no such process" is returned after all attempts.
    pub(crate) fn signal_instance(
        &self,
        id: u64,
        signal: Signal,
    ) -> Result<SignalReport, SignalError> {
        let mut report = SignalReport::default();
        let mut first_error = None;
        if signal == Signal::SIGKILL {
            // The cgroup first: it reaches every member whatever it did to its session, group
            // or environment, even one being forked. Outside the lock, as a freeze may wait;
            // the cgroup is ours alone, so there is no reuse to guard against.
            let cgroup = self
                .lock()
                .instances
                .get(&id)
                .and_then(|entry| entry.cgroup.clone());
            if let Some(cgroup) = cgroup {
                match cgroup.kill() {
                    Ok(_) => report.cgroup = true,
                    Err(error) => {
                        first_error = Some(SignalError {
                            signal,
                            target: SignalTarget::Cgroup,
                            source: error.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
                        })
                    }
                }
            }
        }
        let (marker, pgid) = {
            let mut reg = self.lock();
            let other_leader_owns_pgid = |reg: &Registry, pgid: Pid| {
                reg.leaders
                    .get(&pgid.as_raw())
                    .is_some_and(|owner| *owner != id)
            };
            let Some(entry) = reg.instances.get(&id) else {
                return Ok(report);
            };
            let pgid = entry.pgid();
            let reused = other_leader_owns_pgid(&reg, pgid);
            let Some(entry) = reg.instances.get_mut(&id) else {
                return Ok(report);
            };
            if signal == Signal::SIGKILL && !entry.leader_reaped {
                // Idempotent, so the exact pidfd delivery costs nothing extra.
                match signal_leader_locked(entry, signal) {
                    Ok(sent) => report.leader |= sent,
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if !entry.group_empty && !reused {
                match killpg(pgid, signal) {
                    Ok(()) => {
                        report.group = true;
                        report.leader |= !entry.leader_reaped;
                    }
                    Err(Errno::ESRCH) => entry.group_empty = entry.leader_reaped,
                    Err(source) => {
                        first_error = first_error.or(Some(SignalError {
                            signal,
                            target: SignalTarget::Group,
                            source,
                        }))
                    }
                }
            }
            if !report.leader && !entry.leader_reaped {
                match signal_leader_locked(entry, signal) {
                    Ok(sent) => report.leader = sent,
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            (entry.marker.clone(), pgid)
        };

        let rounds = if signal == Signal::SIGKILL {
            KILL_ROUNDS
        } else {
            1
        };
        for _ in 0..rounds {
            let found: Vec<scan::Marked> =
                scan::marked_descendants(self.supervisor_pid.as_raw(), &[marker.as_ref()])
                    .into_iter()
                    .filter(|p| !(report.group && p.pgid == pgid.as_raw()))
                    .filter(|p| {
                        u32::try_from(p.pid).is_ok_and(|pid| !report.escapees.contains(&pid))
                    })
                    .collect();
            if found.is_empty() {
                break;
            }
            for process in found {
                match signal_escapee(process.pid, &marker, signal) {
                    Ok(true) => report.escapees.extend(u32::try_from(process.pid).ok()),
                    Ok(false) => {}
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Sends `signal` to the leader only, through its pidfd, while it is unreaped.
    pub(crate) fn signal_leader(&self, id: u64, signal: Signal) -> Result<bool, SignalError> {
        let reg = self.lock();
        match reg.instances.get(&id) {
            Some(entry) if !entry.leader_reaped => signal_leader_locked(entry, signal),
            _ => Ok(false),
        }
    }

    /// Marked live descendants of an instance that are outside its process group.
    pub(crate) fn escapees(&self, id: u64) -> Vec<u32> {
        let (marker, pgid) = {
            let reg = self.lock();
            match reg.instances.get(&id) {
                Some(entry) => (entry.marker.clone(), entry.pgid()),
                None => return Vec::new(),
            }
        };
        scan::marked_descendants(self.supervisor_pid.as_raw(), &[marker.as_ref()])
            .into_iter()
            .filter(|p| p.pgid != pgid.as_raw())
            .filter_map(|p| u32::try_from(p.pid).ok())
            .collect()
    }

    /// Called when the reaper stops: wakes every waiter with an error instead of leaving it
    /// hanging, and refuses further spawns.
    fn stop(&self) {
        let mut reg = self.lock();
        reg.stopped = true;
        reg.instances.clear();
        reg.leaders.clear();
    }
}

/// Signals the leader with the registry lock held, so that it cannot be reaped (and its pid
/// reused) in between: through the pidfd when there is one, else with plain `kill`.
fn signal_leader_locked(entry: &Entry, signal: Signal) -> Result<bool, SignalError> {
    let result = match &entry.pidfd {
        Some(fd) => super::pidfd::send_signal(fd.as_fd(), signal),
        None => kill(entry.leader, signal),
    };
    match result {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(SignalError {
            signal,
            target: SignalTarget::Leader,
            source,
        }),
    }
}

/// Signals one marked process. Its identity is pinned with a pidfd first and its marker
/// re-read afterwards, so a pid reused between the scan and the signal is never hit.
fn signal_escapee(pid: i32, marker: &str, signal: Signal) -> Result<bool, SignalError> {
    let target = SignalTarget::Escapee(u32::try_from(pid).unwrap_or_default());
    let refused = |source| SignalError {
        signal,
        target,
        source,
    };
    let result = match super::pidfd::open(Pid::from_raw(pid)) {
        Ok(fd) => {
            if scan::read_marker(pid).as_deref() != Some(marker) {
                return Ok(false);
            }
            super::pidfd::send_signal(fd.as_fd(), signal)
        }
        Err(Errno::ESRCH) => return Ok(false),
        // No pidfd support: a pid reused within microseconds of the scan is the residual risk.
        Err(_) => kill(Pid::from_raw(pid), signal),
    };
    match result {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(refused(source)),
    }
}

/// Reaps every exited child without blocking; returns how many were reaped.
fn reap_all(reg: &mut Registry) -> usize {
    let mut reaped = 0;
    loop {
        let mut raw: libc::c_int = 0;
        // SAFETY: waitpid only writes one c_int through the pointer, which points to a live
        // local. libc is used rather than nix because nix fails to decode statuses of
        // real-time signals *after* the child was reaped, which would lose its pid.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid == 0 {
            break;
        }
        if pid < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => break,
                other => {
                    tracing::warn!(error = %other, "waitpid failed");
                    break;
                }
            }
        }
        reaped += 1;
        let Some(status) = ExitStatus::from_raw(raw) else {
            continue;
        };
        let Some(id) = reg.leaders.remove(&pid) else {
            tracing::trace!(pid, %status, "reaped a descendant");
            continue;
        };
        if let Some(entry) = reg.instances.get_mut(&id) {
            tracing::debug!(pid, %status, "leader exited");
            entry.leader_reaped = true;
            entry.pidfd = None;
            entry.exit_tx.send_replace(Some(status));
        }
    }
    reaped
}

/// Instances whose leader is reaped and whose process group is empty: the candidates for
/// `gone`, pending a scan for escapees.
fn empty_groups(reg: &mut Registry) -> Vec<(u64, Arc<str>)> {
    let mut pending = Vec::new();
    for (id, entry) in reg.instances.iter_mut() {
        if !entry.leader_reaped {
            continue;
        }
        if !entry.group_empty {
            // Signal 0 checks existence only. Zombie members count until reaped, and being
            // subreaper, their reap by us brings us back here.
            match killpg(entry.pgid(), None) {
                Err(Errno::ESRCH) => entry.group_empty = true,
                _ => continue,
            }
        }
        // A member that left the group and cleared its environment is still in the cgroup.
        // Being a descendant, its death still reaches us (as subreaper), and we come back
        // here. An unreadable cgroup is not waited for, so `gone` cannot hang on it.
        if let Some(cgroup) = &entry.cgroup {
            if cgroup.is_populated().unwrap_or(false) {
                continue;
            }
        }
        pending.push((*id, entry.marker.clone()));
    }
    pending
}

/// Stops the registry when the reaper task ends for any reason (abort, runtime shutdown),
/// and lets a new launcher be created.
pub(crate) struct ReaperGuard {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        self.shared.stop();
        super::launcher::release_singleton();
    }
}

/// The reaper task: one pass at start (children may predate the listener), then one pass per
/// SIGCHLD. Tokio coalesces signals, so each pass loops until nothing is left to reap. The
/// /proc scan for escapees (which may block for a few milliseconds) runs on the blocking
/// pool, and the next pass waits for it, so passes never overlap.
pub(crate) async fn run(guard: ReaperGuard, mut sigchld: SignalStream) {
    loop {
        let pending = guard.shared.reap();
        if !pending.is_empty() {
            let supervisor = guard.shared.supervisor_pid.as_raw();
            let wanted: Vec<Arc<str>> = pending.iter().map(|(_, m)| m.clone()).collect();
            let scan = tokio::task::spawn_blocking(move || {
                let wanted: Vec<&str> = wanted.iter().map(AsRef::as_ref).collect();
                scan::marked_descendants(supervisor, &wanted)
            });
            match scan.await {
                Ok(alive) => guard.shared.settle(&pending, &alive),
                // Without an answer nothing is declared gone; the next reap re-checks.
                Err(error) => tracing::warn!(%error, "escapee scan failed"),
            }
        }
        if sigchld.recv().await.is_none() {
            tracing::warn!("SIGCHLD stream ended; the reaper stops");
            break;
        }
    }
}
