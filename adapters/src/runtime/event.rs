//! Events: the notifications of one process, as people and scripts read them (JSON lines).
//! A transition reads like
//! `{"time":"…","process":"web","instance":3,"pid":1234,"event":"transition","from":"running","to":"restarting","cause":"exited","exit":{"code":1}}`.

use std::sync::Arc;
use std::time::SystemTime;

use processcontrol_core::{Cause, ExitStatus, IgnoreReason, Notification, StateName};
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
        /// The error, when the cause is a spawn failure.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The resource, when the cause is a limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<&'static str>,
    },
    /// The readiness verdict changed.
    Ready {
        /// Ready or not.
        ready: bool,
    },
    /// A limit was exceeded for its whole `for` duration.
    LimitExceeded {
        /// The resource (`memory`, `cpu`, `fds`, `processes`, `threads`).
        resource: &'static str,
        /// What was observed (bytes, percent of one core, or a count).
        observed: u64,
        /// The configured maximum.
        max: u64,
        /// The action taken (`restart`, `graceful-shutdown`, `kill`, `warn`).
        action: &'static str,
    },
    /// A spawn failed.
    SpawnFailed {
        /// What the operating system said.
        error: String,
    },
    /// A half-open breaker closed.
    BreakerClosed,
    /// A restart was scheduled after a delay.
    BackoffScheduled {
        /// The delay in milliseconds.
        delay_ms: u64,
    },
    /// An input changed nothing (stale, coalesced or not applicable).
    Ignored {
        /// The input's name.
        input: &'static str,
        /// Why: `stale`, `coalesced` or `not_applicable`.
        reason: &'static str,
    },
}

impl Event {
    /// The event for one notification; `error` is the message of the spawn failure that a
    /// `spawn_failed` transition is about.
    pub(crate) fn from_notification(
        process: &Arc<str>,
        n: &Notification,
        error: Option<&str>,
        current_pid: Option<u32>,
    ) -> Event {
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
                    error: match cause {
                        Cause::SpawnFailed(_) => error.map(str::to_string),
                        _ => None,
                    },
                    resource: match cause {
                        Cause::Limit { resource, .. } => Some(resource.name()),
                        _ => None,
                    },
                },
            ),
            Notification::ReadyChanged { instance, ready } => {
                (Some(instance), current_pid, What::Ready { ready })
            }
            Notification::LimitExceeded {
                instance,
                resource,
                observed,
                max,
                action,
            } => (
                Some(instance),
                current_pid,
                What::LimitExceeded {
                    resource: resource.name(),
                    observed,
                    max,
                    action: action.name(),
                },
            ),
            Notification::BreakerClosed { instance } => {
                (Some(instance), current_pid, What::BreakerClosed)
            }
            Notification::SpawnFailed {
                instance,
                error: code,
            } => (
                Some(instance),
                None,
                What::SpawnFailed {
                    error: error.map_or_else(|| code.to_string(), str::to_string),
                },
            ),
            Notification::BackoffScheduled { delay } => (
                None,
                None,
                What::BackoffScheduled {
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
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
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
