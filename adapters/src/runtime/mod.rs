//! The runtime: one task per supervised process owns its machine, feeds it every input and
//! carries out its effects through the ports.

mod driver;
mod event;
mod handle;
mod status;

pub use event::{exit_reason, now_rfc3339, Event, What};
pub(crate) use handle::Reconfiguration;
pub use handle::{CommandError, Events, Observer, Supervisor};
pub use status::{rfc3339_text, ProbeHistory, Status, Tallies, Verdict, PROBE_HISTORY};

#[cfg(test)]
mod tests;
