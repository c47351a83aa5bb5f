//! Scenario tests: one story per behaviour the issue names, on virtual time.

use std::time::Duration;

use processcontrol_core::{
    BreakerStatus, Cause, Cooldown, DeadlineKind, Effect, ExitStatus, IgnoreReason, Input,
    Instance, LimitAction, LimitRule, Machine, Notification, Outcome, Policy, ProbeFailure,
    ProbeResult, ProbeRole, Resource, RestartCause, RestartPolicy, Signal, SpawnError, SpawnKind,
    StateName, Thresholds, Timestamp, Usage,
};

/// A machine on virtual time, with shorthands for the adapter's side of the conversation.
struct Drive {
    m: Machine,
    now: Timestamp,
    pid: u32,
}

impl Drive {
    fn new(policy: Policy) -> Self {
        Drive {
            m: Machine::new(policy).expect("valid policy"),
            now: Timestamp::ZERO,
            pid: 100,
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        p.backoff.jitter = 0.0;
        p
    }

    fn input(&mut self, input: Input) -> Outcome {
        self.m.handle(self.now, input)
    }

    fn instance(&self) -> Instance {
        self.m.instance().expect("a current instance")
    }

    /// Answers a pending spawn.
    fn spawned(&mut self) -> Outcome {
        self.pid += 1;
        let instance = self.instance();
        self.input(Input::Spawned {
            instance,
            pid: self.pid,
        })
    }

    fn start(&mut self) {
        let out = self.input(Input::Start);
        assert!(matches!(spawn_of(&out), Some((_, SpawnKind::Start))));
        self.spawned();
    }

    /// The main process exits and the group is gone at once.
    fn crash(&mut self, code: i32) -> Outcome {
        let instance = self.instance();
        self.input(Input::Exited {
            instance,
            status: ExitStatus::Code(code),
        });
        self.input(Input::Gone { instance })
    }

    /// Jumps to the next deadline and ticks.
    fn wake(&mut self) -> Outcome {
        let deadline = self.m.poll_timeout().expect("a deadline");
        self.now = deadline.at;
        self.input(Input::Tick)
    }

    fn advance(&mut self, d: Duration) -> Outcome {
        self.now = self.now.saturating_add(d);
        self.input(Input::Tick)
    }

    fn probe(&mut self, role: ProbeRole, result: ProbeResult) -> Outcome {
        let instance = self.instance();
        self.input(Input::Probe {
            instance,
            role,
            result,
        })
    }

    fn sample(&mut self, usage: Usage) -> Outcome {
        let instance = self.instance();
        self.input(Input::Sampled { instance, usage })
    }
}

fn spawn_of(out: &Outcome) -> Option<(Instance, SpawnKind)> {
    out.effects.iter().find_map(|e| match *e {
        Effect::Spawn { instance, kind } => Some((instance, kind)),
        _ => None,
    })
}

fn has(out: &Outcome, effect: Effect) -> bool {
    out.effects.iter().any(|e| *e == effect)
}

fn mem(bytes: u64) -> Usage {
    Usage {
        memory: bytes,
        ..Usage::default()
    }
}

#[test]
fn crash_backs_off_then_restarts_with_growing_delays() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    assert_eq!(d.m.state(), StateName::Running);
    let out = d.crash(1);
    assert_eq!(d.m.state(), StateName::Restarting);
    assert!(out.notifications.iter().any(|n| matches!(n, Notification::BackoffScheduled { delay } if *delay == Duration::from_millis(100))));
    let out = d.wake();
    assert_eq!(d.now, Timestamp::from_millis(100));
    assert_eq!(spawn_of(&out), Some((Instance(2), SpawnKind::Restart)));
    d.spawned();
    d.crash(1);
    d.wake();
    assert_eq!(d.now, Timestamp::from_millis(300), "second delay is 200ms");
    assert_eq!(d.m.restarts(), 2);
}

#[test]
fn transition_event_names_the_exit() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    let instance = d.instance();
    let out = d.input(Input::Exited {
        instance,
        status: ExitStatus::Code(1),
    });
    let Some(Notification::Transition {
        from,
        to,
        cause,
        instance: i,
        pid,
    }) = out.notifications.iter().next().copied()
    else {
        panic!("transition first: {out:?}");
    };
    assert_eq!((from, to), (StateName::Running, StateName::Restarting));
    assert_eq!(cause, Cause::Exited(ExitStatus::Code(1)));
    assert_eq!(i, Some(instance));
    assert_eq!(pid, Some(101));
    // Leftovers of the group get the stop signal; nothing spawns before the group is gone.
    assert!(has(
        &out,
        Effect::Signal {
            instance,
            signal: Signal::Term
        }
    ));
    assert!(spawn_of(&out).is_none());
}

