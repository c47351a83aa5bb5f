//! The runtime against mocked ports, on paused tokio time: effects are executed in order,
//! stale facts change nothing, early or spurious wake-ups do nothing, and the single sleep
//! follows the machine's deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mockall::Sequence;
use processcontrol_core::{ExitStatus, Input, Instance, Policy, Signal, StateName};
use tokio::time::timeout;

use super::{Supervisor, What};
use crate::ports::{MockProcesses, MockWatchers, Ports, Reporter, TokioClock};

const WAIT: Duration = Duration::from_secs(120);

fn policy() -> Policy {
    let mut p = Policy::default();
    p.backoff.jitter = 0.0;
    p.backoff.initial = Duration::from_secs(1);
    p
}

fn ports(processes: MockProcesses) -> Ports {
    let mut watchers = MockWatchers::new();
    watchers.expect_watch().returning(|_, _, _, _, _| ());
    Ports {
        processes: Arc::new(processes),
        watchers: Arc::new(watchers),
        clock: Arc::new(TokioClock::new()),
        events: tokio::sync::broadcast::channel(64).0,
    }
}

/// Keeps the reporter each spawn was given, so the test can play the OS.
type Reporters = Arc<Mutex<Vec<(Instance, Reporter)>>>;

fn reporter_of(reporters: &Reporters, instance: u64) -> Reporter {
    let all = reporters.lock().unwrap();
    all.iter()
        .find(|(i, _)| i.0 == instance)
        .map(|(_, r)| r.clone())
        .expect("spawned")
}

async fn next_transition(events: &mut super::Events) -> (StateName, StateName) {
    loop {
        let event = timeout(WAIT, events.recv())
            .await
            .expect("an event in time")
            .expect("open");
        if let What::Transition { from, to, .. } = event.what {
            return (from, to);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn crash_signal_backoff_respawn_in_order() {
    let reporters: Reporters = Arc::default();
    let mut seq = Sequence::new();
    let mut processes = MockProcesses::new();
    let r = reporters.clone();
    processes
        .expect_spawn()
        .withf(|i, _| i.0 == 1)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |i, rep| {
            r.lock().unwrap().push((i, rep));
            Ok(101)
        });
    processes
        .expect_signal()
        .withf(|i, s| i.0 == 1 && *s == Signal::Term)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| ());
    let r = reporters.clone();
    processes
        .expect_spawn()
        .withf(|i, _| i.0 == 2)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |i, rep| {
            r.lock().unwrap().push((i, rep));
            Ok(102)
        });

    let sup = Supervisor::launch("web", policy(), ports(processes)).unwrap();
    let running = sup.wait_for(|s| s.state == StateName::Running);
    let status = timeout(WAIT, running).await.unwrap().unwrap();
    let mut events = sup.subscribe();
    assert_eq!((status.instance, status.pid), (Some(1), Some(101)));

    let os = reporter_of(&reporters, 1);
    let crashed_at = tokio::time::Instant::now();
    os.fact(Input::Exited {
        instance: Instance(1),
        status: ExitStatus::Code(3),
    });
    os.fact(Input::Gone {
        instance: Instance(1),
    });
    assert_eq!(
        next_transition(&mut events).await,
        (StateName::Running, StateName::Restarting)
    );
    let running = sup.wait_for(|s| s.state == StateName::Running && s.instance == Some(2));
    timeout(WAIT, running).await.unwrap().unwrap();
    // The respawn waited for the backoff, on the machine's own deadline.
    assert_eq!(crashed_at.elapsed(), Duration::from_secs(1));
    assert_eq!(sup.status().restarts, 1);
    std::mem::forget(sup); // the mocks expect no stop
}

#[tokio::test(start_paused = true)]
async fn stale_facts_and_spurious_wakeups_change_nothing() {
    let reporters: Reporters = Arc::default();
    let mut processes = MockProcesses::new();
    let r = reporters.clone();
    processes.expect_spawn().times(1).returning(move |i, rep| {
        r.lock().unwrap().push((i, rep));
        Ok(101)
    });
    // No signal, no kill: any call would fail the test.
    processes.expect_signal().times(0);
    processes.expect_kill_group().times(0);

    let sup = Supervisor::launch("api", policy(), ports(processes)).unwrap();
    timeout(WAIT, sup.wait_for(|s| s.state == StateName::Running))
        .await
        .unwrap()
        .unwrap();
    let mut events = sup.subscribe();
    let os = reporter_of(&reporters, 1);
    os.fact(Input::Exited {
        instance: Instance(7),
        status: ExitStatus::Code(1),
    });
    os.fact(Input::Gone {
        instance: Instance(0),
    });
    os.fact(Input::Tick);
    for _ in 0..2 {
        let event = timeout(WAIT, events.recv()).await.unwrap().unwrap();
        assert!(
            matches!(
                event.what,
                What::Ignored {
                    reason: "stale",
                    ..
                }
            ),
            "{event:?}"
        );
    }
    tokio::time::advance(Duration::from_secs(3600)).await;
    let status = sup.status();
    assert_eq!(
        (status.state, status.instance, status.restarts),
        (StateName::Running, Some(1), 0)
    );
    std::mem::forget(sup);
}

