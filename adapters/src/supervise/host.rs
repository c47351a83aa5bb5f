//! The shared machinery of one supervisor process: the launcher and its single reaper, the
//! single resource sampler, and the foreground printer. Each supervised process gets its own
//! machine task and ports on top of it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::runtime::Event;
use processcontrol_core::{Policy, PolicyErrors};

use super::describe::Describe;
use super::os_processes::{CgroupPlan, NotifyPlan, OsProcesses};
use super::spec::{Echo, ProcessSpec, SpecErrors};
use super::watchers::{OsWatchers, Sampling};
use crate::cgroup::{CgroupParent, Cgroups};
use crate::logs::{
    spawn_file_writer, spawn_print_thread, Copier, EchoFormat, FileConfig, LogError, LogRing,
    PrintLine, Printer, RingConfig,
};
use crate::ports::{Ports, TokioClock};
use crate::process::{Launcher, LauncherError};
use crate::runtime::Supervisor;
use crate::sample::SampleError;

/// Why a process could not be supervised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    /// The specification is invalid (every problem is listed).
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    /// The launcher could not start (outside a tokio runtime, or a second launcher).
    #[error("cannot start the process launcher: {0}")]
    Launcher(#[from] LauncherError),
    /// The log ring or file could not be set up.
    #[error("process {name}: logs: {error}")]
    Logs {
        /// The process.
        name: String,
        /// Why.
        error: LogError,
    },
    /// The resource sampler could not start (no /proc).
    #[error("cannot start the resource sampler: {0}")]
    Sampler(#[from] SampleError),
    /// The thread that prints (or copies) the processes' output could not start.
    #[error("cannot start the output thread: {0}")]
    Printer(#[source] std::io::Error),
    /// The directory for notify sockets could not be created.
    #[error("notify sockets: {0}")]
    Notify(String),
}

/// Options of a host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// How often every process tree's resources are sampled.
    pub sample_interval: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            sample_interval: Duration::from_secs(1),
        }
    }
}

/// The shared machinery every supervised process of this OS process uses. There is one
/// launcher per OS process (its reaper waits for any child), so create one host, or use
/// [`Host::global`].
pub struct Host {
    launcher: Launcher,
    sampling: Arc<Sampling>,
    printer: mpsc::Sender<PrintLine>,
    next_tag: AtomicU64,
    /// The output ring of each process, by name (a name's newest process).
    rings: Mutex<HashMap<Arc<str>, Arc<LogRing>>>,
    /// One event stream for every process (4096 events of buffer in all, not per process).
    events: broadcast::Sender<Arc<Event>>,
    /// The parent of every instance cgroup, created on first use by a spec that asks for
    /// cgroups; `None` inside once they turned out unavailable (said once, in a warning).
    cgroups: OnceLock<Option<Arc<CgroupParent>>>,
    /// The private directory of notify sockets, created on first use.
    notify_dir: OnceLock<Result<PathBuf, String>>,
    /// One clock for every process: one origin, and one allocation rather than one each.
    clock: Arc<TokioClock>,
}

static GLOBAL: OnceLock<Arc<Host>> = OnceLock::new();

impl Host {
    /// Starts the launcher, the sampler and the printer on the current tokio runtime, which
    /// must outlive every supervised process.
    pub fn new(config: HostConfig) -> Result<Arc<Host>, SuperviseError> {
        let launcher = Launcher::new()?;
        let sampling = Arc::new(Sampling::start(config.sample_interval)?);
        let (printer, lines) = mpsc::channel::<PrintLine>(4096);
        // Writes happen on a thread of their own: a stalled stdout must never hold a runtime
        // worker (the printers drop and count what the full queue cannot take).
        spawn_print_thread(lines).map_err(SuperviseError::Printer)?;
        Ok(Arc::new(Host {
            launcher,
            sampling,
            printer,
            next_tag: AtomicU64::new(1),
            rings: Mutex::new(HashMap::new()),
            // Shared events: a broadcast channel allocates all its slots up front, and 4096
            // slots of whole events were 700 KB of the supervisor's memory.
            events: broadcast::channel(4096).0,
            cgroups: OnceLock::new(),
            notify_dir: OnceLock::new(),
            clock: Arc::new(TokioClock::new()),
        }))
    }

    /// The host of this OS process, created on first use on the current tokio runtime (with
    /// the default options). Applications with one runtime can use it and forget about hosts.
    pub fn global() -> Result<Arc<Host>, SuperviseError> {
        // Creation is serialized: two callers racing would both try to start a launcher, and
        // there may be only one.
        static CREATING: Mutex<()> = Mutex::new(());
        let _creating = CREATING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(host) = GLOBAL.get() {
            return Ok(host.clone());
        }
        let host = Host::new(HostConfig::default())?;
        Ok(GLOBAL.get_or_init(|| host).clone())
    }

