//! Many supervised processes as one group. The core's [`GroupMachine`] decides start order,
//! stop order, reload and shutdown; one owner task holds it with the member handles, feeds it
//! every command, every change of a member and its one deadline, and carries out what it says.
//! Each member is still decided by its own process machine. Nothing here decides: no lock
//! around a decision, no task per member.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use processcontrol_core::{
    Condition, GroupConfig, GroupConfigErrors, GroupEffect, GroupInput, GroupNotification,
    GroupOutcome, GroupPolicy, MemberConfig, MemberId, Observed, StateName,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::describe::{Describe, Detail};
use super::host::{Host, Prepared, SuperviseError};
use super::spec::ProcessSpec;
use crate::logs::LogRing;
use crate::ports::{Clock, TokioClock};
use crate::runtime::{CommandError, Event, Status, Supervisor};

pub use processcontrol_core::Group as GroupMachine;
pub use processcontrol_core::ReloadReport;

/// How many recent events the group keeps for `events` without `--follow`.
const HISTORY: usize = 1000;

/// What the group tells once a whole operation is done: the core's group machine decides when
/// (every start of a boot sent, a reload applied, a shutdown complete); the owner task only
/// reports it, with what it saw of the members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "summary", rename_all = "snake_case")]
pub enum Summary {
    /// Every start of the boot, or of a restart of everything, was sent in dependency order.
    Started {
        /// The processes started, in the order their starts were sent.
        started: Vec<String>,
        /// Those with a readiness condition that were ready by then.
        ready: Vec<String>,
        /// Milliseconds since the boot (or restart) began.
        took_ms: u64,
    },
    /// A reload was applied.
    Reloaded {
        /// What it did.
        report: ReloadReport,
    },
    /// A shutdown completed: nothing is left.
    ShutDown {
        /// The processes that stopped, in the order they came to rest.
        stopped: Vec<String>,
        /// Milliseconds since the shutdown began.
        took_ms: u64,
    },
}

