//! The supervision state machine of one process.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::breaker::Breaker;
use crate::health::{Reached, Verdict};
use crate::input::{
    ExitStatus, Input, Instance, Pid, ProbeResult, ProbeRole, RestartCause, SpawnError, Usage,
};
use crate::limits::Track;
use crate::output::{
    BreakerStatus, Cause, Deadline, DeadlineKind, Effect, IgnoreReason, Notification, Outcome,
    Roles, SpawnKind, StateName,
};
use crate::policy::{LimitAction, Policy, PolicyErrors, Resource, RestartPolicy};
use crate::time::Timestamp;

/// After a kill, how long to wait for the group to be gone before killing it again. A SIGKILL
/// cannot be ignored, but a group can fork while it is being killed; retrying keeps every stop
/// bounded without trusting one signal.
pub const KILL_RETRY: Duration = Duration::from_secs(1);

/// The supervision state machine of one process: it alone decides when to spawn, signal, kill
/// and restart.
///
/// # Driving contract
/// - Call [`Machine::handle`] for every input, with a `now` that never goes backwards (an
///   earlier `now` is clamped to the latest seen).
/// - Carry out the returned effects in order; publish the notifications.
/// - After every call, (re)arm one timer for [`Machine::poll_timeout`]; when it fires, read the
///   clock and hand the machine [`Input::Tick`] with that `now`. An early or spurious tick does
///   nothing, and because deadlines are derived from the state, a stale timer cannot exist.
/// - Report every spawn's result ([`Input::Spawned`] or [`Input::SpawnFailed`]) and, for an
///   instance that started, [`Input::Exited`] then [`Input::Gone`]. The machine never assumes
///   an effect succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    policy: Policy,
    now: Timestamp,
    phase: Phase,
    /// The number of the newest instance ever spawned (0: none yet).
    last_instance: u64,
    /// Restart spawns so far, all causes (for status output).
    restarts: u64,
    /// What asked for the latest restart spawn, so a count by cause can follow `restarts`.
    last_restart: Option<Trigger>,
    /// How the last instance's main process ended, if one did.
    last_exit: Option<ExitStatus>,
    backoff: Backoff,
    breaker: Breaker,
    probes: Probes,
    limits: [Track; Resource::ALL.len()],
}

/// Where the machine is. Every variant holds exactly what is valid there: a pid only where a
/// child was confirmed, a deadline only where one is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No child, none coming unless asked.
    Idle(Rest),
    /// No child; a new one is spawned when the backoff ends.
    BackingOff { until: Timestamp, launch: Launch },
    /// A spawn was asked for and not yet answered.
    Spawning { instance: Instance, launch: Launch },
    /// A child is up.
    Live(Live),
    /// A child is being stopped (or its leftovers after its main process exited); what comes
    /// next is decided already.
    Draining(Drain),
}

/// The resting states: no child, nothing to wait for except perhaps a cooldown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    Stopped,
    Exited(ExitStatus),
    Failed(Failure),
    Killed,
    BreakerOpen { until: Option<Timestamp> },
}

/// What made a process fail for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Exit(ExitStatus),
    Spawn(SpawnError),
}

/// Why the next instance is spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launch {
    Start,
    Restart(Trigger),
    Trial,
}

/// Every restart trigger. They all meet in [`Machine::trigger`] and [`Machine::relaunch`]: one
/// decision point, so restarts cannot overlap and the breaker counts them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Exit(ExitStatus),
    SpawnFailed(SpawnError),
    Liveness,
    Startup,
    Limit(Resource),
    Manual(RestartCause),
}

impl Trigger {
    /// The cause a transition made by this trigger carries.
    fn cause(self) -> Cause {
        match self {
            Trigger::Exit(status) => Cause::Exited(status),
            Trigger::SpawnFailed(error) => Cause::SpawnFailed(error),
            Trigger::Liveness => Cause::LivenessFailed,
            Trigger::Startup => Cause::StartupFailed,
            Trigger::Limit(resource) => Cause::Limit {
                resource,
                action: LimitAction::Restart,
            },
            Trigger::Manual(cause) => Cause::Restart(cause),
        }
    }

