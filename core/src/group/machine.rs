//! The group machine: the decisions that concern many processes at once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::condition::{Condition, Observed};
use super::config::GroupConfig;
use crate::machine::KILL_RETRY;
use crate::output::StateName;
use crate::time::Timestamp;

/// A member of a group. The generation tells a member from an earlier one that had the same
/// slot: an observation about a member that has left changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    index: u32,
    generation: u32,
}

impl MemberId {
    /// A dense number, for the adapter's own table of handles (reused once the member left).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// An id from its parts, for the simulation's stale observations.
    #[cfg(feature = "sim")]
    pub(crate) fn from_parts(index: u32, generation: u32) -> MemberId {
        MemberId { index, generation }
    }
}

/// The group's own settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupPolicy {
    /// How long a shutdown may take in all: then everything still alive is killed, whatever
    /// grace its own policy gives it.
    pub shutdown_grace: Duration,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Everything that can happen to a group: commands and facts about its members.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupInput {
    /// Run exactly this membership: the first one starts everything; later ones are reloads
    /// (unchanged members untouched, changed ones reconfigured, new ones started through the
    /// gate, removed ones stopped dependents-first).
    Apply(GroupConfig),
    /// Start a member, and first what it depends on (as `systemctl start` pulls in
    /// `Requires=`): each dependency whose condition is not met is started too.
    Start(MemberId),
    /// Start every member that has no instance, in dependency order.
    StartAll,
    /// Stop a member, and only it.
    Stop(MemberId),
    /// Stop every member, dependents first, each layer in parallel.
    StopAll,
    /// Stop every member dependents first, then start them all again in dependency order.
    RestartAll,
    /// Stop everything dependents first; kill what is left once `shutdown_grace` has passed.
    /// Final: later commands are ignored.
    Shutdown,
    /// A member's process machine was seen in a new state.
    Observed {
        /// The member.
        member: MemberId,
        /// What was seen.
        seen: Observed,
    },
    /// The deadline from [`Group::poll_timeout`] may have passed. Early or spurious ticks do
    /// nothing.
    Tick,
}

impl GroupInput {
    /// A short snake_case name, for notifications and logs.
    pub fn name(&self) -> &'static str {
        match self {
            GroupInput::Apply(_) => "apply",
            GroupInput::Start(_) => "start",
            GroupInput::StartAll => "start_all",
            GroupInput::Stop(_) => "stop",
            GroupInput::StopAll => "stop_all",
            GroupInput::RestartAll => "restart_all",
            GroupInput::Shutdown => "shutdown",
            GroupInput::Observed { .. } => "observed",
            GroupInput::Tick => "tick",
        }
    }
}

/// What the adapter must do. Every effect about a member goes to that member's own process
/// machine as an input, so its decisions (backoff, breaker, grace) still apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupEffect {
    /// Create the member's process machine, idle, from its configuration.
    Supervise(MemberId),
    /// The member's configuration changed: its next instance uses the new one. With
    /// `restart`, replace the current instance now (`Restart` with cause `reload`).
    Reconfigure {
        /// The member.
        member: MemberId,
        /// Whether to restart it now.
        restart: bool,
    },
    /// Send `Start` to the member's machine.
    Start(MemberId),
    /// Send `Stop` (its own grace) to the member's machine.
    Stop(MemberId),
    /// Send `Kill` to the member's machine.
    Kill(MemberId),
    /// The member has left and is at rest: drop its machine and everything it holds.
    Forget(MemberId),
}

/// Observations for people and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupNotification {
    /// A member's start now waits for `dependency` to meet `condition`.
    Waiting {
        /// The member held back.
        member: MemberId,
        /// What it waits for.
        dependency: MemberId,
        /// What that must become.
        condition: Condition,
    },
    /// Every start the group was asked for has been sent (after a boot, a reload, a start or a
    /// restart of everything).
    StartsSent,
    /// A shutdown began; the deadline is `shutdown_grace` from now.
    ShuttingDown,
    /// `shutdown_grace` passed: this many members were still alive and are being killed.
    GraceExpired {
        /// How many.
        killed: u32,
    },
    /// Every member is at rest after a shutdown.
    ShutdownComplete,
    /// An input that does not apply; nothing changed.
    Ignored {
        /// Which input.
        input: &'static str,
        /// Why.
        reason: GroupIgnoreReason,
    },
}

