//! Where the supervisor's own cgroups are: parsed from `/proc/self/cgroup` and the mount
//! table, without touching the cgroup filesystems (so it can be tested on fake contents).

use std::fmt;
use std::path::{Path, PathBuf};

/// One cgroup hierarchy this module can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified (v2) hierarchy: membership, `cgroup.kill`, and memory if it is enabled.
    Unified,
    /// The v1 hierarchy holding the memory controller: limits and OOM counters on hosts whose
    /// memory controller is not on v2.
    MemoryV1,
    /// The v1 hierarchy holding the freezer: a race-free kill where v2 is absent.
    FreezerV1,
}

impl fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hierarchy::Unified => "cgroup v2",
            Hierarchy::MemoryV1 => "cgroup v1 memory",
            Hierarchy::FreezerV1 => "cgroup v1 freezer",
        })
    }
}

/// Why one hierarchy cannot be used. A value, reported once by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// No mount of this hierarchy in the mount table.
    #[error("not mounted")]
    NotMounted,
    /// `/proc/self/cgroup` has no line for this hierarchy (kernel built without it).
    #[error("this process belongs to no cgroup of it")]
    NotMember,
    /// Our cgroup lies outside every mounted subtree of the hierarchy (a container that
    /// mounts only part of it, or a cgroup namespace that does not contain us), so its
    /// directory cannot be reached.
    #[error("our cgroup {cgroup} is outside the mounted subtree {mount_root}")]
    OutsideMount {
        /// Our cgroup's path in the hierarchy.
        cgroup: String,
        /// The subtree that is mounted.
        mount_root: String,
    },
    /// Every mount of the hierarchy that reaches our cgroup is read-only.
    #[error("mounted read-only at {0}")]
    ReadOnly(PathBuf),
    /// The directory computed for our cgroup does not exist.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// The directory exists but we may not create cgroups in it or move processes into
    /// them: not root, and the subtree was not delegated to our user.
    #[error("{0} is not writable by this user (not root, and not delegated)")]
    NotWritable(PathBuf),
}

/// A hierarchy that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Which one.
    pub hierarchy: Hierarchy,
    /// Why.
    pub reason: RejectReason,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.hierarchy, self.reason)
    }
}

/// The supervisor's own cgroup directory in each hierarchy that can hold its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Our cgroup in the unified (v2) hierarchy.
    pub unified: Option<PathBuf>,
    /// Our cgroup in the v1 hierarchy that carries the memory controller.
    pub memory_v1: Option<PathBuf>,
    /// Our cgroup in the v1 hierarchy that carries the freezer.
    pub freezer_v1: Option<PathBuf>,
    /// The hierarchies left out, and why: the reasons given when nothing is usable.
    pub rejected: Vec<Rejected>,
}

impl Layout {
    /// Whether instances can be given a cgroup at all: membership needs v2 or the v1 memory
    /// hierarchy (a freezer alone carries neither limits nor a supported setup).
    pub fn is_usable(&self) -> bool {
        self.unified.is_some() || self.memory_v1.is_some()
    }

    /// Drops a hierarchy that turned out unusable, remembering why.
    pub(crate) fn reject(&mut self, hierarchy: Hierarchy, reason: RejectReason) {
        match hierarchy {
            Hierarchy::Unified => self.unified = None,
            Hierarchy::MemoryV1 => self.memory_v1 = None,
            Hierarchy::FreezerV1 => self.freezer_v1 = None,
        }
        self.rejected.push(Rejected { hierarchy, reason });
    }
}

/// The mount table, in one of its two formats.
#[derive(Debug, Clone, Copy)]
pub enum MountTable<'a> {
    /// `/proc/self/mountinfo`: it names the subtree each mount shows, which matters in
    /// containers that bind-mount only their own part of a hierarchy.
    MountInfo(&'a str),
    /// `/proc/mounts`: every cgroup mount is assumed to show its hierarchy from the root.
    Mounts(&'a str),
}

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    /// The subtree of the hierarchy shown at the mount point (`/` for the whole).
    root: String,
    mountpoint: PathBuf,
    /// `None` for cgroup2; the controllers (and `name=`) for v1.
    controllers: Option<Vec<String>>,
    read_only: bool,
}

/// Decodes the octal escapes (`\040` for a space...) the kernel uses in mount tables.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits v1 super options into controller names (dropping `rw`, `relatime`, `xattr`...).
fn controllers_of(options: &str) -> Vec<String> {
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    options
        .split(',')
        .filter(|o| {
            !o.is_empty() && !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent=")
        })
        .map(str::to_owned)
        .collect()
}

