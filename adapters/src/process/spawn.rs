//! The spawner: one long-lived OS thread that starts every child.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process;
//! tokio's blocking pool retires idle threads, which would kill their children. A dedicated
//! thread that lives as long as the launcher makes the signal mean "the supervisor died".
//!
//! How the child itself is created and set up is in [`super::fork`].

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::{self, Gid, Group, Pid, Uid, User};
use tokio::sync::{oneshot, watch};

use super::error::SpawnError;
use super::fork::{self, ChildStack, Credentials, Setup};
use super::image::Image;
use super::reaper::{Entry, Fate, Shared};
use super::spec::{Identity, OutputMode, ProcessSpec};

/// One spawn order sent to the spawner thread.
pub(crate) struct Request {
    pub(crate) spec: ProcessSpec,
    pub(crate) reply: oneshot::Sender<Result<Spawned, SpawnError>>,
}

/// A registered, running instance, before its pipes are handed to tokio.
pub(crate) struct Spawned {
    pub(crate) id: u64,
    pub(crate) pid: Pid,
    pub(crate) marker: Arc<str>,
    pub(crate) has_pidfd: bool,
    pub(crate) stdout: Option<OwnedFd>,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) fate: watch::Receiver<Fate>,
}

/// Starts the spawner thread. It ends when every sender is dropped (the launcher is gone);
/// its children then receive their parent-death SIGKILL.
pub(crate) fn start_thread(shared: Arc<Shared>) -> io::Result<mpsc::Sender<Request>> {
    // Every child's standard input, and its output when not piped: opened once.
    let null = OwnedFd::from(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    );
    let mut stack = ChildStack::new()?;
    let (tx, rx) = mpsc::channel::<Request>();
    thread::Builder::new()
        .name("pc-spawner".into())
        .spawn(move || {
            for request in rx {
                let result = spawn_one(&shared, &mut stack, &null, &request.spec);
                if let Err(Ok(abandoned)) = request.reply.send(result) {
                    // The caller stopped waiting: nobody could ever stop this instance, so
                    // it is killed rather than left running unsupervised. It is still reaped.
                    tracing::debug!(pid = abandoned.pid.as_raw(), "spawn abandoned; killing");
                    let _ = shared.signal_instance(abandoned.id, Signal::SIGKILL);
                }
            }
        })?;
    Ok(tx)
}

fn lookup_error(what: String) -> impl FnOnce(nix::errno::Errno) -> SpawnError {
    move |source| SpawnError::IdentityLookup { what, source }
}

/// Resolves the spec's user and group into numeric credentials.
fn resolve_credentials(
    user: Option<&Identity>,
    group: Option<&Identity>,
) -> Result<Option<Credentials>, SpawnError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let euid = unistd::geteuid();
    if !euid.is_root() {
        return Err(SpawnError::NotRoot {
            euid: euid.as_raw(),
        });
    }
    // (uid, name for supplementary groups, primary gid)
    let account: Option<(Uid, Option<String>, Gid)> = match user {
        None => None,
        Some(Identity::Name(name)) => {
            let found = User::from_name(name).map_err(lookup_error(format!("user {name:?}")))?;
            let found = found.ok_or_else(|| SpawnError::UnknownUser(name.clone()))?;
            Some((found.uid, Some(found.name), found.gid))
        }
        Some(Identity::Id(id)) => {
            let uid = Uid::from_raw(*id);
            match User::from_uid(uid).map_err(lookup_error(format!("uid {id}")))? {
                Some(found) => Some((uid, Some(found.name), found.gid)),
                // An id without a database entry: its group defaults to the same number.
                None => Some((uid, None, Gid::from_raw(*id))),
            }
        }
    };
    let explicit_gid = match group {
        None => None,
        Some(Identity::Name(name)) => {
            let found = Group::from_name(name).map_err(lookup_error(format!("group {name:?}")))?;
            Some(
                found
                    .ok_or_else(|| SpawnError::UnknownGroup(name.clone()))?
                    .gid,
            )
        }
        Some(Identity::Id(id)) => Some(Gid::from_raw(*id)),
    };
    let gid = explicit_gid
        .or(account.as_ref().map(|(_, _, primary)| *primary))
        .unwrap_or_else(unistd::getegid);
    let groups = match account.as_ref().and_then(|(_, name, _)| name.as_ref()) {
        Some(name) => {
            let cname = CString::new(name.as_bytes())
                .map_err(|_| SpawnError::InteriorNul { what: "user name" })?;
            unistd::getgrouplist(&cname, gid)
                .map_err(lookup_error(format!("groups of {name:?}")))?
        }
        None => vec![gid],
    };
    Ok(Some(Credentials {
        uid: account.map(|(uid, _, _)| uid),
        gid,
        groups,
    }))
}

