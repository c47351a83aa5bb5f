//! Linux process adapter: starts, signals, kills and reaps the supervised programs, and
//! reports what happened. It decides nothing (no restarts, no timeouts of its own except the
//! exec probe's), and knows nothing of the core's types.
//!
//! # Instances
//!
//! Each [`Launcher::spawn`] starts one *instance*: a *leader* (the exec'd program) that
//! called `setsid`, so it is alone in a new session and process group whose id is its pid,
//! plus everything it forks. Every process of the instance inherits the environment variable
//! [`MARKER_VAR`] (`<supervisor pid>:<launcher id>.<instance number>`), so a daemon that
//! double-forks and calls `setsid` to leave the group (an *escapee*) can still be found by
//! reading `/proc/<pid>/environ` of the supervisor's descendants.
//!
//! # One reaper
//!
//! The supervisor marks itself child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned
//! descendants are reparented to it rather than to init, so it receives SIGCHLD when *any*
//! descendant whose parent died exits. A single tokio task waits for SIGCHLD and loops
//! `waitpid(-1, WNOHANG)` until it returns 0 or `ECHILD` (tokio coalesces signals, so one
//! wake-up may stand for many exits). A leader's status goes to its instance's waiters; any
//! other status (an orphaned descendant) is just reaped. Hence the rule: nothing else in the
//! process may create children (no `tokio::process`, no `std::process::Command`), or its
//! statuses would be stolen; exec probes go through [`run_exec_probe`].
//!
//! Spawn and reap cannot race: the reaper calls `waitpid` with the registry lock held, and
//! the spawner holds that lock from `fork` until the new leader is registered. So a leader
//! that exits at once is reaped only after it has a waiter, and std's own `waitpid` on a
//! child whose `exec` failed (std asserts it succeeds) is never preempted.
//!
//! # When is an instance `gone`?
//!
//! [`Child::gone`] resolves when no process of the instance remains. It is re-evaluated
//! after each pass of the reaper that reaped something, never on a timer:
//!
//! 1. the leader must have been reaped;
//! 2. its process group must be empty: `kill(-pgid, 0)` fails with `ESRCH`. Zombies still
//!    count as members until reaped, and once reaped by us we come back here;
//! 3. only then, one scan of `/proc` looks for live (non-zombie) descendants carrying the
//!    instance's marker.
//!
//! Why an event always arrives: consider the last process of the instance to die. Its
//! parent is not a live member (or it would not be the last); a member's children are
//! members or marked escapees; so its parent is either dead, in which case it was
//! reparented to us as subreaper, or is us. Either way the kernel sends us SIGCHLD, we reap
//! it, and the re-check finds the instance empty. A reparented process that was already a
//! zombie is notified to its new parent too. The exception is a descendant that cleared its
//! environment (so carries no marker) *and* left the group: it is invisible to this module,
//! and if it is the parent of the last marked process, `gone` may resolve late (at the next
//! reap) rather than on time.
//!
//! Once a group has been seen empty after its leader was reaped it is never signalled again:
//! an empty group cannot refill, and its id may be reused by an unrelated new session.
//!
//! # Cgroups
//!
//! A spec may carry an [`InstanceCgroup`](crate::cgroup::InstanceCgroup): the child then
//! writes itself into it between `fork` and `exec` (before dropping privileges), so the
//! leader and everything it forks are members from their first instruction. With one,
//! `gone` additionally waits for the cgroup to be empty (which catches a descendant that
//! cleared its environment and left the group: it is still a descendant, so its death still
//! reaches us), and a SIGKILL of the instance kills the cgroup first (`cgroup.kill`, or
//! freeze and kill), then proceeds as below.
//!
//! # Signals
//!
//! [`Child::signal`] sends once to each process: `kill(-pgid)` reaches the group, including
//! the leader while it is unreaped (a session leader cannot leave its group); escapees are
//! pinned with a pidfd, re-checked for the marker, then signalled through the pidfd. The
//! registry lock is held while signalling the group and the leader, so the leader cannot be
//! reaped (and its pid or pgid reused) in between. [`Child::signal_leader`] uses the leader's
//! pidfd (opened right after fork, before any reap was possible); without pidfd support
//! (kernels before 5.3) it falls back to `kill` under the same lock, which is equally safe
//! against reuse, and logs that at debug level.
//!
//! # Dying with the supervisor
//!
//! Children are forked by one dedicated, long-lived OS thread, because `PR_SET_PDEATHSIG`
//! fires when the forking *thread* exits (tokio's blocking-pool threads retire when idle).
//! In the child, after switching credentials (which would clear it) the hook sets
//! `PR_SET_PDEATHSIG(SIGKILL)`, then checks `getppid()` to catch a supervisor that died
//! before that, then calls `setsid`. So if the supervisor is SIGKILLed, every leader dies.
//!
//! What this does not cover: grandchildren (the leader's own children, and escapees). The
//! death signal is not inherited across `fork`, the kernel sends no signal to a process
//! group whose session leader dies without a controlling terminal, and they are reparented
//! to the nearest living subreaper or init. Only a cgroup (or a PID namespace) could kill
//! them atomically with the supervisor. What remains is the marker: after a restart,
//! [`find_stale_processes`] lists the live processes carrying the marker of a supervisor that
//! no longer exists, so the next supervisor can report or kill them.

mod child;
mod error;
mod exec_probe;
mod launcher;
pub(crate) mod pidfd;
mod reaper;
mod scan;
mod spawn;
mod spec;
mod status;

pub use child::{Child, ChildWatch, OutputPipe};
pub use error::{LauncherError, SignalError, SignalTarget, SpawnError, WaitError};
pub use exec_probe::{run_exec_probe, ExecProbeOutcome};
pub use launcher::Launcher;
pub use nix::sys::signal::Signal;
pub use scan::{find_stale_processes, StaleProcess, MARKER_VAR};
pub use spec::{EnvBase, Identity, OutputMode, ProcessSpec};
pub use status::ExitStatus;

/// Which processes a signal reached, so the caller can log and test what a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalReport {
    /// The leader was signalled (directly or as a member of its group).
    pub leader: bool,
    /// The process group was signalled.
    pub group: bool,
    /// Pids of marked descendants outside the group that were signalled.
    pub escapees: Vec<u32>,
    /// The instance's cgroup was killed as a whole (SIGKILL of an instance that has one).
    pub cgroup: bool,
}
