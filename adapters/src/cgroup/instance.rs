//! One instance's cgroup: membership, OOM counters, kill and removal.

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::CgroupError;
use super::{KillMethod, Version};

/// How long a kill waits for a freeze to take effect before killing anyway (and then
/// sweeping in rounds, as if there were no freezer).
const FREEZE_WAIT: Duration = Duration::from_millis(100);
/// Sweeps of [`KillMethod::EachPid`]: members listed are killed, then the list is re-read.
const KILL_ROUNDS: u32 = 20;
/// Pause between sweeps: killed members leave `cgroup.procs` only once they have exited.
const KILL_PAUSE: Duration = Duration::from_millis(2);

/// Reads a small control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a control file in one `write`, which is how the kernel expects one command.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let failed = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(value.as_bytes()).map_err(failed)
}

/// The value of `key` in a flat-keyed file (`memory.events`, `cgroup.events`,
/// `memory.oom_control`): lines of `key value`.
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn invalid(path: &Path, what: &str) -> CgroupError {
    CgroupError::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, what.to_owned()),
    }
}

/// The cgroup of one instance: a directory in each hierarchy in use (one on a pure v2 or
/// pure v1 host; v2 plus v1 memory, or v1 memory plus v1 freezer, on mixed ones).
///
/// Plain data (paths) so that it can travel inside a process spec to the spawner, which
/// writes the child into every directory between `fork` and `exec`. Everything the child
/// forks afterwards stays in it whatever it does to its environment, session or process
/// group: that is what makes [`InstanceCgroup::kill`] reach double-forked daemons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCgroup {
    /// Where membership is read and, on v2, where `cgroup.kill` and the freezer live.
    pub(crate) primary: PathBuf,
    pub(crate) primary_version: Version,
    /// Where the `memory.*` files are, when a memory controller is in reach.
    pub(crate) memory: Option<(PathBuf, Version)>,
    /// The v1 freezer directory, used to kill where v2 is absent.
    pub(crate) freezer_v1: Option<PathBuf>,
    /// Every directory, primary first: the child joins all of them, and all are removed.
    pub(crate) dirs: Vec<PathBuf>,
}

impl InstanceCgroup {
    /// The directory whose `cgroup.procs` lists the members (v2 if there is one).
    pub fn path(&self) -> &Path {
        &self.primary
    }

