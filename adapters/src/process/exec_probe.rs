//! Exec health probes: a command that is healthy when it exits 0 in time.
//!
//! Probe commands are children like any other, so they go through the launcher (a private
//! `tokio::process` child would be reaped, and its status stolen, by the launcher's reaper).

use std::time::Duration;

use super::error::{SpawnError, WaitError};
use super::launcher::Launcher;
use super::spec::{OutputMode, ProcessSpec};
use super::status::ExitStatus;

/// How long to wait, after the final SIGKILL, for every process of a probe to be reaped.
/// SIGKILL cannot be caught, so this is only exceeded by a process stuck in the kernel.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// What one run of an exec probe showed.
#[derive(Debug)]
pub enum ExecProbeOutcome {
    /// The command exited with status 0 within the timeout.
    Passed,
    /// The command ended within the timeout, but not with status 0.
    Failed {
        /// How it ended.
        exit: ExitStatus,
    },
    /// The command was still running at the timeout; all its processes were killed.
    TimedOut,
    /// The command could not be started (e.g. not found); the probe says nothing about the
    /// service, only about its configuration.
    SpawnFailed {
        /// Why.
        error: SpawnError,
    },
    /// The launcher's reaper stopped while the command ran, so its result is unknowable.
    Lost {
        /// Why.
        error: WaitError,
    },
}

impl ExecProbeOutcome {
    /// Whether the probe counts as healthy.
    pub fn is_pass(&self) -> bool {
        matches!(self, ExecProbeOutcome::Passed)
    }
}

/// Runs `spec` once as a health probe, in its own process group.
///
/// Its output is discarded (both streams go to `/dev/null`, so an unread pipe can never
/// block it). Whatever the result, every process it left (background helpers, a hung
/// forked child) is killed and reaped before this returns, so probes never accumulate.
pub async fn run_exec_probe(
    launcher: &Launcher,
    spec: ProcessSpec,
    timeout: Duration,
) -> ExecProbeOutcome {
    let spec = spec.stdout(OutputMode::Null).stderr(OutputMode::Null);
    let child = match launcher.spawn(spec).await {
        Ok(child) => child,
        Err(error) => return ExecProbeOutcome::SpawnFailed { error },
    };
    let outcome = match tokio::time::timeout(timeout, child.exited()).await {
        Ok(Ok(exit)) if exit.success() => ExecProbeOutcome::Passed,
        Ok(Ok(exit)) => ExecProbeOutcome::Failed { exit },
        Ok(Err(error)) => ExecProbeOutcome::Lost { error },
        Err(_elapsed) => ExecProbeOutcome::TimedOut,
    };
    if !child.is_gone() {
        if let Err(error) = child.kill_group() {
            tracing::warn!(pid = child.pid(), %error, "cannot kill exec probe");
        }
        match tokio::time::timeout(CLEANUP_GRACE, child.gone()).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(pid = child.pid(), "exec probe survived SIGKILL"),
        }
    }
    outcome
}
