//! What a user says about one process: the command, the policy the core applies, the probes
//! and the logs. Validated as a whole before anything starts, every problem reported at once.

use std::path::PathBuf;
use std::time::Duration;

use processcontrol_core::{
    BackoffPolicy, BreakerPolicy, LimitRule, Policy, PolicyError, RestartPolicy, Signal, Thresholds,
};

use crate::logs::EchoFormat;
use crate::probe::{HttpProbe, Probe, ProbeConfigError, TcpProbe};
use crate::process::ProcessSpec as Command;

/// One process to supervise.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Its name in status, events and logs.
    pub name: String,
    /// What to run.
    pub command: Command,
    /// How the core reacts (restart, backoff, breaker, stop, probe thresholds, limits).
    pub policy: Policy,
    /// The probes, per role.
    pub probes: ProbeSpecs,
    /// Where the output goes besides the in-memory ring.
    pub logs: LogSpec,
    /// Serve a `NOTIFY_SOCKET` to each instance, for programs written for systemd's
    /// `Type=notify`: `READY=1` makes it ready, and with a watchdog, missing `WATCHDOG=1`
    /// pings are liveness failures.
    pub notify: Option<NotifySpec>,
    /// Give each instance its own cgroup (where the host allows it), with an optional hard
    /// memory limit. `None`: process group and markers only.
    pub cgroup: Option<CgroupSpec>,
}

/// Cgroup enforcement for the instances of one process.
///
/// Where the host allows it, each instance runs in its own cgroup: it is killed as a whole
/// (double-forked daemons included), the kernel enforces `memory_max`, and an OOM kill is
/// reported as `ExitStatus::OomKilled`. Where it does not (no writable, delegated cgroup
/// hierarchy; or no memory controller for the limit), the host says why once in a warning
/// and the instances run as without this, under process groups, markers and the sampler's
/// soft limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupSpec {
    /// Hard memory limit in bytes for the whole instance (every process of it). Swap does not
    /// stretch it. Exceeding it gets a process OOM-killed by the kernel (on cgroup v2 the
    /// whole instance).
    pub memory_max: Option<u64>,
}

/// The probes of a process, per role; a role without a probe has none.
#[derive(Clone, Debug, Default)]
pub struct ProbeSpecs {
    /// Failing restarts the process.
    pub liveness: Option<ProbeSpec>,
    /// Sets the ready flag.
    pub readiness: Option<ProbeSpec>,
    /// Suspends the other probes until it passes.
    pub startup: Option<ProbeSpec>,
}

/// One probe: what to check and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    /// What to check.
    pub check: CheckSpec,
    /// Wait this long after the instance starts before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// A check that takes longer fails.
    pub timeout: Duration,
    /// Consecutive failures that make the probe fail.
    pub failure_threshold: u32,
    /// Consecutive passes that make it pass.
    pub success_threshold: u32,
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckSpec {
    /// An HTTP GET answered with a status from 200 to 399.
    Http {
        /// `http://host:port/path`.
        url: String,
        /// A `Host` header to send instead of the URL's host.
        host: Option<String>,
        /// Keep one HTTP/1.1 connection open between checks (`true`, the default), or open
        /// a new one per check and send `Connection: close` (`false`). See
        /// [`HttpProbe`](crate::probe::HttpProbe) for the reuse rules.
        reuse_connection: bool,
    },
    /// A TCP connection accepted.
    Tcp {
        /// `host:port`.
        addr: String,
        /// Close each connection with a reset instead of the normal FIN handshake (`false`, the
        /// default). See [`TcpProbe::reset`](crate::probe::TcpProbe::reset).
        reset: bool,
    },
    /// A command that exits 0 (run in its own process group, killed on timeout).
    Exec {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

impl ProbeSpec {
    /// Kubernetes' defaults (period 10 s, timeout 1 s, failure threshold 3, success 1) for a
    /// check.
    pub fn new(check: CheckSpec) -> Self {
        ProbeSpec {
            check,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            failure_threshold: 3,
            success_threshold: 1,
        }
    }

    /// An HTTP GET probe (reusing its connection between checks).
    pub fn http(url: impl Into<String>) -> Self {
        Self::new(CheckSpec::Http {
            url: url.into(),
            host: None,
            reuse_connection: true,
        })
    }

    /// A TCP connect probe.
    pub fn tcp(addr: impl Into<String>) -> Self {
        Self::new(CheckSpec::Tcp {
            addr: addr.into(),
            reset: false,
        })
    }

    /// A command probe.
    pub fn exec<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(CheckSpec::Exec {
            argv: argv.into_iter().map(Into::into).collect(),
        })
    }

    /// Sets the period.
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the initial delay.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets the failure threshold.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// Sets the success threshold.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// Whether an HTTP check keeps its connection between checks (the default) or opens a
    /// new one per check; other checks have no connection to keep and ignore it.
    pub fn reuse_connection(mut self, reuse: bool) -> Self {
        if let CheckSpec::Http {
            reuse_connection, ..
        } = &mut self.check
        {
            *reuse_connection = reuse;
        }
        self
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
        }
    }
}

