//! Optional cgroup enforcement: each instance in its own cgroup, with a hard memory limit,
//! OOM kills detected, and the whole instance killed at once. Mechanism only: the core
//! decides nothing differently, it just learns `OomKilled` where it used to see SIGKILL.
//!
//! # Where cgroups can be used
//!
//! [`Cgroups::detect`] reads `/proc/self/cgroup` and the mount table to find the
//! supervisor's own cgroup in each hierarchy, then checks that it may create cgroups there.
//! Instances are created under `<own cgroup>/processcontrol-<pid>/` ([`CgroupParent`]). It
//! uses:
//!
//! - **cgroup v2** for membership and kill (`cgroup.kill`, Linux 5.14+; else the v2
//!   freezer). Memory limits too when our cgroup's `cgroup.controllers` offers `memory`
//!   and it can be enabled for our children: the "no internal processes" rule refuses that
//!   (`EBUSY`) when our own cgroup holds processes and is not the root, i.e. when memory was
//!   not delegated to us.
//! - **cgroup v1 memory** for limits and OOM counters where the memory controller is on v1
//!   (hybrid hosts: v2 mounted without controllers, the rest on v1), and also for
//!   membership where there is no v2.
//! - **cgroup v1 freezer**, where there is no v2, to kill race-free.
//!
//! Where none of v2 and v1 memory is usable, detection fails with the reason
//! ([`Unavailable`]); callers log it once and fall back to process groups, markers and /proc
//! sampling, as before.
//!
//! # Joining race-free
//!
//! The spawner writes `0` to every `cgroup.procs` of the instance in the forked child,
//! before `exec` and before dropping privileges (raw `open`/`write`/`close`, nothing
//! allocated). The leader is therefore a member before it runs a single instruction of the
//! program, and every process it forks is born inside: there is no window in which a child
//! could fork outside the cgroup, as there would be if the parent moved it after `fork`.
//!
//! # What the cgroup adds
//!
//! - `gone` also waits for the cgroup to be empty, so a descendant that cleared its
//!   environment *and* left the process group is no longer missed.
//! - `kill_group` kills the cgroup first ([`InstanceCgroup::kill`]), which reaches every
//!   member whatever it did to its session, group or environment, then proceeds as before.
//! - A leader that died of SIGKILL while the cgroup's OOM-kill counter is non-zero is
//!   reported as OOM-killed (the supervise layer maps it to `ExitStatus::OomKilled`).

mod detect;
mod error;
mod instance;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::{access, AccessFlags};

pub use detect::{plan, Hierarchy, Layout, MountTable, RejectReason, Rejected};
pub use error::{CgroupError, MemoryUnavailable, Unavailable};
pub use instance::InstanceCgroup;

use instance::{read, write};

/// Which cgroup version a directory belongs to: their control files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// How an instance's cgroup is killed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMethod {
    /// `cgroup.kill` (v2, Linux 5.14+): the kernel SIGKILLs every member, including one
    /// being forked at that moment.
    CgroupKill,
    /// Freeze (v2 `cgroup.freeze` or the v1 freezer), SIGKILL each member listed in
    /// `cgroup.procs`, thaw: no member can fork in between.
    Freeze,
    /// SIGKILL each member listed, in rounds until none is left. A member forking in a tight
    /// loop could outrun it; only used where neither of the above exists.
    EachPid,
}

/// The cgroup hierarchies this supervisor may create cgroups in.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    /// Whether our v2 cgroup's `cgroup.controllers` offers `memory`.
    v2_memory: bool,
}

