//! The [`Processes`] port on the real OS: the launcher starts each instance in its own session
//! and process group, its output is captured line by line, and a small task per instance turns
//! "leader reaped" and "nothing left" into the facts `Exited` and `Gone`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use processcontrol_core::{ExitStatus, Input, Instance, Pid, Signal, SpawnError};

use crate::logs::{Capture, FileSink, LogRing, Printer, Stream};
use crate::ports::{Processes, Reporter, SpawnFailure};
use crate::process::{self, Child, Launcher};

/// Starts and stops the instances of one process.
pub(crate) struct OsProcesses {
    pub(crate) name: Arc<str>,
    pub(crate) launcher: Launcher,
    pub(crate) command: process::ProcessSpec,
    pub(crate) ring: Arc<LogRing>,
    pub(crate) printer: Option<Printer>,
    pub(crate) file: Option<FileSink>,
    /// Instances not yet gone, for signals.
    pub(crate) children: Arc<Mutex<HashMap<Instance, Child>>>,
}

#[async_trait]
impl Processes for OsProcesses {
    async fn spawn(&self, instance: Instance, report: Reporter) -> Result<Pid, SpawnFailure> {
        let mut child = self
            .launcher
            .spawn(self.command.clone())
            .await
            .map_err(spawn_failure)?;
        for (stream, pipe) in [
            (Stream::Stdout, child.take_stdout()),
            (Stream::Stderr, child.take_stderr()),
        ] {
            let Some(pipe) = pipe else { continue };
            let mut capture = Capture::new(self.ring.clone(), stream, instance.0);
            if let Some(printer) = &self.printer {
                capture = capture.with_printer(printer.clone());
            }
            if let Some(file) = &self.file {
                capture = capture.with_file(file.clone());
            }
            if let Err(e) = capture.spawn(pipe) {
                tracing::warn!(process = %self.name, error = %e, "output not captured");
            }
        }
        let pid = child.pid();
        let watch = child.watch();
        self.children
            .lock()
            .expect("the children map is never poisoned: no code panics while holding it")
            .insert(instance, child);
        let children = self.children.clone();
        tokio::spawn(async move {
            // Both waits end with the reaper at the latest (then nothing more can be known).
            if let Ok(status) = watch.exited().await {
                report.fact(Input::Exited {
                    instance,
                    status: exit_status(status),
                });
            }
            if watch.gone().await.is_ok() {
                report.fact(Input::Gone { instance });
            }
            children
                .lock()
                .expect("the children map is never poisoned")
                .remove(&instance);
        });
        Ok(pid)
    }

    async fn signal(&self, instance: Instance, signal: Signal) {
        let Ok(sig) = nix::sys::signal::Signal::from_str(signal.name()) else {
            tracing::error!(%signal, "signal unknown to this platform");
            return;
        };
        self.with_child(instance, |child| child.signal(sig).map(drop));
    }

    async fn kill_group(&self, instance: Instance) {
        self.with_child(instance, |child| child.kill_group().map(drop));
    }
}

impl OsProcesses {
    fn with_child(
        &self,
        instance: Instance,
        f: impl FnOnce(&Child) -> Result<(), process::SignalError>,
    ) {
        let children = self
            .children
            .lock()
            .expect("the children map is never poisoned");
        // An instance already gone has nothing left to signal.
        if let Some(child) = children.get(&instance) {
            if let Err(e) = f(child) {
                tracing::debug!(process = %self.name, %instance, error = %e, "signal not delivered");
            }
        }
    }
}

fn exit_status(status: process::ExitStatus) -> ExitStatus {
    match status {
        process::ExitStatus::Exited(code) => ExitStatus::Code(code),
        process::ExitStatus::Signaled { signal, .. } => ExitStatus::Signal(signal),
    }
}

/// The core sees the error number; people see the whole message.
fn spawn_failure(e: process::SpawnError) -> SpawnFailure {
    let error = match &e {
        process::SpawnError::Exec { source, .. } | process::SpawnError::BadCwd { source, .. } => {
            source
                .raw_os_error()
                .map_or(SpawnError::InvalidSpec, SpawnError::Os)
        }
        _ => SpawnError::InvalidSpec,
    };
    SpawnFailure {
        error,
        message: e.to_string(),
    }
}
