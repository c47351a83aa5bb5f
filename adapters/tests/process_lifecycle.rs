//! Spawning, exit statuses, signals, process groups, escapees and `gone`, with real processes.

#[path = "process_support/mod.rs"]
mod support;

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use processcontrol_adapters::process::{
    ExitStatus, Identity, Launcher, LauncherError, OutputMode, ProcessSpec, Signal, SpawnError,
    MARKER_VAR,
};
use support::{
    bounded, is_running, launcher, read_all_lines, read_line, read_pid, run, stat_of, stays_pending,
};
use tokio::io::BufReader;

/// Long enough for a wrongly-delivered signal or a wrongly-resolved `gone` to show.
const QUIET: Duration = Duration::from_millis(300);

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").arg("-c").arg(script)
}

#[test]
fn exit_code_is_reported_and_instance_is_gone() {
    run(async {
        let child = launcher().spawn(sh("exit 7")).await.expect("spawn");
        assert!(child.pid() > 0);
        assert_eq!(child.pgid(), child.pid());
        let status = bounded("exit", child.exited()).await.expect("status");
        assert_eq!(status, ExitStatus::Exited(7));
        assert_eq!(status.code(), Some(7));
        bounded("gone", child.gone()).await.expect("gone");
        assert!(child.is_gone());
        assert!(!is_running(child.pid()));
    });
}

#[test]
fn exit_by_signal_is_reported() {
    run(async {
        let child = launcher().spawn(sh("kill -KILL $$")).await.expect("spawn");
        let status = bounded("exit", child.exited()).await.expect("status");
        assert_eq!(
            status,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );

        let child = launcher()
            .spawn(ProcessSpec::new("sleep").arg("1000"))
            .await
            .expect("spawn");
        // The leader is in its own session and group.
        let (_, _, pgid, sid) = stat_of(child.pid()).expect("stat");
        assert_eq!((pgid, sid), (child.pid(), child.pid()));
        let report = child.signal(Signal::SIGTERM).expect("signal");
        assert!(report.leader && report.group, "{report:?}");
        let status = bounded("exit", child.exited()).await.expect("status");
        assert_eq!(status.signal(), Some(15));
        bounded("gone", child.gone()).await.expect("gone");
    });
}

#[test]
fn signal_leader_uses_the_leader_only() {
    run(async {
        let child = launcher()
            .spawn(ProcessSpec::new("sleep").arg("1000"))
            .await
            .expect("spawn");
        // This machine's kernel is recent; the fallback is exercised only on old kernels.
        assert!(child.has_pidfd());
        assert!(child.signal_leader(Signal::SIGKILL).expect("signal"));
        assert_eq!(
            bounded("exit", child.exited())
                .await
                .expect("status")
                .signal(),
            Some(9)
        );
        assert!(!child.signal_leader(Signal::SIGKILL).expect("signal"));
        bounded("gone", child.gone()).await.expect("gone");
        // Signalling a gone instance is a harmless no-op.
        let report = child.signal(Signal::SIGTERM).expect("signal");
        assert!(!report.leader && !report.group && report.escapees.is_empty());
    });
}

#[test]
fn missing_program_is_a_clear_spawn_error() {
    run(async {
        for program in [
            "/nonexistent/definitely-missing",
            "definitely-missing-program-xyz",
        ] {
            let err = launcher()
                .spawn(ProcessSpec::new(program))
                .await
                .expect_err("must fail");
            match &err {
                SpawnError::Exec { source, .. } => assert_eq!(source.kind(), ErrorKind::NotFound),
                other => panic!("unexpected error {other:?}"),
            }
            assert!(err.to_string().contains("definitely-missing"), "{err}");
        }
    });
}

#[test]
fn non_executable_file_is_a_clear_spawn_error() {
    run(async {
        let path = std::env::temp_dir().join(format!("pc-noexec-{}", std::process::id()));
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let result = launcher().spawn(ProcessSpec::new(&path)).await;
        std::fs::remove_file(&path).expect("cleanup");
        match result.expect_err("must fail") {
            SpawnError::Exec { source, .. } => {
                assert_eq!(source.kind(), ErrorKind::PermissionDenied)
            }
            other => panic!("unexpected error {other:?}"),
        }
    });
}

