//! Properties of the backoff's jitter, the distribution docs/state-machine.md documents: the
//! n-th delay of a crash streak is drawn uniformly from `(base_n * (1 - jitter), base_n]`,
//! with `base_n = min(initial * factor^n, max)`. Cases per property: 10,000 (override with
//! PROPTEST_CASES).

use std::time::Duration;

use proptest::prelude::*;

mod support;
use support::config;

use processcontrol_core::{
    BackoffPolicy, Effect, ExitStatus, Input, Machine, Notification, Policy, Timestamp,
};

/// A process that crashes as soon as it is up, for ever: its breaker never opens.
struct CrashLoop {
    machine: Machine,
    now: Timestamp,
}

impl CrashLoop {
    fn new(backoff: BackoffPolicy, seed: u64) -> CrashLoop {
        let mut policy = Policy::default();
        policy.backoff = backoff;
        policy.seed = seed;
        policy.breaker.max_restarts = u32::MAX;
        policy.breaker.window = Duration::from_nanos(1);
        let mut machine = Machine::new(policy).unwrap();
        machine.handle(Timestamp::ZERO, Input::Start);
        CrashLoop {
            machine,
            now: Timestamp::ZERO,
        }
    }

    /// The instance comes up and crashes at `now`; the delay the machine then waits, and the
    /// time it restarts (its clock moves there).
    fn crash_at(&mut self, now: Timestamp) -> Duration {
        self.now = now;
        let m = &mut self.machine;
        let instance = m.instance().expect("a spawn is pending");
        m.handle(now, Input::Spawned { instance, pid: 1 });
        m.handle(
            now,
            Input::Exited {
                instance,
                status: ExitStatus::Code(1),
            },
        );
        let out = m.handle(now, Input::Gone { instance });
        let delay = out
            .notifications
            .iter()
            .find_map(|n| match *n {
                Notification::BackoffScheduled { delay } => Some(delay),
                _ => None,
            })
            .unwrap_or(Duration::ZERO);
        if !delay.is_zero() {
            self.now = self.machine.poll_timeout().expect("a backoff deadline").at;
            let out = self.machine.handle(self.now, Input::Tick);
            assert!(out
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Spawn { .. })));
        }
        delay
    }

    fn crash(&mut self) -> Duration {
        self.crash_at(self.now)
    }
}