    /// Failures get backoff and end a half-open trial; manual and reload restarts do neither.
    fn is_failure(self) -> bool {
        !matches!(self, Trigger::Manual(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Live {
    instance: Instance,
    pid: Pid,
    since: Timestamp,
    /// The startup probe has passed (or there is none).
    started: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Drain {
    instance: Instance,
    /// `None` while the spawn is still unanswered: signals wait for `Spawned`.
    pid: Option<Pid>,
    /// The main process has exited.
    exited: bool,
    /// When to kill (or kill again).
    deadline: Timestamp,
    /// The group was sent SIGKILL (or will be, as soon as its pid is known).
    escalated: bool,
    then: Then,
}

impl Drain {
    /// Draining an instance whose spawn is not answered yet: the signal (or the kill) waits
    /// for its `Spawned`; a `SpawnFailed` completes the drain.
    fn unconfirmed(instance: Instance, deadline: Timestamp, escalated: bool, then: Rest) -> Drain {
        Drain {
            instance,
            pid: None,
            exited: false,
            deadline,
            escalated,
            then: Then::Rest(then),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Rest(Rest),
    Spawn(Launch),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Probes {
    startup: Verdict,
    liveness: Verdict,
    readiness: Verdict,
}

/// The outputs of one step under construction.
struct Step {
    input: &'static str,
    cause: Option<Cause>,
    out: Outcome,
}

impl Step {
    fn effect(&mut self, effect: Effect) {
        self.out.effects.push(effect);
    }
    fn notify(&mut self, n: Notification) {
        self.out.notifications.push(n);
    }
    fn ignore(&mut self, reason: IgnoreReason) {
        let input = self.input;
        self.notify(Notification::Ignored { input, reason });
    }
}

impl Machine {
    /// A stopped machine with a validated policy. Nothing happens until [`Input::Start`].
    pub fn new(policy: Policy) -> Result<Machine, PolicyErrors> {
        policy.validate()?;
        Ok(Machine {
            now: Timestamp::ZERO,
            phase: Phase::Idle(Rest::Stopped),
            last_instance: 0,
            restarts: 0,
            last_restart: None,
            last_exit: None,
            backoff: Backoff::new(policy.seed),
            breaker: Breaker::new(&policy.breaker),
            probes: Probes::default(),
            limits: Default::default(),
            policy,
        })
    }

    /// Replaces the policy (a reload changed the process's configuration), keeping the
    /// history: restart count, last exit, the breaker's window and cooldown, the crash streak.
    /// The new limits apply from the next spawn on, when probes and samples are set up again.
    ///
    /// A method rather than an [`Input`]: a configuration is not something that happens to
    /// the process, and the runtime calls this only while no instance exists (or right before
    /// the spawn of the next one), so no decision ever reads a half-changed policy.
    pub fn reconfigure(&mut self, policy: Policy) -> Result<(), PolicyErrors> {
        policy.validate()?;
        self.policy = policy;
        Ok(())
    }

    // ----- getters ---------------------------------------------------------------------------

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The latest `now` seen.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The state users see.
    pub fn state(&self) -> StateName {
        match self.phase {
            Phase::Idle(rest) => rest_name(rest),
            Phase::BackingOff { .. } => StateName::Restarting,
            Phase::Spawning { launch, .. } => match launch {
                Launch::Start => StateName::Starting,
                Launch::Restart(_) | Launch::Trial => StateName::Restarting,
            },
            Phase::Live(l) if l.started => StateName::Running,
            Phase::Live(_) => StateName::Starting,
            Phase::Draining(d) => match d.then {
                Then::Spawn(Launch::Start) => StateName::Starting,
                Then::Spawn(_) => StateName::Restarting,
                Then::Rest(Rest::Killed) => StateName::Killed,
                Then::Rest(_) => StateName::ShuttingDown,
            },
        }
    }

    /// The current instance: spawning, up or being stopped. Facts about any other are stale.
    pub fn instance(&self) -> Option<Instance> {
        match self.phase {
            Phase::Spawning { instance, .. } => Some(instance),
            Phase::Live(l) => Some(l.instance),
            Phase::Draining(d) => Some(d.instance),
            Phase::Idle(_) | Phase::BackingOff { .. } => None,
        }
    }

    /// The current instance's main process id, once its spawn was confirmed.
    pub fn pid(&self) -> Option<Pid> {
        match self.phase {
            Phase::Live(l) => Some(l.pid),
            Phase::Draining(d) => d.pid,
            _ => None,
        }
    }

    /// When the current instance started, while it is up.
    pub fn up_since(&self) -> Option<Timestamp> {
        match self.phase {
            Phase::Live(l) => Some(l.since),
            _ => None,
        }
    }

    /// Whether the current instance passed its readiness probe (always false without one).
    pub fn ready(&self) -> bool {
        matches!(self.phase, Phase::Live(_)) && self.probes.readiness.healthy()
    }

    /// Restart spawns so far, every cause.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// The cause (as named in events) of the latest restart spawn counted by
    /// [`Machine::restarts`]: `exited`, `oom_killed`, `spawn_failed`, `liveness_failed`,
    /// `startup_failed`, `limit_exceeded`, `manual_restart` or `reload`.
    pub fn last_restart_cause(&self) -> Option<&'static str> {
        self.last_restart.map(|t| t.cause().name())
    }

    /// The breaker, as status output shows it.
    pub fn breaker(&self) -> BreakerStatus {
        match self.phase {
            Phase::Idle(Rest::BreakerOpen { until }) => BreakerStatus::Open { until },
            _ if self.breaker.half_open => BreakerStatus::HalfOpen,
            _ => BreakerStatus::Closed,
        }
    }

    /// How the main process of the last instance that exited ended (also after a stop or a
    /// kill, when no transition reports it).
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// The next deadline, if the machine is waiting for one. Only one is ever armed.
    pub fn poll_timeout(&self) -> Option<Deadline> {
        let (at, kind) = match self.phase {
            Phase::BackingOff { until, .. } => (until, DeadlineKind::Backoff),
            Phase::Idle(Rest::BreakerOpen { until: Some(at) }) => {
                (at, DeadlineKind::BreakerCooldown)
            }
            Phase::Draining(d) if d.escalated => (d.deadline, DeadlineKind::KillRetry),
            Phase::Draining(d) => (d.deadline, DeadlineKind::StopGrace),
            Phase::Live(l) => (self.stable_deadline(l)?, DeadlineKind::StableUptime),
            Phase::Idle(_) | Phase::Spawning { .. } => return None,
        };
        Some(Deadline { at, kind })
    }

    // ----- the step function -----------------------------------------------------------------

    /// Feeds one input at time `now` and returns what to do about it. Never fails: an input
    /// that does not apply is reported as [`Notification::Ignored`] and changes nothing.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Outcome {
        self.now = self.now.max(now);
        let before = self.state();
        let mut step = Step {
            input: input.name(),
            cause: None,
            out: Outcome::default(),
        };
        match input.instance() {
            Some(instance) if self.instance() != Some(instance) => {
                step.ignore(IgnoreReason::Stale);
                return step.out;
            }
            _ => self.dispatch(input, &mut step),
        }
        let after = self.state();
        if before == after {
            return step.out;
        }
        let instance = input
            .instance()
            .or(self.instance())
            .or_else(|| self.newest());
        // A step never moves from one instance with a pid to another: a new instance starts
        // out spawning. So the current pid, if any, is the named instance's.
        let pid = self.pid();
        let transition = Notification::Transition {
            from: before,
            to: after,
            cause: step.cause.or_else(|| default_cause(input)).expect(
                "every handler that changes the state after a probe, sample or tick names its cause",
            ),
            instance,
            pid,
        };
        // The transition comes first, so observers see the state change before its details.
        let mut out = Outcome {
            effects: step.out.effects,
            ..Outcome::default()
        };
        out.notifications.push(transition);
        for n in &step.out.notifications {
            out.notifications.push(*n);
        }
        out
    }

    fn dispatch(&mut self, input: Input, s: &mut Step) {
        match input {
            Input::Start => self.start(s),
            Input::Restart { cause } => self.restart(cause, s),
            Input::Stop { grace } => self.stop(grace.unwrap_or(self.policy.stop.grace), s),
            Input::Kill => self.kill(s),
            Input::ResetBreaker => self.reset_breaker(s),
            Input::Forward { signal } => self.forward(signal, s),
            Input::Spawned { pid, .. } => self.spawned(pid, s),
            Input::SpawnFailed { error, .. } => self.spawn_failed(error, s),
            Input::Exited { status, .. } => self.exited(status, s),
            Input::Gone { .. } => self.gone(s),
            Input::Probe { role, result, .. } => self.probe(role, result, s),
            Input::Sampled { usage, .. } => self.sampled(usage, s),
            Input::Tick => self.tick(s),
        }
    }

    // ----- commands --------------------------------------------------------------------------

    fn start(&mut self, s: &mut Step) {
        match &mut self.phase {
            Phase::Idle(_) => {
                self.fresh_start();
                self.spawn(Launch::Start, s);
            }
            Phase::Draining(d) if matches!(d.then, Then::Rest(_)) => {
                d.then = Then::Spawn(Launch::Start);
                self.fresh_start();
            }
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    /// An explicit start forgets the past: breaker closed and emptied, crash streak over.
    fn fresh_start(&mut self) {
        self.breaker.reset(&self.policy.breaker);
        self.backoff.reset();
    }

    fn restart(&mut self, cause: RestartCause, s: &mut Step) {
        match self.phase {
            Phase::Idle(_) => {
                s.cause = Some(Cause::Restart(cause));
                self.start(s);
            }
            Phase::Live(_) => self.trigger(Trigger::Manual(cause), s),
            _ => s.ignore(IgnoreReason::Coalesced),
        }
    }

    fn stop(&mut self, grace: Duration, s: &mut Step) {
        let deadline = self.now.saturating_add(grace);
        match &mut self.phase {
            Phase::Idle(Rest::BreakerOpen { .. }) | Phase::BackingOff { .. } => {
                self.rest(Rest::Stopped)
            }
            Phase::Idle(_) => s.ignore(IgnoreReason::NotApplicable),
            Phase::Spawning { instance, .. } => {
                self.phase = Phase::Draining(Drain::unconfirmed(
                    *instance,
                    deadline,
                    false,
                    Rest::Stopped,
                ));
            }
            Phase::Live(_) => self.drain_live(Then::Rest(Rest::Stopped), grace, s),
            Phase::Draining(d) => match d.then {
                Then::Rest(Rest::Killed) => s.ignore(IgnoreReason::NotApplicable),
                _ => {
                    d.then = Then::Rest(Rest::Stopped);
                    if !d.escalated {
                        d.deadline = d.deadline.min(deadline);
                    }
                }
            },
        }
    }

    fn kill(&mut self, s: &mut Step) {
        let retry = self.now.saturating_add(KILL_RETRY);
        match &mut self.phase {
            Phase::Idle(Rest::BreakerOpen { .. }) | Phase::BackingOff { .. } => {
                self.rest(Rest::Killed)
            }
            Phase::Idle(_) => s.ignore(IgnoreReason::NotApplicable),
            Phase::Spawning { instance, .. } => {
                self.phase =
                    Phase::Draining(Drain::unconfirmed(*instance, retry, true, Rest::Killed));
            }
            Phase::Live(l) => {
                let l = *l;
                self.leave(l, s);
                s.effect(Effect::KillGroup {
                    instance: l.instance,
                });
                self.phase = Phase::Draining(Drain {
                    instance: l.instance,
                    pid: Some(l.pid),
                    exited: false,
                    deadline: retry,
                    escalated: true,
                    then: Then::Rest(Rest::Killed),
                });
            }
            Phase::Draining(d) => {
                if d.escalated && d.then == Then::Rest(Rest::Killed) {
                    s.ignore(IgnoreReason::NotApplicable);
                    return;
                }
                d.then = Then::Rest(Rest::Killed);
                if !d.escalated {
                    d.escalated = true;
                    d.deadline = retry;
                    if d.pid.is_some() {
                        s.effect(Effect::KillGroup {
                            instance: d.instance,
                        });
                    }
                }
            }
        }
    }

    fn reset_breaker(&mut self, s: &mut Step) {
        self.fresh_start();
        if let Phase::Idle(Rest::BreakerOpen { .. }) = self.phase {
            self.spawn(Launch::Start, s);
        }
    }

    fn forward(&mut self, signal: crate::Signal, s: &mut Step) {
        match (self.instance(), self.pid()) {
            (Some(instance), Some(_)) => s.effect(Effect::Signal { instance, signal }),
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    // ----- facts about the child -------------------------------------------------------------

    fn spawned(&mut self, pid: Pid, s: &mut Step) {
        match &mut self.phase {
            Phase::Spawning { instance, .. } => {
                let started = self.policy.health.startup.is_none();
                let live = Live {
                    instance: *instance,
                    pid,
                    since: self.now,
                    started,
                };
                self.probes = Probes::default();
                self.limits = Default::default();
                self.phase = Phase::Live(live);
                self.watch(live, s);
            }
            Phase::Draining(d) if d.pid.is_none() => {
                d.pid = Some(pid);
                let instance = d.instance;
                s.effect(if d.escalated {
                    Effect::KillGroup { instance }
                } else {
                    Effect::Signal {
                        instance,
                        signal: self.policy.stop.signal,
                    }
                });
            }
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    fn spawn_failed(&mut self, error: SpawnError, s: &mut Step) {
        match self.phase {
            Phase::Spawning { instance, .. } => {
                s.notify(Notification::SpawnFailed { instance, error });
                let trigger = Trigger::SpawnFailed(error);
                if self.policy.restart == RestartPolicy::Never {
                    self.rest(Rest::Failed(Failure::Spawn(error)));
                } else {
                    self.relaunch(Launch::Restart(trigger), s);
                }
            }
            // The child never existed: the drain is complete.
            Phase::Draining(d) if d.pid.is_none() => self.drained(d.then, s),
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    fn exited(&mut self, status: ExitStatus, s: &mut Step) {
        match &mut self.phase {
            Phase::Live(l) => {
                let l = *l;
                self.last_exit = Some(status);
                let then = self.after_exit(status);
                self.leave(l, s);
                // Whatever comes next, leftovers of the group get the stop signal and the grace.
                self.signal_and_drain(l, then, self.policy.stop.grace, true, s);
            }
            Phase::Draining(d) if !d.exited => {
                d.exited = true;
                self.last_exit = Some(status);
            }
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    /// What an exit of the main process leads to, per restart policy and exit-code rules.
    fn after_exit(&self, status: ExitStatus) -> Then {
        let rules = &self.policy.exit_codes;
        let code = match status {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) | ExitStatus::OomKilled => None,
        };
        let success = rules.is_success(status);
        let restart = if code.is_some_and(|c| rules.prevent_restart.contains(&c)) {
            false
        } else if code.is_some_and(|c| rules.force_restart.contains(&c)) {
            true
        } else {
            match self.policy.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !success,
                RestartPolicy::Never => false,
            }
        };
        if restart {
            Then::Spawn(Launch::Restart(Trigger::Exit(status)))
        } else if success {
            Then::Rest(Rest::Exited(status))
        } else {
            Then::Rest(Rest::Failed(Failure::Exit(status)))
        }
    }

    fn gone(&mut self, s: &mut Step) {
        match self.phase {
            Phase::Draining(d) => self.drained(d.then, s),
            // A live instance is gone only after its exit was reported.
            _ => s.ignore(IgnoreReason::NotApplicable),
        }
    }

    fn probe(&mut self, role: ProbeRole, result: ProbeResult, s: &mut Step) {
        let Phase::Live(live) = &mut self.phase else {
            s.ignore(if matches!(self.phase, Phase::Draining(_)) {
                IgnoreReason::Coalesced
            } else {
                IgnoreReason::NotApplicable
            });
            return;
        };
        let health = &self.policy.health;
        let (thresholds, verdict) = match role {
            ProbeRole::Startup => (health.startup, &mut self.probes.startup),
            ProbeRole::Liveness => (health.liveness, &mut self.probes.liveness),
            ProbeRole::Readiness => (health.readiness, &mut self.probes.readiness),
        };
        // Startup results count only until it passes; the others only after.
        let Some(t) = thresholds.filter(|_| live.started != (role == ProbeRole::Startup)) else {
            s.ignore(IgnoreReason::NotApplicable);
            return;
        };
        let was_healthy = verdict.healthy();
        let reached = verdict.record(&t, result);
        let instance = live.instance;
        if let ProbeResult::Fail(failure) = result {
            if verdict.fails() <= t.failure_threshold {
                s.notify(Notification::ProbeFailed {
                    instance,
                    role,
                    failure,
                    consecutive: verdict.fails(),
                    threshold: t.failure_threshold,
                });
            }
        }
        match (role, reached) {
            (ProbeRole::Startup, Some(Reached::Pass)) => {
                live.started = true;
                let live = *live;
                s.cause = Some(Cause::StartupPassed);
                self.watch(live, s);
            }
            (ProbeRole::Startup, Some(Reached::Fail)) => {
                s.cause = Some(Cause::StartupFailed);
                self.trigger(Trigger::Startup, s);
            }
            (ProbeRole::Liveness, Some(Reached::Fail)) => {
                s.cause = Some(Cause::LivenessFailed);
                self.trigger(Trigger::Liveness, s);
            }
            (ProbeRole::Readiness, Some(r)) => {
                let ready = r == Reached::Pass;
                // A run of failures in an instance that was not ready changes nothing visible.
                if ready != was_healthy {
                    s.notify(Notification::ReadyChanged { instance, ready });
                }
            }
            _ => {}
        }
    }

    fn sampled(&mut self, usage: Usage, s: &mut Step) {
        let Phase::Live(live) = self.phase else {
            s.ignore(if matches!(self.phase, Phase::Draining(_)) {
                IgnoreReason::Coalesced
            } else {
                IgnoreReason::NotApplicable
            });
            return;
        };
        if self.now < live.since.saturating_add(self.policy.limits.grace) {
            return;
        }
        let mut worst: Option<(LimitAction, Resource)> = None;
        for rule in &self.policy.limits.rules {
            let track = &mut self.limits[rule.resource.index()];
            // A sample that does not know this resource changes nothing about it.
            let Some(observed) = usage.get(rule.resource) else {
                continue;
            };
            if observed <= rule.max {
                *track = Track::default();
                continue;
            }
            let since = *track.since.get_or_insert(self.now);
            if track.acted || self.now.saturating_since(since) < rule.sustain {
                continue;
            }
            track.acted = true;
            s.notify(Notification::LimitExceeded {
                instance: live.instance,
                resource: rule.resource,
                observed,
                max: rule.max,
                action: rule.action,
            });
            if worst.is_none_or(|(action, _)| rule.action > action) {
                worst = Some((rule.action, rule.resource));
            }
        }
        let Some((action, resource)) = worst else {
            return;
        };
        s.cause = Some(Cause::Limit { resource, action });
        match action {
            LimitAction::Warn => {}
            LimitAction::Restart => self.trigger(Trigger::Limit(resource), s),
            LimitAction::GracefulShutdown => {
                self.drain_live(Then::Rest(Rest::Stopped), self.policy.stop.grace, s)
            }
            LimitAction::Kill => self.kill(s),
        }
    }

    fn tick(&mut self, s: &mut Step) {
        let now = self.now;
        match &mut self.phase {
            Phase::BackingOff { until, launch } if now >= *until => {
                let launch = *launch;
                s.cause = Some(Cause::BackoffElapsed);
                self.spawn(launch, s);
            }
            Phase::Idle(Rest::BreakerOpen { until: Some(at) }) if now >= *at => {
                s.cause = Some(Cause::CooldownElapsed);
                self.spawn(Launch::Trial, s);
            }
            Phase::Draining(d) if now >= d.deadline => {
                s.cause = Some(Cause::GraceElapsed);
                if d.pid.is_some() {
                    s.effect(Effect::KillGroup {
                        instance: d.instance,
                    });
                }
                d.escalated = true;
                d.deadline = now.saturating_add(KILL_RETRY);
            }
            Phase::Live(l) => {
                let l = *l;
                self.settle(l, s);
            }
            _ => {}
        }
    }

    // ----- the decision point ----------------------------------------------------------------

    /// Every restart of a live instance starts here: stop it, then [`Machine::relaunch`] once
    /// it is gone. Triggers that arrive meanwhile find no live instance and are coalesced.
    fn trigger(&mut self, trigger: Trigger, s: &mut Step) {
        self.drain_live(
            Then::Spawn(Launch::Restart(trigger)),
            self.policy.stop.grace,
            s,
        );
    }

    /// Replaces a gone instance: a failure goes through the half-open check and the backoff;
    /// the spawn itself goes through the breaker's window in [`Machine::spawn`].
    fn relaunch(&mut self, launch: Launch, s: &mut Step) {
        let Launch::Restart(trigger) = launch else {
            return self.spawn(launch, s);
        };
        if !trigger.is_failure() {
            return self.spawn(launch, s);
        }
        if self.breaker.half_open {
            self.breaker.trial_failed(&self.policy.breaker);
            return self.open_breaker(s);
        }
        // A full window opens the breaker now instead of after a backoff; the spawn itself is
        // still admitted by the exact check in `spawn`, since the window slides meanwhile.
        if !self.breaker.has_room(&self.policy.breaker, self.now) {
            return self.open_breaker(s);
        }
        let delay = self.backoff.next_delay(&self.policy.backoff);
        if delay.is_zero() {
            self.spawn(launch, s);
        } else {
            self.phase = Phase::BackingOff {
                until: self.now.saturating_add(delay),
                launch,
            };
            s.notify(Notification::BackoffScheduled { delay });
        }
    }

    fn spawn(&mut self, launch: Launch, s: &mut Step) {
        let kind = match launch {
            Launch::Start => SpawnKind::Start,
            Launch::Restart(_) => SpawnKind::Restart,
            Launch::Trial => SpawnKind::Trial,
        };
        if kind == SpawnKind::Restart {
            if !self.breaker.admit(&self.policy.breaker, self.now) {
                return self.open_breaker(s);
            }
            self.restarts += 1;
            if let Launch::Restart(trigger) = launch {
                self.last_restart = Some(trigger);
            }
        }
        if kind == SpawnKind::Trial {
            self.breaker.half_open = true;
        }
        self.last_instance += 1;
        let instance = Instance(self.last_instance);
        self.phase = Phase::Spawning { instance, launch };
        s.effect(Effect::Spawn { instance, kind });
    }

    fn open_breaker(&mut self, s: &mut Step) {
        s.cause = Some(Cause::BreakerTripped);
        let until = self.breaker.open_until(&self.policy.breaker, self.now);
        self.phase = Phase::Idle(Rest::BreakerOpen { until });
    }

    // ----- helpers ---------------------------------------------------------------------------

    /// Leaves a live instance: stop watching it, signal its group, drain it.
    fn drain_live(&mut self, then: Then, grace: Duration, s: &mut Step) {
        let Phase::Live(l) = self.phase else {
            unreachable!("drain_live is only called in the live phase");
        };
        self.leave(l, s);
        self.signal_and_drain(l, then, grace, false, s);
    }

    fn signal_and_drain(
        &mut self,
        l: Live,
        then: Then,
        grace: Duration,
        exited: bool,
        s: &mut Step,
    ) {
        s.effect(Effect::Signal {
            instance: l.instance,
            signal: self.policy.stop.signal,
        });
        self.phase = Phase::Draining(Drain {
            instance: l.instance,
            pid: Some(l.pid),
            exited,
            deadline: self.now.saturating_add(grace),
            escalated: false,
            then,
        });
    }

    fn drained(&mut self, then: Then, s: &mut Step) {
        match then {
            Then::Rest(rest) => self.rest(rest),
            Then::Spawn(launch) => self.relaunch(launch, s),
        }
    }

    /// Comes to rest. Leaving a half-open trial for any rest but the breaker ends the trial.
    fn rest(&mut self, rest: Rest) {
        if !matches!(rest, Rest::BreakerOpen { .. }) {
            self.breaker.half_open = false;
        }
        self.phase = Phase::Idle(rest);
    }

    /// The probes a live instance needs now.
    fn probe_set(&self, live: Live) -> Roles {
        let h = &self.policy.health;
        let mut roles = Roles::NONE;
        if !live.started && h.startup.is_some() {
            roles = roles.with(ProbeRole::Startup);
        }
        if live.started && h.liveness.is_some() {
            roles = roles.with(ProbeRole::Liveness);
        }
        if live.started && h.readiness.is_some() {
            roles = roles.with(ProbeRole::Readiness);
        }
        roles
    }

    /// Every live instance is sampled, with or without limits: status shows the usage of every
    /// process, and the limits, if any, are judged on the same samples.
    fn watch(&self, live: Live, s: &mut Step) {
        s.effect(Effect::Watch {
            instance: live.instance,
            probes: self.probe_set(live),
            sampling: true,
        });
    }

    /// The instance stops being live (exit, stop, kill or restart): its run is judged, and its
    /// probes and sampling end.
    fn leave(&mut self, live: Live, s: &mut Step) {
        self.settle(live, s);
        self.unwatch(live, s);
    }

    fn unwatch(&mut self, live: Live, s: &mut Step) {
        s.effect(Effect::Watch {
            instance: live.instance,
            probes: Roles::NONE,
            sampling: false,
        });
        if self.probes.readiness.healthy() {
            s.notify(Notification::ReadyChanged {
                instance: live.instance,
                ready: false,
            });
        }
        self.probes = Probes::default();
    }

    /// Judges a live instance's run by its times: up for `reset_after` by now, it was stable,
    /// which ends the crash streak and passes a half-open trial. Called at its deadline and
    /// again when the instance stops being live, so the verdict does not depend on whether the
    /// tick or the exit was handled first.
    fn settle(&mut self, live: Live, s: &mut Step) {
        if self.stable_deadline(live).is_some_and(|at| self.now >= at) {
            self.backoff.reset();
            if self.breaker.half_open {
                self.breaker.close(&self.policy.breaker);
                s.notify(Notification::BreakerClosed {
                    instance: live.instance,
                });
            }
        }
    }

    /// A live instance that has a streak to end or a trial to pass is watched for stable uptime.
    fn stable_deadline(&self, live: Live) -> Option<Timestamp> {
        (self.backoff.in_streak() || self.breaker.half_open)
            .then(|| live.since.saturating_add(self.policy.backoff.reset_after))
    }

    /// The newest instance ever spawned, current or not (`None` before the first spawn). It
    /// only grows, so an observer that missed states in between still sees that a spawn
    /// happened since it last looked.
    pub fn newest(&self) -> Option<Instance> {
        (self.last_instance > 0).then_some(Instance(self.last_instance))
    }
}

fn rest_name(rest: Rest) -> StateName {
    match rest {
        Rest::Stopped => StateName::Stopped,
        Rest::Exited(_) => StateName::Exited,
        Rest::Failed(_) => StateName::Failed,
        Rest::Killed => StateName::Killed,
        Rest::BreakerOpen { .. } => StateName::BreakerOpen,
    }
}

/// The cause of a transition when the handler did not name a more precise one.
fn default_cause(input: Input) -> Option<Cause> {
    Some(match input {
        Input::Start => Cause::Start,
        Input::Stop { .. } => Cause::Stop,
        Input::Kill => Cause::Kill,
        Input::Restart { cause } => Cause::Restart(cause),
        Input::ResetBreaker => Cause::ResetBreaker,
        // Forwarding never changes the state.
        Input::Forward { .. } => return None,
        Input::Spawned { .. } => Cause::Spawned,
        Input::SpawnFailed { error, .. } => Cause::SpawnFailed(error),
        Input::Exited { status, .. } => Cause::Exited(status),
        Input::Gone { .. } => Cause::Gone,
        // Probes, samples and ticks can change the state in several ways: the handler names it.
        Input::Probe { .. } | Input::Sampled { .. } | Input::Tick => return None,
    })
}
