//! Decodes arbitrary bytes into a policy and an operation sequence, runs them through the
//! simulation harness and fails on any broken invariant (1-6 and 8, checked after every step,
//! and a final stop that must complete), not only on panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use processcontrol_core::sim;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = sim::run(data, false) {
        let story = sim::run(data, true).err().unwrap_or(violation);
        panic!("{story}");
    }
});
