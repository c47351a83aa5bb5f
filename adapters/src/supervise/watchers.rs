//! The [`Watchers`] port on the real OS: probe schedules per instance and role, and the
//! routing of the one shared sampler's reports to each process. Results are only reported;
//! thresholds and limits are the core's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use processcontrol_core::{Input, Instance, Pid, ProbeResult, ProbeRole, Roles, Usage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spec::{CheckSpec, ProbeSpec, ProbeSpecs};
use crate::ports::{Reporter, Watchers};
use crate::probe::{Check, Probe, ProbeOutcome, ProbeSchedule};
use crate::process::{self, run_exec_probe, Launcher};
use crate::sample::{self, SampleReport, SamplerHandle};

/// One sampler for every process of a host, and where its reports go.
pub(crate) struct Sampling {
    handle: SamplerHandle,
    routes: Arc<Mutex<HashMap<u64, (Instance, Reporter)>>>,
    router: JoinHandle<()>,
}

impl Sampling {
    /// Starts the sampler at `interval` and the task that routes its reports.
    pub(crate) fn start(interval: Duration) -> Result<Sampling, sample::SampleError> {
        let (tx, mut rx) = mpsc::channel(1024);
        let handle = sample::spawn(interval, tx)?;
        let routes: Arc<Mutex<HashMap<u64, (Instance, Reporter)>>> = Arc::default();
        let table = routes.clone();
        let router = tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                // A root that is gone is reported by the process port, with its status.
                let SampleReport::Usage(u) = report else {
                    continue;
                };
                let route = table
                    .lock()
                    .expect("routes are never poisoned")
                    .get(&u.tag)
                    .cloned();
                if let Some((instance, reporter)) = route {
                    reporter.fact(Input::Sampled {
                        instance,
                        usage: Usage {
                            memory: u.rss_bytes,
                            cpu: u.cpu_percent.map(|c| c.round() as u64),
                            fds: u.open_fds,
                            processes: u.processes,
                            threads: u.threads,
                        },
                    });
                }
            }
        });
        Ok(Sampling {
            handle,
            routes,
            router,
        })
    }

    fn watch(&self, tag: u64, instance: Instance, pid: Pid, reporter: Reporter) {
        self.routes
            .lock()
            .expect("routes are never poisoned")
            .insert(tag, (instance, reporter));
        if let Err(e) = self.handle.add(tag, pid) {
            tracing::warn!(error = %e, "sampler stopped");
        }
    }

    fn unwatch(&self, tag: u64) {
        self.routes
            .lock()
            .expect("routes are never poisoned")
            .remove(&tag);
        let _ = self.handle.remove(tag);
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.router.abort();
    }
}

/// A probe check as the schedule runs it: network checks, or a command through the launcher
/// (the one reaper rule: no child is started anywhere else).
#[derive(Clone)]
enum Runnable {
    Network(Probe),
    Exec {
        launcher: Launcher,
        command: process::ProcessSpec,
        timeout: Duration,
    },
}

impl Check for Runnable {
    async fn check(&self) -> ProbeOutcome {
        use crate::probe::FailureReason;
        use process::ExecProbeOutcome;
        match self {
            Runnable::Network(p) => p.check().await,
            Runnable::Exec {
                launcher,
                command,
                timeout,
            } => match run_exec_probe(launcher, command.clone(), *timeout).await {
                ExecProbeOutcome::Passed => ProbeOutcome::Passed,
                ExecProbeOutcome::Failed { exit, said } => match exit.code() {
                    Some(code) => ProbeOutcome::failed(
                        FailureReason::ExitCode(code),
                        with_said(format!("exited with {code}"), said),
                    ),
                    None => {
                        let signal = exit.signal().unwrap_or(0);
                        ProbeOutcome::failed(
                            FailureReason::ExitSignal(signal),
                            with_said(format!("killed by signal {signal}"), said),
                        )
                    }
                },
                ExecProbeOutcome::TimedOut { said } => ProbeOutcome::failed(
                    FailureReason::Timeout,
                    with_said(
                        format!("no exit within {}", crate::human::duration(*timeout)),
                        said,
                    ),
                ),
                ExecProbeOutcome::SpawnFailed { error } => ProbeOutcome::failed(
                    FailureReason::Io,
                    format!("cannot start the check: {error}"),
                ),
                ExecProbeOutcome::Lost { error } => {
                    ProbeOutcome::failed(FailureReason::Io, format!("check lost: {error}"))
                }
            },
        }
    }

    fn timeout(&self) -> Duration {
        match self {
            Runnable::Network(p) => p.timeout(),
            // The exec probe enforces its own timeout and then cleans up the group; give it
            // room to do so before the schedule's own cut-off.
            Runnable::Exec { timeout, .. } => *timeout + Duration::from_secs(2),
        }
    }
}

/// An exec check's verdict with the last line it printed: `exited with 1: no response`.
fn with_said(verdict: String, said: Option<String>) -> String {
    match said {
        Some(said) => format!("{verdict}: {said}"),
        None => verdict,
    }
}

