//! Health probes: HTTP and TCP checks, and a schedule that runs one of them periodically.
//!
//! A probe only reports what it observed (a [`ProbeOutcome`]); whether a failure means
//! "restart", "not ready" or nothing at all is decided by the core, which also owns every
//! threshold. Probes are built once (configuration is validated up front so a bad
//! configuration is rejected before anything runs) and checked many times, so a check
//! allocates little and never spawns a thread: 500 schedules at 1 s are 500 tokio tasks
//! that sleep most of the time.

mod http;
mod schedule;
mod target;
mod tcp;

use std::future::Future;
use std::time::Duration;

pub use self::http::{HttpProbe, MAX_BODY_READ, MAX_CONNECTION_AGE};
pub use self::schedule::{ProbeReport, ProbeSchedule, ProbeTask};
pub use self::tcp::TcpProbe;

/// What one check observed. Deliberately small and cheap to clone: one is produced per
/// check, so with many probes these flow through channels constantly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The target answered as a healthy target does, within the timeout.
    Passed,
    /// The target did not answer healthily; the reason says how, for the core to weigh.
    Failed(ProbeFailure),
}

impl ProbeOutcome {
    /// Lets callers branch on success without matching the failure details.
    pub fn is_passed(&self) -> bool {
        matches!(self, ProbeOutcome::Passed)
    }

    /// Builds a failure outcome; kept crate-private so every message stays short.
    pub(crate) fn failed(reason: FailureReason, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_message(&mut message);
        ProbeOutcome::Failed(ProbeFailure { reason, message })
    }
}

/// A failed check: a machine-usable reason plus a short human message for logs and status
/// output (the message is never parsed; decisions use `reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The class of failure, for the core's policies.
    pub reason: FailureReason,
    /// A one-line description (at most [`MAX_MESSAGE_LEN`] bytes) for operators.
    pub message: String,
}

/// Upper bound on [`ProbeFailure::message`], so a hostile or verbose peer cannot make
/// reports large.
pub const MAX_MESSAGE_LEN: usize = 200;

/// Why a check failed, coarse enough for policies to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The peer actively refused the connection (nothing listening on the port).
    Refused,
    /// No complete healthy answer arrived within the probe's timeout.
    Timeout,
    /// The HTTP server answered with a status outside 200-399.
    Status(u16),
    /// The host name could not be resolved to any address.
    Dns,
    /// Any other I/O or protocol error (reset, malformed response, unreachable network).
    Io,
    /// An exec check exited with this code (not 0).
    ExitCode(i32),
    /// An exec check was ended by this signal.
    ExitSignal(i32),
}

impl From<FailureReason> for processcontrol_core::ProbeFailure {
    fn from(r: FailureReason) -> Self {
        use processcontrol_core::ProbeFailure as P;
        match r {
            FailureReason::Refused => P::Refused,
            FailureReason::Timeout => P::Timeout,
            FailureReason::Status(s) => P::HttpStatus(s),
            FailureReason::Dns => P::Dns,
            FailureReason::Io => P::Io,
            FailureReason::ExitCode(c) => P::ExitCode(c),
            FailureReason::ExitSignal(s) => P::ExitSignal(s),
        }
    }
}

/// Something a [`ProbeSchedule`] can run. Implemented by [`HttpProbe`], [`TcpProbe`] and
/// [`Probe`]; tests and other adapters may implement it too.
pub trait Check: Send + Sync + 'static {
    /// Performs one check. Implementations should finish within [`Check::timeout`]; the
    /// schedule enforces that bound anyway, so a misbehaving check cannot stall it.
    fn check(&self) -> impl Future<Output = ProbeOutcome> + Send;

    /// The longest one check may take before it counts as [`FailureReason::Timeout`].
    fn timeout(&self) -> Duration;
}

/// Either kind of network probe, so callers can hold heterogeneous probes in one type.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An HTTP GET whose status decides health.
    Http(HttpProbe),
    /// A bare TCP connect.
    Tcp(TcpProbe),
}

impl From<HttpProbe> for Probe {
    fn from(p: HttpProbe) -> Self {
        Probe::Http(p)
    }
}

impl From<TcpProbe> for Probe {
    fn from(p: TcpProbe) -> Self {
        Probe::Tcp(p)
    }
}

impl Check for Probe {
    async fn check(&self) -> ProbeOutcome {
        match self {
            Probe::Http(p) => p.check().await,
            Probe::Tcp(p) => p.check().await,
        }
    }

    fn timeout(&self) -> Duration {
        match self {
            Probe::Http(p) => p.timeout(),
            Probe::Tcp(p) => p.timeout(),
        }
    }
}

/// Why a probe or schedule could not be built. Each variant names the offending input so
/// a configuration error can be shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeConfigError {
    /// The URL could not be parsed at all.
    #[error("invalid probe URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What the parser objected to.
        reason: String,
    },
    /// The URL uses a scheme other than `http` (TLS is not supported by this probe).
    #[error("unsupported scheme {scheme:?} in probe URL {url:?}: only http:// is supported")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// The scheme found in it.
        scheme: String,
    },
    /// The URL or address has no host.
    #[error("missing host in probe target {target:?}")]
    MissingHost {
        /// The URL or address as given.
        target: String,
    },
    /// The URL carries `user:password@`, which a probe must not send or log.
    #[error("credentials in probe URL {url:?} are not supported")]
    UserInfo {
        /// The URL as given (it is the caller's configuration, echoed back).
        url: String,
    },
    /// The port is missing (TCP), not a number, out of range, or 0.
    #[error("invalid port in probe target {target:?}: {reason}")]
    InvalidPort {
        /// The URL or address as given.
        target: String,
        /// What is wrong with the port.
        reason: String,
    },
    /// The Host header override contains characters not allowed in a header.
    #[error("invalid Host header override {value:?}")]
    InvalidHostHeader {
        /// The override as given.
        value: String,
    },
    /// A zero timeout would fail every check, so it is rejected.
    #[error("probe timeout must be greater than zero")]
    ZeroTimeout,
    /// A zero period would run checks back to back, so it is rejected.
    #[error("probe period must be greater than zero")]
    ZeroPeriod,
}

fn truncate_message(message: &mut String) {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
}

/// Formats an error with its source chain on one line (hyper and io errors keep the
/// useful part, like "Connection reset by peer", in their sources).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let outcome = ProbeOutcome::failed(FailureReason::Io, "é".repeat(150));
        match outcome {
            ProbeOutcome::Failed(f) => {
                assert!(f.message.len() <= MAX_MESSAGE_LEN);
                assert!(f.message.chars().all(|c| c == 'é'));
            }
            ProbeOutcome::Passed => panic!("expected a failure"),
        }
    }
}
