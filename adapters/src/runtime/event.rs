//! Events: the notifications of one process, as people and scripts read them (JSON lines).
//! A transition reads like
//! `{"time":"…","process":"web","instance":3,"pid":1234,"event":"transition","from":"running","to":"restarting","cause":"exited","exit":{"code":1}}`.

use std::sync::Arc;
use std::time::SystemTime;

use processcontrol_core::{
    BreakerStatus, Cause, ExitStatus, IgnoreReason, LimitRule, Machine, Notification, ProbeFailure,
    ProbeRole, Resource, StateName,
};
use serde::Serialize;

/// One event of one supervised process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The process's name.
    pub process: Arc<str>,
    /// The instance concerned, if any.
    pub instance: Option<u64>,
    /// Its process id, when known.
    pub pid: Option<u32>,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What an event reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum What {
    /// The state changed.
    Transition {
        /// The state before.
        from: StateName,
        /// The state after.
        to: StateName,
        /// Why (snake_case, see the core's `Cause::name`).
        cause: &'static str,
        /// How the main process ended, when the cause is an exit.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit: Option<ExitStatus>,
        /// Whether that exit counts as clean (its code is one of the success codes).
        #[serde(skip_serializing_if = "Option::is_none")]
        expected: Option<bool>,
        /// The error, when the cause is a spawn failure.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The resource, when the cause is a limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<&'static str>,
        /// Why, for people, when the cause is a failure: `exited with 1`, `liveness failed
        /// 3/3: GET /healthz -> 503 Service Unavailable`, `memory 73.1 MiB > 64 MiB for 10 s`,
        /// `5 restarts in 60 s`.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When an open breaker lets one trial start (RFC 3339); absent when it never does.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_trial: Option<String>,
    },
    /// The readiness verdict changed.
    Ready {
        /// Ready or not.
        ready: bool,
        /// Why not, when a readiness probe failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A probe failed; reported up to the failure that reaches its threshold.
    ProbeFailed {
        /// `liveness`, `readiness` or `startup`.
        probe: &'static str,
        /// The class of failure (`timeout`, `refused`, `http_status`, `exit_code`,
        /// `exit_signal`, `dns`, `watchdog`, `io`).
        failure: &'static str,
        /// Failures in a row, this one included.
        consecutive: u32,
        /// The probe's failure threshold.
        threshold: u32,
        /// What the probe saw, for people.
        reason: String,
    },
    /// A limit was exceeded for its whole `for` duration.
    LimitExceeded {
        /// The resource (`memory`, `cpu`, `fds`, `processes`, `threads`).
        resource: &'static str,
        /// What was observed (bytes, percent of one core, or a count).
        observed: u64,
        /// The configured maximum.
        max: u64,
        /// The limit's `for` duration, in milliseconds.
        for_ms: u64,
        /// The action taken (`restart`, `graceful-shutdown`, `kill`, `warn`).
        action: &'static str,
        /// The figures for people: `memory 73.1 MiB > 64 MiB for 10 s`.
        reason: String,
    },
    /// A spawn failed.
    SpawnFailed {
        /// What the operating system said.
        error: String,
        /// The same, as every failure's `reason`.
        reason: String,
    },
    /// A half-open breaker closed.
    BreakerClosed,
    /// A restart was scheduled after a delay.
    BackoffScheduled {
        /// The delay in milliseconds.
        delay_ms: u64,
        /// Which restart it will be (1 for the first).
        restart: u64,
    },
    /// An input changed nothing (stale, coalesced or not applicable).
    Ignored {
        /// The input's name.
        input: &'static str,
        /// Why: `stale`, `coalesced` or `not_applicable`.
        reason: &'static str,
    },
}

/// What the driver knows around one step, for the events of its notifications.
pub(crate) struct Context<'a> {
    /// The machine, after the step.
    pub(crate) machine: &'a Machine,
    /// The outcome's notifications, so a transition can name the failure reported with it.
    pub(crate) outcome: &'a [Notification],
    /// The message of the spawn failure of this step, if any.
    pub(crate) spawn_error: Option<&'a str>,
    /// The last failure message of each probe role (startup, liveness, readiness).
    pub(crate) probe_details: &'a [Option<Box<str>>; 3],
    /// The current pid.
    pub(crate) pid: Option<u32>,
}