/// Checks the working directory before forking, so a bad one is reported as such.
fn check_cwd(cwd: &Path) -> Result<CString, SpawnError> {
    let bad = |source| SpawnError::BadCwd {
        cwd: cwd.to_path_buf(),
        source,
    };
    let meta = fs::metadata(cwd).map_err(bad)?;
    if !meta.is_dir() {
        return Err(bad(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    CString::new(cwd.as_os_str().as_bytes()).map_err(|_| SpawnError::InteriorNul { what: "cwd" })
}

/// The pipes of a child's output: the write ends, which only the child keeps (close-on-exec
/// here; `dup2` in the child clears that), and the read ends for the capture. A stream that
/// is not piped goes to the spawner's one `/dev/null` or to the supervisor's own descriptor,
/// borrowed rather than duplicated.
struct Stdio {
    out_write: Option<OwnedFd>,
    err_write: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    /// The child's stderr is its stdout (`2>&1`).
    err_to_out: bool,
}

impl Stdio {
    fn new(spec: &ProcessSpec) -> io::Result<Self> {
        let stream = |mode| -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
            match mode {
                OutputMode::Pipe => {
                    let (read, write) = unistd::pipe2(OFlag::O_CLOEXEC)?;
                    Ok((Some(write), Some(read)))
                }
                OutputMode::Null
                | OutputMode::Stdout
                | OutputMode::Inherit
                | OutputMode::InheritStderr => Ok((None, None)),
            }
        };
        let (out_write, stdout) = stream(spec.stdout)?;
        let (err_write, stderr) = stream(spec.stderr)?;
        Ok(Stdio {
            out_write,
            err_write,
            stdout,
            stderr,
            err_to_out: spec.stderr == OutputMode::Stdout,
        })
    }

    /// What the child's fds 0, 1 and 2 become.
    fn child<'a>(&'a self, spec: &ProcessSpec, null: &'a OwnedFd) -> [BorrowedFd<'a>; 3] {
        let stream = |mode, pipe: &'a Option<OwnedFd>, own: i32| match (mode, pipe) {
            (_, Some(pipe)) => pipe.as_fd(),
            // SAFETY: the supervisor's own standard descriptor, open for its whole life (it
            // opens /dev/null on any of 0..=2 found closed at start, and never closes them).
            (OutputMode::Inherit, None) => unsafe { BorrowedFd::borrow_raw(own) },
            // SAFETY: as above.
            (OutputMode::InheritStderr, None) => unsafe {
                BorrowedFd::borrow_raw(libc::STDERR_FILENO)
            },
            (_, None) => null.as_fd(),
        };
        let out = stream(spec.stdout, &self.out_write, libc::STDOUT_FILENO);
        let err = if self.err_to_out {
            out
        } else {
            stream(spec.stderr, &self.err_write, libc::STDERR_FILENO)
        };
        [null.as_fd(), out, err]
    }
}

/// Starts and registers one instance. Runs on the spawner thread only.
fn spawn_one(
    shared: &Shared,
    stack: &mut ChildStack,
    null: &OwnedFd,
    spec: &ProcessSpec,
) -> Result<Spawned, SpawnError> {
    let credentials = resolve_credentials(spec.user.as_ref(), spec.group.as_ref())?;
    let cwd = spec.cwd.as_deref().map(check_cwd).transpose()?;
    let cgroup_procs = match &spec.cgroup {
        Some(cgroup) => cgroup
            .procs_files()
            .into_iter()
            .map(|path| CString::new(path.as_os_str().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SpawnError::InteriorNul {
                what: "cgroup path",
            })?,
        None => Vec::new(),
    };
    let (id, marker) = shared.next_marker();
    let image = Image::build(spec, &marker)?;
    let setup = Setup {
        cgroup_procs,
        credentials,
        cwd,
        parent: shared.supervisor_pid,
    };
    let stdio = Stdio::new(spec).map_err(SpawnError::Pipe)?;

    // The lock is held from the clone to registration, and the reaper only calls waitpid
    // with it held: the child cannot be reaped before its waiter exists.
    let mut reg = shared.lock();
    if reg.stopped {
        return Err(SpawnError::LauncherStopped);
    }
    let pid = match fork::start(stack, &image, &stdio.child(spec, null), &setup) {
        Ok(pid) => pid,
        // The child has exited with 127 (or never existed): the reaper collects it, no
        // waiter needed.
        Err((_, errno)) => {
            return Err(SpawnError::Exec {
                program: spec.program.clone(),
                source: io::Error::from_raw_os_error(errno),
            })
        }
    };
    // Unreaped (we hold the lock), so this pidfd names exactly our child.
    let pidfd = match super::pidfd::open(pid) {
        Ok(fd) => Some(fd),
        Err(error) => {
            tracing::debug!(%error, "pidfd_open unavailable; signalling the leader by pid under the registry lock");
            None
        }
    };
    let has_pidfd = pidfd.is_some();
    let (fate_tx, fate) = watch::channel(Fate::default());
    reg.leaders.insert(pid.as_raw(), id);
    reg.instances.insert(
        id,
        Entry {
            leader: pid,
            marker: marker.clone(),
            pidfd,
            cgroup: spec.cgroup.clone(),
            leader_reaped: false,
            group_empty: false,
            fate: fate_tx,
        },
    );
    drop(reg);
    tracing::debug!(pid = pid.as_raw(), %marker, has_pidfd, program = ?spec.program, "spawned");

    Ok(Spawned {
        id,
        pid,
        marker,
        has_pidfd,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
        fate,
    })
}
