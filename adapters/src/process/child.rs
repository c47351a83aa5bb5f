//! The handle of one spawned instance.

use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::error::{SignalError, WaitError};
use super::launcher::Launcher;
use super::reaper::Fate;
use super::status::ExitStatus;
use super::SignalReport;

/// The read end of a child's standard output or error: a tokio `AsyncRead`, so the log
/// module can read it line by line without a thread per stream.
pub type OutputPipe = pipe::Receiver;

/// A cloneable, `'static` view of an instance's two outcomes, for tasks that wait on them
/// without owning the [`Child`] (e.g. one task awaits the exit while another signals).
#[derive(Debug, Clone)]
pub struct ChildWatch {
    pid: Pid,
    fate: watch::Receiver<Fate>,
}

impl ChildWatch {
    pub(crate) fn new(pid: Pid, fate: watch::Receiver<Fate>) -> Self {
        ChildWatch { pid, fate }
    }

    /// The leader's pid, so a waiter can log which process it was watching.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Resolves when the leader has been reaped, with how it ended. Other processes of the
    /// instance may still be running: see [`ChildWatch::gone`]. Cancel-safe.
    pub async fn exited(&self) -> Result<ExitStatus, WaitError> {
        let mut rx = self.fate.clone();
        let fate = rx
            .wait_for(|fate| fate.exit.is_some())
            .await
            .map_err(|_| WaitError::ReaperStopped)?;
        fate.exit.ok_or(WaitError::ReaperStopped)
    }

    /// Resolves when no process of the instance remains: leader reaped, process group empty,
    /// and no marked descendant alive. Only then may a replacement safely start (ports and
    /// lock files are free). Cancel-safe.
    pub async fn gone(&self) -> Result<(), WaitError> {
        let mut rx = self.fate.clone();
        rx.wait_for(|fate| fate.gone)
            .await
            .map(|_| ())
            .map_err(|_| WaitError::ReaperStopped)
    }

    /// The leader's status if it has already been reaped, for synchronous callers.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.fate.borrow().exit
    }

    /// Whether [`ChildWatch::gone`] has already resolved.
    pub fn is_gone(&self) -> bool {
        self.fate.borrow().gone
    }
}

/// One spawned instance: its leader (the exec'd program) and everything it starts.
///
/// Dropping the handle does not stop the instance (the adapter never decides that); the
/// instance stays registered, is reaped, and is still killed if the supervisor dies.
#[derive(Debug)]
pub struct Child {
    pub(super) id: u64,
    pub(super) pid: Pid,
    pub(super) marker: Arc<str>,
    pub(super) has_pidfd: bool,
    pub(super) stdout: Option<OutputPipe>,
    pub(super) stderr: Option<OutputPipe>,
    pub(super) watch: ChildWatch,
    pub(super) launcher: Launcher,
}

impl Child {
    /// The leader's pid, for logs, status pages and pid files.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// The instance's process group (and session) id; equal to the leader's pid because the
    /// leader called `setsid` before exec.
    pub fn pgid(&self) -> u32 {
        self.pid()
    }

    /// The value of `PROCESSCONTROL_INSTANCE` in the environment of every process of this
    /// instance, so other tools can recognise them.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Whether the leader is signalled through a pidfd (kernel 5.3+) rather than by pid.
    pub fn has_pidfd(&self) -> bool {
        self.has_pidfd
    }

    /// Takes the standard output pipe (once), to hand it to the log capture.
    pub fn take_stdout(&mut self) -> Option<OutputPipe> {
        self.stdout.take()
    }

    /// Takes the standard error pipe (once), to hand it to the log capture.
    pub fn take_stderr(&mut self) -> Option<OutputPipe> {
        self.stderr.take()
    }

    /// A cloneable view of the outcomes, for waiting from another task.
    pub fn watch(&self) -> ChildWatch {
        self.watch.clone()
    }

    /// See [`ChildWatch::exited`].
    pub async fn exited(&self) -> Result<ExitStatus, WaitError> {
        self.watch.exited().await
    }

    /// See [`ChildWatch::gone`].
    pub async fn gone(&self) -> Result<(), WaitError> {
        self.watch.gone().await
    }

    /// See [`ChildWatch::exit_status`].
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.watch.exit_status()
    }

    /// See [`ChildWatch::is_gone`].
    pub fn is_gone(&self) -> bool {
        self.watch.is_gone()
    }

    /// Sends `signal` to every process of the instance, each once: the process group (which
    /// contains the leader until it is reaped, since a session leader can leave neither its
    /// session nor its group) and every marked descendant that left the group. This is what a
    /// stop request uses, so helpers that ignore the leader's fate are told too.
    ///
    /// Targets already dead are not errors. All targets are attempted before the first
    /// refusal (e.g. `EPERM`) is returned. An instance that is gone is a no-op. Finding
    /// escapees reads a few `/proc` files per process of the instance (or its cgroup's member
    /// list), plus one listing of the supervisor's own children: short enough to run inline.
    pub fn signal(&self, signal: Signal) -> Result<SignalReport, SignalError> {
        self.launcher.shared().signal_instance(self.id, signal)
    }

    /// Sends `signal` to the leader alone, through its pidfd (immune to pid reuse), e.g. a
    /// reload request meant for the main process only. `Ok(false)` if it has already exited.
    pub fn signal_leader(&self, signal: Signal) -> Result<bool, SignalError> {
        self.launcher.shared().signal_leader(self.id, signal)
    }

    /// SIGKILL to the leader, its group and its marked escapees, rescanning a few times for
    /// escapees forked meanwhile. Await [`Child::gone`] to know that it worked.
    pub fn kill_group(&self) -> Result<SignalReport, SignalError> {
        self.signal(Signal::SIGKILL)
    }

    /// Pids of live marked descendants outside the process group (double-forked daemons,
    /// job-control groups), for diagnostics. Reads `/proc` (the instance's processes only).
    pub fn escapees(&self) -> Vec<u32> {
        self.launcher.shared().escapees(self.id)
    }
}
