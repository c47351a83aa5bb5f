//! CPU cost of sampling many process trees from /proc.
//!
//! `cargo bench -p processcontrol-adapters --bench sample_cpu`
//! Environment: `ROOTS` (default 500), `PER_ROOT` (processes per tree, default 1: each
//! root a lone `sleep`; with N > 1 each root is a `sh` with N - 1 `sleep` children),
//! `INTERVAL_MS` (1000), `SECS` (20 measured seconds).
//!
//! The sampler runs through its real driver ([`spawn`]) on a tokio runtime; the bench
//! process does nothing else, so getrusage(RUSAGE_SELF) is the sampler's cost (the
//! children are not waited for during the measurement, so their CPU is not included).
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
mod common;

use common::{env_or, process_cpu};
use std::time::{Duration, Instant};

use processcontrol_adapters::sample::{spawn, ProcSampler, SampleReport};
use tokio::sync::mpsc;

/// The helper processes, each in its own group, killed (with their children) on drop.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn main() {
    let roots = env_or("ROOTS", 500);
    let per_root = env_or("PER_ROOT", 1).max(1);
    let interval = Duration::from_millis(env_or("INTERVAL_MS", 1000));
    let secs = env_or("SECS", 20);

    let mut children = Children(Vec::new());
    for _ in 0..roots {
        let mut command = if per_root == 1 {
            let mut c = Command::new("sleep");
            c.arg("3600");
            c
        } else {
            let script = format!(
                "for i in $(seq {}); do sleep 3600 & done; wait",
                per_root - 1
            );
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        command
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .map(|c| children.0.push(c))
            .expect("spawn helper");
    }
    let pids: Vec<u32> = children.0.iter().map(|c| c.id()).collect();

    // Let the trees form, then time single ticks directly.
    let mut sampler = ProcSampler::new().unwrap();
    for (tag, pid) in pids.iter().enumerate() {
        sampler.watch(tag as u64, *pid);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let processes = loop {
        let mut out = Vec::new();
        sampler.sample(&mut out);
        let total: u64 = out
            .iter()
            .map(|r| match r {
                SampleReport::Usage(u) => u.processes,
                SampleReport::Gone { .. } => 0,
            })
            .sum();
        if total >= roots * per_root || Instant::now() > deadline {
            break total;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ticks = 20;
    let started = Instant::now();
    let mut out = Vec::new();
    for _ in 0..ticks {
        out.clear();
        sampler.sample(&mut out);
    }
    let per_tick = started.elapsed() / ticks;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (reports, cpu, wall) = runtime.block_on(async {
        let (tx, mut rx) = mpsc::channel(4096);
        let handle = spawn(interval, tx).unwrap();
        for (tag, pid) in pids.iter().enumerate() {
            handle.add(tag as u64, *pid).unwrap();
        }
        let counter = tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
        let (cpu0, t0) = (process_cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed());
        drop(handle);
        let reports = counter.await.unwrap();
        (reports, cpu, wall)
    });
    println!(
        "roots={roots} processes={processes} interval={interval:?} measured={:.1}s\n\
         sampler CPU (getrusage): {:.2}% of one core\n\
         one tick over all roots: {:.2} ms ({:.1} us per process)\n\
         reports received: {reports}",
        wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        per_tick.as_secs_f64() * 1e3,
        per_tick.as_secs_f64() * 1e6 / processes.max(1) as f64,
    );
}
