//! Inputs: facts and commands handed to [`crate::Machine::handle`]. Facts about a child are
//! in the past tense and carry the [`Instance`] they are about, so a late report about an
//! earlier instance can be recognised and ignored.

use std::fmt;
use std::time::Duration;

use crate::policy::Resource;

/// The generation of a spawned child: 1 for the first spawn, one more for every spawn after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Instance(pub u64);

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An operating-system process id, as reported by the adapter.
pub type Pid = u32;

/// Everything that can happen to a supervised process.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// An operator or the embedding program wants the process running. Also closes the
    /// breaker and ends any crash streak: it is a fresh start.
    Start,
    /// Stop gracefully: stop signal, then a kill after `grace` (the policy's grace if `None`).
    /// Cancels a restart in progress. Final until the next `Start`.
    Stop {
        /// Overrides the policy's grace period.
        grace: Option<Duration>,
    },
    /// Kill the whole process group now. Final until the next `Start`.
    Kill,
    /// Replace the running instance with a new one.
    Restart {
        /// Who asked.
        cause: RestartCause,
    },
    /// Close the breaker and forget the restart history; an open breaker starts a new instance.
    ResetBreaker,
    /// Pass a signal on to every process of the current instance (a supervisor forwarding the
    /// signals it receives, or an operator's `kill -HUP` for a reload). Changes no state.
    Forward {
        /// The signal.
        signal: crate::signal::Signal,
    },
    /// The adapter started the instance asked for by [`crate::Effect::Spawn`].
    Spawned {
        /// The instance that started.
        instance: Instance,
        /// Its process id.
        pid: Pid,
    },
    /// The adapter could not start the instance (program missing, not executable, bad cwd...).
    SpawnFailed {
        /// The instance that did not start.
        instance: Instance,
        /// Why.
        error: SpawnError,
    },
    /// The instance's main process exited. Other members of its group may still be alive.
    Exited {
        /// The instance whose main process exited.
        instance: Instance,
        /// How it ended.
        status: ExitStatus,
    },
    /// No process of the instance is left (main process reaped, group and descendants gone).
    /// The adapter reports it only after [`Input::Exited`] for the same instance.
    Gone {
        /// The instance that is gone.
        instance: Instance,
    },
    /// One probe result; thresholds are counted by the machine.
    Probe {
        /// The instance probed.
        instance: Instance,
        /// Which probe.
        role: ProbeRole,
        /// Pass or fail.
        result: ProbeResult,
    },
    /// One resource sample of the instance's whole process tree.
    Sampled {
        /// The instance sampled.
        instance: Instance,
        /// What it used.
        usage: Usage,
    },
    /// The deadline from [`crate::Machine::poll_timeout`] may have passed. Early or spurious
    /// ticks do nothing.
    Tick,
}

impl Input {
    /// The instance a fact is about, if it is about one.
    pub fn instance(&self) -> Option<Instance> {
        match *self {
            Input::Spawned { instance, .. }
            | Input::SpawnFailed { instance, .. }
            | Input::Exited { instance, .. }
            | Input::Gone { instance }
            | Input::Probe { instance, .. }
            | Input::Sampled { instance, .. } => Some(instance),
            _ => None,
        }
    }

    /// A short snake_case name, for notifications and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Input::Start => "start",
            Input::Stop { .. } => "stop",
            Input::Kill => "kill",
            Input::Restart { .. } => "restart",
            Input::ResetBreaker => "reset_breaker",
            Input::Forward { .. } => "forward",
            Input::Spawned { .. } => "spawned",
            Input::SpawnFailed { .. } => "spawn_failed",
            Input::Exited { .. } => "exited",
            Input::Gone { .. } => "gone",
            Input::Probe { .. } => "probe",
            Input::Sampled { .. } => "sampled",
            Input::Tick => "tick",
        }
    }
}

/// Who asked for a restart that is not a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RestartCause {
    /// An operator or the embedding program.
    Manual,
    /// The process's configuration changed.
    Reload,
}

