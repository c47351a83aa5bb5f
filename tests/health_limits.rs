//! Health probes and resource limits, end to end with real processes: HTTP, TCP and exec
//! probes in each role (liveness restarts through the breaker, readiness sets the ready flag,
//! startup suspends the others), memory and CPU limits with each action, a spike shorter than
//! `for`, two restart triggers at once, and probe configurations rejected before anything
//! starts. Every wait is bounded; the host samples every second (the shared global host).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use processcontrol::adapters::supervise::SpecProblem;
use processcontrol::{
    BackoffPolicy, BreakerPolicy, Cooldown, Event, LimitAction, LimitRule, ProbeSpec, ProcessSpec,
    Resource, StateName, SuperviseError, What,
};
use support::{
    alive, assert_holds_for, assert_no_zombies, assert_unchanged, drain_events, fast_backoff,
    free_port, host, log_lines, next_event, run, sh, wait_dead, wait_for, wait_for_line,
    HealthServer,
};

/// The host's sampling interval (the global host's default).
const SAMPLE: Duration = Duration::from_secs(1);
const MB: u64 = 1024 * 1024;
/// CPU limit of the busy-loop tests, in percent of one core (see
/// `cpu_over_the_limit_for_its_duration_restarts`).
const CPU_LIMIT: u64 = 25;

fn breaker(max_restarts: u32) -> BreakerPolicy {
    BreakerPolicy {
        max_restarts,
        window: Duration::from_secs(600),
        cooldown: Cooldown::Never,
        max_cooldown: Duration::from_secs(600),
    }
}

/// Waits for the event satisfying `f` and returns it with every event received before it.
async fn events_until(
    events: &mut processcontrol::Events,
    what: &str,
    mut f: impl FnMut(&Event) -> bool,
) -> (Event, Vec<Event>) {
    let mut before = Vec::new();
    let found = next_event(events, what, |e| {
        if f(e) {
            return true;
        }
        before.push(e.clone());
        false
    })
    .await;
    (found, before)
}

fn is_transition(e: &Event, to_state: StateName, with_cause: &str) -> bool {
    matches!(e.what, What::Transition { to, cause, .. } if to == to_state && cause == with_cause)
}

