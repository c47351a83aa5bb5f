//! `processcontrol up`: a foreground daemon supervising the processes of a TOML file, with a
//! control socket, reload on SIGHUP, and optional Prometheus metrics.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use processcontrol::adapters::config::{self, Config};
use processcontrol::adapters::control::{self, Handler, Reply, Request};
use processcontrol::adapters::http;
use processcontrol::adapters::logs::EchoFormat;
use processcontrol::adapters::narrate::{self, Voice};
use processcontrol::adapters::supervise::{
    check_spec, descriptors, wait, Answer, Echo, Group, GroupPolicy, Host, HostConfig, Member,
    Order,
};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::ending::{self, EndWhen, Ending};
use super::exit;
use super::systemd::Systemd;

/// Loads and validates a configuration; prints every error (file:line:column) on failure.
/// Also raises the open-file limit and checks that the processes fit in it, so `check` refuses
/// exactly what `up` would.
pub fn load(path: &Path) -> Result<Config, u8> {
    let config = config::load(path).map_err(|errors| {
        for error in &errors.0 {
            eprintln!("{error}");
        }
        eprintln!(
            "processcontrol: {} error(s) in {}; nothing was started",
            errors.0.len(),
            path.display()
        );
        exit::USAGE
    })?;
    let problems: Vec<String> = config
        .processes
        .iter()
        .filter_map(|p| check_spec(&p.spec).err().map(|e| e.to_string()))
        .chain(fits(&config).err().map(|e| e.to_string()))
        .collect();
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{}: {problem}", path.display());
        }
        eprintln!(
            "processcontrol: {} error(s) in {}; nothing was started",
            problems.len(),
            path.display()
        );
        return Err(exit::USAGE);
    }
    Ok(config)
}

/// Whether the configuration's processes fit in the open-file limit (raised to the hard
/// limit first).
fn fits(config: &Config) -> Result<(), descriptors::TooFew> {
    let specs: Vec<_> = config.processes.iter().map(|p| &p.spec).collect();
    descriptors::check(&specs, descriptors::raise())
}

/// The group's members as the configuration describes them; in the foreground every line of
/// output is prefixed with its process's name, padded to the longest, and marked by stream.
fn members(config: &Config, echo: &EchoFormat) -> Vec<Member> {
    let width = config
        .processes
        .iter()
        .map(|p| p.spec.name.chars().count())
        .max()
        .unwrap_or(0);
    config
        .processes
        .iter()
        .map(|entry| {
            let mut spec = entry.spec.clone();
            spec.logs.echo = Echo::Prefixed;
            spec.logs.echo_format = EchoFormat {
                width,
                ..echo.clone()
            };
            // Each process its own jitter, stable across reloads of the same name.
            spec.policy.seed = entry.fingerprint;
            Member {
                spec,
                depends_on: entry.depends_on.clone(),
                fingerprint: entry.fingerprint,
            }
        })
        .collect()
}

