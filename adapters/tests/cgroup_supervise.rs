//! Cgroups through the supervise layer: an instance over its hard memory limit is reported
//! `oom_killed`, a kill reaches a daemon that escaped the process group and cleared its
//! environment, instance cgroups are removed once gone, and the host's parent cgroup when
//! the host is dropped. One test, in order: the host (and its launcher) is one per process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use processcontrol_adapters::cgroup::Cgroups;
use processcontrol_adapters::runtime::{Status, Supervisor, What};
use processcontrol_adapters::supervise::{CgroupSpec, Host, HostConfig, ProcessSpec};
use processcontrol_core::{ExitStatus, RestartPolicy, StateName};

/// Allocates about 200 MB: dash keeps a command substitution's whole output in memory.
const HOG: &str = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived ${#x}";
const LIMIT: u64 = 100 << 20;
/// Upper bound of every wait: generous for a loaded 2-core machine, yet a hang still fails.
const WAIT: Duration = Duration::from_secs(30);

async fn wait_for(sup: &Supervisor, what: &str, f: impl FnMut(&Status) -> bool) -> Status {
    match tokio::time::timeout(WAIT, sup.wait_for(f)).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => panic!("timed out waiting for {what}: {:?}", sup.status()),
    }
}

/// Polls `f` until it returns `Some` (no event exists for "a file was written" or "a pid
/// died" that a test could await).
async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(value) = f() {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The instance cgroups of process `name` under the parent's directories.
fn instance_dirs(parent_dirs: &[PathBuf], name: &str) -> Vec<PathBuf> {
    parent_dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&format!("{name}.")))
        })
        .map(|e| e.path())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

async fn oom_kill_is_reported(host: &Host, parent_dirs: &[PathBuf]) {
    let spec = ProcessSpec::new("hog", ["/bin/sh", "-c", HOG])
        .restart(RestartPolicy::Never)
        .memory_max(LIMIT);
    let sup = host.add(spec).expect("valid spec");
    let mut events = sup.subscribe();
    sup.start().expect("start");
    let status = wait_for(&sup, "the hog to finish", |s| s.exit.is_some()).await;
    assert_eq!(status.exit, Some(ExitStatus::OomKilled), "{status:?}");
    let mut causes = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let What::Transition { cause, exit, .. } = event.what {
            causes.push((cause, exit));
        }
    }
    assert!(
        causes.contains(&("oom_killed", Some(ExitStatus::OomKilled))),
        "{causes:?}"
    );
    sup.shutdown().await;
    assert!(instance_dirs(parent_dirs, "hog").is_empty());
}

async fn kill_reaches_escaped_daemon(host: &Host, parent_dirs: &[PathBuf]) {
    let pid_file = std::env::temp_dir().join(format!("pc-cgroup-daemon-{}", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    let script = format!(
        "( /usr/bin/env -i /usr/bin/setsid /bin/sh -c 'echo $$ > {}; exec /usr/bin/sleep 1000' & ); \
         exec sleep 1000",
        pid_file.display()
    );
    let spec = ProcessSpec::new("daemon", ["/bin/sh", "-c", &script]).cgroup(CgroupSpec::default());
    let sup = host.spawn(spec).expect("valid spec");
    let daemon: u32 = poll("the daemon's pid", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let dirs = instance_dirs(parent_dirs, "daemon");
    assert!(!dirs.is_empty(), "the instance has a cgroup");
    for dir in &dirs {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
        assert!(procs.lines().any(|l| l == daemon.to_string()), "{dir:?}");
    }
    sup.kill().expect("kill");
    wait_for(&sup, "killed", |s| s.state == StateName::Killed).await;
    poll("the daemon's death", || (!alive(daemon)).then_some(())).await;
    sup.shutdown().await;
    assert!(dirs.iter().all(|d| !d.exists()), "removed once gone");
    let _ = std::fs::remove_file(&pid_file);
}

#[test]
fn supervised_instances_get_cgroups_and_oom_kills_are_reported() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if let Err(reason) = Cgroups::detect() {
            eprintln!("skipped: cgroups unavailable: {reason}");
            return;
        }
        let host = Host::new(HostConfig::default()).expect("host");
        let Some(parent) = host.cgroup_parent() else {
            eprintln!("skipped: the host could not create its parent cgroup (see its warning)");
            return;
        };
        let parent_dirs: Vec<PathBuf> = parent.dirs().into_iter().map(Path::to_path_buf).collect();
        assert!(parent_dirs.iter().all(|d| d
            .file_name()
            .is_some_and(|n| n == format!("processcontrol-{}", std::process::id()).as_str())));
        match parent.memory_limits() {
            Ok(()) => oom_kill_is_reported(&host, &parent_dirs).await,
            Err(reason) => eprintln!("skipped the OOM part: no memory limits here: {reason}"),
        }
        kill_reaches_escaped_daemon(&host, &parent_dirs).await;

        drop(parent);
        drop(host);
        assert!(
            parent_dirs.iter().all(|d| !d.exists()),
            "the parent cgroup is removed with the host: {parent_dirs:?}"
        );
    });
}
