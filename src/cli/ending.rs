//! `up --exit-on-end` and `up --exit-code-from NAME` (compose's `--abort-on-container-exit`
//! and `--exit-code-from`): the daemon ends when every process is done, or when NAME is, and
//! exits with the status that says how it went. It only watches statuses; the main loop
//! shuts the group down.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use processcontrol::adapters::supervise::{Group, MemberStatus};
use processcontrol::{Event, StateName};
use tokio::sync::{broadcast, oneshot};

use super::exit;
use super::systemd::Systemd;

/// When `up` ends by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndWhen {
    /// When every process is done: 0 if each ended well, else the first failure's status.
    All,
    /// When this process is done, with its exit status.
    Process(String),
}

/// Watches statuses for the end.
pub struct Ending {
    when: EndWhen,
    /// Processes whose circuit breaker never closes again (`cooldown = "never"`): an open
    /// breaker is their end.
    gives_up: HashSet<String>,
    /// Processes seen doing something: one that is stopped before it ever started is waiting
    /// to start, not done.
    seen: HashSet<String>,
}

impl Ending {
    /// Ends as `when` says; `gives_up` names the processes whose open breaker is final.
    pub fn new(when: EndWhen, gives_up: HashSet<String>) -> Ending {
        Ending {
            when,
            gives_up,
            seen: HashSet::new(),
        }
    }

    /// The exit status of `up` once the end has come.
    pub fn check(&mut self, statuses: &[MemberStatus]) -> Option<u8> {
        let mut done = BTreeMap::new();
        for s in statuses {
            let name = &*s.status.name;
            if s.status.state != StateName::Stopped || s.status.exit.is_some() {
                self.seen.insert(name.to_string());
            }
            if let Some(code) = self.outcome(s) {
                done.insert(name, code);
            }
        }
        match &self.when {
            EndWhen::Process(name) => done.get(name.as_str()).copied(),
            EndWhen::All if done.len() == statuses.len() => Some(
                statuses
                    .iter()
                    .map(|s| done[&*s.status.name])
                    .find(|code| *code != 0)
                    .unwrap_or(0),
            ),
            EndWhen::All => None,
        }
    }

    /// A process's exit status, if it is done: at rest after it ran, or behind a breaker that
    /// stays open.
    fn outcome(&self, s: &MemberStatus) -> Option<u8> {
        let status = &s.status;
        let name = &*status.name;
        if s.blocked.is_some() || !self.seen.contains(name) {
            return None;
        }
        let own = |default: u8| status.exit.map_or(default, exit::from_status);
        match status.state {
            StateName::BreakerOpen if self.gives_up.contains(name) => Some(exit::GAVE_UP),
            _ if !status.at_rest() => None,
            StateName::Exited => Some(own(0)),
            // Stopped by a command: a stop is not a failure.
            StateName::Stopped => Some(0),
            _ => Some(own(exit::GAVE_UP)),
        }
    }
}

/// Follows the group's events for systemd and for the end: after each event (and once more
/// shortly after the last of a burst, since a status is published just after its event) it
/// looks at every status. Sends `up`'s exit status on `ended` when the end comes.
pub async fn follow(
    group: Arc<Group>,
    mut events: broadcast::Receiver<Arc<Event>>,
    mut systemd: Option<Systemd>,
    mut ending: Option<Ending>,
    ended: oneshot::Sender<u8>,
) {
    let mut settling = false;
    loop {
        let statuses = group.status();
        if let Some(systemd) = systemd.as_mut() {
            systemd.update(&statuses);
        }
        if let Some(code) = ending.as_mut().and_then(|e| e.check(&statuses)) {
            let _ = ended.send(code);
            return;
        }
        let next = if settling {
            tokio::time::timeout(Duration::from_millis(50), events.recv()).await
        } else {
            Ok(events.recv().await)
        };
        settling = match next {
            Err(_quiet) => false,
            Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => true,
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
        };
    }
}
