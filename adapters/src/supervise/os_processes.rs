//! The [`Processes`] port on the real OS: the launcher starts each instance in its own session
//! and process group, and one task per instance captures its output line by line and turns
//! "leader reaped" and "nothing left" into the facts `Exited` and `Gone`.
//!
//! With a cgroup plan, each instance also gets its own cgroup under the host's parent
//! cgroup, created before the spawn and removed once the instance is gone; a leader killed
//! by SIGKILL while the cgroup's OOM-kill counter is non-zero is reported as `OomKilled`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use processcontrol_core::{ExitStatus, Input, Instance, Pid, Signal, SpawnError};

use super::all::All3;
use super::notify_watch::NotifyWatch;
use super::spec::{CgroupSpec, NotifySpec};
use crate::cgroup::{CgroupParent, InstanceCgroup};
use crate::logs::{Capture, Copier, FileSink, LogRing, Printer, Stream};
use crate::ports::{Processes, Reporter, SpawnFailure};
use crate::process::{self, Child, Launcher};

/// Starts and stops the instances of one process.
pub(crate) struct OsProcesses {
    pub(crate) name: Arc<str>,
    pub(crate) launcher: Launcher,
    pub(crate) command: process::ProcessSpec,
    pub(crate) ring: Arc<LogRing>,
    pub(crate) printer: Option<Printer>,
    pub(crate) copier: Option<Copier>,
    pub(crate) file: Option<FileSink>,
    /// Instances not yet gone, for signals: one, or briefly two while a gone instance's task
    /// finishes after the next was started (a list, because a map preallocates more).
    pub(crate) children: Arc<Mutex<Vec<(Instance, Child)>>>,
    /// Where each instance's cgroup is created, when the spec asks for one and the host
    /// could create its parent cgroup.
    pub(crate) cgroup: Option<CgroupPlan>,
    /// Where each instance's notify socket is served, when the spec asks for the protocol.
    pub(crate) notify: Option<NotifyPlan>,
}

/// How the instances of one process get their `NOTIFY_SOCKET`.
pub(crate) struct NotifyPlan {
    pub(crate) spec: NotifySpec,
    /// The host's private directory for sockets.
    pub(crate) dir: std::path::PathBuf,
    /// The host's number for this process (socket names must not collide).
    pub(crate) tag: u64,
}

/// How the instances of one process get their cgroups.
pub(crate) struct CgroupPlan {
    pub(crate) spec: CgroupSpec,
    pub(crate) parent: Arc<CgroupParent>,
    /// The host's number for this process, so that two processes of the same name never
    /// share a cgroup name.
    pub(crate) tag: u64,
}

/// The kernel bumps the OOM-kill counter right after sending SIGKILL, from the killing
/// task; our reap comes after the victim's whole exit, so the counter is normally already
/// up. A loaded machine may preempt the killing task in between: one re-read after this.
const OOM_COUNTER_GRACE: Duration = Duration::from_millis(10);

/// `rmdir` retries while the kernel finishes releasing the last members.
const REMOVE_ATTEMPTS: u32 = 3;

