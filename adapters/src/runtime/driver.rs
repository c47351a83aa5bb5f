//! The task that owns one process's machine. Everything that happens to the process (an exit,
//! a probe result, a sample, a command, the deadline) arrives in its mailbox; the task feeds it
//! to the machine and carries out the effects in order. It decides nothing itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use processcontrol_core::{
    Cause, Effect, Input, Machine, Notification, Observed, RestartCause, Timestamp, Usage,
};
use tokio::sync::watch;

use super::event::{role_index, Context, Event, What};
use super::handle::{Observer, Reconfiguration};
use super::status::{action_name, breaker_name, ProbeHistory, Status, Tallies, Verdict};
use crate::ports::{Mail, Ports, Reporter};

pub(crate) struct Driver {
    pub(crate) name: Arc<str>,
    pub(crate) machine: Machine,
    pub(crate) ports: Ports,
    pub(crate) reporter: Reporter,
    pub(crate) mail: flume::Receiver<Mail>,
    pub(crate) status: watch::Sender<Status>,
    /// Facts produced while executing effects (spawn results), fed before new mail.
    pub(crate) queue: VecDeque<Input>,
    /// The message of the last spawn failure, for the events of the step that reports it.
    pub(crate) spawn_error: Option<String>,
    /// The last failure of the process, for people (status `last_error`), and when.
    pub(crate) last_error: Option<(String, SystemTime)>,
    /// The last failure message of each probe role, for the events and status it leads to.
    pub(crate) probe_details: [Option<Box<str>>; 3],
    /// The last sample of the current instance, for status.
    pub(crate) usage: Option<Usage>,
    /// A shutdown was asked: the task ends once the process is at rest.
    pub(crate) closing: bool,
    /// Totals for status; a new copy is made only when one of them moves.
    pub(crate) tallies: Arc<Tallies>,
    /// Told every change of what a group sees of the machine (a group member's owner).
    pub(crate) observer: Option<Observer>,
    /// What the observer was last told.
    pub(crate) observed: Option<Observed>,
    /// A new configuration waiting for the current instance to be gone.
    pub(crate) pending: Option<Box<Reconfiguration>>,
    /// When the last instance's main process ended, for status.
    pub(crate) exit_time: Option<SystemTime>,
    /// The last verdicts of each probe, for status; copied only when a probe reports.
    pub(crate) probes: Arc<ProbeHistory>,
}

impl Driver {
    /// Runs until shut down (by the handle, or its drop) and the process is at rest.
    ///
    /// Takes the driver boxed: an async fn keeps its by-value argument and the moved-in
    /// locals as separate fields, so `run(self)` made each task carry the driver twice.
    pub(crate) async fn run(mut self: Box<Self>) {
        // One sleep, re-armed after every step to the machine's single deadline.
        let sleep = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(sleep);
        loop {
            if self.closing && self.at_rest() {
                break;
            }
            let input = if let Some(input) = self.queue.pop_front() {
                input
            } else {
                let deadline = self.machine.poll_timeout();
                if let Some(d) = deadline {
                    sleep.as_mut().reset(self.ports.clock.instant(d.at));
                }
                tokio::select! {
                    mail = self.mail.recv_async() => match mail.ok() {
                        Some(Mail::Fact(input)) => self.admit(input),
                        Some(Mail::Explained(input, detail)) => {
                            if let Input::Probe { role, .. } = input {
                                self.probe_details[role_index(role)] = Some(detail);
                            }
                            input
                        }
                        // The handle sends this when dropped too, so a process is never left
                        // running by a handle that went away.
                        Some(Mail::Shutdown) => {
                            self.closing = true;
                            Input::Stop { grace: None }
                        }
                        Some(Mail::Reconfigure(next)) => match self.reconfigure(next) {
                            Some(input) => input,
                            None => {
                                self.publish_status(self.ports.clock.now());
                                continue;
                            }
                        },
                        // The driver holds a reporter itself, so the mailbox cannot close.
                        None => break,
                    },
                    () = &mut sleep, if deadline.is_some() => Input::Tick,
                }
            };
            // flume's receiver does not count against tokio's cooperative budget, as tokio's
            // own channels do: without this, a long backlog would be worked off without ever
            // letting the worker run other tasks.
            tokio::task::consume_budget().await;
            // Boxed: a step holds the machine's whole outcome across awaits, and an idle
            // process should not keep room for one in its task (500 processes, 500 tasks).
            Box::pin(self.step(input)).await;
        }
    }

