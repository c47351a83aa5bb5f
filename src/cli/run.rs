//! `processcontrol run`: one program in the foreground, its output passed through, the
//! supervisor's signals turned into a graceful stop, and its fate turned into an exit status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use processcontrol::adapters::config;
use processcontrol::adapters::http;
use processcontrol::adapters::logs;
use processcontrol::adapters::narrate::{Narrator, Voice};
use processcontrol::adapters::process::Identity;
use processcontrol::{
    BackoffPolicy, BreakerPolicy, Cooldown, Echo, ExitStatus, Host, HostConfig, LimitRule,
    NotifySpec, ProbeSpec, ProcessSpec, Resource, Signal, StateName, Status, What,
};
use tokio::signal::unix::{signal, SignalKind};

use super::args::RunArgs;
use super::events_out::EventsOut;
use super::exit;
use super::systemd::Systemd;

/// How long the end waits for the program's copied output to reach its end once the
/// program is gone; only a process that escaped it and still holds its output can take that
/// long.
const COPY_END: Duration = Duration::from_secs(5);

/// Runs the program until it finishes for good, the supervisor gives up, or a signal stops it.
pub fn run(args: RunArgs, voice: Voice) -> u8 {
    let mut spec = match &args.config {
        Some(file) => match from_config(file, &args.argv) {
            Ok(spec) => spec,
            Err(code) => return code,
        },
        None => match build(&args) {
            Ok(spec) => spec,
            Err(message) => return exit::usage(&message),
        },
    };
    // The program's output is its own: inherited, so never lost or altered. Where a log
    // file (`--log-dir`, `logs.file`) must see it too, it is captured and its bytes copied as
    // read, with the same backpressure.
    spec.logs.echo = if spec.logs.dir.is_some() {
        Echo::Copy
    } else {
        Echo::Inherit
    };
    // `--events -` owns stdout: the program's stdout goes to stderr, so the two never mix.
    spec.logs.echo_format.stdout_to_stderr = args.events.as_deref() == Some(Path::new("-"));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::usage(&format!("cannot start the runtime: {e}")),
    };
    let gives_up = matches!(spec.policy.breaker.cooldown, Cooldown::Never);
    let systemd = Systemd::take_from_env();
    runtime.block_on(supervise(
        spec,
        args.events,
        args.http.addr,
        systemd,
        gives_up,
        voice,
    ))
}

/// The process `NAME` of a config file, exactly as `up` would run it (its dependencies are
/// not started: it runs alone).
fn from_config(file: &Path, argv: &[String]) -> Result<ProcessSpec, u8> {
    let [name] = argv else {
        return Err(exit::usage(
            "with --config, give one process name (its command comes from the file)",
        ));
    };
    let config = super::up::load(file)?;
    let names: Vec<&str> = config
        .processes
        .iter()
        .map(|p| p.spec.name.as_str())
        .collect();
    let Some(entry) = config.processes.iter().find(|p| p.spec.name == *name) else {
        let hint = processcontrol::adapters::config::suggest(name, &names)
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        return Err(exit::usage(&format!(
            "invalid value '{name}' for 'NAME': no process of {} has that name{hint}",
            file.display()
        )));
    };
    let mut spec = entry.spec.clone();
    spec.policy.seed = u64::from(std::process::id());
    Ok(spec)
}