impl Summary {
    /// The line for people: `3 processes up, web ready, in 1.8 s`.
    pub fn text(&self) -> String {
        use crate::narrate::{reload_summary, shutdown_summary, start_summary};
        fn strs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        match self {
            Summary::Started {
                started,
                ready,
                took_ms,
            } => start_summary(started.len(), &strs(ready), Duration::from_millis(*took_ms)),
            Summary::Reloaded { report } => reload_summary(
                &strs(&report.added),
                &strs(&report.changed),
                &strs(&report.removed),
                report.unchanged.len(),
            ),
            Summary::ShutDown { stopped, took_ms } => {
                shutdown_summary(&strs(stopped), Duration::from_millis(*took_ms))
            }
        }
    }
}

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
    /// A process could not be supervised (its spec, log ring or file): nothing was changed.
    #[error(transparent)]
    Supervise(#[from] SuperviseError),
    /// The membership is not valid (duplicate names, unknown dependencies, a cycle).
    #[error("{0}")]
    Config(#[from] GroupConfigErrors),
    /// The group is shutting down and takes no more commands.
    #[error("shutting down")]
    ShuttingDown,
}

/// What the group machine knows of a member. Its readiness is the *effective* one: a
/// readiness probe, or `READY=1` for a `notify` process.
pub(crate) fn member_config(
    spec: &ProcessSpec,
    depends_on: &[(String, Condition)],
    fingerprint: u64,
) -> MemberConfig {
    MemberConfig {
        name: spec.name.clone(),
        depends_on: depends_on.to_vec(),
        fingerprint,
        has_readiness: spec.effective_policy().health.readiness.is_some(),
    }
}

/// A member as status readers see it; written by the owner task only.
#[derive(Clone)]
struct Entry {
    sup: Arc<Supervisor>,
    describe: Arc<Describe>,
    /// What its start waits for (`None` once sent).
    blocked: Arc<Mutex<Option<Arc<str>>>>,
}

/// What a status reader needs of a member, without the member itself: an answer written to a
/// slow client must not keep a removed process's supervisor (and so its task) alive.
#[derive(Clone)]
struct StatusSource {
    status: watch::Receiver<Status>,
    blocked: Arc<Mutex<Option<Arc<str>>>>,
}

/// The members' status sources in configuration order, replaced whole when the membership
/// changes, so a reader takes the list with one reference count.
type Sources = Arc<RwLock<Arc<[StatusSource]>>>;

/// Many processes supervised together.
pub struct Group {
    host: Arc<Host>,
    commands: mpsc::UnboundedSender<Command>,
    /// The members in configuration order, for status and lookups.
    view: Arc<RwLock<Vec<Entry>>>,
    /// The same members, for status readers.
    sources: Sources,
    /// Counts the changes of the membership in `view`.
    membership: watch::Receiver<u64>,
    events: broadcast::Sender<Arc<Event>>,
    history: Arc<Mutex<VecDeque<Arc<Event>>>>,
    summaries: broadcast::Sender<Arc<Summary>>,
    /// Copies the host's events into the group's history and stream.
    forwarder: JoinHandle<()>,
    owner: JoinHandle<()>,
}

impl Drop for Group {
    fn drop(&mut self) {
        self.forwarder.abort();
        self.owner.abort();
    }
}

type Reply<T> = oneshot::Sender<Result<T, GroupError>>;

enum Command {
    Apply(Vec<Member>, Reply<ReloadReport>),
    Start(Option<String>, Reply<Vec<String>>),
    Stop(Option<String>, Option<Duration>, Reply<Vec<String>>),
    RestartAll(Reply<Vec<String>>),
    Shutdown(oneshot::Sender<()>),
}

impl Group {
    /// An empty group on `host`; `policy.shutdown_grace` bounds [`Group::shutdown`].
    pub fn new(host: Arc<Host>, policy: GroupPolicy) -> Arc<Group> {
        let events = broadcast::channel(4096).0;
        let history = Arc::default();
        let forwarder = tokio::spawn(forward(
            host.subscribe_all(),
            events.clone(),
            Arc::clone(&history),
        ));
        let view: Arc<RwLock<Vec<Entry>>> = Arc::default();
        let sources: Sources = Arc::new(RwLock::new(Arc::from([])));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let summaries = broadcast::channel(16).0;
        let (membership_tx, membership) = watch::channel(0);
        let owner = Owner {
            membership: membership_tx,
            host: host.clone(),
            machine: GroupMachine::new(policy),
            out: GroupOutcome::default(),
            slots: Vec::new(),
            view: view.clone(),
            sources: sources.clone(),
            changes_tx,
            clock: TokioClock::new(),
            shutdown_waiters: Vec::new(),
            prepared: BTreeMap::new(),
            grace: None,
            summaries: summaries.clone(),
            booted: false,
            round: None,
            shutdown: None,
        };
        let owner = tokio::spawn(owner.run(commands_rx, changes));
        Arc::new(Group {
            host,
            commands,
            view,
            sources,
            membership,
            events,
            history,
            summaries,
            forwarder,
            owner,
        })
    }

    /// Makes the group run exactly `members`: new ones are started (after their
    /// dependencies), removed ones stopped dependents first, changed ones restarted with their
    /// new configuration (cause `reload`), unchanged ones left alone. The first call starts
    /// everything. Every member is validated and built before anything changes: on an error
    /// nothing did. Reloads are taken one at a time.
    pub async fn apply(&self, members: Vec<Member>) -> Result<ReloadReport, GroupError> {
        self.ask(|reply| Command::Apply(members, reply)).await
    }

    /// Starts `name` and, first, what it depends on (each dependency whose condition is not
    /// met); `None` starts every process that has no instance, in dependency order. Returns
    /// the names asked for.
    pub async fn start(&self, name: Option<&str>) -> Result<Vec<String>, GroupError> {
        let name = name.map(str::to_string);
        self.ask(|reply| Command::Start(name, reply)).await
    }

    /// Stops `name` (and only it), or with `None` every process, dependents first; `grace`
    /// overrides the stop grace of the stops sent right away.
    pub async fn stop(
        &self,
        name: Option<&str>,
        grace: Option<Duration>,
    ) -> Result<Vec<String>, GroupError> {
        let name = name.map(str::to_string);
        self.ask(|reply| Command::Stop(name, grace, reply)).await
    }

    /// Stops every process dependents first, then starts them all in dependency order.
    pub async fn restart_all(&self) -> Result<Vec<String>, GroupError> {
        self.ask(Command::RestartAll).await
    }

    /// Stops every process, dependents first, each layer in parallel; whatever is still alive
    /// `shutdown_grace` after it began is killed. Returns once nothing is left.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, GroupError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| GroupError::ShuttingDown)?;
        rx.await.unwrap_or(Err(GroupError::ShuttingDown))
    }

    /// The status of every process, in configuration order.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.statuses().collect()
    }

    /// The status of every process of the membership at the call, in configuration order,
    /// each read only when it is taken: an answer written as it is serialized holds one
    /// process's status at a time, never all of them.
    pub fn statuses(&self) -> impl Iterator<Item = MemberStatus> + Send + 'static {
        let sources = self.sources.read().expect("never poisoned").clone();
        (0..sources.len()).map(move |i| sources[i].read())
    }

    /// `status NAME`: the status of one process with its command, process tree, probes
    /// (with their last verdicts), limits (with the current usage) and last `lines` lines.
    pub fn detail(&self, name: &str, lines: usize) -> Result<Detail, GroupError> {
        let (status, describe) = {
            let view = self.view.read().expect("never poisoned");
            let entry = view
                .iter()
                .find(|e| e.sup.name() == name)
                .ok_or_else(|| GroupError::Unknown(name.to_string()))?;
            (
                member_status(entry.sup.status(), &entry.blocked),
                entry.describe.clone(),
            )
        };
        let tree = status
            .status
            .pid
            .map(crate::process::process_tree)
            .unwrap_or_default();
        let logs = self
            .host
            .logs(name)
            .map(|ring| ring.tail(lines))
            .unwrap_or_default();
        Ok(Detail::new(status, &describe, tree, logs))
    }

    /// The names of the processes, in configuration order.
    pub fn names(&self) -> Vec<String> {
        let view = self.view.read().expect("never poisoned");
        view.iter().map(|e| e.sup.name().to_string()).collect()
    }

    /// The supervisor of a process, for the commands that concern it alone (restart, kill,
    /// reset, signals).
    pub fn get(&self, name: &str) -> Result<Arc<Supervisor>, GroupError> {
        let view = self.view.read().expect("never poisoned");
        view.iter()
            .find(|e| e.sup.name() == name)
            .map(|e| e.sup.clone())
            .ok_or_else(|| GroupError::Unknown(name.to_string()))
    }

    /// The summaries of whole operations (boot, reload, shutdown) from now on.
    pub fn subscribe_summaries(&self) -> broadcast::Receiver<Arc<Summary>> {
        self.summaries.subscribe()
    }

    /// Returns once none of `names` is a member any more (a reload removed them and they
    /// came to rest).
    pub async fn forgotten(&self, names: &[String]) {
        let mut membership = self.membership.clone();
        loop {
            let current = self.names();
            if !names.iter().any(|n| current.contains(n)) {
                return;
            }
            if membership.changed().await.is_err() {
                return;
            }
        }
    }

    /// The host's own event stream: each event is on it before the status its step
    /// published, which is what waiting for a command's outcome relies on.
    pub(crate) fn host_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.host.subscribe_all()
    }

    /// What a process's start waits for (`waiting for db to be healthy`), if it waits.
    pub fn blocked(&self, name: &str) -> Option<String> {
        blocked_in(&self.view, name)
    }

    /// [`Group::blocked`] for a task that outlives this borrow.
    pub(crate) fn blocked_reader(&self) -> Blocked {
        let view = self.view.clone();
        Box::new(move |name| blocked_in(&view, name))
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
}

