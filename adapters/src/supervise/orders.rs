//! A client's commands to the processes of a group, carried out as any command is (through
//! the group machine, or the process's own machine) and then observed until their outcome:
//! see [`wait`](super::wait) for how an outcome is judged.
//!
//! A waiting command is answered as a stream of JSON items: one [`Outcome`] per process as
//! soon as it is known, then for some commands a closing item: `{"summary":"..."}` (for
//! `--all`, a reload and a shutdown) and, first for a reload, `{"reload":{...}}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::group::{Blocked, Group, GroupError, Member, ReloadReport, Summary};
use super::wait::{observe, Goal, Judge, Outcome, Watched};
use crate::narrate::{shutdown_summary, start_summary};
use crate::runtime::{Event, Status};

/// What a client asks of one process, or of every one where the name is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    /// Start it (and what it depends on).
    Start(Option<String>),
    /// Stop it gracefully, with this grace instead of its own.
    Stop(Option<String>, Option<Duration>),
    /// Replace its instance (every process: stopped dependents first, started in order);
    /// with `force`, close the breaker first.
    Restart(Option<String>, bool),
    /// Kill its instance now.
    Kill(String),
    /// Close its breaker.
    Reset(String),
}

/// The answer to a command: the stream of its items, and the task that feeds it (which a
/// daemon that is about to stop may wait for).
#[derive(Debug)]
pub struct Answer {
    /// The items.
    pub items: mpsc::Receiver<Value>,
    /// The task sending them; it ends once every outcome is sent or the client left.
    pub task: JoinHandle<()>,
}

/// Processes whose status was taken just before a command, with what their start waited for
/// then, and the events from that moment on.
pub(crate) struct Watching {
    watched: Vec<(Watched, Option<String>)>,
    /// What a process's start waits for now, for a timeout's message.
    blocked: Blocked,
    /// Outcomes known without a judge (a reload that only reconfigured a process).
    known: Vec<Outcome>,
    events: broadcast::Receiver<Arc<Event>>,
    began: Instant,
}

impl Group {
    /// Takes the status of each named process before a command for `goal` is handed over.
    pub(crate) fn watch(&self, names: &[String], goal: Goal) -> Result<Watching, GroupError> {
        // Subscribed first: every event after the statuses are taken is seen.
        let events = self.host_events();
        let mut watched = Vec::with_capacity(names.len());
        for name in names {
            let sup = self.get(name)?;
            let mut status = sup.watch_status();
            let before = status.borrow_and_update().clone();
            let blocked = self.blocked(name);
            watched.push((
                Watched {
                    judge: Judge::new(goal, before),
                    status,
                },
                blocked,
            ));
        }
        Ok(Watching {
            watched,
            blocked: self.blocked_reader(),
            known: Vec::new(),
            events,
            began: Instant::now(),
        })
    }

    /// Carries out `order`, then answers with each process's outcome: at once with what is
    /// known then when `wait` is `None` (`--no-wait`), else once the outcome is known or
    /// `wait` has passed.
    pub async fn order(
        self: &Arc<Self>,
        order: Order,
        wait: Option<Duration>,
    ) -> Result<Answer, GroupError> {
        let (name, goal) = match &order {
            Order::Start(name) => (name.clone(), Goal::Start),
            Order::Stop(name, _) => (name.clone(), Goal::Stop),
            Order::Restart(name, _) => (name.clone(), Goal::Restart),
            Order::Kill(name) => (Some(name.clone()), Goal::Kill),
            Order::Reset(name) => (Some(name.clone()), Goal::Reset),
        };
        let all = name.is_none();
        let names = match name {
            Some(name) => vec![self.get(&name)?.name().to_string()],
            None => self.names(),
        };
        let watching = self.watch(&names, goal)?;
        match order {
            Order::Start(name) => {
                self.start(name.as_deref()).await?;
            }
            Order::Stop(name, grace) => {
                self.stop(name.as_deref(), grace).await?;
            }
            Order::Restart(Some(name), force) => {
                let sup = self.get(&name)?;
                // Closing an open breaker starts the process: that start is the restart.
                let open = sup.status().state == processcontrol_core::StateName::BreakerOpen;
                if force {
                    sup.reset_breaker()?;
                }
                if !(force && open) {
                    sup.restart()?;
                }
            }
            Order::Restart(None, force) => {
                if force {
                    for name in &names {
                        self.get(name)?.reset_breaker()?;
                    }
                }
                self.restart_all().await?;
            }
            Order::Kill(name) => self.get(&name)?.kill()?,
            Order::Reset(name) => self.get(&name)?.reset_breaker()?,
        }
        let group = self.clone();
        let summed = all && wait.is_some();
        Ok(watching.answer(wait, move |outcomes, began| {
            summed
                .then(|| group.summary(goal, outcomes, began.elapsed()))
                .flatten()
        }))
    }