#[test]
fn stable_uptime_ends_the_crash_streak() {
    let mut p = Drive::policy();
    p.backoff.reset_after = Duration::from_secs(10);
    let mut d = Drive::new(p);
    d.start();
    d.crash(1);
    d.wake();
    d.spawned();
    assert_eq!(
        d.m.poll_timeout().map(|t| t.kind),
        Some(DeadlineKind::StableUptime)
    );
    d.wake(); // up for 10 s
    assert_eq!(
        d.m.poll_timeout(),
        None,
        "streak over: nothing to watch for"
    );
    let before = d.now;
    d.crash(1);
    d.wake();
    assert_eq!(
        d.now.saturating_since(before),
        Duration::from_millis(100),
        "initial delay again"
    );
}

#[test]
fn breaker_opens_then_half_open_trial_closes_it() {
    let mut p = Drive::policy();
    p.backoff.initial = Duration::ZERO;
    p.backoff.reset_after = Duration::from_secs(5);
    p.breaker.max_restarts = 2;
    p.breaker.window = Duration::from_secs(60);
    p.breaker.cooldown = Cooldown::After(Duration::from_secs(30));
    let mut d = Drive::new(p);
    d.start();
    for _ in 0..2 {
        let out = d.crash(1);
        assert!(
            matches!(spawn_of(&out), Some((_, SpawnKind::Restart))),
            "zero backoff respawns at once"
        );
        d.spawned();
    }
    let out = d.crash(1);
    assert_eq!(out.transition().map(|t| t.2), Some(Cause::BreakerTripped));
    assert_eq!(d.m.state(), StateName::BreakerOpen);
    assert_eq!(d.m.instance(), None, "no child while open");
    assert_eq!(
        d.m.breaker(),
        BreakerStatus::Open {
            until: Some(Timestamp::from_secs_for_test(30))
        }
    );

    let out = d.wake();
    assert_eq!(d.now, Timestamp::from_secs_for_test(30));
    assert!(matches!(spawn_of(&out), Some((_, SpawnKind::Trial))));
    assert_eq!(out.transition().map(|t| t.2), Some(Cause::CooldownElapsed));
    d.spawned();
    assert_eq!(d.m.breaker(), BreakerStatus::HalfOpen);
    let out = d.advance(Duration::from_secs(5));
    assert!(out
        .notifications
        .iter()
        .any(|n| matches!(n, Notification::BreakerClosed { .. })));
    assert_eq!(d.m.breaker(), BreakerStatus::Closed);
}

#[test]
fn failed_trial_reopens_with_doubled_cooldown() {
    let mut p = Drive::policy();
    p.backoff.initial = Duration::ZERO;
    p.breaker.max_restarts = 0;
    p.breaker.cooldown = Cooldown::After(Duration::from_secs(10));
    p.breaker.max_cooldown = Duration::from_secs(25);
    let mut d = Drive::new(p);
    d.start();
    d.crash(1);
    assert_eq!(d.m.state(), StateName::BreakerOpen);
    let mut cooldowns = Vec::new();
    for _ in 0..4 {
        let opened = d.now;
        d.wake();
        cooldowns.push(d.now.saturating_since(opened).as_secs());
        d.spawned();
        let out = d.crash(1);
        assert_eq!(out.transition().map(|t| t.2), Some(Cause::BreakerTripped));
        assert_eq!(
            d.m.state(),
            StateName::BreakerOpen,
            "a failed trial reopens"
        );
    }
    assert_eq!(cooldowns, [10, 20, 25, 25]);
}

#[test]
fn cooldown_never_stays_open_until_reset() {
    let mut p = Drive::policy();
    p.backoff.initial = Duration::ZERO;
    p.breaker.max_restarts = 1;
    p.breaker.cooldown = Cooldown::Never;
    let mut d = Drive::new(p);
    d.start();
    d.crash(1);
    d.spawned();
    d.crash(1);
    assert_eq!(d.m.state(), StateName::BreakerOpen);
    assert_eq!(d.m.poll_timeout(), None);
    assert!(d.advance(Duration::from_secs(86_400)).effects.is_empty());
    let out = d.input(Input::ResetBreaker);
    assert!(matches!(spawn_of(&out), Some((_, SpawnKind::Start))));
    assert_eq!(d.m.breaker(), BreakerStatus::Closed);
}

