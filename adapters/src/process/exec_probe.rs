//! Exec health probes: a command that is healthy when it exits 0 in time.
//!
//! Probe commands are children like any other, so they go through the launcher (a private
//! `tokio::process` child would be reaped, and its status stolen, by the launcher's reaper).
//! Their output is read to its end and only its last line kept: what a failing check last
//! said is usually why (`pg_isready: no response`).

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::child::OutputPipe;
use super::error::{SpawnError, WaitError};
use super::launcher::Launcher;
use super::spec::{OutputMode, ProcessSpec};
use super::status::ExitStatus;

/// How long to wait, after the final SIGKILL, for every process of a probe to be reaped.
/// SIGKILL cannot be caught, so this is only exceeded by a process stuck in the kernel.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// How long, once every process of the probe is gone, its output may take to end: only a
/// process that left its group (and took the pipe along) holds it open longer.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The longest last line kept, in bytes.
const MAX_SAID: usize = 160;

/// What one run of an exec probe showed.
#[derive(Debug)]
pub enum ExecProbeOutcome {
    /// The command exited with status 0 within the timeout.
    Passed,
    /// The command ended within the timeout, but not with status 0.
    Failed {
        /// How it ended.
        exit: ExitStatus,
        /// The last line it printed (on either stream), if any.
        said: Option<String>,
    },
    /// The command was still running at the timeout; all its processes were killed.
    TimedOut {
        /// The last line it printed (on either stream), if any.
        said: Option<String>,
    },
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
/// Its output is read to the end (so a full pipe can never block it) and only the last line
/// kept. Whatever the result, every process it left (background helpers, a hung forked
/// child) is killed and reaped before this returns, so probes never accumulate.
pub async fn run_exec_probe(
    launcher: &Launcher,
    spec: ProcessSpec,
    timeout: Duration,
) -> ExecProbeOutcome {
    // One pipe for both streams: the last line is the last one printed, whichever stream.
    let spec = spec.stdout(OutputMode::Pipe).stderr(OutputMode::Stdout);
    let mut child = match launcher.spawn(spec).await {
        Ok(child) => child,
        Err(error) => return ExecProbeOutcome::SpawnFailed { error },
    };
    let reader = child
        .take_stdout()
        .map(|pipe| tokio::spawn(last_line(pipe)));
    let outcome = match tokio::time::timeout(timeout, child.exited()).await {
        Ok(Ok(exit)) if exit.success() => ExecProbeOutcome::Passed,
        Ok(Ok(exit)) => ExecProbeOutcome::Failed { exit, said: None },
        Ok(Err(error)) => ExecProbeOutcome::Lost { error },
        Err(_elapsed) => ExecProbeOutcome::TimedOut { said: None },
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
    let said = match reader {
        Some(reader) => {
            let abort = reader.abort_handle();
            match tokio::time::timeout(OUTPUT_GRACE, reader).await {
                Ok(said) => said.ok().flatten(),
                Err(_) => {
                    abort.abort();
                    None
                }
            }
        }
        None => None,
    };
    match outcome {
        ExecProbeOutcome::Failed { exit, .. } => ExecProbeOutcome::Failed { exit, said },
        ExecProbeOutcome::TimedOut { .. } => ExecProbeOutcome::TimedOut { said },
        other => other,
    }
}

/// Reads a pipe to its end; returns its last line that is not blank (at most [`MAX_SAID`]
/// bytes, trimmed).
async fn last_line(mut pipe: OutputPipe) -> Option<String> {
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let mut last = None;
    let keep = |line: &mut Vec<u8>, last: &mut Option<String>| {
        let text = String::from_utf8_lossy(line).trim().to_string();
        if !text.is_empty() {
            *last = Some(text);
        }
        line.clear();
    };
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' {
                keep(&mut line, &mut last);
            } else if line.len() < MAX_SAID {
                line.push(byte);
            }
        }
    }
    keep(&mut line, &mut last);
    last
}
