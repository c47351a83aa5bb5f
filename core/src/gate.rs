//! The start gate of a process that depends on others: the decision of when it may start.
//!
//! A group starts a dependent only once each of its dependencies meets its condition
//! (`started`, `healthy` or `completed`). Which dependency is awaited, whether what was seen of
//! it meets the condition, and when the gate opens are decided here, from observations the
//! adapter passes in; the adapter only watches statuses and, when told, sends the start.
//!
//! Dependencies are taken in the configured order (the adapter shows the gate the status of
//! the one it names), and one that has met its condition stays met: a database that restarts after its dependent started does not hold the dependent
//! back (restarting dependents when a dependency restarts is another feature, not this one).

use std::fmt;

use crate::output::StateName;

/// When a dependency counts as met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Condition {
    /// It is running.
    Started,
    /// It is running and ready (its readiness check passed; without one, running is ready).
    Healthy,
    /// It finished successfully, for good, and nothing of it remains (a one-shot job such as
    /// a migration).
    Completed,
}

impl Condition {
    /// The name users write in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }

    /// Whether a dependency seen in `seen` meets this condition.
    pub fn met(self, seen: &Observed) -> bool {
        match self {
            Condition::Started => seen.state == StateName::Running,
            Condition::Healthy => {
                seen.state == StateName::Running && (seen.ready || !seen.has_readiness)
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

/// What was seen of a dependency: the parts of its status that conditions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its state.
    pub state: StateName,
    /// Whether it is ready.
    pub ready: bool,
    /// Whether it has a readiness check at all (without one, running means ready).
    pub has_readiness: bool,
    /// Whether an instance of it still exists (a final exit is not complete until its last
    /// process is gone).
    pub has_instance: bool,
}

/// Where a gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState<'a> {
    /// Waiting for `dependency` to meet `condition`.
    Waiting {
        /// The dependency's name.
        dependency: &'a str,
        /// What it must become.
        condition: Condition,
    },
    /// Every dependency has met its condition: start the process (once).
    Open,
}

/// The start gate of one process.
#[derive(Clone, Debug)]
pub struct Gate {
    dependencies: Vec<(String, Condition)>,
    /// How many dependencies, from the first, have met their condition.
    met: usize,
}

impl Gate {
    /// A gate over `dependencies`, in the order they must be met. Without any, it is open.
    pub fn new(dependencies: Vec<(String, Condition)>) -> Self {
        Gate {
            dependencies,
            met: 0,
        }
    }

    /// What the gate is waiting for, or that it is open.
    pub fn state(&self) -> GateState<'_> {
        match self.dependencies.get(self.met) {
            Some((dependency, condition)) => GateState::Waiting {
                dependency,
                condition: *condition,
            },
            None => GateState::Open,
        }
    }

    /// Takes in what was seen of the awaited dependency (the one [`Gate::state`] names).
    /// Returns whether the gate moved on: that dependency now counts as met, and
    /// [`Gate::state`] names the next one or says the gate is open. An open gate stays open.
    pub fn observe(&mut self, seen: &Observed) -> bool {
        match self.dependencies.get(self.met) {
            Some((_, condition)) if condition.met(seen) => {
                self.met += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: StateName) -> Observed {
        Observed {
            state,
            ready: false,
            has_readiness: false,
            has_instance: state != StateName::Exited,
        }
    }

    #[test]
    fn conditions() {
        use Condition::*;
        use StateName::*;
        assert!(Started.met(&seen(Running)));
        assert!(!Started.met(&seen(Starting)));
        // Healthy: ready, or running without a readiness check.
        assert!(Healthy.met(&seen(Running)));
        let unready = Observed {
            has_readiness: true,
            ..seen(Running)
        };
        assert!(!Healthy.met(&unready));
        assert!(Healthy.met(&Observed {
            ready: true,
            ..unready
        }));
        // Completed: exited for good and nothing left; failed is not completed.
        assert!(Completed.met(&seen(Exited)));
        assert!(!Completed.met(&Observed {
            has_instance: true,
            ..seen(Exited)
        }));
        assert!(!Completed.met(&seen(Failed)));
        assert!(!Completed.met(&seen(Running)));
    }

    #[test]
    fn dependencies_are_met_in_order_and_stay_met() {
        let mut gate = Gate::new(vec![
            ("db".into(), Condition::Healthy),
            ("migrate".into(), Condition::Completed),
        ]);
        assert_eq!(
            gate.state(),
            GateState::Waiting {
                dependency: "db",
                condition: Condition::Healthy,
            }
        );
        assert!(!gate.observe(&seen(StateName::Starting)));
        assert!(gate.observe(&seen(StateName::Running)));
        assert_eq!(
            gate.state(),
            GateState::Waiting {
                dependency: "migrate",
                condition: Condition::Completed,
            }
        );
        // Running does not complete the migration; its exit, with nothing left, does.
        assert!(!gate.observe(&seen(StateName::Running)));
        assert!(gate.observe(&seen(StateName::Exited)));
        assert_eq!(gate.state(), GateState::Open);
        assert!(!gate.observe(&seen(StateName::Stopped)));
        assert_eq!(gate.state(), GateState::Open);
    }

    #[test]
    fn the_same_dependency_twice_is_awaited_twice() {
        let mut gate = Gate::new(vec![
            ("db".into(), Condition::Started),
            ("db".into(), Condition::Healthy),
        ]);
        let running_unready = Observed {
            has_readiness: true,
            ..seen(StateName::Running)
        };
        assert!(gate.observe(&running_unready));
        assert!(!gate.observe(&running_unready));
        assert!(gate.observe(&Observed {
            ready: true,
            ..running_unready
        }));
        assert_eq!(gate.state(), GateState::Open);
    }

    #[test]
    fn no_dependency_is_open() {
        assert_eq!(Gate::new(Vec::new()).state(), GateState::Open);
    }
}
