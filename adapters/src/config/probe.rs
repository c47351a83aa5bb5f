//! The `liveness`, `readiness` and `startup` tables of a process. A probe has exactly one check
//! (`http`, `tcp` or `exec`) and Kubernetes' timing keys; its target is validated here with the
//! probe adapter's own parser, so an address the prober would reject is reported with its line.

use std::path::Path;
use std::time::Duration;

use crate::probe::{HttpProbe, ProbeConfigError, TcpProbe};
use crate::supervise::{CheckSpec, ProbeSpec};

use super::error::{ErrorKind, Report};
use super::program::{find_program, resolve};
use super::value::{self, list, quote, Key, Table, Value};

const KINDS: [&str; 3] = ["http", "tcp", "exec"];
const KEYS: [&str; 11] = [
    "http",
    "tcp",
    "exec",
    "host",
    "reuse_connection",
    "tcp_reset",
    "initial_delay",
    "period",
    "timeout",
    "failure_threshold",
    "success_threshold",
];

/// Reads one probe table; `None` (with the errors recorded) when anything in it is wrong.
///
/// `cwd` is the process's working directory when it exists: a relative exec program is made
/// absolute against it, because probes run from the supervisor's own directory.
pub(crate) fn probe(
    r: &mut Report<'_>,
    path: &str,
    key: &Key<'_>,
    v: &Value<'_>,
    cwd: Option<&Path>,
) -> Option<ProbeSpec> {
    let table = value::table(
        r,
        path,
        v,
        "a probe table such as { http = \"http://127.0.0.1:8080/healthz\" }",
    )?;
    let span = key.span();
    let t = Table {
        path,
        span: span.clone(),
        table,
    };
    let before = r.count();
    t.check_keys(r, &KEYS);

    let expected_kind = format!("exactly one of {}", list(&KINDS));
    let kinds: Vec<_> = t
        .entries()
        .into_iter()
        .filter(|(k, _)| KINDS.contains(&k.get_ref().as_ref()))
        .collect();
    if kinds.is_empty() {
        r.error(
            &span,
            ErrorKind::MissingKey,
            format!("{path}: no check"),
            expected_kind.clone(),
            "none",
        );
    }
    for (k, _) in kinds.iter().skip(1) {
        r.error(
            &k.span(),
            ErrorKind::Conflict,
            format!("{path}: more than one check"),
            expected_kind.clone(),
            format!("`{}` and `{}`", kinds[0].0.get_ref(), k.get_ref()),
        );
    }

    let mut spec = ProbeSpec::http("");
    if let Some(v) = t.get("initial_delay") {
        if let Some(d) = value::duration(r, &t.path_of("initial_delay"), v) {
            spec.initial_delay = d;
        }
    }
    if let Some(v) = t.get("period") {
        if let Some(d) = value::positive_duration(r, &t.path_of("period"), v) {
            spec.period = d;
        }
    }
    if let Some(v) = t.get("timeout") {
        if let Some(d) = value::positive_duration(r, &t.path_of("timeout"), v) {
            spec.timeout = d;
        }
    }
    if let Some(v) = t.get("failure_threshold") {
        if let Some(n) = value::u32_at_least(r, &t.path_of("failure_threshold"), v, 1) {
            spec.failure_threshold = n;
        }
    }
    if let Some(v) = t.get("success_threshold") {
        if let Some(n) = value::u32_at_least(r, &t.path_of("success_threshold"), v, 1) {
            spec.success_threshold = n;
        }
    }

    let host = t.entry("host");
    let reuse = t.entry("reuse_connection");
    let reset = t.entry("tcp_reset");
    let first = kinds.first().map(|(k, v)| (k.get_ref().as_ref(), *v));
    for (only, key, what) in [
        ("http", host, "an http check sends a Host header"),
        ("http", reuse, "an http check has a connection to reuse"),
        ("tcp", reset, "a tcp check closes with a reset"),
    ] {
        let Some((kind, _)) = first.filter(|(kind, _)| *kind != only) else {
            continue;
        };
        let Some((k, _)) = key else { continue };
        let name: &str = k.get_ref().as_ref();
        r.error(
            &k.span(),
            ErrorKind::Conflict,
            format!("{}: only {what}", t.path_of(name)),
            format!("`{name}` only together with `{only}`"),
            format!("`{name}` with `{kind}`"),
        );
    }
    let tcp_reset = match reset {
        Some((_, v)) => value::boolean(r, &t.path_of("tcp_reset"), v).unwrap_or(false),
        None => false,
    };
    let reuse_connection = match reuse {
        Some((_, v)) => value::boolean(r, &t.path_of("reuse_connection"), v).unwrap_or(true),
        None => true,
    };
    let check = match first {
        Some(("http", v)) => http(r, &t, v, host.map(|(_, hv)| hv), reuse_connection),
        Some(("tcp", v)) => tcp(r, &t.path_of("tcp"), v, tcp_reset),
        Some((_, v)) => exec(r, &t.path_of("exec"), v, cwd),
        None => None,
    };
    spec.check = check?;
    (r.count() == before).then_some(spec)
}

/// The check's own timeout is irrelevant to whether its target parses; a fixed one keeps a bad
/// timeout (reported on its own) from hiding a bad target.
const ANY_TIMEOUT: Duration = Duration::from_secs(1);