impl Cgroups {
    /// Finds where this process may create cgroups, or says why it may not.
    pub fn detect() -> Result<Cgroups, Unavailable> {
        let proc_read = |file: &'static str| {
            fs::read_to_string(file).map_err(|source| Unavailable::Proc { file, source })
        };
        let own = proc_read("/proc/self/cgroup")?;
        let layout = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => plan(&own, MountTable::MountInfo(&text)),
            Err(_) => plan(&own, MountTable::Mounts(&proc_read("/proc/mounts")?)),
        };
        Self::from_layout(layout)
    }

    /// Checks a planned layout on the filesystem: each directory must exist and be writable
    /// (to create cgroups in it and to move processes below it). Hierarchies that fail are
    /// dropped with their reason; fails when neither v2 nor v1 memory remains.
    pub fn from_layout(mut layout: Layout) -> Result<Cgroups, Unavailable> {
        for (hierarchy, dir) in [
            (Hierarchy::Unified, layout.unified.clone()),
            (Hierarchy::MemoryV1, layout.memory_v1.clone()),
            (Hierarchy::FreezerV1, layout.freezer_v1.clone()),
        ] {
            let Some(dir) = dir else { continue };
            if !dir.is_dir() {
                layout.reject(hierarchy, RejectReason::Missing(dir));
                continue;
            }
            let writable = |p: &Path| access(p, AccessFlags::W_OK).is_ok();
            if !writable(&dir) || !writable(&dir.join("cgroup.procs")) {
                layout.reject(hierarchy, RejectReason::NotWritable(dir));
            }
        }
        if !layout.is_usable() {
            return Err(Unavailable::NoHierarchy {
                rejected: layout.rejected,
            });
        }
        let v2_memory = layout.unified.as_ref().is_some_and(|dir| {
            read(&dir.join("cgroup.controllers"))
                .is_ok_and(|text| text.split_whitespace().any(|c| c == "memory"))
        });
        Ok(Cgroups { layout, v2_memory })
    }

    /// The directories in use and the hierarchies left out.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Creates `processcontrol-<pid>` under our cgroup in each hierarchy in use, after
    /// removing the empty ones left by earlier supervisors that no longer run.
    pub fn create_parent(&self) -> Result<CgroupParent, CgroupError> {
        self.remove_stale();
        self.create_parent_named(&format!("processcontrol-{}", std::process::id()))
    }

    /// Removes `processcontrol-<pid>` cgroups of supervisors that are gone (no `/proc/<pid>`),
    /// first killing whatever still runs in them: a supervisor that was SIGKILLed leaves its
    /// instances' descendants running there (the parent-death signal reaches only the
    /// leaders). Returns the directories removed, and the number of processes killed, so the
    /// caller can say what a dead predecessor left. Live supervisors' cgroups are not touched.
    pub fn remove_stale(&self) -> StaleCgroups {
        let own = [
            &self.layout.unified,
            &self.layout.memory_v1,
            &self.layout.freezer_v1,
        ];
        let mut report = StaleCgroups::default();
        for dir in own.into_iter().flatten() {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("processcontrol-"))
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                if Path::new("/proc").join(pid).exists() {
                    continue;
                }
                let path = entry.path();
                let children: Vec<PathBuf> = fs::read_dir(&path)
                    .map(|d| {
                        d.flatten()
                            .filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|c| c.path())
                            .collect()
                    })
                    .unwrap_or_default();
                for child in children.iter().chain(std::iter::once(&path)) {
                    report.killed += kill_members(child);
                }
                // Killed members leave the cgroup once they have exited: a few tries.
                for attempt in 0..50 {
                    let mut left = false;
                    for child in &children {
                        left |= fs::remove_dir(child).is_err() && child.exists();
                    }
                    if !left && fs::remove_dir(&path).is_ok() {
                        tracing::warn!(
                            dir = %path.display(),
                            "removed the cgroup of a supervisor that died (pid {pid})"
                        );
                        report.removed.push(path.clone());
                        break;
                    }
                    if attempt == 49 {
                        tracing::warn!(dir = %path.display(), "cannot remove a dead supervisor's cgroup");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        report
    }

    /// Creates the parent cgroup with a given name (sanitised to one path component), e.g.
    /// for several independent sets of instances in one process. A leftover empty cgroup
    /// of that name is reused; one still in use is an error.
    pub fn create_parent_named(&self, name: &str) -> Result<CgroupParent, CgroupError> {
        let name = sanitize(name);
        let mut created = Created::default();
        let unified = match &self.layout.unified {
            Some(own) => Some(created.make(own.join(&name))?),
            None => None,
        };
        // Where there is no v2, the memory hierarchy also carries membership.
        let memory_v1 = match &self.layout.memory_v1 {
            Some(own) => Some(created.make(own.join(&name))?),
            None => None,
        };
        let freezer_v1 = match (&unified, &self.layout.freezer_v1) {
            (None, Some(own)) => Some(created.make(own.join(&name))?),
            _ => None,
        };
        let memory = match (&self.layout.unified, &unified) {
            (Some(own), Some(parent)) if self.v2_memory => {
                enable_v2_memory(own, parent).map(|()| Version::V2)
            }
            _ if memory_v1.is_some() => Ok(Version::V1),
            _ => Err(MemoryUnavailable::NoController),
        };
        created.keep();
        Ok(CgroupParent {
            unified,
            memory_v1,
            freezer_v1,
            memory,
            memory_warned: AtomicBool::new(false),
        })
    }
}

