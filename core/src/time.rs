//! The core's own clock type. The core never reads a clock: every input comes with the time it
//! happened, as a [`Timestamp`] the adapter converted once from its monotonic clock. Owning the
//! type lets property tests and fuzzers generate times directly.

use std::time::Duration;

/// A point on a monotonic clock, in nanoseconds since an origin the driver chooses (usually the
/// moment the supervisor started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Timestamp(u64);

impl Timestamp {
    /// The origin of the clock.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `millis` milliseconds after the origin (handy in tests and examples).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The timestamp `d` later, saturating at the end of time instead of wrapping, so a huge
    /// configured duration means "never" rather than "in the past".
    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    /// How long after `earlier` this is; zero if `earlier` is actually later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}
