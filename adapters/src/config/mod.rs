//! The config file of `processcontrol up`: a TOML file turned into validated process
//! specifications, supervisor options and dependency edges.
//!
//! Every mistake is reported at once, each with `file:line:column`, what was expected and what
//! was found: a supervisor's config is often edited on a server, and one round trip per typo
//! is a poor way to learn about five of them. Only a TOML syntax error stops the reading early,
//! because past it the file's structure is guesswork. The keys are the `run` flags' names
//! (`restart`, `backoff.initial`, `breaker.max_restarts`, `stop.signal`, ...) and values are
//! read with the same parsers, so the two never disagree. `docs/config.md` lists every key.

pub mod env_file;
mod error;
mod graph;
mod probe;
mod process;
mod program;
mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use crate::supervise::ProcessSpec;

pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use process::passwd_env;
pub use value::suggest;

use error::Report;
use value::{quote, Table};

/// The default of `supervisor.shutdown_grace`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A loaded, validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    /// Options of the supervisor itself.
    pub supervisor: SupervisorConfig,
    /// The processes, in file order.
    pub processes: Vec<ProcessEntry>,
}

/// The `[supervisor]` table. Relative paths are resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// The control socket; `None`: the daemon's default.
    pub socket: Option<PathBuf>,
    /// Where `logs.file = true` writes `<name>.log`; `None`: no log files.
    pub log_dir: Option<PathBuf>,
    /// Where to serve `/healthz`, `/readyz` and `/metrics` (`http`, or its older name
    /// `metrics`); `None`: no HTTP endpoint.
    pub http: Option<SocketAddr>,
    /// How long a whole shutdown may take before everything still running is killed.
    pub shutdown_grace: Duration,
    /// `up` ends once every process is done, with an exit status that says how they ended.
    pub exit_on_end: bool,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            socket: None,
            log_dir: None,
            http: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            exit_on_end: false,
        }
    }
}

/// One process of the file.
#[derive(Clone, Debug)]
pub struct ProcessEntry {
    /// What to run and how; it passes [`ProcessSpec::validate`].
    pub spec: ProcessSpec,
    /// Processes this one waits for before it starts, in file order.
    pub depends_on: Vec<(String, Condition)>,
    /// Changes exactly when what this entry would run changes: a hash of the resolved spec
    /// and dependencies, so comments, formatting and equivalent spellings (`"60s"` and `"1m"`)
    /// do not count, while a change outside the table that alters the spec (the config file
    /// moving, which moves relative paths; `supervisor.log_dir` for `logs.file = true`) does.
    /// A reload restarts only the processes whose fingerprint changed. Stable within one
    /// build of the supervisor, not across versions.
    pub fingerprint: u64,
}

/// What a dependent waits for before it starts (the group applies it).
pub use crate::supervise::Condition;
use processcontrol_core::{GroupConfig, GroupConfigErrors};

impl Config {
    /// Start layers, as the group machine takes them: every process comes after all it
    /// depends on, processes of one layer do not depend on each other and start together, file
    /// order within a layer; stopping goes backwards, each layer in parallel. An error only
    /// for a configuration built by hand with a cycle or an unknown name (`parse` rejects
    /// those).
    pub fn start_order(&self) -> Result<Vec<Vec<String>>, GroupConfigErrors> {
        let members = self
            .processes
            .iter()
            .map(|p| crate::supervise::member_config(&p.spec, &p.depends_on, p.fingerprint))
            .collect();
        let config = GroupConfig::new(members)?;
        Ok(config
            .layers()
            .into_iter()
            .map(|layer| layer.into_iter().map(str::to_string).collect())
            .collect())
    }

    /// The entry of a process, by name.
    pub fn process(&self, name: &str) -> Option<&ProcessEntry> {
        self.processes.iter().find(|p| p.spec.name == name)
    }
}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            kind: ErrorKind::Io,
            message: "cannot read the config file".to_string(),
            expected: "a readable UTF-8 file".to_string(),
            found: e.to_string(),
        }])),
    }
}