/// Runs the daemon until `shutdown` (request or signal); returns the exit status.
pub fn up(
    config_path: PathBuf,
    socket: Option<PathBuf>,
    http_addr: Option<std::net::SocketAddr>,
    end: Option<EndWhen>,
    timestamps: bool,
    voice: Voice,
) -> u8 {
    let echo = EchoFormat {
        colour: narrate::colour_for(std::io::stdout().is_terminal()),
        timestamps,
        ..EchoFormat::default()
    };
    let config = match load(&config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let end = end.or(config.supervisor.exit_on_end.then_some(EndWhen::All));
    if let Some(EndWhen::Process(name)) = &end {
        let names: Vec<&str> = config
            .processes
            .iter()
            .map(|p| p.spec.name.as_str())
            .collect();
        if !names.contains(&name.as_str()) {
            let hint = config::suggest(name, &names)
                .map(|near| format!("; did you mean `{near}`?"))
                .unwrap_or_default();
            return exit::usage(&format!(
                "invalid value '{name}' for '--exit-code-from <NAME>': no process of {} has that name{hint}",
                config_path.display()
            ));
        }
    }
    let gives_up = config
        .processes
        .iter()
        .filter(|p| {
            matches!(
                p.spec.policy.breaker.cooldown,
                processcontrol::Cooldown::Never
            )
        })
        .map(|p| p.spec.name.clone())
        .collect();
    let ending = end.map(|when| Ending::new(when, gives_up));
    let systemd = Systemd::take_from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit::usage(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let socket = socket
            .or_else(|| config.supervisor.socket.clone())
            .unwrap_or_else(control::default_socket_path);
        // Before anything starts: what a predecessor killed without a chance to stop its
        // processes left running (each finding is a warning line).
        let _ = processcontrol::adapters::supervise::clean_up_dead_supervisors();
        let host = match Host::new(HostConfig::default()) {
            Ok(host) => host,
            Err(e) => return exit::usage(&e.to_string()),
        };
        let group = Group::new(
            host.clone(),
            GroupPolicy {
                shutdown_grace: config.supervisor.shutdown_grace,
            },
        );
        let (narrated, narration_end) = tokio::sync::oneshot::channel::<()>();
        let narration = tokio::spawn(narrate::narrate(
            host.subscribe_all(),
            group.subscribe_summaries(),
            voice,
            async {
                let _ = narration_end.await;
            },
        ));
        let daemon = Arc::new(Daemon {
            group: group.clone(),
            host,
            config_path: config_path.clone(),
            echo: echo.clone(),
            shutdown: Notify::new(),
            shutdown_answers: Mutex::default(),
        });
        // Bound before anything starts: a second daemon on the same socket fails early.
        let server = match control::Server::bind(&socket).await {
            Ok(server) => server,
            Err(e) => return exit::usage(&e.to_string()),
        };
        let endpoint = match http_addr.or(config.supervisor.http) {
            Some(addr) => match http::Endpoint::bind(addr, group.clone(), Default::default()).await {
                Ok(endpoint) => {
                    tracing::info!(bound = %endpoint.local_addr(), "serving /healthz, /readyz, /metrics");
                    Some(endpoint)
                }
                Err(e) => return exit::usage(&e.to_string()),
            },
            None => None,
        };
        let stopping = systemd.as_ref().map(Systemd::handle);
        if let Some(systemd) = &systemd {
            systemd.spawn_watchdog();
        }
        // Subscribed before the processes start, followed once they all exist.
        let events = group.subscribe();
        if let Err(e) = group.apply(members(&config, &echo)).await {
            group.shutdown().await;
            return exit::usage(&e.to_string());
        }
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
        let follower = tokio::spawn(ending::follow(
            group.clone(),
            events,
            systemd,
            ending,
            ended_tx,
        ));
        tracing::info!(socket = %socket.display(), processes = config.processes.len(), "up");
        // Every process holds what it needs; the parsed file is not kept for the daemon's
        // life (a reload reads it again).
        drop(config);
        let handler: Arc<dyn Handler> = daemon.clone();
        let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(handler, serving_stopped));
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return exit::usage("cannot install signal handlers");
        };
        let mut code = 0;
        loop {
            tokio::select! {
                Ok(end) = &mut ended => {
                    code = end;
                    break;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = daemon.shutdown.notified() => break,
                _ = hup.recv() => match daemon.reload().await {
                    Ok(report) => tracing::info!(?report, "reloaded"),
                    Err(errors) => tracing::error!(%errors, "reload rejected; the running set is unchanged"),
                },
            }
        }
        tracing::info!("shutting down");
        follower.abort();
        if let Some(systemd) = &stopping {
            systemd.stopping();
        }
        if let Some(endpoint) = &endpoint {
            endpoint.stopping();
        }
        group.shutdown().await;
        // The narration tells the shutdown's last events before the daemon exits.
        let _ = narrated.send(());
        let _ = narration.await;
        // The clients waiting for the shutdown get their last lines before the socket closes:
        // each answer is complete once its task ends (bounded: every process is at rest).
        let answers = std::mem::take(&mut *daemon.shutdown_answers.lock().expect("never poisoned"));
        for answer in answers {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
        }
        // The control socket answers status until every process is down.
        let _ = stop_serving.send(());
        let _ = serving.await;
        drop(endpoint);
        code
    })
}

