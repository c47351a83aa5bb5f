//! The supervisor's HTTP endpoint, for orchestrators and Prometheus: `/healthz`, `/readyz`,
//! `/metrics`, and 404 elsewhere.
//!
//! Anyone who can reach the port can open connections, so the listener defends the
//! supervisor's descriptors: at most [`Limits::max_connections`] at once (more are closed as
//! soon as they are accepted), headers must arrive within [`Limits::header_timeout`], one
//! request per connection, every connection ends after [`Limits::connection_timeout`], accept
//! errors such as EMFILE back off instead of spinning, and the warnings about all this are
//! rate-limited so a flood cannot fill the log either.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use processcontrol_core::StateName;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics::Metrics;
use crate::runtime::Status;
use crate::supervise::{Group, MemberStatus};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An address to serve on: `PORT` or `:PORT` (loopback), or `IP:PORT` (any IP, `[v6]:PORT`
/// for IPv6). Port 0 is refused: orchestrators need to know the port.
pub fn parse_addr(s: &str) -> Result<SocketAddr, &'static str> {
    let port_only = s.strip_prefix(':').unwrap_or(s);
    let addr = if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port = port_only.parse::<u16>().map_err(|_| "port out of range")?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        s.parse::<SocketAddr>().map_err(|_| "invalid address")?
    };
    if addr.port() == 0 {
        return Err("port 0");
    }
    Ok(addr)
}

/// What the endpoint reports on: the statuses of the supervised processes.
pub trait Source: Send + Sync + 'static {
    /// Every process's status, in configuration order.
    fn statuses(&self) -> Vec<MemberStatus>;
}

impl Source for Group {
    fn statuses(&self) -> Vec<MemberStatus> {
        self.status()
    }
}

/// One process supervised alone (`processcontrol run`), through its status channel.
impl Source for watch::Receiver<Status> {
    fn statuses(&self) -> Vec<MemberStatus> {
        let status = self.borrow().clone();
        vec![MemberStatus {
            uptime_secs: status.uptime().map(|d| d.as_secs()),
            status,
            blocked: None,
        }]
    }
}

/// How much one peer may take of the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A request's headers must be complete this long after the connection was accepted.
    pub header_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it is doing.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    /// 64 connections (a scraper and a few probes need a handful), 5 s for the headers,
    /// 15 s for the whole exchange.
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(15),
        }
    }
}