/// The probes and sampling of one process.
pub(crate) struct OsWatchers {
    probes: Vec<(ProbeRole, Runnable, ProbeSpec)>,
    sampling: Arc<Sampling>,
    /// This process's sampler tag.
    tag: u64,
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    instance: Option<Instance>,
    tasks: Vec<(ProbeRole, JoinHandle<()>)>,
    /// The instance being sampled: re-adding it would lose its CPU baseline.
    sampled: Option<Instance>,
}

impl OsWatchers {
    /// Builds the checks of `specs` (validated before: an invalid probe is skipped here).
    ///
    /// Exec probes run as the process itself does (`command`'s user, group, environment
    /// and working directory, as Kubernetes runs them in the container and systemd runs
    /// `ExecStartPre=` as `User=`): a probe script the service can rewrite must never run
    /// with more rights than the service.
    pub(crate) fn new(
        specs: &ProbeSpecs,
        command: &process::ProcessSpec,
        launcher: &Launcher,
        sampling: Arc<Sampling>,
        tag: u64,
    ) -> Self {
        let mut probes = Vec::new();
        for (role, spec) in [
            (ProbeRole::Startup, &specs.startup),
            (ProbeRole::Liveness, &specs.liveness),
            (ProbeRole::Readiness, &specs.readiness),
        ] {
            let Some(spec) = spec else { continue };
            let runnable = match (&spec.check, spec.build_network_check()) {
                (CheckSpec::Exec { argv }, _) => {
                    let (program, args) = argv
                        .split_first()
                        .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
                    Runnable::Exec {
                        launcher: launcher.clone(),
                        command: probe_command(command, program, args),
                        timeout: spec.timeout,
                    }
                }
                (_, Ok(Some(probe))) => Runnable::Network(probe),
                (_, _) => continue,
            };
            probes.push((role, runnable, spec.clone()));
        }
        OsWatchers {
            probes,
            sampling,
            tag,
            running: Mutex::new(Running::default()),
        }
    }
}

/// The probe's command line in the process's own identity, environment and directory; never
/// in its cgroup (a probe is not part of the instance: its memory and its exit must not count
/// against it).
fn probe_command(
    process: &process::ProcessSpec,
    program: &str,
    args: &[String],
) -> process::ProcessSpec {
    let mut command = process::ProcessSpec::new(program).args(args);
    command.env_base = process.env_base;
    command.env.clone_from(&process.env);
    command.cwd.clone_from(&process.cwd);
    command.user.clone_from(&process.user);
    command.group.clone_from(&process.group);
    command
}

#[async_trait]
impl Watchers for OsWatchers {
    async fn watch(
        &self,
        instance: Instance,
        pid: Option<Pid>,
        probes: Roles,
        sampling: bool,
        report: Reporter,
    ) {
        let mut running = self.running.lock().expect("never poisoned");
        if running.instance != Some(instance) {
            for (_, task) in running.tasks.drain(..) {
                task.abort();
            }
            running.instance = Some(instance);
        }
        // Stop the roles no longer wanted, start the wanted ones not running yet.
        running.tasks.retain(|(role, task)| {
            let keep = probes.contains(*role);
            if !keep {
                task.abort();
            }
            keep
        });
        for (role, runnable, spec) in &self.probes {
            if !probes.contains(*role) || running.tasks.iter().any(|(r, _)| r == role) {
                continue;
            }
            let Ok(schedule) =
                ProbeSchedule::new(runnable.clone(), spec.initial_delay, spec.period)
            else {
                continue;
            };
            let (tx, mut rx) = mpsc::channel::<crate::probe::ProbeReport>(1);
            let report = report.clone();
            let role = *role;
            let task = tokio::spawn(async move {
                let forward = async {
                    while let Some(r) = rx.recv().await {
                        match r.outcome {
                            ProbeOutcome::Passed => report.fact(Input::Probe {
                                instance,
                                role,
                                result: ProbeResult::Pass,
                            }),
                            ProbeOutcome::Failed(failure) => report.explained(
                                Input::Probe {
                                    instance,
                                    role,
                                    result: ProbeResult::Fail(failure.reason.into()),
                                },
                                failure.message,
                            ),
                        }
                    }
                };
                tokio::join!(schedule.run(0, tx), forward);
            });
            running.tasks.push((role, task));
        }
        match (sampling, pid) {
            (true, Some(_)) if running.sampled == Some(instance) => {}
            (true, Some(pid)) => {
                self.sampling.watch(self.tag, instance, pid, report);
                running.sampled = Some(instance);
            }
            _ => {
                self.sampling.unwatch(self.tag);
                running.sampled = None;
            }
        }
    }
}

impl Drop for OsWatchers {
    fn drop(&mut self) {
        if let Ok(running) = self.running.get_mut() {
            for (_, task) in running.tasks.drain(..) {
                task.abort();
            }
        }
        self.sampling.unwatch(self.tag);
    }
}
