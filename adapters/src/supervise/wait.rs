//! Waiting for a command's outcome: `processcontrol restart web` returns once the machine shows
//! the target reached (a new instance running, and ready where it has a readiness condition),
//! or shows it will not be (a breaker that opened, a spawn that failed, an exit for good), or
//! once its time is up.
//!
//! Nothing here decides. The command goes to the process's machine like any other; a
//! [`Judge`] only reads the statuses and events the machine publishes afterwards and says,
//! for people and scripts, whether they show the target state. The daemon does the waiting
//! (not the client) because only there can the status be read before the command is handed
//! over, and every later status and event be seen without polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use processcontrol_core::StateName;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::human;
use crate::runtime::{exit_reason, rfc3339_text, Event, Status, What};

/// What a command is to bring about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// An instance running, and ready where the process has a readiness condition.
    Start,
    /// Nothing left: at rest.
    Stop,
    /// A new instance running (and ready), replacing the one there was.
    Restart,
    /// Nothing left, at once.
    Kill,
    /// The breaker closed; a process whose breaker was open starts again (then as `Start`).
    Reset,
}

impl Goal {
    /// The goal's words in a timeout: `web: not up after 30 s`.
    fn reached_word(self) -> &'static str {
        match self {
            Goal::Start | Goal::Reset => "up",
            Goal::Restart => "restarted",
            Goal::Stop => "stopped",
            Goal::Kill => "gone",
        }
    }
}

/// How a command ended for one process: a line for people, the figures for scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The process.
    pub process: String,
    /// Whether the target state was reached.
    pub ok: bool,
    /// What happened, for scripts: `started`, `restarted`, `ready`, `stopped`, `killed`,
    /// `reset`, `finished`, `already_running`, `already_stopped`, `not_running`,
    /// `already_closed`, `reconfigured`, `signalled`, `asked` (reached or not: not waited
    /// for); failures `breaker_open`, `spawn_failed`, `failed`, `interrupted`, `timeout`.
    pub outcome: &'static str,
    /// The line for people, starting with the process's name.
    pub message: String,
    /// Its state when this was judged.
    pub state: StateName,
    /// The main process before the command.
    pub pid_before: Option<u32>,
    /// The main process now.
    pub pid: Option<u32>,
    /// Milliseconds from the command to this outcome.
    pub took_ms: u64,
    /// Why it was not reached (or how the instance ended), for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When an open breaker lets one trial start (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_trial: Option<String>,
}

/// Reads what the machine publishes after one command to one process, and says when it
/// shows the goal reached or not reachable.
#[derive(Debug)]
pub struct Judge {
    goal: Goal,
    before: Status,
    asked: Instant,
    /// The last failure the events told since the command (an exit, a probe's verdict).
    last_failure: Option<String>,
    /// Why the breaker opened, from its event.
    breaker_reason: Option<String>,
}

impl Judge {
    /// A judge of `goal` for a process whose status was `before` just before the command
    /// was handed over.
    pub fn new(goal: Goal, before: Status) -> Judge {
        Judge {
            goal,
            before,
            asked: Instant::now(),
            last_failure: None,
            breaker_reason: None,
        }
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.before.name
    }

    /// Its status before the command.
    pub fn before(&self) -> &Status {
        &self.before
    }

    /// The outcome of a reload that changed a process that was not running: its next start
    /// uses the new configuration.
    pub fn reconfigured(&self) -> Outcome {
        let text = format!(
            "reconfigured (it is {}, so not restarted)",
            self.before.state
        );
        self.outcome(&self.before, true, "reconfigured", text, None)
    }

    /// The outcome known before anything happens: the target already holds.
    pub fn at_once(&self, blocked: Option<&str>) -> Option<Outcome> {
        let b = &self.before;
        let pid = |p: Option<u32>| p.map_or_else(String::new, |p| format!(", pid {p}"));
        let (outcome, text) = match self.goal {
            Goal::Start if is_up(b) => {
                ("already_running", format!("already running{}", pid(b.pid)))
            }
            Goal::Stop if b.at_rest() => match blocked {
                Some(waiting) => ("stopped", format!("stopped (its start was {waiting})")),
                None => ("already_stopped", format!("already {}", b.state)),
            },
            Goal::Kill if b.at_rest() => ("not_running", "not running, nothing to kill".into()),
            Goal::Reset if b.breaker == "closed" => (
                "already_closed",
                "breaker already closed (its restart history is cleared)".into(),
            ),
            _ => return None,
        };
        Some(self.outcome(b, true, outcome, text, None))
    }

