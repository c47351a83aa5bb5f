//! Property tests over random policies and random event sequences, driven through the
//! simulation harness (machine + fake OS + reference model). The invariants are numbered as in
//! docs/state-machine.md; `sim::run` checks 1-6 and 8 after every step and ends every run with
//! a stop that must complete. Cases per property: 10,000 (override with PROPTEST_CASES).

use proptest::prelude::*;

mod support;
use support::config;

use processcontrol_core::sim;
use processcontrol_core::{BackoffPolicy, Input, Machine, Timestamp};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600)
}

proptest! {
    #![proptest_config(config())]

    /// Invariants 1-6 and 8 after every step, and "every stop completes" at the end.
    #[test]
    fn invariants_hold(data in bytes()) {
        if let Err(violation) = sim::run(&data, false) {
            // Replay with the story recorded, so the failure reads like one.
            let violation = sim::run(&data, true).err().unwrap_or(violation);
            prop_assert!(false, "{violation}");
        }
    }

    /// Invariant 7: the same inputs give byte-identical outputs.
    #[test]
    fn deterministic(data in bytes()) {
        let a = sim::run(&data, true);
        let b = sim::run(&data, true);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.story(), b.story());
                prop_assert_eq!(a.machine(), b.machine());
            }
            (a, b) => prop_assert!(false, "runs disagree or fail: {:?} / {:?}", a.err(), b.err()),
        }
    }

    /// Invariant 6, focused: after any prefix, a fact about any other instance changes nothing.
    #[test]
    fn stale_facts_change_nothing(data in bytes(), other in 0u64..50, kind in 0u8..6) {
        let sim = match sim::run(&data, false) {
            Ok(sim) => sim,
            Err(v) => return Err(TestCaseError::fail(v.to_string())),
        };
        let mut machine: Machine = sim.machine().clone();
        let current = machine.instance().map(|i| i.0);
        prop_assume!(current != Some(other));
        let instance = processcontrol_core::Instance(other);
        let input = match kind {
            0 => Input::Spawned { instance, pid: 1 },
            1 => Input::Exited { instance, status: processcontrol_core::ExitStatus::Code(1) },
            2 => Input::Gone { instance },
            3 => Input::Probe { instance, role: processcontrol_core::ProbeRole::Liveness, result: processcontrol_core::ProbeResult::Fail(processcontrol_core::ProbeFailure::Timeout) },
            4 => Input::SpawnFailed { instance, error: processcontrol_core::SpawnError::Os(2) },
            _ => Input::Sampled { instance, usage: processcontrol_core::Usage { memory: u64::MAX, ..Default::default() } },
        };
        let before = machine.clone();
        let out = machine.handle(machine.now(), input);
        prop_assert_eq!(&machine, &before);
        prop_assert!(out.effects.is_empty());
        prop_assert_eq!(out.ignored(), Some(processcontrol_core::IgnoreReason::Stale));
    }

    /// Invariant 8, on the machine's own timeline: in a run of crashes with no stable uptime
    /// between them, the delays the machine waits grow (up to their jitter) and stay below max.
    #[test]
    fn backoff_grows_and_caps(
        initial_ms in 0u64..500, extra_ms in 0u64..5000, factor in 1.0f64..4.0,
        jitter in 0.0f64..=1.0, seed in any::<u64>(), crashes in 1usize..40,
    ) {
        let backoff = BackoffPolicy {
            initial: std::time::Duration::from_millis(initial_ms),
            max: std::time::Duration::from_millis(initial_ms + extra_ms),
            factor,
            jitter,
            reset_after: std::time::Duration::from_secs(3600),
        };
        let mut policy = processcontrol_core::Policy::default();
        policy.backoff = backoff;
        policy.breaker.max_restarts = u32::MAX;
        policy.seed = seed;
        let mut m = Machine::new(policy).unwrap();
        let mut now = Timestamp::ZERO;
        let mut last = std::time::Duration::ZERO;
        m.handle(now, Input::Start);
        for pid in 0..crashes as u32 {
            let instance = m.instance().unwrap();
            m.handle(now, Input::Spawned { instance, pid });
            m.handle(now, Input::Exited { instance, status: processcontrol_core::ExitStatus::Code(1) });
            m.handle(now, Input::Gone { instance });
            if let Some(deadline) = m.poll_timeout() {
                let delay = deadline.at.saturating_since(now);
                // The base never decreases and each delay is drawn from its top `jitter`
                // fraction, so a delay is at least `1 - jitter` of the one before it (and,
                // without jitter, never shorter).
                let floor = last.mul_f64(1.0 - jitter);
                prop_assert!(delay + std::time::Duration::from_nanos(1) >= floor, "delay {:?} after {:?}", delay, last);
                prop_assert!(delay <= backoff.max);
                last = delay;
                now = deadline.at;
                m.handle(now, Input::Tick);
            }
        }
    }
}