#[test]
fn manual_restarts_count_in_the_breaker_window() {
    let mut p = Drive::policy();
    p.breaker.max_restarts = 2;
    let mut d = Drive::new(p);
    d.start();
    for _ in 0..2 {
        let out = d.input(Input::Restart {
            cause: RestartCause::Manual,
        });
        let instance = d.instance();
        assert!(has(
            &out,
            Effect::Signal {
                instance,
                signal: Signal::Term
            }
        ));
        d.input(Input::Exited {
            instance,
            status: ExitStatus::Signal(15),
        });
        let out = d.input(Input::Gone { instance });
        assert!(
            matches!(spawn_of(&out), Some((_, SpawnKind::Restart))),
            "manual: no backoff"
        );
        d.spawned();
    }
    d.input(Input::Restart {
        cause: RestartCause::Manual,
    });
    let instance = d.instance();
    d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(15),
    });
    d.input(Input::Gone { instance });
    assert_eq!(d.m.state(), StateName::BreakerOpen);
}

#[test]
fn restart_policies_and_exit_code_rules() {
    let cases = [
        (RestartPolicy::OnFailure, 0, StateName::Exited),
        (RestartPolicy::OnFailure, 1, StateName::Restarting),
        (RestartPolicy::Always, 0, StateName::Restarting),
        (RestartPolicy::Never, 1, StateName::Failed),
        (RestartPolicy::Never, 0, StateName::Exited),
        (RestartPolicy::Always, 42, StateName::Failed), // prevent_restart
        (RestartPolicy::Never, 43, StateName::Restarting), // force_restart
        (RestartPolicy::OnFailure, 7, StateName::Exited), // extra success code
    ];
    for (restart, code, expected) in cases {
        let mut p = Drive::policy();
        p.restart = restart;
        p.exit_codes.success = vec![0, 7];
        p.exit_codes.prevent_restart = vec![42];
        p.exit_codes.force_restart = vec![43];
        let mut d = Drive::new(p);
        d.start();
        let instance = d.instance();
        let out = d.input(Input::Exited {
            instance,
            status: ExitStatus::Code(code),
        });
        // Until the group is gone, a final exit shows as shutting down.
        if expected != StateName::Restarting {
            assert_eq!(d.m.state(), StateName::ShuttingDown);
            assert!(has(
                &out,
                Effect::Signal {
                    instance,
                    signal: Signal::Term
                }
            ));
        }
        d.input(Input::Gone { instance });
        assert_eq!(d.m.state(), expected, "{restart:?} exit {code}");
        if expected != StateName::Restarting {
            assert_eq!(d.m.last_exit(), Some(ExitStatus::Code(code)));
        }
    }
}

#[test]
fn spawn_failure_is_handled_like_a_crash() {
    let mut p = Drive::policy();
    p.breaker.max_restarts = 2;
    p.breaker.cooldown = Cooldown::Never;
    let mut d = Drive::new(p);
    d.input(Input::Start);
    let mut attempts = 1;
    loop {
        let instance = d.instance();
        let out = d.input(Input::SpawnFailed {
            instance,
            error: SpawnError::Os(2),
        });
        if d.m.state() == StateName::BreakerOpen {
            break;
        }
        assert!(out
            .notifications
            .iter()
            .any(|n| matches!(n, Notification::BackoffScheduled { .. })));
        d.wake();
        attempts += 1;
    }
    assert_eq!(attempts, 3, "first start plus max_restarts restarts");
}

#[test]
fn stop_escalates_to_kill_after_grace_and_completes_only_when_gone() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    let instance = d.instance();
    let out = d.input(Input::Stop {
        grace: Some(Duration::from_secs(2)),
    });
    assert!(has(
        &out,
        Effect::Signal {
            instance,
            signal: Signal::Term
        }
    ));
    assert_eq!(d.m.state(), StateName::ShuttingDown);
    // The leader exits on SIGTERM, another member of the group ignores it.
    d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(15),
    });
    assert_eq!(
        d.m.state(),
        StateName::ShuttingDown,
        "not stopped while a member lives"
    );
    let out = d.wake();
    assert_eq!(d.now, Timestamp::from_secs_for_test(2));
    assert!(has(&out, Effect::KillGroup { instance }));
    // The kill is retried until the group is gone.
    let out = d.wake();
    assert!(has(&out, Effect::KillGroup { instance }));
    let out = d.input(Input::Gone { instance });
    assert_eq!(
        out.transition().map(|t| (t.1, t.2)),
        Some((StateName::Stopped, Cause::Gone))
    );
    assert_eq!(d.m.poll_timeout(), None);
}

