//! A simulation harness for the group machine: the machine, a fake operating system in which
//! each member is a coarse model of its process machine (spawn, run, become ready, crash,
//! finish, stop slowly or ignore the stop signal), random dependency graphs whose file order
//! differs from their dependency order, and random commands and reloads. After every step it
//! checks the group's invariants (numbered G1-G7 as in docs/state-machine.md); every run ends
//! with a start of everything that must bring every member up (G7) and a shutdown that must
//! complete within `shutdown_grace` plus one kill retry (G6).
//!
//! Configurations and operations decode from plain bytes, so proptest and cargo-fuzz share one
//! decoder.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use super::{
    shutdown_bound, Condition, Group, GroupConfig, GroupEffect, GroupInput, GroupNotification,
    GroupOutcome, GroupPolicy, MemberConfig, MemberId, Observed,
};
use crate::output::StateName;
use crate::time::Timestamp;

/// A broken invariant, with the story that led to it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant (G1-G7, as in docs/state-machine.md).
    pub invariant: &'static str,
    /// What was wrong.
    pub detail: String,
    /// Every step so far, when the run was recorded.
    pub story: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}\n{}", self.invariant, self.detail, self.story)
    }
}

/// What a run went through, for tests that check the generator reaches the interesting cases.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Steps taken.
    pub steps: u32,
    /// Start effects sent by the group.
    pub starts: u32,
    /// Stop effects sent by an ordered stop.
    pub ordered_stops: u32,
    /// Reloads applied.
    pub reloads: u32,
    /// Members reconfigured by a reload.
    pub reconfigured: u32,
    /// Members forgotten after a reload removed them.
    pub forgotten: u32,
    /// Shutdowns that had to kill after the grace.
    pub grace_expired: u32,
}

/// One member as the fake OS sees it: the truth the group's observations are taken from.
#[derive(Clone, Debug)]
struct Fake {
    state: StateName,
    ready: bool,
    has_instance: bool,
    /// Ignores the stop signal: goes only when killed.
    stubborn: bool,
    /// Finishes successfully on its own (a migration).
    oneshot: bool,
    /// Start again once the current instance is gone (a start or reload during a stop).
    then_start: bool,
    /// Instances spawned so far.
    newest: u64,
}

impl Fake {
    fn new(stubborn: bool, oneshot: bool) -> Fake {
        Fake {
            state: StateName::Stopped,
            ready: false,
            has_instance: false,
            stubborn,
            oneshot,
            then_start: false,
            newest: 0,
        }
    }

    fn seen(&self) -> Observed {
        Observed {
            state: self.state,
            ready: self.ready,
            has_instance: self.has_instance,
            newest: self.newest,
        }
    }

    fn spawn(&mut self) {
        self.state = StateName::Starting;
        self.has_instance = true;
        self.ready = false;
        self.then_start = false;
        self.newest += 1;
    }

    /// A process machine's `Start`.
    fn start(&mut self) {
        match (self.has_instance, self.state) {
            (false, StateName::Restarting) => {}
            (false, _) => self.spawn(),
            (true, StateName::ShuttingDown | StateName::Killed) => self.then_start = true,
            (true, _) => {}
        }
    }

    /// A process machine's `Stop`.
    fn stop(&mut self) {
        self.ready = false;
        self.then_start = false;
        if self.has_instance {
            if self.state != StateName::Killed {
                self.state = StateName::ShuttingDown;
            }
        } else if !self.seen().at_rest() {
            self.state = StateName::Stopped;
        }
    }

    /// A process machine's `Kill`.
    fn kill(&mut self) {
        self.ready = false;
        self.then_start = false;
        if self.has_instance || !self.seen().at_rest() {
            self.state = StateName::Killed;
        }
    }

    /// The last process of the instance went away.
    fn gone(&mut self) {
        self.has_instance = false;
        self.ready = false;
        if self.state == StateName::ShuttingDown {
            self.state = StateName::Stopped;
        }
        if self.then_start {
            self.spawn();
        }
    }
}

