//! A snapshot of one supervised process, as status output shows it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use processcontrol_core::{BreakerStatus, ExitStatus, StateName};
use serde::Serialize;

/// A process's state at one moment; published after every step of its machine.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The process's name.
    pub name: Arc<str>,
    /// Its state (snake_case in JSON, as in the core).
    pub state: StateName,
    /// The current instance.
    pub instance: Option<u64>,
    /// Its main process id.
    pub pid: Option<u32>,
    /// When the current instance started (wall clock), while it is up.
    #[serde(skip)]
    pub started_at: Option<SystemTime>,
    /// Restarts so far, every cause.
    pub restarts: u64,
    /// Totals since the process was added, for metrics (`restarts` by cause among them).
    #[serde(skip)]
    pub tallies: Arc<Tallies>,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Whether the readiness probe passed (false without one).
    pub ready: bool,
    /// Whether the process has a readiness condition (a probe, or sd_notify `READY=1`): only
    /// then is `ready` expected; without one the table shows `-`.
    pub has_readiness: bool,
    /// How the last instance's main process ended, if one did.
    pub exit: Option<ExitStatus>,
    /// The last failure, for people: an unexpected exit, a probe's verdict with what it saw,
    /// a limit with its figures, a spawn error, a breaker that opened.
    pub last_error: Option<String>,
    /// When that failure happened (RFC 3339).
    pub last_error_time: Option<String>,
    /// Resident memory of the whole tree at the last sample, in bytes.
    pub rss: Option<u64>,
    /// CPU of the whole tree at the last sample, in percent of one core.
    pub cpu: Option<u64>,
}

impl Status {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Status {
            name,
            state: StateName::Stopped,
            instance: None,
            pid: None,
            started_at: None,
            restarts: 0,
            tallies: Arc::default(),
            breaker: "closed",
            ready: false,
            has_readiness: false,
            exit: None,
            last_error: None,
            last_error_time: None,
            rss: None,
            cpu: None,
        }
    }

    /// How long the current instance has been up.
    pub fn uptime(&self) -> Option<Duration> {
        self.started_at
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    /// Whether no instance exists and none is coming without a command: stopped, exited,
    /// failed, killed (and gone), or a breaker that stays open.
    pub fn at_rest(&self) -> bool {
        self.instance.is_none()
            && matches!(
                self.state,
                StateName::Stopped | StateName::Exited | StateName::Failed | StateName::Killed
            )
    }
}

/// Counts by name since a process was added: each list holds `(name, count)` pairs, in the
/// order the names first occurred.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Restart spawns by cause (as named in events: `exited`, `liveness_failed`...); they sum
    /// to [`Status::restarts`].
    pub restarts: Vec<(&'static str, u64)>,
    /// Limits exceeded for their whole `for` duration, by resource.
    pub limits_exceeded: Vec<(&'static str, u64)>,
    /// Failed probe verdicts by probe (`liveness`, `readiness`, `startup`).
    pub probe_failures: Vec<(&'static str, u64)>,
}

impl Tallies {
    pub(crate) fn add(list: &mut Vec<(&'static str, u64)>, name: &'static str, n: u64) {
        match list.iter_mut().find(|(k, _)| *k == name) {
            Some((_, count)) => *count += n,
            None => list.push((name, n)),
        }
    }
}

pub(crate) fn breaker_name(b: BreakerStatus) -> &'static str {
    match b {
        BreakerStatus::Closed => "closed",
        BreakerStatus::Open { .. } => "open",
        BreakerStatus::HalfOpen => "half_open",
    }
}
