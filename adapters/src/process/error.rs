//! Errors and outcomes of the process adapter, all values: nothing here panics on bad input.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::signal::Signal;

/// Why a [`Launcher`](super::Launcher) could not be created.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// The reaper is a tokio task, so the launcher must be created inside a tokio runtime.
    #[error("Launcher::new must be called from inside a tokio runtime")]
    NoRuntime,
    /// Another launcher already reaps this process's children; a second `waitpid(-1)` loop
    /// would steal the first one's exit statuses.
    #[error("a Launcher already exists in this process")]
    AlreadyRunning,
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed, so double-forked daemons would escape to init.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(#[source] Errno),
    /// The SIGCHLD listener that drives the reaper could not be installed.
    #[error("cannot listen for SIGCHLD: {0}")]
    Sigchld(#[source] io::Error),
    /// The long-lived spawner thread could not be started.
    #[error("cannot start the spawner thread: {0}")]
    SpawnerThread(#[source] io::Error),
}

/// Why a program could not be started. No process of the instance is left running.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The child could not become the program: `execve` or the setup before it (joining its
    /// cgroup, credentials, chdir, setsid) failed. Carries the OS error the child reported
    /// through its close-on-exec pipe, e.g. `NotFound` for a missing program or
    /// `PermissionDenied` for a file that is not executable (both found before forking,
    /// when the program is looked up in `PATH`).
    #[error("cannot start {program:?}: {source}")]
    Exec {
        /// The program as given in the spec.
        program: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The working directory does not exist or is not a directory (checked before forking,
    /// so that this common mistake is named as such rather than as a bare `ENOENT`).
    #[error("working directory {cwd:?} is unusable: {source}")]
    BadCwd {
        /// The directory as given in the spec.
        cwd: PathBuf,
        /// Why it is unusable.
        #[source]
        source: io::Error,
    },
    /// The named user does not exist in the user database.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// The named group does not exist in the group database.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// The user or group database could not be read.
    #[error("cannot look up {what}: {source}")]
    IdentityLookup {
        /// Which account was being looked up.
        what: String,
        /// The error from the lookup.
        #[source]
        source: Errno,
    },
    /// A user or group was requested but the supervisor is not root, so it cannot switch.
    #[error("running as another user or group needs root, but the supervisor's euid is {euid}")]
    NotRoot {
        /// The supervisor's effective uid.
        euid: u32,
    },
    /// A path in the spec contains a NUL byte, which no system call can carry.
    #[error("{what} contains a NUL byte")]
    InteriorNul {
        /// Which field.
        what: &'static str,
    },
    /// `spawn` was polled outside a tokio runtime, where the output pipes cannot be
    /// registered with a reactor.
    #[error("Launcher::spawn must be awaited inside a tokio runtime")]
    NoRuntime,
    /// The launcher's spawner thread or reaper has stopped (its runtime shut down), so a new
    /// child could never be reaped.
    #[error("the launcher has stopped")]
    LauncherStopped,
    /// The output pipes could not be handed to tokio. The child was killed.
    #[error("cannot set up the output pipes: {0}")]
    Pipe(#[source] io::Error),
}

/// Why the outcome of a child can never be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The reaper task ended (its tokio runtime shut down or the launcher was dropped), so no
    /// exit status or emptiness will ever be reported.
    #[error("the reaper has stopped")]
    ReaperStopped,
}

/// Which process or processes a failed signal was aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalTarget {
    /// The instance's first process, through its pidfd or pid.
    Leader,
    /// The instance's process group.
    Group,
    /// A marked descendant that left the process group, by pid.
    Escapee(u32),
    /// The instance's cgroup, killed as a whole.
    Cgroup,
}

impl fmt::Display for SignalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalTarget::Leader => f.write_str("the leader"),
            SignalTarget::Group => f.write_str("the process group"),
            SignalTarget::Escapee(pid) => write!(f, "escaped descendant {pid}"),
            SignalTarget::Cgroup => f.write_str("the instance's cgroup"),
        }
    }
}

/// A signal the kernel refused for a reason other than "no such process" (which only means
/// the target is already dead and is not an error for a supervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot send {signal} to {target}: {source}")]
pub struct SignalError {
    /// The signal that was being sent.
    pub signal: Signal,
    /// Who it was meant for.
    pub target: SignalTarget,
    /// The kernel's answer, typically `EPERM`.
    #[source]
    pub source: Errno,
}