/// Answers control requests.
struct Daemon {
    group: Arc<Group>,
    host: Arc<Host>,
    config_path: PathBuf,
    echo: EchoFormat,
    shutdown: Notify,
    /// The tasks answering `shutdown` clients: the daemon lets them finish before it stops
    /// serving, so each client gets its summary.
    shutdown_answers: Mutex<Vec<JoinHandle<()>>>,
}

impl Daemon {
    /// The configuration file again, validated as `up` validates it.
    fn load(&self) -> Result<Vec<Member>, String> {
        let config = config::load(&self.config_path).map_err(|e| e.to_string())?;
        for p in &config.processes {
            check_spec(&p.spec).map_err(|e| e.to_string())?;
        }
        fits(&config).map_err(|e| e.to_string())?;
        Ok(members(&config, &self.echo))
    }

    async fn reload(&self) -> Result<Value, String> {
        let members = self.load()?;
        let report = self.group.apply(members).await.map_err(|e| e.to_string())?;
        serde_json::to_value(report).map_err(|e| e.to_string())
    }

    /// Carries out a command; with `wait_ms` the answer is the stream of its outcomes, else
    /// (a client of the first protocol) the names it concerns, at once.
    async fn order(&self, order: Order, wait_ms: Option<u64>) -> Reply {
        match self.group.order(order, wait(wait_ms)).await {
            Ok(answer) => answered(answer, wait_ms).await,
            Err(e) => Reply::error(e),
        }
    }

    fn signal(&self, name: &str, signal: &str) -> Reply {
        let signal = match signal.parse::<processcontrol::Signal>() {
            Ok(signal) => signal,
            Err(e) => return Reply::error(e),
        };
        let sup = match self.group.get(name) {
            Ok(sup) => sup,
            Err(e) => return Reply::error(e),
        };
        let before = sup.status();
        if before.pid.is_some() {
            if let Err(e) = sup.forward(signal) {
                return Reply::error(e);
            }
        }
        Reply::ok(wait::signalled(&before, signal.name()))
    }
}

/// How long a command waits for its outcome: not at all with `wait_ms` 0 (`--no-wait`) or
/// absent.
fn wait(wait_ms: Option<u64>) -> Option<Duration> {
    wait_ms.filter(|ms| *ms > 0).map(Duration::from_millis)
}

/// The answer as the client asked for it: the stream of items, or (without `wait_ms`) the
/// names of the processes concerned.
async fn answered(answer: Answer, wait_ms: Option<u64>) -> Reply {
    let Answer { mut items, .. } = answer;
    if wait_ms.is_some() {
        return Reply::Stream(items);
    }
    let mut processes = Vec::new();
    while let Some(item) = items.recv().await {
        if let Some(name) = item.get("process") {
            processes.push(name.clone());
        }
    }
    Reply::ok(json!({ "processes": processes }))
}

/// The process a command names, or every one with `all` (exactly one of them).
fn target(name: Option<String>, all: bool) -> Result<Option<String>, String> {
    match (name, all) {
        (Some(name), false) => Ok(Some(name)),
        (None, true) => Ok(None),
        _ => Err("give a process name or --all".into()),
    }
}