    /// No instance, and none coming without a command.
    fn at_rest(&self) -> bool {
        Observed::of(&self.machine).at_rest()
    }

    /// Takes a new configuration: at once when no instance exists, else for the next spawn
    /// (the current instance was started, and is stopped, with the ports it has). Returns the
    /// restart to feed, when one was asked for.
    fn reconfigure(&mut self, next: Box<Reconfiguration>) -> Option<Input> {
        let restart = next.restart;
        if self.machine.instance().is_none() {
            self.swap(next);
        } else {
            self.pending = Some(next);
        }
        restart.then_some(Input::Restart {
            cause: RestartCause::Reload,
        })
    }

    fn swap(&mut self, next: Box<Reconfiguration>) {
        let Reconfiguration { policy, ports, .. } = *next;
        if let Err(errors) = self.machine.reconfigure(policy) {
            // The spec was validated with this very policy before the reload began.
            tracing::error!(process = %self.name, %errors, "new configuration refused");
            return;
        }
        // The machine's times come from this task's clock: it stays.
        let clock = self.ports.clock.clone();
        self.ports = Ports { clock, ..ports };
    }

    /// Keeps what status output needs from a fact before the machine sees it.
    fn admit(&mut self, input: Input) -> Input {
        if let Input::Sampled { instance, usage } = input {
            if self.machine.instance() == Some(instance) {
                self.usage = Some(usage);
            }
        }
        input
    }

    /// Feeds one input at the clock's real now and carries out what the machine says.
    pub(crate) async fn step(&mut self, input: Input) {
        let now = self.ports.clock.now();
        let outcome = self.machine.handle(now, input);
        for effect in &outcome.effects {
            self.execute(*effect).await;
        }
        let ignored = outcome
            .notifications
            .iter()
            .any(|n| matches!(n, Notification::Ignored { .. }));
        if !ignored {
            self.remember(input);
        }
        self.tally(&outcome.notifications);
        let notifications: Vec<Notification> = outcome.notifications.iter().copied().collect();
        let cx = Context {
            machine: &self.machine,
            outcome: &notifications,
            spawn_error: self.spawn_error.as_deref(),
            probe_details: &self.probe_details,
            pid: self.machine.pid(),
        };
        let mut failure = None;
        for n in &notifications {
            let event = Event::from_notification(&self.name, n, &cx);
            tracing::debug!(process = %self.name, event = %event.to_json_line(), "event");
            if let Some(reason) = failure_of(&event) {
                failure = Some(reason);
            }
            // No subscriber is fine.
            let _ = self.ports.events.send(Arc::new(event));
        }
        if let Some(reason) = failure {
            self.last_error = Some((reason, SystemTime::now()));
        }
        self.publish_status(now);
    }

    /// Keeps what status tells of a fact the machine took: when the main process exited, and
    /// each probe's verdict with what it saw.
    fn remember(&mut self, input: Input) {
        match input {
            Input::Exited { .. } => self.exit_time = Some(SystemTime::now()),
            Input::Probe { role, result, .. } => {
                let ok = matches!(result, processcontrol_core::ProbeResult::Pass);
                let reason = (!ok).then(|| {
                    self.probe_details[role_index(role)]
                        .as_deref()
                        .map_or_else(|| "failed".to_string(), str::to_string)
                });
                Arc::make_mut(&mut self.probes).record(
                    role,
                    Verdict {
                        time: SystemTime::now(),
                        ok,
                        reason,
                    },
                );
            }
            _ => {}
        }
    }

    async fn execute(&mut self, effect: Effect) {
        match effect {
            Effect::Spawn { instance, .. } => {
                if self.machine.instance() != Some(instance) {
                    return;
                }
                if let Some(next) = self.pending.take() {
                    self.swap(next);
                }
                let p = &self.ports;
                self.usage = None;
                match p.processes.spawn(instance, self.reporter.clone()).await {
                    Ok(pid) => {
                        self.queue.push_back(Input::Spawned { instance, pid });
                    }
                    Err(failure) => {
                        self.spawn_error = Some(failure.message);
                        self.queue.push_back(Input::SpawnFailed {
                            instance,
                            error: failure.error,
                        });
                    }
                }
            }
            Effect::Signal { instance, signal } => {
                self.ports.processes.signal(instance, signal).await
            }
            Effect::KillGroup { instance } => self.ports.processes.kill_group(instance).await,
            Effect::Watch {
                instance,
                probes,
                sampling,
            } => {
                let pid = self.machine.pid();
                self.ports
                    .watchers
                    .watch(instance, pid, probes, sampling, self.reporter.clone())
                    .await
            }
        }
    }

