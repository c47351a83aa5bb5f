//! # processcontrol-core
//!
//! The decision-making heart of ProcessControl: one pure, deterministic state machine per
//! supervised process. It does no I/O, reads no clock, starts no thread and draws no ambient
//! randomness: inputs come in with the time they happened, effects come out for the adapters to
//! carry out. Every restart trigger (a crash, a failed probe, a resource violation, a manual
//! restart) meets at one decision point, so restarts never overlap and the circuit breaker
//! counts them all.
//!
//! Three vocabularies are kept apart:
//! - [`Input`]: facts in the past tense (`Spawned`, `Exited`, `Probe`...) and commands (`Start`,
//!   `Stop`, `Kill`, `Restart`), each fed with a [`Timestamp`] to [`Machine::handle`];
//! - [`Effect`]: imperatives for the adapter (`Spawn`, `Signal`, `KillGroup`, `Watch`);
//! - [`Notification`]: observations for people and metrics (`Transition`, `Ignored`...).
//!
//! Timers are data: [`Machine::poll_timeout`] gives the single next deadline; the driver sleeps
//! until then and feeds [`Input::Tick`]. See [`Machine`] for the full driving contract and
//! `docs/state-machine.md` for the transition table.
//!
//! # Example: a crash, a backoff, a restart, and the breaker opening
//! ```
//! use std::time::Duration;
//! use processcontrol_core::{
//!     BreakerPolicy, Cooldown, Effect, ExitStatus, Input, Machine, Policy, StateName, Timestamp,
//! };
//!
//! let mut policy = Policy::default();
//! policy.backoff.jitter = 0.0;
//! policy.breaker = BreakerPolicy {
//!     max_restarts: 2,
//!     window: Duration::from_secs(60),
//!     cooldown: Cooldown::Never,
//!     max_cooldown: Duration::from_secs(60),
//! };
//! let mut m = Machine::new(policy).unwrap();
//! let mut now = Timestamp::ZERO;
//!
//! // Start: the machine asks for instance 1.
//! let out = m.handle(now, Input::Start);
//! let Some(Effect::Spawn { instance, .. }) = out.effects.iter().next().copied() else { panic!() };
//! m.handle(now, Input::Spawned { instance, pid: 100 });
//! assert_eq!(m.state(), StateName::Running);
//!
//! for round in 0..3 {
//!     // The child crashes; once all its processes are gone the machine backs off.
//!     let instance = m.instance().unwrap();
//!     m.handle(now, Input::Exited { instance, status: ExitStatus::Code(1) });
//!     m.handle(now, Input::Gone { instance });
//!     if round == 2 {
//!         // The third restart in the window would exceed max_restarts = 2.
//!         break;
//!     }
//!     assert_eq!(m.state(), StateName::Restarting);
//!     // Sleep until the deadline the machine asks for, then tick.
//!     now = m.poll_timeout().unwrap().at;
//!     let out = m.handle(now, Input::Tick);
//!     let Some(Effect::Spawn { instance, .. }) = out.effects.iter().next().copied() else { panic!() };
//!     m.handle(now, Input::Spawned { instance, pid: 101 + round });
//! }
//! // Backoff doubled from 100 ms; the third crash tripped the breaker for good.
//! assert_eq!(now, Timestamp::from_millis(300));
//! assert_eq!(m.state(), StateName::BreakerOpen);
//! assert_eq!(m.poll_timeout(), None);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod breaker;
pub mod group;
mod health;
mod input;
mod limits;
mod machine;
mod output;
mod policy;
mod signal;
#[cfg(feature = "sim")]
pub mod sim;
mod time;
pub mod units;

pub use group::{
    Condition, Group, GroupConfig, GroupConfigError, GroupConfigErrors, GroupEffect,
    GroupIgnoreReason, GroupInput, GroupNotification, GroupOutcome, GroupPolicy, MemberConfig,
    MemberId, Observed, ReloadReport,
};
pub use input::{
    ExitStatus, Input, Instance, Pid, ProbeFailure, ProbeResult, ProbeRole, RestartCause,
    SpawnError, Usage,
};
pub use machine::{Machine, KILL_RETRY};
pub use output::{
    Bounded, BreakerStatus, Cause, Deadline, DeadlineKind, Effect, IgnoreReason, Notification,
    Outcome, Roles, SpawnKind, StateName,
};
pub use policy::{
    BackoffPolicy, BreakerPolicy, Cooldown, ExitCodes, HealthPolicy, LimitAction, LimitRule,
    LimitsPolicy, Policy, PolicyError, PolicyErrors, Resource, RestartPolicy, StopPolicy,
    Thresholds,
};
pub use signal::{Signal, UnknownSignal};
pub use time::Timestamp;