/// A member's status as status readers see it.
impl StatusSource {
    fn read(&self) -> MemberStatus {
        member_status(self.status.borrow().clone(), &self.blocked)
    }
}

fn member_status(mut status: Status, blocked: &Mutex<Option<Arc<str>>>) -> MemberStatus {
    let blocked = blocked
        .lock()
        .expect("never poisoned")
        .as_deref()
        .map(str::to_string);
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
}

/// Tells what a process's start waits for, if it waits.
pub(crate) type Blocked = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn blocked_in(view: &RwLock<Vec<Entry>>, name: &str) -> Option<String> {
    let view = view.read().expect("never poisoned");
    let entry = view.iter().find(|e| e.sup.name() == name)?;
    let blocked = entry.blocked.lock().expect("never poisoned");
    blocked.as_deref().map(str::to_string)
}

/// A member as the owner task holds it.
struct Slot {
    id: MemberId,
    sup: Arc<Supervisor>,
    describe: Arc<Describe>,
    ring: Arc<LogRing>,
    blocked: Arc<Mutex<Option<Arc<str>>>>,
}

/// The task that owns the group machine.
struct Owner {
    host: Arc<Host>,
    machine: GroupMachine,
    /// Handed to the machine for every input, so its vectors are reused.
    out: GroupOutcome,
    /// Members by [`MemberId::index`].
    slots: Vec<Option<Slot>>,
    view: Arc<RwLock<Vec<Entry>>>,
    sources: Sources,
    membership: watch::Sender<u64>,
    changes_tx: mpsc::UnboundedSender<(MemberId, Observed)>,
    clock: TokioClock,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// What the reload being applied built, by name, for its `Supervise` and `Reconfigure`.
    prepared: BTreeMap<String, Prepared>,
    /// The grace override of the stop command being handled.
    grace: Option<Duration>,
    summaries: broadcast::Sender<Arc<Summary>>,
    /// The first membership was applied: later ones are reloads.
    booted: bool,
    /// A boot or a restart of everything whose starts are being sent.
    round: Option<Round>,
    /// A shutdown under way: when it began and what came to rest since, in order.
    shutdown: Option<(Instant, Vec<String>)>,
}