    /// Counts what one step did: the machine's newest restart (at most one per step) under
    /// its cause, limits exceeded, and failed probe verdicts.
    fn tally<'a>(&mut self, notifications: impl IntoIterator<Item = &'a Notification>) {
        let counted: u64 = self.tallies.restarts.iter().map(|(_, n)| n).sum();
        let restart = self
            .machine
            .last_restart_cause()
            .filter(|_| self.machine.restarts() > counted)
            .map(|cause| (cause, self.machine.restarts() - counted));
        let mut counts = notifications.into_iter().filter_map(|n| match n {
            Notification::LimitExceeded { resource, .. } => Some((true, resource.name())),
            Notification::ReadyChanged { ready: false, .. } => Some((false, "readiness")),
            Notification::Transition {
                cause: Cause::LivenessFailed,
                ..
            } => Some((false, "liveness")),
            Notification::Transition {
                cause: Cause::StartupFailed,
                ..
            } => Some((false, "startup")),
            _ => None,
        });
        let first = counts.next();
        if restart.is_none() && first.is_none() {
            return;
        }
        let t = Arc::make_mut(&mut self.tallies);
        if let Some((cause, n)) = restart {
            Tallies::add(&mut t.restarts, cause, n);
        }
        for (limit, name) in first.into_iter().chain(counts) {
            let list = if limit {
                &mut t.limits_exceeded
            } else {
                &mut t.probe_failures
            };
            Tallies::add(list, name, 1);
        }
    }

    fn publish_status(&mut self, now: Timestamp) {
        if let Some(observer) = &self.observer {
            let seen = Observed::of(&self.machine);
            if self.observed != Some(seen) {
                self.observed = Some(seen);
                observer(seen);
            }
        }
        let m = &self.machine;
        let started_at = m
            .up_since()
            .map(|since| SystemTime::now() - now.saturating_since(since));
        let usage = self.usage.filter(|_| m.instance().is_some());
        // The machine's deadlines as wall-clock times.
        let wall = |at: Timestamp| SystemTime::now() + at.saturating_since(now);
        let next_trial = match m.breaker() {
            processcontrol_core::BreakerStatus::Open { until: Some(at) } => Some(wall(at)),
            _ => None,
        };
        let next = m.poll_timeout();
        self.status.send_replace(Status {
            name: self.name.clone(),
            state: m.state(),
            instance: m.instance().map(|i| i.0),
            pid: m.pid(),
            started_at,
            restarts: m.restarts(),
            tallies: self.tallies.clone(),
            breaker: breaker_name(m.breaker()),
            ready: m.ready(),
            has_readiness: m.policy().health.readiness.is_some(),
            exit: m.last_exit(),
            exit_time: self.exit_time,
            next_trial,
            next_action: next.map(|d| action_name(d.kind)),
            next_action_time: next.map(|d| wall(d.at)),
            newest: m.newest().map_or(0, |i| i.0),
            last_error: self.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_time: self
                .last_error
                .as_ref()
                .map(|(_, t)| crate::logs::time::format_rfc3339_millis(*t)),
            rss: usage.map(|u| u.memory),
            cpu: usage.and_then(|u| u.cpu),
            usage,
            probes: self.probes.clone(),
        });
    }
}

/// The failure an event reports, as status shows it in `last_error`: an unexpected exit, a
/// probe verdict, a limit, a spawn failure.
fn failure_of(event: &Event) -> Option<String> {
    match &event.what {
        What::Transition {
            expected: Some(true),
            ..
        } => None,
        // The breaker has its own column; the failure that opened it stays the last error.
        What::Transition {
            to: processcontrol_core::StateName::BreakerOpen,
            ..
        } => None,
        What::Transition {
            reason: Some(reason),
            ..
        } => Some(reason.clone()),
        What::ProbeFailed {
            probe,
            consecutive,
            threshold,
            reason,
            ..
        } if consecutive == threshold => Some(format!(
            "{probe} failed {consecutive}/{threshold}: {reason}"
        )),
        What::LimitExceeded { reason, .. } | What::SpawnFailed { reason, .. } => {
            Some(reason.clone())
        }
        _ => None,
    }
}
