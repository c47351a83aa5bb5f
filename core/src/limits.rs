//! Tracking of sustained limit violations for the current instance. The sampler reports
//! usage; whether a violation has lasted long enough, and what it does, is decided here.

use crate::time::Timestamp;

/// One resource's current violation, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Track {
    /// When usage first went above the maximum, in the current run of samples above it.
    pub(crate) since: Option<Timestamp>,
    /// The action was already taken for this run (so `warn` is reported once, not per sample).
    pub(crate) acted: bool,
}
