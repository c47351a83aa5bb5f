//! Decodes arbitrary bytes into a group (members, dependencies, readiness, one-shot jobs,
//! members that ignore the stop signal) and a sequence of commands, reloads and process
//! behaviour, runs them through the group simulation and fails on any broken invariant
//! (G1-G5 after every step, G6 at the final shutdown), not only on panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use processcontrol_core::group::sim;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = sim::run(data, false) {
        let story = sim::run(data, true).err().unwrap_or(violation);
        panic!("{story}");
    }
});
