//! One `[processes.<name>]` table: read into a [`ProcessSpec`] and its dependencies. Each key
//! is read on its own, a bad one is reported and replaced by its default, so one pass finds
//! every mistake; the spec only leaves this module if nothing was wrong.

use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use processcontrol_core::units::format_duration;
use processcontrol_core::{
    BackoffPolicy, BreakerPolicy, Cooldown, ExitCodes, LimitAction, LimitRule, LimitsPolicy,
    Resource, RestartPolicy, Signal, StopPolicy,
};
use toml::de::DeValue;

use crate::process::{EnvBase, Identity};
use crate::supervise::{CgroupSpec, LogSpec, NotifySpec, ProcessSpec};

use super::error::{ErrorKind, Report};
use super::probe::probe;
use super::program::find_program;
use super::value::{self, join, quote, Key, Table, Value};
use super::Condition;

/// The keys of a process table.
pub(crate) const KEYS: [&str; 20] = [
    "command",
    "env",
    "env_file",
    "clear_env",
    "cwd",
    "user",
    "group",
    "restart",
    "exit_codes",
    "backoff",
    "breaker",
    "stop",
    "liveness",
    "readiness",
    "startup",
    "limits",
    "depends_on",
    "logs",
    "cgroup",
    "notify",
];

/// The longest process name: it ends up in file names and status tables.
const MAX_NAME: usize = 64;

/// What the file says outside a process table that its spec depends on.
pub(crate) struct Globals<'a> {
    /// The config file's directory: relative paths are resolved against it.
    pub(crate) base_dir: &'a Path,
    /// `supervisor.log_dir`, needed by `logs.file = true`.
    pub(crate) log_dir: Option<&'a Path>,
}

/// One dependency edge as written, with the position of the name for graph errors.
pub(crate) struct Dependency {
    pub(crate) name: String,
    pub(crate) condition: Condition,
    pub(crate) span: Range<usize>,
}

/// A process table as read.
pub(crate) struct Parsed {
    pub(crate) spec: ProcessSpec,
    pub(crate) depends_on: Vec<Dependency>,
    /// Nothing in the table was wrong.
    pub(crate) clean: bool,
}

/// Whether a process name is acceptable, and why not.
pub(crate) fn check_name(r: &mut Report<'_>, name: &str, span: &Range<usize>) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if first_ok && rest_ok && name.len() <= MAX_NAME {
        return true;
    }
    r.error(
        span,
        ErrorKind::InvalidValue,
        format!("{}: invalid process name", join("processes", name)),
        format!(
            "a name of at most {MAX_NAME} letters, digits, `_`, `-` and `.` that starts with a \
             letter, digit or `_`"
        ),
        quote(name),
    );
    false
}

