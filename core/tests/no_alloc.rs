//! The hot path allocates nothing: a counting allocator watches a long run of inputs on a
//! running machine (probes, samples, ticks, and crash/restart cycles).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use processcontrol_core::{
    ExitStatus, Input, LimitAction, LimitRule, Machine, Policy, ProbeFailure, ProbeResult,
    ProbeRole, Resource, Thresholds, Timestamp, Usage,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread is counted: the test harness allocates on its threads too.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn handling_inputs_allocates_nothing() {
    let mut p = Policy::default();
    p.health.liveness = Some(Thresholds::default());
    p.health.readiness = Some(Thresholds::default());
    p.limits.rules = vec![LimitRule {
        resource: Resource::Memory,
        max: 100,
        sustain: Duration::ZERO,
        action: LimitAction::Restart,
    }];
    p.breaker.max_restarts = 1000;
    p.breaker.window = Duration::from_millis(1);
    p.backoff.initial = Duration::from_millis(1);
    p.backoff.max = Duration::from_millis(3);
    let mut m = Machine::new(p).unwrap();
    let mut now = Timestamp::ZERO;
    m.handle(now, Input::Start);
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut restarts = 0;
    for i in 0..100_000u32 {
        now = now.saturating_add(Duration::from_millis(1));
        let input = match (m.instance(), m.pid(), m.up_since()) {
            (None, _, _) => Input::Tick,
            (Some(instance), None, _) => Input::Spawned { instance, pid: i },
            (Some(instance), Some(_), None) => Input::Gone { instance },
            (Some(instance), Some(_), Some(_)) => match i % 5 {
                0 => Input::Probe {
                    instance,
                    role: ProbeRole::Liveness,
                    result: ProbeResult::Pass,
                },
                1 => Input::Probe {
                    instance,
                    role: ProbeRole::Readiness,
                    result: ProbeResult::Fail(ProbeFailure::Timeout),
                },
                2 => Input::Sampled {
                    instance,
                    usage: Usage {
                        memory: u64::from(i % 200),
                        ..Usage::default()
                    },
                },
                3 => Input::Tick,
                _ => Input::Exited {
                    instance,
                    status: ExitStatus::Code(1),
                },
            },
        };
        let out = m.handle(now, input);
        restarts += out.effects.len();
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(false));
    assert!(
        m.restarts() > 1000,
        "the run exercised restarts ({})",
        m.restarts()
    );
    assert!(restarts > 0);
    assert_eq!(after - before, 0, "allocations on the hot path");
}

/// The group machine allocates nothing for observations and ticks, nor for stopping and
/// starting everything once its vectors have grown: only a change of membership allocates.
#[test]
fn the_group_machine_allocates_nothing_for_observations() {
    use processcontrol_core::{
        Condition, Group, GroupConfig, GroupInput, GroupOutcome, GroupPolicy, MemberConfig,
        Observed, StateName,
    };
    let members = (0..200)
        .map(|i| MemberConfig {
            name: format!("p{i}"),
            depends_on: if i % 4 == 3 {
                vec![(format!("p{}", i - 1), Condition::Healthy)]
            } else {
                Vec::new()
            },
            fingerprint: 0,
            has_readiness: i % 2 == 0,
        })
        .collect();
    let mut g = Group::new(GroupPolicy::default());
    let mut out = GroupOutcome::default();
    let mut now = Timestamp::ZERO;
    g.handle(
        now,
        GroupInput::Apply(GroupConfig::new(members).unwrap()),
        &mut out,
    );
    let ids = g.members().to_vec();
    let life = |n: u64| {
        let (state, ready, has_instance) = match n % 4 {
            0 => (StateName::Starting, false, true),
            1 => (StateName::Running, false, true),
            2 => (StateName::Running, true, true),
            _ => (StateName::Stopped, false, false),
        };
        Observed {
            state,
            ready,
            has_instance,
            newest: n / 4 + 1,
        }
    };
    // Warm up: every vector reaches its working size.
    let mut step = |g: &mut Group, out: &mut GroupOutcome, i: u64| {
        now = now.saturating_add(Duration::from_millis(1));
        let input = match i % 1000 {
            500 => GroupInput::StopAll,
            501 => GroupInput::StartAll,
            502 => GroupInput::Tick,
            _ => GroupInput::Observed {
                member: ids[(i as usize * 7) % ids.len()],
                seen: life(i / 200),
            },
        };
        g.handle(now, input, out);
    };
    for i in 0..5_000 {
        step(&mut g, &mut out, i);
    }
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 5_000..50_000 {
        step(&mut g, &mut out, i);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNTING.with(|c| c.set(false));
    assert_eq!(allocations, 0);
}
