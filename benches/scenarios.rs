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
//! scenarios probes N PERIOD_MS SECS -- PROGRAM ARGS...
//!     N copies, each with an HTTP liveness probe every PERIOD_MS against one local
//!     keep-alive server, which is this binary in `serve` mode, supervised as one more
//!     process (so its CPU is not ours); after 3 s of settling, measures this process's CPU
//!     (getrusage) for SECS: cpu_pct=…  user_pct=…  sys_pct=…  checks=…  restarts=…  DONE
//! scenarios serve PORT
//!     the HTTP/1.1 keep-alive server of `probes`: 200 "ok" to every request
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
    BackoffPolicy, BreakerPolicy, Cooldown, Host, HostConfig, ProbeSpec, ProcessSpec,
    RestartPolicy, Signal, StateName, Supervisor,
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

const USAGE: &str = "usage: scenarios fleet N GRACE_MS -- PROGRAM ARGS... | scenarios gap N -- PROGRAM ARGS... | scenarios probes N PERIOD_MS SECS -- PROGRAM ARGS... | scenarios serve PORT\n(run bench/run.sh for the whole comparison)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [mode, port] = &args[..] {
        if mode == "serve" {
            return serve(port);
        }
    }
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
            [mode, n, period, secs] if mode == "probes" => {
                probes(
                    n.parse().expect("N"),
                    period.parse().expect("PERIOD_MS"),
                    secs.parse().expect("SECS"),
                    argv,
                )
                .await
            }
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

/// User and system CPU time of this process so far, in microseconds.
fn own_cpu_us() -> (i64, i64) {
    // SAFETY: getrusage only writes the struct it is given, a live local.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    (us(usage.ru_utime), us(usage.ru_stime))
}

async fn probes(n: usize, period_ms: u64, secs: u64, argv: Vec<String>) -> Result<(), String> {
    let host: Arc<Host> = Host::new(HostConfig::default()).map_err(|e| e.to_string())?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.port()
    };
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let server = host
        .spawn(ProcessSpec::new(
            "server",
            [me.display().to_string(), "serve".into(), port.to_string()],
        ))
        .map_err(|e| e.to_string())?;
    bounded("server", wait_line(&host, "server", "listening")).await??;
    let period = Duration::from_millis(period_ms);
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut sups: Vec<Supervisor> = Vec::with_capacity(n);
    for i in 0..n {
        let spec = ProcessSpec::new(format!("p{i}"), argv.iter().cloned())
            .restart(RestartPolicy::OnFailure)
            .liveness(ProbeSpec::http(url.clone()).period(period));
        sups.push(host.spawn(spec).map_err(|e| e.to_string())?);
    }
    for sup in &sups {
        bounded("running", sup.wait_for(|s| s.state == StateName::Running))
            .await?
            .map_err(|e| e.to_string())?;
    }
    // Every probe has connected and runs at its pace before the measurement starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served_before = served(&host);
    let (user0, sys0) = own_cpu_us();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (user1, sys1) = own_cpu_us();
    let checks = served(&host) - served_before;
    let pct = |us: i64| us as f64 / (secs as f64 * 1e6) * 100.0;
    let restarts: u64 = sups.iter().map(|s| s.status().restarts).sum();
    say(&format!("cpu_pct={:.2}", pct(user1 - user0 + sys1 - sys0)));
    say(&format!("user_pct={:.2}", pct(user1 - user0)));
    say(&format!("sys_pct={:.2}", pct(sys1 - sys0)));
    say(&format!("checks={checks}"));
    say(&format!("restarts={restarts}"));
    for sup in sups {
        bounded("shutdown", sup.shutdown()).await?;
    }
    bounded("shutdown", server.shutdown()).await?;
    Ok(())
}

/// Requests the server has answered so far, from the count it prints every second.
fn served(host: &Host) -> u64 {
    host.logs("server")
        .and_then(|ring| {
            ring.tail(8)
                .iter()
                .rev()
                .find_map(|l| l.text.strip_prefix("served=")?.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until `name` has printed a line containing `needle`.
async fn wait_line(host: &Host, name: &str, needle: &str) -> Result<(), String> {
    use processcontrol::adapters::logs::FollowEvent;
    let ring = host
        .logs(name)
        .ok_or_else(|| format!("no process {name}"))?;
    let (seen, mut follower) = ring.follow(usize::MAX);
    if seen.iter().any(|l| l.text.contains(needle)) {
        return Ok(());
    }
    while let Some(event) = follower.next().await {
        if matches!(event, FollowEvent::Line(l) if l.text.contains(needle)) {
            return Ok(());
        }
    }
    Err(format!("{name} ended before printing {needle}"))
}

/// The server of `probes`: answers every request on a kept connection with 200 "ok", and
/// prints how many it answered, every second.
fn serve(port: &str) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse().expect("PORT")))
            .await
            .expect("bind");
        say("listening");
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                say(&format!(
                    "served={}",
                    SERVED.load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
        });
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut have = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // One request per read is what a probe sends; answer each complete head.
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = &buf[..end];
                        let close = head
                            .windows(17)
                            .any(|w| w.eq_ignore_ascii_case(b"connection: close"));
                        let reply: &[u8] = if close {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                        SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        if close {
                            return;
                        }
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    })
}
