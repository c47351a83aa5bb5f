//! When a dependency counts as met: the three conditions users write in `depends_on`, judged
//! from what was last seen of the dependency.

use std::fmt;

use crate::machine::Machine;
use crate::output::StateName;

/// When a dependency counts as met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Condition {
    /// It is running.
    Started,
    /// It is running and ready. Readiness is the member's *effective* one: a readiness probe,
    /// or `READY=1` for a `notify` process; without either, running is ready.
    Healthy,
    /// It finished successfully, for good, and nothing of it remains (a one-shot job such as
    /// a migration).
    Completed,
}

impl Condition {
    /// Every condition, in the order users meet them.
    pub const ALL: [Condition; 3] = [Condition::Started, Condition::Healthy, Condition::Completed];

    /// The name users write in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }

    /// Whether a dependency seen as `seen` meets this condition; `has_readiness` says whether
    /// it has a readiness condition at all.
    pub fn met(self, seen: &Observed, has_readiness: bool) -> bool {
        match self {
            Condition::Started => seen.state == StateName::Running,
            Condition::Healthy => {
                seen.state == StateName::Running && (seen.ready || !has_readiness)
            }
            Condition::Completed => seen.state == StateName::Exited && !seen.has_instance,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was last seen of a member: the parts of its process machine's status that the group
/// decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its state.
    pub state: StateName,
    /// Whether it is ready.
    pub ready: bool,
    /// Whether an instance of it exists (spawning, up or being stopped).
    pub has_instance: bool,
    /// The newest instance it ever spawned (0: none yet). It only grows: a group that sent a
    /// start knows from it that what it sees is of a later run, even if it missed the states
    /// in between.
    pub newest: u64,
}

impl Observed {
    /// What a group sees of a member's process machine.
    pub fn of(machine: &Machine) -> Observed {
        Observed {
            state: machine.state(),
            ready: machine.ready(),
            has_instance: machine.instance().is_some(),
            newest: machine.newest().map_or(0, |i| i.0),
        }
    }

    /// A member that was never started.
    pub const STOPPED: Observed = Observed {
        state: StateName::Stopped,
        ready: false,
        has_instance: false,
        newest: 0,
    };

    /// No instance exists and none is coming without a command: stopped, exited, failed or
    /// killed, with its last process gone. (A breaker that is open is not at rest: its
    /// cooldown may start a trial.) This is the one definition of "at rest" the runtime uses
    /// too.
    pub fn at_rest(&self) -> bool {
        !self.has_instance
            && matches!(
                self.state,
                StateName::Stopped | StateName::Exited | StateName::Failed | StateName::Killed
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: StateName) -> Observed {
        Observed {
            state,
            ready: false,
            has_instance: state != StateName::Exited,
            newest: 1,
        }
    }

    #[test]
    fn conditions() {
        use Condition::*;
        use StateName::*;
        assert!(Started.met(&seen(Running), true));
        assert!(!Started.met(&seen(Starting), false));
        // Healthy: ready, or running without a readiness condition.
        assert!(Healthy.met(&seen(Running), false));
        assert!(!Healthy.met(&seen(Running), true));
        let ready = Observed {
            ready: true,
            ..seen(Running)
        };
        assert!(Healthy.met(&ready, true));
        assert!(!Healthy.met(
            &Observed {
                ready: true,
                ..seen(ShuttingDown)
            },
            true
        ));
        // Completed: exited for good and nothing left; failed is not completed.
        assert!(Completed.met(&seen(Exited), false));
        assert!(!Completed.met(
            &Observed {
                has_instance: true,
                ..seen(Exited)
            },
            false
        ));
        assert!(!Completed.met(&seen(Failed), false));
        assert!(!Completed.met(&seen(Running), false));
    }

    #[test]
    fn at_rest() {
        use StateName::*;
        assert!(Observed::STOPPED.at_rest());
        assert!(seen(Exited).at_rest());
        assert!(!seen(Running).at_rest());
        let no_instance = |state| Observed {
            has_instance: false,
            ..seen(state)
        };
        // An open breaker or a backoff will spawn again without a command.
        assert!(!no_instance(BreakerOpen).at_rest());
        assert!(!no_instance(Restarting).at_rest());
        assert!(no_instance(Killed).at_rest());
        assert!(!Observed {
            has_instance: true,
            ..seen(Killed)
        }
        .at_rest());
    }
}
