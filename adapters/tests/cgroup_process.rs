//! Cgroups with real processes at the launcher level: a hard memory limit and its OOM kill,
//! membership of a grandchild, a kill reaching a daemon that escaped the process group and
//! cleared its environment (invisible to markers), and `gone` waiting for it. Run where
//! the host allows it; elsewhere each test says why it skipped.

#[path = "process_support/mod.rs"]
mod support;

use processcontrol_adapters::cgroup::{
    plan, CgroupParent, Cgroups, InstanceCgroup, KillMethod, MountTable,
};
use processcontrol_adapters::process::{Child, OutputMode, ProcessSpec, MARKER_VAR};
use support::{bounded, is_running, launcher, read_line, run, stat_of, stays_pending};
use tokio::io::BufReader;

/// Allocates about 200 MB: dash keeps a command substitution's whole output in memory.
const HOG: &str = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
const LIMIT: u64 = 100 << 20;
/// A double-forked daemon in a session of its own with an empty environment: neither the
/// process group nor the marker can find it. It prints its pid.
const DAEMON: &str =
    "( /usr/bin/env -i /usr/bin/setsid /bin/sh -c 'echo $$; exec /usr/bin/sleep 1000' & )";

/// Returns the value, or prints why the test is skipped and returns from it.
macro_rules! or_skip {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(reason) => {
                eprintln!("skipped: {reason}");
                return;
            }
        }
    };
}

/// A parent cgroup of this test's own, on the hierarchies the host offers.
fn parent(test: &str) -> Result<CgroupParent, String> {
    let cgroups = Cgroups::detect().map_err(|e| format!("cgroups unavailable: {e}"))?;
    cgroups
        .create_parent_named(&format!("processcontrol-{}-{test}", std::process::id()))
        .map_err(|e| format!("cannot create a parent cgroup: {e}"))
}

/// A parent cgroup on the v1 hierarchies only (memory, and the freezer when mounted), as a
/// host without cgroup v2 would offer: our real membership minus the v2 line.
fn v1_parent(test: &str) -> Result<CgroupParent, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own: String = own
        .lines()
        .filter(|l| !l.starts_with("0::"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let layout = plan(&own, MountTable::MountInfo(&mounts));
    if layout.memory_v1.is_none() {
        return Err(format!(
            "no cgroup v1 memory hierarchy on this host ({:?})",
            layout.rejected
        ));
    }
    let cgroups = Cgroups::from_layout(layout).map_err(|e| format!("cgroup v1 unusable: {e}"))?;
    cgroups
        .create_parent_named(&format!("processcontrol-{}-{test}", std::process::id()))
        .map_err(|e| format!("cannot create a v1 parent cgroup: {e}"))
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").arg("-c").arg(script)
}

async fn first_pid(child: &mut Child) -> u32 {
    let mut out = BufReader::new(child.take_stdout().expect("stdout"));
    read_line(&mut out)
        .await
        .expect("a pid")
        .parse()
        .expect("a number")
}

fn has_marker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .any(|var| var.starts_with(MARKER_VAR.as_bytes()))
        })
        .unwrap_or(false)
}

/// Whether `/proc/<pid>/cgroup` names the instance's directory (the last path component is
/// enough: it is unique to this test).
fn listed_in_proc(pid: u32, cgroup: &InstanceCgroup) -> bool {
    let name = cgroup
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a name");
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| text.lines().any(|l| l.ends_with(&format!("/{name}"))))
}

/// Spawns the hog under the limit and checks it is OOM-killed and counted as such.
async fn hog_is_oom_killed(parent: &CgroupParent) {
    let cgroup = parent.create("hog", Some(LIMIT)).expect("instance cgroup");
    assert_eq!(cgroup.memory_limit().expect("limit"), Some(LIMIT));
    assert_eq!(cgroup.oom_kills().expect("counter"), Some(0));
    let child = launcher()
        .spawn(
            sh(HOG)
                .stdout(OutputMode::Null)
                .stderr(OutputMode::Null)
                .cgroup(cgroup.clone()),
        )
        .await
        .expect("spawn");
    let status = bounded("the OOM kill", child.exited())
        .await
        .expect("status");
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(cgroup.oom_kills().expect("counter").unwrap_or(0) >= 1);
    bounded("gone", child.gone()).await.expect("gone");
    cgroup.remove().expect("an empty cgroup is removed");
    assert!(cgroup.dirs().iter().all(|d| !d.exists()));
}

#[test]
fn allocating_past_the_hard_limit_is_oom_killed() {
    run(async {
        let parent = or_skip!(parent("oom"));
        or_skip!(parent
            .memory_limits()
            .map_err(|e| format!("no memory limits here: {e}")));
        hog_is_oom_killed(&parent).await;
    });
}