#[test]
fn bad_cwd_is_a_clear_spawn_error() {
    run(async {
        let err = launcher()
            .spawn(ProcessSpec::new("true").cwd("/nonexistent/dir"))
            .await
            .expect_err("must fail");
        match &err {
            SpawnError::BadCwd { source, .. } => assert_eq!(source.kind(), ErrorKind::NotFound),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
        let err = launcher()
            .spawn(ProcessSpec::new("true").cwd("/bin/sh"))
            .await
            .expect_err("a file is not a directory");
        assert!(matches!(err, SpawnError::BadCwd { .. }), "{err:?}");
    });
}

#[test]
fn unknown_user_is_a_clear_spawn_error() {
    run(async {
        let spec = ProcessSpec::new("true").user(Identity::Name("no-such-user-pc".into()));
        let err = launcher().spawn(spec).await.expect_err("must fail");
        if nix::unistd::geteuid().is_root() {
            assert!(matches!(err, SpawnError::UnknownUser(ref u) if u == "no-such-user-pc"));
        } else {
            assert!(matches!(err, SpawnError::NotRoot { .. }), "{err:?}");
        }
        let spec = ProcessSpec::new("true").group(Identity::Name("no-such-group-pc".into()));
        let err = launcher().spawn(spec).await.expect_err("must fail");
        assert!(
            matches!(
                err,
                SpawnError::UnknownGroup(_) | SpawnError::NotRoot { .. }
            ),
            "{err:?}"
        );
    });
}

#[test]
fn runs_as_another_user_when_root() {
    if !nix::unistd::geteuid().is_root() {
        // The NotRoot error is covered above.
        eprintln!("skipped: switching users needs root, and this test runs as a normal user");
        return;
    }
    run(async {
        let spec = ProcessSpec::new("/bin/sh")
            .arg("-c")
            .arg("id -u; id -g; pwd")
            .user(Identity::Id(65534))
            .group(Identity::Id(65534))
            .cwd("/");
        let mut child = launcher().spawn(spec).await.expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        assert_eq!(read_all_lines(&mut out).await, ["65534", "65534", "/"]);
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
        // The child shares the supervisor's memory until it execs, so a C library that
        // switched "every thread of the process" would have switched ours: every thread of
        // the supervisor must still be root.
        for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
            let status = std::fs::read_to_string(task.expect("task").path().join("status"))
                .unwrap_or_default();
            for line in status.lines() {
                if line.starts_with("Uid:") || line.starts_with("Gid:") {
                    let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
                    assert!(ids.iter().all(|id| *id == "0"), "a thread changed: {line}");
                }
            }
        }
    });
}

/// A signal mask field of `/proc/<pid>/status` (`SigIgn:`, ...), as a bit set.
fn sig_field<'a>(mut lines: impl Iterator<Item = &'a str>, field: &str) -> u64 {
    let line = lines
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field}"));
    let hex = line.split_whitespace().nth(1).expect("a value");
    u64::from_str_radix(hex, 16).expect("hexadecimal")
}