/// Enables the memory controller for the children of `parent` (and of `own`, if needed).
fn enable_v2_memory(own: &Path, parent: &Path) -> Result<(), MemoryUnavailable> {
    let enable = |dir: &Path| {
        let path = dir.join("cgroup.subtree_control");
        let enabled = read(&path).is_ok_and(|text| text.split_whitespace().any(|c| c == "memory"));
        if enabled {
            return Ok(());
        }
        write(&path, "+memory").map_err(|e| MemoryUnavailable::NotDelegated {
            path: path.clone(),
            source: match e {
                CgroupError::Write { source, .. } => source,
                other => io::Error::other(other.to_string()),
            },
        })
    };
    enable(own)?;
    enable(parent)
}

/// Keeps a cgroup name to one harmless path component.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if out.is_empty() || out == "." || out == ".." {
        out.insert(0, '_');
    }
    out
}

/// Directories created so far by one operation, removed again if it fails half-way.
#[derive(Default)]
struct Created(Vec<PathBuf>);

impl Created {
    /// Creates `path`; a leftover empty cgroup of that name is removed and created afresh
    /// (so no stale limit survives), one still in use is [`CgroupError::InUse`].
    fn make(&mut self, path: PathBuf) -> Result<PathBuf, CgroupError> {
        let create = |path: &Path| fs::create_dir(path);
        match create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if fs::remove_dir(&path).is_err() {
                    return Err(CgroupError::InUse(path));
                }
                create(&path).map_err(|source| CgroupError::Create {
                    path: path.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(CgroupError::Create { path, source }),
        }
        self.0.push(path.clone());
        Ok(path)
    }

    /// The operation succeeded: the directories stay.
    fn keep(&mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// What [`Cgroups::remove_stale`] found of dead supervisors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleCgroups {
    /// Their cgroup directories, now removed.
    pub removed: Vec<PathBuf>,
    /// Processes that were still running in them and were killed.
    pub killed: usize,
}

/// SIGKILLs every process listed in `dir/cgroup.procs` (`cgroup.kill` first where v2 has
/// it); returns how many were listed.
fn kill_members(dir: &Path) -> usize {
    let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    if pids.is_empty() {
        return 0;
    }
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids.len()
}

/// `processcontrol-<pid>` in each hierarchy in use: the parent of every instance cgroup of
/// this supervisor. Dropping it removes the instance cgroups that are empty, then itself if
/// it is empty (a cgroup with processes cannot be removed, and is left as is).
#[derive(Debug)]
pub struct CgroupParent {
    unified: Option<PathBuf>,
    memory_v1: Option<PathBuf>,
    freezer_v1: Option<PathBuf>,
    /// Where instances' memory files are, or why they have none.
    memory: Result<Version, MemoryUnavailable>,
    /// Set once the missing memory controller has been reported.
    memory_warned: AtomicBool,
}

impl CgroupParent {
    /// The parent's directories, one per hierarchy in use (v2 first).
    pub fn dirs(&self) -> Vec<&Path> {
        [&self.unified, &self.memory_v1, &self.freezer_v1]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }

    /// Whether instances can get a hard memory limit, and why not.
    pub fn memory_limits(&self) -> Result<(), &MemoryUnavailable> {
        self.memory.as_ref().map(|_| ())
    }

    /// Creates the cgroup `name` (sanitised to one path component) for one instance, with a
    /// hard memory limit of `memory_max` bytes when given. Where no memory controller is in
    /// reach the cgroup is created without the limit, and the reason is logged once.
    pub fn create(
        &self,
        name: &str,
        memory_max: Option<u64>,
    ) -> Result<InstanceCgroup, CgroupError> {
        let name = sanitize(name);
        let mut created = Created::default();
        let unified = match &self.unified {
            Some(parent) => Some(created.make(parent.join(&name))?),
            None => None,
        };
        let memory_v1 = match &self.memory_v1 {
            Some(parent) => Some(created.make(parent.join(&name))?),
            None => None,
        };
        let freezer_v1 = match &self.freezer_v1 {
            Some(parent) => Some(created.make(parent.join(&name))?),
            None => None,
        };
        let (primary, primary_version) = match (&unified, &memory_v1) {
            (Some(dir), _) => (dir.clone(), Version::V2),
            (None, Some(dir)) => (dir.clone(), Version::V1),
            // Cgroups::from_layout never lets this happen; refuse rather than panic.
            (None, None) => {
                return Err(CgroupError::Create {
                    path: PathBuf::from(name),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
        };
        let memory = match self.memory {
            Ok(Version::V2) => unified.clone().map(|d| (d, Version::V2)),
            Ok(Version::V1) => memory_v1.clone().map(|d| (d, Version::V1)),
            Err(_) => None,
        };
        let instance = InstanceCgroup {
            primary,
            primary_version,
            memory,
            freezer_v1: freezer_v1.clone(),
            dirs: [unified, memory_v1, freezer_v1]
                .into_iter()
                .flatten()
                .collect(),
        };
        if let Some(bytes) = memory_max {
            match &self.memory {
                Ok(_) => instance.set_memory_max(bytes)?,
                Err(reason) => {
                    if !self.memory_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            %reason,
                            "memory limits are not enforced: instances get a cgroup without one"
                        );
                    }
                }
            }
        }
        created.keep();
        Ok(instance)
    }

    /// Removes every empty instance cgroup, then the parent if it is empty; cgroups that
    /// still hold processes are left. Returns whether the parent is gone everywhere.
    pub fn remove_empty(&self) -> bool {
        let mut all = true;
        for dir in self.dirs() {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
            }
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::debug!(dir = %dir.display(), %error, "cgroup left in place");
                    all = false;
                }
            }
        }
        all
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        self.remove_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_harmless_component() {
        assert_eq!(sanitize("web.1-3"), "web.1-3");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(".."), "_..");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 200);
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(instance::keyed(events, "oom_kill"), Some(1));
        assert_eq!(instance::keyed(events, "oom"), Some(1));
        assert_eq!(instance::keyed(events, "missing"), None);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(instance::keyed(v1, "oom_kill"), Some(3));
    }

    #[test]
    fn unusable_layout_says_why() {
        let layout = plan("0::/\n", MountTable::Mounts(""));
        let error = Cgroups::from_layout(layout).expect_err("nothing mounted");
        assert_eq!(
            error.to_string(),
            "no usable cgroup hierarchy (cgroup v2: not mounted; cgroup v1 memory: this \
             process belongs to no cgroup of it; cgroup v1 freezer: this process belongs to \
             no cgroup of it)"
        );
        let missing = Layout {
            unified: Some(PathBuf::from("/nonexistent/cgroup")),
            ..Layout::default()
        };
        match Cgroups::from_layout(missing) {
            Err(Unavailable::NoHierarchy { rejected }) => assert_eq!(
                rejected[0].reason,
                RejectReason::Missing(PathBuf::from("/nonexistent/cgroup"))
            ),
            other => panic!("{other:?}"),
        }
    }
}
