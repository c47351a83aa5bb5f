//! Detection latency of a memory limit: from the moment a child has finished touching memory
//! above its limit (`for` = 0) to the action's effect, with the host sampling every second.
//!
//! Each round supervises a python child that traps SIGTERM, waits a random fraction of the
//! sampling interval (so the crossing falls at a random phase of the sampler), touches 96 MiB
//! against a 64 MiB limit with `graceful-shutdown`, and prints the CLOCK_REALTIME time it
//! finished (`touched <t>`); its trap prints the time SIGTERM arrived (`term <t>`). The
//! supervisor side records when the status left `running`. Expected bound: one sampling
//! interval + 10 ms.
//!
//! Run: `cargo bench --bench detection` (needs `[[bench]] name = "detection"`, `harness =
//! false`). `DETECTION_ROUNDS` overrides the 20 rounds.

#![cfg_attr(test, allow(dead_code))]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use processcontrol::adapters::logs::FollowEvent;
use processcontrol::{Host, HostConfig, LimitAction, LimitRule, ProcessSpec, Resource, StateName};

const SAMPLE: Duration = Duration::from_secs(1);
const BOUND: Duration = Duration::from_millis(1010);
const WAIT: Duration = Duration::from_secs(30);
const MB: u64 = 1024 * 1024;

const CHILD: &str = r#"
import os, signal, sys, time
touched = None
pending = []
def term(*_):
    t = time.time()
    if touched is None:
        # Acted on a sample taken while the pages were being touched: report after `touched`.
        pending.append(t)
        return
    print('term %.6f' % t, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
time.sleep(float(sys.argv[1]))
b = bytearray(96 * 1024 * 1024)
touched = time.time()
print('touched %.6f' % touched, flush=True)
if pending:
    print('term %.6f' % pending[0], flush=True)
    os._exit(0)
while True:
    time.sleep(1000)
"#;

struct Round {
    /// Child finished touching -> child's SIGTERM trap ran.
    to_term: f64,
    /// Child finished touching -> the supervisor's status left `running`.
    to_status: f64,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// A xorshift of the clock: a spread of start phases, no dependency needed.
fn fraction(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % 10_000) as f64 / 10_000.0
}

/// The number after `prefix ` in the first line of `name`'s log that starts with it.
async fn line_value(host: &Host, name: &str, prefix: &str) -> f64 {
    let ring = host.logs(name).expect("a log ring");
    let (tail, mut follower) = ring.follow(usize::MAX);
    let parse = |text: &str| -> Option<f64> { text.strip_prefix(prefix)?.trim().parse().ok() };
    if let Some(v) = tail.iter().find_map(|l| parse(&l.text)) {
        return v;
    }
    tokio::time::timeout(WAIT, async {
        loop {
            match follower.next().await {
                Some(FollowEvent::Line(line)) => {
                    if let Some(v) = parse(&line.text) {
                        return v;
                    }
                }
                Some(_) => {}
                None => panic!("{name}'s log ended before {prefix:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name} never printed {prefix:?}"))
}

async fn round(host: &Arc<Host>, i: usize, delay: f64) -> Round {
    let name = format!("detect-{i}");
    let spec = ProcessSpec::new(
        name.as_str(),
        [
            "python3".to_string(),
            "-c".into(),
            CHILD.into(),
            format!("{delay:.3}"),
        ],
    )
    .limit(LimitRule {
        resource: Resource::Memory,
        max: 64 * MB,
        sustain: Duration::ZERO,
        action: LimitAction::GracefulShutdown,
    });
    let sup = host.spawn(spec).expect("a valid spec");
    let mut status = sup.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.pid.is_some()))
        .await
        .expect("spawned in time")
        .expect("supervised");
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| !matches!(s.state, StateName::Running | StateName::Starting)),
    )
    .await
    .expect("the limit acted in time")
    .expect("supervised");
    let left_running = now_secs();
    let touched = line_value(host, &name, "touched").await;
    let term = line_value(host, &name, "term").await;
    let last = sup.shutdown().await;
    assert_eq!(last.state, StateName::Stopped);
    Round {
        to_term: term - touched,
        to_status: left_running - touched,
    }
}

fn summary(label: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1000.0;
    let over = v.iter().filter(|x| **x > BOUND.as_secs_f64()).count();
    format!(
        "{label:<32} min {:7.1} ms  median {:7.1} ms  p95 {:7.1} ms  max {:7.1} ms  over {} ms: {over}/{}",
        pick(0.0),
        pick(0.5),
        pick(0.95),
        pick(1.0),
        BOUND.as_millis(),
        v.len()
    )
}

fn main() {
    let rounds: usize = std::env::var("DETECTION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let results = rt.block_on(async {
        let host = Host::new(HostConfig {
            sample_interval: SAMPLE,
        })
        .expect("the host starts");
        let mut seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64
            | 1;
        let mut results = Vec::new();
        for i in 0..rounds {
            let delay = fraction(&mut seed) * SAMPLE.as_secs_f64();
            let r = round(&host, i, delay).await;
            eprintln!(
                "round {i:2}: touched -> SIGTERM {:7.1} ms, -> status left running {:7.1} ms",
                r.to_term * 1000.0,
                r.to_status * 1000.0
            );
            results.push(r);
        }
        results
    });
    println!(
        "memory limit detection, sample interval {} ms, for = 0, {} rounds (bound: interval + 10 ms)",
        SAMPLE.as_millis(),
        results.len()
    );
    println!(
        "{}",
        summary(
            "touched -> child SIGTERM",
            results.iter().map(|r| r.to_term).collect()
        )
    );
    println!(
        "{}",
        summary(
            "touched -> status left running",
            results.iter().map(|r| r.to_status).collect()
        )
    );
}