/// One thing that happens in a simulation.
#[derive(Clone, Copy, Debug)]
enum Op {
    Start(u8),
    Stop(u8),
    StartAll,
    StopAll,
    RestartAll,
    Reload(u8, u8),
    /// The OS: member n's pending spawn comes up.
    Up(u8),
    Ready(u8, bool),
    Crash(u8),
    Respawn(u8),
    Finish(u8),
    GiveUp(u8),
    /// A stopping (or killed) member's last process goes.
    Gone(u8),
    Advance(u16),
    SpuriousTick,
    /// An observation about a member that has left.
    Stale(u8),
}

struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// The names members may have: a reload adds from the same pool.
const NAMES: [&str; 10] = [
    "db", "web", "cache", "worker", "migrate", "queue", "api", "cron", "mail", "search",
];

/// A member's configuration in the simulation, beside what the fake OS needs.
#[derive(Clone, Debug)]
struct Spec {
    config: MemberConfig,
    stubborn: bool,
    oneshot: bool,
}

struct Sim {
    group: Group,
    policy: GroupPolicy,
    now: Timestamp,
    specs: Vec<Spec>,
    fakes: BTreeMap<String, Fake>,
    /// Ids of live members by name, as the adapter would keep them.
    ids: BTreeMap<MemberId, String>,
    out: GroupOutcome,
    record: bool,
    story: String,
    stats: Stats,
    /// When the shutdown began, once it has.
    shutdown_at: Option<Timestamp>,
    grace_expired: bool,
    next_fingerprint: u64,
    /// What members removed by a reload depended on, while they stop.
    leaving_deps: BTreeMap<String, Vec<String>>,
    /// What the last reload that dropped members dropped, for one that brings them back.
    dropped: Vec<Spec>,
}

/// Runs the simulation that `data` decodes to; checks the invariants after every step.
pub fn run(data: &[u8], record: bool) -> Result<Stats, Violation> {
    let mut bytes = Bytes { data, at: 0 };
    let grace = Duration::from_millis(500 * (1 + u64::from(bytes.next() % 20)));
    let policy = GroupPolicy {
        shutdown_grace: grace,
    };
    let count = 1 + usize::from(bytes.next() % 8);
    let mut specs = Vec::with_capacity(count);
    for (i, name) in NAMES.iter().take(count).enumerate() {
        specs.push(decode_spec(&mut bytes, name, &specs, i as u64));
    }
    // File order differs from dependency order: rotate and swap by the data.
    let rotate = usize::from(bytes.next()) % count;
    specs.rotate_left(rotate);
    if bytes.next() % 2 == 0 {
        specs.reverse();
    }
    let mut sim = Sim {
        group: Group::new(policy),
        policy,
        now: Timestamp::ZERO,
        specs,
        fakes: BTreeMap::new(),
        ids: BTreeMap::new(),
        out: GroupOutcome::default(),
        record,
        story: String::new(),
        stats: Stats::default(),
        shutdown_at: None,
        grace_expired: false,
        next_fingerprint: 1000,
        leaving_deps: BTreeMap::new(),
        dropped: Vec::new(),
    };
    sim.apply()?;
    while !bytes.done() && sim.stats.steps < 400 {
        let op = decode_op(&mut bytes);
        sim.op(op)?;
    }
    let member = bytes.next();
    sim.commands_are_carried_out(member)?;
    sim.shutdown()?;
    Ok(sim.stats)
}

fn decode_spec(bytes: &mut Bytes<'_>, name: &str, earlier: &[Spec], fingerprint: u64) -> Spec {
    let flags = bytes.next();
    let mut depends_on = Vec::new();
    // Dependencies only on members made earlier: a DAG whatever the bytes.
    for e in earlier {
        let b = bytes.next();
        if b % 3 == 0 {
            let condition = match (b / 3) % 3 {
                0 => Condition::Started,
                1 => Condition::Healthy,
                _ => Condition::Completed,
            };
            // A completed condition on a member that never finishes would only wait.
            let condition = if condition == Condition::Completed && !e.oneshot {
                Condition::Healthy
            } else {
                condition
            };
            depends_on.push((e.config.name.clone(), condition));
        }
    }
    Spec {
        config: MemberConfig {
            name: name.to_string(),
            depends_on,
            fingerprint,
            has_readiness: flags & 1 != 0,
        },
        stubborn: flags & 2 != 0,
        oneshot: flags & 12 == 12,
    }
}