    /// The outcome of a command not waited for (`--no-wait`).
    pub fn asked(&self) -> Outcome {
        let text = format!(
            "{} asked, not waiting",
            match self.goal {
                Goal::Start => "start",
                Goal::Stop => "stop",
                Goal::Restart => "restart",
                Goal::Kill => "kill",
                Goal::Reset => "breaker reset",
            }
        );
        self.outcome(&self.before, true, "asked", text, None)
    }

    /// Takes one event of this process; a spawn failure of an instance started since the
    /// command ends the wait.
    pub fn event(&mut self, event: &Event, now: &Status) -> Option<Outcome> {
        let stale = event.instance.is_some_and(|i| i < self.before.newest);
        if stale {
            return None;
        }
        match &event.what {
            What::SpawnFailed { reason, .. }
                if matches!(self.goal, Goal::Start | Goal::Restart | Goal::Reset)
                    && event.instance.is_some_and(|i| i > self.before.newest) =>
            {
                let text = format!("cannot start: {reason}");
                return Some(self.outcome(now, false, "spawn_failed", text, Some(reason.clone())));
            }
            What::Transition {
                to: StateName::BreakerOpen,
                reason,
                ..
            } => self.breaker_reason = reason.clone(),
            What::ProbeFailed {
                probe,
                consecutive,
                threshold,
                reason,
                ..
            } => {
                self.last_failure = Some(format!(
                    "{probe} failed {consecutive}/{threshold}: {reason}"
                ));
            }
            _ => {
                if let Some(reason) = event.reason() {
                    self.last_failure = Some(reason.to_string());
                }
            }
        }
        None
    }

    /// Takes one status published since the command; says whether it settles the goal.
    pub fn status(&self, s: &Status) -> Option<Outcome> {
        let b = &self.before;
        let new = s.newest > b.newest;
        let took = human::seconds(self.asked.elapsed());
        match self.goal {
            Goal::Stop | Goal::Kill => {
                if !s.at_rest() {
                    return None;
                }
                let how = match (b.pid, s.exit) {
                    (Some(pid), Some(exit)) => format!(": pid {pid} {}", exit_reason(exit)),
                    (Some(pid), None) => format!(": pid {pid} gone"),
                    (None, _) => " (no process was running)".into(),
                };
                let outcome = if self.goal == Goal::Kill {
                    "killed"
                } else {
                    "stopped"
                };
                Some(self.outcome(
                    s,
                    true,
                    outcome,
                    format!("{} in {took}{how}", s.state),
                    None,
                ))
            }
            Goal::Reset if b.breaker == "half_open" => (s.breaker == "closed").then(|| {
                let pid = s.pid.map_or_else(String::new, |p| format!(", pid {p}"));
                let text = format!("breaker closed; the trial instance stays{pid}");
                self.outcome(s, true, "reset", text, None)
            }),
            Goal::Start | Goal::Restart | Goal::Reset => self.coming_up(s, new, &took),
        }
    }

