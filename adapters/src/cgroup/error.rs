//! Why cgroups cannot be used, or an operation on one failed. All values: nothing panics.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use super::detect::Rejected;
use super::KillMethod;

fn list(rejected: &[Rejected]) -> String {
    let mut out = String::new();
    for (i, r) in rejected.iter().enumerate() {
        let _ = write!(out, "{}{r}", if i == 0 { "" } else { "; " });
    }
    out
}

/// Why the supervisor cannot give its instances cgroups on this host. Its message is the
/// reason, logged once by whoever falls back to process groups and markers.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// `/proc/self/cgroup` or the mount table could not be read: not Linux, or no `/proc`.
    #[error("cannot read {file}: {source}")]
    Proc {
        /// The file.
        file: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Neither a cgroup v2 hierarchy nor the v1 memory hierarchy is mounted writable and
    /// reachable from our cgroup: every candidate is listed with the reason it was left out.
    #[error("no usable cgroup hierarchy ({})", list(.rejected))]
    NoHierarchy {
        /// Each hierarchy and why it cannot be used.
        rejected: Vec<Rejected>,
    },
}

/// Why instances cannot get a memory limit even though they get a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum MemoryUnavailable {
    /// No usable hierarchy offers the memory controller (v2 without it in our cgroup's
    /// `cgroup.controllers`, and no v1 memory mount).
    #[error("no usable cgroup hierarchy offers the memory controller")]
    NoController,
    /// cgroup v2 offers memory to our cgroup but it could not be enabled for our children:
    /// typically `EBUSY` because our own cgroup holds processes (the supervisor itself) and
    /// is not the root, which the "no internal processes" rule forbids. Run the supervisor
    /// in a delegated cgroup whose `cgroup.subtree_control` already enables memory.
    #[error("cannot enable the memory controller in {path}: {source}")]
    NotDelegated {
        /// The `cgroup.subtree_control` file that refused.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

/// An operation on a cgroup failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup directory could not be created (permission, or the parent vanished).
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroup of that name already exists and still has processes or child cgroups, so
    /// it is not ours to reuse.
    #[error("cgroup {0} already exists and is in use")]
    InUse(PathBuf),
    /// A control file could not be written: a limit refused, a controller missing, or a
    /// permission lacking.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A control file could not be read, or its content was not what the kernel documents.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The error (`InvalidData` for unexpected content).
        #[source]
        source: io::Error,
    },
    /// A cgroup directory could not be removed: it still has processes or child cgroups.
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The error, typically `EBUSY`.
        #[source]
        source: io::Error,
    },
    /// The kill method asked for is not offered by this cgroup (no `cgroup.kill` before
    /// Linux 5.14, no freezer).
    #[error("{0:?} is not available for this cgroup")]
    KillUnsupported(KillMethod),
    /// The kernel refused to signal a member (other than "already dead").
    #[error("cannot kill process {pid} of the cgroup: {source}")]
    Signal {
        /// The member.
        pid: u32,
        /// The kernel's answer, typically `EPERM`.
        #[source]
        source: Errno,
    },
}

impl CgroupError {
    /// The OS error number behind this error, if any, for callers that report errno values.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Create { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Read { source, .. }
            | CgroupError::Remove { source, .. } => source.raw_os_error(),
            CgroupError::InUse(_) => Some(libc::EBUSY),
            CgroupError::KillUnsupported(_) => Some(libc::ENOTSUP),
            CgroupError::Signal { source, .. } => Some(*source as i32),
        }
    }
}
