//! Outputs of one step: effects (imperatives the adapter must carry out, in order) and
//! notifications (observations for people and metrics). They are kept apart so an adapter can
//! execute the first and merely publish the second.

use std::fmt;
use std::time::Duration;

use crate::input::{ExitStatus, Instance, Pid, ProbeFailure, ProbeRole, RestartCause, SpawnError};
use crate::policy::{LimitAction, Resource};
use crate::signal::Signal;
use crate::time::Timestamp;

/// An imperative for the adapter. Exhaustive on purpose: a new effect must be a compile error
/// in every driver, not a warning at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Start a new instance. Answer with [`crate::Input::Spawned`] or
    /// [`crate::Input::SpawnFailed`]; the machine never assumes it worked.
    Spawn {
        /// The generation to tag every later fact about this child with.
        instance: Instance,
        /// Why it is started (for logs and metrics).
        kind: SpawnKind,
    },
    /// Send a signal to every process of the instance (its group and descendants).
    Signal {
        /// Whose processes.
        instance: Instance,
        /// Which signal.
        signal: Signal,
    },
    /// SIGKILL every process of the instance.
    KillGroup {
        /// Whose processes.
        instance: Instance,
    },
    /// Make the probes and sampling of the instance exactly these. An empty set stops them all.
    Watch {
        /// The instance to watch.
        instance: Instance,
        /// The probes that should be running (only roles the policy configures).
        probes: Roles,
        /// Whether resource sampling should run (for every live instance: status shows every
        /// process's usage; limits are judged on the same samples).
        sampling: bool,
    },
}

/// Why a new instance is spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpawnKind {
    /// An explicit start (Start, a restart of a stopped process, a breaker reset).
    Start,
    /// A restart: counted by the breaker.
    Restart,
    /// The one trial of a half-open breaker: not counted, it is what the cooldown allows.
    Trial,
}

/// A set of probe roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// No probe.
    pub const NONE: Roles = Roles(0);

    const fn bit(role: ProbeRole) -> u8 {
        match role {
            ProbeRole::Liveness => 1,
            ProbeRole::Readiness => 2,
            ProbeRole::Startup => 4,
        }
    }

    /// This set with `role` added.
    pub const fn with(self, role: ProbeRole) -> Roles {
        Roles(self.0 | Self::bit(role))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: ProbeRole) -> bool {
        self.0 & Self::bit(role) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set.
    pub fn iter(self) -> impl Iterator<Item = ProbeRole> {
        [
            ProbeRole::Startup,
            ProbeRole::Liveness,
            ProbeRole::Readiness,
        ]
        .into_iter()
        .filter(move |r| self.contains(*r))
    }
}

/// The states users see, named as they appear in status output and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum StateName {
    /// Not running, by request or never started.
    Stopped,
    /// An instance is being spawned, or its startup probe has not passed yet.
    Starting,
    /// An instance is up.
    Running,
    /// Replacing an instance: stopping the old one, backing off, or spawning the new one.
    Restarting,
    /// Too many restarts: no instance until the cooldown ends or an explicit start or reset.
    BreakerOpen,
    /// Stopping an instance for good (by request, a limit, or after its final exit).
    ShuttingDown,
    /// Killed; stays so until an explicit start.
    Killed,
    /// Finished for good with a successful exit, per policy.
    Exited,
    /// Finished for good with a failure, per policy: the supervisor gave up.
    Failed,
}