fn has_option(options: &str, wanted: &str) -> bool {
    options.split(',').any(|o| o == wanted)
}

fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let (before, after) = line.split_once(" - ")?;
            let mut pre = before.split(' ');
            let root = unescape(pre.nth(3)?);
            let mountpoint = PathBuf::from(unescape(pre.next()?));
            let mount_options = pre.next()?;
            let mut post = after.split(' ');
            let fstype = post.next()?;
            let _source = post.next()?;
            let super_options = post.next().unwrap_or("");
            let read_only = has_option(mount_options, "ro") || has_option(super_options, "ro");
            let controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(controllers_of(super_options)),
                _ => return None,
            };
            Some(CgroupMount {
                root,
                mountpoint,
                controllers,
                read_only,
            })
        })
        .collect()
}

fn parse_mounts(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            // source mountpoint fstype options dump pass
            let mut fields = line.split(' ');
            let _source = fields.next()?;
            let mountpoint = PathBuf::from(unescape(fields.next()?));
            let fstype = fields.next()?;
            let options = fields.next().unwrap_or("");
            let controllers = match fstype {
                "cgroup2" => None,
                "cgroup" => Some(controllers_of(options)),
                _ => return None,
            };
            Some(CgroupMount {
                root: "/".to_owned(),
                mountpoint,
                controllers,
                read_only: has_option(options, "ro"),
            })
        })
        .collect()
}

/// Our membership as `/proc/self/cgroup` lists it.
#[derive(Debug, Default)]
struct Membership {
    /// The `0::<path>` line.
    unified: Option<String>,
    /// `<id>:<controllers>:<path>` lines.
    v1: Vec<(Vec<String>, String)>,
}

fn parse_proc_cgroup(text: &str) -> Membership {
    let mut membership = Membership::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            membership.unified = Some(path.to_owned());
        } else {
            membership.v1.push((
                controllers.split(',').map(str::to_owned).collect(),
                path.to_owned(),
            ));
        }
    }
    membership
}

/// Our cgroup's path below a mount's root, or `None` when the mount does not show it.
fn relative_to(cgroup: &str, mount_root: &str) -> Option<String> {
    // A cgroup outside our cgroup namespace is shown with `..` components.
    if cgroup.split('/').any(|c| c == "..") {
        return None;
    }
    let root = mount_root.trim_end_matches('/');
    if root.is_empty() {
        return Some(cgroup.trim_start_matches('/').to_owned());
    }
    let rest = cgroup.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/').to_owned())
    } else {
        None
    }
}

/// Finds the directory of our cgroup `cgroup` among the mounts of one hierarchy.
fn locate<'a>(
    cgroup: &str,
    mounts: impl Iterator<Item = &'a CgroupMount>,
) -> Result<PathBuf, RejectReason> {
    let mut outcome = Err(RejectReason::NotMounted);
    for mount in mounts {
        let Some(relative) = relative_to(cgroup, &mount.root) else {
            if matches!(outcome, Err(RejectReason::NotMounted)) {
                outcome = Err(RejectReason::OutsideMount {
                    cgroup: cgroup.to_owned(),
                    mount_root: mount.root.clone(),
                });
            }
            continue;
        };
        if mount.read_only {
            outcome = Err(RejectReason::ReadOnly(mount.mountpoint.clone()));
            continue;
        }
        return Ok(join(&mount.mountpoint, &relative));
    }
    outcome
}

fn join(base: &Path, relative: &str) -> PathBuf {
    if relative.is_empty() {
        base.to_path_buf()
    } else {
        base.join(relative)
    }
}