    /// Every directory of the instance, one per hierarchy in use.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` files a new member must be written to, one per hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Pids of the live members (processes, not threads). Exited members leave the list
    /// when they exit, before they are reaped.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let path = self.primary.join("cgroup.procs");
        read(&path)?
            .lines()
            .map(|line| {
                line.trim()
                    .parse()
                    .map_err(|_| invalid(&path, "a pid per line"))
            })
            .collect()
    }

    /// Whether `pid` is a live member, e.g. a grandchild that left the process group.
    pub fn contains(&self, pid: u32) -> Result<bool, CgroupError> {
        Ok(self.pids()?.contains(&pid))
    }

    /// Whether any process is left. On v2 this is `cgroup.events`' `populated`, which the
    /// kernel keeps exact; on v1 the member list is read.
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        match self.primary_version {
            Version::V2 => {
                let path = self.primary.join("cgroup.events");
                keyed(&read(&path)?, "populated")
                    .map(|n| n > 0)
                    .ok_or_else(|| invalid(&path, "a `populated` line"))
            }
            Version::V1 => Ok(!self.pids()?.is_empty()),
        }
    }

    /// How many processes of the instance the OOM killer has killed since the cgroup was
    /// created; `None` when no memory controller is in reach.
    ///
    /// v2: `oom_kill` of `memory.events`. v1: `oom_kill` of `memory.oom_control` (Linux
    /// 4.13+); older kernels lack it, and `memory.failcnt` (how often the limit was hit) is
    /// returned instead, a weaker sign that a SIGKILL came from the OOM killer.
    pub fn oom_kills(&self) -> Result<Option<u64>, CgroupError> {
        let Some((dir, version)) = &self.memory else {
            return Ok(None);
        };
        match version {
            Version::V2 => {
                let path = dir.join("memory.events");
                keyed(&read(&path)?, "oom_kill")
                    .map(Some)
                    .ok_or_else(|| invalid(&path, "an `oom_kill` line"))
            }
            Version::V1 => {
                let path = dir.join("memory.oom_control");
                if let Some(kills) = keyed(&read(&path)?, "oom_kill") {
                    return Ok(Some(kills));
                }
                let path = dir.join("memory.failcnt");
                read(&path)?
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(&path, "a count"))
            }
        }
    }

    /// The hard memory limit in bytes; `None` when unlimited or no memory controller is in
    /// reach.
    pub fn memory_limit(&self) -> Result<Option<u64>, CgroupError> {
        let Some((dir, version)) = &self.memory else {
            return Ok(None);
        };
        let path = match version {
            Version::V2 => dir.join("memory.max"),
            Version::V1 => dir.join("memory.limit_in_bytes"),
        };
        let text = read(&path)?;
        let text = text.trim();
        if text == "max" {
            return Ok(None);
        }
        let bytes: u64 = text.parse().map_err(|_| invalid(&path, "bytes or max"))?;
        // v1 spells "unlimited" as the largest page-aligned i64.
        Ok((bytes < ((i64::MAX as u64) & !0xfff)).then_some(bytes))
    }

    /// Applies the hard memory limit. v2: `memory.max`, plus `memory.swap.max = 0` so the
    /// limit is not stretched by swapping, and `memory.oom.group = 1` so an OOM kill takes
    /// the whole instance rather than leaving it half dead. v1: `memory.limit_in_bytes`,
    /// plus the same value as `memory.memsw.limit_in_bytes` (memory + swap) when swap is
    /// accounted.
    pub(crate) fn set_memory_max(&self, bytes: u64) -> Result<(), CgroupError> {
        let Some((dir, version)) = &self.memory else {
            return Ok(());
        };
        let value = bytes.to_string();
        let optional = |file: &str, value: &str| {
            let path = dir.join(file);
            if path.exists() {
                write(&path, value)
            } else {
                Ok(())
            }
        };
        match version {
            Version::V2 => {
                write(&dir.join("memory.max"), &value)?;
                optional("memory.swap.max", "0")?;
                optional("memory.oom.group", "1")
            }
            Version::V1 => {
                // The memory limit first: memsw must never be below it.
                write(&dir.join("memory.limit_in_bytes"), &value)?;
                optional("memory.memsw.limit_in_bytes", &value)
            }
        }
    }

    /// The best kill this cgroup offers: `cgroup.kill`, else freeze-and-kill, else a sweep.
    pub fn kill_method(&self) -> KillMethod {
        if self.primary_version == Version::V2 && self.primary.join("cgroup.kill").exists() {
            KillMethod::CgroupKill
        } else if self.freezer().is_some() {
            KillMethod::Freeze
        } else {
            KillMethod::EachPid
        }
    }

    /// SIGKILLs every member at once with the best method, which it returns. Members that
    /// already exited are not errors; a cgroup already removed is empty. Await the
    /// instance's `gone` to know that it worked. May block up to ~150 ms without
    /// `cgroup.kill` (waiting for a freeze, sweeping).
    pub fn kill(&self) -> Result<KillMethod, CgroupError> {
        let method = self.kill_method();
        self.kill_with(method).map(|()| method)
    }

    /// SIGKILLs every member with `method`, for callers (and tests) that want a given one.
    pub fn kill_with(&self, method: KillMethod) -> Result<(), CgroupError> {
        let result = match method {
            KillMethod::CgroupKill => {
                let path = self.primary.join("cgroup.kill");
                if self.primary_version != Version::V2 || !path.exists() {
                    if self.primary.exists() {
                        return Err(CgroupError::KillUnsupported(method));
                    }
                    return Ok(());
                }
                write(&path, "1")
            }
            KillMethod::Freeze => {
                let Some(freezer) = self.freezer() else {
                    return Err(CgroupError::KillUnsupported(method));
                };
                self.freeze_and_kill(&freezer)
            }
            KillMethod::EachPid => self.sweep(),
        };
        match result {
            // Removed meanwhile: the instance was gone, there is nothing to kill.
            Err(CgroupError::Write { source, .. } | CgroupError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Removes every directory of the instance. Directories already gone are fine; one with
    /// processes left fails with `EBUSY`, and the first such error is returned after all
    /// were attempted.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs.iter().rev() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first = first.or(Some(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    }))
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn freezer(&self) -> Option<Freezer> {
        if self.primary_version == Version::V2 && self.primary.join("cgroup.freeze").exists() {
            return Some(Freezer::V2(self.primary.clone()));
        }
        self.freezer_v1.clone().map(Freezer::V1)
    }

    /// Freezes (no member can fork or exit while frozen), kills every listed member, thaws.
    /// If the freeze did not settle in time, sweeps afterwards as if there were no freezer.
    fn freeze_and_kill(&self, freezer: &Freezer) -> Result<(), CgroupError> {
        freezer.set(true)?;
        let deadline = Instant::now() + FREEZE_WAIT;
        let frozen = loop {
            match freezer.is_frozen() {
                Ok(true) => break true,
                Ok(false) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                Ok(false) => break false,
                Err(e) => {
                    let _ = freezer.set(false);
                    return Err(e);
                }
            }
        };
        let killed = self.kill_listed();
        // Thawed in any case: v1 frozen tasks only die once thawed, and a frozen survivor
        // would never exit.
        let thawed = freezer.set(false);
        killed?;
        thawed?;
        if frozen {
            Ok(())
        } else {
            self.sweep()
        }
    }

    /// Kills members in rounds until none is listed (or the rounds run out: a member forking
    /// in a tight loop can outrun this, which is why the freezer and `cgroup.kill` exist).
    fn sweep(&self) -> Result<(), CgroupError> {
        for _ in 0..KILL_ROUNDS {
            if self.pids()?.is_empty() {
                return Ok(());
            }
            self.kill_listed()?;
            thread::sleep(KILL_PAUSE);
        }
        Ok(())
    }

    /// SIGKILLs the listed members. Each pid is pinned with a pidfd, then the list is read
    /// again, and only pinned processes still listed are signalled (through their pidfd):
    /// a pinned process alive at the second read holds its pid, so it is the member listed;
    /// one that died since makes the signal a harmless `ESRCH`. A pid reused between the
    /// first read and the pinning is therefore never hit. All are attempted; the first
    /// refusal is returned.
    fn kill_listed(&self) -> Result<(), CgroupError> {
        let pinned: Vec<(u32, Option<OwnedFd>)> = self
            .pids()?
            .into_iter()
            .filter_map(|pid| {
                let raw = Pid::from_raw(i32::try_from(pid).ok()?);
                match crate::process::pidfd::open(raw) {
                    Ok(fd) => Some((pid, Some(fd))),
                    Err(Errno::ESRCH) => None,
                    // No pidfd support (before Linux 5.3): plain kill, and a pid reused
                    // within microseconds of the second read is the residual risk.
                    Err(_) => Some((pid, None)),
                }
            })
            .collect();
        if pinned.is_empty() {
            return Ok(());
        }
        let listed = self.pids()?;
        let mut first = None;
        for (pid, fd) in pinned {
            if !listed.contains(&pid) {
                continue;
            }
            let result = match &fd {
                Some(fd) => crate::process::pidfd::send_signal(fd.as_fd(), Signal::SIGKILL),
                None => i32::try_from(pid)
                    .map_or(Ok(()), |raw| kill(Pid::from_raw(raw), Signal::SIGKILL)),
            };
            match result {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => first = first.or(Some(CgroupError::Signal { pid, source })),
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A freezer: v2's `cgroup.freeze` in the instance's own directory, or the v1 freezer.
enum Freezer {
    V2(PathBuf),
    V1(PathBuf),
}

impl Freezer {
    fn set(&self, frozen: bool) -> Result<(), CgroupError> {
        match self {
            Freezer::V2(dir) => write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }),
            Freezer::V1(dir) => write(
                &dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        }
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self {
            Freezer::V2(dir) => {
                let path = dir.join("cgroup.events");
                keyed(&read(&path)?, "frozen")
                    .map(|n| n > 0)
                    .ok_or_else(|| invalid(&path, "a `frozen` line"))
            }
            Freezer::V1(dir) => Ok(read(&dir.join("freezer.state"))?.trim() == "FROZEN"),
        }
    }
}
