//! Periodic execution of one probe, reporting every outcome into a channel.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Check, FailureReason, ProbeConfigError, ProbeOutcome};

/// One check's result as delivered to the caller, tagged so that one receiver can serve
/// many schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The caller's tag given to [`ProbeSchedule::spawn`] / [`ProbeSchedule::run`].
    pub tag: u64,
    /// 0 for the first check of this schedule, then +1 per check: lets the receiver notice
    /// reports it dropped or received out of order.
    pub seq: u64,
    /// What the check observed.
    pub outcome: ProbeOutcome,
    /// How long the check took (useful as a latency signal even when it passed).
    pub elapsed: Duration,
}

/// Runs a probe every `period` after `initial_delay`, one check at a time.
///
/// Checks never overlap: the next one starts at the next period boundary after the
/// previous one finished (boundaries missed by a slow check are skipped rather than
/// caught up with back-to-back checks). Each check is cut off at the probe's
/// [`Check::timeout`] even if the probe itself fails to honor it.
#[derive(Debug, Clone)]
pub struct ProbeSchedule<P> {
    probe: P,
    initial_delay: Duration,
    period: Duration,
}

impl<P: Check> ProbeSchedule<P> {
    /// Rejects a zero `period` (which would busy-loop); a zero `initial_delay` means the
    /// first check runs immediately.
    pub fn new(
        probe: P,
        initial_delay: Duration,
        period: Duration,
    ) -> Result<Self, ProbeConfigError> {
        if period.is_zero() {
            return Err(ProbeConfigError::ZeroPeriod);
        }
        Ok(ProbeSchedule {
            probe,
            initial_delay,
            period,
        })
    }

    /// Starts the schedule on the current tokio runtime. It runs until the returned
    /// [`ProbeTask`] is dropped or stopped, or the receiver of `reports` is dropped.
    ///
    /// Panics only as [`tokio::spawn`] does: when called outside a tokio runtime.
    pub fn spawn(self, tag: u64, reports: mpsc::Sender<ProbeReport>) -> ProbeTask {
        ProbeTask {
            handle: tokio::spawn(self.run(tag, reports)),
        }
    }

    /// The schedule as a future, for callers that manage tasks themselves. Completes when
    /// the receiver of `reports` is dropped; cancel it by dropping it.
    ///
    /// A full channel delays the next check (backpressure) rather than dropping reports.
    pub async fn run(self, tag: u64, reports: mpsc::Sender<ProbeReport>) {
        let limit = self.probe.timeout();
        let mut next = saturating_add(Instant::now(), self.initial_delay);
        let sleep = tokio::time::sleep_until(next);
        tokio::pin!(sleep);
        for seq in 0u64.. {
            sleep.as_mut().reset(next);
            tokio::select! {
                biased;
                _ = reports.closed() => return,
                _ = &mut sleep => {}
            }
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                _ = reports.closed() => return,
                r = tokio::time::timeout(limit, self.probe.check()) => r.unwrap_or_else(|_| {
                    ProbeOutcome::failed(
                        FailureReason::Timeout,
                        format!("no answer within {limit:?}"),
                    )
                }),
            };
            let report = ProbeReport {
                tag,
                seq,
                outcome,
                elapsed: started.elapsed(),
            };
            if reports.send(report).await.is_err() {
                return;
            }
            next = next_boundary(next, self.period, Instant::now());
        }
    }
}

/// The first instant of the grid `start + k * period` (k >= 1) that is not before `now`:
/// boundaries that passed while a check ran are skipped, so checks never run back to back.
fn next_boundary(start: Instant, period: Duration, now: Instant) -> Instant {
    let next = saturating_add(start, period);
    if next >= now {
        return next;
    }
    let period_ns = period.as_nanos();
    let late_ns = (now - next).as_nanos() % period_ns;
    if late_ns == 0 {
        now
    } else {
        // late_ns < period_ns, so the difference fits the period's own range.
        saturating_add(
            now,
            Duration::from_nanos(u64::try_from(period_ns - late_ns).unwrap_or(u64::MAX)),
        )
    }
}

/// `instant + d`, but an absurd `d` (say `Duration::MAX` for "practically never") means
/// "in a century" instead of an overflow panic.
fn saturating_add(instant: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    instant.checked_add(d.min(CENTURY)).unwrap_or(instant)
}

/// A running schedule. Dropping it cancels the schedule (an in-flight check is abandoned
/// and its connection closed), so a supervisor can tie a probe's life to the instance's.
#[derive(Debug)]
pub struct ProbeTask {
    handle: JoinHandle<()>,
}

impl ProbeTask {
    /// Cancels the schedule; same as dropping, but reads better at call sites.
    pub fn stop(self) {}

    /// Whether the schedule has ended (its receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
