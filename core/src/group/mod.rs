//! The group machine: start order, stop order, reload and shutdown of many processes, decided
//! as purely as one process is. See [`Group`] and docs/state-machine.md, "The group machine".

mod condition;
mod config;
mod machine;
#[cfg(feature = "sim")]
pub mod sim;

pub use condition::{Condition, Observed};
pub use config::{GroupConfig, GroupConfigError, GroupConfigErrors, MemberConfig};
pub use machine::{
    shutdown_bound, Group, GroupEffect, GroupIgnoreReason, GroupInput, GroupNotification,
    GroupOutcome, GroupPolicy, MemberId, ReloadReport,
};