#[tokio::test(start_paused = true)]
async fn stop_escalates_on_the_grace_deadline_and_ends_when_gone() {
    let reporters: Reporters = Arc::default();
    let mut seq = Sequence::new();
    let mut processes = MockProcesses::new();
    let r = reporters.clone();
    processes
        .expect_spawn()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |i, rep| {
            r.lock().unwrap().push((i, rep));
            Ok(101)
        });
    processes
        .expect_signal()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| ());
    let r = reporters.clone();
    processes
        .expect_kill_group()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |i| {
            // The group dies of the kill.
            let os = r.lock().unwrap()[0].1.clone();
            os.fact(Input::Exited {
                instance: i,
                status: ExitStatus::Signal(9),
            });
            os.fact(Input::Gone { instance: i });
        });

    let mut p = policy();
    p.stop.grace = Duration::from_secs(2);
    let sup = Supervisor::launch("stubborn", p, ports(processes)).unwrap();
    timeout(WAIT, sup.wait_for(|s| s.state == StateName::Running))
        .await
        .unwrap()
        .unwrap();
    let asked = tokio::time::Instant::now();
    let status = timeout(WAIT, sup.shutdown()).await.unwrap();
    assert_eq!(status.state, StateName::Stopped);
    assert_eq!(
        asked.elapsed(),
        Duration::from_secs(2),
        "killed exactly at the grace deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn spawn_failure_message_reaches_the_event() {
    let mut processes = MockProcesses::new();
    processes.expect_spawn().returning(|_, _| {
        Err(crate::ports::SpawnFailure {
            error: processcontrol_core::SpawnError::Os(2),
            message: "cannot start \"./nope\": No such file or directory (os error 2)".into(),
        })
    });
    let mut p = policy();
    p.breaker.max_restarts = 2;
    p.breaker.cooldown = processcontrol_core::Cooldown::Never;
    let sup = Supervisor::idle("nope", p, ports(processes)).unwrap();
    let mut events = sup.subscribe();
    sup.start().unwrap();
    let status = timeout(WAIT, sup.wait_for(|s| s.state == StateName::BreakerOpen))
        .await
        .unwrap()
        .unwrap();
    assert!(status
        .last_error
        .as_deref()
        .unwrap()
        .contains("No such file"));
    let mut saw = false;
    while let Ok(event) = events.try_recv() {
        if let What::Transition {
            cause: "spawn_failed",
            error,
            ..
        } = &event.what
        {
            assert!(error.as_deref().unwrap().contains("No such file"));
            saw = true;
            let line = event.to_json_line();
            assert!(
                line.contains("\"event\":\"transition\"") && line.contains("\"error\":"),
                "{line}"
            );
        }
    }
    assert!(saw);
    std::mem::forget(sup);
}

#[tokio::test(start_paused = true)]
async fn watch_effect_reaches_the_watchers_with_the_pid() {
    let mut processes = MockProcesses::new();
    processes.expect_spawn().returning(|_, _| Ok(4242));
    let mut watchers = MockWatchers::new();
    watchers
        .expect_watch()
        .withf(|i, pid, probes, sampling, _| {
            i.0 == 1
                && *pid == Some(4242)
                && probes.contains(processcontrol_core::ProbeRole::Liveness)
                && *sampling
        })
        .times(1)
        .returning(|_, _, _, _, _| ());
    let mut p = policy();
    p.health.liveness = Some(processcontrol_core::Thresholds::default());
    let ports = Ports {
        processes: Arc::new(processes),
        watchers: Arc::new(watchers),
        clock: Arc::new(TokioClock::new()),
        events: tokio::sync::broadcast::channel(64).0,
    };
    let sup = Supervisor::launch("probed", p, ports).unwrap();
    timeout(WAIT, sup.wait_for(|s| s.state == StateName::Running))
        .await
        .unwrap()
        .unwrap();
    std::mem::forget(sup);
}
