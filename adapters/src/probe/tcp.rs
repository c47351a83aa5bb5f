//! The TCP probe: healthy when a connection is accepted within the timeout.

use std::sync::atomic::AtomicU8;
use std::time::Duration;

use super::target::{parse_host_port, Phase, Target};
use super::{Check, FailureReason, ProbeConfigError, ProbeOutcome};

/// A TCP connect health check, for services that speak no HTTP.
///
/// After a successful connect the socket is closed normally (a FIN), so the service sees a
/// client that connected and left: servers that log a reset as an error (Python's
/// `http.server` prints a traceback per reset) stay quiet. Each check then leaves a
/// TIME_WAIT socket on the supervisor's side for a minute; with [`TcpProbe::reset`] the socket
/// is closed with a zero linger (an RST) instead, which leaves none, for hundreds of probes
/// per second against services that do not mind.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    target: Target,
    timeout: Duration,
    reset: bool,
}

impl TcpProbe {
    /// Validates `addr` (`host:port` or `[v6]:port`, port not 0) and the timeout.
    pub fn new(addr: &str, timeout: Duration) -> Result<Self, ProbeConfigError> {
        if timeout.is_zero() {
            return Err(ProbeConfigError::ZeroTimeout);
        }
        let target = parse_host_port(addr, None, addr)?;
        Ok(TcpProbe {
            target,
            timeout,
            reset: false,
        })
    }

    /// Close each connection with a reset (`true`) instead of a FIN (`false`, the default).
    pub fn reset(mut self, reset: bool) -> Self {
        self.reset = reset;
        self
    }

    /// The bound on one whole check (resolve and connect).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one check; returns within the timeout whatever the peer does.
    pub async fn check(&self) -> ProbeOutcome {
        let phase = AtomicU8::new(Phase::Resolving as u8);
        match tokio::time::timeout(self.timeout, self.target.connect(&phase)).await {
            Ok(Ok(stream)) => {
                if self.reset {
                    let _ = stream.set_zero_linger();
                }
                ProbeOutcome::Passed
            }
            Ok(Err(outcome)) => outcome,
            Err(_) => ProbeOutcome::failed(
                FailureReason::Timeout,
                format!(
                    "no connection within {:?} (stuck {})",
                    self.timeout,
                    Phase::describe(&phase)
                ),
            ),
        }
    }
}

impl Check for TcpProbe {
    fn check(&self) -> impl std::future::Future<Output = ProbeOutcome> + Send {
        TcpProbe::check(self)
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}
