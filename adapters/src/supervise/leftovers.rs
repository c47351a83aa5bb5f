//! What a supervisor that died (SIGKILL, OOM kill, power cut of its container) left behind,
//! found and removed by the next one.
//!
//! The parent-death signal stops every leader with its supervisor, but not what the leaders
//! forked: those are reparented and keep running. They still carry the dead supervisor's
//! instance marker (and, with `cgroup = true`, sit in its cgroups), which is how the next
//! supervisor finds them. A stale control socket is replaced when the control server binds.

use crate::cgroup::Cgroups;
use crate::process::{find_stale_processes, kill_stale_process};

/// What [`clean_up_dead_supervisors`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Leftovers {
    /// Marked processes of dead supervisors that were killed.
    pub killed: usize,
    /// Marked processes that could not be killed (another user's, without root).
    pub failed: usize,
    /// Cgroup directories of dead supervisors removed (their members killed first).
    pub cgroups_removed: usize,
}

/// Kills every live process carrying the marker of a supervisor that no longer runs, and
/// removes dead supervisors' cgroups (killing what still runs in them). Each finding is one
/// warning line; this is for the start of a daemon, before it spawns anything.
///
/// Processes that cleared their environment and left their process group carry no marker:
/// without a cgroup they cannot be recognised and are left alone.
pub fn clean_up_dead_supervisors() -> Leftovers {
    let mut leftovers = Leftovers::default();
    for stale in find_stale_processes() {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", stale.pid))
            .unwrap_or_default()
            .trim_end()
            .to_string();
        match kill_stale_process(&stale) {
            Ok(()) => {
                leftovers.killed += 1;
                tracing::warn!(
                    pid = stale.pid,
                    command = %comm,
                    marker = %stale.marker,
                    "killed a process left running by a supervisor that died"
                );
            }
            Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                leftovers.failed += 1;
                tracing::warn!(
                    pid = stale.pid,
                    command = %comm,
                    marker = %stale.marker,
                    %error,
                    "a process left running by a supervisor that died cannot be killed; kill it by hand"
                );
            }
        }
    }
    if let Ok(cgroups) = Cgroups::detect() {
        leftovers.cgroups_removed = cgroups.remove_stale().removed.len();
    }
    leftovers
}
