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
//! reading `/proc/<pid>/environ` in the instance's own process trees (see "Finding an
//! instance's processes").
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
//! the spawner holds that lock from the clone until the new leader is registered. So a leader
//! that exits at once is reaped only after it has a waiter; one whose `exec` failed exits
//! with 127 and is reaped like the others.
//!
//! # When is an instance `gone`?
//!
//! [`Child::gone`] resolves when no process of the instance remains. It is re-evaluated
//! after each pass of the reaper that reaped something, never on a timer:
//!
//! 1. the leader must have been reaped;
//! 2. its process group must be empty: `kill(-pgid, 0)` fails with `ESRCH`. Zombies still
//!    count as members until reaped, and once reaped by us we come back here;
//! 3. only then, live (non-zombie) processes carrying the instance's marker are looked for,
//!    as described below; with a cgroup, its emptiness answers instead.
//!
//! Why an event always arrives: consider the last process of the instance to die. Its
//! parent is not a live member (or it would not be the last); a member's children are
//! members or marked escapees; so its parent is either dead, in which case it was
//! reparented to us as subreaper, or is us. Either way the kernel sends us SIGCHLD, we reap
//! it, and the re-check finds the instance empty. A reparented process that was already a
//! zombie is notified to its new parent too. The exception is a descendant that cleared its
//! environment (so carries no marker) *and* left the group: it is invisible to this module,
//! and if it is the parent of the last marked process, `gone` may resolve late (at the next
//! reap) rather than on time. The same goes, for a moment, for a process outside the group
//! that is in the middle of an `exec`: its environment reads as empty until the new program
//! is mapped, which is re-read for up to ~31 ms; on a machine so loaded that an exec takes
//! longer, such a process is neither signalled nor counted at that moment.
//!
//! Once a group has been seen empty after its leader was reaped it is never signalled again:
//! an empty group cannot refill, and its id may be reused by an unrelated new session.
//!
//! # Finding an instance's processes
//!
//! Signalling and the `gone` check cost in proportion to the instance's own processes, not to
//! the machine nor to the other supervised instances: no scan of all of `/proc`.
//!
//! *With a cgroup* membership is exact and costs one read of `cgroup.procs`: a signal reaches
//! the members outside the group through pidfds (confirmed still listed after pinning), and
//! `gone` needs the cgroup empty and nothing else, no marker is read. A process that moved
//! itself to another cgroup (root only) is no longer counted.
//!
//! *Without one*, the instance's processes are found by walking its process trees through
//! `/proc/<pid>/task/<tid>/children` (every thread has its own list). The roots are:
//!
//! - the leader while it is unreaped: every member and escapee whose ancestors are alive is
//!   below it (members below it are found this way too, and escapees below them);
//! - the supervisor's *orphans*: its direct children (`/proc/<self>/task/*/children`) other
//!   than the leaders it spawned, which are never escapees. As subreaper, the supervisor
//!   adopts every process whose parent died, so a process of the instance whose ancestors
//!   did not all survive hangs below such an orphan. Only orphans carrying the instance's
//!   marker (or whose environment cannot be read) are walked. Orphans are usually none; the
//!   registry reads each one's marker once and forgets it when it reaps it (a child's pid
//!   cannot be reused before its parent reaps it; a mark read while its pid was being reaped
//!   is not kept).
//!
//! Each process costs about two reads (its children, then its stat, which also confirms it
//! was alive while its children were read), plus its environment when it is outside the
//! group. A process that died or moved during a walk had its children adopted elsewhere, so
//! the walk is repeated (a few times at most); a `gone` check that cannot get a complete walk
//! and found nothing alive confirms with a full scan. A `gone` check that finds no orphan of
//! the supervisor may be the instance's (the common case after a crash: one listing of the
//! supervisor's children, no environment read) resolves inline in the reaper; only the
//! others walk and read environments on the blocking pool, as an environment read during
//! `execve` may be retried for up to ~31 ms. A signal runs the same small search inline.
//!
//! What this relies on, beyond the rule that nothing else forks: a marked process has an
//! instance process (or an unreadable orphan) at the top of its chain of ancestors below the
//! supervisor. It would take a process that carries no marker (or another instance's) to
//! re-add this instance's marker for its children, on purpose, to break that. An orphan
//! whose marker was read before it exec'd without one is still walked (its children
//! forked earlier keep the marker), at the cost of one environment read per signal.
//!
//! Kernels without `children` files (`CONFIG_PROC_CHILDREN` unset, which no mainstream
//! distribution does) fall back to the full scan: the stat of every process on the machine
//! and the environment of every descendant of the supervisor. This is logged once.
//!
//! # Cgroups
//!
//! A spec may carry an [`InstanceCgroup`](crate::cgroup::InstanceCgroup): the child then
//! writes itself into it between `fork` and `exec` (before dropping privileges), so the
//! leader and everything it forks are members from their first instruction. With one,
//! `gone` waits for the cgroup to be empty instead of looking for marked processes (which
//! also catches a descendant that cleared its environment and left the group: it is still a
//! descendant, so its death still reaches us), a signal reaches every member outside the
//! group, marked or not, and a SIGKILL of the instance kills the cgroup first
//! (`cgroup.kill`, or freeze and kill), which is enough; a mere sweep of the listed pids
//! (no `cgroup.kill`, no freezer) is followed up as below.
//!
//! # Signals
//!
//! [`Child::signal`] sends once to each process: `kill(-pgid)` reaches the group, including
//! the leader while it is unreaped (a session leader cannot leave its group); escapees are
//! pinned with a pidfd, re-checked for the marker (with a cgroup: for membership), then
//! signalled through the pidfd. The
//! registry lock is held while signalling the group and the leader, so the leader cannot be
//! reaped (and its pid or pgid reused) in between. [`Child::signal_leader`] uses the leader's
//! pidfd (opened right after fork, before any reap was possible); without pidfd support
//! (kernels before 5.3) it falls back to `kill` under the same lock, which is equally safe
//! against reuse, and logs that at debug level.
//!
//! # Dying with the supervisor
//!
//! Children are started by one dedicated, long-lived OS thread (with
//! `clone(CLONE_VM | CLONE_VFORK)`, see `fork.rs`), because `PR_SET_PDEATHSIG` fires when
//! the *thread* that created the child exits (tokio's blocking-pool threads retire when idle).
//! In the child, after switching credentials (which would clear it) the setup sets
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
mod descriptors;
mod error;
mod exec_probe;
mod fork;
mod image;
mod launcher;
pub(crate) mod pidfd;
mod reaper;
mod scan;
mod search;
mod spawn;
mod spec;
mod status;
mod tree;

pub use child::{Child, ChildWatch, OutputPipe};
pub use descriptors::seal_inherited_descriptors;
pub use error::{LauncherError, SignalError, SignalTarget, SpawnError, WaitError};
pub use exec_probe::{run_exec_probe, ExecProbeOutcome};
pub use launcher::Launcher;
pub use nix::sys::signal::Signal;
pub use scan::{find_stale_processes, kill_stale_process, StaleProcess, MARKER_VAR};
pub use spec::{EnvBase, Identity, OutputMode, ProcessSpec};
pub use status::ExitStatus;
pub use tree::{process_tree, TreeProcess, MAX_TREE};

/// Which processes a signal reached, so the caller can log and test what a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalReport {
    /// The leader was signalled (directly or as a member of its group).
    pub leader: bool,
    /// The process group was signalled.
    pub group: bool,
    /// Pids of processes outside the group that were signalled: marked descendants, or,
    /// when the instance has a cgroup, its members.
    pub escapees: Vec<u32>,
    /// The instance's cgroup was killed as a whole (SIGKILL of an instance that has one).
    pub cgroup: bool,
}