#[test]
fn stop_during_backoff_cancels_the_restart() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    d.crash(1);
    assert_eq!(
        d.m.poll_timeout().map(|t| t.kind),
        Some(DeadlineKind::Backoff)
    );
    d.input(Input::Stop { grace: None });
    assert_eq!(d.m.state(), StateName::Stopped);
    assert!(d.advance(Duration::from_secs(60)).effects.is_empty());
}

#[test]
fn stop_before_the_spawn_is_answered_signals_once_it_is() {
    let mut d = Drive::new(Drive::policy());
    d.input(Input::Start);
    let instance = d.instance();
    let out = d.input(Input::Stop { grace: None });
    assert!(out.effects.is_empty(), "no pid to signal yet");
    let out = d.spawned();
    assert!(has(
        &out,
        Effect::Signal {
            instance,
            signal: Signal::Term
        }
    ));
}

#[test]
fn kill_acts_at_once_and_is_final_until_start() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    let instance = d.instance();
    let out = d.input(Input::Kill);
    assert!(has(&out, Effect::KillGroup { instance }));
    assert_eq!(d.m.state(), StateName::Killed);
    d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(9),
    });
    d.input(Input::Gone { instance });
    assert_eq!(d.m.state(), StateName::Killed);
    assert!(d.advance(Duration::from_secs(3600)).effects.is_empty());
    let out = d.input(Input::Start);
    assert!(spawn_of(&out).is_some());
}

#[test]
fn start_while_killing_waits_for_the_old_group() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    let old = d.instance();
    d.input(Input::Kill);
    let out = d.input(Input::Start);
    assert!(spawn_of(&out).is_none(), "the old group is not gone yet");
    assert_eq!(d.m.state(), StateName::Starting);
    d.input(Input::Exited {
        instance: old,
        status: ExitStatus::Signal(9),
    });
    let out = d.input(Input::Gone { instance: old });
    assert!(matches!(spawn_of(&out), Some((_, SpawnKind::Start))));
}

#[test]
fn liveness_failures_restart_after_the_threshold() {
    let mut p = Drive::policy();
    p.health.liveness = Some(Thresholds {
        failure_threshold: 3,
        success_threshold: 1,
    });
    let mut d = Drive::new(p);
    d.start();
    let instance = d.instance();
    d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    d.probe(ProbeRole::Liveness, ProbeResult::Pass); // a pass breaks the run
    d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert_eq!(d.m.state(), StateName::Running);
    let out = d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert_eq!(out.transition().map(|t| t.2), Some(Cause::LivenessFailed));
    assert!(has(
        &out,
        Effect::Signal {
            instance,
            signal: Signal::Term
        }
    ));
    assert!(has(
        &out,
        Effect::Watch {
            instance,
            probes: processcontrol_core::Roles::NONE,
            sampling: false
        }
    ));
}

#[test]
fn startup_probe_suspends_liveness_until_it_passes() {
    let mut p = Drive::policy();
    p.health.liveness = Some(Thresholds {
        failure_threshold: 1,
        success_threshold: 1,
    });
    p.health.startup = Some(Thresholds {
        failure_threshold: 30,
        success_threshold: 1,
    });
    let mut d = Drive::new(p);
    d.input(Input::Start);
    let out = d.spawned();
    let instance = d.instance();
    let startup_only = processcontrol_core::Roles::NONE.with(ProbeRole::Startup);
    assert!(has(
        &out,
        Effect::Watch {
            instance,
            probes: startup_only,
            sampling: true
        }
    ));
    assert_eq!(d.m.state(), StateName::Starting);
    let out = d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert_eq!(
        out.ignored(),
        Some(IgnoreReason::NotApplicable),
        "slow starter not killed"
    );
    for _ in 0..5 {
        d.probe(ProbeRole::Startup, ProbeResult::Fail(ProbeFailure::Timeout));
    }
    let out = d.probe(ProbeRole::Startup, ProbeResult::Pass);
    assert_eq!(
        out.transition(),
        Some((
            StateName::Starting,
            StateName::Running,
            Cause::StartupPassed
        ))
    );
    let live = processcontrol_core::Roles::NONE.with(ProbeRole::Liveness);
    assert!(has(
        &out,
        Effect::Watch {
            instance,
            probes: live,
            sampling: true
        }
    ));
    let out = d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert_eq!(out.transition().map(|t| t.2), Some(Cause::LivenessFailed));
}

