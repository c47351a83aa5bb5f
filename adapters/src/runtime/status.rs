//! A snapshot of one supervised process, as status output shows it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use processcontrol_core::{BreakerStatus, DeadlineKind, ExitStatus, ProbeRole, StateName, Usage};
use serde::{Serialize, Serializer};

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
    /// When it ended (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub exit_time: Option<SystemTime>,
    /// When an open breaker lets one trial start (RFC 3339); absent when it never does.
    #[serde(serialize_with = "rfc3339")]
    pub next_trial: Option<SystemTime>,
    /// What the machine does next without a command, once its deadline comes: `restart` (a
    /// backoff ends), `kill` (the stop grace ends), `kill_again`, `trial_start` (a breaker's
    /// cooldown ends), `streak_end` (the instance has been up for `reset_after`).
    pub next_action: Option<&'static str>,
    /// When (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub next_action_time: Option<SystemTime>,
    /// The newest instance ever spawned (0: none yet). It only grows, so whoever waits for a
    /// new instance knows one came even when it missed the states in between.
    pub newest: u64,
    /// The last failure, for people: an unexpected exit, a probe's verdict with what it saw,
    /// a limit with its figures, a spawn error, a breaker that opened.
    pub last_error: Option<String>,
    /// When that failure happened (RFC 3339).
    pub last_error_time: Option<String>,
    /// Resident memory of the whole tree at the last sample, in bytes.
    pub rss: Option<u64>,
    /// CPU of the whole tree at the last sample, in percent of one core.
    pub cpu: Option<u64>,
    /// The whole last sample of the current instance (for the limits of `status NAME`).
    #[serde(skip)]
    pub usage: Option<Usage>,
    /// The last verdicts of each probe (for `status NAME`); a new copy is made only when a
    /// probe reports.
    #[serde(skip)]
    pub probes: Arc<ProbeHistory>,
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
            exit_time: None,
            next_trial: None,
            next_action: None,
            next_action_time: None,
            newest: 0,
            last_error: None,
            last_error_time: None,
            rss: None,
            cpu: None,
            usage: None,
            probes: Arc::default(),
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

/// How many verdicts of each probe status keeps.
pub const PROBE_HISTORY: usize = 5;

/// The last verdicts of each probe, oldest first, at most [`PROBE_HISTORY`] each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeHistory {
    /// The startup probe's.
    pub startup: VecDeque<Verdict>,
    /// The liveness probe's.
    pub liveness: VecDeque<Verdict>,
    /// The readiness probe's.
    pub readiness: VecDeque<Verdict>,
    /// Failed checks in a row of each probe (startup, liveness, readiness), however many.
    failing: [u32; 3],
}

impl ProbeHistory {
    /// The verdicts of one probe.
    pub fn of(&self, role: ProbeRole) -> &VecDeque<Verdict> {
        match role {
            ProbeRole::Startup => &self.startup,
            ProbeRole::Liveness => &self.liveness,
            ProbeRole::Readiness => &self.readiness,
        }
    }

    /// Failed checks in a row of one probe, up to now.
    pub fn failing(&self, role: ProbeRole) -> u32 {
        self.failing[index(role)]
    }

    pub(crate) fn record(&mut self, role: ProbeRole, verdict: Verdict) {
        let failing = &mut self.failing[index(role)];
        *failing = if verdict.ok {
            0
        } else {
            failing.saturating_add(1)
        };
        let list = match role {
            ProbeRole::Startup => &mut self.startup,
            ProbeRole::Liveness => &mut self.liveness,
            ProbeRole::Readiness => &mut self.readiness,
        };
        if list.len() == PROBE_HISTORY {
            list.pop_front();
        }
        list.push_back(verdict);
    }
}

fn index(role: ProbeRole) -> usize {
    match role {
        ProbeRole::Startup => 0,
        ProbeRole::Liveness => 1,
        ProbeRole::Readiness => 2,
    }
}

/// One verdict of a probe.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// When it came (RFC 3339).
    #[serde(serialize_with = "rfc3339_at")]
    pub time: SystemTime,
    /// Whether the check passed.
    pub ok: bool,
    /// What a failed check saw (`GET /healthz -> 503 Service Unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The name of what a deadline of the machine leads to, as `next_action` gives it.
pub(crate) fn action_name(kind: DeadlineKind) -> &'static str {
    match kind {
        DeadlineKind::Backoff => "restart",
        DeadlineKind::StopGrace => "kill",
        DeadlineKind::KillRetry => "kill_again",
        DeadlineKind::BreakerCooldown => "trial_start",
        DeadlineKind::StableUptime => "streak_end",
    }
}

/// A wall-clock time as RFC 3339 in UTC with milliseconds, as events give times.
pub fn rfc3339_text(t: SystemTime) -> String {
    crate::logs::time::format_rfc3339_millis(t)
}

fn rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339_text(*t)),
        None => s.serialize_none(),
    }
}

fn rfc3339_at<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_text(*t))
}

pub(crate) fn breaker_name(b: BreakerStatus) -> &'static str {
    match b {
        BreakerStatus::Closed => "closed",
        BreakerStatus::Open { .. } => "open",
        BreakerStatus::HalfOpen => "half_open",
    }
}
