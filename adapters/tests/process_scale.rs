//! The cost of stopping many instances, and of one crash-to-respawn cycle, measured in `read`
//! system calls of this process (`syscr` of `/proc/self/io`, about two per `/proc` file read)
//! and in wall time. Finding an instance's processes must cost in proportion to that
//! instance, not to the machine or to every supervised child: stopping N children costs
//! O(N) reads, not O(N²).
//!
//! One test, so that nothing else in this binary reads meanwhile. Run with `--nocapture`
//! for the figures.

#[path = "process_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use processcontrol_adapters::process::{Child, OutputMode, ProcessSpec, Signal};
use support::{bounded, launcher, run};

/// Read system calls made by this process so far.
fn reads() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("syscr: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a syscr line")
}

fn quiet(spec: ProcessSpec) -> ProcessSpec {
    spec.stdout(OutputMode::Null).stderr(OutputMode::Null)
}

/// Starts `n` sleeping children, then SIGTERMs each and waits until all are gone, the way a
/// stop of every process does. Returns (reads, time) of the stop alone.
async fn stop_many(n: usize) -> (u64, Duration) {
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for _ in 0..n {
        let spec = quiet(ProcessSpec::new("sleep").arg("1000"));
        children.push(launcher().spawn(spec).await.expect("spawn"));
    }
    let before = reads();
    let started = Instant::now();
    for child in &children {
        child.signal(Signal::SIGTERM).expect("signal");
    }
    for child in &children {
        bounded("gone", child.gone()).await.expect("gone");
    }
    let elapsed = started.elapsed();
    (reads() - before, elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[test]
fn stopping_costs_in_proportion_to_the_instances_stopped() {
    run(async {
        let (reads_50, time_50) = stop_many(50).await;
        let (reads_200, time_200) = stop_many(200).await;
        let (per_50, per_200) = (reads_50 as f64 / 50.0, reads_200 as f64 / 200.0);
        eprintln!(
            "stop 50: {reads_50} reads ({per_50:.1}/child) in {time_50:?}; \
             stop 200: {reads_200} reads ({per_200:.1}/child) in {time_200:?}"
        );

        // One crash-to-respawn cycle: a child that exits at once, `gone`, the next one.
        let mut cycles = Vec::new();
        let mut exit_to_gone = Vec::new();
        let before = reads();
        const CYCLES: usize = 200;
        for _ in 0..CYCLES {
            let started = Instant::now();
            let child = launcher()
                .spawn(quiet(ProcessSpec::new("/bin/true")))
                .await
                .expect("spawn");
            let watch = child.watch();
            let exited_at = tokio::spawn(async move {
                watch.exited().await.expect("status");
                Instant::now()
            });
            bounded("gone", child.gone()).await.expect("gone");
            let gone_at = Instant::now();
            let exited_at = exited_at.await.expect("join");
            exit_to_gone.push(gone_at.saturating_duration_since(exited_at));
            cycles.push(started.elapsed());
        }
        let cycle_reads = (reads() - before) as f64 / CYCLES as f64;
        cycles.sort();
        exit_to_gone.sort();
        eprintln!(
            "spawn-exit-gone cycle: median {:?}, p99 {:?}; exit seen -> gone: median {:?}, \
             p99 {:?}; {cycle_reads:.1} reads/cycle",
            percentile(&cycles, 0.5),
            percentile(&cycles, 0.99),
            percentile(&exit_to_gone, 0.5),
            percentile(&exit_to_gone, 0.99),
        );

        // Linear, not quadratic: a child costs about as much among 200 as among 50 (the
        // supervisor's own child list, one line per child, is the only part that grows), and
        // nothing like a read of every process on the machine per signal.
        assert!(per_200 < per_50 * 1.5 + 10.0, "{per_50:.1} -> {per_200:.1}");
        assert!(per_200 < 100.0, "{per_200:.1} reads per stopped child");
        assert!(cycle_reads < 100.0, "{cycle_reads:.1} reads per cycle");
    });
}