/// Works out our cgroup directory in each usable hierarchy from the text of
/// `/proc/self/cgroup` and of the mount table. Pure: the directories are not checked.
pub fn plan(proc_self_cgroup: &str, mounts: MountTable<'_>) -> Layout {
    let membership = parse_proc_cgroup(proc_self_cgroup);
    let mounts = match mounts {
        MountTable::MountInfo(text) => parse_mountinfo(text),
        MountTable::Mounts(text) => parse_mounts(text),
    };
    let mut layout = Layout::default();

    let unified = match &membership.unified {
        None => Err(RejectReason::NotMember),
        Some(path) => locate(path, mounts.iter().filter(|m| m.controllers.is_none())),
    };
    match unified {
        Ok(dir) => layout.unified = Some(dir),
        Err(reason) => layout.rejected.push(Rejected {
            hierarchy: Hierarchy::Unified,
            reason,
        }),
    }

    for (hierarchy, controller) in [
        (Hierarchy::MemoryV1, "memory"),
        (Hierarchy::FreezerV1, "freezer"),
    ] {
        let holds = |controllers: &[String]| controllers.iter().any(|c| c == controller);
        let found = match membership.v1.iter().find(|(c, _)| holds(c)) {
            None => Err(RejectReason::NotMember),
            Some((_, path)) => locate(
                path,
                mounts
                    .iter()
                    .filter(|m| m.controllers.as_deref().is_some_and(holds)),
            ),
        };
        match (found, hierarchy) {
            (Ok(dir), Hierarchy::MemoryV1) => layout.memory_v1 = Some(dir),
            (Ok(dir), _) => layout.freezer_v1 = Some(dir),
            (Err(reason), _) => layout.rejected.push(Rejected { hierarchy, reason }),
        }
    }
    layout
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's shape: a hybrid host, v2 mounted at `unified` without controllers, the
    /// memory controller on v1 where we sit in a nested cgroup.
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n6:freezer:/\n\
        4:memory:/process_api/82c9\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn hybrid_host_from_mountinfo_and_from_mounts() {
        for table in [
            MountTable::MountInfo(HYBRID_MOUNTINFO),
            MountTable::Mounts(HYBRID_MOUNTS),
        ] {
            let layout = plan(HYBRID_CGROUP, table);
            assert_eq!(
                layout.unified.as_deref(),
                Some(Path::new("/sys/fs/cgroup/unified"))
            );
            assert_eq!(
                layout.memory_v1.as_deref(),
                Some(Path::new("/sys/fs/cgroup/memory/process_api/82c9"))
            );
            assert_eq!(
                layout.freezer_v1.as_deref(),
                Some(Path::new("/sys/fs/cgroup/freezer"))
            );
            assert!(layout.rejected.is_empty(), "{:?}", layout.rejected);
            assert!(layout.is_usable());
        }
    }

    #[test]
    fn pure_v2_host_under_systemd() {
        let layout = plan(
            "0::/system.slice/pc.service\n",
            MountTable::MountInfo(
                "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            ),
        );
        assert_eq!(
            layout.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/system.slice/pc.service"))
        );
        assert_eq!(layout.memory_v1, None);
        assert_eq!(
            layout.rejected,
            vec![
                Rejected {
                    hierarchy: Hierarchy::MemoryV1,
                    reason: RejectReason::NotMember
                },
                Rejected {
                    hierarchy: Hierarchy::FreezerV1,
                    reason: RejectReason::NotMember
                },
            ]
        );
    }

    #[test]
    fn container_mounting_its_own_subtree() {
        // Docker without a cgroup namespace: the mount shows /docker/abc at /sys/fs/cgroup.
        let layout = plan(
            "0::/docker/abc/app\n",
            MountTable::MountInfo(
                "500 400 0:26 /docker/abc /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n",
            ),
        );
        assert_eq!(
            layout.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/app"))
        );
        // The same mount cannot reach a cgroup outside its subtree, nor a `..` path.
        for outside in ["0::/docker/abcdef\n", "0::/../other\n"] {
            let layout = plan(
                outside,
                MountTable::MountInfo(
                    "500 400 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                ),
            );
            assert_eq!(layout.unified, None);
            assert!(matches!(
                layout.rejected[0].reason,
                RejectReason::OutsideMount { .. }
            ));
        }
    }

    #[test]
    fn read_only_and_missing_mounts_are_rejected_with_a_reason() {
        let layout = plan(
            "4:memory:/\n0::/\n",
            MountTable::Mounts(
                "cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid 0 0\n\
                 cgroup /sys/fs/cgroup/memory cgroup ro,memory 0 0\n",
            ),
        );
        assert!(!layout.is_usable());
        assert_eq!(
            layout.rejected[0].reason,
            RejectReason::ReadOnly(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            layout.rejected[1].to_string(),
            "cgroup v1 memory: mounted read-only at /sys/fs/cgroup/memory"
        );
        // The kernel prints a `0::` line even where cgroup2 is not mounted.
        let layout = plan("0::/\n", MountTable::Mounts("proc /proc proc rw 0 0\n"));
        assert_eq!(layout.rejected[0].reason, RejectReason::NotMounted);
    }

    #[test]
    fn co_mounted_v1_controllers_and_escaped_mount_points() {
        let layout = plan(
            "5:cpu,cpuacct,memory:/a b\n",
            MountTable::MountInfo(
                "35 31 0:32 / /mnt/my\\040cgroups rw - cgroup cgroup rw,cpu,cpuacct,memory,release_agent=/x\n",
            ),
        );
        assert_eq!(
            layout.memory_v1.as_deref(),
            Some(Path::new("/mnt/my cgroups/a b"))
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