fn decode_op(bytes: &mut Bytes<'_>) -> Op {
    let kind = bytes.next();
    let arg = bytes.next();
    match kind % 32 {
        0 => Op::Start(arg),
        1 => Op::Stop(arg),
        2 => Op::StartAll,
        3 => Op::StopAll,
        4 => Op::RestartAll,
        5 => Op::Reload(arg, bytes.next()),
        6..=10 => Op::Up(arg),
        11..=13 => Op::Ready(arg, true),
        14 => Op::Ready(arg, false),
        15 => Op::Crash(arg),
        16..=17 => Op::Respawn(arg),
        18..=19 => Op::Finish(arg),
        20 => Op::GiveUp(arg),
        21..=26 => Op::Gone(arg),
        27..=29 => Op::Advance(u16::from(arg) * 40),
        30 => Op::SpuriousTick,
        _ => Op::Stale(arg),
    }
}

impl Sim {
    fn fail(&self, invariant: &'static str, detail: String) -> Violation {
        Violation {
            invariant,
            detail,
            story: self.story.clone(),
        }
    }

    /// Records a line of the story, which a violation carries back to the caller (the core does
    /// no I/O, not even in its simulation).
    fn say(&mut self, line: String) {
        let _ = writeln!(self.story, "{line}");
    }

