//! The handle of one supervised process: commands in, status and events out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use processcontrol_core::{Input, Machine, Observed, Policy, PolicyErrors, RestartCause};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::driver::Driver;
use super::event::Event;
use super::status::Status;
use crate::ports::{Mail, Ports, Reporter};

/// Why a command could not be delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The process's task has ended (it was shut down).
    #[error("process {0} is no longer supervised")]
    Ended(Arc<str>),
}

/// Told every change of what a group sees of a process ([`Observed`]), from its task, right
/// after the step that made it. Must not block.
pub type Observer = Box<dyn Fn(Observed) + Send + Sync>;

/// A process's new configuration, from a reload.
pub(crate) struct Reconfiguration {
    pub(crate) policy: Policy,
    pub(crate) ports: Ports,
    /// Replace the current instance now (`Restart` with cause `reload`).
    pub(crate) restart: bool,
}

impl std::fmt::Debug for Reconfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconfiguration")
            .field("policy", &self.policy)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// One supervised process. Commands return at once; what they lead to is seen in
/// [`Supervisor::status`] and the events. Dropping the handle stops the process gracefully.
#[derive(Debug)]
pub struct Supervisor {
    name: Arc<str>,
    mail: flume::Sender<Mail>,
    status: watch::Receiver<Status>,
    events: broadcast::Sender<Arc<Event>>,
    task: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Supervises a process with the given ports, and starts it. The policy is validated
    /// first: nothing starts when it is invalid.
    pub fn launch(name: &str, policy: Policy, ports: Ports) -> Result<Supervisor, PolicyErrors> {
        Self::new(name, policy, ports, true, None)
    }

    /// Supervises a process without starting it (for dependency ordering and tests).
    pub fn idle(name: &str, policy: Policy, ports: Ports) -> Result<Supervisor, PolicyErrors> {
        Self::new(name, policy, ports, false, None)
    }

    /// Supervises a process without starting it, telling `observer` every change of what a
    /// group sees of it (how a group's owner task learns of its members without a task each).
    pub fn observed(
        name: &str,
        policy: Policy,
        ports: Ports,
        observer: Observer,
    ) -> Result<Supervisor, PolicyErrors> {
        Self::new(name, policy, ports, false, Some(observer))
    }

    fn new(
        name: &str,
        policy: Policy,
        ports: Ports,
        start: bool,
        observer: Option<Observer>,
    ) -> Result<Supervisor, PolicyErrors> {
        let machine = Machine::new(policy)?;
        let name: Arc<str> = name.into();
        let (mail_tx, mail) = flume::unbounded();
        let mut status = Status::new(name.clone());
        status.has_readiness = machine.policy().health.readiness.is_some();
        let mut queue = VecDeque::new();
        if start {
            // The start is the task's first input, and from a stopped machine it always
            // leads to `starting`: the first status says so, so no one waiting on the status
            // sees the process at rest before it even began.
            queue.push_back(Input::Start);
            status.state = processcontrol_core::StateName::Starting;
        }
        let (status_tx, status) = watch::channel(status);
        let events = ports.events.clone();
        let driver = Driver {
            name: name.clone(),
            machine,
            ports,
            reporter: Reporter::new(mail_tx.clone()),
            mail,
            status: status_tx,
            queue,
            spawn_error: None,
            last_error: None,
            probe_details: Default::default(),
            usage: None,
            closing: false,
            tallies: Arc::default(),
            observer,
            observed: None,
            pending: None,
            exit_time: None,
            probes: Arc::default(),
        };
        let task = tokio::spawn(Box::new(driver).run());
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

    /// Every event of this process from now on. Events travel on one stream shared by the
    /// processes of a host (so 500 processes do not each hold a buffer); a subscriber that
    /// falls too far behind is told how many it missed, and never slows anything down.
    pub fn subscribe(&self) -> Events {
        Events {
            rx: self.events.subscribe(),
            process: self.name.clone(),
        }
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

    /// Gives the process a new configuration (a reload changed it): the next instance uses
    /// it; with `restart`, the current one is replaced now, with cause `reload`, through the
    /// machine (so the breaker counts it and the history stays).
    pub(crate) fn reconfigure(
        &self,
        policy: Policy,
        ports: Ports,
        restart: bool,
    ) -> Result<(), CommandError> {
        let next = Reconfiguration {
            policy,
            ports,
            restart,
        };
        self.mail
            .send(Mail::Reconfigure(Box::new(next)))
            .map_err(|_| CommandError::Ended(self.name.clone()))
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
            .send(Mail::Fact(input))
            .map_err(|_| CommandError::Ended(self.name.clone()))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // The task notices the closed mailbox and stops the process gracefully.
        let _ = self.mail.send(Mail::Shutdown);
    }
}

/// The events of one process.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Arc<Event>>,
    process: Arc<str>,
}

impl Events {
    /// The next event of this process.
    pub async fn recv(&mut self) -> Result<Event, broadcast::error::RecvError> {
        loop {
            let event = self.rx.recv().await?;
            if event.process == self.process {
                return Ok(Arc::unwrap_or_clone(event));
            }
        }
    }

    /// The next event of this process, if one is already there.
    pub fn try_recv(&mut self) -> Result<Event, broadcast::error::TryRecvError> {
        loop {
            let event = self.rx.try_recv()?;
            if event.process == self.process {
                return Ok(Arc::unwrap_or_clone(event));
            }
        }
    }
}