/// The index of a role in [`Context::probe_details`].
pub(crate) fn role_index(role: ProbeRole) -> usize {
    match role {
        ProbeRole::Startup => 0,
        ProbeRole::Liveness => 1,
        ProbeRole::Readiness => 2,
    }
}

impl Context<'_> {
    fn probe_detail(&self, role: ProbeRole, failure: ProbeFailure) -> String {
        self.probe_details[role_index(role)]
            .as_deref()
            .map_or_else(|| failure.to_string(), str::to_string)
    }

    /// The probe failure of this step that reached its threshold, as a reason.
    fn probe_verdict(&self, role: ProbeRole) -> Option<String> {
        self.outcome.iter().find_map(|n| match *n {
            Notification::ProbeFailed {
                role: r,
                failure,
                consecutive,
                threshold,
                ..
            } if r == role => Some(format!(
                "{} failed {consecutive}/{threshold}: {}",
                role.name(),
                self.probe_detail(role, failure)
            )),
            _ => None,
        })
    }

    fn limit(&self, resource: Resource) -> Option<(&LimitRule, u64)> {
        let rule = self
            .machine
            .policy()
            .limits
            .rules
            .iter()
            .find(|r| r.resource == resource)?;
        let observed = self.outcome.iter().find_map(|n| match *n {
            Notification::LimitExceeded {
                resource: r,
                observed,
                ..
            } if r == resource => Some(observed),
            _ => None,
        })?;
        Some((rule, observed))
    }

    /// Why a transition happened, for people, when its cause is a failure.
    fn reason(&self, cause: Cause, to: StateName) -> Option<String> {
        match cause {
            Cause::Exited(status) => Some(exit_reason(status)),
            Cause::SpawnFailed(code) => Some(
                self.spawn_error
                    .map_or_else(|| code.to_string(), str::to_string),
            ),
            Cause::LivenessFailed => self.probe_verdict(ProbeRole::Liveness),
            Cause::StartupFailed => self.probe_verdict(ProbeRole::Startup),
            Cause::Limit { resource, .. } => self
                .limit(resource)
                .map(|(rule, observed)| limit_reason(rule, observed)),
            Cause::BreakerTripped if to == StateName::BreakerOpen => {
                let b = &self.machine.policy().breaker;
                Some(format!(
                    "{} restarts in {}",
                    b.max_restarts,
                    crate::human::duration(b.window)
                ))
            }
            _ => None,
        }
    }

    /// When the open breaker lets a trial start, as wall-clock time.
    fn next_trial(&self) -> Option<SystemTime> {
        match self.machine.breaker() {
            BreakerStatus::Open { until: Some(at) } => {
                Some(SystemTime::now() + at.saturating_since(self.machine.now()))
            }
            _ => None,
        }
    }
}

/// How a main process ended, for people: `exited with 1`, `killed by signal 9 (SIGKILL)`.
pub fn exit_reason(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited with {c}"),
        ExitStatus::Signal(s) => format!("killed by {}", crate::human::signal(s)),
        ExitStatus::OomKilled => "killed by the OOM killer".to_string(),
    }
}

/// A limit's figures: `memory 73.1 MiB > 64 MiB for 10 s`.
fn limit_reason(rule: &LimitRule, observed: u64) -> String {
    let amount = |v: u64| match rule.resource {
        Resource::Memory => crate::human::bytes(v),
        Resource::Cpu => format!("{v}%"),
        _ => v.to_string(),
    };
    let sustained = if rule.sustain.is_zero() {
        String::new()
    } else {
        format!(" for {}", crate::human::duration(rule.sustain))
    };
    format!(
        "{} {} > {}{sustained}",
        rule.resource.name(),
        amount(observed),
        amount(rule.max)
    )
}