/// Why an input changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupIgnoreReason {
    /// It names a member that has left the group.
    UnknownMember,
    /// The group is shutting down.
    ShuttingDown,
}

/// What a reload did, by member name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReloadReport {
    /// Started because they are new.
    pub added: Vec<String>,
    /// Stopped because they are gone from the configuration.
    pub removed: Vec<String>,
    /// Restarted (or, when not running, reconfigured) with their new configuration.
    pub changed: Vec<String>,
    /// Left untouched.
    pub unchanged: Vec<String>,
}

/// The result of one input. The caller owns it and hands it back for every input, so that
/// inputs that change no membership allocate nothing (its vectors keep their capacity).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupOutcome {
    /// To carry out, in order.
    pub effects: Vec<GroupEffect>,
    /// To publish.
    pub notifications: Vec<GroupNotification>,
    /// What an [`GroupInput::Apply`] did.
    pub report: Option<ReloadReport>,
}

impl GroupOutcome {
    fn clear(&mut self) {
        self.effects.clear();
        self.notifications.clear();
        self.report = None;
    }
}

/// What the group wants of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    /// Running: the start is sent once every dependency meets its condition.
    Up { start_sent: bool },
    /// Stopped. An ordered stop (`stop --all`, shutdown) sends the stop only once no
    /// dependent has a process left; `then_start` turns it back up once at rest (restart of
    /// everything).
    Down { stop_sent: bool, then_start: bool },
    /// Removed by a reload: stopped like an ordered stop, then forgotten once at rest.
    Leaving { stop_sent: bool },
}

#[derive(Clone, Debug)]
struct Member {
    name: String,
    deps: Vec<(MemberId, Condition)>,
    dependents: Vec<MemberId>,
    fingerprint: u64,
    has_readiness: bool,
    seen: Observed,
    intent: Intent,
    /// The dependency its start waits for, once a notification said so.
    awaiting: Option<MemberId>,
    /// `seen.newest` when the group last sent it a start: until it has spawned a newer
    /// instance, what is seen of it is of the run before, and meets no condition (a
    /// migration run again has not completed because its previous run had).
    started_after: u64,
}

#[derive(Clone, Debug)]
struct Slot {
    generation: u32,
    member: Option<Member>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// Stopping in order until `deadline`.
    Ordered { deadline: Timestamp },
    /// The deadline passed and what was alive was killed.
    Killing,
    /// Everything is at rest.
    Complete,
}

/// The decisions that concern many processes at once: start order, stop order, reload and
/// shutdown. Each member is still decided by its own [`Machine`](crate::Machine); the group
/// only says when to send it `Start`, `Stop` or `Kill`, and when its configuration changes.
///
/// # Driving contract
/// As for the process machine: inputs with a `now` that never goes backwards; effects carried
/// out in order; after every call one timer re-armed to [`Group::poll_timeout`], ticked with
/// the clock's real `now` when it fires. In addition:
/// - feed [`GroupInput::Observed`] whenever a member's state, readiness or having an instance
///   changes (at least the latest change: only the newest observation matters);
/// - [`Group::handle`] fills a [`GroupOutcome`] the caller keeps and passes again, so
///   observations and ticks allocate nothing.
///
/// # Rules (docs/state-machine.md, "The group machine")
/// - A start is sent only when every dependency is wanted up and meets its condition.
/// - An ordered stop signals a member only once none of its dependents has a process left;
///   so members stop by reverse dependency layers, each layer in parallel.
/// - A shutdown kills whatever is still alive `shutdown_grace` after it began.
/// - A reload leaves unchanged members alone and reconfigures changed ones in place: one
///   machine per name, so two instances of a member never live at once.
#[derive(Clone, Debug)]
pub struct Group {
    policy: GroupPolicy,
    now: Timestamp,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_name: BTreeMap<String, MemberId>,
    /// Members in configuration order (members leaving after a reload last).
    order: Vec<MemberId>,
    shutdown: Option<Shutdown>,
    /// A start was asked for and `StartsSent` not yet said.
    starting: bool,
    /// How many members still have a start coming.
    to_start: usize,
    /// Members whose ordered stop may be released (see `release_work`); empty between inputs.
    work: Vec<MemberId>,
    /// How many members are not at rest (so a shutdown knows it is complete without a walk).
    not_at_rest: usize,
}