#[test]
fn startup_probe_failing_its_threshold_restarts() {
    let mut p = Drive::policy();
    p.health.startup = Some(Thresholds {
        failure_threshold: 2,
        success_threshold: 1,
    });
    let mut d = Drive::new(p);
    d.input(Input::Start);
    d.spawned();
    d.probe(ProbeRole::Startup, ProbeResult::Fail(ProbeFailure::Timeout));
    let out = d.probe(ProbeRole::Startup, ProbeResult::Fail(ProbeFailure::Timeout));
    assert_eq!(
        out.transition(),
        Some((
            StateName::Starting,
            StateName::Restarting,
            Cause::StartupFailed
        ))
    );
}

#[test]
fn readiness_sets_the_ready_flag_only() {
    let mut p = Drive::policy();
    p.health.readiness = Some(Thresholds {
        failure_threshold: 2,
        success_threshold: 2,
    });
    let mut d = Drive::new(p);
    d.start();
    assert!(!d.m.ready());
    d.probe(ProbeRole::Readiness, ProbeResult::Pass);
    assert!(!d.m.ready());
    let out = d.probe(ProbeRole::Readiness, ProbeResult::Pass);
    assert!(d.m.ready());
    assert!(out
        .notifications
        .iter()
        .any(|n| matches!(n, Notification::ReadyChanged { ready: true, .. })));
    d.probe(
        ProbeRole::Readiness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    let out = d.probe(
        ProbeRole::Readiness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert!(!d.m.ready());
    assert!(out
        .notifications
        .iter()
        .any(|n| matches!(n, Notification::ReadyChanged { ready: false, .. })));
    assert_eq!(d.m.state(), StateName::Running, "readiness never restarts");
    assert!(out.effects.is_empty());
}

fn limited(action: LimitAction, sustain: Duration) -> Drive {
    let mut p = Drive::policy();
    p.limits.rules = vec![LimitRule {
        resource: Resource::Memory,
        max: 100 << 20,
        sustain,
        action,
    }];
    let mut d = Drive::new(p);
    d.start();
    d
}

#[test]
fn a_spike_shorter_than_for_does_nothing() {
    let mut d = limited(LimitAction::Restart, Duration::from_secs(2));
    d.sample(mem(200 << 20));
    d.advance(Duration::from_secs(1));
    let out = d.sample(mem(200 << 20));
    assert!(out.effects.is_empty());
    d.advance(Duration::from_secs(1));
    d.sample(mem(50 << 20)); // back under: the run is over
    d.advance(Duration::from_secs(1));
    let out = d.sample(mem(200 << 20));
    assert!(out.effects.is_empty());
    assert_eq!(d.m.state(), StateName::Running);
}

#[test]
fn each_limit_action() {
    for (action, state) in [
        (LimitAction::Restart, StateName::Restarting),
        (LimitAction::GracefulShutdown, StateName::ShuttingDown),
        (LimitAction::Kill, StateName::Killed),
        (LimitAction::Warn, StateName::Running),
    ] {
        let mut d = limited(action, Duration::from_secs(2));
        let instance = d.instance();
        d.sample(mem(200 << 20));
        d.advance(Duration::from_secs(2));
        let out = d.sample(mem(200 << 20));
        assert_eq!(d.m.state(), state, "{action:?}");
        assert!(out.notifications.iter().any(|n| matches!(n, Notification::LimitExceeded { action: a, observed, .. } if *a == action && *observed == 200 << 20)));
        match action {
            LimitAction::Kill => assert!(has(&out, Effect::KillGroup { instance })),
            LimitAction::Warn => {
                assert!(out.effects.is_empty());
                d.advance(Duration::from_secs(1));
                let again = d.sample(mem(200 << 20));
                assert!(again.notifications.is_empty(), "warned once per violation");
            }
            _ => assert!(has(
                &out,
                Effect::Signal {
                    instance,
                    signal: Signal::Term
                }
            )),
        }
        if matches!(action, LimitAction::Kill | LimitAction::GracefulShutdown) {
            d.input(Input::Exited {
                instance,
                status: ExitStatus::Signal(9),
            });
            d.input(Input::Gone { instance });
            assert!(
                d.advance(Duration::from_secs(600)).effects.is_empty(),
                "final until start"
            );
        }
    }
}

#[test]
fn limits_grace_ignores_start_up_peaks() {
    let mut p = Drive::policy();
    p.limits.grace = Duration::from_secs(5);
    p.limits.rules = vec![LimitRule {
        resource: Resource::Cpu,
        max: 50,
        sustain: Duration::ZERO,
        action: LimitAction::Kill,
    }];
    let mut d = Drive::new(p);
    d.start();
    let out = d.sample(Usage {
        cpu: Some(300),
        ..Usage::default()
    });
    assert!(out.effects.is_empty());
    d.advance(Duration::from_secs(5));
    d.sample(Usage {
        cpu: Some(300),
        ..Usage::default()
    });
    assert_eq!(d.m.state(), StateName::Killed);
}

/// The seed's original bug: the health monitor and the resource monitor restarted the same
/// process at the same moment. Here both are inputs to one machine: exactly one restart.
#[test]
fn concurrent_liveness_failure_and_memory_violation_restart_once() {
    let mut p = Drive::policy();
    p.backoff.initial = Duration::ZERO;
    p.health.liveness = Some(Thresholds {
        failure_threshold: 1,
        success_threshold: 1,
    });
    p.limits.rules = vec![LimitRule {
        resource: Resource::Memory,
        max: 100,
        sustain: Duration::ZERO,
        action: LimitAction::Restart,
    }];
    let mut d = Drive::new(p);
    d.start();
    let instance = d.instance();
    let first = d.probe(
        ProbeRole::Liveness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    let second = d.input(Input::Sampled {
        instance,
        usage: mem(1000),
    });
    let third = d.input(Input::Restart {
        cause: RestartCause::Manual,
    });
    assert!(has(
        &first,
        Effect::Signal {
            instance,
            signal: Signal::Term
        }
    ));
    assert_eq!(second.ignored(), Some(IgnoreReason::Coalesced));
    assert_eq!(third.ignored(), Some(IgnoreReason::Coalesced));
    d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(15),
    });
    let out = d.input(Input::Gone { instance });
    assert_eq!(
        out.effects
            .iter()
            .filter(|e| matches!(e, Effect::Spawn { .. }))
            .count(),
        1
    );
    assert_eq!(d.m.restarts(), 1);
}

#[test]
fn stale_and_duplicate_facts_change_nothing() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    let old = d.instance();
    d.crash(1);
    d.wake();
    d.spawned();
    let before = d.m.clone();
    for input in [
        Input::Exited {
            instance: old,
            status: ExitStatus::Code(1),
        },
        Input::Gone { instance: old },
        Input::Probe {
            instance: old,
            role: ProbeRole::Liveness,
            result: ProbeResult::Fail(ProbeFailure::Timeout),
        },
        Input::Spawned {
            instance: Instance(99),
            pid: 1,
        },
    ] {
        let out = d.input(input);
        assert_eq!(out.ignored(), Some(IgnoreReason::Stale));
        assert!(out.effects.is_empty());
    }
    assert_eq!(d.m, before);
    let out = d.spawned(); // a duplicate Spawned for the current instance
    assert_eq!(out.ignored(), Some(IgnoreReason::NotApplicable));
}

