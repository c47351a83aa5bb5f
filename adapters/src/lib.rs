//! Tokio adapters of ProcessControl: they carry out the core's effects and turn what happens
//! to real processes into events for the core. They never decide.
#![warn(missing_docs)]

pub mod cgroup;
pub mod config;
pub mod control;
pub mod http;
pub mod human;
pub mod logs;
pub mod metrics;
pub mod narrate;
pub mod notify;
pub mod ports;
pub mod probe;
pub mod process;
pub mod rundir;
pub mod runtime;
pub mod sample;
pub mod supervise;
