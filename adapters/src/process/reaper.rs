//! The registry of live instances and the single reaper that feeds it.
//!
//! Every child of the supervisor process is reaped here, by one `waitpid(-1, WNOHANG)` loop
//! driven by SIGCHLD. The loop runs with the registry lock held, and the spawner holds the
//! same lock from the clone until the new leader is registered: so a status is never reaped
//! before its waiter exists. A child whose `exec` failed exits with 127 and is reaped here
//! like any other leader.

use std::collections::{HashMap, HashSet};
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
use super::search::{Orphans, Wanted};
use super::status::ExitStatus;
use super::SignalReport;
use crate::cgroup::{InstanceCgroup, KillMethod};

/// How many times `kill_group` looks again for escapees that forked while being killed.
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
    /// The supervisor's children, listed once for all who asked meanwhile.
    pub(crate) listings: super::search::Listings,
}

/// Live instances, guarded by one lock that also serialises fork and reap.
pub(crate) struct Registry {
    /// Instances not yet gone, by instance id.
    pub(crate) instances: HashMap<u64, Entry>,
    /// Unreaped leaders: pid to instance id, used by the reaper to route statuses.
    pub(crate) leaders: HashMap<i32, u64>,
    /// Set when the reaper stops: nothing can be reaped any more, so nothing is spawned.
    pub(crate) stopped: bool,
    /// The marks of the supervisor's orphans, kept until they are reaped.
    pub(crate) orphans: Orphans,
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
    pub(crate) fate: watch::Sender<Fate>,
}

