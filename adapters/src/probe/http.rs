//! The HTTP probe: one GET over a fresh plain-HTTP/1.1 connection per check.

use std::sync::atomic::AtomicU8;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;

use super::target::{parse_host_port, Phase, Target};
use super::{error_chain, Check, FailureReason, ProbeConfigError, ProbeOutcome};

/// How much of a healthy response's body is read. The body is drained (so a server that
/// stalls mid-body is caught as a timeout) but never kept; past this many bytes the check
/// passes without reading further, so large health pages cost nothing extra.
pub const MAX_BODY_READ: usize = 64 * 1024;

const USER_AGENT_VALUE: &str = concat!("processcontrol-probe/", env!("CARGO_PKG_VERSION"));

/// An HTTP GET health check: healthy means a status in 200-399 (body read completely or up
/// to [`MAX_BODY_READ`]) within the timeout.
///
/// The URL is validated when the probe is built, so a configuration mistake surfaces once
/// as a [`ProbeConfigError`] rather than as a failure at every check. Each check opens a
/// new connection and sends `Connection: close`: probing whether the service accepts new
/// clients is the point, and no pooled connection state has to be kept per probe.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    target: Target,
    path_and_query: Uri,
    host_header: HeaderValue,
    timeout: Duration,
}

impl HttpProbe {
    /// Validates `url` (only `http://host[:port][/path][?query]`, port not 0) and the
    /// optional `Host` header override (for virtual-hosted services probed by IP).
    pub fn new(
        url: &str,
        host_header: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ProbeConfigError> {
        if timeout.is_zero() {
            return Err(ProbeConfigError::ZeroTimeout);
        }
        let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
            ProbeConfigError::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            }
        })?;
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => {}
            Some(s) => {
                return Err(ProbeConfigError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: s.to_owned(),
                })
            }
            None => {
                return Err(ProbeConfigError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "expected an absolute http:// URL".to_owned(),
                })
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ProbeConfigError::MissingHost {
                target: url.to_owned(),
            })?;
        if authority.as_str().contains('@') {
            return Err(ProbeConfigError::UserInfo {
                url: url.to_owned(),
            });
        }
        let target = parse_host_port(authority.as_str(), Some(80), url)?;

        // Origin-form request target: "/path?query" ("http://h?q" means "/?q").
        let request_target = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(pq) if pq.starts_with('/') => pq.to_owned(),
            Some(pq) => format!("/{pq}"),
        };
        let path_and_query: Uri =
            request_target
                .parse()
                .map_err(
                    |e: hyper::http::uri::InvalidUri| ProbeConfigError::InvalidUrl {
                        url: url.to_owned(),
                        reason: e.to_string(),
                    },
                )?;

        let host_header = match host_header {
            // A Host value is an authority: no whitespace or control characters.
            Some(h) => HeaderValue::from_str(h)
                .ok()
                .filter(|v| !v.is_empty() && !v.as_bytes().iter().any(u8::is_ascii_whitespace))
                .ok_or_else(|| ProbeConfigError::InvalidHostHeader {
                    value: h.to_owned(),
                })?,
            None => HeaderValue::from_str(authority.as_str()).map_err(|_| {
                ProbeConfigError::InvalidUrl {
                    url: url.to_owned(),
                    reason: "authority is not a valid Host header".to_owned(),
                }
            })?,
        };

        Ok(HttpProbe {
            target,
            path_and_query,
            host_header,
            timeout,
        })
    }

    /// The bound on one whole check (resolve, connect, request, status and body).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one check. Always returns within the timeout (plus scheduling latency): every
    /// step, including a server that accepts and never answers or trickles its body, is
    /// under one deadline, and dropping the future closes the connection.
    pub async fn check(&self) -> ProbeOutcome {
        let phase = AtomicU8::new(Phase::Resolving as u8);
        match tokio::time::timeout(self.timeout, self.run(&phase)).await {
            Ok(outcome) => outcome,
            Err(_) => ProbeOutcome::failed(
                FailureReason::Timeout,
                format!(
                    "no healthy answer within {:?} (stuck {})",
                    self.timeout,
                    Phase::describe(&phase)
                ),
            ),
        }
    }

    async fn run(&self, phase: &AtomicU8) -> ProbeOutcome {
        let stream = match self.target.connect(phase).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        // Probes are tiny request/response exchanges; don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        Phase::AwaitingResponse.set(phase);

        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
            {
                Ok(pair) => pair,
                Err(e) => return io_failure("HTTP handshake", &e),
            };

        let request = match Request::builder()
            .method(Method::GET)
            .uri(self.path_and_query.clone())
            .header(HOST, self.host_header.clone())
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(ACCEPT, HeaderValue::from_static("*/*"))
            .header(CONNECTION, HeaderValue::from_static("close"))
            .body(Empty::new())
        {
            Ok(r) => r,
            Err(e) => return io_failure("building the request", &e),
        };

        let exchange = async {
            let mut response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => return io_failure("HTTP request", &e),
            };
            let status = response.status();
            if !(200..400).contains(&status.as_u16()) {
                return ProbeOutcome::failed(
                    FailureReason::Status(status.as_u16()),
                    format!(
                        "HTTP {} {}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    )
                    .trim_end()
                    .to_owned(),
                );
            }
            Phase::ReadingBody.set(phase);
            let mut read = 0usize;
            while read < MAX_BODY_READ {
                match response.body_mut().frame().await {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.len();
                        }
                    }
                    Some(Err(e)) => return io_failure("reading the body", &e),
                }
            }
            ProbeOutcome::Passed
        };
        let mut exchange = std::pin::pin!(exchange);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            outcome = &mut exchange => outcome,
            _ = &mut conn => {
                // The connection task ended (the server closed, or a protocol error). The
                // exchange may still hold a fully received response, or will now fail with
                // hyper's error: either way it resolves promptly.
                exchange.await
            }
        }
    }
}

impl Check for HttpProbe {
    fn check(&self) -> impl std::future::Future<Output = ProbeOutcome> + Send {
        HttpProbe::check(self)
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn io_failure(what: &str, err: &(dyn std::error::Error + 'static)) -> ProbeOutcome {
    ProbeOutcome::failed(FailureReason::Io, format!("{what}: {}", error_chain(err)))
}