/// Reads one process table. `None` when it is not even a table.
pub(crate) fn process(
    r: &mut Report<'_>,
    g: &Globals<'_>,
    key: &Key<'_>,
    v: &Value<'_>,
) -> Option<Parsed> {
    let before = r.count();
    let name = key.get_ref().as_ref();
    let span = key.span();
    check_name(r, name, &span);
    let path = join("processes", name);
    let table = value::table(
        r,
        &path,
        v,
        "a process table such as [processes.web] with a `command`",
    )?;
    let t = Table {
        path: &path,
        span: span.clone(),
        table,
    };
    t.check_keys(r, &KEYS);

    let cwd = cwd(r, g, &t);
    let cwd_ok = cwd.is_dir();
    let user = identity(r, &t, "user");
    let group = identity(r, &t, "group");
    // The account's variables, then the files', then `env`: a later one wins.
    let mut vars = account_env(r, &t, user.as_ref());
    vars.extend(env_files(r, g, &t));
    vars.extend(env(r, &t));
    let env = vars;
    let clear_env = t
        .get("clear_env")
        .and_then(|v| value::boolean(r, &t.path_of("clear_env"), v))
        .unwrap_or(false);

    let argv = match t.get("command") {
        Some(v) => value::command(r, &t.path_of("command"), v),
        None => {
            t.missing(
                r,
                "command",
                "command = [\"program\", \"arg\", ...] or command = \"shell command\"",
            );
            None
        }
    };
    if let Some((argv, Some(program_span))) = &argv {
        if cwd_ok {
            // The spawner looks a bare name up in the child's PATH: ours, unless overridden.
            let path_var = env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| OsString::from(v))
                .or_else(|| {
                    if clear_env {
                        Some(OsString::from("/bin:/usr/bin"))
                    } else {
                        std::env::var_os("PATH")
                    }
                });
            if find_program(&argv[0], &cwd, path_var.as_deref()).is_none() {
                program_not_found(
                    r,
                    &format!("{}[0]", t.path_of("command")),
                    program_span,
                    &argv[0],
                    &cwd,
                );
            }
        }
    }

    let mut spec = ProcessSpec::new(
        name,
        argv.map(|(a, _)| a).unwrap_or_else(|| vec![String::new()]),
    );
    spec.command.cwd = Some(cwd.clone());
    spec.command.env = env
        .into_iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    if clear_env {
        spec.command.env_base = EnvBase::Clear;
    }
    spec.command.user = user;
    spec.command.group = group;

    let policy = &mut spec.policy;
    if let Some(v) = t.get("restart") {
        let choices = [
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
        ];
        if let Some(p) = value::choice(r, &t.path_of("restart"), v, "restart policy", &choices) {
            policy.restart = p;
        }
    }
    policy.exit_codes = exit_codes(r, &t);
    policy.backoff = backoff(r, &t);
    policy.breaker = breaker(r, &t);
    policy.stop = stop(r, &t);
    let probe_cwd = cwd_ok.then_some(cwd.as_path());
    for role in ["liveness", "readiness", "startup"] {
        let Some((k, v)) = t.entry(role) else {
            continue;
        };
        let p = probe(r, &t.path_of(role), k, v, probe_cwd);
        match role {
            "liveness" => spec.probes.liveness = p,
            "readiness" => spec.probes.readiness = p,
            _ => spec.probes.startup = p,
        }
    }
    spec.policy.limits = limits(r, &t);
    spec.logs = logs(r, g, &t);
    spec.cgroup = cgroup(r, &t);
    spec.notify = notify(r, &t);
    let depends_on = depends_on(r, &t);

    let clean = r.count() == before;
    if clean {
        // A safety net: everything validate() checks should have been reported above, with a
        // more precise position.
        if let Err(e) = spec.validate() {
            for problem in e.problems {
                r.error(
                    &span,
                    ErrorKind::Spec,
                    format!("{path}: {problem}"),
                    "a consistent process specification",
                    problem.to_string(),
                );
            }
        }
    }
    Some(Parsed {
        spec,
        depends_on,
        clean: r.count() == before,
    })
}

/// Reports a program that is missing or not executable, saying which one was looked for.
pub(crate) fn program_not_found(
    r: &mut Report<'_>,
    path: &str,
    span: &Range<usize>,
    program: &str,
    cwd: &Path,
) {
    let (expected, found) = if program.contains('/') {
        let full = super::program::resolve(program, cwd);
        let found = match std::fs::metadata(&full) {
            Ok(m) if m.is_dir() => format!("a directory at {}", full.display()),
            Ok(_) => format!("a file without execute permission at {}", full.display()),
            Err(_) => format!("nothing at {}", full.display()),
        };
        (format!("an executable file at {}", full.display()), found)
    } else {
        (
            format!("an executable named `{program}` in a PATH directory"),
            "none in PATH".to_string(),
        )
    };
    r.error(
        span,
        ErrorKind::ProgramNotFound,
        format!("{path}: program `{program}` not found or not executable"),
        expected,
        found,
    );
}

fn cwd(r: &mut Report<'_>, g: &Globals<'_>, t: &Table<'_, '_>) -> PathBuf {
    let Some(v) = t.get("cwd") else {
        let dir = g.base_dir.to_path_buf();
        if !dir.is_dir() {
            r.error(
                &t.span,
                ErrorKind::InvalidValue,
                format!("{}: the config file's directory is the working directory, but it is not a directory", t.path),
                "an existing directory (or set `cwd`)",
                dir.display().to_string(),
            );
        }
        return dir;
    };
    let path = t.path_of("cwd");
    let Some(s) = value::nonempty_string(r, &path, v, "a directory path") else {
        return g.base_dir.to_path_buf();
    };
    let dir = g.base_dir.join(s);
    if !dir.is_dir() {
        let found = if dir.exists() {
            format!("{} is not a directory", dir.display())
        } else {
            format!("{} does not exist", dir.display())
        };
        r.error(
            &v.span(),
            ErrorKind::InvalidValue,
            format!("{path}: not a directory"),
            "an existing directory (relative paths start at the config file's directory)",
            found,
        );
    }
    dir
}

