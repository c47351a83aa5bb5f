//! The circuit breaker: a sliding window of restart spawn times, and the cooldown that
//! grows with every failed half-open trial.

use std::collections::VecDeque;
use std::time::Duration;

use crate::policy::{BreakerPolicy, Cooldown};
use crate::time::Timestamp;

/// The breaker's memory. Whether it is open is the machine's phase; this keeps what outlives
/// phases: recent restarts, the current cooldown and whether a trial is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Breaker {
    /// Times of the counted restart spawns still inside the window, oldest first. Never longer
    /// than `max_restarts`: the capacity is allocated once, with the machine.
    restarts: VecDeque<Timestamp>,
    /// The cooldown the next opening will use.
    cooldown: Duration,
    /// The current instance is the half-open trial.
    pub(crate) half_open: bool,
}

impl Breaker {
    pub(crate) fn new(policy: &BreakerPolicy) -> Self {
        Breaker {
            restarts: VecDeque::with_capacity(policy.max_restarts.min(1024) as usize),
            cooldown: base_cooldown(policy),
            half_open: false,
        }
    }

    /// Whether a restart spawn at `now` would fit in the window.
    pub(crate) fn has_room(&self, policy: &BreakerPolicy, now: Timestamp) -> bool {
        let in_window = self
            .restarts
            .iter()
            .filter(|t| t.saturating_add(policy.window) > now)
            .count();
        in_window < policy.max_restarts as usize
    }

    /// Counts a restart spawn at `now` if the window has room, and says whether it had.
    pub(crate) fn admit(&mut self, policy: &BreakerPolicy, now: Timestamp) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if oldest.saturating_add(policy.window) <= now {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= policy.max_restarts as usize {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    /// The deadline of an opening at `now`: `None` when the cooldown is `never`.
    pub(crate) fn open_until(&self, policy: &BreakerPolicy, now: Timestamp) -> Option<Timestamp> {
        match policy.cooldown {
            Cooldown::Never => None,
            Cooldown::After(_) => Some(now.saturating_add(self.cooldown)),
        }
    }

    /// A trial failed: the next cooldown is twice as long, up to the cap.
    pub(crate) fn trial_failed(&mut self, policy: &BreakerPolicy) {
        self.half_open = false;
        self.cooldown = self
            .cooldown
            .saturating_mul(2)
            .min(policy.max_cooldown.max(base_cooldown(policy)));
    }

    /// A trial stayed up: closed, and the cooldown is back to its base. Restart history stays:
    /// restarts still inside the window keep counting.
    pub(crate) fn close(&mut self, policy: &BreakerPolicy) {
        self.half_open = false;
        self.cooldown = base_cooldown(policy);
    }

    /// An explicit start or reset: closed, cooldown at base, history forgotten.
    pub(crate) fn reset(&mut self, policy: &BreakerPolicy) {
        self.close(policy);
        self.restarts.clear();
    }
}

fn base_cooldown(policy: &BreakerPolicy) -> Duration {
    match policy.cooldown {
        Cooldown::Never => Duration::ZERO,
        Cooldown::After(d) => d,
    }
}
