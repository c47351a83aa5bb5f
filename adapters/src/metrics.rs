//! Prometheus metrics of a group, served as text on a loopback address: state per process,
//! restarts by cause, breaker state, probe failures, RSS and CPU.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use processcontrol_core::StateName;
use tokio::net::TcpListener;

use crate::supervise::Group;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Metrics are served on loopback only: they name processes and their resources.
    #[error("metrics address {0} is not a loopback address")]
    NotLoopback(SocketAddr),
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

/// The metrics text for the group's current state.
pub fn render(group: &Group) -> String {
    let statuses = group.status();
    let counters = group.counters();
    let mut out = String::new();
    header(
        &mut out,
        "processcontrol_state",
        "gauge",
        "1 for the state each process is in.",
    );
    for s in &statuses {
        for state in StateName::ALL {
            let v = u8::from(s.status.state == state);
            let _ = writeln!(
                out,
                "processcontrol_state{{process=\"{}\",state=\"{state}\"}} {v}",
                esc(&s.status.name)
            );
        }
    }
    header(
        &mut out,
        "processcontrol_restarts_total",
        "counter",
        "Restarts, by cause.",
    );
    for ((process, cause), n) in &counters.restarts {
        let _ = writeln!(
            out,
            "processcontrol_restarts_total{{process=\"{}\",cause=\"{cause}\"}} {n}",
            esc(process)
        );
    }
    header(
        &mut out,
        "processcontrol_breaker_open",
        "gauge",
        "1 while the circuit breaker is open, 0.5 while half-open.",
    );
    for s in &statuses {
        let v = match s.status.breaker {
            "open" => "1",
            "half_open" => "0.5",
            _ => "0",
        };
        let _ = writeln!(
            out,
            "processcontrol_breaker_open{{process=\"{}\"}} {v}",
            esc(&s.status.name)
        );
    }
    header(
        &mut out,
        "processcontrol_probe_failures_total",
        "counter",
        "Failed probe verdicts, by probe.",
    );
    for ((process, probe), n) in &counters.probe_failures {
        let _ = writeln!(
            out,
            "processcontrol_probe_failures_total{{process=\"{}\",probe=\"{probe}\"}} {n}",
            esc(process)
        );
    }
    header(
        &mut out,
        "processcontrol_rss_bytes",
        "gauge",
        "Resident memory of the process tree.",
    );
    for s in &statuses {
        if let Some(rss) = s.status.rss {
            let _ = writeln!(
                out,
                "processcontrol_rss_bytes{{process=\"{}\"}} {rss}",
                esc(&s.status.name)
            );
        }
    }
    header(
        &mut out,
        "processcontrol_cpu_percent",
        "gauge",
        "CPU of the process tree, percent of one core.",
    );
    for s in &statuses {
        if let Some(cpu) = s.status.cpu {
            let _ = writeln!(
                out,
                "processcontrol_cpu_percent{{process=\"{}\"}} {cpu}",
                esc(&s.status.name)
            );
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds `addr` (loopback only) and serves the metrics of `group` on any path, until the
/// returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    group: Arc<Group>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let group = group.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = render(&group);
                    async move {
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                // A client that misbehaves only ends its own connection.
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok((bound, task))
}
