//! Consecutive-result counters for the probes of the current instance. The adapter reports
//! every result; the verdicts are made here.

use crate::input::ProbeResult;
use crate::policy::Thresholds;

/// One probe's run of results and its current verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    passes: u32,
    fails: u32,
    healthy: bool,
}

/// A verdict that a result just reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reached {
    /// `success_threshold` passes in a row, while not healthy.
    Pass,
    /// `failure_threshold` failures in a row (reported once per run of failures).
    Fail,
}

impl Verdict {
    pub(crate) fn healthy(&self) -> bool {
        self.healthy
    }

    /// Failures in a row.
    pub(crate) fn fails(&self) -> u32 {
        self.fails
    }

    /// Records a result; says which verdict it reached, if any.
    pub(crate) fn record(&mut self, t: &Thresholds, result: ProbeResult) -> Option<Reached> {
        match result {
            ProbeResult::Pass => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                (!self.healthy && self.passes >= t.success_threshold).then(|| {
                    self.healthy = true;
                    Reached::Pass
                })
            }
            ProbeResult::Fail(_) => {
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                (self.fails == t.failure_threshold).then(|| {
                    self.healthy = false;
                    Reached::Fail
                })
            }
        }
    }
}
