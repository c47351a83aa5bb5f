//! The launcher: owner of the spawner thread and of the reaper task.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use nix::sys::prctl;
use nix::sys::signal::Signal;
use tokio::net::unix::pipe;
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::child::{Child, ChildWatch};
use super::error::{LauncherError, SpawnError};
use super::reaper::{self, ReaperGuard, Shared};
use super::spawn::{self, Request};
use super::spec::ProcessSpec;

/// Whether a launcher (more precisely, its reaper) exists in this process.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Lets a new launcher be created once the previous reaper has stopped.
pub(crate) fn release_singleton() {
    ACTIVE.store(false, Ordering::SeqCst);
}

/// Starts, and reaps, every child process of the supervisor.
///
/// There must be only one per process, because its reaper calls `waitpid(-1)` and would
/// steal any other waiter's statuses; [`Launcher::new`] refuses to create a second. Clones
/// share the same spawner thread and reaper. Nothing else in the process may spawn children
/// (not `tokio::process`, not `std::process::Command`): route every child, including probe
/// commands, through [`Launcher::spawn`].
///
/// Lifetime: the reaper runs on the tokio runtime that was current at creation and stops
/// with it. When the last clone of the launcher and the last [`Child`] are dropped, the
/// spawner thread ends and, through `PR_SET_PDEATHSIG`, every leader it started is killed.
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    reaper: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reaper's guard stops the registry and releases the singleton when the task is
        // actually dropped; the spawner thread ends when `requests` is dropped right after.
        self.reaper.abort();
    }
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("supervisor_pid", &self.inner.shared.supervisor_pid)
            .finish_non_exhaustive()
    }
}

impl Launcher {
    /// Makes this process a child subreaper, installs the SIGCHLD listener, and starts the
    /// spawner thread and the reaper task, in that order so that no child can exist before
    /// the listener that will reap it.
    ///
    /// Must be called inside the tokio runtime that will live as long as the supervisor.
    pub fn new() -> Result<Self, LauncherError> {
        let handle = Handle::try_current().map_err(|_| LauncherError::NoRuntime)?;
        if ACTIVE
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(LauncherError::AlreadyRunning);
        }
        Self::start(&handle).inspect_err(|_| release_singleton())
    }

    fn start(handle: &Handle) -> Result<Self, LauncherError> {
        // Orphaned descendants (double-forked daemons, children of a dead leader) are
        // reparented to us instead of init: we get their SIGCHLD, reap them, and they
        // remain findable as our descendants.
        prctl::set_child_subreaper(true).map_err(LauncherError::Subreaper)?;
        let sigchld = {
            let _entered = handle.enter();
            signal(SignalKind::child()).map_err(LauncherError::Sigchld)?
        };
        let shared = Arc::new(Shared::new());
        let requests =
            spawn::start_thread(Arc::clone(&shared)).map_err(LauncherError::SpawnerThread)?;
        // The guard is built before the task so that it is dropped (stopping the registry and
        // releasing the singleton) even if the task is aborted before its first poll.
        let guard = ReaperGuard {
            shared: Arc::clone(&shared),
        };
        let reaper = handle.spawn(reaper::run(guard, sigchld)).abort_handle();
        Ok(Launcher {
            inner: Arc::new(Inner {
                shared,
                requests,
                reaper,
            }),
        })
    }

    /// The supervisor's pid, the prefix of every instance marker it hands out.
    pub fn supervisor_pid(&self) -> u32 {
        self.inner.shared.supervisor_pid.as_raw().unsigned_abs()
    }

    /// Starts one instance of `spec` in its own session and process group.
    ///
    /// Returns once the program has been exec'd (or failed to be): an `Err` means no process
    /// of the instance is running. If this future is dropped before it completes, the
    /// instance is killed (nobody could ever stop it) and still reaped.
    pub async fn spawn(&self, spec: ProcessSpec) -> Result<Child, SpawnError> {
        // The pipes must be registered with a reactor, which needs a runtime.
        Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        let (reply, response) = oneshot::channel();
        self.inner
            .requests
            .send(Request { spec, reply })
            .map_err(|_| SpawnError::LauncherStopped)?;
        let spawned = response.await.map_err(|_| SpawnError::LauncherStopped)??;
        let shared = &self.inner.shared;
        let (stdout, stderr) = match (to_pipe(spawned.stdout), to_pipe(spawned.stderr)) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => {
                let _ = shared.signal_instance(spawned.id, Signal::SIGKILL);
                return Err(SpawnError::Pipe(e));
            }
        };
        Ok(Child {
            id: spawned.id,
            pid: spawned.pid,
            marker: spawned.marker,
            has_pidfd: spawned.has_pidfd,
            stdout,
            stderr,
            watch: ChildWatch::new(spawned.pid, spawned.fate),
            launcher: self.clone(),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

fn to_pipe(fd: Option<OwnedFd>) -> std::io::Result<Option<pipe::Receiver>> {
    fd.map(pipe::Receiver::from_owned_fd).transpose()
}
