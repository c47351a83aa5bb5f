//! What `status NAME` shows of a process beyond its state: its command, its probes with their
//! last verdicts, its limits with the current usage, its process tree and its last lines.
//!
//! The configuration's part ([`Describe`]) is built once per configuration, small, so the
//! daemon does not keep whole specifications (environments included) for 500 processes.

use std::sync::Arc;

use processcontrol_core::{LimitRule, ProbeRole};
use serde::Serialize;

use super::group::MemberStatus;
use super::spec::{CheckSpec, ProbeSpec, ProcessSpec};
use crate::logs::LogLine;
use crate::process::TreeProcess;
use crate::runtime::Verdict;

/// The parts of a process's configuration `status NAME` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    /// The command line, quoted as a shell would need it.
    pub command: String,
    /// Each probe: its role, what it checks, and its settings.
    pub probes: Vec<ProbeSettings>,
    /// The limits, as the core applies them.
    pub limits: Vec<LimitRule>,
}

/// A probe's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Its role.
    pub role: ProbeRole,
    /// What it checks: `GET http://127.0.0.1:8080/healthz`, `connect 127.0.0.1:5432`,
    /// `exec test -e /tmp/ready`, `READY=1 (sd_notify)`.
    pub check: String,
    /// Time between checks, in milliseconds (absent for sd_notify).
    pub period_ms: Option<u64>,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
}

impl Describe {
    /// What `status NAME` needs of `spec`.
    pub fn of(spec: &ProcessSpec) -> Describe {
        let argv = std::iter::once(&spec.command.program)
            .chain(&spec.command.args)
            .map(|a| quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut probes = Vec::new();
        for (role, probe) in [
            (ProbeRole::Startup, &spec.probes.startup),
            (ProbeRole::Liveness, &spec.probes.liveness),
            (ProbeRole::Readiness, &spec.probes.readiness),
        ] {
            if let Some(probe) = probe {
                probes.push(ProbeSettings::of(role, probe));
            }
        }
        if let Some(notify) = &spec.notify {
            if spec.probes.readiness.is_none() {
                probes.push(ProbeSettings {
                    role: ProbeRole::Readiness,
                    check: "READY=1 (sd_notify)".into(),
                    period_ms: None,
                    failure_threshold: 1,
                });
            }
            if let (Some(every), None) = (notify.watchdog, &spec.probes.liveness) {
                probes.push(ProbeSettings {
                    role: ProbeRole::Liveness,
                    check: format!(
                        "WATCHDOG=1 (sd_notify) within {}",
                        crate::human::duration(every)
                    ),
                    period_ms: Some(millis(every)),
                    failure_threshold: 1,
                });
            }
        }
        Describe {
            command: argv,
            probes,
            limits: spec.policy.limits.rules.clone(),
        }
    }
}

impl ProbeSettings {
    fn of(role: ProbeRole, probe: &ProbeSpec) -> ProbeSettings {
        let check = match &probe.check {
            CheckSpec::Http { url, .. } => format!("GET {url}"),
            CheckSpec::Tcp { addr, .. } => format!("connect {addr}"),
            CheckSpec::Exec { argv } => format!(
                "exec {}",
                argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
            ),
        };
        ProbeSettings {
            role,
            check,
            period_ms: Some(millis(probe.period)),
            failure_threshold: probe.failure_threshold,
        }
    }
}

/// A word as a POSIX shell reads it back: bare when it has nothing special, else in single
/// quotes.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `status NAME --json`: the table's fields and the detail.
#[derive(Clone, Debug, Serialize)]
pub struct Detail {
    /// The fields of the table.
    #[serde(flatten)]
    pub status: MemberStatus,
    /// The command line.
    pub command: String,
    /// The main process and its descendants, parents first.
    pub tree: Vec<TreeProcess>,
    /// Each probe with its last verdicts.
    pub probes: Vec<ProbeDetail>,
    /// Each limit with the current usage.
    pub limits: Vec<LimitDetail>,
    /// The last lines of output, oldest first.
    pub logs: Vec<LogLine>,
}

/// One probe in `status NAME`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeDetail {
    /// `startup`, `liveness` or `readiness`.
    pub probe: &'static str,
    /// What it checks.
    pub check: String,
    /// Time between checks, in milliseconds.
    pub period_ms: Option<u64>,
    /// Failures in a row that make it fail.
    pub failure_threshold: u32,
    /// Failed checks in a row, up to now.
    pub failing: u32,
    /// Its last verdicts, oldest first.
    pub last: Vec<Verdict>,
}

/// One limit in `status NAME`.
#[derive(Clone, Debug, Serialize)]
pub struct LimitDetail {
    /// `memory`, `cpu`, `fds`, `processes` or `threads`.
    pub resource: &'static str,
    /// The maximum (bytes, percent of one core, or a count).
    pub max: u64,
    /// The usage at the last sample, while an instance runs.
    pub current: Option<u64>,
    /// How long it may be exceeded before the action, in milliseconds.
    pub for_ms: u64,
    /// `restart`, `graceful-shutdown`, `kill` or `warn`.
    pub action: &'static str,
}

impl Detail {
    /// The detail of a process from its status, its configuration, its process tree and
    /// its last lines.
    pub fn new(
        status: MemberStatus,
        describe: &Arc<Describe>,
        tree: Vec<TreeProcess>,
        logs: Vec<LogLine>,
    ) -> Detail {
        let history = status.status.probes.clone();
        let probes = describe
            .probes
            .iter()
            .map(|p| {
                let last: Vec<Verdict> = history.of(p.role).iter().cloned().collect();
                ProbeDetail {
                    probe: p.role.name(),
                    check: p.check.clone(),
                    period_ms: p.period_ms,
                    failure_threshold: p.failure_threshold,
                    failing: history.failing(p.role),
                    last,
                }
            })
            .collect();
        let usage = status.status.usage;
        let limits = describe
            .limits
            .iter()
            .map(|rule| LimitDetail {
                resource: rule.resource.name(),
                max: rule.max,
                current: usage.and_then(|u| u.get(rule.resource)),
                for_ms: millis(rule.sustain),
                action: rule.action.name(),
            })
            .collect();
        Detail {
            command: describe.command.clone(),
            status,
            tree,
            probes,
            limits,
            logs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_where_a_shell_needs_it() {
        assert_eq!(quote("/bin/sh"), "/bin/sh");
        assert_eq!(quote("-c"), "-c");
        assert_eq!(quote("exec sleep 1000"), "'exec sleep 1000'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