/// A python child that traps SIGTERM (printing `term`), and whose first instance (the marker
/// file does not exist yet) allocates and touches `mb` MiB and prints `hog`; later instances
/// print `calm`. All then sleep.
fn hog(name: &str, marker: &Path, mb: u64) -> ProcessSpec {
    let script = format!(
        r#"
import os, signal, sys, time
def term(*_):
    print('term', flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
first = not os.path.exists(sys.argv[1])
open(sys.argv[1], 'a').close()
if first:
    b = bytearray({mb} * 1024 * 1024)
    print('hog', flush=True)
else:
    print('calm', flush=True)
while True:
    time.sleep(1000)
"#
    );
    ProcessSpec::new(
        name,
        [
            "python3".to_string(),
            "-c".to_string(),
            script,
            marker.display().to_string(),
        ],
    )
    .stop(processcontrol::Signal::Term, Duration::from_secs(2))
}

fn memory_limit(max_mb: u64, sustain: Duration, action: LimitAction) -> LimitRule {
    LimitRule {
        resource: Resource::Memory,
        max: max_mb * MB,
        sustain,
        action,
    }
}

// ----- liveness ------------------------------------------------------------------------------

#[test]
fn http_liveness_restarts_after_the_threshold_and_opens_the_breaker() {
    run(async {
        let server = HealthServer::start(true).await;
        let spec = ProcessSpec::new("http-live", ["sleep", "1000"])
            .backoff(fast_backoff())
            .breaker(breaker(2))
            .liveness(
                ProbeSpec::http(server.url("/healthz"))
                    .period(Duration::from_millis(100))
                    .timeout(Duration::from_millis(500))
                    .failure_threshold(3),
            );
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        assert_eq!(first.instance, Some(1));

        // Passing checks change nothing.
        server.wait_served("3 passing checks", |s| s.ok >= 3).await;
        // Two failures in a row, then a pass: below the threshold, nothing happens.
        let before = server.served();
        server.fail_next(2);
        server
            .wait_served("2 failures then a pass", |s| {
                s.failed == before.failed + 2 && s.ok > before.ok
            })
            .await;
        let status = sup.status();
        assert_eq!(
            (status.state, status.instance, status.restarts),
            (StateName::Running, Some(1), 0),
            "two failures under a threshold of 3 must not restart"
        );

        // Failing for good: the third consecutive failure restarts.
        let before = server.served();
        server.set_healthy(false);
        let restart = next_event(&mut events, "liveness_failed", |e| {
            is_transition(e, StateName::Restarting, "liveness_failed")
        })
        .await;
        let failures = server.served().failed - before.failed;
        assert!(failures >= 3, "restarted after only {failures} failures");
        assert_eq!(restart.instance, Some(1));
        assert_eq!(restart.pid, first.pid);
        wait_dead(&[first.pid.unwrap()]).await;

        // Every instance keeps failing: 2 restarts are allowed, the third trips the breaker.
        let open = wait_for(&sup, "breaker_open", |s| s.state == StateName::BreakerOpen).await;
        assert_eq!(open.restarts, 2);
        assert_eq!((open.pid, open.instance), (None, None));
        assert_eq!(open.breaker, "open");
        let trips = drain_events(&mut events);
        let liveness_restarts = trips
            .iter()
            .filter(|e| is_transition(e, StateName::Restarting, "liveness_failed"))
            .count();
        assert_eq!(
            liveness_restarts, 2,
            "instances 2 and 3 failed too: {trips:?}"
        );
        assert!(trips
            .iter()
            .any(|e| is_transition(e, StateName::BreakerOpen, "breaker_tripped")));
        // Cooldown never: it stays open (and probes stopped with the instance).
        let served = server.served();
        assert_holds_for(&sup, "breaker open", Duration::from_millis(500), |s| {
            s.state == StateName::BreakerOpen
        })
        .await;
        assert_eq!(
            server.served(),
            served,
            "no probe runs while the breaker is open"
        );

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- readiness -----------------------------------------------------------------------------

#[test]
fn readiness_sets_the_ready_flag_in_events_and_status_per_instance() {
    run(async {
        let server = HealthServer::start(false).await;
        let spec = ProcessSpec::new("ready-http", ["sleep", "1000"]).readiness(
            ProbeSpec::http(server.url("/ready"))
                .period(Duration::from_millis(100))
                .success_threshold(2)
                .failure_threshold(2),
        );
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let running = wait_for(&sup, "running", |s| s.state == StateName::Running).await;

        // Failing readiness: running but not ready, and no restart.
        server
            .wait_served("3 failing checks", |s| s.failed >= 3)
            .await;
        let status = sup.status();
        assert!(!status.ready);
        assert_eq!((status.instance, status.restarts), (Some(1), 0));
        assert!(
            !drain_events(&mut events)
                .iter()
                .any(|e| matches!(e.what, What::Ready { .. })),
            "no readiness change while it never passed"
        );

        // Passing: ready after success_threshold passes.
        let before = server.served();
        server.set_healthy(true);
        let ready = next_event(&mut events, "ready", |e| {
            matches!(e.what, What::Ready { ready: true, .. })
        })
        .await;
        assert!(server.served().ok - before.ok >= 2, "ready after 2 passes");
        assert_eq!(ready.instance, Some(1));
        assert_eq!(ready.pid, running.pid);
        let json = ready.to_json_line();
        assert!(json.contains(r#""event":"ready","ready":true"#), "{json}");
        wait_for(&sup, "ready in status", |s| s.ready).await;

        // Failing again: not ready, still the same instance.
        server.set_healthy(false);
        next_event(&mut events, "not ready", |e| {
            matches!(e.what, What::Ready { ready: false, .. })
        })
        .await;
        let status = wait_for(&sup, "not ready in status", |s| !s.ready).await;
        assert_eq!(
            (status.state, status.instance, status.restarts),
            (StateName::Running, Some(1), 0),
            "readiness never restarts"
        );

        // A new instance starts not ready, whatever the last one was.
        server.set_healthy(true);
        wait_for(&sup, "ready again", |s| s.ready).await;
        sup.restart().unwrap();
        next_event(&mut events, "not ready on restart", |e| {
            matches!(e.what, What::Ready { ready: false, .. })
        })
        .await;
        let ready = next_event(&mut events, "instance 2 ready", |e| {
            matches!(e.what, What::Ready { ready: true, .. })
        })
        .await;
        assert_eq!(ready.instance, Some(2));
        let status = wait_for(&sup, "instance 2 ready in status", |s| s.ready).await;
        assert_eq!(status.instance, Some(2));

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- startup -------------------------------------------------------------------------------

#[test]
fn startup_probe_shields_a_slow_starter_from_a_strict_liveness_probe() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sick = dir.path().join("sick");
        let port = free_port();
        // An HTTP server that takes 1.5 s to start listening; it answers 500 while `sick` exists.
        let script = format!(
            r#"
import http.server, os, time
time.sleep(1.5)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if os.path.exists({sick:?}) else 200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', {port}), H)
print('listening', flush=True)
s.serve_forever()
"#,
            sick = sick.display().to_string()
        );
        let url = format!("http://127.0.0.1:{port}/");
        let spec = ProcessSpec::new("slow-start", ["python3", "-c", &script])
            .backoff(fast_backoff())
            .breaker(breaker(5))
            .startup(
                ProbeSpec::http(url.clone())
                    .period(Duration::from_millis(100))
                    .timeout(Duration::from_millis(500))
                    .failure_threshold(50),
            )
            .liveness(
                ProbeSpec::http(url)
                    .period(Duration::from_millis(100))
                    .timeout(Duration::from_millis(500))
                    .failure_threshold(1),
            );
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        let spawned_at = Instant::now();
        sup.start().unwrap();
        // Up, but starting until the startup probe passes.
        let starting = wait_for(&sup, "instance 1 up", |s| s.pid.is_some()).await;
        assert_eq!(starting.state, StateName::Starting);
        let passed = next_event(
            &mut events,
            "startup_passed",
            |e| matches!(e.what, What::Transition { from, .. } if from == StateName::Starting),
        )
        .await;
        assert!(
            is_transition(&passed, StateName::Running, "startup_passed"),
            "the first transition after the spawn is the startup probe passing, not a liveness restart: {passed:?}"
        );
        let took = spawned_at.elapsed();
        assert!(took >= Duration::from_millis(1400), "passed after {took:?}");
        assert!(log_lines("slow-start").iter().any(|l| l == "listening"));
        // (The event is published just before the status.)
        let status = wait_for(&sup, "running", |s| s.state != StateName::Starting).await;
        assert_eq!(
            (status.state, status.instance, status.restarts),
            (StateName::Running, Some(1), 0)
        );

        // Now liveness applies: one failure restarts.
        std::fs::write(&sick, b"").unwrap();
        let restart = next_event(
            &mut events,
            "liveness_failed",
            |e| matches!(e.what, What::Transition { from, .. } if from == StateName::Running),
        )
        .await;
        assert!(
            is_transition(&restart, StateName::Restarting, "liveness_failed"),
            "{restart:?}"
        );
        assert_eq!(restart.instance, Some(1));
        std::fs::remove_file(&sick).unwrap();
        // The new instance goes through the startup probe again.
        let status = wait_for(&sup, "instance 2 running", |s| {
            s.state == StateName::Running && s.instance == Some(2)
        })
        .await;
        assert_eq!(status.restarts, 1);
        assert!(drain_events(&mut events).iter().any(
            |e| e.instance == Some(2) && is_transition(e, StateName::Running, "startup_passed")
        ));

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- TCP and exec probes -------------------------------------------------------------------

#[test]
fn tcp_liveness_probe_restarts_when_the_port_closes() {
    run(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = tokio::sync::watch::channel(0u64);
        let accept = |listener: tokio::net::TcpListener, tx: tokio::sync::watch::Sender<u64>| {
            tokio::spawn(async move {
                while listener.accept().await.is_ok() {
                    tx.send_modify(|n| *n += 1);
                }
            })
        };
        let accept_task = accept(listener, accepted_tx);
        let spec = ProcessSpec::new("tcp-live", ["sleep", "1000"])
            .backoff(fast_backoff())
            .breaker(breaker(20))
            .liveness(
                ProbeSpec::tcp(addr.to_string())
                    .period(Duration::from_millis(100))
                    .timeout(Duration::from_millis(500))
                    .failure_threshold(2),
            );
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        let mut rx = accepted.clone();
        tokio::time::timeout(support::WAIT, rx.wait_for(|n| *n >= 3))
            .await
            .expect("3 probe connections")
            .unwrap();
        assert_eq!(sup.status().instance, Some(1));

        // Close the port: connections are refused, liveness fails.
        accept_task.abort();
        let _ = accept_task.await;
        let restart = next_event(&mut events, "liveness_failed", |e| {
            is_transition(e, StateName::Restarting, "liveness_failed")
        })
        .await;
        assert_eq!(restart.instance, Some(1));
        wait_dead(&[first.pid.unwrap()]).await;

        // Open it again: the current instance keeps passing.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (accepted_tx, accepted) = tokio::sync::watch::channel(0u64);
        let accept_task = accept(listener, accepted_tx);
        let mut rx = accepted.clone();
        tokio::time::timeout(support::WAIT, rx.wait_for(|n| *n >= 1))
            .await
            .expect("a probe connection after reopening")
            .unwrap();
        // (Events go out just before the status: wait for the new instance, not just running.)
        let current = wait_for(&sup, "a later instance running", |s| {
            s.state == StateName::Running && s.instance > Some(1)
        })
        .await;
        let n = *accepted.borrow();
        tokio::time::timeout(support::WAIT, rx.wait_for(|m| *m >= n + 3))
            .await
            .expect("3 more probe connections")
            .unwrap();
        let status = sup.status();
        assert_eq!(
            (status.state, status.instance, status.restarts),
            (StateName::Running, current.instance, current.restarts),
            "passing TCP checks keep the instance"
        );
        assert!(status.restarts >= 1);

        accept_task.abort();
        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

#[test]
fn exec_liveness_probe_follows_the_command_exit_status() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let hits = dir.path().join("hits");
        std::fs::write(&flag, b"").unwrap();
        // `test -e FLAG`, recording its passes so the test can see them.
        let check = format!(
            "test -e {} && echo pass >> {}",
            flag.display(),
            hits.display()
        );
        let passes = || {
            std::fs::read_to_string(&hits)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        let spec = ProcessSpec::new("exec-live", ["sleep", "1000"])
            .backoff(fast_backoff())
            .breaker(breaker(20))
            .liveness(
                ProbeSpec::exec(["/bin/sh", "-c", &check])
                    .period(Duration::from_millis(100))
                    .timeout(Duration::from_secs(2))
                    .failure_threshold(2),
            );
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        // The probe's own output file is the only sign of a pass: poll it, bounded.
        let wait_passes = |n: usize| async move {
            tokio::time::timeout(support::WAIT, async {
                while passes() < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the exec probe never passed {n} times"));
        };
        wait_passes(3).await;
        assert_eq!((sup.status().instance, sup.status().restarts), (Some(1), 0));

        std::fs::remove_file(&flag).unwrap();
        let restart = next_event(&mut events, "liveness_failed", |e| {
            is_transition(e, StateName::Restarting, "liveness_failed")
        })
        .await;
        assert_eq!(restart.instance, Some(1));
        wait_dead(&[first.pid.unwrap()]).await;

        std::fs::write(&flag, b"").unwrap();
        // (Events go out just before the status: wait for the new instance, not just running.)
        let current = wait_for(&sup, "a later instance running", |s| {
            s.state == StateName::Running && s.instance > Some(1)
        })
        .await;
        let n = passes();
        wait_passes(n + 3).await;
        let status = sup.status();
        assert_eq!(
            (status.state, status.instance, status.restarts),
            (StateName::Running, current.instance, current.restarts),
            "passing exec checks keep the instance"
        );

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- memory --------------------------------------------------------------------------------

#[test]
fn memory_over_the_limit_restarts() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let sustain = SAMPLE;
        let spec = hog("mem-restart", &dir.path().join("marker"), 200)
            .backoff(fast_backoff())
            .breaker(breaker(3))
            .limit(memory_limit(100, sustain, LimitAction::Restart));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        // The first sample above the limit only starts the clock: the status that first shows
        // it still shows the instance running (for = 0 would act in the same step).
        let high = wait_for(&sup, "a sample above 100 MiB", |s| {
            s.rss.is_some_and(|r| r > 100 * MB) || s.state != StateName::Running
        })
        .await;
        assert_eq!(
            (high.state, high.instance),
            (StateName::Running, Some(1)),
            "acted on the first sample above the limit, before `for` ({sustain:?}): {high:?}"
        );
        let (exceeded, mut transitions) = events_until(&mut events, "limit_exceeded", |e| {
            matches!(e.what, What::LimitExceeded { .. })
        })
        .await;
        match exceeded.what {
            What::LimitExceeded {
                resource,
                observed,
                max,
                action,
                ..
            } => {
                assert_eq!((resource, max, action), ("memory", 100 * MB, "restart"));
                assert!(observed > 150 * MB, "observed {observed}");
            }
            _ => unreachable!(),
        }
        assert_eq!(exceeded.instance, Some(1));
        wait_for_line("mem-restart", "term").await;
        let second = wait_for(&sup, "instance 2 running", |s| {
            s.state == StateName::Running && s.instance == Some(2)
        })
        .await;
        assert_eq!(second.restarts, 1);
        assert_ne!(second.pid, first.pid);
        assert!(!alive(first.pid.unwrap()));
        transitions.extend(drain_events(&mut events));
        assert!(
            transitions.iter().any(|e| matches!(
                e.what,
                What::Transition {
                    to: StateName::Restarting,
                    cause: "limit_exceeded",
                    resource: Some("memory"),
                    ..
                }
            )),
            "{transitions:?}"
        );
        wait_for_line("mem-restart", "calm").await;

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

#[test]
fn memory_over_the_limit_shuts_down_gracefully_and_stays_stopped() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let spec = hog("mem-stop", &dir.path().join("marker"), 200)
            .backoff(fast_backoff())
            .limit(memory_limit(
                100,
                Duration::ZERO,
                LimitAction::GracefulShutdown,
            ));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        let (exceeded, mut transitions) = events_until(&mut events, "limit_exceeded", |e| {
            matches!(e.what, What::LimitExceeded { .. })
        })
        .await;
        assert!(
            matches!(
                exceeded.what,
                What::LimitExceeded {
                    resource: "memory",
                    action: "graceful-shutdown",
                    ..
                }
            ),
            "{exceeded:?}"
        );
        let stopped = wait_for(&sup, "stopped", |s| s.state == StateName::Stopped).await;
        assert_eq!(
            (stopped.instance, stopped.pid, stopped.restarts),
            (None, None, 0)
        );
        // It was asked to stop (the stop signal), not killed.
        assert!(log_lines("mem-stop").iter().any(|l| l == "term"));
        assert!(!alive(first.pid.unwrap()));
        transitions.extend(drain_events(&mut events));
        assert!(
            transitions
                .iter()
                .any(|e| is_transition(e, StateName::ShuttingDown, "limit_exceeded")),
            "{transitions:?}"
        );
        // Stays stopped: two sampling intervals and more, no new instance.
        assert_holds_for(&sup, "stopped", 2 * SAMPLE + SAMPLE / 2, |s| {
            s.state == StateName::Stopped && s.instance.is_none()
        })
        .await;

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

#[test]
fn memory_over_the_limit_kills_and_stays_killed() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let spec = hog("mem-kill", &dir.path().join("marker"), 200)
            .backoff(fast_backoff())
            .limit(memory_limit(100, Duration::ZERO, LimitAction::Kill));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        // (for = 0: a sample in the middle of the allocation may already act, before `hog`.)
        let exceeded = next_event(&mut events, "limit_exceeded", |e| {
            matches!(e.what, What::LimitExceeded { .. })
        })
        .await;
        assert!(
            matches!(
                exceeded.what,
                What::LimitExceeded {
                    resource: "memory",
                    action: "kill",
                    ..
                }
            ),
            "{exceeded:?}"
        );
        let killed = wait_for(&sup, "killed and gone", |s| {
            s.state == StateName::Killed && s.instance.is_none()
        })
        .await;
        assert_eq!(killed.restarts, 0);
        assert!(!alive(first.pid.unwrap()));
        // SIGKILL, not the stop signal: the trap never ran.
        assert!(!log_lines("mem-kill").iter().any(|l| l == "term"));
        assert_holds_for(&sup, "killed", 2 * SAMPLE + SAMPLE / 2, |s| {
            s.state == StateName::Killed && s.instance.is_none()
        })
        .await;

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

#[test]
fn memory_over_the_limit_with_warn_reports_once_and_keeps_running() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let spec = hog("mem-warn", &dir.path().join("marker"), 200).limit(memory_limit(
            100,
            SAMPLE,
            LimitAction::Warn,
        ));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        let exceeded = next_event(&mut events, "limit_exceeded", |e| {
            matches!(e.what, What::LimitExceeded { .. })
        })
        .await;
        assert!(
            matches!(exceeded.what, What::LimitExceeded { resource: "memory", action: "warn", max, .. } if max == 100 * MB),
            "{exceeded:?}"
        );
        assert_eq!(exceeded.instance, Some(1));
        // More samples above the limit: still running, the same instance, no second report.
        let status = assert_holds_for(&sup, "running instance 1", 2 * SAMPLE + SAMPLE / 2, |s| {
            s.state == StateName::Running && s.instance == Some(1)
        })
        .await;
        assert!(status.rss.is_some_and(|r| r > 100 * MB), "{status:?}");
        assert_eq!(status.restarts, 0);
        assert!(alive(first.pid.unwrap()));
        let later = drain_events(&mut events);
        assert_unchanged(&later, "warn is reported once and changes nothing");

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

#[test]
fn memory_spike_shorter_than_for_does_nothing() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        // Spikes of ~0.5 s to 200 MiB every 1.5 s, until the test has seen one in a sample;
        // then stays low. No two samples 3 s apart can both fall in a spike.
        let script = format!(
            r#"
import os, time
while not os.path.exists({seen:?}):
    b = bytearray(200 * 1024 * 1024)
    time.sleep(0.5)
    del b
    time.sleep(1.0)
print('calm', flush=True)
while True:
    time.sleep(1000)
"#,
            seen = seen.display().to_string()
        );
        let spec = ProcessSpec::new("mem-spike", ["python3", "-c", &script]).limit(memory_limit(
            100,
            3 * SAMPLE,
            LimitAction::Kill,
        ));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        drain_events(&mut events);
        let spiked = wait_for(&sup, "a sample inside a spike", |s| {
            s.rss.is_some_and(|r| r > 100 * MB)
        })
        .await;
        std::fs::write(&seen, b"").unwrap();
        wait_for_line("mem-spike", "calm").await;
        // A sample after the spikes ended: the violation, if it was ever tracked, is over.
        let calm = wait_for(&sup, "a sample below the limit", |s| {
            s.rss.is_some_and(|r| r < 100 * MB)
        })
        .await;
        assert_eq!(
            (calm.state, calm.instance, calm.restarts),
            (StateName::Running, spiked.instance, 0)
        );
        let seen_events = drain_events(&mut events);
        assert_unchanged(&seen_events, "a spike shorter than `for` must do nothing");

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- cpu -----------------------------------------------------------------------------------

#[test]
fn cpu_over_the_limit_for_its_duration_restarts() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let sustain = 2 * SAMPLE;
        // The first instance busy-loops in two processes; the next ones sleep. The limit is
        // below the 50 % of one core a sleeping tree never reaches and a busy one always
        // exceeds on an idle machine, but on this shared 2-core machine a lone busy loop was
        // measured at 49 % under others' load: two loops against CPU_LIMIT keep the test about
        // the supervisor, not the neighbours.
        let script = format!(
            "if [ -e {m} ]; then echo calm; exec sleep 1000; fi; touch {m}; (while :; do :; done) & echo busy; while :; do :; done",
            m = marker.display()
        );
        let spec = sh("cpu-burn", &script)
            .backoff(fast_backoff())
            .breaker(breaker(3))
            .limit(LimitRule {
                resource: Resource::Cpu,
                max: CPU_LIMIT,
                sustain,
                action: LimitAction::Restart,
            });
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        let first = wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        wait_for_line("cpu-burn", "busy").await;
        // Above the limit, but not yet for `for`: still running.
        let high = wait_for(&sup, "a sample above the limit", |s| {
            s.cpu.is_some_and(|c| c > CPU_LIMIT) || s.state != StateName::Running
        })
        .await;
        assert_eq!(
            (high.state, high.instance),
            (StateName::Running, Some(1)),
            "acted on the first sample above the limit, before `for` ({sustain:?}): {high:?}"
        );
        let exceeded = next_event(&mut events, "limit_exceeded", |e| {
            matches!(e.what, What::LimitExceeded { .. })
        })
        .await;
        match exceeded.what {
            What::LimitExceeded {
                resource,
                observed,
                max,
                action,
                ..
            } => {
                assert_eq!((resource, max, action), ("cpu", CPU_LIMIT, "restart"));
                assert!(observed > CPU_LIMIT, "observed {observed}%");
            }
            _ => unreachable!(),
        }
        let second = wait_for(&sup, "instance 2 running", |s| {
            s.state == StateName::Running && s.instance == Some(2)
        })
        .await;
        assert_eq!(second.restarts, 1);
        wait_dead(&[first.pid.unwrap()]).await;
        wait_for_line("cpu-burn", "calm").await;

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

/// A CPU violation that started before the startup probe passed goes on counting after it: the
/// sampler must not forget the instance's CPU baseline (and report 0 %) when the probes of the
/// same instance change.
#[test]
fn cpu_violation_keeps_counting_when_the_startup_probe_passes() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let spec = sh(
            "cpu-startup",
            "(while :; do :; done) & echo busy; while :; do :; done",
        )
        .backoff(fast_backoff())
        .breaker(breaker(3))
        .startup(
            ProbeSpec::exec(["/bin/sh", "-c", &format!("test -e {}", started.display())])
                .period(Duration::from_millis(100))
                .failure_threshold(1000),
        )
        .limit(LimitRule {
            resource: Resource::Cpu,
            max: CPU_LIMIT,
            sustain: 2 * SAMPLE,
            action: LimitAction::Restart,
        });
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        wait_for_line("cpu-startup", "busy").await;
        // The first sample with a CPU figure above the limit starts the `for` clock.
        wait_for(&sup, "a sample above the limit", |s| {
            s.cpu.is_some_and(|c| c > CPU_LIMIT)
        })
        .await;
        let above_since = Instant::now();
        assert_eq!(sup.status().state, StateName::Starting);
        // The startup probe passes while the violation lasts.
        std::fs::write(&started, b"").unwrap();
        let mut samples = Vec::new();
        let mut status = sup.watch_status();
        let exceeded = tokio::time::timeout(support::WAIT, async {
            loop {
                tokio::select! {
                    changed = status.changed() => {
                        changed.unwrap();
                        let s = status.borrow_and_update().clone();
                        if s.instance == Some(1) {
                            samples.push((s.state, s.cpu));
                        }
                    }
                    event = events.recv() => {
                        let event = event.unwrap();
                        if matches!(event.what, What::LimitExceeded { .. }) {
                            return event;
                        }
                    }
                }
            }
        })
        .await
        .expect("the cpu limit acts");
        let waited = above_since.elapsed();
        assert!(
            matches!(
                exceeded.what,
                What::LimitExceeded {
                    resource: "cpu",
                    ..
                }
            ),
            "{exceeded:?}"
        );
        // `for` = 2 s from the first sample above: the sample 2 s later acts (3 s if the
        // samples' spacing jitters under 1 s). Losing the baseline costs a 0 % sample and
        // restarts the clock (4 s or more): the 0 % sample is what is checked, the delay is
        // reported.
        let zero_samples = samples
            .iter()
            .filter(|(state, cpu)| *state == StateName::Running && *cpu == Some(0))
            .count();
        assert!(
            zero_samples == 0,
            "the busy child was reported at 0 % after the startup probe passed ({zero_samples} \
             samples) and the limit acted {waited:?} after the violation began (for = 2 s); \
             statuses of instance 1: {samples:?}"
        );

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- concurrent triggers -------------------------------------------------------------------

#[test]
fn liveness_failure_and_memory_violation_at_once_restart_once() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let marker = dir.path().join("marker");
        let server = HealthServer::start(true).await;
        // The first instance allocates 200 MiB when `go` appears; later ones stay small.
        let script = format!(
            r#"
import os, time
first = not os.path.exists({marker:?})
open({marker:?}, 'a').close()
print('up', flush=True)
if first:
    while not os.path.exists({go:?}):
        time.sleep(0.01)
    b = bytearray(200 * 1024 * 1024)
    print('hog', flush=True)
while True:
    time.sleep(1000)
"#,
            marker = marker.display().to_string(),
            go = go.display().to_string()
        );
        let spec = ProcessSpec::new("both-triggers", ["python3", "-c", &script])
            .backoff(BackoffPolicy {
                initial: Duration::from_millis(300),
                max: Duration::from_secs(1),
                ..fast_backoff()
            })
            .breaker(breaker(5))
            .liveness(
                ProbeSpec::http(server.url("/live"))
                    .period(Duration::from_millis(10))
                    .timeout(Duration::from_millis(500))
                    .failure_threshold(1),
            )
            .limit(memory_limit(100, Duration::ZERO, LimitAction::Restart));
        let sup = host().add(spec).unwrap();
        let mut events = sup.subscribe();
        sup.start().unwrap();
        wait_for(&sup, "running", |s| s.state == StateName::Running).await;
        wait_for_line("both-triggers", "up").await;
        // A sample of the small instance tells the sampler's phase: the next one comes a
        // sampling interval later. Start the allocation now, so that the next sample is the
        // first above the limit (for = 0: it acts at once)...
        wait_for(&sup, "a first sample", |s| s.rss.is_some()).await;
        let sampled_at = tokio::time::Instant::now();
        std::fs::write(&go, b"").unwrap();
        wait_for_line("both-triggers", "hog").await;
        // ...and make the liveness probe (every 10 ms, threshold 1) fail just before that
        // sample is due, so both triggers reach the machine within a few milliseconds. (A
        // timed coincidence, not a synchronization: the test's verdict does not depend on
        // which trigger wins.)
        tokio::time::sleep_until(sampled_at + SAMPLE - Duration::from_millis(12)).await;
        server.set_healthy(false);
        wait_for(&sup, "leaving running", |s| s.state != StateName::Running).await;
        server.set_healthy(true);
        let second = wait_for(&sup, "instance 2 running", |s| {
            s.state == StateName::Running && s.instance == Some(2)
        })
        .await;
        assert_eq!(second.restarts, 1, "exactly one restart");
        // Instance 2 is healthy and small: it stays.
        let before = server.served();
        server
            .wait_served("instance 2 probed", |s| s.ok >= before.ok + 5)
            .await;
        let status = sup.status();
        assert_eq!((status.instance, status.restarts), (Some(2), 1));

        let seen = drain_events(&mut events);
        let restarts: Vec<_> = seen
            .iter()
            .filter(|e| {
                matches!(
                    e.what,
                    What::Transition {
                        from: StateName::Running,
                        to: StateName::Restarting,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(restarts.len(), 1, "{seen:?}");
        let winner = match restarts[0].what {
            What::Transition { cause, .. } => cause,
            _ => unreachable!(),
        };
        let losers: Vec<_> = seen
            .iter()
            .filter_map(|e| match e.what {
                What::Ignored { input, reason } if input == "probe" || input == "sampled" => {
                    Some(format!("{input}:{reason}"))
                }
                _ => None,
            })
            .collect();
        eprintln!("both-triggers: restart caused by {winner}; other trigger ignored as {losers:?}");

        sup.shutdown().await;
        assert_no_zombies().await;
    });
}

// ----- bad configuration ---------------------------------------------------------------------

#[test]
fn bad_probe_configuration_is_rejected_before_anything_starts() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let command = format!("touch {}; exec sleep 1000", started.display());

        let spec = sh("bad-probes", &command)
            .liveness(ProbeSpec::http("not a url"))
            .readiness(ProbeSpec::tcp("127.0.0.1:0"))
            .startup(ProbeSpec::exec(["/bin/true"]).failure_threshold(0));
        let err = host().spawn(spec.clone()).unwrap_err();
        let SuperviseError::Spec(errors) = &err else {
            panic!("expected a spec error, got {err}");
        };
        assert_eq!(errors.name, "bad-probes");
        assert_eq!(errors.problems.len(), 3, "{:?}", errors.problems);
        assert!(matches!(
            errors.problems[0],
            SpecProblem::Probe {
                role: "liveness",
                ..
            }
        ));
        assert!(matches!(
            errors.problems[1],
            SpecProblem::Probe {
                role: "readiness",
                ..
            }
        ));
        assert!(matches!(
            errors.problems[2],
            SpecProblem::Threshold {
                role: "startup",
                which: "failure_threshold"
            }
        ));
        let text = err.to_string();
        for needle in [
            "bad-probes",
            "liveness probe",
            "not a url",
            "readiness probe",
            "127.0.0.1:0",
            "port 0",
            "startup probe: failure_threshold must be at least 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from: {text}");
        }
        // `add` validates the same way.
        assert!(host().add(spec).is_err());

        // More mistakes, each named.
        let spec = sh("bad-probes-2", &command)
            .liveness(ProbeSpec::http("http://127.0.0.1:0/health").success_threshold(0))
            .readiness(ProbeSpec::http("https://127.0.0.1:8443/").period(Duration::ZERO))
            .startup(ProbeSpec::exec(Vec::<String>::new()).timeout(Duration::ZERO));
        let err = host().spawn(spec).unwrap_err();
        let text = err.to_string();
        for needle in [
            "liveness probe: invalid port",
            "liveness probe: success_threshold must be at least 1",
            "readiness probe: unsupported scheme",
            "readiness probe: probe period must be greater than zero",
            "startup probe: probe timeout must be greater than zero",
            "startup probe: the exec command is empty",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from: {text}");
        }

        // Nothing was set up for either, and no child ran.
        assert!(host().logs("bad-probes").is_none());
        assert!(host().logs("bad-probes-2").is_none());
        assert!(!started.exists());
        assert_no_zombies().await;
    });
}

// ----- the global host -----------------------------------------------------------------------

const RACE_CHILD_ENV: &str = "PROCESSCONTROL_GLOBAL_RACE_CHILD";

/// `Host::global()` used for the first time from several threads at once must hand every one
/// the same host. Needs a process where it was never used: this test runs
/// `global_host_race_child` in a fresh copy of this test binary (supervised, of course).
#[test]
fn global_host_first_use_is_race_free() {
    run(async {
        // A race: try a few fresh processes.
        for attempt in 0..5 {
            let name = format!("global-race-{attempt}");
            let exe = std::env::current_exe().unwrap();
            let spec = ProcessSpec::new(
                name.as_str(),
                [
                    exe.display().to_string(),
                    "--exact".into(),
                    "global_host_race_child".into(),
                    "--nocapture".into(),
                    "--test-threads=1".into(),
                ],
            )
            .env(RACE_CHILD_ENV, "1")
            .restart(processcontrol::RestartPolicy::Never);
            let sup = host().spawn(spec).unwrap();
            let done = wait_for(&sup, "the child test to finish", |s| {
                s.at_rest() && matches!(s.state, StateName::Exited | StateName::Failed)
            })
            .await;
            let output = log_lines(&name).join("\n");
            sup.shutdown().await;
            assert_eq!(
                done.exit,
                Some(processcontrol::ExitStatus::Code(0)),
                "concurrent first use of Host::global() failed (attempt {attempt}):\n{output}"
            );
        }
        assert_no_zombies().await;
    });
}

/// Run by `global_host_first_use_is_race_free` in a fresh process; does nothing otherwise.
#[test]
fn global_host_race_child() {
    if std::env::var_os(RACE_CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Every thread spins until all are ready and the go flag is set, so the first calls are as
    // close together as the cores allow.
    let threads = 4;
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let go = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (ready, go, handle) = (ready.clone(), go.clone(), rt.handle().clone());
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while !go.load(std::sync::atomic::Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                processcontrol::Host::global().map_err(|e| format!("{e:?}"))
            })
        })
        .collect();
    while ready.load(std::sync::atomic::Ordering::SeqCst) < threads {
        std::thread::yield_now();
    }
    go.store(true, std::sync::atomic::Ordering::SeqCst);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} of {threads} first calls of Host::global() failed: {errors:?}",
        errors.len()
    );
    let hosts: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(hosts.iter().all(|h| std::sync::Arc::ptr_eq(h, &hosts[0])));
}