    /// Judges a status for a goal that wants an instance up.
    fn coming_up(&self, s: &Status, new: bool, took: &str) -> Option<Outcome> {
        let b = &self.before;
        // A restart asked while an instance was being spawned is that instance.
        let spawning = b.pid.is_none() && b.instance.is_some() && s.instance == b.instance;
        let this_run = match self.goal {
            Goal::Start => new || s.instance == b.instance,
            _ => new || spawning,
        };
        if this_run && is_up(s) {
            let pid = s.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
            let when = if s.has_readiness { "ready" } else { "up" };
            let (outcome, text) = match (self.goal, b.pid) {
                (Goal::Restart, Some(old)) if new => (
                    "restarted",
                    format!("restarted, pid {old} -> {pid}, {when} in {took}"),
                ),
                // The instance there was, now past its startup probe or ready.
                (Goal::Start, _) if !new => (
                    if s.has_readiness { "ready" } else { "started" },
                    format!("{when}, pid {pid}, in {took}"),
                ),
                (Goal::Reset, _) => (
                    "reset",
                    format!("breaker reset; started, pid {pid}, {when} in {took}"),
                ),
                (_, None) if b.at_rest() || b.state == StateName::BreakerOpen => {
                    let was = match b.state {
                        StateName::BreakerOpen => "its breaker was open".to_string(),
                        state => format!("it was {state}"),
                    };
                    (
                        "started",
                        format!("started, pid {pid} ({was}), {when} in {took}"),
                    )
                }
                _ => ("started", format!("started, pid {pid}, {when} in {took}")),
            };
            return Some(self.outcome(s, true, outcome, text, None));
        }
        if s.state == StateName::BreakerOpen && (b.state != StateName::BreakerOpen || new) {
            let why = self
                .breaker_reason
                .clone()
                .unwrap_or_else(|| "too many restarts".into());
            let next = match s.next_trial {
                Some(at) => format!("next trial at {}", human::clock(at)),
                None => "no further trial".into(),
            };
            let text = format!(
                "breaker open after {why}; {next}; 'processcontrol reset {}' closes it",
                b.name
            );
            return Some(self.outcome(s, false, "breaker_open", text, Some(why)));
        }
        // At rest without a new instance: the old one stopped, and its replacement may still
        // come (a restart of everything stops before it starts); only a new instance that
        // came to rest, or a start undone, is final.
        let undone = self.goal == Goal::Start && !b.at_rest();
        if s.at_rest() && (new || undone) {
            let how = self
                .last_failure
                .clone()
                .or_else(|| s.exit.map(exit_reason));
            let (ok, outcome, text) = match s.state {
                StateName::Exited => (
                    true,
                    "finished",
                    format!("started and finished: {}", how.clone().unwrap_or_default()),
                ),
                StateName::Failed => (
                    false,
                    "failed",
                    format!("failed: {}", how.clone().unwrap_or_else(|| "failed".into())),
                ),
                state => (
                    false,
                    "interrupted",
                    format!("{state} before it was up (another command?)"),
                ),
            };
            return Some(self.outcome(s, ok, outcome, text, how));
        }
        None
    }

    /// The outcome when the time is up: what the process is doing instead.
    pub fn timed_out(&self, s: &Status, blocked: Option<&str>, waited: Duration) -> Outcome {
        let doing = match (blocked, s.state) {
            (Some(waiting), _) => waiting.to_string(),
            (None, StateName::Running) if s.has_readiness && !s.ready => {
                "running, not ready".into()
            }
            (None, StateName::Starting) => "starting (its startup probe has not passed)".into(),
            (None, StateName::ShuttingDown) => match s.pid {
                Some(pid) => format!("still stopping, pid {pid}"),
                None => "still stopping".into(),
            },
            (None, state) => state.to_string(),
        };
        let last = self
            .last_failure
            .as_deref()
            .map_or_else(String::new, |f| format!("; last failure: {f}"));
        let text = format!(
            "not {} after {}: {doing}{last}",
            self.goal.reached_word(),
            human::duration(waited)
        );
        let reason = self.last_failure.clone().or(Some(doing));
        self.outcome(s, false, "timeout", text, reason)
    }

    fn outcome(
        &self,
        s: &Status,
        ok: bool,
        outcome: &'static str,
        text: String,
        reason: Option<String>,
    ) -> Outcome {
        Outcome {
            process: self.before.name.to_string(),
            ok,
            outcome,
            message: format!("{}: {text}", self.before.name),
            state: s.state,
            pid_before: self.before.pid,
            pid: s.pid,
            took_ms: u64::try_from(self.asked.elapsed().as_millis()).unwrap_or(u64::MAX),
            reason,
            next_trial: s.next_trial.map(rfc3339_text),
        }
    }
}

/// The outcome of passing `signal` to a process whose status was `before`: handed to its
/// machine, which sends it to every process of the instance, or not sent when no instance
/// has a process.
pub fn signalled(before: &Status, signal: &str) -> Outcome {
    let (ok, outcome, text) = match before.pid {
        Some(pid) => (
            true,
            "signalled",
            format!("{signal} sent to its processes (pid {pid})"),
        ),
        None => (
            false,
            "not_running",
            format!("not running ({}); no signal sent", before.state),
        ),
    };
    Outcome {
        process: before.name.to_string(),
        ok,
        outcome,
        message: format!("{}: {text}", before.name),
        state: before.state,
        pid_before: before.pid,
        pid: before.pid,
        took_ms: 0,
        reason: None,
        next_trial: None,
    }
}

/// Running, and ready where it has a readiness condition.
fn is_up(s: &Status) -> bool {
    s.state == StateName::Running && s.pid.is_some() && (s.ready || !s.has_readiness)
}

/// One process being waited for.
#[derive(Debug)]
pub struct Watched {
    /// Its judge.
    pub judge: Judge,
    /// Its statuses; the one the judge was made with already marked seen.
    pub status: watch::Receiver<Status>,
}

