//! # ProcessControl
//!
//! A process supervisor: it starts programs, watches their health and resource use, restarts
//! them with backoff when they crash or fail, stops restart loops with a circuit breaker, and
//! shuts them down gracefully, reaching their whole process tree.
//!
//! Every decision is made by one pure state machine per process ([`core`]); the tokio
//! adapters ([`adapters`]) only carry out its effects. This crate re-exports what an
//! embedding program needs.
//!
//! ```no_run
//! use std::time::Duration;
//! use processcontrol::{ProcessSpec, ProbeSpec, RestartPolicy, StateName, Supervisor};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let web = Supervisor::spawn(
//!     ProcessSpec::new("web", ["./server", "--port", "8080"])
//!         .restart(RestartPolicy::OnFailure)
//!         .liveness(ProbeSpec::http("http://127.0.0.1:8080/healthz").period(Duration::from_secs(5))),
//! )?;
//! let mut events = web.subscribe();
//! web.wait_for(|s| s.state == StateName::Running).await?;
//! web.restart()?;
//! while let Ok(event) = events.recv().await {
//!     println!("{}", event.to_json_line());
//! #   break;
//! }
//! let last = web.shutdown().await; // SIGTERM, 10 s grace, then SIGKILL to the whole tree
//! println!("{:?}", last.state);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use processcontrol_adapters as adapters;
pub use processcontrol_core as core;

pub use processcontrol_adapters::runtime::{CommandError, Event, Events, Status, Supervisor, What};
pub use processcontrol_adapters::supervise::{
    CgroupSpec, CheckSpec, Echo, Host, HostConfig, LogSpec, NotifySpec, ProbeSpec, ProcessSpec,
    SpecErrors, SuperviseError,
};
pub use processcontrol_core::{
    BackoffPolicy, BreakerPolicy, Cooldown, ExitStatus, LimitAction, LimitRule, Policy, Resource,
    RestartPolicy, Signal, StateName,
};