fn policy(initial_ms: u64, extra_ms: u64, factor: f64, jitter: f64) -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(initial_ms + extra_ms),
        factor,
        jitter,
        reset_after: Duration::from_secs(3600),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Every delay of a streak lies in `[initial * (1 - jitter), max]`, and within
    /// `(base_n * (1 - jitter), base_n]` of its own step: growth applies to the un-jittered
    /// base, so a capped streak keeps drawing from the whole band below `max`.
    #[test]
    fn delays_stay_in_their_band(
        initial_ms in 1u64..1_000, extra_ms in 0u64..60_000, factor in 1.0f64..4.0,
        jitter in 0.0f64..=1.0, seed in any::<u64>(), crashes in 1usize..40,
    ) {
        let b = policy(initial_ms, extra_ms, factor, jitter);
        let mut run = CrashLoop::new(b, seed);
        let ns = Duration::from_nanos;
        let mut base = b.initial.as_secs_f64();
        for n in 0..crashes {
            let d = run.crash();
            prop_assert!(d <= b.max && d + ns(1) >= b.initial.mul_f64(1.0 - jitter), "{d:?}");
            // The machine rounds to nanoseconds at every step: a relative error of at most
            // 1e-6 per step on bases of 1 ms and more.
            let slack = (1e-9 + base * 1e-6) * (n as f64 + 2.0);
            let got = d.as_secs_f64();
            prop_assert!(got <= base + slack, "delay {n}: {d:?} above base {base}");
            prop_assert!(got + slack >= base * (1.0 - jitter), "delay {n}: {d:?} below band of {base}");
            base = (base * factor).min(b.max.as_secs_f64());
        }
    }

    /// With jitter, 1,000 crashes at the cap spread over at least half of the allowed band
    /// `[max * (1 - jitter), max]`: a long crash loop does not ratchet to exactly `max`.
    #[test]
    fn capped_delays_cover_the_band(
        max_ms in 1u64..600_000, initial_per_mille in 125u64..=1000, factor in 2.0f64..4.0,
        jitter in 0.01f64..=1.0, seed in any::<u64>(),
    ) {
        let initial_ms = (max_ms * initial_per_mille / 1000).max(1).min(max_ms);
        let b = policy(initial_ms, max_ms - initial_ms, factor, jitter);
        let mut run = CrashLoop::new(b, seed);
        // At most three steps from `initial` to the cap.
        for _ in 0..3 {
            run.crash();
        }
        let (mut low, mut high) = (b.max, Duration::ZERO);
        for _ in 0..1_000 {
            let d = run.crash();
            low = low.min(d);
            high = high.max(d);
        }
        let band = b.max.as_secs_f64() * jitter;
        let covered = (high - low).as_secs_f64();
        prop_assert!(covered >= band / 2.0, "{low:?}..{high:?} of a band of {band} s");
    }

    /// Two processes with different seeds that crash together, again and again, restart at
    /// the same instant no more often than chance allows: the band has `max * jitter` in
    /// nanoseconds possible delays, so 200 rounds should see a coincidence less than once;
    /// more than 5 means lockstep.
    #[test]
    fn different_seeds_restart_apart(
        max_ms in 10u64..600_000, jitter in 0.01f64..=1.0, seeds in (any::<u64>(), any::<u64>()),
    ) {
        prop_assume!(seeds.0 != seeds.1);
        let b = policy(max_ms, 0, 2.0, jitter);
        let (mut a, mut c) = (CrashLoop::new(b, seeds.0), CrashLoop::new(b, seeds.1));
        let mut together = Timestamp::ZERO;
        let mut same = 0;
        for _ in 0..200 {
            let (da, dc) = (a.crash_at(together), c.crash_at(together));
            same += usize::from(da == dc);
            // Whatever made them crash together does so again after both are back.
            together = a.now.max(c.now);
        }
        prop_assert!(same <= 5, "{same} of 200 restarts at the same instant");
    }

    /// Without jitter the delays are exactly `min(initial * factor^n, max)`.
    #[test]
    fn no_jitter_gives_the_documented_sequence(
        initial_ms in 0u64..1_000, extra_ms in 0u64..100_000, factor in 1u32..=4, crashes in 1usize..30,
    ) {
        let b = policy(initial_ms, extra_ms, f64::from(factor), 0.0);
        let mut run = CrashLoop::new(b, 0);
        let max_ns = b.max.as_nanos();
        let mut expected = b.initial.as_nanos();
        for n in 0..crashes {
            prop_assert_eq!(run.crash().as_nanos(), expected, "delay {}", n);
            expected = (expected * u128::from(factor)).min(max_ns);
        }
    }
}

/// The jitter generator is SplitMix64 (Steele, Lea and Flood 2014), as documented: a seeded
/// run replays the same delays from one version to the next. With seed 0 its first outputs are
/// 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4 and 0x06C45D188009454F; each becomes a draw
/// `(x >> 11) / 2^53` and the delay `base * (1 - jitter * draw)`, to the nearest nanosecond.
/// A base of 2^62 ns (146 years, a valid if odd policy) makes every bit of the draw show.
#[test]
fn jitter_draws_are_splitmix64() {
    let base = 1u64 << 62;
    let b = BackoffPolicy {
        initial: Duration::from_nanos(base),
        max: Duration::from_nanos(base),
        factor: 1.0,
        jitter: 1.0,
        reset_after: Duration::MAX,
    };
    let mut run = CrashLoop::new(b, 0);
    for x in [
        0xE220_A839_7B1D_CDAFu64,
        0x6E78_9E6A_A1B9_65F4,
        0x06C4_5D18_8009_454F,
    ] {
        let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
        let nanos = (base as f64 * (1.0 - draw)).round() as u64;
        assert_eq!(run.crash(), Duration::from_nanos(nanos));
    }
}
