//! The handle of one supervised process: commands in, status and events out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use processcontrol_core::{Input, Machine, Policy, PolicyErrors, RestartCause};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::driver::{Driver, Mail};
use super::event::Event;
use super::status::Status;
use crate::ports::{Ports, Report, Reporter};

/// How many events a slow subscriber may lag behind before it is told it missed some.
const EVENT_BUFFER: usize = 1024;

/// Why a command could not be delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The process's task has ended (it was shut down).
    #[error("process {0} is no longer supervised")]
    Ended(Arc<str>),
}

/// One supervised process. Commands return at once; what they lead to is seen in
/// [`Supervisor::status`] and the events. Dropping the handle stops the process gracefully.
#[derive(Debug)]
pub struct Supervisor {
    name: Arc<str>,
    mail: mpsc::UnboundedSender<Mail>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<Event>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Supervises a process with the given ports, and starts it. The policy is validated
    /// first: nothing starts when it is invalid.
    pub fn launch(name: &str, policy: Policy, ports: Ports) -> Result<Supervisor, PolicyErrors> {
        let supervisor = Self::idle(name, policy, ports)?;
        // The mailbox is open: the task has just been spawned.
        let _ = supervisor.send(Input::Start);
        Ok(supervisor)
    }

    /// Supervises a process without starting it (for dependency ordering and tests).
    pub fn idle(name: &str, policy: Policy, ports: Ports) -> Result<Supervisor, PolicyErrors> {
        let machine = Machine::new(policy)?;
        let name: Arc<str> = name.into();
        let (fact_tx, facts) = mpsc::unbounded_channel();
        let (mail_tx, mail) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(Status::new(name.clone()));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let driver = Driver {
            name: name.clone(),
            machine,
            ports,
            reporter: Reporter::new(fact_tx),
            facts,
            mail,
            status: status_tx,
            events: events.clone(),
            queue: VecDeque::new(),
            last_error: None,
            usage: None,
            closing: false,
        };
        let task = tokio::spawn(driver.run());
        Ok(Supervisor {
            name,
            mail: mail_tx,
            status,
            events,
            task: Some(task),
        })
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every new status.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every event from now on. A subscriber that lags more than 1024 events behind is told how
    /// many it missed; it never slows the process down.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Starts the process (also closes the breaker and ends any crash streak).
    pub fn start(&self) -> Result<(), CommandError> {
        self.send(Input::Start)
    }

    /// Replaces the running instance; counted by the breaker like any restart.
    pub fn restart(&self) -> Result<(), CommandError> {
        self.send(Input::Restart {
            cause: RestartCause::Manual,
        })
    }

    /// Stops gracefully: stop signal, then a kill after `grace` (the policy's if `None`).
    pub fn stop(&self, grace: Option<Duration>) -> Result<(), CommandError> {
        self.send(Input::Stop { grace })
    }

    /// Kills every process of the instance now.
    pub fn kill(&self) -> Result<(), CommandError> {
        self.send(Input::Kill)
    }

    /// Passes a signal on to every process of the current instance (no state changes).
    pub fn forward(&self, signal: processcontrol_core::Signal) -> Result<(), CommandError> {
        self.send(Input::Forward { signal })
    }

    /// Closes the breaker; an open breaker starts a new instance.
    pub fn reset_breaker(&self) -> Result<(), CommandError> {
        self.send(Input::ResetBreaker)
    }

    /// Feeds a fact as a port would: for health signals of your own (say, a custom check
    /// reporting [`Input::Probe`] for the current instance) and for tests. A fact about any
    /// instance but the current one is ignored like every stale fact.
    pub fn report(&self, input: Input) -> Result<(), CommandError> {
        self.send(input)
    }

    /// Waits until the status satisfies `f`, and returns that status.
    pub async fn wait_for(
        &self,
        mut f: impl FnMut(&Status) -> bool,
    ) -> Result<Status, CommandError> {
        let mut rx = self.status.clone();
        let status = rx
            .wait_for(|s| f(s))
            .await
            .map_err(|_| CommandError::Ended(self.name.clone()))?;
        Ok(status.clone())
    }

    /// Stops the process for good (stop signal, grace, kill) and waits until no process of it
    /// is left and its task has ended. Returns the final status.
    pub async fn shutdown(mut self) -> Status {
        let _ = self.mail.send(Mail::Shutdown);
        if let Some(task) = self.task.take() {
            // The task ends once the process is at rest; a panic there is reported, not hidden.
            if let Err(e) = task.await {
                tracing::error!(process = %self.name, error = %e, "supervision task failed");
            }
        }
        self.status()
    }

    fn send(&self, input: Input) -> Result<(), CommandError> {
        self.mail
            .send(Mail::Report(Report::Fact(input)))
            .map_err(|_| CommandError::Ended(self.name.clone()))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The task notices the closed mailbox and stops the process gracefully.
        let _ = self.mail.send(Mail::Shutdown);
    }
}