#[async_trait]
impl Processes for OsProcesses {
    async fn spawn(&self, instance: Instance, report: Reporter) -> Result<Pid, SpawnFailure> {
        let mut command = self.command.clone();
        let cgroup = self.create_cgroup(instance);
        command.cgroup = cgroup.clone();
        let notify = match &self.notify {
            Some(plan) => {
                // One socket per instance: a message on it can only be about this instance.
                let tag = plan.tag.wrapping_mul(1 << 20).wrapping_add(instance.0);
                match NotifyWatch::start(
                    &plan.dir,
                    tag,
                    instance,
                    plan.spec.watchdog,
                    report.clone(),
                ) {
                    Ok((watch, path)) => {
                        command = command.env("NOTIFY_SOCKET", path);
                        if let Some(w) = plan.spec.watchdog {
                            command = command.env("WATCHDOG_USEC", w.as_micros().to_string());
                        }
                        Some(watch)
                    }
                    Err(e) => {
                        return Err(SpawnFailure {
                            error: SpawnError::InvalidSpec,
                            message: format!("cannot serve NOTIFY_SOCKET: {e}"),
                        })
                    }
                }
            }
            None => None,
        };
        let mut child = match self.launcher.spawn(command).await {
            Ok(child) => child,
            Err(e) => {
                // No process of the instance runs, so its cgroup is empty.
                if let Some(cgroup) = &cgroup {
                    remove_cgroup(&self.name, cgroup).await;
                }
                return Err(spawn_failure(e));
            }
        };
        let capture = |stream, pipe: Option<process::OutputPipe>| {
            let mut capture = Capture::new(self.ring.clone(), stream, instance.0);
            if let Some(printer) = &self.printer {
                capture = capture.with_printer(printer.clone());
            }
            if let Some(copier) = &self.copier {
                capture = capture.with_copier(copier.clone());
            }
            if let Some(file) = &self.file {
                capture = capture.with_file(file.clone());
            }
            pipe.map(|pipe| capture.run(pipe))
        };
        let stdout = capture(Stream::Stdout, child.take_stdout());
        let stderr = capture(Stream::Stderr, child.take_stderr());
        let pid = child.pid();
        if let Some(notify) = &notify {
            notify.spawned(pid);
        }
        let watch = child.watch();
        {
            let mut children = self
                .children
                .lock()
                .expect("the children list is never poisoned: no code panics while holding it");
            // Room for this one only: a first push would reserve four.
            children.reserve_exact(1);
            children.push((instance, child));
        }
        let children = self.children.clone();
        let name = self.name.clone();
        let end = async move {
            // Both waits end with the reaper at the latest (then nothing more can be known).
            if let Ok(status) = watch.exited().await {
                let status = match &cgroup {
                    // Boxed, like the removal below: only instances with a cgroup need room
                    // for these waits.
                    Some(cgroup) => Box::pin(oom_or(status, cgroup)).await,
                    None => exit_status(status),
                };
                report.fact(Input::Exited { instance, status });
            }
            if watch.gone().await.is_ok() {
                // Nothing of the instance is left to notify.
                drop(notify);
                // Removed before `Gone` is reported, so that whoever reacts to it finds no
                // leftover (the next instance's cgroup has another name anyway).
                if let Some(cgroup) = &cgroup {
                    Box::pin(remove_cgroup(&name, cgroup)).await;
                }
                report.fact(Input::Gone { instance });
            }
            children
                .lock()
                .expect("the children list is never poisoned")
                .retain(|(i, _)| *i != instance);
        };
        tokio::spawn(All3::new(Some(end), stdout, stderr));
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
    /// Creates the instance's cgroup, `<name>.<tag>-<instance>` under the host's parent.
    /// A failure is logged and the instance runs without one, like on a host without
    /// cgroups: keeping the program running comes first.
    fn create_cgroup(&self, instance: Instance) -> Option<InstanceCgroup> {
        let plan = self.cgroup.as_ref()?;
        let name = format!("{}.{}-{}", self.name, plan.tag, instance.0);
        match plan.parent.create(&name, plan.spec.memory_max) {
            Ok(cgroup) => Some(cgroup),
            Err(error) => {
                tracing::warn!(process = %self.name, %instance, %error, "instance runs without its cgroup");
                None
            }
        }
    }

    fn with_child(
        &self,
        instance: Instance,
        f: impl FnOnce(&Child) -> Result<(), process::SignalError>,
    ) {
        let children = self
            .children
            .lock()
            .expect("the children list is never poisoned");
        // An instance already gone has nothing left to signal.
        if let Some((_, child)) = children.iter().find(|(i, _)| *i == instance) {
            if let Err(e) = f(child) {
                tracing::debug!(process = %self.name, %instance, error = %e, "signal not delivered");
            }
        }
    }
}

/// The leader's status, or `OomKilled` when it died of SIGKILL and the OOM killer has been
/// at work in its cgroup.
async fn oom_or(status: process::ExitStatus, cgroup: &InstanceCgroup) -> ExitStatus {
    if status.signal() == Some(libc::SIGKILL) {
        for attempt in 0..2 {
            match cgroup.oom_kills() {
                Ok(Some(kills)) if kills > 0 => return ExitStatus::OomKilled,
                Ok(Some(_)) if attempt == 0 => tokio::time::sleep(OOM_COUNTER_GRACE).await,
                Ok(_) => break,
                Err(error) => {
                    tracing::debug!(%error, "OOM counter unreadable; reporting the signal");
                    break;
                }
            }
        }
    }
    exit_status(status)
}

/// Removes an empty instance cgroup, retrying briefly; a failure is only logged (the host
/// removes what is left when it is dropped).
async fn remove_cgroup(process: &str, cgroup: &InstanceCgroup) {
    for attempt in 1..=REMOVE_ATTEMPTS {
        match cgroup.remove() {
            Ok(()) => return,
            Err(error) if attempt == REMOVE_ATTEMPTS => {
                tracing::warn!(process, %error, "instance cgroup left in place");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
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