/// A running endpoint; dropping it closes the listener and every connection.
pub struct Endpoint {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Endpoint {
    /// Binds `addr` and serves `source` until dropped.
    pub async fn bind(
        addr: SocketAddr,
        source: Arc<dyn Source>,
        limits: Limits,
    ) -> Result<Endpoint, HttpError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let stopping = Arc::new(AtomicBool::new(false));
        let app = Arc::new(App {
            source,
            metrics: Metrics::default(),
            stopping: stopping.clone(),
        });
        let task = tokio::spawn(accept_loop(listener, app, limits));
        Ok(Endpoint {
            addr: bound,
            stopping,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The supervisor is shutting down: from now on `/readyz` answers 503, so traffic is
    /// routed elsewhere while the processes stop; `/healthz` still answers 200.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct App {
    source: Arc<dyn Source>,
    metrics: Metrics,
    stopping: Arc<AtomicBool>,
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, limits: Limits) {
    // Owned here: aborting the loop ends every connection with it.
    let mut connections = JoinSet::new();
    let mut full = Warning::new();
    let mut failing = Warning::new();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                if connections.len() >= limits.max_connections {
                    full.warn(format_args!(
                        "http: {} connections open, closing the one from {peer}",
                        limits.max_connections
                    ));
                    drop(stream);
                    continue;
                }
                connections.spawn(serve(stream, app.clone(), limits));
            }
            Err(e) => {
                // Out of descriptors or memory: accepting again at once would spin. The
                // connection waiting in the backlog stays there until some are freed.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                failing.warn(format_args!(
                    "http: cannot accept a connection ({e}); retrying in {backoff:?}"
                ));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

async fn serve(stream: tokio::net::TcpStream, app: Arc<App>, limits: Limits) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(app.answer(&req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    // A client that misbehaves only ends its own connection.
    let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
}

impl App {
    async fn answer(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n");
            response.headers_mut().insert(
                "allow",
                hyper::header::HeaderValue::from_static("GET, HEAD"),
            );
            return response;
        }
        match req.uri().path() {
            "/healthz" => {
                // Reading the statuses takes the same locks the supervisor's loop takes.
                let n = self.source.statuses().len();
                reply(StatusCode::OK, TEXT, format!("ok: {n} process(es)\n"))
            }
            "/readyz" => {
                let (code, body) = readiness(
                    &self.source.statuses(),
                    self.stopping.load(Ordering::Relaxed),
                );
                reply(code, JSON, body.to_string() + "\n")
            }
            "/metrics" => {
                let statuses = self.source.statuses();
                let body = self.metrics.render(statuses).await;
                reply(StatusCode::OK, crate::metrics::CONTENT_TYPE, body)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /healthz, /readyz or /metrics\n",
            ),
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert("content-type", value);
    }
    response
}

/// `/readyz`: 200 when every process that should be ready is, else 503 naming the others.
pub fn readiness(statuses: &[MemberStatus], stopping: bool) -> (StatusCode, serde_json::Value) {
    if stopping {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": "the supervisor is shutting down" }),
        );
    }
    let not_ready: Vec<_> = statuses
        .iter()
        .filter_map(|s| {
            not_ready(s).map(|reason| {
                json!({
                    "process": &*s.status.name,
                    "state": s.status.state,
                    "reason": reason,
                })
            })
        })
        .collect();
    if not_ready.is_empty() {
        (StatusCode::OK, json!({ "ready": true }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "not_ready": not_ready }),
        )
    }
}

/// Why a process that should be ready is not, or `None` when it is or need not be. A process
/// at rest on purpose (stopped by a command, or exited and done) is not expected to be; one
/// that is running is ready unless its readiness probe says otherwise.
pub fn not_ready(s: &MemberStatus) -> Option<String> {
    if let Some(blocked) = &s.blocked {
        return Some(blocked.clone());
    }
    let status = &s.status;
    let why = match status.state {
        StateName::Running if status.has_readiness && !status.ready => {
            "its readiness probe has not passed"
        }
        // Stopped before it ever ran: it is about to start (or held by a dependency).
        StateName::Stopped if status.exit.is_none() => "not started yet",
        StateName::Running | StateName::Stopped | StateName::Exited => return None,
        StateName::Starting => "starting",
        StateName::Restarting => "restarting",
        StateName::BreakerOpen => "its circuit breaker is open",
        StateName::ShuttingDown => "shutting down",
        StateName::Killed => "killed",
        StateName::Failed => "failed",
    };
    let mut why = why.to_string();
    if let Some(error) = &status.last_error {
        why.push_str(&format!(" (last error: {error})"));
    } else if let (Some(exit), false) = (status.exit, status.state == StateName::Starting) {
        why.push_str(&format!(" (last exit: {exit})"));
    }
    Some(why)
}

/// A warning said at most once per interval, with how many were held back since.
struct Warning {
    last: Option<Instant>,
    held_back: u64,
}

impl Warning {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Warning {
            last: None,
            held_back: 0,
        }
    }

    fn warn(&mut self, message: impl Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::INTERVAL)
        {
            self.held_back += 1;
            return;
        }
        if self.held_back > 0 {
            tracing::warn!(
                "{message} ({} more like it in the last {:?})",
                self.held_back,
                Self::INTERVAL
            );
        } else {
            tracing::warn!("{message}");
        }
        self.last = Some(now);
        self.held_back = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(
            parse_addr("9100"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert_eq!(
            parse_addr(":9100"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert_eq!(
            parse_addr("0.0.0.0:80"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 80)))
        );
        assert_eq!(
            parse_addr("[::1]:80").map(|a| a.ip().is_loopback()),
            Ok(true)
        );
        assert_eq!(parse_addr("127.0.0.1:0"), Err("port 0"));
        assert_eq!(parse_addr("0"), Err("port 0"));
        assert_eq!(parse_addr("70000"), Err("port out of range"));
        assert_eq!(parse_addr("localhost:80"), Err("invalid address"));
    }

    #[test]
    fn a_warning_is_said_once_per_interval() {
        let mut w = Warning::new();
        w.warn("first");
        assert_eq!(w.held_back, 0);
        w.warn("second");
        w.warn("third");
        assert_eq!(w.held_back, 2);
        w.last = Some(Instant::now() - Warning::INTERVAL);
        w.warn("fourth");
        assert_eq!(w.held_back, 0);
    }
}