#[test]
fn early_and_spurious_ticks_do_nothing() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    d.crash(1);
    let before = d.m.clone();
    let out = d.advance(Duration::from_millis(99));
    assert!(out.effects.is_empty() && out.notifications.is_empty());
    let mut after = d.m.clone();
    // Only the clock moved.
    assert_eq!(after.poll_timeout(), before.poll_timeout());
    assert_eq!(after.state(), before.state());
    let out = after.handle(Timestamp::ZERO, Input::Tick); // time going backwards is clamped
    assert!(out.effects.is_empty());
}

#[test]
fn invalid_policies_report_every_problem() {
    let mut p = Policy::default();
    p.backoff.factor = 0.5;
    p.backoff.jitter = 2.0;
    p.health.liveness = Some(Thresholds {
        failure_threshold: 0,
        success_threshold: 0,
    });
    p.limits.rules = vec![
        LimitRule {
            resource: Resource::Fds,
            max: 0,
            sustain: Duration::ZERO,
            action: LimitAction::Warn,
        },
        LimitRule {
            resource: Resource::Fds,
            max: 10,
            sustain: Duration::ZERO,
            action: LimitAction::Warn,
        },
    ];
    let errors = Machine::new(p).unwrap_err().0;
    assert_eq!(errors.len(), 6, "{errors:?}");
}

trait SecsForTest {
    fn from_secs_for_test(secs: u64) -> Timestamp;
}

impl SecsForTest for Timestamp {
    fn from_secs_for_test(secs: u64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }
}