impl Event {
    /// The event for one notification of a step.
    pub(crate) fn from_notification(
        process: &Arc<str>,
        n: &Notification,
        cx: &Context<'_>,
    ) -> Event {
        let current_pid = cx.pid;
        let (instance, pid, what) = match *n {
            Notification::Transition {
                from,
                to,
                cause,
                instance,
                pid,
            } => (
                instance,
                pid,
                What::Transition {
                    from,
                    to,
                    cause: cause.name(),
                    exit: match cause {
                        Cause::Exited(status) => Some(status),
                        _ => None,
                    },
                    expected: match cause {
                        Cause::Exited(status) => {
                            Some(cx.machine.policy().exit_codes.is_success(status))
                        }
                        _ => None,
                    },
                    error: match cause {
                        Cause::SpawnFailed(_) => cx.spawn_error.map(str::to_string),
                        _ => None,
                    },
                    resource: match cause {
                        Cause::Limit { resource, .. } => Some(resource.name()),
                        _ => None,
                    },
                    reason: cx.reason(cause, to),
                    next_trial: (to == StateName::BreakerOpen)
                        .then(|| cx.next_trial())
                        .flatten()
                        .map(crate::logs::time::format_rfc3339_millis),
                },
            ),
            Notification::ReadyChanged { instance, ready } => (
                Some(instance),
                current_pid,
                What::Ready {
                    ready,
                    reason: (!ready)
                        .then(|| cx.probe_verdict(ProbeRole::Readiness))
                        .flatten(),
                },
            ),
            Notification::ProbeFailed {
                instance,
                role,
                failure,
                consecutive,
                threshold,
            } => (
                Some(instance),
                current_pid,
                What::ProbeFailed {
                    probe: role.name(),
                    failure: failure.name(),
                    consecutive,
                    threshold,
                    reason: cx.probe_detail(role, failure),
                },
            ),
            Notification::LimitExceeded {
                instance,
                resource,
                observed,
                max,
                action,
            } => {
                let rule = cx
                    .machine
                    .policy()
                    .limits
                    .rules
                    .iter()
                    .find(|r| r.resource == resource);
                (
                    Some(instance),
                    current_pid,
                    What::LimitExceeded {
                        resource: resource.name(),
                        observed,
                        max,
                        for_ms: rule.map_or(0, |r| {
                            u64::try_from(r.sustain.as_millis()).unwrap_or(u64::MAX)
                        }),
                        action: action.name(),
                        reason: rule.map_or_else(
                            || format!("{} {observed} > {max}", resource.name()),
                            |r| limit_reason(r, observed),
                        ),
                    },
                )
            }
            Notification::BreakerClosed { instance } => {
                (Some(instance), current_pid, What::BreakerClosed)
            }
            Notification::SpawnFailed {
                instance,
                error: code,
            } => {
                let error = cx
                    .spawn_error
                    .map_or_else(|| code.to_string(), str::to_string);
                (
                    Some(instance),
                    None,
                    What::SpawnFailed {
                        reason: error.clone(),
                        error,
                    },
                )
            }
            Notification::BackoffScheduled { delay } => (
                None,
                None,
                What::BackoffScheduled {
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    restart: cx.machine.restarts() + 1,
                },
            ),
            Notification::Ignored { input, reason } => (
                None,
                None,
                What::Ignored {
                    input,
                    reason: match reason {
                        IgnoreReason::Stale => "stale",
                        IgnoreReason::Coalesced => "coalesced",
                        _ => "not_applicable",
                    },
                },
            ),
            _ => (
                None,
                None,
                What::Ignored {
                    input: "unknown",
                    reason: "not_applicable",
                },
            ),
        };
        Event {
            time: now_rfc3339(),
            process: process.clone(),
            instance: instance.map(|i| i.0),
            pid,
            what,
        }
    }

    /// The event as one line of JSON.
    pub fn to_json_line(&self) -> String {
        // Serializing plain strings, numbers and options cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Why, for people, when the event reports a failure (the same text as its `reason`).
    pub fn reason(&self) -> Option<&str> {
        match &self.what {
            What::Transition { reason, .. } | What::Ready { reason, .. } => reason.as_deref(),
            What::ProbeFailed { reason, .. }
            | What::LimitExceeded { reason, .. }
            | What::SpawnFailed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    crate::logs::time::format_rfc3339_millis(SystemTime::now())
}