/// How a main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was ended by this signal number.
    Signal(i32),
    /// The kernel's OOM killer ended it (known where the instance runs in its own cgroup).
    OomKilled,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
            ExitStatus::OomKilled => f.write_str("killed by the OOM killer"),
        }
    }
}

/// Why a spawn failed, small enough to copy; the adapter keeps the full message for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnError {
    /// The operating system refused, with this error number (ENOENT, EACCES, ...).
    Os(i32),
    /// The specification could not be applied (unknown user, bad environment...).
    InvalidSpec,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Os(errno) => write!(f, "os error {errno}"),
            SpawnError::InvalidSpec => f.write_str("invalid process specification"),
        }
    }
}

/// The three probe roles, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeRole {
    /// Is it alive? Failing restarts it.
    Liveness,
    /// Is it ready for work? Only sets the ready flag.
    Readiness,
    /// Has it finished starting? Until then the other probes are suspended.
    Startup,
}

impl ProbeRole {
    /// The snake_case name users see.
    pub fn name(self) -> &'static str {
        match self {
            ProbeRole::Liveness => "liveness",
            ProbeRole::Readiness => "readiness",
            ProbeRole::Startup => "startup",
        }
    }
}

/// One probe's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Healthy.
    Pass,
    /// Unhealthy, timed out or unreachable, and how: the machine counts failures alike, but
    /// hands the reason on in its notifications so people learn why.
    Fail(ProbeFailure),
}

/// How a probe failed, small enough to copy; the adapter keeps the full message for people
/// (the URL, the last line an exec check printed...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// No answer within the probe's timeout.
    Timeout,
    /// The connection was refused: nothing listens on the port.
    Refused,
    /// The HTTP server answered with this status (outside 200-399).
    HttpStatus(u16),
    /// The check command exited with this code.
    ExitCode(i32),
    /// The check command was ended by this signal.
    ExitSignal(i32),
    /// The host name did not resolve.
    Dns,
    /// The program missed its watchdog deadline (sd_notify `WATCHDOG=1`).
    Watchdog,
    /// Another I/O or protocol error (a reset, a malformed answer, a check that could not start).
    Io,
}

impl ProbeFailure {
    /// The snake_case name used in events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProbeFailure::Timeout => "timeout",
            ProbeFailure::Refused => "refused",
            ProbeFailure::HttpStatus(_) => "http_status",
            ProbeFailure::ExitCode(_) => "exit_code",
            ProbeFailure::ExitSignal(_) => "exit_signal",
            ProbeFailure::Dns => "dns",
            ProbeFailure::Watchdog => "watchdog",
            ProbeFailure::Io => "io",
        }
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeFailure::Timeout => f.write_str("timed out"),
            ProbeFailure::Refused => f.write_str("connection refused"),
            ProbeFailure::HttpStatus(s) => write!(f, "HTTP {s}"),
            ProbeFailure::ExitCode(c) => write!(f, "exited with {c}"),
            ProbeFailure::ExitSignal(s) => write!(f, "killed by signal {s}"),
            ProbeFailure::Dns => f.write_str("name not resolved"),
            ProbeFailure::Watchdog => f.write_str("watchdog missed"),
            ProbeFailure::Io => f.write_str("I/O error"),
        }
    }
}

/// Resource use of an instance's whole process tree at one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Resident memory in bytes.
    pub memory: u64,
    /// CPU in percent of one core over the last interval (may exceed 100); unknown on a
    /// tree's first sample, which has no earlier one to compare with.
    pub cpu: Option<u64>,
    /// Open file descriptors.
    pub fds: u64,
    /// Processes.
    pub processes: u64,
    /// Threads.
    pub threads: u64,
}

impl Usage {
    /// The amount used of one resource, if this sample knows it.
    pub fn get(&self, resource: Resource) -> Option<u64> {
        match resource {
            Resource::Memory => Some(self.memory),
            Resource::Cpu => self.cpu,
            Resource::Fds => Some(self.fds),
            Resource::Processes => Some(self.processes),
            Resource::Threads => Some(self.threads),
        }
    }
}