    /// Supervises `spec` and starts it. Nothing starts if the spec is invalid.
    pub fn spawn(&self, spec: ProcessSpec) -> Result<Supervisor, SuperviseError> {
        let p = self.prepare(spec, None)?;
        self.register_logs(&p);
        Supervisor::launch(&p.name, p.policy, p.ports).map_err(|e| policy_error(&p.name, e))
    }

    /// Supervises `spec` without starting it.
    pub fn add(&self, spec: ProcessSpec) -> Result<Supervisor, SuperviseError> {
        let p = self.prepare(spec, None)?;
        self.register_logs(&p);
        Supervisor::idle(&p.name, p.policy, p.ports).map_err(|e| policy_error(&p.name, e))
    }

    /// Supervises a prepared process without starting it, telling `observer` every change of
    /// what a group sees of it.
    pub(crate) fn add_observed(
        &self,
        p: Prepared,
        observer: crate::runtime::Observer,
    ) -> Result<Supervisor, SuperviseError> {
        self.register_logs(&p);
        Supervisor::observed(&p.name, p.policy, p.ports, observer)
            .map_err(|e| policy_error(&p.name, e))
    }

    /// Gives a supervised process a prepared new configuration (see
    /// [`Supervisor::reconfigure`]); its log ring is the new one from now on.
    pub(crate) fn reconfigure(
        &self,
        sup: &Supervisor,
        p: Prepared,
        restart: bool,
    ) -> Result<(), crate::runtime::CommandError> {
        self.register_logs(&p);
        sup.reconfigure(p.policy, p.ports, restart)
    }

    /// Forgets the log ring of a process that is no longer supervised, so its memory goes.
    pub(crate) fn forget_logs(&self, name: &str, ring: &Arc<LogRing>) {
        let mut rings = self.rings.lock().expect("never poisoned");
        if rings.get(name).is_some_and(|r| Arc::ptr_eq(r, ring)) {
            rings.remove(name);
        }
    }

    /// Every event of every process of this host from now on.
    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The output ring of a supervised process, for `logs`.
    pub fn logs(&self, name: &str) -> Option<Arc<LogRing>> {
        self.rings
            .lock()
            .expect("never poisoned")
            .get(name)
            .cloned()
    }

    /// The one ring per name: a process given a new configuration keeps one entry.
    fn register_logs(&self, p: &Prepared) {
        self.rings
            .lock()
            .expect("never poisoned")
            .insert(p.name.as_str().into(), p.ring.clone());
    }

    /// Validates `spec` and builds everything its task needs, starting nothing: a reload
    /// prepares every changed and new process before it touches any. With `keep`, the log
    /// ring of the process's current configuration is kept when its size did not change (its
    /// recent output survives a reload).
    pub(crate) fn prepare(
        &self,
        spec: ProcessSpec,
        keep: Option<&Arc<LogRing>>,
    ) -> Result<Prepared, SuperviseError> {
        check_spec(&spec)?;
        let name: Arc<str> = spec.name.as_str().into();
        let logs_error = |error| SuperviseError::Logs {
            name: spec.name.clone(),
            error,
        };
        let (config, file) = log_configs(&spec);
        let ring = match keep {
            Some(ring) if *ring.config() == config => ring.clone(),
            _ => Arc::new(LogRing::new(config).map_err(logs_error)?),
        };
        let file = match file {
            // The writer task ends when the last sink (held by the captures) is dropped.
            Some(config) => Some(spawn_file_writer(config).map_err(logs_error)?.0),
            None => None,
        };
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut command = spec.command.clone();
        if spec.logs.echo == Echo::Inherit {
            use crate::process::OutputMode;
            command.stdout = if spec.logs.echo_format.stdout_to_stderr {
                OutputMode::InheritStderr
            } else {
                OutputMode::Inherit
            };
            command.stderr = OutputMode::Inherit;
        }
        let processes = OsProcesses {
            name: name.clone(),
            launcher: self.launcher.clone(),
            command,
            ring: ring.clone(),
            copier: match spec.logs.echo {
                Echo::Copy => Some(
                    Copier::start(spec.logs.echo_format.stdout_to_stderr)
                        .map_err(SuperviseError::Printer)?,
                ),
                _ => None,
            },
            printer: match spec.logs.echo {
                Echo::Off | Echo::Inherit | Echo::Copy => None,
                Echo::Prefixed => Some(Printer::formatted(
                    EchoFormat {
                        name: Some(name.clone()),
                        ..spec.logs.echo_format.clone()
                    },
                    self.printer.clone(),
                )),
            },
            file,
            children: Arc::default(),
            cgroup: spec.cgroup.clone().and_then(|spec| {
                Some(CgroupPlan {
                    spec,
                    parent: self.cgroup_parent()?,
                    tag,
                })
            }),
            notify: match spec.notify {
                Some(notify) => Some(NotifyPlan {
                    spec: notify,
                    dir: self.notify_dir()?,
                    tag,
                }),
                None => None,
            },
        };
        let watchers = OsWatchers::new(
            &spec.probes,
            &spec.command,
            &self.launcher,
            self.sampling.clone(),
            tag,
        );
        let ports = Ports {
            processes: Arc::new(processes),
            watchers: Arc::new(watchers),
            clock: self.clock.clone(),
            events: self.events.clone(),
        };
        let policy = spec.effective_policy();
        let describe = Arc::new(Describe::of(&spec));
        Ok(Prepared {
            name: spec.name,
            policy,
            ports,
            ring,
            describe,
        })
    }
}