impl StateName {
    /// Every state, in declaration order.
    pub const ALL: [StateName; 9] = [
        StateName::Stopped,
        StateName::Starting,
        StateName::Running,
        StateName::Restarting,
        StateName::BreakerOpen,
        StateName::ShuttingDown,
        StateName::Killed,
        StateName::Exited,
        StateName::Failed,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Stopped => "stopped",
            StateName::Starting => "starting",
            StateName::Running => "running",
            StateName::Restarting => "restarting",
            StateName::BreakerOpen => "breaker_open",
            StateName::ShuttingDown => "shutting_down",
            StateName::Killed => "killed",
            StateName::Exited => "exited",
            StateName::Failed => "failed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An observation for people and metrics; nothing needs to be done about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notification {
    /// The visible state changed.
    Transition {
        /// The state before.
        from: StateName,
        /// The state after.
        to: StateName,
        /// What caused it.
        cause: Cause,
        /// The instance concerned: the one that exited, started or is being stopped.
        instance: Option<Instance>,
        /// Its process id, when known.
        pid: Option<Pid>,
    },
    /// The input changed nothing.
    Ignored {
        /// The input's name (see [`crate::Input::name`]).
        input: &'static str,
        /// Why.
        reason: IgnoreReason,
    },
    /// The readiness verdict changed.
    ReadyChanged {
        /// The instance.
        instance: Instance,
        /// The new verdict.
        ready: bool,
    },
    /// A limit was exceeded for its whole `for` duration.
    LimitExceeded {
        /// The instance.
        instance: Instance,
        /// The resource.
        resource: Resource,
        /// The usage observed.
        observed: u64,
        /// The configured maximum.
        max: u64,
        /// The action taken.
        action: LimitAction,
    },
    /// A half-open breaker's trial instance stayed up long enough: the breaker is closed.
    BreakerClosed {
        /// The trial instance.
        instance: Instance,
    },
    /// A spawn failed (reported for every failure, also those that change no visible state).
    SpawnFailed {
        /// The instance that did not start.
        instance: Instance,
        /// Why.
        error: SpawnError,
    },
    /// A restart was scheduled after a delay.
    BackoffScheduled {
        /// The delay.
        delay: Duration,
    },
    /// A probe failed, with the count of failures in a row that its verdict is made of.
    /// Reported up to the failure that reaches the threshold; the failures after it repeat a
    /// verdict already given.
    ProbeFailed {
        /// The instance probed.
        instance: Instance,
        /// Which probe.
        role: ProbeRole,
        /// How it failed.
        failure: ProbeFailure,
        /// Failures in a row, this one included.
        consecutive: u32,
        /// The probe's `failure_threshold`.
        threshold: u32,
    },
}

/// Why an input changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// It was about an instance that is not the current one.
    Stale,
    /// A restart, shutdown or kill is already in progress; restart triggers are coalesced.
    Coalesced,
    /// It does not apply in the current state (a stop when stopped, a duplicate report...).
    NotApplicable,
}

/// What caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// An explicit start.
    Start,
    /// A stop request.
    Stop,
    /// A kill request.
    Kill,
    /// A manual or reload restart.
    Restart(RestartCause),
    /// A breaker reset.
    ResetBreaker,
    /// The instance started.
    Spawned,
    /// The instance could not be started.
    SpawnFailed(SpawnError),
    /// The main process exited.
    Exited(ExitStatus),
    /// The last process of the instance is gone.
    Gone,
    /// The startup probe passed.
    StartupPassed,
    /// The startup probe failed `failure_threshold` times in a row.
    StartupFailed,
    /// The liveness probe failed `failure_threshold` times in a row.
    LivenessFailed,
    /// A resource limit was exceeded for its `for` duration.
    Limit {
        /// The resource.
        resource: Resource,
        /// The action taken.
        action: LimitAction,
    },
    /// The backoff delay ended.
    BackoffElapsed,
    /// A restart would have exceeded the breaker's limit, or the half-open trial failed.
    BreakerTripped,
    /// The breaker's cooldown ended: a trial instance is started.
    CooldownElapsed,
    /// The stop grace period ended.
    GraceElapsed,
}