/// What is known of an instance's end, in one channel (each channel costs a few hundred
/// bytes, and hundreds of instances wait at once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fate {
    /// The leader's status, once it is reaped.
    pub(crate) exit: Option<ExitStatus>,
    /// No process of the instance remains.
    pub(crate) gone: bool,
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
                orphans: Orphans::default(),
            }),
            supervisor_pid: Pid::this(),
            launcher_id: format!("{nanos:x}"),
            next_instance: AtomicU64::new(1),
            listings: super::search::Listings::default(),
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
    pub(crate) fn reap(&self) -> Vec<Pending> {
        let mut reg = self.lock();
        if reap_all(&mut reg) == 0 {
            return Vec::new();
        }
        // Still under the lock, so our own spawner cannot reuse a just-freed pgid number
        // before it is seen empty.
        empty_groups(&mut reg)
    }

    /// Which of the candidates still have a live process carrying their marker outside
    /// their (empty) group, one flag per candidate. Reads `/proc` (a few files per process
    /// of these instances) and may block: see [`Shared::gone_without_reading`].
    pub(crate) fn processes_left(&self, pending: &[Pending]) -> Vec<bool> {
        let wanted: Vec<Wanted<'_>> = pending
            .iter()
            .map(|p| Wanted {
                marker: &p.marker,
                leader: None,
            })
            .collect();
        let marked = |stat: &scan::ProcStat, marker: &str| {
            stat.is_live() && scan::read_marker(stat.pid).as_deref() == Some(marker)
        };
        let (left, complete) = match self.trees(&wanted) {
            Some((trees, complete)) => {
                let left = trees
                    .iter()
                    .zip(pending)
                    .map(|(tree, p)| tree.iter().any(|stat| marked(stat, &p.marker)))
                    .collect();
                (left, complete)
            }
            None => (vec![false; pending.len()], false),
        };
        if complete {
            return left;
        }
        // Processes kept moving under the walks (or the kernel cannot list children): a
        // process found alive is proof enough, an absence is confirmed by a full scan.
        let unsure: Vec<&str> = pending
            .iter()
            .zip(&left)
            .filter(|(_, left)| !**left)
            .map(|(p, _)| p.marker.as_ref())
            .collect();
        let alive = scan::marked_descendants(self.supervisor_pid.as_raw(), &unsure);
        pending
            .iter()
            .zip(left)
            .map(|(p, left)| left || alive.iter().any(|m| m.marker == p.marker.as_ref()))
            .collect()
    }

    /// The candidates that are certainly gone without reading any process's environment:
    /// no orphan of the supervisor may be theirs (the supervisor's children are listed, and
    /// orphans' marks are known). `None` if that cannot be told without blocking.
    pub(crate) fn gone_without_reading(&self, pending: &[Pending]) -> Option<Vec<bool>> {
        let markers: Vec<&str> = pending.iter().map(|p| p.marker.as_ref()).collect();
        let roots = self.orphan_roots(&markers, false)?;
        Some(roots.iter().map(Vec::is_empty).collect())
    }

    /// Resolves `gone` for these instances.
    ///
    /// Their emptiness was established without the lock: an empty group with no live
    /// process of the instance cannot gain members again, so it cannot go stale meanwhile.
    pub(crate) fn settle(&self, gone: &[u64]) {
        let mut reg = self.lock();
        for id in gone {
            if let Some(entry) = reg.instances.remove(id) {
                tracing::debug!(leader = entry.leader.as_raw(), marker = %entry.marker, "instance gone");
                entry.fate.send_modify(|fate| fate.gone = true);
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
        let mut cgroup_exact = false;
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
                    Ok(method) => {
                        report.cgroup = true;
                        // A sweep of listed pids can be outrun by a member forking in a loop.
                        cgroup_exact = method != KillMethod::EachPid;
                    }
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
        let (marker, pgid, cgroup) = {
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
            (entry.marker.clone(), pgid, entry.cgroup.clone())
        };
        if cgroup_exact {
            // The cgroup kill reached every process of the instance at once.
            return first_error.map_or(Ok(report), Err);
        }

        let rounds = if signal == Signal::SIGKILL {
            KILL_ROUNDS
        } else {
            1
        };
        let skip = Skip {
            pgid: report.group.then_some(pgid.as_raw()),
            leader: report.leader,
        };
        for _ in 0..rounds {
            let from_cgroup = cgroup.as_ref().and_then(|cgroup| {
                signal_cgroup_members(cgroup, id, self, skip, signal, &report.escapees)
                    .inspect_err(|error| {
                        tracing::debug!(%error, "cgroup unreadable; looking for escapees by marker")
                    })
                    .ok()
            });
            let (signalled, error) = match from_cgroup {
                Some(outcome) => outcome,
                None => {
                    let mut signalled = Vec::new();
                    let mut error = None;
                    for pid in self.tree_candidates(id, &marker, skip) {
                        if u32::try_from(pid).is_ok_and(|pid| report.escapees.contains(&pid)) {
                            continue;
                        }
                        match signal_escapee(pid, &marker, signal) {
                            Ok(true) => signalled.extend(u32::try_from(pid).ok()),
                            Ok(false) => {}
                            Err(e) => error = error.or(Some(e)),
                        }
                    }
                    (signalled, error)
                }
            };
            first_error = first_error.or(error);
            if signalled.is_empty() {
                break;
            }
            report.escapees.extend(signalled);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// The leader while it is unreaped.
    fn unreaped_leader(&self, id: u64) -> Option<i32> {
        let reg = self.lock();
        let entry = reg.instances.get(&id)?;
        (!entry.leader_reaped).then(|| entry.leader.as_raw())
    }

    /// Live processes of the instance's trees that a signal must reach one by one (members
    /// of the group not skipped, every other process), for [`signal_escapee`] to pin and
    /// check for the marker.
    fn tree_candidates(&self, id: u64, marker: &str, skip: Skip) -> Vec<i32> {
        let leader = self.unreaped_leader(id);
        let wanted = [Wanted { marker, leader }];
        let processes: Vec<(i32, i32)> = match self.trees(&wanted) {
            Some((mut trees, _)) => trees
                .pop()
                .unwrap_or_default()
                .into_iter()
                .filter(scan::ProcStat::is_live)
                .map(|stat| (stat.pid, stat.pgid))
                .collect(),
            None => scan::marked_descendants(self.supervisor_pid.as_raw(), &[marker])
                .into_iter()
                .map(|p| (p.pid, p.pgid))
                .collect(),
        };
        processes
            .into_iter()
            .filter(|(pid, pgid)| !skip.covers(*pid, *pgid, leader))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Sends `signal` to the leader only, through its pidfd, while it is unreaped.
    pub(crate) fn signal_leader(&self, id: u64, signal: Signal) -> Result<bool, SignalError> {
        let reg = self.lock();
        match reg.instances.get(&id) {
            Some(entry) if !entry.leader_reaped => signal_leader_locked(entry, signal),
            _ => Ok(false),
        }
    }

    /// Marked live processes of an instance that are outside its process group: members of
    /// its cgroup if it has one, else processes of its trees.
    pub(crate) fn escapees(&self, id: u64) -> Vec<u32> {
        let (marker, pgid, cgroup) = {
            let reg = self.lock();
            match reg.instances.get(&id) {
                Some(entry) => (entry.marker.clone(), entry.pgid(), entry.cgroup.clone()),
                None => return Vec::new(),
            }
        };
        let outside = |pid: &i32| scan::read_stat(*pid).is_some_and(|s| s.pgid != pgid.as_raw());
        let from_cgroup = cgroup.and_then(|cgroup| cgroup.pids().ok()).map(|pids| {
            pids.into_iter()
                .filter_map(|pid| i32::try_from(pid).ok())
                .filter(outside)
                .collect::<Vec<i32>>()
        });
        let skip = Skip {
            pgid: Some(pgid.as_raw()),
            leader: false,
        };
        from_cgroup
            .unwrap_or_else(|| self.tree_candidates(id, &marker, skip))
            .into_iter()
            .filter(|pid| scan::read_marker(*pid).as_deref() == Some(marker.as_ref()))
            .filter_map(|pid| u32::try_from(pid).ok())
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

/// What a signal already reached as a whole, so that no process gets it twice.
#[derive(Clone, Copy)]
struct Skip {
    /// The process group, when it was signalled.
    pgid: Option<i32>,
    /// Whether the leader was signalled.
    leader: bool,
}

impl Skip {
    fn covers(&self, pid: i32, pgid: i32, leader: Option<i32>) -> bool {
        self.pgid == Some(pgid) || (self.leader && leader == Some(pid))
    }
}

/// Signals one marked process. Its identity is pinned with a pidfd first and its marker
/// re-read afterwards, so a pid reused between the search and the signal is never hit.
fn signal_escapee(pid: i32, marker: &str, signal: Signal) -> Result<bool, SignalError> {
    let target = SignalTarget::Escapee(u32::try_from(pid).unwrap_or_default());
    let refused = |source| SignalError {
        signal,
        target,
        source,
    };
    let pinned = match super::pidfd::open(Pid::from_raw(pid)) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => return Ok(false),
        // No pidfd support: a pid reused within microseconds of the check is the residual
        // risk.
        Err(_) => None,
    };
    if scan::read_marker(pid).as_deref() != Some(marker) {
        return Ok(false);
    }
    let result = match &pinned {
        Some(fd) => super::pidfd::send_signal(fd.as_fd(), signal),
        None => kill(Pid::from_raw(pid), signal),
    };
    match result {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(refused(source)),
    }
}

/// Signals the live members of the instance's cgroup that `skip` does not cover and that
/// were not signalled yet, marked or not: membership is exact. Each is pinned with a pidfd,
/// then the member list is read again, and only pinned processes still listed are
/// signalled (through their pidfd), so a pid reused after the first read is never hit.
/// Returns the pids signalled and the first refusal.
fn signal_cgroup_members(
    cgroup: &InstanceCgroup,
    id: u64,
    shared: &Shared,
    skip: Skip,
    signal: Signal,
    done: &[u32],
) -> Result<(Vec<u32>, Option<SignalError>), crate::cgroup::CgroupError> {
    let leader = shared.unreaped_leader(id);
    let pinned: Vec<(u32, Option<OwnedFd>)> = cgroup
        .pids()?
        .into_iter()
        .filter(|pid| !done.contains(pid))
        .filter_map(|pid| {
            let raw = i32::try_from(pid).ok()?;
            let stat = scan::read_stat(raw).filter(scan::ProcStat::is_live)?;
            if skip.covers(raw, stat.pgid, leader) {
                return None;
            }
            match super::pidfd::open(Pid::from_raw(raw)) {
                Ok(fd) => Some((pid, Some(fd))),
                Err(Errno::ESRCH) => None,
                Err(_) => Some((pid, None)),
            }
        })
        .collect();
    if pinned.is_empty() {
        return Ok((Vec::new(), None));
    }
    let listed: HashSet<u32> = cgroup.pids()?.into_iter().collect();
    let mut signalled = Vec::new();
    let mut first_error = None;
    for (pid, fd) in pinned {
        if !listed.contains(&pid) {
            continue;
        }
        let result = match &fd {
            Some(fd) => super::pidfd::send_signal(fd.as_fd(), signal),
            None => i32::try_from(pid).map_or(Ok(()), |raw| kill(Pid::from_raw(raw), signal)),
        };
        match result {
            Ok(()) => signalled.push(pid),
            Err(Errno::ESRCH) => {}
            Err(source) => {
                first_error = first_error.or(Some(SignalError {
                    signal,
                    target: SignalTarget::Escapee(pid),
                    source,
                }))
            }
        }
    }
    Ok((signalled, first_error))
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
        reg.orphans.reaped(pid);
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
            entry.fate.send_modify(|fate| fate.exit = Some(status));
        }
    }
    reaped
}

/// An instance whose leader is reaped and whose process group is empty: a candidate for
/// `gone`.
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) marker: Arc<str>,
    /// Its cgroup is empty: no process of the instance is left, none needs looking for.
    pub(crate) cgroup_empty: bool,
}

/// Instances whose leader is reaped and whose process group is empty: the candidates for
/// `gone`, pending a look for escapees unless their cgroup already says none is left.
fn empty_groups(reg: &mut Registry) -> Vec<Pending> {
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
        // here. An empty cgroup is exact: nothing else needs checking. An unreadable one is
        // not waited for, so `gone` cannot hang on it; the marker search decides instead.
        let cgroup_empty = match entry.cgroup.as_ref().map(InstanceCgroup::is_populated) {
            Some(Ok(true)) => continue,
            Some(Ok(false)) => true,
            Some(Err(_)) | None => false,
        };
        pending.push(Pending {
            id: *id,
            marker: entry.marker.clone(),
            cgroup_empty,
        });
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
/// SIGCHLD. Tokio coalesces signals, so each pass loops until nothing is left to reap.
///
/// A candidate for `gone` whose cgroup is empty, or that no orphan of the supervisor may
/// belong to (a listing of our own children, a few small reads), is settled here at once.
/// Only the others need their trees walked and environments read, which may block (an
/// environment read during `execve` is retried for up to ~31 ms): that runs on the blocking
/// pool, and the next pass waits for it, so passes never overlap.
pub(crate) async fn run(guard: ReaperGuard, mut sigchld: SignalStream) {
    loop {
        let pending = guard.shared.reap();
        if !pending.is_empty() {
            settle_pending(&guard.shared, pending).await;
        }
        if sigchld.recv().await.is_none() {
            tracing::warn!("SIGCHLD stream ended; the reaper stops");
            break;
        }
    }
}

async fn settle_pending(shared: &Arc<Shared>, pending: Vec<Pending>) {
    let (mut gone, unsure): (Vec<Pending>, Vec<Pending>) =
        pending.into_iter().partition(|p| p.cgroup_empty);
    let unsure = match shared.gone_without_reading(&unsure) {
        Some(certain) => {
            let (certain, unsure): (Vec<_>, Vec<_>) =
                unsure.into_iter().zip(certain).partition(|(_, gone)| *gone);
            gone.extend(certain.into_iter().map(|(p, _)| p));
            unsure.into_iter().map(|(p, _)| p).collect()
        }
        None => unsure,
    };
    let mut gone: Vec<u64> = gone.iter().map(|p| p.id).collect();
    if !unsure.is_empty() {
        let searcher = Arc::clone(shared);
        let search = tokio::task::spawn_blocking(move || {
            let left = searcher.processes_left(&unsure);
            unsure
                .into_iter()
                .zip(left)
                .filter(|(_, left)| !left)
                .map(|(p, _)| p.id)
                .collect::<Vec<u64>>()
        });
        match search.await {
            Ok(found_gone) => gone.extend(found_gone),
            // Without an answer nothing more is declared gone; the next reap re-checks.
            Err(error) => tracing::warn!(%error, "escapee search failed"),
        }
    }
    if !gone.is_empty() {
        shared.settle(&gone);
    }
}
