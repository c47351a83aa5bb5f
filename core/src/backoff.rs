//! The crash streak and its growing delays. Jitter is drawn from a seeded generator kept in
//! the machine, so a run replays exactly.

use std::time::Duration;

use crate::policy::BackoffPolicy;

/// Where a crash streak stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// Restarts after failures since the streak began.
    streak: u32,
    /// The un-jittered delay of the latest restart of the streak: `initial * factor^n`, capped
    /// at `max`. It never decreases within a streak; the drawn delays need not follow it.
    base: Duration,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Self {
        Backoff {
            streak: 0,
            base: Duration::ZERO,
            rng: SplitMix64(seed),
        }
    }

    /// Whether a crash streak is under way (a stable run would end it).
    pub(crate) fn in_streak(&self) -> bool {
        self.streak > 0
    }

    /// The delay before the next restart after a failure: the base grows by `factor` up to
    /// `max`, and the delay is drawn uniformly in `(base * (1 - jitter), base]`. Once the base
    /// is capped the draw stays in `(max * (1 - jitter), max]`, so processes that crash together
    /// keep restarting apart however long their crash loops last.
    pub(crate) fn next_delay(&mut self, policy: &BackoffPolicy) -> Duration {
        self.base = if self.streak == 0 {
            policy.initial.min(policy.max)
        } else {
            scale(self.base, policy.factor).min(policy.max)
        };
        self.streak = self.streak.saturating_add(1);
        let draw = self.rng.next_unit();
        // `1 - jitter * draw` is in (0, 1]: the delay cannot exceed the base.
        scale(self.base, 1.0 - policy.jitter * draw)
    }

    /// Ends the streak: the next failure starts from `initial` again.
    pub(crate) fn reset(&mut self) {
        self.streak = 0;
        self.base = Duration::ZERO;
    }
}

/// `d * factor` to the nearest nanosecond, computed in nanoseconds so that integer factors
/// of whole durations are exact (jitter 0 gives exactly `initial * factor^n`). The `as`
/// conversion saturates, so no factor overflows (`Duration::mul_f64` panics on a product it
/// cannot hold, such as a valid factor of 1e300 times a millisecond); the price is that no
/// delay exceeds 2^64 ns, 584 years.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::from_nanos((d.as_nanos() as f64 * factor).round() as u64)
}

/// SplitMix64: tiny, fast, and good enough for jitter; the seed comes from the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(1),
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        };
        let mut b = Backoff::new(7);
        let delays: Vec<_> = (0..6).map(|_| b.next_delay(&policy).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(&policy), Duration::from_millis(100));
    }

    #[test]
    fn same_seed_same_jitter() {
        let policy = BackoffPolicy::default();
        let (mut a, mut b) = (Backoff::new(42), Backoff::new(42));
        for _ in 0..20 {
            assert_eq!(a.next_delay(&policy), b.next_delay(&policy));
        }
    }
}