/// Each timed phase names what its deadline is for, and a tick one nanosecond early does
/// nothing in any of them; the tick at the deadline acts.
#[test]
fn every_timed_phase_names_its_deadline_and_waits_for_it() {
    fn early_tick_does_nothing(d: &mut Drive, kind: DeadlineKind) {
        let deadline = d.m.poll_timeout().expect("a deadline");
        assert_eq!(deadline.kind, kind);
        let before = d.m.clone();
        let out = d.m.handle(
            Timestamp::from_nanos(deadline.at.as_nanos() - 1),
            Input::Tick,
        );
        assert!(
            out.effects.is_empty() && out.notifications.is_empty(),
            "{kind:?}: {out:?}"
        );
        assert_eq!(d.m.state(), before.state(), "{kind:?}");
        assert_eq!(d.m.poll_timeout(), before.poll_timeout(), "{kind:?}");
    }

    let mut p = Drive::policy();
    p.backoff.reset_after = Duration::from_secs(5);
    p.breaker.max_restarts = 1;
    p.breaker.cooldown = Cooldown::After(Duration::from_secs(30));
    let mut d = Drive::new(p);
    d.start();
    d.crash(1);
    early_tick_does_nothing(&mut d, DeadlineKind::Backoff);
    assert!(matches!(spawn_of(&d.wake()), Some((_, SpawnKind::Restart))));
    d.spawned();
    // A crash streak is running: staying up `reset_after` would end it.
    early_tick_does_nothing(&mut d, DeadlineKind::StableUptime);
    d.crash(1);
    assert_eq!(d.m.state(), StateName::BreakerOpen);
    early_tick_does_nothing(&mut d, DeadlineKind::BreakerCooldown);
    assert!(matches!(spawn_of(&d.wake()), Some((_, SpawnKind::Trial))));
    d.spawned();
    let instance = d.instance();
    d.input(Input::Stop { grace: None });
    early_tick_does_nothing(&mut d, DeadlineKind::StopGrace);
    assert!(has(&d.wake(), Effect::KillGroup { instance }));
    early_tick_does_nothing(&mut d, DeadlineKind::KillRetry);
    assert!(has(&d.wake(), Effect::KillGroup { instance }));
}

/// A transition names the instance it concerns and that instance's pid while it has one.
#[test]
fn transitions_name_the_instance_and_its_pid() {
    fn named(out: &Outcome) -> Option<(Option<Instance>, Option<u32>)> {
        out.notifications.iter().find_map(|n| match *n {
            Notification::Transition { instance, pid, .. } => Some((instance, pid)),
            _ => None,
        })
    }
    let mut d = Drive::new(Drive::policy());
    assert_eq!(
        named(&d.input(Input::Start)),
        Some((Some(Instance(1)), None))
    );
    assert_eq!(named(&d.spawned()), Some((Some(Instance(1)), Some(101))));
    let out = d.input(Input::Stop { grace: None });
    assert_eq!(named(&out), Some((Some(Instance(1)), Some(101))));
    d.input(Input::Exited {
        instance: Instance(1),
        status: ExitStatus::Signal(15),
    });
    let out = d.input(Input::Gone {
        instance: Instance(1),
    });
    assert_eq!(named(&out), Some((Some(Instance(1)), None)));
}

/// While a stop drains, the first exit of the main process is its last exit; a second report
/// of an exit changes nothing.
#[test]
fn the_first_exit_during_a_stop_is_the_one_kept() {
    let mut d = Drive::new(Drive::policy());
    assert_eq!(d.m.newest(), None, "nothing spawned yet");
    d.start();
    let instance = d.instance();
    d.input(Input::Stop { grace: None });
    let out = d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(15),
    });
    assert_eq!(out.ignored(), None);
    assert_eq!(d.m.last_exit(), Some(ExitStatus::Signal(15)));
    let out = d.input(Input::Exited {
        instance,
        status: ExitStatus::Code(3),
    });
    assert_eq!(out.ignored(), Some(IgnoreReason::NotApplicable));
    assert_eq!(d.m.last_exit(), Some(ExitStatus::Signal(15)));
    d.input(Input::Gone { instance });
    assert_eq!(d.m.state(), StateName::Stopped);
    assert_eq!(d.m.newest(), Some(instance));
}

/// Among limits exceeded in the same sample with equally severe actions, the first rule in
/// the policy's order names the cause.
#[test]
fn equally_severe_limits_name_the_first_rule() {
    for (first, second) in [
        (Resource::Memory, Resource::Fds),
        (Resource::Fds, Resource::Memory),
    ] {
        let mut p = Drive::policy();
        p.limits.rules = [first, second]
            .into_iter()
            .map(|resource| LimitRule {
                resource,
                max: 10,
                sustain: Duration::ZERO,
                action: LimitAction::Restart,
            })
            .collect();
        let mut d = Drive::new(p);
        d.start();
        let out = d.sample(Usage {
            memory: 11,
            fds: 11,
            ..Usage::default()
        });
        assert_eq!(
            out.transition().map(|t| t.2),
            Some(Cause::Limit {
                resource: first,
                action: LimitAction::Restart
            })
        );
    }
}

