//! File descriptors: a supervisor of thousands of processes holds a few for each, and the
//! usual soft limit (1024) is reached near 300 processes. The soft limit is raised to the hard
//! one at start, and a configuration that needs more than that is refused before anything
//! starts, with how to raise it; running out halfway would fail spawns, count them as restarts
//! and open breakers.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use super::spec::{CheckSpec, ProcessSpec};

/// What the supervisor holds besides its processes' own: the runtime, the control socket and
/// its clients, the metrics listener, the sampler's /proc reads, stdio.
const BASE: u64 = 64;

/// Descriptors the supervisor holds for one process while it runs: its two output pipes and
/// its pidfd, its notify socket, its log file, one connection per network probe.
pub fn per_process(spec: &ProcessSpec) -> u64 {
    let probes = [
        &spec.probes.liveness,
        &spec.probes.readiness,
        &spec.probes.startup,
    ]
    .into_iter()
    .flatten()
    .filter(|p| matches!(p.check, CheckSpec::Http { .. } | CheckSpec::Tcp { .. }))
    .count() as u64;
    3 + u64::from(spec.notify.is_some()) + u64::from(spec.logs.dir.is_some()) + probes
}

/// Descriptors a supervisor of `specs` needs at most.
pub fn needed<'a>(specs: impl IntoIterator<Item = &'a ProcessSpec>) -> u64 {
    BASE + specs.into_iter().map(per_process).sum::<u64>()
}

/// The limit on open descriptors, after raising the soft limit to the hard one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// What this process may open now.
    pub soft: u64,
    /// What it could be raised to without privileges.
    pub hard: u64,
}

/// Raises the soft limit on open descriptors to the hard limit, and returns both. Where the
/// limits cannot be read or set, says so and returns what is known (the supervisor may still
/// be fine with the limit it has).
pub fn raise() -> Allowed {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => Allowed { soft: hard, hard },
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                Allowed { soft, hard }
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            Allowed {
                soft: u64::MAX,
                hard: u64::MAX,
            }
        }
    }
}

/// A configuration needs more descriptors than the supervisor may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{processes} processes need about {needed} open files, but the limit is {soft} (hard limit \
     {hard}); raise it before starting: `ulimit -n {needed}` in the shell that runs \
     processcontrol (as root for more than the hard limit), or LimitNOFILE={needed} in its \
     systemd unit"
)]
pub struct TooFew {
    /// How many processes.
    pub processes: usize,
    /// How many descriptors they need.
    pub needed: u64,
    /// The soft limit, already raised.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Checks that `specs` fit in `allowed`.
pub fn check(specs: &[&ProcessSpec], allowed: Allowed) -> Result<(), TooFew> {
    let needed = needed(specs.iter().copied());
    if needed <= allowed.soft {
        return Ok(());
    }
    Err(TooFew {
        processes: specs.len(),
        needed,
        soft: allowed.soft,
        hard: allowed.hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::ProbeSpec;

    #[test]
    fn each_process_counts_its_pipes_pidfd_socket_file_and_network_probes() {
        let plain = ProcessSpec::new("a", ["true"]);
        assert_eq!(per_process(&plain), 3);
        let mut busy = ProcessSpec::new("b", ["true"])
            .liveness(ProbeSpec::http("http://127.0.0.1:1/"))
            .readiness(ProbeSpec::exec(["true"]));
        busy.logs.dir = Some("/tmp".into());
        assert_eq!(per_process(&busy), 3 + 1 + 1);
        assert_eq!(needed([&plain, &busy]), BASE + 3 + 5);
    }

    #[test]
    fn too_many_names_the_figures_and_the_fix() {
        let specs: Vec<ProcessSpec> = (0..400)
            .map(|i| ProcessSpec::new(format!("p{i}"), ["true"]))
            .collect();
        let refs: Vec<&ProcessSpec> = specs.iter().collect();
        let allowed = Allowed {
            soft: 1024,
            hard: 1024,
        };
        let err = check(&refs, allowed).unwrap_err();
        assert_eq!(err.needed, BASE + 1200);
        let text = err.to_string();
        assert!(
            text.contains("400 processes need about 1264 open files"),
            "{text}"
        );
        assert!(text.contains("ulimit -n 1264"), "{text}");
        assert!(text.contains("LimitNOFILE=1264"), "{text}");
        assert!(check(&refs[..300], allowed).is_ok());
    }
}
