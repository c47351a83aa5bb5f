//! Events per second through one machine for a realistic mix: mostly probe results, resource
//! samples and timer ticks on a running instance, with a crash, backoff and respawn every 64
//! events. Also prints the size of one machine.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use processcontrol_core::{
    Effect, ExitStatus, Input, LimitAction, LimitRule, Machine, Policy, ProbeResult, ProbeRole,
    Resource, Thresholds, Timestamp, Usage,
};

const EVENTS: u64 = 100_000;

fn policy() -> Policy {
    let mut p = Policy::default();
    p.health.liveness = Some(Thresholds::default());
    p.health.readiness = Some(Thresholds::default());
    p.limits.rules = vec![LimitRule {
        resource: Resource::Memory,
        max: 512 << 20,
        sustain: Duration::from_secs(30),
        action: LimitAction::Restart,
    }];
    p.breaker.max_restarts = u32::MAX / 2;
    p.backoff.initial = Duration::from_millis(1);
    p
}

/// Feeds `EVENTS` inputs, answering spawns like an adapter would.
fn drive(m: &mut Machine, now: &mut Timestamp) -> usize {
    let mut effects = 0;
    let mut pid = 1;
    for i in 0..EVENTS {
        *now = now.saturating_add(Duration::from_micros(100));
        let input = match (m.instance(), i % 64) {
            (None, _) => match m.poll_timeout() {
                Some(d) => {
                    *now = (*now).max(d.at);
                    Input::Tick
                }
                None => Input::Start,
            },
            (Some(instance), _) if m.pid().is_none() => {
                pid += 1;
                Input::Spawned { instance, pid }
            }
            (Some(instance), 0) if m.up_since().is_some() => Input::Exited {
                instance,
                status: ExitStatus::Code(1),
            },
            (Some(instance), _) if m.up_since().is_none() => Input::Gone { instance },
            (Some(instance), n) => match n % 4 {
                0 => Input::Probe {
                    instance,
                    role: ProbeRole::Liveness,
                    result: ProbeResult::Pass,
                },
                1 => Input::Probe {
                    instance,
                    role: ProbeRole::Readiness,
                    result: ProbeResult::Pass,
                },
                2 => Input::Sampled {
                    instance,
                    usage: Usage {
                        memory: 100 << 20,
                        cpu: Some(12),
                        fds: 30,
                        processes: 1,
                        threads: 4,
                    },
                },
                _ => Input::Tick,
            },
        };
        let out = m.handle(*now, black_box(input));
        effects += out
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Spawn { .. }))
            .count();
    }
    effects
}

fn bench(c: &mut Criterion) {
    eprintln!(
        "size_of::<Machine>() = {} bytes, of which Policy = {} bytes",
        std::mem::size_of::<Machine>(),
        std::mem::size_of::<Policy>()
    );
    let mut group = c.benchmark_group("machine");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("realistic_mix", |b| {
        let mut m = Machine::new(policy()).unwrap();
        let mut now = Timestamp::ZERO;
        b.iter(|| drive(&mut m, &mut now))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