fn env(r: &mut Report<'_>, t: &Table<'_, '_>) -> Vec<(String, String)> {
    let Some(v) = t.get("env") else {
        return Vec::new();
    };
    let path = t.path_of("env");
    let Some(table) = value::table(
        r,
        &path,
        v,
        "a table of strings such as { RUST_LOG = \"info\" }",
    ) else {
        return Vec::new();
    };
    let env = Table {
        path: &path,
        span: v.span(),
        table,
    };
    let mut out = Vec::new();
    for (k, v) in env.entries() {
        let key = k.get_ref().as_ref();
        let var = env.path_of(key);
        if key.is_empty() || key.contains(['=', '\0']) {
            r.error(
                &k.span(),
                ErrorKind::InvalidValue,
                format!("{var}: invalid variable name"),
                "a non-empty name without `=` or NUL",
                quote(key),
            );
            continue;
        }
        let Some(s) = value::string(r, &var, v) else {
            continue;
        };
        if s.contains('\0') {
            value::invalid(
                r,
                &var,
                v,
                "contains a NUL character",
                "a string without NUL",
            );
            continue;
        }
        out.push((key.to_string(), s.to_string()));
    }
    out
}

/// `user` or `group`: a name that must exist on this system, or a numeric id (which may
/// have no entry, as in containers).
fn identity(r: &mut Report<'_>, t: &Table<'_, '_>, key: &str) -> Option<Identity> {
    let v = t.get(key)?;
    let path = t.path_of(key);
    let expected = format!("a {key} name or a numeric id");
    // u32::MAX is (uid_t)-1, which set*id calls read as "leave unchanged".
    let max = i128::from(u32::MAX - 1);
    match v.get_ref() {
        DeValue::Integer(_) => value::integer(r, &path, v, 0, max)
            .and_then(|n| u32::try_from(n).ok())
            .map(Identity::Id),
        DeValue::String(s) if s.is_empty() || s.contains('\0') => {
            value::invalid(r, &path, v, &format!("invalid {key} name"), expected);
            None
        }
        DeValue::String(s) => match s.parse::<u32>() {
            Ok(id) if id == u32::MAX => {
                value::invalid(r, &path, v, &format!("{key} id out of range"), expected);
                None
            }
            Ok(id) => Some(Identity::Id(id)),
            Err(_) => {
                let known = if key == "user" {
                    nix::unistd::User::from_name(s).map(|u| u.is_some())
                } else {
                    nix::unistd::Group::from_name(s).map(|g| g.is_some())
                };
                match known {
                    Ok(true) => Some(Identity::Name(s.to_string())),
                    Ok(false) => {
                        let db = if key == "user" {
                            "/etc/passwd"
                        } else {
                            "/etc/group"
                        };
                        value::invalid(
                            r,
                            &path,
                            v,
                            &format!("unknown {key}"),
                            format!("a {key} of this system (see {db}) or a numeric id"),
                        );
                        None
                    }
                    Err(e) => {
                        value::invalid(
                            r,
                            &path,
                            v,
                            &format!("cannot look the {key} up: {e}"),
                            expected,
                        );
                        None
                    }
                }
            }
        },
        _ => {
            value::wrong_type(r, &path, v, &expected);
            None
        }
    }
}

/// HOME, USER, LOGNAME and SHELL of the account a process runs as, as login(1) and systemd's
/// `User=` set them: without them it would get the supervisor's (root's) HOME. None for an
/// id without a passwd entry.
pub fn passwd_env(user: &Identity) -> Result<Vec<(String, String)>, nix::Error> {
    let found = match user {
        Identity::Name(name) => nix::unistd::User::from_name(name),
        Identity::Id(id) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*id)),
    }?;
    Ok(found
        .map(|u| {
            vec![
                ("HOME".into(), u.dir.to_string_lossy().into_owned()),
                ("USER".into(), u.name.clone()),
                ("LOGNAME".into(), u.name),
                ("SHELL".into(), u.shell.to_string_lossy().into_owned()),
            ]
        })
        .unwrap_or_default())
}