/// Probe role sets and the fixed-capacity output lists behave as sets and lists.
#[test]
fn role_sets_and_output_lists() {
    use processcontrol_core::Roles;
    let both = Roles::NONE
        .with(ProbeRole::Liveness)
        .with(ProbeRole::Liveness)
        .with(ProbeRole::Readiness);
    assert!(both.contains(ProbeRole::Liveness) && both.contains(ProbeRole::Readiness));
    assert!(!both.contains(ProbeRole::Startup));
    assert_eq!(
        both.iter().collect::<Vec<_>>(),
        [ProbeRole::Liveness, ProbeRole::Readiness]
    );
    assert!(Roles::NONE.is_empty() && !both.is_empty());

    let mut d = Drive::new(Drive::policy());
    let out = d.input(Input::Start);
    assert_eq!(out.effects.len(), 1);
    assert!(!out.effects.is_empty());
    assert_eq!(out.effects.iter().count(), out.effects.len());
    let out = d.input(Input::Tick);
    assert_eq!(out.effects.len(), 0);
    assert!(out.effects.is_empty());
}

/// Each failure of a probe up to its threshold is reported with its count (`liveness failed
/// 2/3`); past the threshold a probe that keeps failing is not reported again.
#[test]
fn probe_failures_are_counted_up_to_the_threshold() {
    let mut p = Drive::policy();
    p.health.readiness = Some(Thresholds {
        failure_threshold: 3,
        success_threshold: 1,
    });
    let mut d = Drive::new(p);
    d.start();
    let mut counts = Vec::new();
    for _ in 0..5 {
        let out = d.probe(
            ProbeRole::Readiness,
            ProbeResult::Fail(ProbeFailure::HttpStatus(503)),
        );
        counts.extend(out.notifications.iter().filter_map(|n| match *n {
            Notification::ProbeFailed {
                role: ProbeRole::Readiness,
                failure: ProbeFailure::HttpStatus(503),
                consecutive,
                threshold: 3,
                ..
            } => Some(consecutive),
            _ => None,
        }));
    }
    assert_eq!(counts, [1, 2, 3]);
    d.probe(ProbeRole::Readiness, ProbeResult::Pass);
    let out = d.probe(
        ProbeRole::Readiness,
        ProbeResult::Fail(ProbeFailure::Timeout),
    );
    assert!(
        out.notifications
            .iter()
            .any(|n| matches!(n, Notification::ProbeFailed { consecutive: 1, .. })),
        "a pass starts the count again: {out:?}"
    );
}

/// A new policy takes effect only when it is valid; an invalid one changes nothing.
#[test]
fn reconfigure_refuses_an_invalid_policy() {
    let mut d = Drive::new(Drive::policy());
    let mut invalid = Drive::policy();
    invalid.backoff.factor = 0.5;
    assert!(d.m.reconfigure(invalid).is_err());
    assert_eq!(d.m.policy(), &Drive::policy());
    let mut valid = Drive::policy();
    valid.breaker.max_restarts = 9;
    assert_eq!(d.m.reconfigure(valid.clone()), Ok(()));
    assert_eq!(d.m.policy(), &valid);
}

/// The last restart's cause is named as events name it, once a restart happened.
#[test]
fn the_last_restart_cause_is_named() {
    let mut d = Drive::new(Drive::policy());
    d.start();
    assert_eq!(d.m.last_restart_cause(), None);
    d.crash(1);
    d.wake();
    assert_eq!(d.m.last_restart_cause(), Some("exited"));
    d.spawned();
    let instance = d.instance();
    d.input(Input::Restart {
        cause: RestartCause::Manual,
    });
    d.input(Input::Exited {
        instance,
        status: ExitStatus::Signal(15),
    });
    d.input(Input::Gone { instance });
    assert_eq!(d.m.last_restart_cause(), Some("manual_restart"));
}

/// An instance with neither probes nor limits is still sampled (status shows every process's
/// usage), and its sampling ends when it leaves.
#[test]
fn every_live_instance_is_sampled_until_it_leaves() {
    let mut d = Drive::new(Drive::policy());
    d.input(Input::Start);
    let out = d.spawned();
    let instance = d.instance();
    assert!(has(
        &out,
        Effect::Watch {
            instance,
            probes: processcontrol_core::Roles::NONE,
            sampling: true
        }
    ));
    let out = d.input(Input::Exited {
        instance,
        status: ExitStatus::Code(0),
    });
    assert!(has(
        &out,
        Effect::Watch {
            instance,
            probes: processcontrol_core::Roles::NONE,
            sampling: false
        }
    ));
}
