//! The spawner: one long-lived OS thread that forks every child.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process;
//! tokio's blocking pool retires idle threads, which would kill their children. A dedicated
//! thread that lives as long as the launcher makes the signal mean "the supervisor died".

use std::ffi::{CStr, CString, OsString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;

use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{self, Gid, Group, Pid, Uid, User};
use tokio::sync::{oneshot, watch};

use super::error::SpawnError;
use super::reaper::{Entry, Shared};
use super::scan::MARKER_VAR;
use super::spec::{EnvBase, Identity, OutputMode, ProcessSpec};
use super::status::ExitStatus;

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
    pub(crate) exit_rx: watch::Receiver<Option<ExitStatus>>,
    pub(crate) gone_rx: watch::Receiver<bool>,
}

/// Starts the spawner thread. It ends when every sender is dropped (the launcher is gone);
/// its children then receive their parent-death SIGKILL.
pub(crate) fn start_thread(shared: Arc<Shared>) -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel::<Request>();
    thread::Builder::new()
        .name("pc-spawner".into())
        .spawn(move || {
            for request in rx {
                let result = spawn_one(&shared, &request.spec);
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

/// Credentials to switch to, resolved before the fork (lookups allocate and read files,
/// which the forked child must not do).
struct Credentials {
    uid: Option<Uid>,
    gid: Gid,
    groups: Vec<Gid>,
}

/// Everything the forked child does before `exec`, prepared so that it allocates nothing.
struct ChildSetup {
    /// `cgroup.procs` of each hierarchy of the instance's cgroup.
    cgroup_procs: Vec<CString>,
    credentials: Option<Credentials>,
    cwd: Option<CString>,
    parent: Pid,
}

impl ChildSetup {
    /// Runs in the forked child. Only async-signal-safe system calls on pre-built data.
    fn apply(&self) -> io::Result<()> {
        // First, while we still have the supervisor's privileges to move ourselves, and
        // before the program can fork: every process of the instance is born inside.
        for procs in &self.cgroup_procs {
            join_cgroup(procs)?;
        }
        if let Some(creds) = &self.credentials {
            unistd::setgroups(&creds.groups)?;
            unistd::setgid(creds.gid)?;
            if let Some(uid) = creds.uid {
                unistd::setuid(uid)?;
            }
        }
        if let Some(cwd) = &self.cwd {
            unistd::chdir(cwd.as_c_str())?;
        }
        // After the credential change, which would clear it.
        prctl::set_pdeathsig(Signal::SIGKILL)?;
        // If the supervisor died before the line above, the signal will never come: we were
        // already reparented, so give up instead of running unsupervised.
        if unistd::getppid() != self.parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Own session and process group: the instance can be signalled as a whole, and a
        // terminal's job control signals never reach it.
        unistd::setsid()?;
        Ok(())
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` ("0" names the
/// writer). Runs in the forked child: raw `open`, `write` and `close` only, which are
/// async-signal-safe, and no allocation (the error is a bare OS error number).
fn join_cgroup(procs: &CStr) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor opened above.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above, which nothing else uses.
    unsafe { libc::close(fd) };
    result
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

fn stdio(mode: OutputMode) -> Stdio {
    match mode {
        OutputMode::Pipe => Stdio::piped(),
        OutputMode::Null => Stdio::null(),
    }
}

/// Forks, execs and registers one instance. Runs on the spawner thread only.
fn spawn_one(shared: &Shared, spec: &ProcessSpec) -> Result<Spawned, SpawnError> {
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

    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    if spec.env_base == EnvBase::Clear {
        command.env_clear();
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    command
        .env(MARKER_VAR, marker.as_ref())
        .stdin(Stdio::null())
        .stdout(stdio(spec.stdout))
        .stderr(stdio(spec.stderr));
    let setup = ChildSetup {
        cgroup_procs,
        credentials,
        cwd,
        parent: shared.supervisor_pid,
    };
    // SAFETY: the closure runs in the forked child of a multi-threaded process, before exec.
    // It only issues async-signal-safe system calls (open, write, close, setgroups, setgid,
    // setuid, chdir, prctl, getppid, setsid) on data prepared before the fork, allocates
    // nothing, takes no lock, and reports failure through std's close-on-exec pipe.
    unsafe {
        command.pre_exec(move || setup.apply());
    }

    // The lock is held from fork to registration, and the reaper only calls waitpid with it
    // held: the child cannot be reaped before its waiter exists, and if exec fails, std's own
    // waitpid on the child cannot be preempted by ours.
    let mut reg = shared.lock();
    if reg.stopped {
        return Err(SpawnError::LauncherStopped);
    }
    let mut child = command.spawn().map_err(|source| SpawnError::Exec {
        program: OsString::from(&spec.program),
        source,
    })?;
    let pid = match i32::try_from(child.id()) {
        Ok(raw) => Pid::from_raw(raw),
        Err(_) => {
            return Err(SpawnError::Exec {
                program: spec.program.clone(),
                source: io::Error::from_raw_os_error(libc::ERANGE),
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
    let (exit_tx, exit_rx) = watch::channel(None);
    let (gone_tx, gone_rx) = watch::channel(false);
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
            exit_tx,
            gone_tx,
        },
    );
    drop(reg);
    tracing::debug!(pid = pid.as_raw(), %marker, has_pidfd, program = ?spec.program, "spawned");

    Ok(Spawned {
        id,
        pid,
        marker,
        has_pidfd,
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        exit_rx,
        gone_rx,
    })
}
