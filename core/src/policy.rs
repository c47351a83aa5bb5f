//! Policies: plain data that tells the machine how to react. They are validated once, with
//! every problem reported at once, so the machine itself never meets an inconsistent policy.
//!
//! With the `serde` feature the policies deserialize from the names users write in config
//! files (`restart = "on-failure"`, `backoff = { initial = "100ms" }`, ...), durations and sizes
//! in human units.

use std::fmt;
use std::time::Duration;

use crate::input::ExitStatus;
use crate::signal::Signal;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// Everything the machine needs to know about one supervised process.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[non_exhaustive]
pub struct Policy {
    /// When an exited instance is replaced.
    pub restart: RestartPolicy,
    /// Which exit codes count as success, and which prevent or force a restart.
    pub exit_codes: ExitCodes,
    /// Delay before a restart after a failure.
    pub backoff: BackoffPolicy,
    /// Stops restart loops.
    pub breaker: BreakerPolicy,
    /// How an instance is asked to stop.
    pub stop: StopPolicy,
    /// Probe thresholds, per role; a role without thresholds has no probe.
    pub health: HealthPolicy,
    /// Resource limits and what a sustained violation does.
    pub limits: LimitsPolicy,
    /// Seed of the jitter generator: the same seed and inputs give the same effects.
    pub seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart: RestartPolicy::OnFailure,
            exit_codes: ExitCodes::default(),
            backoff: BackoffPolicy::default(),
            breaker: BreakerPolicy::default(),
            stop: StopPolicy::default(),
            health: HealthPolicy::default(),
            limits: LimitsPolicy::default(),
            seed: 0,
        }
    }
}

/// When an instance that exited on its own is replaced by a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RestartPolicy {
    /// Every exit is followed by a restart, clean or not.
    Always,
    /// Only a failure (a non-success exit code, a signal, a spawn failure) is restarted; a clean
    /// exit means the program is done.
    #[default]
    OnFailure,
    /// Never restart on exit; health and resource triggers still restart.
    Never,
}

/// Exit-code rules, as systemd has them (`SuccessExitStatus=`, `RestartPreventExitStatus=`,
/// `RestartForceExitStatus=`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ExitCodes {
    /// Codes that count as a clean exit.
    pub success: Vec<i32>,
    /// Codes after which the process is never restarted, whatever the restart policy.
    pub prevent_restart: Vec<i32>,
    /// Codes after which the process is always restarted, whatever the restart policy.
    pub force_restart: Vec<i32>,
}

impl ExitCodes {
    /// Whether `status` counts as a clean exit: only an exit code can be one.
    pub fn is_success(&self, status: ExitStatus) -> bool {
        matches!(status, ExitStatus::Code(c) if self.success.contains(&c))
    }
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            success: vec![0],
            prevent_restart: Vec::new(),
            force_restart: Vec::new(),
        }
    }
}

/// Exponential backoff between restarts after failures.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BackoffPolicy {
    /// Delay before the first restart of a crash streak.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub initial: Duration,
    /// Growth of the delay from one restart to the next.
    pub factor: f64,
    /// The delay never exceeds this.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub max: Duration,
    /// Fraction (0 to 1) of each delay that is taken off at random, so that many processes
    /// that crashed together do not restart in lockstep.
    pub jitter: f64,
    /// An instance that stays up this long ends the crash streak: the next delay is `initial`
    /// again. It also closes a half-open breaker.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.1,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The circuit breaker: at most `max_restarts` restarts in any sliding `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BreakerPolicy {
    /// Restarts allowed in any window; the next one opens the breaker.
    pub max_restarts: u32,
    /// Length of the sliding window.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub window: Duration,
    /// How long the breaker stays open before a half-open trial.
    pub cooldown: Cooldown,
    /// Each failed trial doubles the cooldown, up to this.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub max_cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            cooldown: Cooldown::After(Duration::from_secs(300)),
            max_cooldown: Duration::from_secs(3600),
        }
    }
}

/// How long an open breaker waits before it tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cooldown {
    /// Stay open until an explicit `Start` or `ResetBreaker`: the process has given up.
    Never,
    /// Try one instance again after this long.
    After(Duration),
}

impl fmt::Display for Cooldown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cooldown::Never => f.write_str("never"),
            Cooldown::After(d) => f.write_str(&crate::units::format_duration(*d)),
        }
    }
}

impl std::str::FromStr for Cooldown {
    type Err = crate::units::UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "never" {
            Ok(Cooldown::Never)
        } else {
            crate::units::parse_duration(s).map(Cooldown::After)
        }
    }
}

#[cfg(feature = "serde")]
impl Serialize for Cooldown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for Cooldown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e: crate::units::UnitError| {
            serde::de::Error::custom(format!("{e} or `never`"))
        })
    }
}

/// How an instance is asked to stop before it is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct StopPolicy {
    /// Sent to the instance's whole process group first.
    pub signal: Signal,
    /// How long the group has to exit before it is killed.
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub grace: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            signal: Signal::Term,
            grace: Duration::from_secs(10),
        }
    }
}

/// Probe thresholds per role. The adapter runs the probes and reports every single result; the
/// thresholds are counted here so that the decision stays in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HealthPolicy {
    /// Failing liveness restarts the instance through the breaker.
    pub liveness: Option<Thresholds>,
    /// Readiness only sets the ready flag.
    pub readiness: Option<Thresholds>,
    /// Until the startup probe passes, liveness and readiness are suspended; failing it restarts.
    pub startup: Option<Thresholds>,
}