/// Checks the config text `text`, read from `origin`: errors name `origin`, and relative
/// paths in the file are resolved against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let mut r = Report::new(origin, text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            syntax_error(&mut r, e);
        }
        r.finish()?;
    }
    let base_dir = base_dir(origin);
    let root = Table {
        path: "",
        span: 0..0,
        table: doc.get_ref(),
    };
    root.check_keys(&mut r, &["supervisor", "processes"]);
    let supervisor = supervisor(&mut r, &root, &base_dir);

    let mut parsed = Vec::new();
    let mut all_names = Vec::new();
    match root.entry("processes") {
        None => r.error(
            &(0..0),
            ErrorKind::MissingKey,
            "no processes",
            "at least one [processes.<name>] table",
            "none",
        ),
        Some((k, v)) => {
            if let Some(table) = value::table(&mut r, "processes", v, "[processes.<name>] tables") {
                let processes = Table {
                    path: "processes",
                    span: k.span(),
                    table,
                };
                let entries = processes.entries();
                if entries.is_empty() {
                    r.error(
                        &k.span(),
                        ErrorKind::MissingKey,
                        "processes: no processes",
                        "at least one [processes.<name>] table",
                        "none",
                    );
                }
                let globals = process::Globals {
                    base_dir: &base_dir,
                    log_dir: supervisor.log_dir.as_deref(),
                };
                for (k, v) in entries {
                    all_names.push(k.get_ref().as_ref());
                    parsed.extend(process::process(&mut r, &globals, k, v));
                }
            }
        }
    }
    let nodes: Vec<graph::Node<'_>> = parsed
        .iter()
        .map(|p| graph::Node {
            name: &p.spec.name,
            deps: &p.depends_on,
        })
        .collect();
    graph::check(&mut r, &nodes, &all_names);
    r.finish()?;

    let processes = parsed
        .into_iter()
        .map(|p| {
            debug_assert!(p.clean, "a table with errors got past finish()");
            let depends_on: Vec<(String, Condition)> = p
                .depends_on
                .into_iter()
                .map(|d| (d.name, d.condition))
                .collect();
            let fingerprint = fingerprint(&p.spec, &depends_on);
            ProcessEntry {
                spec: p.spec,
                depends_on,
                fingerprint,
            }
        })
        .collect();
    Ok(Config {
        supervisor,
        processes,
    })
}

/// The directory relative paths start from, made absolute so that specs do not depend on the
/// supervisor's own working directory.
fn base_dir(origin: &Path) -> PathBuf {
    let dir = match origin.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// A TOML syntax error, split into what the parser wanted and what is at that place.
fn syntax_error(r: &mut Report<'_>, e: &toml::de::Error) {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
    let (what, expected) = match message.split_once(", expected ") {
        Some((what, expected)) => (what.to_string(), expected.to_string()),
        None => (message.to_string(), "valid TOML".to_string()),
    };
    let text = r.text();
    let at = |i: usize| text.get(i..).and_then(|s| s.chars().next());
    let found = match text.get(span.clone()).filter(|s| !s.is_empty()) {
        Some(s) => quote(s),
        None => match at(span.start) {
            None => "end of file".to_string(),
            Some('\n' | '\r') => "end of line".to_string(),
            Some(c) => quote(&c.to_string()),
        },
    };
    r.error(
        &span,
        ErrorKind::Syntax,
        format!("invalid TOML: {what}"),
        expected,
        found,
    );
}

fn supervisor(r: &mut Report<'_>, root: &Table<'_, '_>, base_dir: &Path) -> SupervisorConfig {
    let mut config = SupervisorConfig::default();
    let Some((k, v)) = root.entry("supervisor") else {
        return config;
    };
    let Some(table) = value::table(r, "supervisor", v, "a [supervisor] table") else {
        return config;
    };
    let t = Table {
        path: "supervisor",
        span: k.span(),
        table,
    };
    t.check_keys(
        r,
        &[
            "socket",
            "log_dir",
            "http",
            "metrics",
            "shutdown_grace",
            "exit_on_end",
        ],
    );
    let path = |r: &mut Report<'_>, key: &str| {
        let v = t.get(key)?;
        let s = value::nonempty_string(r, &t.path_of(key), v, "a path")?;
        Some(base_dir.join(s))
    };
    config.socket = path(r, "socket");
    config.log_dir = path(r, "log_dir");
    if let (Some(_), Some(v)) = (t.get("http"), t.get("metrics")) {
        value::invalid(
            r,
            &t.path_of("metrics"),
            v,
            "given together with supervisor.http, of which it is the older name",
            "only one of `http` and `metrics`",
        );
    }
    for key in ["http", "metrics"] {
        let Some(v) = t.get(key) else { continue };
        let p = t.path_of(key);
        const EXPECTED: &str =
            "a port, or an IP address and a port from 1 to 65535, such as \"127.0.0.1:9100\"";
        if let Some(s) = value::nonempty_string(r, &p, v, EXPECTED) {
            match crate::http::parse_addr(s) {
                Ok(addr) => config.http = config.http.or(Some(addr)),
                Err(why) => value::invalid(r, &p, v, why, EXPECTED),
            }
        }
    }
    if let Some(v) = t.get("exit_on_end") {
        if let Some(b) = value::boolean(r, &t.path_of("exit_on_end"), v) {
            config.exit_on_end = b;
        }
    }
    if let Some(v) = t.get("shutdown_grace") {
        if let Some(d) = value::duration(r, &t.path_of("shutdown_grace"), v) {
            config.shutdown_grace = d;
        }
    }
    config
}

/// FNV-1a of the entry's debug form: deterministic (unlike `DefaultHasher`, whose algorithm
/// may change), and the debug form covers every field of the spec.
fn fingerprint(spec: &ProcessSpec, depends_on: &[(String, Condition)]) -> u64 {
    let text = format!("{spec:?}\n{depends_on:?}");
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