    fn name_of(&self, id: MemberId) -> String {
        self.ids
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("{id:?}"))
    }

    /// The member an op's argument picks, among the members the group has now.
    fn pick(&self, n: u8) -> Option<(MemberId, String)> {
        let members = self.group.members();
        if members.is_empty() {
            return None;
        }
        let id = members[usize::from(n) % members.len()];
        Some((id, self.name_of(id)))
    }

    fn config(&self) -> GroupConfig {
        GroupConfig::new(self.specs.iter().map(|s| s.config.clone()).collect())
            .expect("the generator makes valid configurations")
    }

    fn apply(&mut self) -> Result<(), Violation> {
        let config = self.config();
        self.stats.reloads += 1;
        self.input(GroupInput::Apply(config))
    }

    fn op(&mut self, op: Op) -> Result<(), Violation> {
        self.stats.steps += 1;
        if self.record {
            self.say(format!(
                "{:>7}ms  op {op:?}",
                self.now.as_nanos() / 1_000_000
            ));
        }
        match op {
            Op::Start(n) => match self.pick(n) {
                Some((id, _)) => self.input(GroupInput::Start(id)),
                None => Ok(()),
            },
            Op::Stop(n) => match self.pick(n) {
                Some((id, _)) => self.input(GroupInput::Stop(id)),
                None => Ok(()),
            },
            Op::StartAll => self.input(GroupInput::StartAll),
            Op::StopAll => self.input(GroupInput::StopAll),
            Op::RestartAll => self.input(GroupInput::RestartAll),
            Op::Reload(what, arg) => {
                self.mutate(what, arg);
                self.apply()
            }
            Op::Up(n) => self.os(n, |f| {
                if f.has_instance && f.state == StateName::Starting {
                    f.state = StateName::Running;
                }
            }),
            Op::Ready(n, ready) => self.os(n, |f| {
                if f.state == StateName::Running {
                    f.ready = ready;
                }
            }),
            Op::Crash(n) => self.os(n, |f| {
                if f.state == StateName::Running || f.state == StateName::Starting {
                    f.state = StateName::Restarting;
                    f.has_instance = false;
                    f.ready = false;
                }
            }),
            Op::Respawn(n) => self.os(n, |f| {
                if !f.has_instance
                    && matches!(f.state, StateName::Restarting | StateName::BreakerOpen)
                {
                    f.spawn();
                }
            }),
            Op::Finish(n) => self.os(n, |f| {
                if f.oneshot && f.state == StateName::Running {
                    f.state = StateName::Exited;
                    f.has_instance = false;
                    f.ready = false;
                }
            }),
            Op::GiveUp(n) => self.os(n, |f| {
                if !f.has_instance && f.state == StateName::Restarting {
                    f.state = if n % 2 == 0 {
                        StateName::BreakerOpen
                    } else {
                        StateName::Failed
                    };
                }
            }),
            Op::Gone(n) => self.os(n, |f| {
                let going = f.has_instance
                    && (f.state == StateName::Killed
                        || (f.state == StateName::ShuttingDown && !f.stubborn));
                if going {
                    f.gone();
                }
            }),
            Op::Advance(ms) => {
                self.now = self
                    .now
                    .saturating_add(Duration::from_millis(u64::from(ms)));
                self.tick_if_due()
            }
            Op::SpuriousTick => self.input(GroupInput::Tick),
            Op::Stale(n) => {
                // An id from a slot the group never had, or a generation that has passed.
                let stale = stale_id(n);
                if self.ids.contains_key(&stale) {
                    return Ok(());
                }
                self.input(GroupInput::Observed {
                    member: stale,
                    seen: Observed::STOPPED,
                })
            }
        }
    }

    /// A reload's change: drop a member (and what depends on it), add one, change one, or
    /// bring back what an earlier reload dropped exactly as it was (an undone change, maybe
    /// while the dropped members still stop).
    fn mutate(&mut self, what: u8, arg: u8) {
        match what % 4 {
            0 if self.specs.len() > 1 => {
                let gone = self.specs[usize::from(arg) % self.specs.len()]
                    .config
                    .name
                    .clone();
                let mut removed = vec![gone];
                // Dependents go too (repeat until nothing depends on a removed name).
                loop {
                    let before = removed.len();
                    for s in &self.specs {
                        let depends = s.config.depends_on.iter().any(|(d, _)| removed.contains(d));
                        if depends && !removed.contains(&s.config.name) {
                            removed.push(s.config.name.clone());
                        }
                    }
                    if removed.len() == before {
                        break;
                    }
                }
                for s in self
                    .specs
                    .iter()
                    .filter(|s| removed.contains(&s.config.name))
                {
                    let deps = s.config.depends_on.iter().map(|(d, _)| d.clone()).collect();
                    self.leaving_deps.insert(s.config.name.clone(), deps);
                }
                let (gone, kept) = std::mem::take(&mut self.specs)
                    .into_iter()
                    .partition(|s| removed.contains(&s.config.name));
                self.specs = kept;
                self.dropped = gone;
            }
            3 => {
                // What a member needs comes back before it.
                let mut dropped = std::mem::take(&mut self.dropped);
                while let Some(i) = dropped.iter().position(|spec| {
                    let present = |name: &str| self.specs.iter().any(|s| s.config.name == name);
                    !present(&spec.config.name)
                        && spec.config.depends_on.iter().all(|(d, _)| present(d))
                }) {
                    self.specs.push(dropped.remove(i));
                }
            }
            1 => {
                let free = NAMES
                    .iter()
                    .find(|n| self.specs.iter().all(|s| s.config.name != **n));
                if let Some(name) = free {
                    self.next_fingerprint += 1;
                    let data = [arg, arg.rotate_left(3), arg ^ 0x5a, arg.wrapping_mul(7)];
                    let mut bytes = Bytes { data: &data, at: 0 };
                    let spec = decode_spec(&mut bytes, name, &self.specs, self.next_fingerprint);
                    self.specs.push(spec);
                }
            }
            _ => {
                if !self.specs.is_empty() {
                    let i = usize::from(arg) % self.specs.len();
                    self.next_fingerprint += 1;
                    self.specs[i].config.fingerprint = self.next_fingerprint;
                    self.specs[i].config.has_readiness ^= arg & 1 != 0;
                }
            }
        }
    }

    /// The fake OS changes member `n`; the group observes it.
    fn os(&mut self, n: u8, change: impl FnOnce(&mut Fake)) -> Result<(), Violation> {
        let Some((id, name)) = self.pick(n) else {
            return Ok(());
        };
        let Some(fake) = self.fakes.get_mut(&name) else {
            return Err(self.fail("G5", format!("{name} has no process machine")));
        };
        change(fake);
        let seen = fake.seen();
        self.input(GroupInput::Observed { member: id, seen })
    }

    fn tick_if_due(&mut self) -> Result<(), Violation> {
        match self.group.poll_timeout() {
            Some(at) if at <= self.now => self.input(GroupInput::Tick),
            _ => Ok(()),
        }
    }

    /// Feeds one input and carries out its effects on the fake OS, checking the invariants.
    fn input(&mut self, input: GroupInput) -> Result<(), Violation> {
        let single_stop = matches!(input, GroupInput::Stop(_));
        let apply = matches!(input, GroupInput::Apply(_));
        // For G4: what each unchanged member was doing before a reload.
        let before: BTreeMap<String, (bool, bool)> = if apply {
            self.ids
                .iter()
                .map(|(id, name)| {
                    let waiting = (
                        self.group.is_start_pending(*id),
                        self.group.is_stop_pending(*id),
                    );
                    (name.clone(), waiting)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        if self.record {
            self.say(format!("          in  {input:?}"));
        }
        let mut out = std::mem::take(&mut self.out);
        self.group.handle(self.now, input, &mut out);
        if self.record {
            for e in &out.effects {
                self.say(format!("          eff {e:?} ({})", self.name_of_effect(e)));
            }
            for n in &out.notifications {
                self.say(format!("          not {n:?}"));
            }
        }
        let unchanged: Vec<String> = out
            .report
            .as_ref()
            .map(|r| r.unchanged.clone())
            .unwrap_or_default();
        let mut observe = Vec::new();
        for effect in out.effects.clone() {
            self.effect(effect, single_stop, &mut observe)?;
            if apply {
                self.check_untouched(effect, &unchanged, &before)?;
            }
        }
        for n in &out.notifications {
            if let GroupNotification::GraceExpired { .. } = n {
                self.grace_expired = true;
                self.stats.grace_expired += 1;
            }
        }
        self.out = out;
        if let Err(detail) = self.group.check_bookkeeping() {
            return Err(self.fail("G5", detail));
        }
        self.check_membership()?;
        // The group sees every change the effects made, as the adapter would report it.
        for (id, name) in observe {
            if let Some(fake) = self.fakes.get(&name) {
                let seen = fake.seen();
                if self.group.seen(id).is_some() && self.group.seen(id) != Some(seen) {
                    self.input(GroupInput::Observed { member: id, seen })?;
                }
            }
        }
        Ok(())
    }

    fn name_of_effect(&self, e: &GroupEffect) -> String {
        let id = match *e {
            GroupEffect::Supervise(id)
            | GroupEffect::Start(id)
            | GroupEffect::Stop(id)
            | GroupEffect::Kill(id)
            | GroupEffect::Forget(id)
            | GroupEffect::Reconfigure { member: id, .. } => id,
        };
        self.group
            .name(id)
            .map(str::to_string)
            .unwrap_or_else(|| self.name_of(id))
    }

    fn effect(
        &mut self,
        effect: GroupEffect,
        single_stop: bool,
        observe: &mut Vec<(MemberId, String)>,
    ) -> Result<(), Violation> {
        match effect {
            GroupEffect::Supervise(id) => {
                let Some(name) = self.group.name(id).map(str::to_string) else {
                    return Err(self.fail("G5", format!("supervise of unknown {id:?}")));
                };
                if self.fakes.contains_key(&name) {
                    return Err(self.fail(
                        "G5",
                        format!("{name} supervised while its old machine still exists"),
                    ));
                }
                let spec = self.spec(&name).cloned();
                let (stubborn, oneshot) = spec.map_or((false, false), |s| (s.stubborn, s.oneshot));
                self.fakes
                    .insert(name.clone(), Fake::new(stubborn, oneshot));
                self.ids.insert(id, name);
            }
            GroupEffect::Start(id) => {
                let name = self.known(id)?;
                if self.shutdown_at.is_some() {
                    return Err(self.fail("G3", format!("{name} started during a shutdown")));
                }
                self.stats.starts += 1;
                self.check_gate(&name)?;
                self.fakes.get_mut(&name).expect("known").start();
                observe.push((id, name));
            }
            GroupEffect::Stop(id) => {
                let name = self.known(id)?;
                if !single_stop {
                    self.stats.ordered_stops += 1;
                    if !self.grace_expired {
                        self.check_dependents_gone(&name)?;
                    }
                }
                self.fakes.get_mut(&name).expect("known").stop();
                observe.push((id, name));
            }
            GroupEffect::Kill(id) => {
                let name = self.known(id)?;
                self.fakes.get_mut(&name).expect("known").kill();
                observe.push((id, name));
            }
            GroupEffect::Reconfigure { member, restart } => {
                let name = self.known(member)?;
                self.stats.reconfigured += 1;
                let fake = self.fakes.get_mut(&name).expect("known");
                if let Some(spec) = self.specs.iter().find(|s| s.config.name == name) {
                    fake.stubborn = spec.stubborn;
                    fake.oneshot = spec.oneshot;
                }
                if restart && fake.has_instance {
                    fake.stop();
                    fake.then_start = true;
                }
                observe.push((member, name));
            }
            GroupEffect::Forget(id) => {
                let Some(name) = self.ids.remove(&id) else {
                    return Err(self.fail("G5", format!("forget of unknown {id:?}")));
                };
                let fake = self.fakes.remove(&name).expect("supervised");
                if !fake.seen().at_rest() {
                    return Err(self.fail("G5", format!("{name} forgotten while not at rest")));
                }
                self.stats.forgotten += 1;
            }
        }
        Ok(())
    }

    fn known(&self, id: MemberId) -> Result<String, Violation> {
        match self.ids.get(&id) {
            Some(name) if self.fakes.contains_key(name) => Ok(name.clone()),
            _ => Err(self.fail(
                "G5",
                format!("effect for a member never supervised: {id:?}"),
            )),
        }
    }

    fn spec(&self, name: &str) -> Option<&Spec> {
        self.specs.iter().find(|s| s.config.name == name)
    }

    /// G1: a start only when every dependency meets its condition.
    fn check_gate(&self, name: &str) -> Result<(), Violation> {
        let Some(spec) = self.spec(name) else {
            return Err(self.fail("G1", format!("{name} started but not configured")));
        };
        for (dep, condition) in &spec.config.depends_on {
            let met = match (self.fakes.get(dep), self.spec(dep)) {
                (Some(f), Some(s)) => condition.met(&f.seen(), s.config.has_readiness),
                _ => false,
            };
            if !met {
                return Err(self.fail("G1", format!("{name} started before {dep} was {condition}")));
            }
        }
        Ok(())
    }

    /// G2: an ordered stop signals a member only once no dependent has a process left.
    fn check_dependents_gone(&self, name: &str) -> Result<(), Violation> {
        for (id, dependent) in &self.ids {
            let depends = self.group_deps(*id).iter().any(|d| d == name);
            let live = self.fakes.get(dependent).is_some_and(|f| f.has_instance);
            if depends && live {
                return Err(self.fail(
                    "G2",
                    format!("{name} signalled while its dependent {dependent} still runs"),
                ));
            }
        }
        Ok(())
    }

    /// The dependencies of a member: the configured ones, or for a member leaving after a
    /// reload, the ones it had.
    fn group_deps(&self, id: MemberId) -> Vec<String> {
        let Some(name) = self.ids.get(&id) else {
            return Vec::new();
        };
        match self.spec(name) {
            Some(spec) => spec
                .config
                .depends_on
                .iter()
                .map(|(d, _)| d.clone())
                .collect(),
            None => self.leaving_deps.get(name).cloned().unwrap_or_default(),
        }
    }

    /// G4: a reload touches no unchanged member, except to send what was already held back
    /// (a start waiting for its gate, an ordered stop waiting for its dependents).
    fn check_untouched(
        &self,
        effect: GroupEffect,
        unchanged: &[String],
        before: &BTreeMap<String, (bool, bool)>,
    ) -> Result<(), Violation> {
        let (id, what) = match effect {
            GroupEffect::Start(id) => (id, "start"),
            GroupEffect::Stop(id) => (id, "stop"),
            GroupEffect::Kill(id) => (id, "kill"),
            GroupEffect::Reconfigure { member, .. } => (member, "reconfigure"),
            GroupEffect::Forget(id) => (id, "forget"),
            GroupEffect::Supervise(_) => return Ok(()),
        };
        let name = self.name_of(id);
        if !unchanged.contains(&name) {
            return Ok(());
        }
        // What was held back before the reload may proceed: a start waiting for its gate or
        // for a restart of everything, an ordered stop waiting for its dependents.
        let (start_waiting, stop_pending) = before.get(&name).copied().unwrap_or_default();
        if (what == "start" && start_waiting) || (what == "stop" && stop_pending) {
            return Ok(());
        }
        Err(self.fail(
            "G4",
            format!("reload sent {what} to unchanged member {name}"),
        ))
    }

    /// G5: the group's members are the configured ones plus those still leaving, each with
    /// exactly one process machine.
    fn check_membership(&self) -> Result<(), Violation> {
        for s in &self.specs {
            if self.shutdown_at.is_none() && self.group.find(&s.config.name).is_none() {
                return Err(self.fail(
                    "G5",
                    format!("{} configured but not a member", s.config.name),
                ));
            }
        }
        for &id in self.group.members() {
            let name = self.group.name(id).unwrap_or("?");
            if !self.fakes.contains_key(name) {
                return Err(self.fail("G5", format!("member {name} has no process machine")));
            }
        }
        if self.fakes.len() != self.group.members().len() {
            return Err(self.fail(
                "G5",
                format!(
                    "{} process machines for {} members",
                    self.fakes.len(),
                    self.group.members().len()
                ),
            ));
        }
        Ok(())
    }

    /// G7: the group holds nothing back for nothing. With an OS that carries out every start
    /// and stop (each spawn comes up and becomes ready, each stopped instance goes, nothing
    /// crashes or finishes): after `stop NAME` the member is at rest; after `start NAME` it is
    /// running; after a start of everything every member is running. Except a member that waits, directly or through others, for a `completed`
    /// condition: nothing finishes here.
    fn commands_are_carried_out(&mut self, member: u8) -> Result<(), Violation> {
        let Some((id, name)) = self.pick(member) else {
            return Ok(());
        };
        self.op(Op::Stop(member))?;
        self.settle()?;
        // A member a reload removed is forgotten once at rest.
        if !self.fakes.get(&name).is_none_or(|f| f.seen().at_rest()) {
            return Err(self.fail("G7", format!("{name} not at rest after stop {name}")));
        }
        self.input(GroupInput::Start(id))?;
        self.settle()?;
        self.expect_up(&[name], "start")?;
        self.op(Op::StartAll)?;
        self.settle()?;
        let all: Vec<String> = self.specs.iter().map(|s| s.config.name.clone()).collect();
        self.expect_up(&all, "a start of everything")
    }

    /// The cooperative OS at work until nothing moves: spawns come up and become ready,
    /// stopped instances go (its own machine kills what ignores the stop signal), backoffs end.
    fn settle(&mut self) -> Result<(), Violation> {
        // Each round moves every member one step; a member needs at most spawn, up, ready,
        // and a dependency chain is at most as long as the members are many.
        for _ in 0..4 * (NAMES.len() + 2) {
            let mut moved = false;
            for (i, id) in self.group.members().to_vec().into_iter().enumerate() {
                let name = self.name_of(id);
                let Some(fake) = self.fakes.get(&name) else {
                    continue;
                };
                let wants_ready = self.spec(&name).is_some_and(|s| s.config.has_readiness);
                let op = match (fake.state, fake.has_instance) {
                    (StateName::Starting, true) => Op::Up(i as u8),
                    (StateName::Running, true) if wants_ready && !fake.ready => {
                        Op::Ready(i as u8, true)
                    }
                    (StateName::ShuttingDown | StateName::Killed, true) => {
                        self.fakes.get_mut(&name).expect("known").stubborn = false;
                        Op::Gone(i as u8)
                    }
                    (StateName::Restarting, false) => Op::Respawn(i as u8),
                    _ => continue,
                };
                moved = true;
                self.op(op)?;
            }
            if !moved {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Each of `names` is running, unless it waits for a completion (directly or through
    /// others). (What it depends on was pulled in only where its condition was not met: a
    /// dependency stopped after its dependent started stays stopped.)
    fn expect_up(&self, names: &[String], after: &str) -> Result<(), Violation> {
        let mut todo = names.to_vec();
        let mut checked = Vec::new();
        while let Some(name) = todo.pop() {
            // Not configured (removed by a reload): it has no start to come.
            if checked.contains(&name)
                || self.spec(&name).is_none()
                || self.waits_for_completion(&name)
            {
                continue;
            }
            let state = self.fakes.get(&name).map(|f| f.state);
            if state != Some(StateName::Running) {
                let waiting = self
                    .group
                    .find(&name)
                    .and_then(|id| self.group.waiting_for(id))
                    .map(|(dep, condition)| {
                        let name = self.name_of(dep);
                        let fake = self.fakes.get(&name).map(Fake::seen);
                        format!(", waiting for {name} {condition} (it is {fake:?})")
                    });
                return Err(self.fail(
                    "G7",
                    format!(
                        "{name} is {state:?} after {after}{}",
                        waiting.unwrap_or_default()
                    ),
                ));
            }
            checked.push(name);
        }
        Ok(())
    }

    /// Whether `name` waits, directly or through others, for a `completed` condition.
    fn waits_for_completion(&self, name: &str) -> bool {
        let mut todo = vec![name.to_string()];
        let mut seen = Vec::new();
        while let Some(n) = todo.pop() {
            if seen.contains(&n) {
                continue;
            }
            for (dep, condition) in self.spec(&n).map_or(&[][..], |s| &s.config.depends_on) {
                if *condition == Condition::Completed {
                    return true;
                }
                todo.push(dep.clone());
            }
            seen.push(n);
        }
        false
    }

    /// G6: a shutdown completes within `shutdown_grace` plus one kill retry, whatever the
    /// members do (stubborn ones are killed; everything else stops when asked).
    fn shutdown(&mut self) -> Result<(), Violation> {
        self.shutdown_at = Some(self.now);
        let start = self.now;
        if self.record {
            self.say(format!(
                "{:>7}ms  shutdown",
                self.now.as_nanos() / 1_000_000
            ));
        }
        self.input(GroupInput::Shutdown)?;
        let bound = start.saturating_add(shutdown_bound(&self.policy));
        // Processes that honour the stop signal go promptly; time moves in 100 ms steps.
        for _ in 0..10_000 {
            if self.group.is_shut_down() {
                break;
            }
            let going: Vec<u8> = self
                .group
                .members()
                .iter()
                .enumerate()
                .filter(|(_, id)| {
                    let name = self.name_of(**id);
                    self.fakes.get(&name).is_some_and(|f| {
                        f.has_instance
                            && (f.state == StateName::Killed
                                || (f.state == StateName::ShuttingDown && !f.stubborn))
                    })
                })
                .map(|(i, _)| i as u8)
                .collect();
            if let Some(&i) = going.first() {
                self.op(Op::Gone(i))?;
                continue;
            }
            // Members waiting for a restart or a cooldown are stopped by the shutdown too;
            // nothing else can happen but time passing.
            self.now = self.now.saturating_add(Duration::from_millis(100));
            self.tick_if_due()?;
            if self.now > bound {
                break;
            }
        }
        if !self.group.is_shut_down() {
            return Err(self.fail(
                "G6",
                format!(
                    "shutdown not complete {} ms after it began (grace {} ms)",
                    self.now.saturating_since(start).as_millis(),
                    self.policy.shutdown_grace.as_millis()
                ),
            ));
        }
        if self.now > bound {
            return Err(self.fail("G6", "shutdown took longer than grace + kill retry".into()));
        }
        Ok(())
    }
}

/// An id no live member has: a slot index past any this simulation uses, or generation 1+ of
/// one it may use.
fn stale_id(n: u8) -> MemberId {
    MemberId::from_parts(u32::from(n % 16), 1 + u32::from(n / 16))
}