/// Checks everything about `spec` that supervising it would, without creating anything:
/// `check` and a reload refuse exactly what `up` would.
pub fn check_spec(spec: &ProcessSpec) -> Result<(), SuperviseError> {
    spec.validate()?;
    let logs_error = |error| SuperviseError::Logs {
        name: spec.name.clone(),
        error,
    };
    let (ring, file) = log_configs(spec);
    ring.validate().map_err(logs_error)?;
    if let Some(file) = file {
        file.validate().map_err(logs_error)?;
    }
    Ok(())
}

/// The log ring's and log file's settings of a process.
fn log_configs(spec: &ProcessSpec) -> (RingConfig, Option<FileConfig>) {
    let ring = RingConfig {
        max_lines: spec.logs.ring_lines,
        max_bytes: spec.logs.ring_bytes,
        ..RingConfig::default()
    };
    let file = spec.logs.dir.as_ref().map(|dir| {
        let mut config = FileConfig::new(dir, spec.name.clone());
        config.max_file_bytes = spec.logs.file_max_bytes;
        config.keep_files = spec.logs.file_keep;
        config
    });
    (ring, file)
}

/// A process validated and built, not yet supervised.
pub(crate) struct Prepared {
    pub(crate) name: String,
    /// The effective policy (probes and `notify` folded in).
    pub(crate) policy: Policy,
    pub(crate) ports: Ports,
    pub(crate) ring: Arc<LogRing>,
    /// What `status NAME` shows of the configuration.
    pub(crate) describe: Arc<Describe>,
}

/// The spec was validated with this very policy: this only restates its errors.
fn policy_error(name: &str, e: PolicyErrors) -> SuperviseError {
    SuperviseError::Spec(SpecErrors {
        name: name.to_string(),
        problems: e
            .0
            .into_iter()
            .map(super::spec::SpecProblem::Policy)
            .collect(),
    })
}

impl Host {
    /// The parent cgroup of this supervisor's instances (`processcontrol-<pid>` under its
    /// own cgroup), created on the first call. Where cgroups cannot be used, the reason is
    /// logged once and every later call returns `None` quietly.
    pub fn cgroup_parent(&self) -> Option<Arc<CgroupParent>> {
        self.cgroups
            .get_or_init(|| {
                let parent = Cgroups::detect()
                    .map_err(|e| e.to_string())
                    .and_then(|cgroups| cgroups.create_parent().map_err(|e| e.to_string()));
                match parent {
                    Ok(parent) => {
                        // A missing memory controller is warned about once, by the first
                        // spawn that asks for a limit.
                        tracing::info!(
                            dirs = ?parent.dirs(),
                            memory_limits = parent.memory_limits().is_ok(),
                            "instances get their own cgroup"
                        );
                        Some(Arc::new(parent))
                    }
                    Err(reason) => {
                        tracing::warn!(
                            %reason,
                            "cgroups unavailable: instances run without one (no hard memory \
                             limit, no OOM detection), under process groups, markers and \
                             /proc sampling"
                        );
                        None
                    }
                }
            })
            .clone()
    }
}

impl Drop for Host {
    /// Removes the instance cgroups left empty, and the parent if nothing is left in it
    /// (processes still running keep theirs; the parent's own drop retries later).
    fn drop(&mut self) {
        if let Some(Some(parent)) = self.cgroups.get() {
            parent.remove_empty();
        }
        if let Some(Ok(dir)) = self.notify_dir.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Host {
    /// A directory of this process's own for notify sockets (see [`crate::rundir`]): never a
    /// predictable path in a shared directory, which another user could have created first.
    fn notify_dir(&self) -> Result<PathBuf, SuperviseError> {
        self.notify_dir
            .get_or_init(|| {
                crate::rundir::own_dir(&format!("notify-{}", std::process::id()))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(SuperviseError::Notify)
    }
}

impl Supervisor {
    /// Supervises `spec` on the [global host](Host::global) and starts it.
    pub fn spawn(spec: ProcessSpec) -> Result<Supervisor, SuperviseError> {
        Host::global()?.spawn(spec)
    }
}
