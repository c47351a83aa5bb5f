//! The ports: what the runtime needs from the outside world, as traits, so the runtime can be
//! tested against mocks on paused time and the real implementations stay swappable. Every port
//! only carries out what it is told and reports what happened through a [`Reporter`]; none of
//! them decides anything.

use std::sync::Arc;

use async_trait::async_trait;
use processcontrol_core::{Input, Instance, Pid, Roles, Signal, SpawnError, Timestamp};

/// Where ports report facts about an instance. Facts go into the machine's mailbox, in order,
/// with the commands of its handle.
#[derive(Clone, Debug)]
pub struct Reporter {
    tx: flume::Sender<Mail>,
}

/// One item of a machine's mailbox: one channel per process, so facts and commands are
/// handled in the order they arrived (and 500 processes hold 500 channels, not 1000). The
/// channel is flume's, whose queue grows on demand: tokio's unbounded channel allocates a
/// block of 32 slots up front, 2.3 KB for each idle process.
#[derive(Debug)]
pub(crate) enum Mail {
    /// A fact or a command for the machine.
    Fact(Input),
    /// A fact with its explanation for people (how a probe failed), kept by the runtime for
    /// the events and status that the fact leads to.
    Explained(Input, Box<str>),
    /// Stop for good, then end the task.
    Shutdown,
    /// A reload changed the process's configuration.
    Reconfigure(Box<crate::runtime::Reconfiguration>),
}

impl Reporter {
    pub(crate) fn new(tx: flume::Sender<Mail>) -> Self {
        Reporter { tx }
    }

    /// Reports a fact. A machine that is gone no longer listens; that is not an error.
    pub fn fact(&self, input: Input) {
        let _ = self.tx.send(Mail::Fact(input));
    }

    /// Reports a fact with a short explanation for people, such as how a probe failed.
    pub fn explained(&self, input: Input, detail: impl Into<Box<str>>) {
        let _ = self.tx.send(Mail::Explained(input, detail.into()));
    }
}

/// Why a spawn failed: the small code the machine sees, and the message people read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpawnFailure {
    /// For the machine.
    pub error: SpawnError,
    /// For people.
    pub message: String,
}

/// Starts, signals and kills the instances of one supervised process.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Processes: Send + Sync + 'static {
    /// Starts `instance`. Its later exit and disappearance are reported as
    /// [`Input::Exited`] then [`Input::Gone`].
    async fn spawn(&self, instance: Instance, report: Reporter) -> Result<Pid, SpawnFailure>;
    /// Sends `signal` to every process of `instance`.
    async fn signal(&self, instance: Instance, signal: Signal);
    /// SIGKILLs every process of `instance`.
    async fn kill_group(&self, instance: Instance);
}

/// Runs the probes and resource sampling of one supervised process.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Watchers: Send + Sync + 'static {
    /// Makes the probes and sampling of `instance` exactly these; an empty set stops them.
    /// Results are reported as [`Input::Probe`] and [`Input::Sampled`].
    async fn watch(
        &self,
        instance: Instance,
        pid: Option<Pid>,
        probes: Roles,
        sampling: bool,
        report: Reporter,
    );
}

/// Reads the monotonic clock in the core's unit. Tests run it on paused tokio time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
    /// The tokio instant of a core timestamp, for sleeping until a deadline.
    fn instant(&self, at: Timestamp) -> tokio::time::Instant;
}

/// The tokio clock (which tokio's test utilities can pause and advance).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let nanos = self.origin.elapsed().as_nanos();
        Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn instant(&self, at: Timestamp) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_nanos(at.as_nanos())
    }
}

/// Shared handles to the ports of one process.
#[derive(Clone)]
pub struct Ports {
    /// Processes.
    pub processes: Arc<dyn Processes>,
    /// Probes and sampling.
    pub watchers: Arc<dyn Watchers>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where events are published: one stream for every process of a host, each event
    /// naming its process.
    pub events: tokio::sync::broadcast::Sender<Arc<crate::runtime::Event>>,
}
