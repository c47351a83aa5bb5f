//! Inputs per second through the group machine with 500 members, a tenth of them depending on
//! an earlier one (`healthy`): members going through start, running, ready, crash and respawn,
//! each observation re-checking its dependents' gates, with a stop and a start of everything
//! every 10,000 inputs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use processcontrol_core::{
    Condition, Group, GroupConfig, GroupEffect, GroupInput, GroupOutcome, GroupPolicy,
    MemberConfig, Observed, StateName, Timestamp,
};

const MEMBERS: usize = 500;
const INPUTS: u64 = 100_000;

fn group() -> (Group, GroupOutcome) {
    let members = (0..MEMBERS)
        .map(|i| MemberConfig {
            name: format!("p{i}"),
            depends_on: if i % 10 == 9 {
                vec![(format!("p{}", i - 9), Condition::Healthy)]
            } else {
                Vec::new()
            },
            fingerprint: i as u64,
            has_readiness: i % 2 == 0,
        })
        .collect();
    let mut g = Group::new(GroupPolicy::default());
    let mut out = GroupOutcome::default();
    g.handle(
        Timestamp::ZERO,
        GroupInput::Apply(GroupConfig::new(members).unwrap()),
        &mut out,
    );
    (g, out)
}

/// The n-th observation of a member cycles through a life: spawning, running, ready, crashed.
fn life(n: u64) -> Observed {
    let newest = n / 4 + 1;
    let (state, ready, has_instance) = match n % 4 {
        0 => (StateName::Starting, false, true),
        1 => (StateName::Running, false, true),
        2 => (StateName::Running, true, true),
        _ => (StateName::Restarting, false, false),
    };
    Observed {
        state,
        ready,
        has_instance,
        newest,
    }
}

fn drive(g: &mut Group, out: &mut GroupOutcome, now: &mut Timestamp) -> usize {
    let ids: Vec<_> = g.members().to_vec();
    let mut effects = 0;
    for i in 0..INPUTS {
        *now = now.saturating_add(Duration::from_micros(10));
        let input = match i % 10_000 {
            5_000 => GroupInput::StopAll,
            5_001 => GroupInput::StartAll,
            _ => {
                let member = ids[(i as usize * 7) % MEMBERS];
                GroupInput::Observed {
                    member,
                    seen: life(i / MEMBERS as u64),
                }
            }
        };
        g.handle(*now, input, out);
        effects += out
            .effects
            .iter()
            .filter(|e| matches!(e, GroupEffect::Start(_) | GroupEffect::Stop(_)))
            .count();
    }
    effects
}

fn bench(c: &mut Criterion) {
    let mut bench = c.benchmark_group("group");
    bench.throughput(Throughput::Elements(INPUTS));
    bench.bench_function("500 members, mixed inputs", |b| {
        let (mut g, mut out) = group();
        let mut now = Timestamp::ZERO;
        b.iter(|| black_box(drive(&mut g, &mut out, &mut now)))
    });
    bench.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