/// The specification the flags describe, or a one-line error naming the flag.
fn build(args: &RunArgs) -> Result<ProcessSpec, String> {
    let p = &args.policy;
    let program = &args.argv[0];
    if find_program(program, args.cwd.as_deref()).is_none() {
        return Err(format!(
            "invalid value '{program}' for 'PROGRAM': not found or not executable"
        ));
    }
    if !(p.backoff_factor >= 1.0 && p.backoff_factor.is_finite()) {
        return Err(flag_error(
            "--backoff-factor <FACTOR>",
            &p.backoff_factor.to_string(),
            "must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&p.backoff_jitter) {
        return Err(flag_error(
            "--backoff-jitter <FRACTION>",
            &p.backoff_jitter.to_string(),
            "must be between 0 and 1",
        ));
    }
    if p.backoff_initial > p.backoff_max {
        return Err(flag_error(
            "--backoff-initial <DURATION>",
            &format!("{:?}", p.backoff_initial),
            "is longer than --backoff-max",
        ));
    }
    if p.restart_window.is_zero() {
        return Err(flag_error(
            "--restart-window <DURATION>",
            "0",
            "must be longer than 0",
        ));
    }
    let name = args.name.clone().unwrap_or_else(|| {
        Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
    });
    let mut spec = ProcessSpec::new(name, &args.argv)
        .restart(p.restart.into())
        .backoff(BackoffPolicy {
            initial: p.backoff_initial,
            factor: p.backoff_factor,
            max: p.backoff_max,
            jitter: p.backoff_jitter,
            reset_after: p.reset_after,
        })
        .breaker(BreakerPolicy {
            max_restarts: p.max_restarts,
            window: p.restart_window,
            cooldown: p.breaker_cooldown,
            max_cooldown: match p.breaker_cooldown {
                Cooldown::After(d) => d.max(Duration::from_secs(3600)),
                Cooldown::Never => Duration::from_secs(3600),
            },
        })
        .stop(p.stop_signal, p.stop_grace);
    // A different seed per run: many supervisors started together do not jitter alike.
    spec.policy.seed = u64::from(std::process::id());
    for (k, v) in &args.env {
        spec = spec.env(k, v);
    }
    if let Some(cwd) = &args.cwd {
        spec = spec.cwd(cwd);
    }
    let h = &args.health;
    let (probe, flag) = match (
        &h.check.health_http,
        &h.check.health_tcp,
        &h.check.health_exec,
    ) {
        (Some(url), _, _) => (Some(ProbeSpec::http(url)), "--health-http <URL>"),
        (_, Some(addr), _) => (Some(ProbeSpec::tcp(addr)), "--health-tcp <HOST:PORT>"),
        (_, _, Some(cmd)) => (
            Some(ProbeSpec::exec(["/bin/sh", "-c", cmd])),
            "--health-exec <CMD>",
        ),
        _ => (None, ""),
    };
    if let Some(probe) = probe {
        spec = spec.liveness(
            probe
                .period(h.health_period)
                .timeout(h.health_timeout)
                .failure_threshold(h.health_failures)
                .initial_delay(h.health_initial_delay),
        );
        // Probe targets are checked here so the error names the flag.
        if let Err(e) = spec.validate() {
            return Err(format!("invalid value for '{flag}': {e}"));
        }
    }
    let k = &args.keys;
    let codes = &mut spec.policy.exit_codes;
    if !k.success_exit_codes.is_empty() {
        codes.success = k.success_exit_codes.clone();
    }
    codes.prevent_restart = k.prevent_restart_exit_codes.clone();
    codes.force_restart = k.force_restart_exit_codes.clone();
    for (role, http, tcp, exec) in [
        (
            "readiness",
            &k.readiness_http,
            &k.readiness_tcp,
            &k.readiness_exec,
        ),
        ("startup", &k.startup_http, &k.startup_tcp, &k.startup_exec),
    ] {
        let probe = match (http, tcp, exec) {
            (Some(url), _, _) => ProbeSpec::http(url),
            (_, Some(addr), _) => ProbeSpec::tcp(addr),
            (_, _, Some(cmd)) => ProbeSpec::exec(["/bin/sh", "-c", cmd]),
            _ => continue,
        };
        spec = if role == "readiness" {
            spec.readiness(probe.period(k.readiness_period))
        } else {
            spec.startup(
                probe
                    .period(k.startup_period)
                    .failure_threshold(k.startup_failures),
            )
        };
        if let Err(e) = spec.validate() {
            return Err(format!("invalid value for '--{role}-*': {e}"));
        }
    }
    if k.notify || k.watchdog.is_some() {
        spec = spec.notify(NotifySpec {
            watchdog: k.watchdog,
        });
    }
    if let Some(dir) = &k.log_dir {
        if !dir.is_dir() {
            return Err(format!(
                "invalid value '{}' for '--log-dir <DIR>': not a directory",
                dir.display()
            ));
        }
        spec.logs.dir = Some(dir.clone());
    }
    if let Some(max) = k.cgroup_memory_max {
        spec = spec.memory_max(max);
    }
    let identity = |s: &str| match s.parse::<u32>() {
        Ok(id) => Identity::Id(id),
        Err(_) => Identity::Name(s.to_string()),
    };
    let mut env = Vec::new();
    if let Some(user) = &k.user {
        let user = identity(user);
        env = config::passwd_env(&user)
            .map_err(|e| format!("invalid value for '--user <USER>': {e}"))?;
        if let (Identity::Name(name), true) = (&user, env.is_empty()) {
            return Err(format!(
                "invalid value '{name}' for '--user <USER>': no such user on this system"
            ));
        }
        spec.command.user = Some(user);
    }
    if let Some(group) = &k.group {
        spec.command.group = Some(identity(group));
    }
    for file in &k.env_file {
        let bad = |why: String| {
            format!(
                "invalid value '{}' for '--env-file <PATH>': {why}",
                file.display()
            )
        };
        let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
        let vars = config::env_file::parse(&text)
            .map_err(|(line, why)| bad(format!("line {line}: {why}")))?;
        env.extend(vars);
    }
    // The account's and the files' variables under --env.
    for (key, value) in env.into_iter().rev() {
        spec.command.env.insert(0, (key.into(), value.into()));
    }
    let l = &args.limits;
    for (resource, max) in [
        (Resource::Memory, l.max_memory),
        (Resource::Cpu, l.max_cpu),
        (Resource::Fds, k.max_fds),
        (Resource::Processes, k.max_processes),
        (Resource::Threads, k.max_threads),
    ] {
        if let Some(max) = max {
            spec = spec.limit(LimitRule {
                resource,
                max,
                sustain: l.limit_for,
                action: l.limit_action.into(),
            });
        }
    }
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

fn flag_error(flag: &str, value: &str, why: &str) -> String {
    format!("invalid value '{value}' for '{flag}': {why}")
}

/// The program as the launcher will find it: a path (relative to `cwd`), or a name on PATH.
fn find_program(program: &str, cwd: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = match cwd {
            Some(dir) if !program.starts_with('/') => dir.join(program),
            _ => PathBuf::from(program),
        };
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

async fn supervise(
    spec: ProcessSpec,
    events_path: Option<PathBuf>,
    http_addr: Option<std::net::SocketAddr>,
    mut systemd: Option<Systemd>,
    gives_up: bool,
    voice: Voice,
) -> u8 {
    let host = match Host::new(HostConfig::default()) {
        Ok(host) => host,
        Err(e) => return exit::usage(&e.to_string()),
    };
    let (mut events_out, mut reader_gone) = match EventsOut::open(events_path.as_deref()) {
        Ok(out) => out,
        Err(message) => return exit::usage(&message),
    };
    let sup = match host.add(spec) {
        Ok(sup) => sup,
        Err(e) => return exit::usage(&e.to_string()),
    };
    let mut events = sup.subscribe();
    let mut status = sup.watch_status();
    let endpoint = match http_addr {
        Some(addr) => {
            let source = std::sync::Arc::new(sup.watch_status());
            match http::Endpoint::bind(addr, source, Default::default()).await {
                Ok(endpoint) => Some(endpoint),
                Err(e) => return exit::usage(&e.to_string()),
            }
        }
        None => None,
    };
    if let Some(systemd) = &systemd {
        systemd.spawn_watchdog();
    }
    if sup.start().is_err() {
        return exit::GAVE_UP;
    }
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return exit::usage("cannot install signal handlers");
    };
    let mut forwarded = Forwarded::install();
    let mut stopping = false;
    let mut narrator = Narrator::new();
    // Narrates the event and writes it to `--events`.
    let publish = |event: processcontrol::Event,
                   narrator: &mut Narrator,
                   events_out: &mut Option<EventsOut>| {
        let event = std::sync::Arc::new(event);
        voice.tell(&narrator.event(&event, Instant::now()));
        if let Some(out) = events_out.as_mut().filter(|_| written(&event.what)) {
            out.send(event.to_json_line());
        }
    };
    loop {
        let due = narrator.next_due();
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => publish(event, &mut narrator, &mut events_out),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "events output fell behind");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            () = sleep_until(due) => voice.tell(&narrator.due(Instant::now())),
            () = reader_gone.wait() => {
                // The reader of `--events -` is gone (`| head -3`): stop, as a filter whose
                // reader left does.
                events_out = None;
                if !stopping {
                    stopping = stop(&sup, stopping, endpoint.as_ref(), systemd.as_ref());
                }
            }
            _ = term.recv() => stopping = stop(&sup, stopping, endpoint.as_ref(), systemd.as_ref()),
            _ = int.recv() => stopping = stop(&sup, stopping, endpoint.as_ref(), systemd.as_ref()),
            Some(sig) = forwarded.recv() => {
                let _ = sup.forward(sig);
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = status.borrow().clone();
                if let Some(systemd) = systemd.as_mut() {
                    systemd.update(&http::Source::statuses(&status));
                }
                if let Some(code) = finished(&now, gives_up) {
                    // Tell and write the events already published, so both are complete.
                    while let Ok(event) = events.try_recv() {
                        publish(event, &mut narrator, &mut events_out);
                    }
                    voice.tell(&narrator.flush());
                    if let Some(systemd) = &systemd {
                        systemd.stopping();
                    }
                    sup.shutdown().await;
                    if !logs::copies_finished(COPY_END).await {
                        tracing::warn!("the program's output is still open (a process it started holds it): the rest is not copied");
                    }
                    if let Some(out) = events_out {
                        out.finish().await;
                    }
                    return code;
                }
            }
        }
    }
    voice.tell(&narrator.flush());
    if let Some(out) = events_out {
        out.finish().await;
    }
    exit::GAVE_UP
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// `--events` gets every transition and every notable event (readiness, limits, spawn
/// failures, a breaker closing); not the ignored inputs or scheduled backoffs, which are noise
/// for scripts. Every line has an `event` field.
fn written(what: &What) -> bool {
    !matches!(what, What::Ignored { .. } | What::BackoffScheduled { .. })
}

/// The first SIGTERM or SIGINT stops the program gracefully (and turns `/readyz` to 503); a
/// second one kills it.
fn stop(
    sup: &processcontrol::Supervisor,
    stopping: bool,
    endpoint: Option<&http::Endpoint>,
    systemd: Option<&Systemd>,
) -> bool {
    if let Some(endpoint) = endpoint {
        endpoint.stopping();
    }
    if let Some(systemd) = systemd {
        systemd.stopping();
    }
    let _ = if stopping { sup.kill() } else { sup.stop(None) };
    true
}

/// The exit status of `processcontrol run`, once the program's fate is settled: the program's
/// own last exit status (code, or 128 + signal), or [`exit::GAVE_UP`].
fn finished(status: &Status, gives_up: bool) -> Option<u8> {
    let own = |default: u8| Some(status.exit.map_or(default, exit::from_status));
    match status.state {
        StateName::BreakerOpen if gives_up => Some(exit::GAVE_UP),
        _ if !status.at_rest() => None,
        StateName::Killed => own(exit::from_status(ExitStatus::Signal(9))),
        StateName::Stopped => own(0),
        // Exited or failed without ever running: every spawn failed.
        _ => own(exit::GAVE_UP),
    }
}

/// Signals passed on to the program as they are.
struct Forwarded {
    rx: tokio::sync::mpsc::UnboundedReceiver<Signal>,
}

impl Forwarded {
    fn install() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for (kind, sig) in [
            (SignalKind::hangup(), Signal::Hup),
            (SignalKind::quit(), Signal::Quit),
            (SignalKind::user_defined1(), Signal::Usr1),
            (SignalKind::user_defined2(), Signal::Usr2),
            (SignalKind::window_change(), Signal::Winch),
            (SignalKind::alarm(), Signal::Alrm),
        ] {
            let Ok(mut stream) = signal(kind) else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        Forwarded { rx }
    }

    async fn recv(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }
}
