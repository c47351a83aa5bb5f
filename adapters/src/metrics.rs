//! Prometheus metrics of the supervised processes, by Prometheus's naming conventions: base
//! units (seconds, bytes), `_total` for counters, one-hot gauges for enumerations, every
//! series present for every process (zero until something happens), and `build_info`.
//!
//! Memory and CPU are read from /proc at scrape time for every process with an instance,
//! whether or not it has limits.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use processcontrol_core::{ExitStatus, StateName};

use crate::runtime::Status;
use crate::sample::{ProcSampler, SampleReport};
use crate::supervise::MemberStatus;

/// The text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Restart causes, as events name them: each process has a `restarts_total` series for each.
const RESTART_CAUSES: [&str; 8] = [
    "exited",
    "oom_killed",
    "spawn_failed",
    "liveness_failed",
    "startup_failed",
    "limit_exceeded",
    "manual_restart",
    "reload",
];
const RESOURCES: [&str; 5] = ["memory", "cpu", "fds", "processes", "threads"];
const PROBES: [&str; 3] = ["liveness", "readiness", "startup"];
const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// What scrapes remember between them: CPU counters that must never go down.
#[derive(Debug, Default)]
pub struct Metrics {
    cpu: Mutex<HashMap<String, CpuCounter>>,
}

/// CPU seconds of a process tree as a counter. The tree's own total drops when a member exits
/// (or an instance is replaced); what was counted before stays counted.
#[derive(Clone, Copy, Debug, Default)]
struct CpuCounter {
    last: f64,
    carried: f64,
}

impl CpuCounter {
    fn observe(&mut self, tree_seconds: f64) -> f64 {
        if tree_seconds < self.last {
            self.carried += self.last - tree_seconds;
        }
        self.last = tree_seconds;
        self.carried + tree_seconds
    }

    fn value(&self) -> f64 {
        self.carried + self.last
    }
}

/// Usage of one process tree at scrape time.
#[derive(Clone, Copy, Debug)]
struct TreeUsage {
    rss_bytes: u64,
    cpu_seconds: f64,
}

impl Metrics {
    /// The metrics text for these statuses; reads /proc on the blocking pool.
    pub async fn render(&self, statuses: Vec<MemberStatus>) -> String {
        let pids: Vec<Option<u32>> = statuses
            .iter()
            .map(|s| s.status.pid.filter(|_| s.status.instance.is_some()))
            .collect();
        let usage = tokio::task::spawn_blocking(move || sample(&pids))
            .await
            .unwrap_or_default();
        let cpu: Vec<f64> = {
            let mut counters = self.cpu.lock().expect("never poisoned");
            counters.retain(|name, _| statuses.iter().any(|s| *s.status.name == **name));
            statuses
                .iter()
                .zip(usage.iter().chain(std::iter::repeat(&None)))
                .map(|(s, u)| {
                    let counter = counters.entry(s.status.name.to_string()).or_default();
                    match u {
                        Some(u) => counter.observe(u.cpu_seconds),
                        None => counter.value(),
                    }
                })
                .collect()
        };
        let rss: Vec<u64> = (0..statuses.len())
            .map(|i| usage.get(i).copied().flatten().map_or(0, |u| u.rss_bytes))
            .collect();
        render(&statuses, &rss, &cpu)
    }
}

/// RSS and CPU time of each tree, by position; `None` where there is no instance or /proc
/// could not be read.
fn sample(pids: &[Option<u32>]) -> Vec<Option<TreeUsage>> {
    let Ok(mut sampler) = ProcSampler::new() else {
        return vec![None; pids.len()];
    };
    for (i, pid) in pids.iter().enumerate() {
        if let Some(pid) = pid {
            sampler.watch(i as u64, *pid);
        }
    }
    let mut reports = Vec::with_capacity(pids.len());
    sampler.sample(&mut reports);
    let mut out = vec![None; pids.len()];
    for report in reports {
        if let SampleReport::Usage(u) = report {
            if let Some(slot) = out.get_mut(u.tag as usize) {
                *slot = Some(TreeUsage {
                    rss_bytes: u.rss_bytes,
                    cpu_seconds: u.cpu_time.as_secs_f64(),
                });
            }
        }
    }
    out
}

