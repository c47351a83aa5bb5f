//! Many supervised processes under one name space: started in dependency order (each one once
//! its dependencies meet their condition), stopped in reverse order, and reloaded by diff so
//! that unchanged processes keep running untouched. Each process is still decided by its own
//! machine; the group only holds back `Start` until a dependency is met.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processcontrol_core::{Condition, Gate, GateState, Observed, StateName};
use serde::Serialize;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use super::host::{Host, SuperviseError};
use super::spec::ProcessSpec;
use crate::runtime::{CommandError, Event, Status, Supervisor};

/// How many recent events the group keeps for `events` without `--follow`.
const HISTORY: usize = 1000;

/// One process of a group, as configured.
#[derive(Clone, Debug)]
pub struct Member {
    /// What to run and how.
    pub spec: ProcessSpec,
    /// Processes that must meet a condition before this one starts.
    pub depends_on: Vec<(String, Condition)>,
    /// Changes exactly when the process's configuration changes: a reload restarts it then.
    pub fingerprint: u64,
}

/// A process's status within the group.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// The process's own status.
    #[serde(flatten)]
    pub status: Status,
    /// Why it has not started yet, while it waits for a dependency.
    pub blocked: Option<String>,
    /// Seconds it has been up.
    #[serde(rename = "uptime")]
    pub uptime_secs: Option<u64>,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Started because they are new.
    pub added: Vec<String>,
    /// Stopped because they are gone from the configuration.
    pub removed: Vec<String>,
    /// Restarted with their new configuration.
    pub changed: Vec<String>,
    /// Left running untouched.
    pub unchanged: Vec<String>,
}

/// Why a group command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No process has that name.
    #[error("no process named {0:?}")]
    Unknown(String),
    /// The process's task has ended.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A new process could not be supervised.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
}

struct Running {
    member: Member,
    sup: Arc<Supervisor>,
    blocked: watch::Receiver<Option<String>>,
    /// Holds back the start until the dependencies are met; `None` until every member of the
    /// same reload exists.
    gate: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(gate) = &self.gate {
            gate.abort();
        }
    }
}

