//! `processcontrol up`: a foreground daemon supervising the processes of a TOML file, with a
//! control socket, reload on SIGHUP, and optional Prometheus metrics.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use processcontrol::adapters::config::{self, Config};
use processcontrol::adapters::control::{self, Handler, Reply, Request};
use processcontrol::adapters::http;
use processcontrol::adapters::logs::EchoFormat;
use processcontrol::adapters::narrate::{self, Voice};
use processcontrol::adapters::supervise::{
    check_spec, descriptors, Echo, Group, GroupPolicy, Host, HostConfig, Member,
};
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Notify};

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
        let host = match Host::new(HostConfig::default()) {
            Ok(host) => host,
            Err(e) => return exit::usage(&e.to_string()),
        };
        let (narrated, narration_end) = tokio::sync::oneshot::channel::<()>();
        let narration = tokio::spawn(narrate::narrate(host.subscribe_all(), voice, async {
            let _ = narration_end.await;
        }));
        let group = Group::new(
            host.clone(),
            GroupPolicy {
                shutdown_grace: config.supervisor.shutdown_grace,
            },
        );
        let daemon = Arc::new(Daemon {
            group: group.clone(),
            host,
            config_path: config_path.clone(),
            echo: echo.clone(),
            shutdown: Notify::new(),
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
}

impl Daemon {
    async fn reload(&self) -> Result<Value, String> {
        let config = config::load(&self.config_path).map_err(|e| e.to_string())?;
        for p in &config.processes {
            check_spec(&p.spec).map_err(|e| e.to_string())?;
        }
        fits(&config).map_err(|e| e.to_string())?;
        let report = self
            .group
            .apply(members(&config, &self.echo))
            .await
            .map_err(|e| e.to_string())?;
        serde_json::to_value(report).map_err(|e| e.to_string())
    }

    /// Runs `f` on the named process: commands that concern it alone.
    fn one(
        &self,
        name: &str,
        f: impl Fn(&processcontrol::Supervisor) -> Result<(), processcontrol::CommandError>,
    ) -> Result<Value, String> {
        let sup = self.group.get(name).map_err(|e| e.to_string())?;
        f(&sup).map_err(|e| e.to_string())?;
        Ok(json!({ "processes": [name] }))
    }
}

/// The process a command names, or every one with `all` (exactly one of them).
fn target(name: Option<String>, all: bool) -> Result<Option<String>, String> {
    match (name, all) {
        (Some(name), false) => Ok(Some(name)),
        (None, true) => Ok(None),
        _ => Err("give a process name or --all".into()),
    }
}

fn names(result: Result<Vec<String>, impl std::fmt::Display>) -> Result<Value, String> {
    result
        .map(|names| json!({ "processes": names }))
        .map_err(|e| e.to_string())
}

#[async_trait]
impl Handler for Daemon {
    async fn handle(&self, request: Request) -> Reply {
        let done = |r: Result<Value, String>| Reply::Done(r);
        match request {
            Request::Status { name } => {
                let all = self.group.status();
                let selected: Vec<_> = all
                    .into_iter()
                    .filter(|s| name.as_deref().is_none_or(|n| &*s.status.name == n))
                    .collect();
                if let (Some(name), true) = (&name, selected.is_empty()) {
                    return done(Err(format!("no process named {name:?}")));
                }
                done(serde_json::to_value(selected).map_err(|e| e.to_string()))
            }
            Request::Start { name, all } => match target(name, all) {
                Ok(name) => done(names(self.group.start(name.as_deref()).await)),
                Err(e) => done(Err(e)),
            },
            Request::Stop {
                name,
                all,
                grace_ms,
            } => match target(name, all) {
                Ok(name) => {
                    let grace = grace_ms.map(std::time::Duration::from_millis);
                    done(names(self.group.stop(name.as_deref(), grace).await))
                }
                Err(e) => done(Err(e)),
            },
            Request::Restart { name } => done(self.one(&name, |s| s.restart())),
            Request::Kill { name } => done(self.one(&name, |s| s.kill())),
            Request::Reset { name } => done(self.one(&name, |s| s.reset_breaker())),
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
                    return done(serde_json::to_value(ring.tail(n)).map_err(|e| e.to_string()));
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
                    while let Some(event) = follower.next().await {
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
                    return done(serde_json::to_value(history).map_err(|e| e.to_string()));
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
                        let value = match live.recv().await {
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
            Request::Reload => done(self.reload().await),
            Request::Shutdown => {
                self.shutdown.notify_one();
                done(Ok(json!({ "shutting_down": true })))
            }
        }
    }
}
