//! Supervising real processes: a process specification, the real ports (launcher, log
//! capture, probes, sampler) behind the runtime, and the host they share.

mod all;
mod describe;
pub mod descriptors;
mod group;
mod host;
mod leftovers;
mod notify_watch;
mod orders;
mod os_processes;
mod spec;
pub mod wait;
mod watchers;

pub use describe::{Describe, Detail, LimitDetail, ProbeDetail, ProbeSettings};
pub(crate) use group::member_config;
pub use group::{Group, GroupError, GroupMachine, Member, MemberStatus, ReloadReport, Summary};
pub use host::{check_spec, Host, HostConfig, SuperviseError};
pub use leftovers::{clean_up_dead_supervisors, Leftovers};
pub use orders::{Answer, Order};
/// When a dependent may start; decided by the core's group machine.
pub use processcontrol_core::{Condition, GroupPolicy};
pub use spec::{
    CgroupSpec, CheckSpec, Echo, LogSpec, NotifySpec, ProbeSpec, ProbeSpecs, ProcessSpec,
    SpecErrors, SpecProblem,
};