/// Observes the processes until each has an outcome or `wait` has passed, sending each
/// outcome to `out` as soon as it is known (as JSON), and returns them in that order. Ends
/// early, with what it has, when the receiver of `out` is gone (the client left). `events`
/// must have been subscribed before the command was handed over, so nothing it led to is
/// missed; `blocked` tells what a process's start waits for, for a timeout's message.
pub async fn observe(
    watched: Vec<Watched>,
    mut events: broadcast::Receiver<Arc<Event>>,
    wait: Duration,
    blocked: impl Fn(&str) -> Option<String>,
    out: &mpsc::Sender<Value>,
) -> Vec<Outcome> {
    let deadline = Instant::now() + wait;
    let mut slots: Vec<Option<Watched>> = watched.into_iter().map(Some).collect();
    let index: HashMap<String, usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((w.as_ref()?.judge.name().to_string(), i)))
        .collect();
    // One small task per process turns its status changes into its index.
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    let mut forwarders = JoinSet::new();
    for (i, w) in slots.iter().enumerate() {
        let Some(w) = w else { continue };
        let mut rx = w.status.clone();
        let tx = changed_tx.clone();
        forwarders.spawn(async move {
            while rx.changed().await.is_ok() {
                if tx.send(i).is_err() {
                    return;
                }
            }
        });
    }
    drop(changed_tx);
    let mut outcomes = Vec::new();
    let mut left = slots.iter().filter(|w| w.is_some()).count();
    let mut events_open = true;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    // Everything the machine says goes out before the status it led to: a status is judged
    // only once the events published before it have been read.
    // The statuses as they are now first: a process may be there already (one a reload
    // added, whose statuses were not taken before).
    let mut first = true;
    while left > 0 {
        let settled: Vec<(usize, Outcome)> = if std::mem::take(&mut first) {
            // What the command already led to may be on both channels by now: its events
            // first, as everywhere else.
            let mut settled: Vec<(usize, Outcome)> = Vec::new();
            while let Ok(event) = events.try_recv() {
                settled.extend(judge_event(&mut slots, &index, &event));
            }
            settled.extend(
                (0..slots.len())
                    .filter(|i| !settled.iter().any(|(j, _)| j == i))
                    .filter_map(|i| judge_status(&slots, i).map(|o| (i, o)))
                    .collect::<Vec<_>>(),
            );
            settled
        } else {
            tokio::select! {
            biased;
            () = out.closed() => break,
            event = events.recv(), if events_open => match event {
                Ok(event) => judge_event(&mut slots, &index, &event).into_iter().collect(),
                // Some events were lost: the statuses still tell where each process is.
                Err(broadcast::error::RecvError::Lagged(_)) => (0..slots.len())
                    .filter_map(|i| judge_status(&slots, i).map(|o| (i, o)))
                    .collect(),
                Err(broadcast::error::RecvError::Closed) => {
                    events_open = false;
                    Vec::new()
                }
            },
            Some(i) = changed.recv() => {
                let mut settled: Vec<(usize, Outcome)> = Vec::new();
                while let Ok(event) = events.try_recv() {
                    settled.extend(judge_event(&mut slots, &index, &event));
                }
                if !settled.iter().any(|(j, _)| *j == i) {
                    settled.extend(judge_status(&slots, i).map(|o| (i, o)));
                }
                settled
            }
            () = &mut sleep => {
                (0..slots.len())
                    .filter_map(|i| {
                        let w = slots[i].as_ref()?;
                        let s = w.status.borrow().clone();
                        let waiting = blocked(w.judge.name());
                        Some((i, w.judge.timed_out(&s, waiting.as_deref(), wait)))
                    })
                    .collect()
            }
            }
        };
        for (i, outcome) in settled {
            if slots[i].take().is_none() {
                continue;
            }
            left -= 1;
            let _ = out
                .send(serde_json::to_value(&outcome).unwrap_or(Value::Null))
                .await;
            outcomes.push(outcome);
        }
    }
    forwarders.abort_all();
    outcomes
}

fn judge_event(
    slots: &mut [Option<Watched>],
    index: &HashMap<String, usize>,
    event: &Event,
) -> Option<(usize, Outcome)> {
    let i = *index.get(&*event.process)?;
    let w = slots[i].as_mut()?;
    let now = w.status.borrow().clone();
    w.judge.event(event, &now).map(|o| (i, o))
}

fn judge_status(slots: &[Option<Watched>], i: usize) -> Option<Outcome> {
    let w = slots[i].as_ref()?;
    let s = w.status.borrow().clone();
    w.judge.status(&s)
}

#[cfg(test)]
mod tests;