impl Group {
    /// An empty group. Nothing happens until [`GroupInput::Apply`].
    pub fn new(policy: GroupPolicy) -> Group {
        Group {
            policy,
            now: Timestamp::ZERO,
            slots: Vec::new(),
            free: Vec::new(),
            by_name: BTreeMap::new(),
            order: Vec::new(),
            shutdown: None,
            starting: false,
            to_start: 0,
            work: Vec::new(),
            not_at_rest: 0,
        }
    }

    // ----- getters ---------------------------------------------------------------------------

    /// The member of that name (also one leaving after a reload).
    pub fn find(&self, name: &str) -> Option<MemberId> {
        self.by_name.get(name).copied()
    }

    /// A member's name.
    pub fn name(&self, id: MemberId) -> Option<&str> {
        self.get(id).map(|m| m.name.as_str())
    }

    /// Every member, in configuration order (members leaving after a reload last).
    pub fn members(&self) -> &[MemberId] {
        &self.order
    }

    /// What a member's start waits for: the first dependency not wanted up or not meeting
    /// its condition. `None` when it is not waiting to start (during a shutdown every member
    /// is wanted down, so none is).
    pub fn waiting_for(&self, id: MemberId) -> Option<(MemberId, Condition)> {
        let m = self.get(id)?;
        match m.intent {
            Intent::Up { start_sent: false } => self.unmet(m),
            _ => None,
        }
    }

    /// Whether a member's ordered stop (stop of everything, shutdown, removal) is held back
    /// because a dependent still has a process.
    pub fn is_stop_pending(&self, id: MemberId) -> bool {
        self.get(id).is_some_and(|m| {
            matches!(
                m.intent,
                Intent::Down {
                    stop_sent: false,
                    ..
                } | Intent::Leaving { stop_sent: false }
            )
        })
    }

    /// Whether a start is still to come for a member: waiting for its gate, or stopping as
    /// part of a restart of everything.
    pub fn is_start_pending(&self, id: MemberId) -> bool {
        self.get(id).is_some_and(|m| counts_as_to_start(m.intent))
    }

    /// What was last seen of a member.
    pub fn seen(&self, id: MemberId) -> Option<Observed> {
        self.get(id).map(|m| m.seen)
    }

    /// A member's configuration fingerprint.
    pub fn fingerprint(&self, id: MemberId) -> Option<u64> {
        self.get(id).map(|m| m.fingerprint)
    }

    /// Whether a member has a readiness condition.
    pub fn has_readiness(&self, id: MemberId) -> Option<bool> {
        self.get(id).map(|m| m.has_readiness)
    }