/// The text for `statuses`, with each tree's RSS and CPU counter by position.
fn render(statuses: &[MemberStatus], rss: &[u64], cpu: &[f64]) -> String {
    let mut out = String::with_capacity(1024 + statuses.len() * 2048);
    family(
        &mut out,
        "processcontrol_build_info",
        "gauge",
        "The supervisor's version; always 1.",
    );
    let _ = writeln!(
        out,
        "processcontrol_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let each = |out: &mut String,
                name: &str,
                kind: &str,
                help: &str,
                value: &dyn Fn(usize, &Status) -> Option<String>| {
        family(out, name, kind, help);
        for (i, s) in statuses.iter().enumerate() {
            if let Some(v) = value(i, &s.status) {
                let _ = writeln!(out, "{name}{{process=\"{}\"}} {v}", esc(&s.status.name));
            }
        }
    };
    each(
        &mut out,
        "processcontrol_up",
        "gauge",
        "1 while the process has a running instance.",
        &|_, s| Some(u8::from(is_up(s)).to_string()),
    );
    each(
        &mut out,
        "processcontrol_ready",
        "gauge",
        "1 while the process is running and, if it has a readiness probe, passes it.",
        &|_, s| {
            let ready = s.state == StateName::Running && (!s.has_readiness || s.ready);
            Some(u8::from(ready).to_string())
        },
    );
    each(
        &mut out,
        "processcontrol_start_time_seconds",
        "gauge",
        "When the current instance started, in seconds since the Unix epoch.",
        &|_, s| {
            let t = s.started_at?.duration_since(UNIX_EPOCH).ok()?;
            Some(seconds(t))
        },
    );
    each(
        &mut out,
        "processcontrol_cpu_seconds_total",
        "counter",
        "CPU time (user and system) used by the process tree, over every instance.",
        &|i, _| Some(float(cpu.get(i).copied().unwrap_or(0.0))),
    );
    each(
        &mut out,
        "processcontrol_memory_rss_bytes",
        "gauge",
        "Resident memory of the process tree (0 without an instance).",
        &|i, _| Some(rss.get(i).copied().unwrap_or(0).to_string()),
    );
    each(
        &mut out,
        "processcontrol_last_exit_code",
        "gauge",
        "How the last instance's main process ended: its exit code, or 128 + the signal.",
        &|_, s| s.exit.map(|e| exit_code(e).to_string()),
    );
    labelled(
        &mut out,
        statuses,
        "processcontrol_restarts_total",
        "Restarts, by cause (the same total as `processcontrol status`).",
        "cause",
        &RESTART_CAUSES,
        |s| &s.tallies.restarts,
    );
    labelled(
        &mut out,
        statuses,
        "processcontrol_limit_exceeded_total",
        "Limits exceeded for their whole `for` duration, by resource.",
        "resource",
        &RESOURCES,
        |s| &s.tallies.limits_exceeded,
    );
    labelled(
        &mut out,
        statuses,
        "processcontrol_probe_failures_total",
        "Failed probe verdicts (liveness or startup failing, readiness lost), by probe.",
        "probe",
        &PROBES,
        |s| &s.tallies.probe_failures,
    );
    family(
        &mut out,
        "processcontrol_breaker_state",
        "gauge",
        "1 for the state the circuit breaker is in, 0 for the others.",
    );
    for s in statuses {
        for state in BREAKER_STATES {
            let _ = writeln!(
                out,
                "processcontrol_breaker_state{{process=\"{}\",state=\"{state}\"}} {}",
                esc(&s.status.name),
                u8::from(s.status.breaker == state)
            );
        }
    }
    family(
        &mut out,
        "processcontrol_state",
        "gauge",
        "1 for the state the process is in, 0 for the others.",
    );
    for s in statuses {
        for state in StateName::ALL {
            let _ = writeln!(
                out,
                "processcontrol_state{{process=\"{}\",state=\"{state}\"}} {}",
                esc(&s.status.name),
                u8::from(s.status.state == state)
            );
        }
    }
    out
}

/// A counter family with one series per known label value (zero until it happens), plus any
/// value the process reported that is not in the known list.
fn labelled(
    out: &mut String,
    statuses: &[MemberStatus],
    name: &str,
    help: &str,
    label: &str,
    known: &[&'static str],
    counts: impl Fn(&Status) -> &Vec<(&'static str, u64)>,
) {
    family(out, name, "counter", help);
    for s in statuses {
        let counts = counts(&s.status);
        let extra = counts
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !known.contains(k));
        for value in known.iter().copied().chain(extra) {
            let n = counts
                .iter()
                .find(|(k, _)| *k == value)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "{name}{{process=\"{}\",{label}=\"{value}\"}} {n}",
                esc(&s.status.name)
            );
        }
    }
}

fn is_up(s: &Status) -> bool {
    s.pid.is_some() && matches!(s.state, StateName::Starting | StateName::Running)
}

fn exit_code(e: ExitStatus) -> i64 {
    match e {
        ExitStatus::Code(c) => i64::from(c),
        ExitStatus::Signal(sig) => 128 + i64::from(sig),
        ExitStatus::OomKilled => 137,
    }
}

fn seconds(d: Duration) -> String {
    float(d.as_secs_f64())
}

/// A sample value: Rust's shortest round-trip form, which Prometheus parses.
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_counter_never_goes_down() {
        let mut c = CpuCounter::default();
        assert_eq!(c.observe(1.0), 1.0);
        assert_eq!(c.observe(3.0), 3.0);
        // A member exited: the tree's total drops, the counter does not.
        assert_eq!(c.observe(1.5), 3.0);
        assert_eq!(c.observe(2.0), 3.5);
        // A new instance starts from 0.
        assert_eq!(c.observe(0.0), 3.5);
        assert_eq!(c.observe(0.25), 3.75);
        assert_eq!(c.value(), 3.75);
    }
}