    /// Applies `members` as [`Group::apply`] does, then answers with the report, the outcome
    /// of each process it started, restarted or stopped, and the reload's summary.
    pub async fn reload(
        self: &Arc<Self>,
        members: Vec<Member>,
        wait: Option<Duration>,
    ) -> Result<Answer, GroupError> {
        let before = self.watch(&self.names(), Goal::Stop)?;
        let report = self.apply(members).await?;
        let mut watching = Watching {
            watched: Vec::new(),
            blocked: before.blocked,
            known: Vec::new(),
            events: before.events,
            began: before.began,
        };
        let mut previous = before.watched;
        let mut take = |name: &str| {
            let i = previous.iter().position(|(w, _)| w.judge.name() == name)?;
            Some(previous.swap_remove(i).0)
        };
        for name in &report.removed {
            if let Some(w) = take(name) {
                watching.watched.push((w, None));
            }
        }
        for name in &report.changed {
            let Some(w) = take(name) else { continue };
            let before = w.judge.before().clone();
            if before.at_rest() {
                watching
                    .known
                    .push(Judge::new(Goal::Start, before).reconfigured());
            } else {
                watching.watched.push((
                    Watched {
                        judge: Judge::new(Goal::Restart, before),
                        status: w.status,
                    },
                    None,
                ));
            }
        }
        for name in &report.added {
            let sup = self.get(name)?;
            // A process new to the group: any instance it has is one this reload started.
            let before = Status::new(name.as_str().into());
            watching.watched.push((
                Watched {
                    judge: Judge::new(Goal::Start, before),
                    status: sup.watch_status(),
                },
                None,
            ));
        }
        let summary = Summary::Reloaded {
            report: report.clone(),
        }
        .text();
        let first = vec![json!({ "reload": report_value(&report) })];
        let group = self.clone();
        let (tx, items) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let deadline = wait.map(|w| Instant::now() + w);
            watching.send(wait, first, &tx).await;
            // A removed process is gone once the group forgot it, not only once stopped.
            if let Some(deadline) = deadline {
                let _ = tokio::time::timeout_at(deadline, group.forgotten(&report.removed)).await;
            }
            let _ = tx.send(json!({ "summary": summary })).await;
        });
        Ok(Answer { items, task })
    }

    /// Watches every process stop during a shutdown the caller is about to begin; the
    /// answer ends with the shutdown's summary, once the group machine says it is complete.
    pub fn watch_shutdown(self: &Arc<Self>, wait: Option<Duration>) -> Result<Answer, GroupError> {
        let watching = self.watch(&self.names(), Goal::Stop)?;
        let mut summaries = self.subscribe_summaries();
        let deadline = wait.map(|w| Instant::now() + w);
        let (tx, items) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            watching.send(wait, Vec::new(), &tx).await;
            let Some(deadline) = deadline else { return };
            let summary = tokio::time::timeout_at(deadline, async {
                loop {
                    match summaries.recv().await {
                        Ok(s) if matches!(*s, Summary::ShutDown { .. }) => return Some(s),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .await;
            if let Ok(Some(summary)) = summary {
                let _ = tx.send(json!({ "summary": summary.text() })).await;
            }
        });
        Ok(Answer { items, task })
    }

    /// The closing line of a command to every process: how many are up and which ready, or
    /// which stopped, in the order they did.
    fn summary(&self, goal: Goal, outcomes: &[Outcome], took: Duration) -> Option<String> {
        let ok: Vec<&str> = outcomes
            .iter()
            .filter(|o| o.ok)
            .map(|o| o.process.as_str())
            .collect();
        match goal {
            Goal::Start | Goal::Restart => {
                let ready: Vec<&str> = ok
                    .iter()
                    .copied()
                    .filter(|name| {
                        self.get(name)
                            .is_ok_and(|s| s.status().has_readiness && s.status().ready)
                    })
                    .collect();
                Some(start_summary(ok.len(), &ready, took))
            }
            Goal::Stop => Some(shutdown_summary(&ok, took)),
            Goal::Kill | Goal::Reset => None,
        }
    }
}

impl Watching {
    /// Spawns the task that sends the outcomes, then what `closing` makes of them.
    fn answer(
        self,
        wait: Option<Duration>,
        closing: impl FnOnce(&[Outcome], Instant) -> Option<String> + Send + 'static,
    ) -> Answer {
        let (tx, items) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let began = self.began;
            let outcomes = self.send(wait, Vec::new(), &tx).await;
            if let Some(summary) = closing(&outcomes, began) {
                let _ = tx.send(json!({ "summary": summary })).await;
            }
        });
        Answer { items, task }
    }

    /// Sends `first`, the outcomes known at once, then (with `wait`) each other one as it is
    /// judged, or (without) that each was asked.
    async fn send(
        self,
        wait: Option<Duration>,
        first: Vec<Value>,
        tx: &mpsc::Sender<Value>,
    ) -> Vec<Outcome> {
        for item in first {
            let _ = tx.send(item).await;
        }
        let mut outcomes = self.known;
        let mut pending = Vec::new();
        for (w, blocked) in self.watched {
            match w.judge.at_once(blocked.as_deref()) {
                Some(outcome) => outcomes.push(outcome),
                None => pending.push(w),
            }
        }
        for outcome in &outcomes {
            let _ = tx.send(to_value(outcome)).await;
        }
        match wait {
            None => {
                for w in pending {
                    let outcome = w.judge.asked();
                    let _ = tx.send(to_value(&outcome)).await;
                    outcomes.push(outcome);
                }
            }
            Some(wait) => {
                outcomes.extend(observe(pending, self.events, wait, self.blocked, tx).await);
            }
        }
        outcomes
    }
}

fn to_value(outcome: &Outcome) -> Value {
    serde_json::to_value(outcome).unwrap_or(Value::Null)
}

fn report_value(report: &ReloadReport) -> Value {
    serde_json::to_value(report).unwrap_or(Value::Null)
}