/// Consecutive results needed to change a probe's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Thresholds {
    /// Consecutive failures that make the probe fail.
    pub failure_threshold: u32,
    /// Consecutive successes that make the probe pass.
    pub success_threshold: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// Resource limits of an instance (its whole process tree).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct LimitsPolicy {
    /// Samples taken this soon after a spawn are not held against the instance (start-up peaks).
    #[cfg_attr(feature = "serde", serde(with = "crate::units::serde_duration"))]
    pub grace: Duration,
    /// At most one rule per resource.
    pub rules: Vec<LimitRule>,
}

/// One limit: a resource, its maximum, how long a violation must last and what it does then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct LimitRule {
    /// The resource.
    pub resource: Resource,
    /// The most that is allowed, in the resource's unit (see [`Resource`]).
    pub max: u64,
    /// How long usage must stay above `max` before the action; zero acts on the first sample.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "for", default, with = "crate::units::serde_duration")
    )]
    pub sustain: Duration,
    /// What a sustained violation does.
    pub action: LimitAction,
}

/// A resource the sampler measures for an instance's whole process tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Resource {
    /// Resident memory, in bytes.
    Memory,
    /// CPU, in percent of one core (may exceed 100).
    Cpu,
    /// Open file descriptors.
    Fds,
    /// Processes.
    Processes,
    /// Threads.
    Threads,
}

impl Resource {
    /// All resources, in the order [`crate::Usage`] stores them.
    pub const ALL: [Resource; 5] = [
        Resource::Memory,
        Resource::Cpu,
        Resource::Fds,
        Resource::Processes,
        Resource::Threads,
    ];

    /// The snake_case name users see.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Cpu => "cpu",
            Resource::Fds => "fds",
            Resource::Processes => "processes",
            Resource::Threads => "threads",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What a sustained limit violation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum LimitAction {
    /// Report it, change nothing. Reported once per violation, not once per sample.
    Warn,
    /// Restart through the breaker, like a crash.
    Restart,
    /// Stop gracefully (stop signal, grace, kill); stays stopped until an explicit start.
    GracefulShutdown,
    /// Kill the whole group now; stays killed until an explicit start.
    Kill,
}

impl LimitAction {
    /// The kebab-case name users write.
    pub fn name(self) -> &'static str {
        match self {
            LimitAction::Warn => "warn",
            LimitAction::Restart => "restart",
            LimitAction::GracefulShutdown => "graceful-shutdown",
            LimitAction::Kill => "kill",
        }
    }
}

/// One problem found in a policy.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The backoff factor must be at least 1, or delays would shrink during a crash streak.
    #[error("backoff.factor must be a number >= 1, got {0}")]
    BackoffFactor(f64),
    /// Jitter is a fraction of the delay.
    #[error("backoff.jitter must be between 0 and 1, got {0}")]
    BackoffJitter(f64),
    /// The first delay cannot be larger than the largest one.
    #[error("backoff.initial ({initial:?}) is larger than backoff.max ({max:?})")]
    BackoffInitialAboveMax {
        /// The configured initial delay.
        initial: Duration,
        /// The configured maximum delay.
        max: Duration,
    },
    /// A zero window counts nothing.
    #[error("breaker.window must be longer than 0")]
    BreakerWindow,
    /// The cooldown cap must allow the first cooldown.
    #[error("breaker.max_cooldown ({max:?}) is shorter than breaker.cooldown ({cooldown:?})")]
    BreakerCooldownAboveMax {
        /// The configured cooldown.
        cooldown: Duration,
        /// The configured cap.
        max: Duration,
    },
    /// A threshold of zero would pass or fail without any result.
    #[error("{role}.{which} must be at least 1")]
    ZeroThreshold {
        /// The probe role.
        role: &'static str,
        /// `failure_threshold` or `success_threshold`.
        which: &'static str,
    },
    /// Two rules for one resource would contradict each other.
    #[error("more than one limit for {0}")]
    DuplicateLimit(&'static str),
    /// A maximum of zero would act on any usage at all: surely a mistake.
    #[error("limits.{0}.max must be larger than 0")]
    ZeroLimit(&'static str),
}

/// Every problem found in a policy, reported together.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid policy: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl Policy {
    /// Checks the policy and reports every problem at once.
    pub fn validate(&self) -> Result<(), PolicyErrors> {
        let mut errors = Vec::new();
        let b = &self.backoff;
        if !(b.factor >= 1.0 && b.factor.is_finite()) {
            errors.push(PolicyError::BackoffFactor(b.factor));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            errors.push(PolicyError::BackoffJitter(b.jitter));
        }
        if b.initial > b.max {
            errors.push(PolicyError::BackoffInitialAboveMax {
                initial: b.initial,
                max: b.max,
            });
        }
        if self.breaker.window.is_zero() {
            errors.push(PolicyError::BreakerWindow);
        }
        if let Cooldown::After(c) = self.breaker.cooldown {
            if c > self.breaker.max_cooldown {
                errors.push(PolicyError::BreakerCooldownAboveMax {
                    cooldown: c,
                    max: self.breaker.max_cooldown,
                });
            }
        }
        for (role, t) in [
            ("liveness", self.health.liveness),
            ("readiness", self.health.readiness),
            ("startup", self.health.startup),
        ] {
            let Some(t) = t else { continue };
            if t.failure_threshold == 0 {
                errors.push(PolicyError::ZeroThreshold {
                    role,
                    which: "failure_threshold",
                });
            }
            if t.success_threshold == 0 {
                errors.push(PolicyError::ZeroThreshold {
                    role,
                    which: "success_threshold",
                });
            }
        }
        let mut seen = [false; Resource::ALL.len()];
        for rule in &self.limits.rules {
            let i = rule.resource.index();
            if std::mem::replace(&mut seen[i], true) {
                errors.push(PolicyError::DuplicateLimit(rule.resource.name()));
            }
            if rule.max == 0 {
                errors.push(PolicyError::ZeroLimit(rule.resource.name()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyErrors(errors))
        }
    }
}