#[async_trait]
impl Handler for Daemon {
    async fn handle(&self, request: Request) -> Reply {
        let done = |r: Result<Value, String>| Reply::Done(r);
        match request {
            // Written as it is serialized: thousands of processes make a large answer, which
            // a client that reads slowly must not make the daemon hold whole.
            Request::Status { name: None } => Reply::list(self.group.statuses()),
            // One process: the table's fields and the detail, in a list as for every one.
            Request::Status { name: Some(name) } => match self.group.detail(&name, 10) {
                Ok(detail) => done(serde_json::to_value([detail]).map_err(|e| e.to_string())),
                Err(e) => done(Err(e.to_string())),
            },
            Request::Start { name, all, wait_ms } => match target(name, all) {
                Ok(name) => self.order(Order::Start(name), wait_ms).await,
                Err(e) => done(Err(e)),
            },
            Request::Stop {
                name,
                all,
                grace_ms,
                wait_ms,
            } => match target(name, all) {
                Ok(name) => {
                    let grace = grace_ms.map(Duration::from_millis);
                    self.order(Order::Stop(name, grace), wait_ms).await
                }
                Err(e) => done(Err(e)),
            },
            Request::Restart {
                name,
                all,
                force,
                wait_ms,
            } => match target(name, all) {
                Ok(name) => self.order(Order::Restart(name, force), wait_ms).await,
                Err(e) => done(Err(e)),
            },
            Request::Kill { name, wait_ms } => self.order(Order::Kill(name), wait_ms).await,
            Request::Reset { name, wait_ms } => self.order(Order::Reset(name), wait_ms).await,
            Request::Signal { name, signal } => self.signal(&name, &signal),
            Request::Logs {
                name,
                follow,
                lines,
            } => {
                let Some(ring) = self.host.logs(&name) else {
                    return done(Err(format!("no process named {name:?}")));
                };
                let n = lines.unwrap_or(100);
                if !follow {
                    return Reply::list(ring.tail(n));
                }
                let (tail, mut follower) = ring.follow(n);
                let (tx, rx) = mpsc::channel(256);
                tokio::spawn(async move {
                    for line in tail {
                        if tx.send(json!(line)).await.is_err() {
                            return;
                        }
                    }
                    use processcontrol::adapters::logs::FollowEvent;
                    // Ends as soon as the client leaves, not at the next line (which may
                    // never come from a quiet process).
                    while let Some(event) = tokio::select! {
                        e = follower.next() => e,
                        () = tx.closed() => None,
                    } {
                        let value = match event {
                            FollowEvent::Line(line) => json!(line),
                            FollowEvent::Missed(n) => json!({ "missed": n }),
                        };
                        if tx.send(value).await.is_err() {
                            return;
                        }
                    }
                });
                Reply::Stream(rx)
            }
            Request::Events { follow, lines } => {
                let (mut history, mut live) = self.group.follow();
                if let Some(n) = lines {
                    history.drain(..history.len().saturating_sub(n));
                }
                if !follow {
                    return Reply::list(history);
                }
                let (tx, rx) = mpsc::channel(256);
                tokio::spawn(async move {
                    // The recent events first, then the new ones: `follow` took both at once,
                    // so none is missed or doubled.
                    for event in history {
                        if tx.send(json!(event)).await.is_err() {
                            return;
                        }
                    }
                    loop {
                        let received = tokio::select! {
                            r = live.recv() => r,
                            () = tx.closed() => return,
                        };
                        let value = match received {
                            Ok(event) => json!(event),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                json!({ "missed": n })
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        };
                        if tx.send(value).await.is_err() {
                            return;
                        }
                    }
                });
                Reply::Stream(rx)
            }
            Request::Reload { wait_ms: None } => done(self.reload().await),
            Request::Reload { wait_ms } => {
                let members = match self.load() {
                    Ok(members) => members,
                    Err(e) => return done(Err(e)),
                };
                match self.group.reload(members, wait(wait_ms)).await {
                    Ok(answer) => answered(answer, wait_ms).await,
                    Err(e) => Reply::error(e),
                }
            }
            Request::Shutdown { wait_ms: None } => {
                self.shutdown.notify_one();
                done(Ok(json!({ "shutting_down": true })))
            }
            Request::Shutdown { wait_ms } => {
                let answer = match self.group.watch_shutdown(wait(wait_ms)) {
                    Ok(answer) => answer,
                    Err(e) => return Reply::error(e),
                };
                self.shutdown.notify_one();
                let Answer { items, task } = answer;
                self.shutdown_answers
                    .lock()
                    .expect("never poisoned")
                    .push(task);
                Reply::Stream(items)
            }
        }
    }
}
