//! Host/port targets shared by the HTTP and TCP probes: parsed once, resolved and connected
//! per check.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::net::TcpStream;

use super::{error_chain, FailureReason, ProbeConfigError, ProbeOutcome};

/// Where a probe connects. An IP literal is kept parsed so checks against it never touch
/// the resolver (the common case for supervised local services, and the cheap one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A literal address: no lookup needed.
    Ip(IpAddr),
    /// A name resolved at every check, so DNS changes are followed.
    Name(String),
}

/// A parsed `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: Host,
    pub(crate) port: u16,
}

/// The step a check is in, recorded so that a timeout can say where it got stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Resolving = 0,
    Connecting = 1,
    AwaitingResponse = 2,
    ReadingBody = 3,
}

impl Phase {
    pub(crate) fn describe(cell: &AtomicU8) -> &'static str {
        match cell.load(Ordering::Relaxed) {
            0 => "resolving the host",
            1 => "connecting",
            2 => "waiting for the response",
            _ => "reading the body",
        }
    }

    pub(crate) fn set(self, cell: &AtomicU8) {
        cell.store(self as u8, Ordering::Relaxed);
    }
}

/// Parses `host:port`, `[v6]:port`, or (when `default_port` is given) a bare `host` or
/// `[v6]`. `whole` is the caller's full input, echoed in errors.
pub(crate) fn parse_host_port(
    text: &str,
    default_port: Option<u16>,
    whole: &str,
) -> Result<Target, ProbeConfigError> {
    let missing_host = || ProbeConfigError::MissingHost {
        target: whole.to_owned(),
    };
    let bad_port = |reason: &str| ProbeConfigError::InvalidPort {
        target: whole.to_owned(),
        reason: reason.to_owned(),
    };

    let (host, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| bad_host(whole))?;
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| bad_host(whole))?;
        let port_text = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad_host(whole))?),
        };
        (Host::Ip(IpAddr::V6(ip)), port_text)
    } else {
        let (host, port_text) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        if host.contains(':') {
            // An unbracketed IPv6 literal: the port cannot be told apart from the address.
            return Err(bad_host(whole));
        }
        if host.is_empty() {
            return Err(missing_host());
        }
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => {
                if !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
                {
                    return Err(bad_host(whole));
                }
                Host::Name(host.to_ascii_lowercase())
            }
        };
        (host, port_text)
    };

    let port = match (port_text, default_port) {
        (Some(""), _) => return Err(bad_port("empty port")),
        (Some(p), _) => {
            if !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad_port("not a number"));
            }
            p.parse::<u16>()
                .map_err(|_| bad_port("out of range 1-65535"))?
        }
        (None, Some(d)) => d,
        (None, None) => return Err(bad_port("missing port")),
    };
    if port == 0 {
        return Err(bad_port("port 0 cannot be connected to"));
    }
    Ok(Target { host, port })
}

fn bad_host(whole: &str) -> ProbeConfigError {
    ProbeConfigError::InvalidUrl {
        url: whole.to_owned(),
        reason: "malformed host".to_owned(),
    }
}

impl Target {
    /// Resolves (if needed) and connects, trying each resolved address in turn. The caller
    /// bounds the whole thing with its timeout; `phase` records progress for its message.
    pub(crate) async fn connect(&self, phase: &AtomicU8) -> Result<TcpStream, ProbeOutcome> {
        match &self.host {
            Host::Ip(ip) => {
                Phase::Connecting.set(phase);
                connect_one(SocketAddr::new(*ip, self.port)).await
            }
            Host::Name(name) => {
                Phase::Resolving.set(phase);
                let addrs = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(|e| {
                        ProbeOutcome::failed(
                            FailureReason::Dns,
                            format!("cannot resolve {name}: {}", error_chain(&e)),
                        )
                    })?;
                Phase::Connecting.set(phase);
                let mut last = None;
                for addr in addrs {
                    match connect_one(addr).await {
                        Ok(stream) => return Ok(stream),
                        Err(outcome) => last = Some(outcome),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    ProbeOutcome::failed(
                        FailureReason::Dns,
                        format!("{name} resolved to no address"),
                    )
                }))
            }
        }
    }
}

async fn connect_one(addr: SocketAddr) -> Result<TcpStream, ProbeOutcome> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| connect_failure(addr, &e))
}

fn connect_failure(addr: SocketAddr, err: &io::Error) -> ProbeOutcome {
    let reason = if err.kind() == io::ErrorKind::ConnectionRefused {
        FailureReason::Refused
    } else {
        FailureReason::Io
    };
    ProbeOutcome::failed(reason, format!("connect to {addr}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let t = parse_host_port("127.0.0.1:80", None, "x").unwrap();
        assert_eq!(t.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(t.port, 80);
        let t = parse_host_port("[::1]:8080", None, "x").unwrap();
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.port, 8080);
        let t = parse_host_port("Example.COM", Some(80), "x").unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 80);
        let t = parse_host_port("[::1]", Some(80), "x").unwrap();
        assert_eq!(t.port, 80);
    }

    #[test]
    fn rejects_bad_ports_and_hosts() {
        for bad in [
            "host:0",
            "host:",
            "host:x",
            "host:70000",
            ":80",
            "::1:80",
            "[::1",
            "[zz]:1",
            "a b:1",
            "host",
        ] {
            assert!(parse_host_port(bad, None, bad).is_err(), "{bad} accepted");
        }
    }
}
