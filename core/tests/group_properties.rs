//! Property tests of the group machine over random dependency graphs (file order unlike
//! dependency order, readiness, one-shot jobs, members that ignore the stop signal) and random
//! commands, reloads and process behaviour, through the group simulation harness. After every
//! step it checks G1-G5 (docs/state-machine.md, "The group machine"); every run ends with a
//! shutdown that must complete within `shutdown_grace` plus one kill retry (G6). Cases per
//! property: 10,000 (override with PROPTEST_CASES).

use proptest::prelude::*;

mod support;
use support::config;

use processcontrol_core::group::sim;

proptest! {
    #![proptest_config(config())]

    /// G1-G6 hold after every step of any run.
    #[test]
    fn group_invariants_hold(data in prop::collection::vec(any::<u8>(), 0..800)) {
        if let Err(violation) = sim::run(&data, false) {
            let violation = sim::run(&data, true).err().unwrap_or(violation);
            prop_assert!(false, "{violation}");
        }
    }
}

/// The generator reaches what the invariants are about: gated starts, ordered stops, reloads
/// that reconfigure and remove members, and shutdowns cut by the grace. A property suite whose
/// runs never got there would pass for nothing.
#[test]
fn the_generator_reaches_the_interesting_cases() {
    let mut totals = sim::Stats::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..2_000 {
        let data: Vec<u8> = (0..600)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let stats = sim::run(&data, false).expect("invariants hold");
        totals.starts += stats.starts;
        totals.ordered_stops += stats.ordered_stops;
        totals.reloads += stats.reloads;
        totals.reconfigured += stats.reconfigured;
        totals.forgotten += stats.forgotten;
        totals.grace_expired += stats.grace_expired;
    }
    println!("{totals:?}");
    assert!(totals.starts > 10_000, "{totals:?}");
    assert!(totals.ordered_stops > 5_000, "{totals:?}");
    assert!(totals.reconfigured > 1_000, "{totals:?}");
    assert!(totals.forgotten > 500, "{totals:?}");
    assert!(totals.grace_expired > 200, "{totals:?}");
}
