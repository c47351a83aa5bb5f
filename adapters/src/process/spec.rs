//! What to start: plain data, decided elsewhere and carried out by the spawner.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::cgroup::InstanceCgroup;

/// Where the child's environment starts from, before [`ProcessSpec::env`] is applied.
///
/// Services usually inherit the supervisor's environment (PATH, locale); a clean one is for
/// programs that must not see the supervisor's secrets or configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnvBase {
    /// Start from the supervisor's own environment, then apply the overrides.
    #[default]
    Inherit,
    /// Start from an empty environment: the child sees only the given variables (and the
    /// instance marker, which is always added so escaped descendants can be found).
    Clear,
}

/// A user or group, by name or by numeric id.
///
/// Configuration files name accounts either way; a numeric id also works for accounts that
/// have no entry in the user or group database (common in containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Looked up in the user or group database when the process is spawned.
    Name(String),
    /// Used as is; the database is consulted only for the primary and supplementary groups.
    Id(u32),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Name(name) => f.write_str(name),
            Identity::Id(id) => write!(f, "#{id}"),
        }
    }
}

/// What happens to one output stream of the child.
///
/// Services are captured line by line by the log module; a probe command's output is usually
/// not wanted, and an unread pipe would eventually block its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// A pipe whose read end is handed back in the [`Child`](super::Child).
    #[default]
    Pipe,
    /// `/dev/null`.
    Null,
    /// For stderr: wherever stdout goes (`2>&1`, whatever stdout's mode), so the two keep
    /// their order in one pipe. For stdout it is the same as `Null`.
    Stdout,
    /// The supervisor's own descriptor (its stdout for stdout, its stderr for stderr): the
    /// child writes straight to it, so nothing is copied, reordered or lost, and a slow reader
    /// slows the child (as if it ran without a supervisor) but never the supervisor.
    Inherit,
    /// The supervisor's own stderr, for either stream: like [`OutputMode::Inherit`], where the
    /// supervisor's stdout carries something else (`run --events -`).
    InheritStderr,
}

/// Everything needed to start one instance of a program.
///
/// Plain data so that the core's configuration can be mapped to it without this module
/// knowing the core's types. Standard input is always `/dev/null`: a supervised service has
/// no terminal and must never block reading one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program to execute: a path, or a bare name searched in the child's `PATH`.
    pub program: OsString,
    /// Arguments after the program name (`argv[1..]`).
    pub args: Vec<OsString>,
    /// Whether the environment starts from the supervisor's or from nothing.
    pub env_base: EnvBase,
    /// Variables set on top of [`ProcessSpec::env_base`], later entries winning.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; `None` keeps the supervisor's.
    pub cwd: Option<PathBuf>,
    /// User to run as; only honoured when the supervisor runs as root.
    pub user: Option<Identity>,
    /// Group to run as; only honoured when the supervisor runs as root. Defaults to the
    /// user's primary group when only `user` is given.
    pub group: Option<Identity>,
    /// Standard output.
    pub stdout: OutputMode,
    /// Standard error.
    pub stderr: OutputMode,
    /// The cgroup the child joins before `exec`, so the instance can be limited, its OOM
    /// kills seen, and killed as a whole. `None`: process group and marker only.
    pub cgroup: Option<InstanceCgroup>,
}

impl ProcessSpec {
    /// Starts a spec with the defaults a service usually wants: inherited environment,
    /// supervisor's cwd and identity, both outputs piped.
    pub fn new(program: impl Into<OsString>) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env_base: EnvBase::Inherit,
            env: Vec::new(),
            cwd: None,
            user: None,
            group: None,
            stdout: OutputMode::Pipe,
            stderr: OutputMode::Pipe,
            cgroup: None,
        }
    }

    /// Appends one argument, so specs read like command lines in tests and examples.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments, for the same reason as [`ProcessSpec::arg`].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable on top of the base environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment, so only the variables given with
    /// [`ProcessSpec::env`] reach the child.
    pub fn clear_env(mut self) -> Self {
        self.env_base = EnvBase::Clear;
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Sets the user to run as (root supervisors only).
    pub fn user(mut self, user: Identity) -> Self {
        self.user = Some(user);
        self
    }

    /// Sets the group to run as (root supervisors only).
    pub fn group(mut self, group: Identity) -> Self {
        self.group = Some(group);
        self
    }

    /// Chooses what happens to standard output.
    pub fn stdout(mut self, mode: OutputMode) -> Self {
        self.stdout = mode;
        self
    }

    /// Chooses what happens to standard error.
    pub fn stderr(mut self, mode: OutputMode) -> Self {
        self.stderr = mode;
        self
    }

    /// Places the instance in `cgroup` (created beforehand, e.g. by
    /// [`CgroupParent::create`](crate::cgroup::CgroupParent::create)).
    pub fn cgroup(mut self, cgroup: InstanceCgroup) -> Self {
        self.cgroup = Some(cgroup);
        self
    }
}
