//! A simulation harness: the machine, a scripted fake operating system, and a small reference
//! model, driven by a sequence of operations on virtual time. After every step it checks the
//! invariants the property tests and the fuzzer rely on, and a failure reads like a story: every
//! step is logged as (time, input, effects, notifications).
//!
//! Operations and policies decode from plain bytes, so proptest and cargo-fuzz share one
//! decoder. Enabled by the `sim` feature; it is pure code like the rest of the crate.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::{
    BackoffPolicy, BreakerPolicy, Cooldown, Effect, ExitCodes, ExitStatus, HealthPolicy,
    IgnoreReason, Input, Instance, LimitAction, LimitRule, LimitsPolicy, Machine, Notification,
    Policy, ProbeFailure, ProbeResult, ProbeRole, Resource, RestartCause, RestartPolicy, Signal,
    SpawnError, SpawnKind, StateName, StopPolicy, Thresholds, Timestamp, Usage,
};

/// One thing that happens in a simulation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Operator: start.
    Start,
    /// Operator: stop, with an optional grace in milliseconds.
    Stop(Option<u32>),
    /// Operator: kill.
    Kill,
    /// Operator: manual restart.
    Restart,
    /// Operator: reset the breaker.
    ResetBreaker,
    /// Operator: forward a signal to the current instance.
    Forward,
    /// Virtual time passes, then the machine is ticked.
    Advance(u32),
    /// A tick with no time passing (early or spurious).
    SpuriousTick,
    /// The OS starts the pending spawn.
    SpawnOk,
    /// The OS fails the pending spawn.
    SpawnFail,
    /// The current instance's main process exits.
    Exit(ExitStatus),
    /// The last process of an exited instance goes away.
    Gone,
    /// A probe result for the current instance.
    Probe(ProbeRole, ProbeResult),
    /// A resource sample for the current instance.
    Sample(Usage),
    /// A fact about an instance that is not the current one.
    Stale(u8, u8),
    /// A fact delivered earlier is delivered again, late (duplicates and reordering).
    Late(u8),
}