/// The sd_notify protocol for one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifySpec {
    /// The longest the program may go without a `WATCHDOG=1` ping (it is told through
    /// `WATCHDOG_USEC`); each missed interval is a failed liveness check.
    pub watchdog: Option<Duration>,
}

/// Where a process's output goes.
#[derive(Clone, Debug)]
pub struct LogSpec {
    /// Lines kept in memory for `logs`.
    pub ring_lines: usize,
    /// Bytes kept in memory for `logs`.
    pub ring_bytes: usize,
    /// Also append to `<dir>/<name>.log`, rotated by size.
    pub dir: Option<PathBuf>,
    /// Rotate the file when it reaches this size.
    pub file_max_bytes: u64,
    /// Keep this many rotated files.
    pub file_keep: usize,
    /// Whether each line is also printed on the supervisor's own stdout or stderr.
    pub echo: Echo,
    /// How echoed lines look (a `Prefixed` echo fills in the name).
    pub echo_format: EchoFormat,
}

/// Printing a process's output in the foreground.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Echo {
    /// Not printed (kept in the ring and the file only).
    #[default]
    Off,
    /// Not captured at all: the program writes straight to the supervisor's own stdout and
    /// stderr (inherited descriptors), byte for byte, with the backpressure of whoever reads
    /// them, and nothing is lost when either side dies. `processcontrol run` uses this: it is
    /// transparent about its one program's output. The ring (`logs`) and the log file stay
    /// empty.
    Inherit,
    /// Printed as `name | line`, to tell many processes apart.
    Prefixed,
    /// Captured for the ring and the log file, and copied byte for byte, as read, to the
    /// supervisor's own stdout and stderr, with the backpressure of whoever reads them:
    /// `processcontrol run` with a log file.
    Copy,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            ring_lines: 1000,
            ring_bytes: 1 << 20,
            dir: None,
            file_max_bytes: 10 << 20,
            file_keep: 5,
            echo: Echo::Off,
            echo_format: EchoFormat::default(),
        }
    }
}

/// One problem in a process specification.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecProblem {
    /// The policy is inconsistent.
    #[error(transparent)]
    Policy(PolicyError),
    /// A probe cannot be built.
    #[error("{role} probe: {error}")]
    Probe {
        /// `liveness`, `readiness` or `startup`.
        role: &'static str,
        /// Why.
        error: ProbeConfigError,
    },
    /// An exec probe without a command.
    #[error("{0} probe: the exec command is empty")]
    EmptyExec(&'static str),
    /// Thresholds must be at least 1.
    #[error("{role} probe: {which} must be at least 1")]
    Threshold {
        /// The role.
        role: &'static str,
        /// Which threshold.
        which: &'static str,
    },
    /// The command is empty.
    #[error("the command is empty")]
    EmptyCommand,
    /// A hard memory limit of zero bytes would OOM-kill every instance at its first page.
    #[error("the cgroup memory_max must be more than 0 bytes")]
    ZeroMemoryMax,
}

/// Every problem found in a process specification.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("process {name}: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct SpecErrors {
    /// The process.
    pub name: String,
    /// What is wrong.
    pub problems: Vec<SpecProblem>,
}

impl ProcessSpec {
    /// A process running `argv[0]` with the rest as arguments, with the default policy
    /// (restart on failure, 100 ms to 30 s backoff, 5 restarts a minute, SIGTERM then 10 s).
    pub fn new<I, S>(name: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let mut argv = argv.into_iter().map(Into::into);
        let program = argv.next().unwrap_or_default();
        ProcessSpec {
            name: name.into(),
            command: Command::new(program).args(argv),
            policy: Policy::default(),
            probes: ProbeSpecs::default(),
            logs: LogSpec::default(),
            notify: None,
            cgroup: None,
        }
    }

    /// Sets the restart policy.
    pub fn restart(mut self, restart: RestartPolicy) -> Self {
        self.policy.restart = restart;
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// Sets the circuit breaker.
    pub fn breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.policy.breaker = breaker;
        self
    }

    /// Sets the stop signal and grace period.
    pub fn stop(mut self, signal: Signal, grace: Duration) -> Self {
        self.policy.stop.signal = signal;
        self.policy.stop.grace = grace;
        self
    }

    /// Adds an environment variable.
    pub fn env(
        mut self,
        key: impl Into<std::ffi::OsString>,
        value: impl Into<std::ffi::OsString>,
    ) -> Self {
        self.command = self.command.env(key, value);
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.command = self.command.cwd(cwd);
        self
    }

