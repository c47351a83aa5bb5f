//! The command line. Flag names are the config keys' names: users' scripts depend on them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use processcontrol::core::units::{parse_duration, parse_size};
use processcontrol::{Cooldown, LimitAction, RestartPolicy, Signal};

/// Keeps programs running: restarts them with backoff, stops restart loops with a circuit
/// breaker, watches their health and resources, and stops them gracefully.
#[derive(Debug, Parser)]
#[command(name = "processcontrol", version, about, max_term_width = 100)]
pub struct Cli {
    /// Format of the supervisor's own lines on stderr: its narration of every decision and
    /// its log (`json`: the narrated events as JSON lines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// No narration of decisions on stderr (warnings and errors still show).
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The supervisor's own log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object a line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise one program in the foreground (also as a container entrypoint).
    Run(Box<RunArgs>),
    /// Supervise the processes of a config file in the foreground, with a control socket.
    Up(UpArgs),
    /// Validate a config file without running anything.
    Check(ConfigArg),
    /// Show the status of one process or of all (a table, or JSON with --json).
    Status {
        /// The process; all if absent.
        name: Option<String>,
        /// The same fields as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Start a process (and what it depends on), or all with --all; wait until it is up.
    Start {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Stop a process, or all with --all, gracefully; wait until nothing of it is left.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Grace period before the kill [default: the process's stop.grace].
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        grace: Option<Duration>,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Replace a process's running instance (or restart all with --all, in dependency
    /// order); wait until the new one is up.
    Restart {
        #[command(flatten)]
        target: Target,
        /// Close the circuit breaker first, so a full restart window does not refuse it.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Kill a process's whole process group now; wait until it is gone.
    Kill(NamedWait),
    /// Close a process's circuit breaker (an open one starts it again); wait until it is up.
    Reset(NamedWait),
    /// Send a signal to every process of a process's instance (nginx reload: HUP).
    Signal {
        /// The process.
        name: String,
        /// The signal: HUP, SIGHUP or hup; also INT, QUIT, TERM, KILL, USR1, USR2, WINCH...
        #[arg(value_parser = signal)]
        signal: Signal,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show a process's recent output.
    Logs {
        /// The process.
        name: String,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many recent lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Print each line as a JSON object (`time`, `stream`, `text`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print recent events as JSON lines (and new ones with -f).
    Events {
        /// Keep printing new events after the recent ones.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many recent events [default: every one the daemon keeps, up to 1000].
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Re-read the config file: changed processes restart, new ones start, removed ones stop;
    /// wait until each is done.
    Reload {
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Stop every process (in reverse dependency order) and the daemon; wait until all are
    /// stopped.
    Shutdown {
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print a completion script for a shell: `source <(processcontrol completions bash)`,
    /// or save it where the shell looks (bash, zsh, fish; also elvish and powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `processcontrol man | man -l -`, or save it as
    /// processcontrol.1 in a man directory.
    Man,
}

/// `-c FILE`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "processcontrol.toml"
    )]
    pub file: PathBuf,
}

/// `--socket PATH`.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/processcontrol.sock, or
    /// /run/processcontrol/control.sock for root, or /tmp/processcontrol-UID/control.sock].
    #[arg(long, env = "PROCESSCONTROL_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `processcontrol up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub http: HttpArg,
    /// End once every process is done: exit 0 if each ended well, else with the status of
    /// the first that did not [config: supervisor.exit_on_end].
    #[arg(long)]
    pub exit_on_end: bool,
    /// End once NAME is done, stopping the others, and exit with NAME's exit status.
    #[arg(long, value_name = "NAME", conflicts_with = "exit_on_end")]
    pub exit_code_from: Option<String>,
    /// Start every line of the processes' output with its time.
    #[arg(long)]
    pub timestamps: bool,
}

/// `--http ADDR`.
#[derive(Debug, Args)]
pub struct HttpArg {
    /// Serve /healthz, /readyz and /metrics (Prometheus) on ADDR: PORT or :PORT for loopback,
    /// IP:PORT for any address [up: overrides supervisor.http].
    #[arg(long = "http", visible_alias = "metrics", value_name = "ADDR", value_parser = http_addr)]
    pub addr: Option<std::net::SocketAddr>,
}

/// A process name, or --all.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The process.
    pub name: Option<String>,
    /// Every process.
    #[arg(long)]
    pub all: bool,
}

/// One process name, for a command that waits.
#[derive(Debug, Args)]
pub struct NamedWait {
    /// The process.
    pub name: String,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// How a client command waits for its outcome, and prints it.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return once the daemon took the command, without waiting for its outcome.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the outcome; then exit 124 naming what the process is doing.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "30s", conflicts_with = "no_wait")]
    pub timeout: Duration,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl WaitArgs {
    /// `wait_ms` of the request: 0 for `--no-wait`.
    pub fn wait_ms(&self) -> u64 {
        if self.no_wait {
            0
        } else {
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
        }
    }
}

/// `processcontrol run [OPTIONS] -- PROGRAM [ARGS]...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name used in events and logs [default: the program's file name].
    #[arg(long)]
    pub name: Option<String>,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub health: HealthArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub keys: KeyArgs,

    #[command(flatten)]
    pub http: HttpArg,

    /// Write one JSON line per state transition to this file (`-` for stdout: the program's
    /// stdout then goes to stderr, so stdout carries only events).
    #[arg(long, value_name = "PATH|-")]
    pub events: Option<PathBuf>,

    /// Set an environment variable for the program (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Working directory of the program.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Run the process NAME of this config file (`run --config FILE NAME`), with every
    /// setting the file gives it; the flags above are then not used (but --events and --http).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The program and its arguments (`--` before them is optional: everything after the
    /// program is its own); with --config, the process's name.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = false,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub argv: Vec<String>,
}

/// Restart, backoff, breaker and stop policy.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// When an exited program is restarted.
    #[arg(long, value_enum, default_value_t = RestartArg::OnFailure, help_heading = "Restart")]
    pub restart: RestartArg,
    /// Delay before the first restart of a crash streak.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "100ms", help_heading = "Restart")]
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "30s", help_heading = "Restart")]
    pub backoff_max: Duration,
    /// Growth of the delay from one restart to the next (at least 1).
    #[arg(
        long,
        value_name = "FACTOR",
        default_value_t = 2.0,
        help_heading = "Restart"
    )]
    pub backoff_factor: f64,
    /// Fraction (0 to 1) of each delay taken off at random.
    #[arg(
        long,
        value_name = "FRACTION",
        default_value_t = 0.1,
        help_heading = "Restart"
    )]
    pub backoff_jitter: f64,
    /// Uptime after which a crash streak is over (and a half-open breaker closes).
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s", help_heading = "Restart")]
    pub reset_after: Duration,
    /// Restarts allowed in one window before the circuit breaker opens.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        help_heading = "Circuit breaker"
    )]
    pub max_restarts: u32,
    /// The breaker's sliding window.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s", help_heading = "Circuit breaker")]
    pub restart_window: Duration,
    /// How long the breaker stays open before one trial start, or `never` (give up).
    #[arg(long, value_name = "DURATION|never", value_parser = cooldown, default_value = "5m", help_heading = "Circuit breaker")]
    pub breaker_cooldown: Cooldown,
    /// Signal that asks the program to stop.
    #[arg(long, value_name = "SIGNAL", value_parser = signal, default_value = "SIGTERM", help_heading = "Stop")]
    pub stop_signal: Signal,
    /// How long the program has to exit after the stop signal before its whole process
    /// group is killed.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10s", help_heading = "Stop")]
    pub stop_grace: Duration,
}