/// A broken invariant, with the story that led to it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Which invariant (numbered as in docs/state-machine.md).
    pub invariant: u8,
    /// What was wrong.
    pub message: String,
    /// Every step so far.
    pub story: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invariant {} broken: {}", self.invariant, self.message)?;
        for line in &self.story {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// A process in the fake OS.
#[derive(Clone, Copy, Debug)]
struct Proc {
    instance: Instance,
    exited: bool,
}

/// The machine, the fake OS and the reference model.
#[derive(Clone, Debug)]
pub struct Sim {
    machine: Machine,
    now: Timestamp,
    /// A spawn asked for and not answered.
    pending: Option<Instance>,
    /// Instances with at least one live process.
    alive: Vec<Proc>,
    next_pid: u32,
    /// Model: times of counted restart spawns since the last explicit start or reset.
    restarts: VecDeque<Timestamp>,
    /// Model: backoff delays handed out in the current crash streak.
    streak: i32,
    /// Facts delivered so far (the last few), for late re-delivery.
    delivered: VecDeque<Input>,
    story: Vec<String>,
    record: bool,
}

impl Sim {
    /// A simulation of a stopped machine. `record` keeps the story of every step (slower).
    pub fn new(policy: Policy, record: bool) -> Result<Sim, crate::PolicyErrors> {
        Ok(Sim {
            machine: Machine::new(policy)?,
            now: Timestamp::ZERO,
            pending: None,
            alive: Vec::new(),
            next_pid: 1000,
            restarts: VecDeque::new(),
            streak: 0,
            delivered: VecDeque::new(),
            story: Vec::new(),
            record,
        })
    }

    /// The machine under test.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The story so far.
    pub fn story(&self) -> &[String] {
        &self.story
    }

    /// Applies one operation; an operation that cannot happen now (an exit with no child)
    /// is skipped.
    pub fn apply(&mut self, op: Op) -> Result<(), Violation> {
        let current = self.machine.instance();
        let input = match op {
            Op::Start => Input::Start,
            Op::Stop(grace) => Input::Stop {
                grace: grace.map(|ms| Duration::from_millis(ms.into())),
            },
            Op::Kill => Input::Kill,
            Op::Restart => Input::Restart {
                cause: RestartCause::Manual,
            },
            Op::ResetBreaker => Input::ResetBreaker,
            Op::Forward => Input::Forward {
                signal: Signal::Hup,
            },
            Op::Advance(ms) => {
                self.now = self.now.saturating_add(Duration::from_millis(ms.into()));
                Input::Tick
            }
            Op::SpuriousTick => Input::Tick,
            Op::SpawnOk => {
                let Some(instance) = self.pending.take() else {
                    return Ok(());
                };
                self.next_pid += 1;
                self.alive.push(Proc {
                    instance,
                    exited: false,
                });
                Input::Spawned {
                    instance,
                    pid: self.next_pid,
                }
            }
            Op::SpawnFail => {
                let Some(instance) = self.pending.take() else {
                    return Ok(());
                };
                Input::SpawnFailed {
                    instance,
                    error: SpawnError::Os(2),
                }
            }
            Op::Exit(status) => {
                let Some(p) = self.alive.iter_mut().find(|p| !p.exited) else {
                    return Ok(());
                };
                p.exited = true;
                Input::Exited {
                    instance: p.instance,
                    status,
                }
            }
            Op::Gone => {
                let Some(i) = self.alive.iter().position(|p| p.exited) else {
                    return Ok(());
                };
                let p = self.alive.remove(i);
                Input::Gone {
                    instance: p.instance,
                }
            }
            Op::Probe(role, result) => {
                let Some(p) = self.alive.iter().find(|p| !p.exited) else {
                    return Ok(());
                };
                Input::Probe {
                    instance: p.instance,
                    role,
                    result,
                }
            }
            Op::Sample(usage) => {
                let Some(p) = self.alive.first() else {
                    return Ok(());
                };
                Input::Sampled {
                    instance: p.instance,
                    usage,
                }
            }
            Op::Stale(pick, kind) => {
                let newest = self.machine.instance().map_or(0, |i| i.0) + 1;
                let mut n = u64::from(pick) % (newest + 1);
                if current == Some(Instance(n)) {
                    n = newest + 1;
                }
                return self.stale(stale_input(Instance(n), kind));
            }
            Op::Late(pick) => {
                if self.delivered.is_empty() {
                    return Ok(());
                }
                let input = self.delivered[usize::from(pick) % self.delivered.len()];
                // A late fact about the current instance is only possible where the fake OS
                // agrees with it (no adapter lies about a live process being gone).
                if input.instance() == current
                    && !matches!(input, Input::Probe { .. } | Input::Sampled { .. })
                {
                    return self.feed(input);
                }
                if input.instance() != current {
                    return self.stale(input);
                }
                input
            }
        };
        if input.instance().is_some() {
            self.delivered.push_back(input);
            if self.delivered.len() > 32 {
                self.delivered.pop_front();
            }
        }
        self.feed(input)
    }

    /// Invariant 6: a fact about another instance changes nothing at all.
    fn stale(&mut self, input: Input) -> Result<(), Violation> {
        let before = self.machine.clone();
        let out = self.machine.handle(self.machine.now(), input);
        self.log(input, &out);
        let only_ignored = out.effects.is_empty()
            && out.notifications.len() == 1
            && out.ignored() == Some(IgnoreReason::Stale);
        if self.machine != before || !only_ignored {
            return self.fail(6, format!("stale {input:?} changed something: {out:?}"));
        }
        Ok(())
    }

    /// Feeds one input at the current virtual time and checks invariants 1-5 and 8.
    fn feed(&mut self, input: Input) -> Result<(), Violation> {
        let pre = self.machine.state();
        let pre_has_child = self.machine.instance().is_some();
        let pre_up_since = self.machine.up_since();
        let out = self.machine.handle(self.now, input);
        self.log(input, &out);
        let policy = self.machine.policy().clone();

        // Model: an explicit start or reset forgets the restart history.
        let idle = matches!(
            pre,
            StateName::Stopped
                | StateName::Exited
                | StateName::Failed
                | StateName::Killed
                | StateName::BreakerOpen
        );
        let explicit = match input {
            Input::ResetBreaker => true,
            Input::Start => idle || pre == StateName::ShuttingDown,
            Input::Restart { .. } => !pre_has_child && idle,
            _ => false,
        };
        if explicit {
            self.restarts.clear();
            self.streak = 0;
        }

        // Invariant 2: a restart trigger while a restart, shutdown or kill is in progress is
        // coalesced: no effect at all.
        let trigger = matches!(
            input,
            Input::Restart { .. }
                | Input::Probe {
                    result: ProbeResult::Fail(ProbeFailure::Timeout),
                    ..
                }
                | Input::Sampled { .. }
        );
        let in_progress = matches!(pre, StateName::Restarting | StateName::ShuttingDown)
            || (pre == StateName::Killed && pre_has_child);
        if trigger && in_progress && !out.effects.is_empty() {
            return self.fail(2, format!("{input:?} in {pre} was not coalesced: {out:?}"));
        }

        for effect in &out.effects {
            match *effect {
                Effect::Spawn { instance, kind } => {
                    // Invariant 1: no overlap.
                    if self.pending.is_some() || !self.alive.is_empty() {
                        return self.fail(
                            1,
                            format!(
                                "spawn of {instance} while {:?} / {:?} alive",
                                self.pending, self.alive
                            ),
                        );
                    }
                    // Invariant 4: after a kill or a shutdown, only an explicit command spawns.
                    let halted = matches!(
                        pre,
                        StateName::Stopped
                            | StateName::Killed
                            | StateName::ShuttingDown
                            | StateName::Exited
                            | StateName::Failed
                    );
                    let command = matches!(
                        input,
                        Input::Start | Input::Restart { .. } | Input::ResetBreaker
                    );
                    if halted && !command {
                        return self.fail(4, format!("spawn from {pre} on {input:?}"));
                    }
                    self.pending = Some(instance);
                    // Invariant 3: the breaker's window.
                    if kind == SpawnKind::Restart {
                        self.restarts.push_back(self.now);
                        let window = policy.breaker.window;
                        let now = self.now;
                        let in_window = self
                            .restarts
                            .iter()
                            .filter(|t| t.saturating_add(window) > now)
                            .count();
                        if in_window > policy.breaker.max_restarts as usize {
                            return self.fail(
                                3,
                                format!(
                                    "{in_window} restarts within {window:?} (max {})",
                                    policy.breaker.max_restarts
                                ),
                            );
                        }
                    }
                }
                Effect::Signal { instance, .. } | Effect::KillGroup { instance } => {
                    let known = self.pending == Some(instance)
                        || self.alive.iter().any(|p| p.instance == instance);
                    if !known {
                        return self.fail(1, format!("signal to {instance}, which is not alive"));
                    }
                }
                _ => {}
            }
        }

        // A stable run ends the streak in the model too, judged by the times alone: an
        // instance that was up for `reset_after` by now, whether it still is or just left.
        if let Some(since) = self.machine.up_since().or(pre_up_since) {
            if self.now.saturating_since(since) >= policy.backoff.reset_after {
                self.streak = 0;
            }
        }
        // Invariant 8: the n-th delay of a streak is drawn from
        // [base_n * (1 - jitter), base_n], base_n = min(initial * factor^n, max).
        for n in &out.notifications {
            if let Notification::BackoffScheduled { delay } = *n {
                let b = &policy.backoff;
                if delay > b.max {
                    return self.fail(8, format!("delay {delay:?} above max {:?}", b.max));
                }
                let base = if b.initial.is_zero() {
                    0.0
                } else {
                    (b.initial.as_secs_f64() * b.factor.powi(self.streak)).min(b.max.as_secs_f64())
                };
                // The machine multiplies step by step, rounding to nanoseconds each time (a
                // relative error of at most 1e-6 per step for bases of 1 ms and more).
                let steps = f64::from(self.streak) + 2.0;
                let slack = 1e-9 * steps + base * 1e-6 * steps;
                let got = delay.as_secs_f64();
                if got > base + slack || got < base * (1.0 - b.jitter) - slack {
                    return self.fail(
                        8,
                        format!(
                            "delay {delay:?} outside [{:.9}s, {base:.9}s] (restart {} of the streak)",
                            base * (1.0 - b.jitter),
                            self.streak + 1
                        ),
                    );
                }
                self.streak = self.streak.saturating_add(1);
            }
        }

        // Invariant 5: a child being stopped always has a kill deadline armed.
        let state = self.machine.state();
        let draining = matches!(state, StateName::ShuttingDown | StateName::Killed)
            || (state == StateName::Restarting && self.machine.pid().is_some());
        if draining && self.machine.instance().is_some() {
            // The longest a deadline may be away: a grace (the policy's, or up to 3 s given with
            // a stop) or a kill retry.
            let bound = policy
                .stop
                .grace
                .max(Duration::from_secs(3))
                .max(crate::KILL_RETRY);
            match self.machine.poll_timeout() {
                None => return self.fail(5, format!("{state} with a child and no deadline")),
                Some(d) if d.at.saturating_since(self.now) > bound => {
                    return self.fail(5, format!("{state}: kill deadline {d:?} too far"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Invariant 5, as liveness: after a stop, an OS that ignores the stop signal but obeys
    /// SIGKILL sees the process stopped within grace plus one kill retry.
    pub fn stop_completes(&mut self) -> Result<(), Violation> {
        let grace = self.machine.policy().stop.grace;
        let start = self.now;
        self.feed(Input::Stop { grace: None })?;
        for _ in 0..64 {
            let state = self.machine.state();
            let at_rest = matches!(
                state,
                StateName::Stopped | StateName::Killed | StateName::Exited | StateName::Failed
            );
            if at_rest && self.machine.instance().is_none() {
                let took = self.now.saturating_since(start);
                if took > grace + crate::KILL_RETRY {
                    return self.fail(5, format!("stop took {took:?}"));
                }
                return Ok(());
            }
            let escalated = self
                .machine
                .poll_timeout()
                .is_some_and(|d| d.kind == crate::DeadlineKind::KillRetry);
            if self.pending.is_some() {
                self.apply(Op::SpawnOk)?;
            } else if self.alive.iter().any(|p| p.exited) {
                self.apply(Op::Gone)?;
            } else if escalated && !self.alive.is_empty() {
                // This OS ignores the stop signal but not SIGKILL.
                self.apply(Op::Exit(ExitStatus::Signal(9)))?;
            } else if let Some(deadline) = self.machine.poll_timeout() {
                self.now = self.now.max(deadline.at);
                self.feed(Input::Tick)?;
            } else {
                return self.fail(5, format!("stop stuck in {state}"));
            }
        }
        self.fail(
            5,
            format!("stop did not complete: {}", self.machine.state()),
        )
    }

    fn log(&mut self, input: Input, out: &crate::Outcome) {
        if self.record {
            let effects: Vec<_> = out.effects.iter().collect();
            let notes: Vec<_> = out.notifications.iter().collect();
            self.story.push(format!(
                "{:>9.3}ms {:<13} {input:?} -> {effects:?} {notes:?}",
                self.now.as_nanos() as f64 / 1e6,
                self.machine.state().as_str(),
            ));
        }
    }

    fn fail(&self, invariant: u8, message: String) -> Result<(), Violation> {
        Err(Violation {
            invariant,
            message,
            story: self.story.clone(),
        })
    }
}

fn stale_input(instance: Instance, kind: u8) -> Input {
    match kind % 6 {
        0 => Input::Spawned { instance, pid: 7 },
        1 => Input::SpawnFailed {
            instance,
            error: SpawnError::Os(13),
        },
        2 => Input::Exited {
            instance,
            status: ExitStatus::Code(1),
        },
        3 => Input::Gone { instance },
        4 => Input::Probe {
            instance,
            role: ProbeRole::Liveness,
            result: ProbeResult::Fail(ProbeFailure::Timeout),
        },
        _ => Input::Sampled {
            instance,
            usage: Usage {
                memory: u64::MAX,
                ..Usage::default()
            },
        },
    }
}

/// Reads bytes one at a time; past the end it reads zeros, so any input decodes.
pub struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    /// Wraps the bytes.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes(data)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn ms(&mut self, max: u16) -> Duration {
        Duration::from_millis(u64::from(self.u16() % (max + 1)))
    }

    fn thresholds(&mut self) -> Option<Thresholds> {
        let b = self.u8();
        (b % 2 == 1).then(|| Thresholds {
            failure_threshold: u32::from(b / 2 % 4) + 1,
            success_threshold: u32::from(b / 8 % 3) + 1,
        })
    }
}

/// Decodes a valid policy from bytes (small durations, so that short runs reach every state).
pub fn policy(b: &mut Bytes<'_>) -> Policy {
    let restart = match b.u8() % 3 {
        0 => RestartPolicy::Always,
        1 => RestartPolicy::OnFailure,
        _ => RestartPolicy::Never,
    };
    let initial = b.ms(300);
    let max = initial + b.ms(3000);
    let backoff = BackoffPolicy {
        initial,
        // The last byte value stands for a huge factor, valid and once a panic (1e300 * 1 ms
        // does not fit a `Duration`).
        factor: match b.u8() {
            255 => 1e300,
            f => 1.0 + f64::from(f) / 64.0,
        },
        max,
        jitter: f64::from(b.u8()) / 255.0,
        reset_after: b.ms(5000),
    };
    let cooldown = b.ms(5000);
    let breaker = BreakerPolicy {
        max_restarts: u32::from(b.u8() % 6),
        window: b.ms(10_000) + Duration::from_millis(1),
        cooldown: if b.u8() % 4 == 0 {
            Cooldown::Never
        } else {
            Cooldown::After(cooldown)
        },
        max_cooldown: cooldown + b.ms(20_000),
    };
    let stop = StopPolicy {
        signal: Signal::Term,
        grace: b.ms(3000),
    };
    let health = HealthPolicy {
        liveness: b.thresholds(),
        readiness: b.thresholds(),
        startup: b.thresholds(),
    };
    let mut rules = Vec::new();
    for resource in Resource::ALL {
        let flags = b.u8();
        if flags % 3 == 0 {
            rules.push(LimitRule {
                resource,
                max: u64::from(b.u8()) + 1,
                sustain: b.ms(2000),
                action: match flags / 3 % 4 {
                    0 => LimitAction::Warn,
                    1 => LimitAction::Restart,
                    2 => LimitAction::GracefulShutdown,
                    _ => LimitAction::Kill,
                },
            });
        }
    }
    let codes = b.u8();
    let exit_codes = ExitCodes {
        success: if codes & 1 == 1 { vec![0, 1] } else { vec![0] },
        prevent_restart: if codes & 2 == 2 { vec![2] } else { vec![] },
        force_restart: if codes & 4 == 4 { vec![3] } else { vec![] },
    };
    Policy {
        restart,
        exit_codes,
        backoff,
        breaker,
        stop,
        health,
        limits: LimitsPolicy {
            grace: b.ms(1000),
            rules,
        },
        seed: u64::from(b.u16()),
    }
}

/// Decodes one operation; adapter facts are the most frequent, as in real life.
pub fn op(b: &mut Bytes<'_>) -> Op {
    match b.u8() % 32 {
        0..=1 => Op::Start,
        // Stops and kills end most of the story, so they are rarer than the rest.
        2 => match b.u8() % 6 {
            0 => Op::Stop(None),
            1 => Op::Stop(Some(u32::from(b.u16() % 3000))),
            _ => Op::Advance(u32::from(b.u16() % 500)),
        },
        3 => match b.u8() % 3 {
            0 => Op::Kill,
            _ => Op::SpawnOk,
        },
        4 => Op::Restart,
        5 => Op::ResetBreaker,
        6..=10 => Op::Advance(u32::from(b.u16() % 4000)),
        11 => Op::SpuriousTick,
        12..=14 => Op::SpawnOk,
        15 => Op::SpawnFail,
        16..=18 => Op::Exit(match b.u8() % 6 {
            0 => ExitStatus::Code(0),
            1 => ExitStatus::Code(1),
            2 => ExitStatus::Code(2),
            3 => ExitStatus::Code(3),
            4 => ExitStatus::OomKilled,
            _ => ExitStatus::Signal(9),
        }),
        19..=21 => Op::Gone,
        22..=25 => {
            let x = b.u8();
            let role = match x % 3 {
                0 => ProbeRole::Liveness,
                1 => ProbeRole::Readiness,
                _ => ProbeRole::Startup,
            };
            Op::Probe(
                role,
                if x / 3 % 2 == 0 {
                    ProbeResult::Pass
                } else {
                    ProbeResult::Fail(ProbeFailure::Timeout)
                },
            )
        }
        26..=27 => {
            let hot = b.u8();
            let v = |bit: u8| if hot & bit != 0 { 1000 } else { 0 };
            Op::Sample(Usage {
                memory: v(1),
                cpu: (hot & 32 == 0).then_some(v(2)),
                fds: v(4),
                processes: v(8),
                threads: v(16),
            })
        }
        28 => Op::Stale(b.u8(), b.u8()),
        29 => Op::Forward,
        _ => Op::Late(b.u8()),
    }
}

/// Decodes a policy and runs the operations the rest of the bytes encode, checking every
/// invariant after every step, then checks that a final stop completes.
pub fn run(data: &[u8], record: bool) -> Result<Sim, Violation> {
    let mut b = Bytes::new(data);
    let policy = policy(&mut b);
    let mut sim = Sim::new(policy, record).map_err(|e| Violation {
        invariant: 0,
        message: format!("the decoder made an invalid policy: {e}"),
        story: Vec::new(),
    })?;
    while !b.is_empty() {
        let op = op(&mut b);
        sim.apply(op)?;
    }
    sim.stop_completes()?;
    Ok(sim)
}