    /// The next deadline: the end of `shutdown_grace` during a shutdown.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.shutdown {
            Some(Shutdown::Ordered { deadline }) => Some(deadline),
            _ => None,
        }
    }

    /// Whether a shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Whether a shutdown completed: every member at rest.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown == Some(Shutdown::Complete)
    }

    /// Checks the machine's own bookkeeping: every member in the order is present, so are its
    /// dependencies and dependents, and the counters match a recount. For the simulation.
    #[cfg(feature = "sim")]
    pub(crate) fn check_bookkeeping(&self) -> Result<(), String> {
        let mut to_start = 0;
        let mut not_at_rest = 0;
        for &id in &self.order {
            let Some(m) = self.get(id) else {
                return Err(format!("{id:?} in the order but not present"));
            };
            for (d, _) in &m.deps {
                if self.get(*d).is_none() {
                    return Err(format!("{}: dependency {d:?} not present", m.name));
                }
            }
            for d in &m.dependents {
                if self.get(*d).is_none() {
                    return Err(format!("{}: dependent {d:?} not present", m.name));
                }
            }
            to_start += usize::from(counts_as_to_start(m.intent));
            not_at_rest += usize::from(!m.seen.at_rest());
        }
        if (to_start, not_at_rest) != (self.to_start, self.not_at_rest) {
            return Err(format!(
                "counters {:?}, recounted {:?}",
                (self.to_start, self.not_at_rest),
                (to_start, not_at_rest)
            ));
        }
        Ok(())
    }

    // ----- the step function -----------------------------------------------------------------

    /// Feeds one input at time `now`; `out` is cleared, then filled with what to do. Never
    /// fails: an input that does not apply is reported as [`GroupNotification::Ignored`].
    pub fn handle(&mut self, now: Timestamp, input: GroupInput, out: &mut GroupOutcome) {
        out.clear();
        self.now = self.now.max(now);
        let command = !matches!(input, GroupInput::Observed { .. } | GroupInput::Tick);
        let reason = if command && self.shutdown.is_some() {
            Some(GroupIgnoreReason::ShuttingDown)
        } else {
            match input {
                GroupInput::Start(id)
                | GroupInput::Stop(id)
                | GroupInput::Observed { member: id, .. }
                    if self.get(id).is_none() =>
                {
                    Some(GroupIgnoreReason::UnknownMember)
                }
                _ => None,
            }
        };
        if let Some(reason) = reason {
            out.notifications.push(GroupNotification::Ignored {
                input: input.name(),
                reason,
            });
            return;
        }
        match input {
            GroupInput::Apply(config) => self.apply(config, out),
            GroupInput::Start(id) => {
                self.start(id);
                self.open_gates(out);
            }
            GroupInput::StartAll => {
                for i in 0..self.order.len() {
                    self.want_up(self.order[i]);
                }
                self.open_gates(out);
            }
            GroupInput::Stop(id) => self.stop(id, out),
            GroupInput::StopAll => self.stop_all(false, out),
            GroupInput::RestartAll => self.stop_all(true, out),
            GroupInput::Shutdown => self.begin_shutdown(out),
            GroupInput::Observed { member, seen } => self.observed(member, seen, out),
            GroupInput::Tick => self.tick(out),
        }
        if self.starting && self.to_start == 0 && self.shutdown.is_none() {
            self.starting = false;
            out.notifications.push(GroupNotification::StartsSent);
        }
        if matches!(
            self.shutdown,
            Some(Shutdown::Ordered { .. } | Shutdown::Killing)
        ) && self.not_at_rest == 0
        {
            self.shutdown = Some(Shutdown::Complete);
            out.notifications.push(GroupNotification::ShutdownComplete);
        }
    }

    // ----- commands --------------------------------------------------------------------------

    fn apply(&mut self, config: GroupConfig, out: &mut GroupOutcome) {
        let mut report = ReloadReport::default();
        // Removed: every current member the new configuration does not name.
        let wanted: BTreeMap<&str, usize> = config
            .members()
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        for i in 0..self.order.len() {
            let id = self.order[i];
            let m = self.member(id);
            if !wanted.contains_key(m.name.as_str()) && !matches!(m.intent, Intent::Leaving { .. })
            {
                report.removed.push(m.name.clone());
                self.set_intent(id, Intent::Leaving { stop_sent: false });
            }
        }
        // Added, changed, unchanged, in configuration order.
        let mut ids = Vec::with_capacity(config.members().len());
        for c in config.members() {
            let id = match self.by_name.get(&c.name).copied() {
                Some(id) => {
                    let m = self.member_mut(id);
                    let leaving = matches!(m.intent, Intent::Leaving { .. });
                    if m.fingerprint == c.fingerprint && !leaving {
                        report.unchanged.push(c.name.clone());
                    } else {
                        report.changed.push(c.name.clone());
                        m.fingerprint = c.fingerprint;
                        m.has_readiness = c.has_readiness;
                        let restart = matches!(m.intent, Intent::Up { start_sent: true })
                            && !m.seen.at_rest();
                        if restart {
                            // Its current run is on its way out: it meets no condition until
                            // the next one.
                            m.started_after = m.seen.newest;
                        }
                        if leaving {
                            // Back before it was gone: the same machine starts again once
                            // its gate allows, so there is never a second instance.
                            self.set_intent(id, Intent::Up { start_sent: false });
                            self.starting = true;
                        }
                        out.effects.push(GroupEffect::Reconfigure {
                            member: id,
                            restart,
                        });
                    }
                    id
                }
                None => {
                    report.added.push(c.name.clone());
                    let id = self.insert(c.name.clone(), c.fingerprint, c.has_readiness);
                    out.effects.push(GroupEffect::Supervise(id));
                    self.starting = true;
                    id
                }
            };
            ids.push(id);
        }
        // Dependencies as members; leaving members keep theirs, for their stop order.
        for (c, &id) in config.members().iter().zip(&ids) {
            let deps = c
                .depends_on
                .iter()
                .map(|(name, condition)| (ids[wanted[name.as_str()]], *condition))
                .collect();
            self.member_mut(id).deps = deps;
        }
        let leaving: Vec<MemberId> = self
            .order
            .iter()
            .copied()
            .filter(|id| matches!(self.member(*id).intent, Intent::Leaving { .. }))
            .collect();
        self.order = ids;
        self.order.extend(leaving.iter().copied());
        self.rebuild_dependents();
        // Removed members stop dependents first and are forgotten once at rest.
        self.work.extend(leaving.iter().copied());
        self.release_work(out);
        self.open_gates(out);
        out.report = Some(report);
    }

    /// Wants `id` up and, transitively, each dependency whose condition is not met.
    fn start(&mut self, id: MemberId) {
        let mut todo = vec![id];
        let mut seen = BTreeMap::new();
        while let Some(next) = todo.pop() {
            if seen.insert(next, ()).is_some() {
                continue;
            }
            self.want_up(next);
            for &(dep, condition) in &self.member(next).deps {
                if !self.meets(dep, condition) {
                    todo.push(dep);
                }
            }
        }
    }

    /// Wants a member up: its start is sent through the gate unless it is up or on its way
    /// (running, being spawned, backing off). An open breaker is started afresh, as the
    /// process machine's own `Start` does.
    fn want_up(&mut self, id: MemberId) {
        let m = self.member(id);
        let idle = !m.seen.has_instance && m.seen.state != StateName::Restarting;
        // Being stopped, by the group or by its own machine (a limit's graceful shutdown):
        // it needs a start to come back, which its machine carries out once it is gone. A
        // start sent since this instance spawned is that start, still to be carried out.
        let stopping = matches!(m.seen.state, StateName::ShuttingDown | StateName::Killed);
        let lost_start = stopping && m.seen.newest > m.started_after;
        let next = match m.intent {
            Intent::Leaving { .. } | Intent::Up { start_sent: false } => return,
            Intent::Up { start_sent: true } if !idle && !lost_start => return,
            // An ordered stop not sent yet: it never left, so nothing needs sending.
            Intent::Down {
                stop_sent: false, ..
            } if !idle && !stopping => Intent::Up { start_sent: true },
            _ => Intent::Up { start_sent: false },
        };
        self.set_intent(id, next);
        self.starting = true;
    }

    fn stop(&mut self, id: MemberId, out: &mut GroupOutcome) {
        let m = self.member(id);
        if matches!(m.intent, Intent::Leaving { .. }) {
            return;
        }
        let at_rest = m.seen.at_rest();
        self.set_intent(
            id,
            Intent::Down {
                stop_sent: true,
                then_start: false,
            },
        );
        if !at_rest {
            out.effects.push(GroupEffect::Stop(id));
        }
    }

    fn stop_all(&mut self, then_start: bool, out: &mut GroupOutcome) {
        for i in 0..self.order.len() {
            let id = self.order[i];
            match self.member(id).intent {
                Intent::Leaving { .. } => {}
                // A stop already sent (`stop NAME`) and still going on is not sent again, nor
                // forgotten; one at rest goes through the release like any other.
                intent => {
                    let stop_sent = matches!(
                        intent,
                        Intent::Down {
                            stop_sent: true,
                            ..
                        }
                    ) && !self.member(id).seen.at_rest();
                    self.set_intent(
                        id,
                        Intent::Down {
                            stop_sent,
                            then_start,
                        },
                    );
                }
            }
            // Popped last first: dependents tend to come after what they need in a file,
            // and `release_work` holds back anything with a live dependent anyway.
            self.work.push(id);
        }
        if then_start {
            self.starting = true;
        }
        self.release_work(out);
    }

    fn begin_shutdown(&mut self, out: &mut GroupOutcome) {
        self.shutdown = Some(Shutdown::Ordered {
            deadline: self.now.saturating_add(self.policy.shutdown_grace),
        });
        out.notifications.push(GroupNotification::ShuttingDown);
        self.stop_all(false, out);
    }

    // ----- facts -----------------------------------------------------------------------------

    fn observed(&mut self, id: MemberId, seen: Observed, out: &mut GroupOutcome) {
        let m = self.member_mut(id);
        if m.seen == seen {
            return;
        }
        let was_at_rest = m.seen.at_rest();
        m.seen = seen;
        self.not_at_rest =
            self.not_at_rest + usize::from(was_at_rest) - usize::from(seen.at_rest());
        // Its dependents' gates may open.
        for k in 0..self.member(id).dependents.len() {
            let dependent = self.member(id).dependents[k];
            self.open_gate(dependent, out);
        }
        if seen.at_rest() {
            self.came_to_rest(id, out);
            self.release_work(out);
        }
    }

    fn tick(&mut self, out: &mut GroupOutcome) {
        let Some(Shutdown::Ordered { deadline }) = self.shutdown else {
            return;
        };
        if self.now < deadline {
            return;
        }
        let mut killed = 0;
        for i in 0..self.order.len() {
            let id = self.order[i];
            if !self.member(id).seen.at_rest() {
                out.effects.push(GroupEffect::Kill(id));
                killed += 1;
            }
        }
        self.shutdown = Some(Shutdown::Killing);
        out.notifications
            .push(GroupNotification::GraceExpired { killed });
    }

    // ----- the gate and the ordered stop -----------------------------------------------------

    fn open_gates(&mut self, out: &mut GroupOutcome) {
        for i in 0..self.order.len() {
            self.open_gate(self.order[i], out);
        }
    }

    /// Sends the member's start if it waits for one and every dependency is met.
    fn open_gate(&mut self, id: MemberId, out: &mut GroupOutcome) {
        if self.shutdown.is_some() {
            return;
        }
        let m = self.member(id);
        if m.intent != (Intent::Up { start_sent: false }) {
            return;
        }
        match self.unmet(m) {
            Some((dependency, condition)) => {
                if m.awaiting != Some(dependency) {
                    self.member_mut(id).awaiting = Some(dependency);
                    out.notifications.push(GroupNotification::Waiting {
                        member: id,
                        dependency,
                        condition,
                    });
                }
            }
            None => {
                let m = self.member_mut(id);
                m.awaiting = None;
                // A start to an instance that is alive and not being stopped changes nothing:
                // that instance is the run the start asks for. Otherwise the next one is.
                let alive = m.seen.has_instance
                    && !matches!(m.seen.state, StateName::ShuttingDown | StateName::Killed);
                m.started_after = m.seen.newest.saturating_sub(u64::from(alive));
                self.set_intent(id, Intent::Up { start_sent: true });
                out.effects.push(GroupEffect::Start(id));
            }
        }
    }

    /// The first dependency of `m` that does not meet its condition (see `meets`).
    fn unmet(&self, m: &Member) -> Option<(MemberId, Condition)> {
        m.deps
            .iter()
            .copied()
            .find(|&(dep, condition)| !self.meets(dep, condition))
    }

    /// Whether a dependency counts as meeting `condition`: wanted up (one held for an ordered
    /// stop is on its way down), and met by a run the group's last start led to. The gate and
    /// `start NAME`'s pulling in of dependencies both ask this, so a start never waits for a
    /// dependency it did not pull in.
    fn meets(&self, dep: MemberId, condition: Condition) -> bool {
        let d = self.member(dep);
        matches!(d.intent, Intent::Up { .. })
            && d.seen.newest > d.started_after
            && condition.met(&d.seen, d.has_readiness)
    }

    /// Works off `self.work`: each member there whose ordered stop is pending gets it once no
    /// dependent has a process left. A worklist, not recursion: a long chain of dependencies
    /// must not grow the stack.
    fn release_work(&mut self, out: &mut GroupOutcome) {
        while let Some(id) = self.work.pop() {
            let Some(m) = self.get(id) else { continue };
            let (Intent::Down {
                stop_sent: false, ..
            }
            | Intent::Leaving { stop_sent: false }) = m.intent
            else {
                continue;
            };
            let held = m.dependents.iter().any(|&d| !self.member(d).seen.at_rest());
            if held {
                continue;
            }
            let at_rest = m.seen.at_rest();
            let next = match m.intent {
                Intent::Down { then_start, .. } => Intent::Down {
                    stop_sent: true,
                    then_start,
                },
                _ => Intent::Leaving { stop_sent: true },
            };
            self.set_intent(id, next);
            if at_rest {
                // It will not be seen coming to rest again: what follows rest happens now.
                self.came_to_rest(id, out);
            } else {
                out.effects.push(GroupEffect::Stop(id));
            }
        }
    }

    /// A member is at rest: what it depends on may be released (queued on `self.work`), a
    /// leaving member is forgotten, and one stopped to be restarted is wanted up again.
    fn came_to_rest(&mut self, id: MemberId, out: &mut GroupOutcome) {
        for k in 0..self.member(id).deps.len() {
            let dep = self.member(id).deps[k].0;
            self.work.push(dep);
        }
        match self.member(id).intent {
            Intent::Leaving { stop_sent: true } => self.forget(id, out),
            Intent::Down {
                stop_sent: true,
                then_start: true,
            } => {
                self.set_intent(id, Intent::Up { start_sent: false });
                self.open_gate(id, out);
            }
            _ => {}
        }
    }

    // ----- membership ------------------------------------------------------------------------

    /// Every change of intent goes through here, to keep `to_start` exact.
    fn set_intent(&mut self, id: MemberId, intent: Intent) {
        let m = self.member_mut(id);
        let before = counts_as_to_start(m.intent);
        m.intent = intent;
        let after = counts_as_to_start(intent);
        self.to_start = self.to_start + usize::from(after) - usize::from(before);
    }

    fn insert(&mut self, name: String, fingerprint: u64, has_readiness: bool) -> MemberId {
        let member = Member {
            name: name.clone(),
            deps: Vec::new(),
            dependents: Vec::new(),
            fingerprint,
            has_readiness,
            seen: Observed::STOPPED,
            intent: Intent::Up { start_sent: false },
            awaiting: None,
            started_after: 0,
        };
        self.to_start += 1;
        let id = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.member = Some(member);
                MemberId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 members");
                self.slots.push(Slot {
                    generation: 0,
                    member: Some(member),
                });
                MemberId {
                    index,
                    generation: 0,
                }
            }
        };
        self.by_name.insert(name, id);
        id
    }

    fn forget(&mut self, id: MemberId, out: &mut GroupOutcome) {
        let slot = &mut self.slots[id.index()];
        let Some(m) = slot.member.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        // Forgotten only at rest and leaving (`came_to_rest`): it counts in neither
        // `to_start` nor `not_at_rest` (the simulation recounts both after every step).
        self.free.push(id.index);
        self.by_name.remove(&m.name);
        self.order.retain(|&o| o != id);
        for (dep, _) in &m.deps {
            if let Some(d) = self.get_mut(*dep) {
                d.dependents.retain(|&x| x != id);
            }
        }
        // Its dependents are leaving too (a configuration names only present members), but
        // may still be stopping: they no longer wait for it.
        for dependent in &m.dependents {
            if let Some(d) = self.get_mut(*dependent) {
                d.deps.retain(|&(x, _)| x != id);
            }
        }
        out.effects.push(GroupEffect::Forget(id));
    }

    fn rebuild_dependents(&mut self) {
        for i in 0..self.order.len() {
            self.member_mut(self.order[i]).dependents.clear();
        }
        for i in 0..self.order.len() {
            let id = self.order[i];
            for k in 0..self.member(id).deps.len() {
                let dep = self.member(id).deps[k].0;
                self.member_mut(dep).dependents.push(id);
            }
        }
    }

    fn get(&self, id: MemberId) -> Option<&Member> {
        let slot = self.slots.get(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.member.as_ref()
    }

    fn get_mut(&mut self, id: MemberId) -> Option<&mut Member> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.member.as_mut()
    }

    /// A member known to be there: listed in `order`, a dependency or dependent of one that
    /// is, or checked by `handle` on the way in.
    fn member(&self, id: MemberId) -> &Member {
        self.get(id)
            .expect("members in the order and their dependencies are present")
    }

    fn member_mut(&mut self, id: MemberId) -> &mut Member {
        self.get_mut(id)
            .expect("members in the order and their dependencies are present")
    }
}

/// Whether a member with this intent still has a start coming (for `StartsSent`).
fn counts_as_to_start(intent: Intent) -> bool {
    matches!(
        intent,
        Intent::Up { start_sent: false }
            | Intent::Down {
                then_start: true,
                ..
            }
    )
}

/// The longest a shutdown can take, for a group whose processes die when killed: the grace,
/// then one kill retry of each member's machine.
pub fn shutdown_bound(policy: &GroupPolicy) -> Duration {
    policy.shutdown_grace + KILL_RETRY
}