/// Many processes supervised together.
pub struct Group {
    host: Arc<Host>,
    members: Mutex<BTreeMap<String, Running>>,
    /// Woken when members are added, for gates whose dependency is missing: a reload takes a
    /// changed process out before it puts its new version in.
    added: Notify,
    /// Configuration order, for start and (reversed) stop.
    order: Mutex<Vec<String>>,
    events: broadcast::Sender<Arc<Event>>,
    history: Arc<Mutex<VecDeque<Arc<Event>>>>,
    counters: Arc<Mutex<Counters>>,
    /// Copies the host's events into the group's history, counters and stream.
    forwarder: JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Totals since the group started, for metrics.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Transitions into `restarting`, by process and cause.
    pub restarts: BTreeMap<(String, &'static str), u64>,
    /// Probe verdicts that failed (liveness and startup thresholds reached, readiness lost),
    /// by process and probe.
    pub probe_failures: BTreeMap<(String, &'static str), u64>,
}

impl Group {
    /// An empty group on `host`.
    pub fn new(host: Arc<Host>) -> Arc<Group> {
        let events = broadcast::channel(4096).0;
        let history = Arc::default();
        let counters = Arc::default();
        let forwarder = tokio::spawn(forward(
            host.subscribe_all(),
            events.clone(),
            Arc::clone(&history),
            Arc::clone(&counters),
        ));
        Arc::new(Group {
            host,
            members: Mutex::new(BTreeMap::new()),
            added: Notify::new(),
            order: Mutex::new(Vec::new()),
            events,
            history,
            counters,
            forwarder,
        })
    }

    /// Makes the group run exactly `members`: new ones are started (after their
    /// dependencies), removed ones stopped, changed ones restarted with their new
    /// configuration, unchanged ones left alone. The first call starts everything.
    pub async fn apply(self: &Arc<Self>, members: Vec<Member>) -> Result<ReloadReport, GroupError> {
        let mut report = ReloadReport::default();
        let wanted: BTreeMap<String, Member> = members
            .iter()
            .map(|m| (m.spec.name.clone(), m.clone()))
            .collect();
        // Stop what is removed or changed, dependents first.
        let current_order = self.order.lock().expect("never poisoned").clone();
        for name in current_order.iter().rev() {
            let old = {
                let members = self.members.lock().expect("never poisoned");
                members.get(name).map(|r| r.member.fingerprint)
            };
            match (old, wanted.get(name)) {
                (Some(_), None) => {
                    report.removed.push(name.clone());
                    self.remove(name).await;
                }
                (Some(old), Some(new)) if old != new.fingerprint => {
                    report.changed.push(name.clone());
                    self.remove(name).await;
                }
                (Some(_), Some(_)) => report.unchanged.push(name.clone()),
                (None, _) => {}
            }
        }
        report.unchanged.reverse();
        report.removed.reverse();
        report.changed.reverse();
        // Supervise what is new or changed; then let each start once its dependencies are met
        // (gates start after every new member exists, so a dependency is always found).
        let mut fresh = Vec::new();
        for member in members {
            let name = member.spec.name.clone();
            if self
                .members
                .lock()
                .expect("never poisoned")
                .contains_key(&name)
            {
                continue;
            }
            if !report.changed.contains(&name) {
                report.added.push(name.clone());
            }
            let sup = Arc::new(self.host.add(member.spec.clone())?);
            let (blocked_tx, blocked) = watch::channel(None);
            fresh.push((
                name.clone(),
                sup.clone(),
                member.depends_on.clone(),
                blocked_tx,
            ));
            self.members.lock().expect("never poisoned").insert(
                name,
                Running {
                    member,
                    sup,
                    blocked,
                    gate: None,
                },
            );
        }
        self.added.notify_waiters();
        *self.order.lock().expect("never poisoned") =
            wanted_order(&wanted, &report, &current_order);
        for (name, sup, depends_on, blocked_tx) in fresh {
            let gate = tokio::spawn(gate(self.clone(), sup, depends_on, blocked_tx));
            if let Some(running) = self.members.lock().expect("never poisoned").get_mut(&name) {
                running.gate = Some(gate);
            }
        }
        Ok(report)
    }

    /// The status of every process, in configuration order.
    pub fn status(&self) -> Vec<MemberStatus> {
        let order = self.order.lock().expect("never poisoned").clone();
        let members = self.members.lock().expect("never poisoned");
        order
            .iter()
            .filter_map(|name| members.get(name))
            .map(|r| {
                let mut status = r.sup.status();
                let blocked = r.blocked.borrow().clone();
                if blocked.is_some() && status.state == StateName::Stopped {
                    // Waiting for a dependency is part of starting, as users see it.
                    status.state = StateName::Starting;
                }
                let uptime_secs = status.uptime().map(|d| d.as_secs());
                MemberStatus {
                    status,
                    blocked,
                    uptime_secs,
                }
            })
            .collect()
    }

    /// The names of the processes, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.order.lock().expect("never poisoned").clone()
    }

    /// The supervisor of a process.
    pub fn get(&self, name: &str) -> Result<Arc<Supervisor>, GroupError> {
        let members = self.members.lock().expect("never poisoned");
        members
            .get(name)
            .map(|r| r.sup.clone())
            .ok_or_else(|| GroupError::Unknown(name.to_string()))
    }

    /// Restart and probe-failure totals.
    pub fn counters(&self) -> Counters {
        self.counters.lock().expect("never poisoned").clone()
    }

    /// Every event of every process from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// The most recent events (up to 1000), oldest first, and a receiver for the next ones,
    /// taken together so none is missed or doubled.
    pub fn follow(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let history = self.history.lock().expect("never poisoned");
        (history.iter().cloned().collect(), self.events.subscribe())
    }

    /// Stops every process, dependents first, each waiting until no process of it is left.
    pub async fn shutdown(&self) {
        let order = self.order.lock().expect("never poisoned").clone();
        for name in order.iter().rev() {
            self.remove(name).await;
        }
    }

    /// Stops `name` for good and forgets it.
    async fn remove(&self, name: &str) {
        let running = self.members.lock().expect("never poisoned").remove(name);
        let Some(running) = running else { return };
        let sup = running.sup.clone();
        drop(running);
        match Arc::try_unwrap(sup) {
            Ok(sup) => {
                sup.shutdown().await;
            }
            Err(sup) => {
                // Someone still holds the handle (a request in flight): stop it and wait.
                let _ = sup.stop(None);
                let _ =
                    tokio::time::timeout(Duration::from_secs(3600), sup.wait_for(Status::at_rest))
                        .await;
            }
        }
    }
}

/// Configuration order after a reload: the old order for what stayed, new names appended in
/// the order they were given.
fn wanted_order(
    wanted: &BTreeMap<String, Member>,
    report: &ReloadReport,
    old: &[String],
) -> Vec<String> {
    let mut order: Vec<String> = old
        .iter()
        .filter(|n| wanted.contains_key(*n))
        .cloned()
        .collect();
    for name in &report.added {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    order
}

/// Holds back `Start` until the core's gate opens, publishing what it waits for meanwhile.
/// It decides nothing: it shows the gate each status of the awaited dependency.
async fn gate(
    group: Arc<Group>,
    sup: Arc<Supervisor>,
    depends_on: Vec<(String, Condition)>,
    blocked: watch::Sender<Option<String>>,
) {
    let mut gate = Gate::new(depends_on);
    while let GateState::Waiting {
        dependency,
        condition,
    } = gate.state()
    {
        let dependency = dependency.to_owned();
        let reason = format!("waiting for {dependency} to be {condition}");
        blocked.send_replace(Some(reason.clone()));
        // Registered before looking, so an addition right after the look is not missed.
        let added = group.added.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        let found = {
            let members = group.members.lock().expect("never poisoned");
            members.get(&dependency).map(|r| {
                let has_readiness = r.member.spec.probes.readiness.is_some();
                (r.sup.watch_status(), has_readiness)
            })
        };
        let Some((mut status, has_readiness)) = found else {
            // Validation rejects unknown dependencies, but a reload takes a changed process
            // out before it adds its new version, and may remove one for good.
            blocked.send_replace(Some(format!("{reason} (no such process)")));
            added.await;
            continue;
        };
        loop {
            let seen = {
                let s = status.borrow_and_update();
                Observed {
                    state: s.state,
                    ready: s.ready,
                    has_readiness,
                    has_instance: s.instance.is_some(),
                }
            };
            if gate.observe(&seen) {
                break;
            }
            if status.changed().await.is_err() {
                // That supervisor ended (a reload replaced or removed it): look again.
                break;
            }
        }
    }
    blocked.send_replace(None);
    let _ = sup.start();
}

/// Copies the host's events into the group's stream, history and counters.
async fn forward(
    mut events: broadcast::Receiver<Arc<Event>>,
    to: broadcast::Sender<Arc<Event>>,
    history: Arc<Mutex<VecDeque<Arc<Event>>>>,
    counters: Arc<Mutex<Counters>>,
) {
    use crate::runtime::What;
    loop {
        match events.recv().await {
            Ok(event) => {
                if matches!(event.what, What::Ignored { .. }) {
                    continue;
                }
                {
                    let mut c = counters.lock().expect("never poisoned");
                    let process = event.process.to_string();
                    match &event.what {
                        What::Transition {
                            to: StateName::Restarting,
                            cause,
                            ..
                        } => {
                            *c.restarts.entry((process.clone(), *cause)).or_default() += 1;
                            if let Some(probe) = cause
                                .strip_suffix("_failed")
                                .filter(|p| *p == "liveness" || *p == "startup")
                            {
                                let probe = if probe == "liveness" {
                                    "liveness"
                                } else {
                                    "startup"
                                };
                                *c.probe_failures.entry((process, probe)).or_default() += 1;
                            }
                        }
                        What::Ready { ready: false, .. } => {
                            *c.probe_failures.entry((process, "readiness")).or_default() += 1;
                        }
                        _ => {}
                    }
                }
                {
                    let mut h = history.lock().expect("never poisoned");
                    if h.len() == HISTORY {
                        h.pop_front();
                    }
                    h.push_back(event.clone());
                }
                let _ = to.send(event);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "group event stream fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