fn http(
    r: &mut Report<'_>,
    t: &Table<'_, '_>,
    v: &Value<'_>,
    host: Option<&Value<'_>>,
    reuse_connection: bool,
) -> Option<CheckSpec> {
    const EXPECTED: &str = "an http:// URL with a host and a port from 1 to 65535, such as \"http://127.0.0.1:8080/healthz\"";
    let path = t.path_of("http");
    let url = value::nonempty_string(r, &path, v, EXPECTED)?;
    let host_path = t.path_of("host");
    let host = match host {
        Some(hv) => Some((
            value::nonempty_string(
                r,
                &host_path,
                hv,
                "a Host header value such as \"example.com\"",
            )?,
            hv,
        )),
        None => None,
    };
    match HttpProbe::new(url, host.map(|(h, _)| h), ANY_TIMEOUT) {
        Ok(_) => Some(CheckSpec::Http {
            url: url.to_string(),
            host: host.map(|(h, _)| h.to_string()),
            reuse_connection,
        }),
        Err(ProbeConfigError::InvalidHostHeader { value }) => {
            if let Some((_, hv)) = host {
                value::invalid(
                    r,
                    &host_path,
                    hv,
                    &format!("invalid Host header {}", quote(&value)),
                    "a host name without spaces or control characters",
                );
            }
            None
        }
        Err(e) => {
            value::invalid(r, &path, v, &target_problem(&e), EXPECTED);
            None
        }
    }
}

fn tcp(r: &mut Report<'_>, path: &str, v: &Value<'_>, reset: bool) -> Option<CheckSpec> {
    const EXPECTED: &str = "host:port with a port from 1 to 65535, such as \"127.0.0.1:5432\"";
    let addr = value::nonempty_string(r, path, v, EXPECTED)?;
    match TcpProbe::new(addr, ANY_TIMEOUT) {
        Ok(_) => Some(CheckSpec::Tcp {
            addr: addr.to_string(),
            reset,
        }),
        Err(e) => {
            value::invalid(r, path, v, &target_problem(&e), EXPECTED);
            None
        }
    }
}

/// The adapter's reason without the target it repeats (the error shows it as "found").
fn target_problem(e: &ProbeConfigError) -> String {
    match e {
        ProbeConfigError::InvalidUrl { reason, .. } => format!("invalid URL: {reason}"),
        ProbeConfigError::UnsupportedScheme { scheme, .. } => {
            format!("unsupported scheme `{scheme}` (only http:// is supported)")
        }
        ProbeConfigError::MissingHost { .. } => "missing host".to_string(),
        ProbeConfigError::UserInfo { .. } => "credentials in the URL are not supported".to_string(),
        ProbeConfigError::InvalidPort { reason, .. } => format!("invalid port: {reason}"),
        other => other.to_string(),
    }
}

fn exec(r: &mut Report<'_>, path: &str, v: &Value<'_>, cwd: Option<&Path>) -> Option<CheckSpec> {
    let (mut argv, program_span) = value::command(r, path, v)?;
    if let (Some(span), Some(cwd)) = (program_span, cwd) {
        let program = &argv[0];
        let supervisor_path = std::env::var_os("PATH");
        if find_program(program, cwd, supervisor_path.as_deref()).is_none() {
            super::process::program_not_found(r, &format!("{path}[0]"), &span, program, cwd);
            return None;
        }
        if program.contains('/') {
            argv[0] = resolve(program, cwd).to_string_lossy().into_owned();
        }
    }
    Some(CheckSpec::Exec { argv })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError, ErrorKind};

    fn errors(probe: &str) -> Vec<ConfigError> {
        let text = format!("[processes.web]\ncommand = \"true\"\nliveness = {probe}\n");
        match parse(&text, &std::env::temp_dir().join("pc.toml")) {
            Ok(_) => panic!("accepted: {probe}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn reuse_connection_must_be_a_boolean() {
        let probe = r#"{ http = "http://127.0.0.1:80/", reuse_connection = "no" }"#;
        let all = errors(probe);
        assert_eq!(all.len(), 1, "{all:#?}");
        let e = &all[0];
        assert_eq!((e.kind, e.line), (ErrorKind::WrongType, 3), "{e}");
        assert_eq!(e.column, 12 + probe.find("\"no\"").unwrap(), "{e}");
        assert!(e.message.contains("liveness.reuse_connection"), "{e}");
        assert_eq!(e.expected, "true or false");
    }

    #[test]
    fn reuse_connection_goes_only_with_http() {
        let probe = r#"{ tcp = "127.0.0.1:80", reuse_connection = false }"#;
        let all = errors(probe);
        assert_eq!(all.len(), 1, "{all:#?}");
        let e = &all[0];
        assert_eq!((e.kind, e.line), (ErrorKind::Conflict, 3), "{e}");
        assert_eq!(
            e.column,
            12 + probe.find("reuse_connection").unwrap(),
            "{e}"
        );
        assert_eq!(e.expected, "`reuse_connection` only together with `http`");
        assert_eq!(e.found, "`reuse_connection` with `tcp`");

        // With `host` as well, both are reported.
        let all = errors(r#"{ exec = "true", host = "x", reuse_connection = true }"#);
        let found: Vec<_> = all.iter().map(|e| e.found.as_str()).collect();
        assert_eq!(
            found,
            ["`host` with `exec`", "`reuse_connection` with `exec`"]
        );
    }
}