/// The other process keys of the config file, each by the flag named after it.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Exit codes that count as a clean exit [exit_codes.success] (comma-separated).
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        help_heading = "Restart"
    )]
    pub success_exit_codes: Vec<i32>,
    /// Exit codes after which the program is never restarted [exit_codes.prevent_restart].
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        help_heading = "Restart"
    )]
    pub prevent_restart_exit_codes: Vec<i32>,
    /// Exit codes after which the program is always restarted [exit_codes.force_restart].
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        help_heading = "Restart"
    )]
    pub force_restart_exit_codes: Vec<i32>,
    /// Readiness: HTTP GET must answer 200-399 [readiness.http].
    #[arg(
        long,
        value_name = "URL",
        help_heading = "Readiness",
        group = "readiness"
    )]
    pub readiness_http: Option<String>,
    /// Readiness: a TCP connection must be accepted [readiness.tcp].
    #[arg(
        long,
        value_name = "HOST:PORT",
        help_heading = "Readiness",
        group = "readiness"
    )]
    pub readiness_tcp: Option<String>,
    /// Readiness: a shell command must exit 0 [readiness.exec].
    #[arg(
        long,
        value_name = "CMD",
        help_heading = "Readiness",
        group = "readiness"
    )]
    pub readiness_exec: Option<String>,
    /// Time between readiness checks [readiness.period].
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10s", help_heading = "Readiness")]
    pub readiness_period: Duration,
    /// Startup: HTTP GET must answer 200-399 before the other probes start [startup.http].
    #[arg(long, value_name = "URL", help_heading = "Startup", group = "startup")]
    pub startup_http: Option<String>,
    /// Startup: a TCP connection must be accepted [startup.tcp].
    #[arg(
        long,
        value_name = "HOST:PORT",
        help_heading = "Startup",
        group = "startup"
    )]
    pub startup_tcp: Option<String>,
    /// Startup: a shell command must exit 0 [startup.exec].
    #[arg(long, value_name = "CMD", help_heading = "Startup", group = "startup")]
    pub startup_exec: Option<String>,
    /// Time between startup checks [startup.period].
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10s", help_heading = "Startup")]
    pub startup_period: Duration,
    /// Failed startup checks in a row that restart the program [startup.failure_threshold].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value = "3", help_heading = "Startup")]
    pub startup_failures: u32,
    /// Serve the program a NOTIFY_SOCKET: READY=1 makes it ready [notify = true].
    #[arg(long, help_heading = "Readiness")]
    pub notify: bool,
    /// With --notify: the longest the program may go without WATCHDOG=1 [notify.watchdog].
    #[arg(long, value_name = "DURATION", value_parser = duration, help_heading = "Readiness")]
    pub watchdog: Option<Duration>,
    /// Open file descriptors of the whole tree [limits.fds.max].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_fds: Option<u64>,
    /// Processes in the tree [limits.processes.max].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_processes: Option<u64>,
    /// Threads in the tree [limits.threads.max].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_threads: Option<u64>,
    /// Run each instance in its own cgroup with this hard memory limit [cgroup.memory_max].
    #[arg(long, value_name = "SIZE", value_parser = size, help_heading = "Limits")]
    pub cgroup_memory_max: Option<u64>,
    /// Run as this user, a name or a uid (the supervisor must be root) [user].
    #[arg(long, value_name = "USER", help_heading = "Environment")]
    pub user: Option<String>,
    /// Run as this group [group].
    #[arg(long, value_name = "GROUP", help_heading = "Environment")]
    pub group: Option<String>,
    /// Also append the output to DIR/NAME.log, rotated by size [logs.file = true with
    /// supervisor.log_dir].
    #[arg(long, value_name = "DIR", help_heading = "Environment")]
    pub log_dir: Option<PathBuf>,
    /// Read variables from this file (KEY=VALUE lines; repeatable; --env wins) [env_file].
    #[arg(long, value_name = "PATH", help_heading = "Environment")]
    pub env_file: Vec<PathBuf>,
}

