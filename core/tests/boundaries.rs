//! Properties at the edges the random-sequence properties rarely hit exactly: the breaker's
//! `max_restarts` and window boundaries, its reset, every limit comparison, early and spurious
//! ticks in every phase, stability judged by time whatever the order of `Tick` and `Exited`,
//! and backoff policies with extreme (valid) factors. Cases per property: 10,000 (override
//! with PROPTEST_CASES).

use std::time::Duration;

use proptest::prelude::*;

mod support;
use support::config;

use processcontrol_core::sim;
use processcontrol_core::{
    BackoffPolicy, BreakerPolicy, BreakerStatus, Cooldown, Effect, ExitStatus, Input, Instance,
    LimitAction, LimitRule, Machine, Notification, Outcome, Policy, Resource, RestartCause,
    RestartPolicy, SpawnError, SpawnKind, StateName, Timestamp, Usage,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at(n: u64) -> Timestamp {
    Timestamp::from_millis(n)
}

/// The spawn an outcome asks for.
fn spawn(out: &Outcome) -> Option<(Instance, SpawnKind)> {
    out.effects.iter().find_map(|e| match *e {
        Effect::Spawn { instance, kind } => Some((instance, kind)),
        _ => None,
    })
}

fn delay(out: &Outcome) -> Option<Duration> {
    out.notifications.iter().find_map(|n| match *n {
        Notification::BackoffScheduled { delay } => Some(delay),
        _ => None,
    })
}

/// Confirms the pending spawn at `now`.
fn confirm(m: &mut Machine, now: Timestamp) {
    let instance = m.instance().expect("a spawn is pending");
    m.handle(now, Input::Spawned { instance, pid: 7 });
}

/// The live instance crashes at `now` and is gone at once: the outcome of the `Gone`.
fn crash(m: &mut Machine, now: Timestamp) -> Outcome {
    let instance = m.instance().expect("an instance is live");
    m.handle(
        now,
        Input::Exited {
            instance,
            status: ExitStatus::Code(1),
        },
    );
    m.handle(now, Input::Gone { instance })
}

/// A manual restart of the live instance at `now`, carried out at once: the outcome of the
/// `Gone` that lets the new instance spawn.
fn manual(m: &mut Machine, now: Timestamp) -> Outcome {
    let instance = m.instance().expect("an instance is live");
    m.handle(
        now,
        Input::Restart {
            cause: RestartCause::Manual,
        },
    );
    m.handle(
        now,
        Input::Exited {
            instance,
            status: ExitStatus::Signal(15),
        },
    );
    m.handle(now, Input::Gone { instance })
}

/// A policy whose restarts are immediate (no backoff), with the given breaker.
fn immediate(breaker: BreakerPolicy) -> Policy {
    let mut policy = Policy::default();
    policy.restart = RestartPolicy::Always;
    policy.backoff = BackoffPolicy {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        jitter: 0.0,
        ..BackoffPolicy::default()
    };
    policy.breaker = breaker;
    policy
}

/// Everything about a machine a driver or an operator can observe, but its clock.
fn observable(m: &Machine) -> impl PartialEq + std::fmt::Debug {
    (
        m.state(),
        m.instance(),
        m.pid(),
        m.poll_timeout(),
        m.breaker(),
        m.restarts(),
        m.up_since(),
        m.ready(),
        m.last_exit(),
    )
}

/// An extreme but valid backoff: nanosecond to century durations, factors up to `f64::MAX`.
fn wild_backoff() -> impl Strategy<Value = BackoffPolicy> {
    let nanos = prop_oneof![0u64..2_000, 0u64..60_000_000_000, any::<u64>()];
    let factor = prop_oneof![1.0f64..4.0, 1.0f64..1e300, Just(1e300), Just(f64::MAX)];
    (
        nanos.clone(),
        nanos,
        factor,
        0.0f64..=1.0,
        prop_oneof![Just(1.0f64), 0.0f64..=1.0],
    )
        .prop_map(|(a, b, factor, jitter, j1)| BackoffPolicy {
            initial: Duration::from_nanos(a.min(b)),
            max: Duration::from_nanos(a.max(b)),
            factor,
            // Full jitter is a boundary of its own.
            jitter: if j1 == 1.0 { 1.0 } else { jitter },
            reset_after: Duration::from_secs(3600),
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any valid backoff policy and any mix of crashes and spawn failures: `handle` never
    /// panics (a factor of 1e300 once overflowed `Duration`), and every delay lies in
    /// `[initial * (1 - jitter), max]`.
    #[test]
    fn valid_backoff_never_panics(
        backoff in wild_backoff(), seed in any::<u64>(),
        failures in prop::collection::vec(any::<bool>(), 1..24),
    ) {
        let mut policy = Policy::default();
        policy.backoff = backoff;
        policy.seed = seed;
        policy.breaker.max_restarts = u32::MAX;
        policy.breaker.window = Duration::from_nanos(1);
        let mut m = Machine::new(policy).unwrap();
        let mut now = Timestamp::ZERO;
        m.handle(now, Input::Start);
        let floor = backoff.initial.mul_f64(1.0 - backoff.jitter);
        for spawn_failed in failures {
            let instance = m.instance().unwrap();
            let out = if spawn_failed {
                m.handle(now, Input::SpawnFailed { instance, error: SpawnError::Os(2) })
            } else {
                confirm(&mut m, now);
                crash(&mut m, now)
            };
            if let Some(d) = delay(&out) {
                prop_assert!(d <= backoff.max, "{d:?} above {:?}", backoff.max);
                prop_assert!(d + Duration::from_nanos(1) >= floor, "{d:?} below {floor:?}");
            }
            match m.poll_timeout() {
                Some(deadline) => {
                    now = deadline.at;
                    m.handle(now, Input::Tick);
                }
                None => prop_assert_eq!(m.state(), StateName::Restarting),
            }
            prop_assert!(m.instance().is_some(), "{:?}", m.state());
        }
    }

    /// Stability is judged by the times alone: an instance that was up for `reset_after` ended
    /// the crash streak (and passed a half-open trial) whether its stable-uptime tick was
    /// handled before its exit or not, and one that was not up that long did neither.
    #[test]
    fn stability_is_judged_by_time(
        reset_after in 1u64..10_000, uptime_per_mille in 0u64..2_000, streak in 1usize..5,
        jitter in 0.0f64..0.45, seed in any::<u64>(), trial in any::<bool>(),
    ) {
        let reset_after = ms(reset_after);
        let uptime = reset_after.mul_f64(uptime_per_mille as f64 / 1000.0);
        let mut policy = Policy::default();
        policy.backoff = BackoffPolicy { jitter, reset_after, ..BackoffPolicy::default() };
        policy.breaker = BreakerPolicy {
            max_restarts: if trial { 1 } else { 100 },
            window: Duration::from_nanos(1),
            cooldown: Cooldown::After(ms(500)),
            max_cooldown: ms(4000),
        };
        policy.seed = seed;
        let mut m = Machine::new(policy).unwrap();
        let mut now = Timestamp::ZERO;
        m.handle(now, Input::Start);
        confirm(&mut m, now);
        if trial {
            // One restart fits; the next crash opens the breaker, and its cooldown ends in the
            // half-open trial.
            crash(&mut m, now);
            now = m.poll_timeout().unwrap().at;
            m.handle(now, Input::Tick);
            confirm(&mut m, now);
            crash(&mut m, now);
            prop_assert_eq!(m.state(), StateName::BreakerOpen);
            now = m.poll_timeout().unwrap().at;
            m.handle(now, Input::Tick);
            prop_assert_eq!(m.breaker(), BreakerStatus::HalfOpen);
            confirm(&mut m, now);
        } else {
            for _ in 0..streak {
                crash(&mut m, now);
                now = m.poll_timeout().unwrap().at;
                m.handle(now, Input::Tick);
                confirm(&mut m, now);
            }
        }
        let since = now;
        let exit = since.saturating_add(uptime);
        let mut ticked = m.clone();
        if let Some(deadline) = ticked.poll_timeout().filter(|d| d.at <= exit) {
            ticked.handle(deadline.at, Input::Tick);
        }
        let a = crash(&mut ticked, exit);
        let b = crash(&mut m, exit);
        prop_assert_eq!(observable(&ticked), observable(&m));
        prop_assert_eq!(delay(&a), delay(&b));
        let stable = uptime >= reset_after;
        if trial {
            // A passed trial closes the breaker and the exit is an ordinary first crash; a
            // failed one opens it again.
            prop_assert_eq!(m.state() == StateName::BreakerOpen, !stable);
        } else {
            // A stable run restarts the streak from `initial`; otherwise it grew past it (by
            // a factor of 2 at least, more than the jitter takes off).
            let initial = BackoffPolicy::default().initial;
            let d = delay(&b).unwrap();
            prop_assert_eq!(d <= initial, stable, "delay {:?} after {:?} up", d, uptime);
        }
    }

    /// The breaker's window, exactly: within one window, the `max_restarts`-th restart spawns
    /// and the next one opens the breaker; a restart exactly one window after the first
    /// counted one is allowed. Crashes and manual restarts are counted alike.
    #[test]
    fn breaker_window_boundary(
        max_restarts in 1u32..8, window in 2u64..10_000, manual_restarts in any::<bool>(),
        gaps in prop::collection::vec(0u64..1_000, 8), exactly_one_window_later in any::<bool>(),
    ) {
        let mut m = Machine::new(immediate(BreakerPolicy {
            max_restarts,
            window: ms(window),
            cooldown: Cooldown::Never,
            max_cooldown: ms(1),
        })).unwrap();
        m.handle(at(0), Input::Start);
        confirm(&mut m, at(0));
        let restart = |m: &mut Machine, now| if manual_restarts { manual(m, now) } else { crash(m, now) };
        // The restarts inside one window: spread by the gaps, all before `first + window`.
        let first = 1;
        let mut now = first;
        for (i, gap) in gaps.iter().take(max_restarts as usize).enumerate() {
            if i > 0 {
                now = (now + gap).min(first + window - 1);
            }
            let out = restart(&mut m, at(now));
            prop_assert_eq!(spawn(&out).map(|s| s.1), Some(SpawnKind::Restart), "restart {} at {}", i + 1, now);
            confirm(&mut m, at(now));
        }
        prop_assert_eq!(m.restarts(), u64::from(max_restarts));
        if exactly_one_window_later {
            // The first counted restart has just left the window.
            let out = restart(&mut m, at(first + window));
            prop_assert_eq!(spawn(&out).map(|s| s.1), Some(SpawnKind::Restart));
            prop_assert_eq!(m.state(), StateName::Restarting);
        } else {
            let out = restart(&mut m, at(now));
            prop_assert!(spawn(&out).is_none());
            prop_assert_eq!(m.state(), StateName::BreakerOpen);
            prop_assert_eq!(m.restarts(), u64::from(max_restarts));
        }
    }

    /// A crash loop opens the breaker at the crash that finds the window full, not a backoff
    /// later: no delay is scheduled and the crash streak does not grow.
    #[test]
    fn a_full_window_opens_at_the_crash(max_restarts in 1u32..8, jitter in 0.0f64..=1.0, seed in any::<u64>()) {
        let mut policy = Policy::default();
        policy.backoff.jitter = jitter;
        policy.seed = seed;
        policy.breaker = BreakerPolicy {
            max_restarts,
            window: Duration::from_secs(3600),
            cooldown: Cooldown::Never,
            max_cooldown: ms(1),
        };
        let mut m = Machine::new(policy).unwrap();
        let mut now = at(0);
        m.handle(now, Input::Start);
        confirm(&mut m, now);
        for _ in 0..max_restarts {
            let out = crash(&mut m, now);
            prop_assert!(delay(&out).is_some());
            now = m.poll_timeout().unwrap().at;
            m.handle(now, Input::Tick);
            confirm(&mut m, now);
        }
        let out = crash(&mut m, now);
        prop_assert_eq!(delay(&out), None);
        prop_assert_eq!(m.state(), StateName::BreakerOpen);
        prop_assert_eq!(m.poll_timeout(), None);
    }

    /// An explicit start or a breaker reset forgets the restart history: a full window of
    /// restarts fits again right away, and the one after it opens the breaker again.
    #[test]
    fn reset_forgets_the_history(max_restarts in 1u32..8, by_start in any::<bool>(), manual_restarts in any::<bool>()) {
        let mut m = Machine::new(immediate(BreakerPolicy {
            max_restarts,
            window: Duration::from_secs(3600),
            cooldown: Cooldown::Never,
            max_cooldown: ms(1),
        })).unwrap();
        let now = at(10);
        m.handle(now, Input::Start);
        confirm(&mut m, now);
        for round in 0..2 {
            for i in 0..max_restarts {
                let out = if manual_restarts { manual(&mut m, now) } else { crash(&mut m, now) };
                prop_assert!(spawn(&out).is_some(), "round {round}, restart {}", i + 1);
                confirm(&mut m, now);
            }
            crash(&mut m, now);
            prop_assert_eq!(m.state(), StateName::BreakerOpen);
            let out = if by_start {
                m.handle(now, Input::Stop { grace: None });
                m.handle(now, Input::Start)
            } else {
                m.handle(now, Input::ResetBreaker)
            };
            prop_assert_eq!(spawn(&out).map(|s| s.1), Some(SpawnKind::Start));
            confirm(&mut m, now);
        }
    }

    /// Every limit comparison: usage at `max` is no violation, above it for less than `for` is
    /// not acted on, for exactly `for` it acts (once), and samples inside `limits.grace` after
    /// the spawn are not held against the instance.
    #[test]
    fn limit_boundaries(
        resource_index in 0usize..5, max in 1u64..1_000_000, sustain in 0u64..5_000,
        grace in 0u64..2_000, action_index in 0usize..4, interruption in any::<bool>(),
    ) {
        let resource = Resource::ALL[resource_index];
        let action = [LimitAction::Warn, LimitAction::Restart, LimitAction::GracefulShutdown, LimitAction::Kill][action_index];
        let mut policy = Policy::default();
        policy.limits.grace = ms(grace);
        policy.limits.rules = vec![LimitRule { resource, max, sustain: ms(sustain), action }];
        let mut m = Machine::new(policy).unwrap();
        m.handle(at(0), Input::Start);
        confirm(&mut m, at(0));
        let instance = m.instance().unwrap();
        let usage = |amount: u64| {
            let mut u = Usage { cpu: Some(0), ..Usage::default() };
            match resource {
                Resource::Memory => u.memory = amount,
                Resource::Cpu => u.cpu = Some(amount),
                Resource::Fds => u.fds = amount,
                Resource::Processes => u.processes = amount,
                Resource::Threads => u.threads = amount,
            }
            u
        };
        let quiet = |m: &mut Machine, t: Timestamp, amount: u64| -> Result<(), TestCaseError> {
            let before = observable(m);
            let out = m.handle(t, Input::Sampled { instance, usage: usage(amount) });
            prop_assert!(out.effects.is_empty() && out.notifications.is_empty(), "{amount} at {t:?}: {out:?}");
            prop_assert_eq!(observable(m), before);
            Ok(())
        };
        let just_before = |t: u64| Timestamp::from_nanos(at(t).as_nanos() - 1);
        // Inside the grace even a huge figure counts for nothing, not even as a start.
        if grace > 0 {
            quiet(&mut m, just_before(grace), u64::MAX)?;
        }
        let start = grace;
        // At `max`: no violation.
        quiet(&mut m, at(start), max)?;
        let mut since = start;
        if interruption && sustain > 0 {
            // Above, then back at max before `for` is up: that run of violations is over.
            quiet(&mut m, at(start), max + 1)?;
            quiet(&mut m, at(start + sustain - 1), max)?;
            since = start + sustain;
        }
        if sustain > 0 {
            quiet(&mut m, at(since), max + 1)?;
            quiet(&mut m, just_before(since + sustain), max + 1)?;
        }
        let out = m.handle(at(since + sustain), Input::Sampled { instance, usage: usage(max + 1) });
        let reported = out.notifications.iter().any(|n| matches!(*n,
            Notification::LimitExceeded { resource: r, observed, max: mx, action: a, .. }
                if r == resource && observed == max + 1 && mx == max && a == action));
        prop_assert!(reported, "{out:?}");
        let expected = match action {
            LimitAction::Warn => StateName::Running,
            LimitAction::Restart => StateName::Restarting,
            LimitAction::GracefulShutdown => StateName::ShuttingDown,
            LimitAction::Kill => StateName::Killed,
        };
        prop_assert_eq!(m.state(), expected);
        if action == LimitAction::Warn {
            // Reported once per violation, not once per sample.
            quiet(&mut m, at(since + sustain + 1), max + 1)?;
        }
    }

    /// When several limits act on one sample, each is reported and the most severe action
    /// (kill > graceful-shutdown > restart > warn) is the one taken.
    #[test]
    fn most_severe_limit_wins(actions in prop::collection::vec(0usize..4, 2..5)) {
        let all = [LimitAction::Warn, LimitAction::Restart, LimitAction::GracefulShutdown, LimitAction::Kill];
        let mut policy = Policy::default();
        policy.limits.grace = Duration::ZERO;
        policy.limits.rules = actions.iter().zip(Resource::ALL).map(|(&a, resource)| LimitRule {
            resource, max: 10, sustain: Duration::ZERO, action: all[a],
        }).collect();
        let mut m = Machine::new(policy).unwrap();
        m.handle(at(0), Input::Start);
        confirm(&mut m, at(0));
        let instance = m.instance().unwrap();
        let usage = Usage { memory: 11, cpu: Some(11), fds: 11, processes: 11, threads: 11 };
        let out = m.handle(at(1), Input::Sampled { instance, usage });
        let reported = out.notifications.iter().filter(|n| matches!(n, Notification::LimitExceeded { .. })).count();
        prop_assert_eq!(reported, actions.len());
        let worst = all[*actions.iter().max().unwrap()];
        let expected = match worst {
            LimitAction::Warn => StateName::Running,
            LimitAction::Restart => StateName::Restarting,
            LimitAction::GracefulShutdown => StateName::ShuttingDown,
            LimitAction::Kill => StateName::Killed,
        };
        prop_assert_eq!(m.state(), expected);
    }

    /// An early or spurious tick, in whatever phase a random history left the machine, does
    /// nothing: no effect, no notification, and the state and the next deadline unchanged.
    #[test]
    fn early_ticks_do_nothing(data in prop::collection::vec(any::<u8>(), 0..600), fraction in 0.0f64..1.0) {
        let sim = sim::run(&data, false).map_err(|v| TestCaseError::fail(v.to_string()))?;
        let mut m = sim.machine().clone();
        let now = m.now();
        let when = match m.poll_timeout() {
            Some(d) if d.at > now => {
                let early = ((d.at.as_nanos() - now.as_nanos()) as f64 * fraction) as u64;
                Timestamp::from_nanos(now.as_nanos() + early).min(Timestamp::from_nanos(d.at.as_nanos() - 1))
            }
            Some(_) => return Ok(()), // due: not early
            None => now,
        };
        let before = observable(&m);
        let out = m.handle(when, Input::Tick);
        prop_assert!(out.effects.is_empty(), "{out:?}");
        prop_assert!(out.notifications.is_empty(), "{out:?}");
        prop_assert_eq!(observable(&m), before);
    }
}

/// The minimal panic: initial 1 ns, factor 1e300, max 1 ns, then `Restart`,
/// `SpawnFailed`, `Tick`, `SpawnFailed`.
#[test]
fn a_huge_factor_does_not_overflow() {
    let mut policy = Policy::default();
    policy.backoff = BackoffPolicy {
        initial: Duration::from_nanos(1),
        factor: 1e300,
        max: Duration::from_nanos(1),
        jitter: 0.0,
        reset_after: Duration::from_secs(60),
    };
    let mut m = Machine::new(policy).unwrap();
    m.handle(
        at(0),
        Input::Restart {
            cause: RestartCause::Manual,
        },
    );
    let failed = |m: &mut Machine| {
        let instance = m.instance().unwrap();
        m.handle(
            at(0),
            Input::SpawnFailed {
                instance,
                error: SpawnError::Os(2),
            },
        )
    };
    failed(&mut m);
    m.handle(Timestamp::from_nanos(1), Input::Tick);
    let out = failed(&mut m);
    assert_eq!(delay(&out), Some(Duration::from_nanos(1)));
}

/// A kill while a restart's stop has already escalated still wins: the process ends `killed`
/// and is not respawned.
#[test]
fn kill_after_an_escalated_restart_is_final() {
    let mut m = Machine::new(Policy::default()).unwrap();
    m.handle(at(0), Input::Start);
    confirm(&mut m, at(0));
    let instance = m.instance().unwrap();
    m.handle(
        at(1),
        Input::Restart {
            cause: RestartCause::Manual,
        },
    );
    let grace = m.poll_timeout().unwrap().at;
    let out = m.handle(grace, Input::Tick);
    assert!(out
        .effects
        .iter()
        .any(|e| matches!(e, Effect::KillGroup { .. })));
    let out = m.handle(grace, Input::Kill);
    assert_eq!(out.ignored(), None);
    assert_eq!(m.state(), StateName::Killed);
    m.handle(
        grace,
        Input::Exited {
            instance,
            status: ExitStatus::Signal(9),
        },
    );
    let out = m.handle(grace, Input::Gone { instance });
    assert_eq!(spawn(&out), None);
    assert_eq!(m.state(), StateName::Killed);
}

/// A half-open trial that is stopped ends the trial: the breaker shows closed, not half-open.
#[test]
fn stopping_a_trial_ends_it() {
    let mut m = Machine::new(immediate(BreakerPolicy {
        max_restarts: 1,
        window: Duration::from_secs(60),
        cooldown: Cooldown::After(ms(100)),
        max_cooldown: ms(100),
    }))
    .unwrap();
    m.handle(at(0), Input::Start);
    confirm(&mut m, at(0));
    crash(&mut m, at(0));
    confirm(&mut m, at(0));
    crash(&mut m, at(0));
    assert_eq!(m.state(), StateName::BreakerOpen);
    m.handle(at(100), Input::Tick);
    confirm(&mut m, at(100));
    assert_eq!(m.breaker(), BreakerStatus::HalfOpen);
    let instance = m.instance().unwrap();
    m.handle(at(101), Input::Stop { grace: None });
    m.handle(
        at(101),
        Input::Exited {
            instance,
            status: ExitStatus::Signal(15),
        },
    );
    m.handle(at(101), Input::Gone { instance });
    assert_eq!(m.state(), StateName::Stopped);
    assert_eq!(m.breaker(), BreakerStatus::Closed);
}

/// A transition with no current instance (a stop during backoff) names the newest instance,
/// so its events can be tied to the run they end.
#[test]
fn a_stop_during_backoff_names_the_last_instance() {
    let mut m = Machine::new(Policy::default()).unwrap();
    m.handle(at(0), Input::Start);
    confirm(&mut m, at(0));
    crash(&mut m, at(0));
    assert_eq!(m.state(), StateName::Restarting);
    let out = m.handle(at(1), Input::Stop { grace: None });
    let named = out.notifications.iter().find_map(|n| match *n {
        Notification::Transition { instance, .. } => Some(instance),
        _ => None,
    });
    assert_eq!(named, Some(Some(Instance(1))));
}