#[test]
fn the_program_starts_with_no_signal_blocked_or_caught() {
    run(async {
        // `cat` keeps what exec passed on: the blocked mask and the ignored signals. The test
        // harness ignores SIGPIPE (as every Rust program does), and the spawner blocks every
        // signal around the clone. Signals ignored by whoever started the tests (`nohup`, a
        // shell's background job) stay ignored, as `nohup` intends: only SIGPIPE and the reserved
        // real-time signals are reset.
        let status = std::fs::read_to_string("/proc/self/status").expect("own status");
        let own_ignored = sig_field(status.lines(), "SigIgn:");
        // SIGPIPE and the C library's reserved real-time signals are reset to their default.
        let reset = (32..libc::SIGRTMIN())
            .chain([libc::SIGPIPE])
            .fold(0u64, |set, signal| set | 1 << (signal - 1));
        let mut child = launcher()
            .spawn(ProcessSpec::new("cat").arg("/proc/self/status"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let lines = read_all_lines(&mut out).await;
        let lines = || lines.iter().map(String::as_str);
        assert_eq!(sig_field(lines(), "SigBlk:"), 0, "nothing blocked");
        assert_eq!(sig_field(lines(), "SigCgt:"), 0, "no handler");
        assert_eq!(
            sig_field(lines(), "SigIgn:"),
            own_ignored & !reset,
            "ignored: what the tests' parent ignored, SIGPIPE and reserved signals excepted"
        );
        bounded("exit", child.exited()).await.expect("status");
    });
}

#[test]
fn clean_env_cwd_and_output_pipes() {
    run(async {
        let spec = ProcessSpec::new("/usr/bin/env")
            .clear_env()
            .env("FOO", "bar baz")
            .cwd("/tmp");
        let mut child = launcher().spawn(spec).await.expect("spawn");
        let marker = child.marker().to_owned();
        assert!(
            marker.starts_with(&format!("{}:", std::process::id())),
            "{marker}"
        );
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let mut lines = read_all_lines(&mut out).await;
        lines.sort();
        assert_eq!(
            lines,
            ["FOO=bar baz".to_owned(), format!("{MARKER_VAR}={marker}")]
        );
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());

        let spec = sh("pwd; echo oops >&2").cwd("/tmp").env("X", "1");
        let mut child = launcher().spawn(spec).await.expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let mut err = BufReader::new(child.take_stderr().expect("stderr"));
        assert!(child.take_stdout().is_none());
        assert_eq!(read_line(&mut out).await.as_deref(), Some("/tmp"));
        assert_eq!(read_line(&mut err).await.as_deref(), Some("oops"));

        let spec = sh("echo hidden").stdout(OutputMode::Null);
        let mut child = launcher().spawn(spec).await.expect("spawn");
        assert!(child.take_stdout().is_none());
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
    });
}

#[test]
fn term_ignoring_child_survives_term_and_dies_on_kill_group() {
    run(async {
        let mut child = launcher()
            .spawn(sh("trap '' TERM; echo ready; sleep 1000"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        assert_eq!(read_line(&mut out).await.as_deref(), Some("ready"));

        let report = child.signal(Signal::SIGTERM).expect("signal");
        assert!(report.group);
        stays_pending("exit after an ignored SIGTERM", QUIET, child.exited()).await;
        assert!(!child.is_gone());
        assert!(is_running(child.pid()));

        child.kill_group().expect("kill");
        let status = bounded("exit", child.exited()).await.expect("status");
        assert_eq!(status.signal(), Some(9));
        bounded("gone", child.gone()).await.expect("gone");
        // The pipe reaches end of file: no process holds it any more.
        assert_eq!(read_line(&mut out).await, None);
    });
}

#[test]
fn grandchild_is_gone_after_kill_group() {
    run(async {
        let mut child = launcher()
            .spawn(sh("sleep 1000 & echo $!; wait"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let grandchild: u32 = read_pid(&mut out).await;
        let (_, ppid, pgid, _) = stat_of(grandchild).expect("grandchild runs");
        assert_eq!((ppid, pgid), (child.pid(), child.pgid()));

        stays_pending("gone while everything runs", QUIET, child.gone()).await;
        let report = child.kill_group().expect("kill");
        assert!(
            report.group && report.leader && report.escapees.is_empty(),
            "{report:?}"
        );
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(grandchild));
        assert!(!is_running(child.pid()));
    });
}

#[test]
fn leader_exit_resolves_before_gone_when_a_member_ignores_term() {
    run(async {
        let mut child = launcher()
            .spawn(sh("(trap '' TERM; echo $$; exec sleep 1000) & wait"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        // `$$` in a subshell is the parent's pid; find the member by group instead.
        read_line(&mut out).await.expect("ready");
        child.signal(Signal::SIGTERM).expect("signal");
        let status = bounded("leader exit", child.exited())
            .await
            .expect("status");
        assert_eq!(status.signal(), Some(15));
        // The member ignored SIGTERM and keeps the group alive.
        stays_pending("gone while a member runs", QUIET, child.gone()).await;
        assert!(!child.is_gone());

        let report = child.kill_group().expect("kill");
        assert!(report.group && !report.leader, "{report:?}");
        bounded("gone", child.gone()).await.expect("gone");
    });
}

#[test]
fn double_forked_daemon_is_found_by_marker_and_killed() {
    run(async {
        let mut child = launcher()
            .spawn(sh("setsid sh -c 'echo $$; exec sleep 1000' &"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let daemon: u32 = read_pid(&mut out).await;
        // The leader exits at once; the daemon lives on in a session of its own.
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
        let (_, ppid, pgid, sid) = stat_of(daemon).expect("daemon runs");
        assert_eq!(sid, daemon, "the daemon left the instance's session");
        assert_ne!(pgid, child.pgid());
        assert_eq!(ppid, std::process::id(), "reparented to the subreaper");
        assert_eq!(child.escapees(), [daemon]);

        stays_pending("gone while the daemon runs", QUIET, child.gone()).await;
        let report = child.kill_group().expect("kill");
        assert_eq!(report.escapees, [daemon], "{report:?}");
        assert!(!report.group && !report.leader, "{report:?}");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon));
    });
}

#[test]
fn term_reaches_escapees_and_gone_follows_their_exit() {
    run(async {
        let mut child = launcher()
            .spawn(sh("setsid sh -c 'echo $$; exec sleep 1000' & wait"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let daemon: u32 = read_pid(&mut out).await;
        let report = child.signal(Signal::SIGTERM).expect("signal");
        assert!(report.group && report.leader, "{report:?}");
        assert_eq!(report.escapees, [daemon]);
        bounded("exit", child.exited()).await.expect("status");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon));
    });
}

#[test]
fn watch_is_shared_across_tasks() {
    run(async {
        let child = launcher()
            .spawn(ProcessSpec::new("sleep").arg("1000"))
            .await
            .expect("spawn");
        let watch = child.watch();
        let waiter = tokio::spawn(async move {
            let status = watch.exited().await.expect("status");
            watch.gone().await.expect("gone");
            status
        });
        child.kill_group().expect("kill");
        let status = bounded("waiter", waiter).await.expect("join");
        assert_eq!(status.signal(), Some(9));
        assert_eq!(child.exit_status(), Some(status));
    });
}

#[test]
fn a_second_launcher_is_refused() {
    run(async {
        let _first = launcher();
        assert!(matches!(
            Launcher::new(),
            Err(LauncherError::AlreadyRunning)
        ));
    });
}

#[test]
fn escapee_below_an_orphaned_member_is_found_from_that_member() {
    run(async {
        // The leader exits at once; its member (a subshell turned `sleep`) is orphaned to us
        // and keeps the group alive, and below it lives an escapee in a session of its own.
        let mut child = launcher()
            .spawn(sh(
                "(setsid sh -c 'echo $$; exec sleep 1000' & exec sleep 1000) &",
            ))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let escapee: u32 = read_pid(&mut out).await;
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
        let (_, member, pgid, sid) = stat_of(escapee).expect("escapee runs");
        assert_eq!(sid, escapee, "the escapee left the instance's session");
        assert_ne!(pgid, child.pgid());
        let (_, member_parent, member_pgid, _) = stat_of(member).expect("member runs");
        assert_eq!(member_pgid, child.pgid(), "its parent is a member");
        assert_eq!(
            member_parent,
            std::process::id(),
            "orphaned to the subreaper"
        );
        assert_eq!(child.escapees(), [escapee]);

        stays_pending("gone while the member runs", QUIET, child.gone()).await;
        let report = child.kill_group().expect("kill");
        assert!(report.group && !report.leader, "{report:?}");
        assert_eq!(report.escapees, [escapee], "{report:?}");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(escapee) && !is_running(member));
    });
}

#[test]
fn gone_waits_for_an_escapee_orphaned_twice() {
    run(async {
        // A daemon in its own session with a child of its own; the leader exits at once.
        let mut child = launcher()
            .spawn(sh("setsid sh -c 'sleep 1000 & echo $$ $!; wait' &"))
            .await
            .expect("spawn");
        let mut out = BufReader::new(child.take_stdout().expect("stdout"));
        let line = read_line(&mut out).await.expect("pids");
        let pids: Vec<u32> = line.split(' ').map(|p| p.parse().expect("pid")).collect();
        let (daemon, daemon_child) = (pids[0], pids[1]);
        assert!(bounded("exit", child.exited())
            .await
            .expect("status")
            .success());
        assert_eq!(stat_of(daemon).expect("daemon").1, std::process::id());
        assert_eq!(stat_of(daemon_child).expect("its child").1, daemon);
        let mut escapees = child.escapees();
        escapees.sort();
        let mut expected = vec![daemon, daemon_child];
        expected.sort();
        assert_eq!(escapees, expected, "the daemon's subtree is walked");
        stays_pending("gone while the daemon runs", QUIET, child.gone()).await;

        // The daemon dies: its child is orphaned to us in turn, and still counts.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon).expect("pid"));
        nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill the daemon");
        stays_pending("gone while the daemon's child runs", QUIET, child.gone()).await;
        assert_eq!(
            stat_of(daemon_child).expect("its child").1,
            std::process::id()
        );
        assert_eq!(child.escapees(), [daemon_child]);

        let report = child.signal(Signal::SIGTERM).expect("signal");
        assert_eq!(report.escapees, [daemon_child], "{report:?}");
        bounded("gone", child.gone()).await.expect("gone");
        assert!(!is_running(daemon_child));
    });
}