fn account_env(
    r: &mut Report<'_>,
    t: &Table<'_, '_>,
    user: Option<&Identity>,
) -> Vec<(String, String)> {
    let Some(user) = user else {
        return Vec::new();
    };
    match passwd_env(user) {
        Ok(vars) => vars,
        Err(e) => {
            if let Some(v) = t.get("user") {
                value::invalid(
                    r,
                    &t.path_of("user"),
                    v,
                    &format!("cannot look the user up: {e}"),
                    "a user of this system",
                );
            }
            Vec::new()
        }
    }
}

/// `env_file`: one path or a list, relative to the config file's directory, read in order.
fn env_files(r: &mut Report<'_>, g: &Globals<'_>, t: &Table<'_, '_>) -> Vec<(String, String)> {
    let Some(v) = t.get("env_file") else {
        return Vec::new();
    };
    let path = t.path_of("env_file");
    let files: Vec<(String, Range<usize>)> = match v.get_ref() {
        DeValue::String(s) => vec![(s.to_string(), v.span())],
        DeValue::Array(_) => value::strings(r, &path, v)
            .unwrap_or_default()
            .into_iter()
            .map(|(s, span)| (s.to_string(), span))
            .collect(),
        _ => {
            value::wrong_type(r, &path, v, "a path or a list of paths");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (file, span) in files {
        let full = g.base_dir.join(&file);
        let text = match std::fs::read_to_string(&full) {
            Ok(text) => text,
            Err(e) => {
                r.error(
                    &span,
                    ErrorKind::InvalidValue,
                    format!("{path}: cannot read {}: {e}", full.display()),
                    "a readable file of KEY=VALUE lines (relative paths start at the config file's directory)",
                    quote(&file),
                );
                continue;
            }
        };
        match super::env_file::parse(&text) {
            Ok(vars) => out.extend(vars),
            Err((line, why)) => r.error(
                &span,
                ErrorKind::InvalidValue,
                format!("{path}: {}:{line}: {why}", full.display()),
                "KEY=VALUE lines, # comments, values optionally quoted",
                quote(&file),
            ),
        }
    }
    out
}

/// A sub-table of a process, checked for unknown keys; `None` when absent or not a table.
fn sub<'a, 'i>(
    r: &mut Report<'_>,
    t: &Table<'a, 'i>,
    key: &str,
    path: &'a str,
    keys: &[&str],
    example: &str,
) -> Option<Table<'a, 'i>> {
    let (k, v) = t.entry(key)?;
    let table = value::table(r, path, v, example)?;
    let sub = Table {
        path,
        span: k.span(),
        table,
    };
    sub.check_keys(r, keys);
    Some(sub)
}

fn exit_codes(r: &mut Report<'_>, t: &Table<'_, '_>) -> ExitCodes {
    let mut codes = ExitCodes::default();
    let path = t.path_of("exit_codes");
    let Some(s) = sub(
        r,
        t,
        "exit_codes",
        &path,
        &["success", "prevent_restart", "force_restart"],
        "a table such as { success = [0, 3] }",
    ) else {
        return codes;
    };
    for (key, slot) in [
        ("success", &mut codes.success),
        ("prevent_restart", &mut codes.prevent_restart),
        ("force_restart", &mut codes.force_restart),
    ] {
        let Some(v) = s.get(key) else { continue };
        let p = s.path_of(key);
        let DeValue::Array(items) = v.get_ref() else {
            value::wrong_type(r, &p, v, "an array of exit codes from 0 to 255");
            continue;
        };
        *slot = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| value::integer(r, &format!("{p}[{i}]"), item, 0, 255))
            .filter_map(|n| i32::try_from(n).ok())
            .collect();
    }
    codes
}

fn backoff(r: &mut Report<'_>, t: &Table<'_, '_>) -> BackoffPolicy {
    let mut b = BackoffPolicy::default();
    let path = t.path_of("backoff");
    let Some(s) = sub(
        r,
        t,
        "backoff",
        &path,
        &["initial", "max", "factor", "jitter", "reset_after"],
        "a table such as { initial = \"100ms\", max = \"30s\" }",
    ) else {
        return b;
    };
    let mut initial_ok = true;
    let mut max_ok = true;
    if let Some(v) = s.get("initial") {
        match value::duration(r, &s.path_of("initial"), v) {
            Some(d) => b.initial = d,
            None => initial_ok = false,
        }
    }
    if let Some(v) = s.get("max") {
        match value::positive_duration(r, &s.path_of("max"), v) {
            Some(d) => b.max = d,
            None => max_ok = false,
        }
    }
    if let Some(v) = s.get("factor") {
        let p = s.path_of("factor");
        match value::number(r, &p, v) {
            Some(f) if f >= 1.0 => b.factor = f,
            Some(_) => value::invalid(r, &p, v, "must be at least 1", "a number >= 1"),
            None => {}
        }
    }
    if let Some(v) = s.get("jitter") {
        let p = s.path_of("jitter");
        match value::number(r, &p, v) {
            Some(f) if (0.0..=1.0).contains(&f) => b.jitter = f,
            Some(_) => value::invalid(
                r,
                &p,
                v,
                "must be between 0 and 1",
                "a fraction from 0 to 1",
            ),
            None => {}
        }
    }
    if let Some(v) = s.get("reset_after") {
        if let Some(d) = value::duration(r, &s.path_of("reset_after"), v) {
            b.reset_after = d;
        }
    }
    if initial_ok && max_ok && b.initial > b.max {
        let key = if s.get("initial").is_some() {
            "initial"
        } else {
            "max"
        };
        let at = s.get(key).map_or(s.span.clone(), |v| v.span());
        r.error(
            &at,
            ErrorKind::InvalidValue,
            format!(
                "{}: backoff.initial ({}) is longer than backoff.max ({})",
                s.path_of(key),
                format_duration(b.initial),
                format_duration(b.max)
            ),
            "backoff.initial <= backoff.max",
            format!(
                "initial {} > max {}",
                format_duration(b.initial),
                format_duration(b.max)
            ),
        );
    }
    b
}

fn breaker(r: &mut Report<'_>, t: &Table<'_, '_>) -> BreakerPolicy {
    let mut b = BreakerPolicy::default();
    let path = t.path_of("breaker");
    let Some(s) = sub(
        r,
        t,
        "breaker",
        &path,
        &["max_restarts", "window", "cooldown", "max_cooldown"],
        "a table such as { max_restarts = 5, window = \"60s\", cooldown = \"5m\" }",
    ) else {
        return b;
    };
    if let Some(v) = s.get("max_restarts") {
        if let Some(n) = value::u32_at_least(r, &s.path_of("max_restarts"), v, 0) {
            b.max_restarts = n;
        }
    }
    if let Some(v) = s.get("window") {
        if let Some(d) = value::positive_duration(r, &s.path_of("window"), v) {
            b.window = d;
        }
    }
    if let Some(v) = s.get("cooldown") {
        let p = s.path_of("cooldown");
        let expected = "a duration string such as \"5m\", or \"never\"";
        match v.get_ref() {
            DeValue::String(text) => match text.parse::<Cooldown>() {
                Ok(c) => b.cooldown = c,
                Err(_) => value::invalid(r, &p, v, "invalid cooldown", expected),
            },
            _ => value::wrong_type(r, &p, v, expected),
        }
    }
    // Like `run`: the cap defaults to an hour, or to the cooldown itself if that is longer.
    b.max_cooldown = match b.cooldown {
        Cooldown::After(d) => d.max(Duration::from_secs(3600)),
        Cooldown::Never => Duration::from_secs(3600),
    };
    if let Some(v) = s.get("max_cooldown") {
        let p = s.path_of("max_cooldown");
        if let Some(d) = value::positive_duration(r, &p, v) {
            b.max_cooldown = d;
            if let Cooldown::After(c) = b.cooldown {
                if c > d {
                    value::invalid(
                        r,
                        &p,
                        v,
                        &format!("shorter than breaker.cooldown ({})", format_duration(c)),
                        "a duration at least as long as breaker.cooldown",
                    );
                }
            }
        }
    }
    b
}

fn stop(r: &mut Report<'_>, t: &Table<'_, '_>) -> StopPolicy {
    let mut stop = StopPolicy::default();
    let path = t.path_of("stop");
    let Some(s) = sub(
        r,
        t,
        "stop",
        &path,
        &["signal", "grace"],
        "a table such as { signal = \"SIGTERM\", grace = \"10s\" }",
    ) else {
        return stop;
    };
    if let Some(v) = s.get("signal") {
        let p = s.path_of("signal");
        let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        let expected = format!("one of {}", value::list(&names));
        match v.get_ref() {
            DeValue::String(text) => match text.parse::<Signal>() {
                Ok(sig) => stop.signal = sig,
                Err(_) => value::invalid(r, &p, v, "unknown signal", expected),
            },
            _ => value::wrong_type(r, &p, v, &expected),
        }
    }
    if let Some(v) = s.get("grace") {
        if let Some(d) = value::duration(r, &s.path_of("grace"), v) {
            stop.grace = d;
        }
    }
    stop
}

fn limits(r: &mut Report<'_>, t: &Table<'_, '_>) -> LimitsPolicy {
    let mut limits = LimitsPolicy::default();
    let path = t.path_of("limits");
    let names: Vec<&str> = Resource::ALL.iter().map(|r| r.name()).collect();
    let mut keys = names.clone();
    keys.push("grace");
    let Some(s) = sub(
        r,
        t,
        "limits",
        &path,
        &keys,
        "a table such as { memory = { max = \"512MiB\" } }",
    ) else {
        return limits;
    };
    if let Some(v) = s.get("grace") {
        if let Some(d) = value::duration(r, &s.path_of("grace"), v) {
            limits.grace = d;
        }
    }
    for (k, _) in s.entries() {
        let Some(resource) = Resource::ALL
            .into_iter()
            .find(|res| res.name() == k.get_ref().as_ref())
        else {
            continue;
        };
        let p = s.path_of(resource.name());
        let Some(rule) = sub(
            r,
            &s,
            resource.name(),
            &p,
            &["max", "for", "action"],
            "a table such as { max = \"512MiB\", for = \"30s\", action = \"restart\" }",
        ) else {
            continue;
        };
        if let Some(rule) = limit_rule(r, &rule, resource) {
            limits.rules.push(rule);
        }
    }
    limits
}

fn limit_rule(r: &mut Report<'_>, t: &Table<'_, '_>, resource: Resource) -> Option<LimitRule> {
    let before = r.count();
    let expected = match resource {
        Resource::Memory => value::SIZE.to_string(),
        Resource::Cpu => "a percentage of one core >= 1, such as 150 or \"150%\"".to_string(),
        _ => "an integer >= 1".to_string(),
    };
    let max = match t.get("max") {
        None => {
            t.missing(r, "max", &expected);
            None
        }
        Some(v) => {
            let p = t.path_of("max");
            match (resource, v.get_ref()) {
                (Resource::Memory, _) => value::positive_size(r, &p, v),
                (Resource::Cpu, DeValue::String(s)) => {
                    match s.trim().strip_suffix('%').map(|n| n.trim().parse::<u64>()) {
                        Some(Ok(n)) if n >= 1 => Some(n),
                        _ => {
                            value::invalid(r, &p, v, "invalid CPU percentage", expected);
                            None
                        }
                    }
                }
                _ => value::u64_at_least(r, &p, v, 1),
            }
        }
    };
    let sustain = t
        .get("for")
        .and_then(|v| value::duration(r, &t.path_of("for"), v))
        .unwrap_or(Duration::ZERO);
    let action = match t.get("action") {
        None => LimitAction::Restart,
        Some(v) => {
            let choices = [
                ("restart", LimitAction::Restart),
                ("graceful-shutdown", LimitAction::GracefulShutdown),
                ("kill", LimitAction::Kill),
                ("warn", LimitAction::Warn),
            ];
            value::choice(r, &t.path_of("action"), v, "limit action", &choices)
                .unwrap_or(LimitAction::Restart)
        }
    };
    let max = max?;
    (r.count() == before).then_some(LimitRule {
        resource,
        max,
        sustain,
        action,
    })
}

fn logs(r: &mut Report<'_>, g: &Globals<'_>, t: &Table<'_, '_>) -> LogSpec {
    let mut logs = LogSpec::default();
    let path = t.path_of("logs");
    let Some(s) = sub(
        r,
        t,
        "logs",
        &path,
        &["lines", "bytes", "file", "max_file_bytes", "keep"],
        "a table such as { lines = 1000, file = true }",
    ) else {
        return logs;
    };
    if let Some(v) = s.get("lines") {
        if let Some(n) = value::u64_at_least(r, &s.path_of("lines"), v, 1) {
            logs.ring_lines = usize::try_from(n).unwrap_or(usize::MAX);
        }
    }
    if let Some(v) = s.get("bytes") {
        if let Some(n) = value::positive_size(r, &s.path_of("bytes"), v) {
            logs.ring_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
    }
    if let Some(v) = s.get("max_file_bytes") {
        if let Some(n) = value::positive_size(r, &s.path_of("max_file_bytes"), v) {
            logs.file_max_bytes = n;
        }
    }
    if let Some(v) = s.get("keep") {
        if let Some(n) = value::u64_at_least(r, &s.path_of("keep"), v, 1) {
            logs.file_keep = usize::try_from(n).unwrap_or(usize::MAX);
        }
    }
    if let Some(v) = s.get("file") {
        let p = s.path_of("file");
        if value::boolean(r, &p, v) == Some(true) {
            match g.log_dir {
                Some(dir) => logs.dir = Some(dir.to_path_buf()),
                None => r.error(
                    &v.span(),
                    ErrorKind::MissingKey,
                    format!("{p}: log files need a directory"),
                    "supervisor.log_dir to be set when logs.file = true",
                    "no supervisor.log_dir",
                ),
            }
        }
    }
    logs
}

fn cgroup(r: &mut Report<'_>, t: &Table<'_, '_>) -> Option<CgroupSpec> {
    let (k, v) = t.entry("cgroup")?;
    let path = t.path_of("cgroup");
    match v.get_ref() {
        DeValue::Boolean(on) => on.then(CgroupSpec::default),
        DeValue::Table(table) => {
            let s = Table {
                path: &path,
                span: k.span(),
                table,
            };
            s.check_keys(r, &["memory_max"]);
            let memory_max = s
                .get("memory_max")
                .and_then(|v| value::positive_size(r, &s.path_of("memory_max"), v));
            Some(CgroupSpec { memory_max })
        }
        _ => {
            value::wrong_type(
                r,
                &path,
                v,
                "true, false or a table such as { memory_max = \"1GiB\" }",
            );
            None
        }
    }
}

/// `notify = true`, or `notify = { watchdog = "10s" }`: serve a NOTIFY_SOCKET (systemd's
/// `Type=notify`), with an optional watchdog.
fn notify(r: &mut Report<'_>, t: &Table<'_, '_>) -> Option<NotifySpec> {
    let (k, v) = t.entry("notify")?;
    let path = t.path_of("notify");
    match v.get_ref() {
        DeValue::Boolean(on) => on.then(NotifySpec::default),
        DeValue::Table(table) => {
            let s = Table {
                path: &path,
                span: k.span(),
                table,
            };
            s.check_keys(r, &["watchdog"]);
            let watchdog = s
                .get("watchdog")
                .and_then(|v| value::positive_duration(r, &s.path_of("watchdog"), v));
            Some(NotifySpec { watchdog })
        }
        _ => {
            value::wrong_type(
                r,
                &path,
                v,
                "true, false or a table such as { watchdog = \"10s\" }",
            );
            None
        }
    }
}

fn depends_on(r: &mut Report<'_>, t: &Table<'_, '_>) -> Vec<Dependency> {
    let Some(v) = t.get("depends_on") else {
        return Vec::new();
    };
    let path = t.path_of("depends_on");
    let choices = [
        ("started", Condition::Started),
        ("healthy", Condition::Healthy),
        ("completed", Condition::Completed),
    ];
    let mut out: Vec<Dependency> = Vec::new();
    match v.get_ref() {
        DeValue::Table(table) => {
            let deps = Table {
                path: &path,
                span: v.span(),
                table,
            };
            for (k, cv) in deps.entries() {
                let name = k.get_ref().as_ref();
                if let Some(condition) =
                    value::choice(r, &deps.path_of(name), cv, "condition", &choices)
                {
                    out.push(Dependency {
                        name: name.to_string(),
                        condition,
                        span: k.span(),
                    });
                }
            }
        }
        DeValue::Array(_) => {
            for (name, span) in value::strings(r, &path, v).unwrap_or_default() {
                if out.iter().any(|d| d.name == name) {
                    r.error(
                        &span,
                        ErrorKind::InvalidValue,
                        format!("{path}: `{name}` is listed twice"),
                        "each process at most once",
                        quote(name),
                    );
                    continue;
                }
                out.push(Dependency {
                    name: name.to_string(),
                    condition: Condition::Started,
                    span,
                });
            }
        }
        _ => value::wrong_type(
            r,
            &path,
            v,
            "a table such as { db = \"healthy\" } or an array of process names",
        ),
    }
    out
}