#[test]
fn a_grandchild_is_a_member() {
    run(async {
        let parent = or_skip!(parent("members"));
        let cgroup = parent.create("tree", None).expect("instance cgroup");
        let mut child = launcher()
            .spawn(sh("/bin/sh -c 'sleep 1000 & echo $!; wait' & wait").cgroup(cgroup.clone()))
            .await
            .expect("spawn");
        let grandchild = first_pid(&mut child).await;
        let (_, ppid, _, _) = stat_of(grandchild).expect("grandchild runs");
        assert_ne!(ppid, child.pid(), "a grandchild, not a child");
        assert!(cgroup.contains(child.pid()).expect("members"));
        assert!(cgroup.contains(grandchild).expect("members"));
        assert_eq!(cgroup.pids().expect("members").len(), 3);
        assert!(cgroup.is_populated().expect("populated"));
        for dir in cgroup.dirs() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
            assert!(
                procs.lines().any(|l| l == grandchild.to_string()),
                "{dir:?}"
            );
        }
        assert!(listed_in_proc(grandchild, &cgroup));

        let report = child.kill_group().expect("kill");
        assert!(report.cgroup, "{report:?}");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(grandchild));
        assert!(!cgroup.is_populated().expect("populated"));
        cgroup.remove().expect("removed");
    });
}

#[test]
fn kill_group_reaches_a_daemon_invisible_to_markers() {
    run(async {
        let parent = or_skip!(parent("escapee"));
        let cgroup = parent.create("daemon", None).expect("instance cgroup");
        let mut child = launcher()
            .spawn(sh(&format!("{DAEMON}; exec sleep 1000")).cgroup(cgroup.clone()))
            .await
            .expect("spawn");
        let daemon = first_pid(&mut child).await;
        let (_, ppid, pgid, sid) = stat_of(daemon).expect("daemon runs");
        assert_eq!(sid, daemon, "the daemon left the instance's session");
        assert_ne!(pgid, child.pgid());
        assert_eq!(ppid, std::process::id(), "reparented to the subreaper");
        assert!(!has_marker(daemon), "the daemon cleared its environment");
        assert!(child.escapees().is_empty(), "invisible to the marker scan");
        assert!(cgroup.contains(daemon).expect("members"));

        let report = child.kill_group().expect("kill");
        assert!(report.cgroup && report.leader, "{report:?}");
        assert_eq!(
            bounded("exit", child.exited())
                .await
                .expect("status")
                .signal(),
            Some(9)
        );
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon));
        cgroup.remove().expect("removed");
    });
}

#[test]
fn gone_waits_for_a_daemon_invisible_to_markers() {
    run(async {
        let parent = or_skip!(parent("gone"));
        let cgroup = parent.create("daemon", None).expect("instance cgroup");
        let mut child = launcher()
            .spawn(sh(DAEMON).cgroup(cgroup.clone()))
            .await
            .expect("spawn");
        let daemon = first_pid(&mut child).await;
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
        // Group empty, no marked process: only the cgroup knows the daemon is left.
        stays_pending(
            "gone while the daemon runs",
            std::time::Duration::from_millis(300),
            child.gone(),
        )
        .await;
        cgroup.kill().expect("kill");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon));
        cgroup.remove().expect("removed");
    });
}

#[test]
fn every_kill_method_reaches_the_daemon() {
    run(async {
        let parent = or_skip!(parent("methods"));
        for method in [
            KillMethod::CgroupKill,
            KillMethod::Freeze,
            KillMethod::EachPid,
        ] {
            let cgroup = parent
                .create(&format!("{method:?}"), None)
                .expect("instance cgroup");
            let mut child = launcher()
                .spawn(sh(&format!("{DAEMON}; exec sleep 1000")).cgroup(cgroup.clone()))
                .await
                .expect("spawn");
            let daemon = first_pid(&mut child).await;
            match cgroup.kill_with(method) {
                Ok(()) => {
                    bounded("gone", child.gone()).await.expect("gone");
                    assert!(!is_running(daemon), "{method:?}");
                }
                Err(error) => {
                    eprintln!("skipped {method:?}: {error}");
                    child.kill_group().expect("kill");
                    bounded("gone", child.gone()).await.expect("gone");
                }
            }
            cgroup.remove().expect("removed");
        }
    });
}

#[test]
fn v1_memory_and_freezer_alone_limit_and_kill() {
    run(async {
        let parent = or_skip!(v1_parent("v1"));
        or_skip!(parent
            .memory_limits()
            .map_err(|e| format!("no v1 memory limits here: {e}")));
        hog_is_oom_killed(&parent).await;

        let cgroup = parent.create("daemon", None).expect("instance cgroup");
        let mut child = launcher()
            .spawn(sh(&format!("{DAEMON}; exec sleep 1000")).cgroup(cgroup.clone()))
            .await
            .expect("spawn");
        let daemon = first_pid(&mut child).await;
        assert!(cgroup.contains(daemon).expect("members"));
        assert!(listed_in_proc(daemon, &cgroup));
        let method = cgroup.kill().expect("kill");
        eprintln!("v1 kill method: {method:?}");
        assert_ne!(method, KillMethod::CgroupKill);
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon));
        cgroup.remove().expect("removed");
        drop(parent);
    });
}

#[test]
fn the_parent_is_removed_once_empty() {
    run(async {
        let parent = or_skip!(parent("cleanup"));
        let dirs: Vec<_> = parent.dirs().iter().map(|d| d.to_path_buf()).collect();
        let cgroup = parent.create("left", None).expect("instance cgroup");
        assert!(cgroup.dirs().iter().all(|d| d.is_dir()));
        // A leftover empty instance cgroup is removed with the parent.
        drop(parent);
        assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    });
}