    /// Sets the liveness probe.
    pub fn liveness(mut self, probe: ProbeSpec) -> Self {
        self.probes.liveness = Some(probe);
        self
    }

    /// Sets the readiness probe.
    pub fn readiness(mut self, probe: ProbeSpec) -> Self {
        self.probes.readiness = Some(probe);
        self
    }

    /// Sets the startup probe.
    pub fn startup(mut self, probe: ProbeSpec) -> Self {
        self.probes.startup = Some(probe);
        self
    }

    /// Adds a resource limit.
    pub fn limit(mut self, rule: LimitRule) -> Self {
        self.policy.limits.rules.push(rule);
        self
    }

    /// Serves a `NOTIFY_SOCKET` to each instance (systemd's `Type=notify` protocol).
    pub fn notify(mut self, notify: NotifySpec) -> Self {
        self.notify = Some(notify);
        self
    }

    /// Sets the log options.
    pub fn logs(mut self, logs: LogSpec) -> Self {
        self.logs = logs;
        self
    }

    /// Runs each instance in its own cgroup, as `cgroup` says.
    pub fn cgroup(mut self, cgroup: CgroupSpec) -> Self {
        self.cgroup = Some(cgroup);
        self
    }

    /// Runs each instance in its own cgroup with a hard memory limit of `bytes`.
    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.cgroup
            .get_or_insert_with(CgroupSpec::default)
            .memory_max = Some(bytes);
        self
    }

    /// The policy the core will apply: the given one, with the probe thresholds filled in from
    /// the probes.
    pub fn effective_policy(&self) -> Policy {
        let mut policy = self.policy.clone();
        policy.health.liveness = self.probes.liveness.as_ref().map(ProbeSpec::thresholds);
        policy.health.readiness = self.probes.readiness.as_ref().map(ProbeSpec::thresholds);
        policy.health.startup = self.probes.startup.as_ref().map(ProbeSpec::thresholds);
        // READY=1 and WATCHDOG=1 are results like any probe's: one decides.
        let once = Thresholds {
            failure_threshold: 1,
            success_threshold: 1,
        };
        if let Some(notify) = self.notify {
            policy.health.readiness.get_or_insert(once);
            if notify.watchdog.is_some() {
                policy.health.liveness.get_or_insert(once);
            }
        }
        policy
    }

    /// Checks everything, reporting every problem at once.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut problems = Vec::new();
        if self.command.program.is_empty() {
            problems.push(SpecProblem::EmptyCommand);
        }
        if self.cgroup.as_ref().and_then(|c| c.memory_max) == Some(0) {
            problems.push(SpecProblem::ZeroMemoryMax);
        }
        for (role, probe) in [
            ("liveness", &self.probes.liveness),
            ("readiness", &self.probes.readiness),
            ("startup", &self.probes.startup),
        ] {
            let Some(probe) = probe else { continue };
            if let Err(error) = probe.build_network_check() {
                problems.push(SpecProblem::Probe { role, error });
            }
            if matches!(&probe.check, CheckSpec::Exec { argv } if argv.is_empty()) {
                problems.push(SpecProblem::EmptyExec(role));
            }
            if probe.period.is_zero() {
                problems.push(SpecProblem::Probe {
                    role,
                    error: ProbeConfigError::ZeroPeriod,
                });
            }
            for (which, value) in [
                ("failure_threshold", probe.failure_threshold),
                ("success_threshold", probe.success_threshold),
            ] {
                if value == 0 {
                    problems.push(SpecProblem::Threshold { role, which });
                }
            }
        }
        // Thresholds were reported above in the probe's own words.
        if let Err(errors) = self.effective_policy().validate() {
            problems.extend(
                errors
                    .0
                    .into_iter()
                    .filter(|e| !matches!(e, PolicyError::ZeroThreshold { .. }))
                    .map(SpecProblem::Policy),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors {
                name: self.name.clone(),
                problems,
            })
        }
    }
}

impl ProbeSpec {
    /// Builds the HTTP or TCP check (`None` for exec), validating its target.
    pub(crate) fn build_network_check(&self) -> Result<Option<Probe>, ProbeConfigError> {
        Ok(match &self.check {
            CheckSpec::Http {
                url,
                host,
                reuse_connection,
            } => Some(Probe::Http(
                HttpProbe::new(url, host.as_deref(), self.timeout)?
                    .reuse_connection(*reuse_connection),
            )),
            CheckSpec::Tcp { addr, reset } => {
                Some(Probe::Tcp(TcpProbe::new(addr, self.timeout)?.reset(*reset)))
            }
            CheckSpec::Exec { .. } => {
                if self.timeout.is_zero() {
                    return Err(ProbeConfigError::ZeroTimeout);
                }
                None
            }
        })
    }
}
