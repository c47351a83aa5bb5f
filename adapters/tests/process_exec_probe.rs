//! Exec probes with real commands: pass, fail, timeout (with a forking, hanging command),
//! and a command that cannot start.

#[path = "process_support/mod.rs"]
mod support;

use std::time::Duration;

use processcontrol_adapters::process::{
    run_exec_probe, ExecProbeOutcome, ExitStatus, ProcessSpec, SpawnError,
};
use support::{bounded, is_running, launcher, run};

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").arg("-c").arg(script)
}

#[test]
fn probe_passes_on_exit_zero() {
    run(async {
        let outcome = bounded(
            "probe",
            run_exec_probe(&launcher(), sh("echo healthy"), Duration::from_secs(5)),
        )
        .await;
        assert!(outcome.is_pass(), "{outcome:?}");
    });
}

#[test]
fn probe_fails_on_nonzero_exit() {
    run(async {
        let outcome = bounded(
            "probe",
            run_exec_probe(
                &launcher(),
                sh("echo sick >&2; exit 3"),
                Duration::from_secs(5),
            ),
        )
        .await;
        match outcome {
            ExecProbeOutcome::Failed { exit, said } => {
                assert_eq!(exit, ExitStatus::Exited(3));
                // The last line it printed, on either stream.
                assert_eq!(said.as_deref(), Some("sick"));
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn probe_times_out_and_kills_its_forked_hanging_command() {
    run(async {
        let file = std::env::temp_dir().join(format!("pc-probe-pids-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        // The leader forks a hanging child and waits for it: neither ever exits by itself.
        let script = format!(
            "sleep 1000 & echo $! > {f}.tmp; echo $$ >> {f}.tmp; mv {f}.tmp {f}; wait",
            f = file.display()
        );
        let timeout = Duration::from_millis(1500);
        let started = std::time::Instant::now();
        let outcome = bounded("probe", run_exec_probe(&launcher(), sh(&script), timeout)).await;
        assert!(
            matches!(outcome, ExecProbeOutcome::TimedOut { .. }),
            "{outcome:?}"
        );
        assert!(started.elapsed() >= timeout);

        let pids = std::fs::read_to_string(&file).expect("the probe wrote its pids in time");
        std::fs::remove_file(&file).expect("cleanup");
        let pids: Vec<u32> = pids.lines().map(|l| l.parse().expect("pid")).collect();
        assert_eq!(pids.len(), 2);
        for pid in pids {
            assert!(!is_running(pid), "probe process {pid} survived");
        }
    });
}

#[test]
fn probe_that_cannot_start_reports_spawn_failure() {
    run(async {
        let outcome = bounded(
            "probe",
            run_exec_probe(
                &launcher(),
                ProcessSpec::new("/nonexistent/probe"),
                Duration::from_secs(5),
            ),
        )
        .await;
        match outcome {
            ExecProbeOutcome::SpawnFailed {
                error: SpawnError::Exec { source, .. },
            } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn passing_probe_leaves_no_background_process() {
    run(async {
        let file = std::env::temp_dir().join(format!("pc-probe-bg-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let script = format!(
            "sleep 1000 & echo $! > {f}.tmp; mv {f}.tmp {f}; exit 0",
            f = file.display()
        );
        let outcome = bounded(
            "probe",
            run_exec_probe(&launcher(), sh(&script), Duration::from_secs(5)),
        )
        .await;
        assert!(outcome.is_pass(), "{outcome:?}");
        let pid: u32 = std::fs::read_to_string(&file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        std::fs::remove_file(&file).expect("cleanup");
        assert!(
            !is_running(pid),
            "background process {pid} survived the probe"
        );
    });
}
