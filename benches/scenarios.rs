//! ProcessControl's side of the "supervising real processes" benchmark (driven by
//! `bench/run.sh` and `bench/driver.py`, which also run supervisord through the same
//! scenarios and measure both supervisors from outside, through `/proc` and pidfds).
//!
//! This program *is* the supervisor under test: one OS process, one tokio runtime (default
//! multi-thread, one worker per core), one [`Host`], and nothing else, so the driver can read
//! its RSS and CPU time from `/proc/<pid>` without subtracting a baseline. It speaks a line
//! protocol on stdout/stdin; every timestamp is CLOCK_MONOTONIC in nanoseconds, the clock of
//! the driver and of `bench/child.c`.
//!
//! ```text
//! scenarios fleet N GRACE_MS -- PROGRAM ARGS...
//!     spawns N copies (restart on failure, SIGTERM then GRACE_MS), waits until all are Running
//!     t0_ns=…  running_ns=…  pids=…  READY
//!     then waits for a line "stop" on stdin (or EOF), stops all of them at once and waits
//!     until every one is Stopped with no instance left (= leader reaped, group empty)
//!     stop_ns=…  stopped_ns=…  DONE
//! scenarios gap N -- PROGRAM ARGS...
//!     one process, restart on failure, zero backoff, a breaker that never trips; waits for
//!     N restarts, then shuts it down: restarts=…  DONE
//! ```
//!
//! Every wait is bounded (`ERROR …` and exit code 1 on timeout; the launcher's parent-death
//! signal then kills whatever is left). Run by `cargo bench --bench scenarios` without
//! arguments, it only prints this usage: the comparison needs the driver.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use processcontrol::{
    BackoffPolicy, BreakerPolicy, Cooldown, Host, HostConfig, ProcessSpec, RestartPolicy, Signal,
    StateName, Supervisor,
};

/// The longest any single wait may take.
const LIMIT: Duration = Duration::from_secs(120);

fn mono_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

const USAGE: &str = "usage: scenarios fleet N GRACE_MS -- PROGRAM ARGS... | scenarios gap N -- PROGRAM ARGS...\n(run bench/run.sh for the whole comparison)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let (head, argv) = (&args[..split], args[split + 1..].to_vec());
    if argv.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match head {
            [mode, n, grace] if mode == "fleet" => {
                fleet(
                    n.parse().expect("N"),
                    grace.parse().expect("GRACE_MS"),
                    argv,
                )
                .await
            }
            [mode, n] if mode == "gap" => gap(n.parse().expect("N"), argv).await,
            _ => Err(USAGE.to_string()),
        }
    });
    match result {
        Ok(()) => {
            say("DONE");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("ERROR {e}"));
            ExitCode::from(1)
        }
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(LIMIT, f)
        .await
        .map_err(|_| format!("timed out waiting for {what}"))
}

async fn fleet(n: usize, grace_ms: u64, argv: Vec<String>) -> Result<(), String> {
    let host: Arc<Host> = Host::new(HostConfig::default()).map_err(|e| e.to_string())?;
    let t0 = mono_ns();
    let mut sups: Vec<Supervisor> = Vec::with_capacity(n);
    for i in 0..n {
        let spec = ProcessSpec::new(format!("p{i}"), argv.iter().cloned())
            .restart(RestartPolicy::OnFailure)
            .stop(Signal::Term, Duration::from_millis(grace_ms));
        sups.push(host.spawn(spec).map_err(|e| e.to_string())?);
    }
    let mut pids = Vec::with_capacity(n);
    for sup in &sups {
        let status = bounded("running", sup.wait_for(|s| s.state == StateName::Running))
            .await?
            .map_err(|e| e.to_string())?;
        pids.push(status.pid.unwrap_or(0));
    }
    let running = mono_ns();
    say(&format!("t0_ns={t0}"));
    say(&format!("running_ns={running}"));
    say(&format!(
        "pids={}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ));
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let heap = unsafe { libc::mallinfo2() };
    say(&format!(
        "heap_in_use={} heap_mapped={} heap_arena={}",
        heap.uordblks + heap.hblkhd,
        heap.hblkhd,
        heap.arena
    ));
    say("READY");

    // Idle until told to stop (the driver measures us meanwhile), or until stdin closes.
    // A plain thread: the workspace's tokio has no `io-std`, and this costs nothing while idle.
    let (told, stop_asked) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = told.send(());
    });
    let _ = tokio::time::timeout(Duration::from_secs(600), stop_asked).await;

    let stop = mono_ns();
    for sup in &sups {
        sup.stop(None).map_err(|e| e.to_string())?;
    }
    for sup in &sups {
        bounded(
            "stopped",
            sup.wait_for(|s| s.state == StateName::Stopped && s.instance.is_none()),
        )
        .await?
        .map_err(|e| e.to_string())?;
    }
    let stopped = mono_ns();
    say(&format!("stop_ns={stop}"));
    say(&format!("stopped_ns={stopped}"));
    for sup in sups {
        bounded("shutdown", sup.shutdown()).await?;
    }
    Ok(())
}

async fn gap(n: u64, argv: Vec<String>) -> Result<(), String> {
    let host: Arc<Host> = Host::new(HostConfig::default()).map_err(|e| e.to_string())?;
    let spec = ProcessSpec::new("crasher", argv)
        .restart(RestartPolicy::OnFailure)
        .backoff(BackoffPolicy {
            initial: Duration::ZERO,
            factor: 1.0,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
        })
        .breaker(BreakerPolicy {
            max_restarts: u32::MAX,
            window: Duration::from_secs(3600),
            cooldown: Cooldown::Never,
            max_cooldown: Duration::from_secs(3600),
        });
    let sup = host.spawn(spec).map_err(|e| e.to_string())?;
    // Not `at_rest()`: the status starts as Stopped, before the start has been handled.
    let status = bounded(
        "restarts",
        sup.wait_for(|s| {
            s.restarts >= n || matches!(s.state, StateName::BreakerOpen | StateName::Failed)
        }),
    )
    .await?
    .map_err(|e| e.to_string())?;
    say(&format!("restarts={}", status.restarts));
    say(&format!("state={:?}", status.state));
    bounded("shutdown", sup.shutdown()).await?;
    Ok(())
}