impl Cause {
    /// The snake_case name used in events.
    pub fn name(&self) -> &'static str {
        match self {
            Cause::Start => "start",
            Cause::Stop => "stop",
            Cause::Kill => "kill",
            Cause::Restart(RestartCause::Manual) => "manual_restart",
            Cause::Restart(RestartCause::Reload) => "reload",
            Cause::ResetBreaker => "reset_breaker",
            Cause::Spawned => "spawned",
            Cause::SpawnFailed(_) => "spawn_failed",
            Cause::Exited(ExitStatus::OomKilled) => "oom_killed",
            Cause::Exited(_) => "exited",
            Cause::Gone => "gone",
            Cause::StartupPassed => "startup_passed",
            Cause::StartupFailed => "startup_failed",
            Cause::LivenessFailed => "liveness_failed",
            Cause::Limit { .. } => "limit_exceeded",
            Cause::BackoffElapsed => "backoff_elapsed",
            Cause::BreakerTripped => "breaker_tripped",
            Cause::CooldownElapsed => "cooldown_elapsed",
            Cause::GraceElapsed => "grace_elapsed",
        }
    }
}

/// The one deadline a machine is waiting for, and why (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// When to tick.
    pub at: Timestamp,
    /// What happens then.
    pub kind: DeadlineKind,
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadlineKind {
    /// The backoff before a restart ends.
    Backoff,
    /// The stop grace period ends: the group is killed.
    StopGrace,
    /// A killed group is still not gone: kill it again.
    KillRetry,
    /// The open breaker's cooldown ends: a trial instance is started.
    BreakerCooldown,
    /// The instance has been up for `reset_after`: the crash streak ends, a trial closes the breaker.
    StableUptime,
}

/// The breaker as status output shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerStatus {
    /// Restarts are allowed.
    Closed,
    /// No restarts; a trial after the deadline, or never.
    Open {
        /// When the trial starts, if ever.
        until: Option<Timestamp>,
    },
    /// A trial instance is running; it closes the breaker if it stays up.
    HalfOpen,
}

/// A fixed-capacity list, so that a step allocates nothing on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounded<T, const N: usize> {
    items: [Option<T>; N],
    len: usize,
}

impl<T: Copy, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Bounded {
            items: [None; N],
            len: 0,
        }
    }
}

impl<T: Copy, const N: usize> Bounded<T, N> {
    pub(crate) fn push(&mut self, item: T) {
        // A step emits at most a handful of outputs, bounded by the transition table; the
        // property tests and the fuzzer would find a step that emits more.
        let slot = self
            .items
            .get_mut(self.len)
            .expect("a step emits no more outputs than its fixed capacity");
        *slot = Some(item);
        self.len += 1;
    }

    /// The items, in the order they were produced.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items[..self.len].iter().flatten()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a, T: Copy, const N: usize> IntoIterator for &'a Bounded<T, N> {
    type Item = &'a T;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Option<T>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.items[..self.len].iter().flatten()
    }
}

/// What one input produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Carry these out, in order.
    pub effects: Bounded<Effect, 4>,
    /// Publish these.
    pub notifications: Bounded<Notification, 8>,
}

impl Outcome {
    /// The transition in this outcome, if the visible state changed.
    pub fn transition(&self) -> Option<(StateName, StateName, Cause)> {
        self.notifications.iter().find_map(|n| match *n {
            Notification::Transition {
                from, to, cause, ..
            } => Some((from, to, cause)),
            _ => None,
        })
    }

    /// Whether the input was ignored, and why.
    pub fn ignored(&self) -> Option<IgnoreReason> {
        self.notifications.iter().find_map(|n| match *n {
            Notification::Ignored { reason, .. } => Some(reason),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every one of the eight sets: `contains` and `iter` agree with what was added.
    #[test]
    fn roles_hold_exactly_what_was_added() {
        let all = [
            ProbeRole::Startup,
            ProbeRole::Liveness,
            ProbeRole::Readiness,
        ];
        for mask in 0u8..8 {
            let members: Vec<ProbeRole> = (0..3)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i])
                .collect();
            let set = members.iter().fold(Roles::NONE, |set, &r| set.with(r));
            for role in all {
                assert_eq!(
                    set.contains(role),
                    members.contains(&role),
                    "{mask}: {role:?}"
                );
            }
            assert_eq!(set.iter().collect::<Vec<_>>(), members);
            assert_eq!(set.is_empty(), members.is_empty());
        }
    }
}