/// A boot (or restart of everything) being reported.
struct Round {
    began: Instant,
    started: Vec<String>,
}

impl Owner {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut changes: mpsc::UnboundedReceiver<(MemberId, Observed)>,
    ) {
        let sleep = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(sleep);
        loop {
            let deadline = self.machine.poll_timeout();
            if let Some(at) = deadline {
                sleep.as_mut().reset(self.clock.instant(at));
            }
            tokio::select! {
                // Members first: a command should meet the freshest view of them.
                biased;
                Some((member, seen)) = changes.recv() => {
                    if let (Some((_, stopped)), true) = (&mut self.shutdown, seen.at_rest()) {
                        let name = self.machine.name(member).unwrap_or_default();
                        if !stopped.iter().any(|s| s == name) {
                            stopped.push(name.to_string());
                        }
                    }
                    self.step(GroupInput::Observed { member, seen });
                }
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    // The group handle is gone.
                    None => return,
                },
                () = &mut sleep, if deadline.is_some() => {
                    self.step(GroupInput::Tick);
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Apply(members, reply) => {
                let boot = !self.booted;
                if boot {
                    self.round = Some(Round::new());
                }
                let result = self.apply(members);
                match &result {
                    Ok(_) if boot => self.booted = true,
                    Ok(report) => self.summarize(Summary::Reloaded {
                        report: report.clone(),
                    }),
                    Err(_) => {}
                }
                let _ = reply.send(result);
            }
            Command::Start(name, reply) => {
                let result = self.named(name.as_deref(), GroupInput::Start, GroupInput::StartAll);
                let _ = reply.send(result);
            }
            Command::Stop(name, grace, reply) => {
                self.grace = grace;
                let result = self.named(name.as_deref(), GroupInput::Stop, GroupInput::StopAll);
                self.grace = None;
                let _ = reply.send(result);
            }
            Command::RestartAll(reply) => {
                self.round = Some(Round::new());
                let result = self.named(None, GroupInput::Start, GroupInput::RestartAll);
                let _ = reply.send(result);
            }
            Command::Shutdown(done) => {
                if self.machine.is_shut_down() {
                    let _ = done.send(());
                    return;
                }
                self.shutdown_waiters.push(done);
                if !self.machine.is_shutting_down() {
                    self.shutdown = Some((Instant::now(), Vec::new()));
                    self.step(GroupInput::Shutdown);
                }
            }
        }
    }

    /// Feeds the input for one member by name, or the one for all.
    fn named(
        &mut self,
        name: Option<&str>,
        one: fn(MemberId) -> GroupInput,
        all: GroupInput,
    ) -> Result<Vec<String>, GroupError> {
        if self.machine.is_shutting_down() {
            return Err(GroupError::ShuttingDown);
        }
        match name {
            Some(name) => {
                let id = self
                    .machine
                    .find(name)
                    .ok_or_else(|| GroupError::Unknown(name.to_string()))?;
                self.step(one(id));
                Ok(vec![name.to_string()])
            }
            None => {
                self.step(all);
                let view = self.view.read().expect("never poisoned");
                Ok(view.iter().map(|e| e.sup.name().to_string()).collect())
            }
        }
    }

    /// Builds every new or changed member, then applies the membership. Nothing changes
    /// unless all of it could be built.
    fn apply(&mut self, members: Vec<Member>) -> Result<ReloadReport, GroupError> {
        if self.machine.is_shutting_down() {
            return Err(GroupError::ShuttingDown);
        }
        let mut configs = Vec::with_capacity(members.len());
        let mut prepared = BTreeMap::new();
        for member in members {
            let name = member.spec.name.clone();
            let current = self.machine.find(&name).and_then(|id| self.slot(id));
            let same =
                current.is_some_and(|s| self.fingerprint_of(s.id) == Some(member.fingerprint));
            let config = member_config(&member.spec, &member.depends_on, member.fingerprint);
            if !same {
                let keep = current.map(|s| s.ring.clone());
                prepared.insert(name.clone(), self.host.prepare(member.spec, keep.as_ref())?);
            }
            configs.push(config);
        }
        let config = GroupConfig::new(configs)?;
        self.prepared = prepared;
        let report = self.step(GroupInput::Apply(config));
        self.prepared.clear();
        Ok(report.unwrap_or_default())
    }

    fn fingerprint_of(&self, id: MemberId) -> Option<u64> {
        self.machine.fingerprint(id)
    }

    /// One input to the machine, and everything it says carried out.
    fn step(&mut self, input: GroupInput) -> Option<ReloadReport> {
        let now = self.clock.now();
        let mut out = std::mem::take(&mut self.out);
        self.machine.handle(now, input, &mut out);
        let mut membership = false;
        for effect in &out.effects {
            membership |= self.execute(*effect);
        }
        for n in &out.notifications {
            self.notice(*n);
        }
        let report = out.report.take();
        self.out = out;
        if membership {
            self.publish_view();
        }
        report
    }

    /// Carries out one effect; returns whether the membership changed.
    fn execute(&mut self, effect: GroupEffect) -> bool {
        match effect {
            GroupEffect::Supervise(id) => {
                let name = self.machine.name(id).unwrap_or_default().to_string();
                let Some(p) = self.prepared.remove(&name) else {
                    tracing::error!(process = %name, "no configuration prepared to supervise");
                    return false;
                };
                let ring = p.ring.clone();
                let describe = p.describe.clone();
                let changes = self.changes_tx.clone();
                let observer = Box::new(move |seen| {
                    let _ = changes.send((id, seen));
                });
                match self.host.add_observed(p, observer) {
                    Ok(sup) => {
                        let slot = Slot {
                            id,
                            sup: Arc::new(sup),
                            describe,
                            ring,
                            blocked: Arc::default(),
                        };
                        if self.slots.len() <= id.index() {
                            self.slots.resize_with(id.index() + 1, || None);
                        }
                        self.slots[id.index()] = Some(slot);
                    }
                    Err(e) => tracing::error!(process = %name, error = %e, "cannot supervise"),
                }
                true
            }
            GroupEffect::Reconfigure { member, restart } => {
                let name = self.machine.name(member).unwrap_or_default().to_string();
                let prepared = self.prepared.remove(&name);
                let Some(slot) = self.slot_mut(member) else {
                    return false;
                };
                match prepared {
                    Some(p) => {
                        let old = std::mem::replace(&mut slot.ring, p.ring.clone());
                        slot.describe = p.describe.clone();
                        let sup = slot.sup.clone();
                        if !Arc::ptr_eq(&old, &p.ring) {
                            self.host.forget_logs(&name, &old);
                        }
                        let _ = self.host.reconfigure(&sup, p, restart);
                        // Status readers see the new configuration.
                        true
                    }
                    // Back in the configuration, unchanged, before it was gone.
                    None if restart => {
                        let _ = slot.sup.restart();
                        false
                    }
                    None => false,
                }
            }
            GroupEffect::Start(id) => {
                let Some(slot) = self.slot(id) else {
                    return false;
                };
                *slot.blocked.lock().expect("never poisoned") = None;
                let _ = slot.sup.start();
                let name = slot.sup.name().to_string();
                if let Some(round) = &mut self.round {
                    round.started.push(name);
                }
                false
            }
            GroupEffect::Stop(id) => {
                if let Some(slot) = self.slot(id) {
                    let _ = slot.sup.stop(self.grace);
                }
                false
            }
            GroupEffect::Kill(id) => {
                if let Some(slot) = self.slot(id) {
                    let _ = slot.sup.kill();
                }
                false
            }
            GroupEffect::Forget(id) => {
                if let Some(slot) = self.slots.get_mut(id.index()).and_then(Option::take) {
                    self.host.forget_logs(slot.sup.name(), &slot.ring);
                }
                true
            }
        }
    }

    fn notice(&mut self, n: GroupNotification) {
        match n {
            GroupNotification::Waiting {
                member,
                dependency,
                condition,
            } => {
                let dependency = self.machine.name(dependency).unwrap_or("?");
                let reason: Arc<str> = format!("waiting for {dependency} to be {condition}").into();
                if let Some(slot) = self.slot(member) {
                    *slot.blocked.lock().expect("never poisoned") = Some(reason);
                }
            }
            GroupNotification::StartsSent => {
                if let Some(round) = self.round.take() {
                    // Ready as the machine saw them when it sent the last start.
                    let ready = self
                        .machine
                        .members()
                        .iter()
                        .filter(|id| {
                            self.machine.has_readiness(**id) == Some(true)
                                && self.machine.seen(**id).is_some_and(|s| s.ready)
                        })
                        .filter_map(|id| self.machine.name(*id))
                        .map(str::to_string)
                        .collect();
                    self.summarize(Summary::Started {
                        started: round.started,
                        ready,
                        took_ms: millis(round.began.elapsed()),
                    });
                }
            }
            GroupNotification::ShuttingDown => tracing::debug!("stopping every process"),
            GroupNotification::GraceExpired { killed } => tracing::warn!(
                killed,
                "shutdown_grace passed: killing what is still running"
            ),
            GroupNotification::ShutdownComplete => {
                if let Some((began, stopped)) = self.shutdown.take() {
                    self.summarize(Summary::ShutDown {
                        stopped,
                        took_ms: millis(began.elapsed()),
                    });
                }
                for waiter in self.shutdown_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            GroupNotification::Ignored { input, reason } => {
                tracing::debug!(input, ?reason, "group input ignored")
            }
            other => tracing::debug!(?other, "group notification"),
        }
    }

    /// Tells a summary to whoever listens (the narration, a client waiting for a shutdown).
    fn summarize(&self, summary: Summary) {
        let _ = self.summaries.send(Arc::new(summary));
    }

    /// Republishes the members for status readers, in the machine's order.
    fn publish_view(&self) {
        let entries = self
            .machine
            .members()
            .iter()
            .filter_map(|id| self.slot(*id))
            .map(|s| Entry {
                sup: s.sup.clone(),
                describe: s.describe.clone(),
                blocked: s.blocked.clone(),
            })
            .collect::<Vec<_>>();
        let sources = entries
            .iter()
            .map(|e| StatusSource {
                status: e.sup.watch_status(),
                blocked: e.blocked.clone(),
            })
            .collect();
        *self.view.write().expect("never poisoned") = entries;
        *self.sources.write().expect("never poisoned") = sources;
        self.membership.send_modify(|n| *n += 1);
    }

    fn slot(&self, id: MemberId) -> Option<&Slot> {
        self.slots
            .get(id.index())
            .and_then(Option::as_ref)
            .filter(|s| s.id == id)
    }

    fn slot_mut(&mut self, id: MemberId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .filter(|s| s.id == id)
    }
}

impl Round {
    fn new() -> Round {
        Round {
            began: Instant::now(),
            started: Vec::new(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Copies the host's events into the group's stream and history.
async fn forward(
    mut events: broadcast::Receiver<Arc<Event>>,
    to: broadcast::Sender<Arc<Event>>,
    history: Arc<Mutex<VecDeque<Arc<Event>>>>,
) {
    use crate::runtime::What;
    loop {
        match events.recv().await {
            Ok(event) => {
                if matches!(event.what, What::Ignored { .. }) {
                    continue;
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