/// The liveness check.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct HealthCheck {
    /// Liveness: HTTP GET must answer 200-399.
    #[arg(long, value_name = "URL", help_heading = "Health")]
    pub health_http: Option<String>,
    /// Liveness: a TCP connection must be accepted.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Health")]
    pub health_tcp: Option<String>,
    /// Liveness: a shell command must exit 0.
    #[arg(long, value_name = "CMD", help_heading = "Health")]
    pub health_exec: Option<String>,
}

/// Liveness probe settings.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub check: HealthCheck,
    /// Time between checks.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10s", help_heading = "Health")]
    pub health_period: Duration,
    /// A check taking longer fails.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1s", help_heading = "Health")]
    pub health_timeout: Duration,
    /// Consecutive failures that restart the program.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), default_value = "3", help_heading = "Health")]
    pub health_failures: u32,
    /// Wait this long after a start before the first check.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s", help_heading = "Health")]
    pub health_initial_delay: Duration,
}

/// Resource limits.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Resident memory of the whole process tree.
    #[arg(long, value_name = "SIZE", value_parser = size, help_heading = "Limits")]
    pub max_memory: Option<u64>,
    /// CPU of the whole process tree, in percent of one core (may exceed 100).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub max_cpu: Option<u64>,
    /// How long a limit must be exceeded before the action.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "0s", help_heading = "Limits")]
    pub limit_for: Duration,
    /// What a sustained violation does.
    #[arg(long, value_enum, default_value_t = LimitActionArg::Restart, help_heading = "Limits")]
    pub limit_action: LimitActionArg,
}

/// `--restart`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartArg {
    /// Restart after every exit.
    Always,
    /// Restart after failures only; a clean exit means done.
    OnFailure,
    /// Never restart after an exit.
    Never,
}

impl From<RestartArg> for RestartPolicy {
    fn from(r: RestartArg) -> Self {
        match r {
            RestartArg::Always => RestartPolicy::Always,
            RestartArg::OnFailure => RestartPolicy::OnFailure,
            RestartArg::Never => RestartPolicy::Never,
        }
    }
}

/// `--limit-action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LimitActionArg {
    /// Restart through the breaker.
    Restart,
    /// Stop gracefully and stay stopped.
    GracefulShutdown,
    /// Kill at once and stay killed.
    Kill,
    /// Only report it.
    Warn,
}

impl From<LimitActionArg> for LimitAction {
    fn from(a: LimitActionArg) -> Self {
        match a {
            LimitActionArg::Restart => LimitAction::Restart,
            LimitActionArg::GracefulShutdown => LimitAction::GracefulShutdown,
            LimitActionArg::Kill => LimitAction::Kill,
            LimitActionArg::Warn => LimitAction::Warn,
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn http_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    processcontrol::adapters::http::parse_addr(s).map_err(|why| {
        format!("{why}; expected a port, or an IP address and a port, such as 127.0.0.1:9100")
    })
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn cooldown(s: &str) -> Result<Cooldown, String> {
    s.parse::<Cooldown>().map_err(|e| format!("{e} or `never`"))
}

fn signal(s: &str) -> Result<Signal, String> {
    s.parse::<Signal>().map_err(|e| e.to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
