//! CPU cost of many HTTP probe schedules against a local in-process server.
//!
//! `cargo bench -p processcontrol-adapters --bench probe_cpu`
//! Environment: `PROBES` (default 500), `PERIOD_MS` (1000), `SECS` (20 measured seconds),
//! `MODE` (`http`, or `tcp` for bare connect probes as a floor), `REUSE` (1: HTTP probes keep
//! their connection, the default; 0: a new connection and `Connection: close` per check).
//!
//! The server keeps connections alive (HTTP/1.1) unless the request asks to close, like most
//! HTTP servers; the number of connections it accepted is printed, so reuse can be checked.
//!
//! The probes run on their own runtime (threads named `probe-rt`) and the server on
//! another (`bench-server`), so the probes' share can be told apart from the server's:
//! whole-process CPU comes from getrusage, the per-runtime split from the threads'
//! /proc/self/task/*/stat counters.

mod common;

use common::{env_or, process_cpu};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use processcontrol_adapters::probe::{HttpProbe, Probe, ProbeSchedule, TcpProbe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// CPU clock ticks (user, system) used so far by this process's threads whose name
/// starts with `prefix`.
fn threads_ticks(prefix: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        total.0 += fields[11].parse::<u64>().unwrap();
        total.1 += fields[12].parse::<u64>().unwrap();
    }
    total
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Connections the server accepted so far.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut len = 0;
            loop {
                // One request head at a time (probes send no body, and one request at a time).
                let end = loop {
                    if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    if len == buf.len() {
                        return;
                    }
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => len += n,
                    }
                };
                let close = buf[..end]
                    .to_ascii_lowercase()
                    .windows(17)
                    .any(|w| w == b"connection: close");
                let answer: &[u8] = if close {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                };
                if stream.write_all(answer).await.is_err() || close {
                    return;
                }
                buf.copy_within(end..len, 0);
                len -= end;
            }
        });
    }
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    let probes = env_or("PROBES", 500);
    let period = Duration::from_millis(env_or("PERIOD_MS", 1000));
    let secs = env_or("SECS", 20);
    let mode = std::env::var("MODE").unwrap_or_else(|_| "http".to_owned());
    let reuse = env_or("REUSE", 1) != 0;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-server")
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    server_rt.spawn(serve(listener));

    let probe_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("probe-rt")
        .enable_all()
        .build()
        .unwrap();
    let (passed, failed) = probe_rt.block_on(async {
        let (tx, mut rx) = mpsc::channel(1024);
        let url = format!("http://{addr}/healthz");
        let mut tasks = Vec::new();
        for i in 0..probes {
            let probe: Probe = if mode == "tcp" {
                TcpProbe::new(&addr.to_string(), Duration::from_secs(1)).unwrap().into()
            } else {
                HttpProbe::new(&url, None, Duration::from_secs(1))
                    .unwrap()
                    .reuse_connection(reuse)
                    .into()
            };
            // Spread the first checks over one period, as a supervisor starting its
            // services at different times would.
            let delay = period.mul_f64(i as f64 / probes as f64);
            tasks.push(ProbeSchedule::new(probe, delay, period).unwrap().spawn(i, tx.clone()));
        }
        drop(tx);
        let count = async {
            let (mut passed, mut failed) = (0u64, 0u64);
            while let Some(report) = rx.recv().await {
                if report.outcome.is_passed() {
                    passed += 1;
                } else {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("failure: {:?}", report.outcome);
                    }
                }
            }
            (passed, failed)
        };
        let measure = async {
            tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
            let (cpu0, probe0, server0, accepted0, t0) = (
                process_cpu(),
                threads_ticks("probe-rt"),
                threads_ticks("bench-server"),
                ACCEPTED.load(Ordering::Relaxed),
                Instant::now(),
            );
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (process_cpu() - cpu0).as_secs_f64();
            let (probe1, server1) = (threads_ticks("probe-rt"), threads_ticks("bench-server"));
            let accepted = ACCEPTED.load(Ordering::Relaxed) - accepted0;
            let pct = |ticks: u64| ticks as f64 / clk_tck() / wall * 100.0;
            let checks_per_sec = probes as f64 / period.as_secs_f64();
            let probe_cpu = (probe1.0 - probe0.0 + probe1.1 - probe0.1) as f64 / clk_tck();
            let reuse = if mode == "tcp" { "-" } else if reuse { "yes" } else { "no" };
            println!(
                "mode={mode} reuse={reuse} probes={probes} period={period:?} measured={wall:.1}s \
                 load={}\n\
                 whole process (getrusage): {:.1}% of one core\n\
                 probe runtime threads:     {:.1}% of one core (user {:.1}%, sys {:.1}%), {:.0} us CPU per check\n\
                 server runtime threads:    {:.1}% of one core (user {:.1}%, sys {:.1}%), \
                 {accepted} connections accepted",
                load_average(),
                cpu / wall * 100.0,
                pct(probe1.0 - probe0.0 + probe1.1 - probe0.1),
                pct(probe1.0 - probe0.0),
                pct(probe1.1 - probe0.1),
                probe_cpu / wall / checks_per_sec * 1e6,
                pct(server1.0 - server0.0 + server1.1 - server0.1),
                pct(server1.0 - server0.0),
                pct(server1.1 - server0.1),
            );
            drop(tasks);
        };
        let (counts, ()) = tokio::join!(count, measure);
        counts
    });
    println!(
        "checks: {passed} passed, {failed} failed; load {}",
        load_average()
    );
    drop(probe_rt);
    server_rt.shutdown_background();
}
