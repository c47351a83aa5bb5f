//! docs/state-machine.md is the source of truth for transitions, so this test makes sure it is
//! true: it drives a machine into every state, feeds it every input, renders the resulting
//! table and compares it with the one in the document. `UPDATE_DOCS=1 cargo test -p
//! processcontrol-core --test transition_table` rewrites the table from the code.

use std::time::Duration;

use processcontrol_core::{
    Cooldown, Effect, ExitStatus, Input, Instance, Machine, Notification, Policy, ProbeFailure,
    ProbeResult, ProbeRole, RestartCause, SpawnError, Thresholds, Timestamp,
};

const BEGIN: &str = "<!-- transition-table:begin -->";
const END: &str = "<!-- transition-table:end -->";

/// The policy the table is drawn with (stated in the document too).
fn policy() -> Policy {
    let mut p = Policy::default();
    p.backoff.jitter = 0.0;
    p.breaker.max_restarts = 1;
    p.breaker.cooldown = Cooldown::After(Duration::from_secs(60));
    p.exit_codes.prevent_restart = vec![2];
    p.health.liveness = Some(Thresholds {
        failure_threshold: 1,
        success_threshold: 1,
    });
    p
}

struct Driver {
    m: Machine,
    now: Timestamp,
}

impl Driver {
    fn feed(&mut self, input: Input) -> processcontrol_core::Outcome {
        self.m.handle(self.now, input)
    }
    fn current(&self) -> Instance {
        self.m.instance().unwrap_or(Instance(0))
    }
    fn tick(&mut self) -> processcontrol_core::Outcome {
        if let Some(d) = self.m.poll_timeout() {
            self.now = d.at;
        }
        self.feed(Input::Tick)
    }
    fn spawned(&mut self) {
        let instance = self.current();
        self.feed(Input::Spawned { instance, pid: 42 });
    }
    fn exit(&mut self, code: i32) {
        let instance = self.current();
        self.feed(Input::Exited {
            instance,
            status: ExitStatus::Code(code),
        });
        self.feed(Input::Gone { instance });
    }
}

/// The labelled starting points, each reached by a path from a new machine.
fn states() -> Vec<(&'static str, Driver)> {
    let labels = [
        "stopped",
        "starting (spawning)",
        "running",
        "restarting (stopping old)",
        "restarting (backing off)",
        "restarting (spawning)",
        "breaker_open",
        "shutting_down",
        "killed (draining)",
        "killed",
        "exited",
        "failed",
    ];
    labels
        .into_iter()
        .map(|label| {
            let mut d = Driver {
                m: Machine::new(policy()).unwrap(),
                now: Timestamp::ZERO,
            };
            let run = |d: &mut Driver| {
                d.feed(Input::Start);
                d.spawned();
            };
            match label {
                "stopped" => {}
                "starting (spawning)" => {
                    d.feed(Input::Start);
                }
                "running" => run(&mut d),
                "restarting (stopping old)" => {
                    run(&mut d);
                    d.feed(Input::Restart {
                        cause: RestartCause::Manual,
                    });
                }
                "restarting (backing off)" => {
                    run(&mut d);
                    d.exit(1);
                }
                "restarting (spawning)" => {
                    run(&mut d);
                    d.exit(1);
                    d.tick();
                }
                "breaker_open" => {
                    run(&mut d);
                    d.exit(1);
                    d.tick();
                    d.spawned();
                    d.exit(1);
                }
                "shutting_down" => {
                    run(&mut d);
                    d.feed(Input::Stop { grace: None });
                }
                "killed (draining)" => {
                    run(&mut d);
                    d.feed(Input::Kill);
                }
                "killed" => {
                    run(&mut d);
                    d.feed(Input::Kill);
                    d.exit(9);
                }
                "exited" => {
                    run(&mut d);
                    d.exit(0);
                }
                "failed" => {
                    run(&mut d);
                    d.exit(2);
                }
                _ => unreachable!(),
            }
            (label, d)
        })
        .collect()
}

fn inputs() -> Vec<&'static str> {
    vec![
        "start",
        "stop",
        "kill",
        "restart",
        "reset_breaker",
        "spawned",
        "spawn_failed",
        "exited 1",
        "exited 0",
        "gone",
        "liveness fail",
        "tick at deadline",
        "forward SIGHUP",
    ]
}

fn apply(d: &mut Driver, label: &str) -> processcontrol_core::Outcome {
    let instance = d.current();
    match label {
        "start" => d.feed(Input::Start),
        "stop" => d.feed(Input::Stop { grace: None }),
        "kill" => d.feed(Input::Kill),
        "restart" => d.feed(Input::Restart {
            cause: RestartCause::Manual,
        }),
        "reset_breaker" => d.feed(Input::ResetBreaker),
        "spawned" => d.feed(Input::Spawned { instance, pid: 43 }),
        "spawn_failed" => d.feed(Input::SpawnFailed {
            instance,
            error: SpawnError::Os(2),
        }),
        "exited 1" => d.feed(Input::Exited {
            instance,
            status: ExitStatus::Code(1),
        }),
        "exited 0" => d.feed(Input::Exited {
            instance,
            status: ExitStatus::Code(0),
        }),
        "gone" => d.feed(Input::Gone { instance }),
        "liveness fail" => d.feed(Input::Probe {
            instance,
            role: ProbeRole::Liveness,
            result: ProbeResult::Fail(ProbeFailure::Timeout),
        }),
        "tick at deadline" => d.tick(),
        "forward SIGHUP" => d.feed(Input::Forward {
            signal: processcontrol_core::Signal::Hup,
        }),
        _ => unreachable!(),
    }
}

fn render() -> String {
    let mut out = String::from(
        "| state | input | next state | effects | cause / note |\n|---|---|---|---|---|\n",
    );
    for (label, _) in states() {
        for input in inputs() {
            // Fresh copy of the starting point for every input.
            let (_, mut d) = states().into_iter().find(|(l, _)| *l == label).unwrap();
            let before = d.m.state();
            let outcome = apply(&mut d, input);
            let effects: Vec<String> = outcome
                .effects
                .iter()
                .map(|e| match e {
                    Effect::Spawn { kind, .. } => format!("Spawn({kind:?})"),
                    Effect::Signal { signal, .. } => format!("Signal({signal})"),
                    Effect::KillGroup { .. } => "KillGroup".to_string(),
                    Effect::Watch {
                        sampling: false, ..
                    } => "Unwatch".to_string(),
                    Effect::Watch { .. } => "Watch".to_string(),
                })
                .collect();
            let note = outcome
                .notifications
                .iter()
                .find_map(|n| match n {
                    Notification::Transition { cause, .. } => Some(cause.name().to_string()),
                    Notification::Ignored { reason, .. } => Some(format!("ignored: {reason:?}")),
                    _ => None,
                })
                .unwrap_or_default();
            let after = d.m.state();
            let next = if after == before {
                "=".to_string()
            } else {
                after.to_string()
            };
            let effects = if effects.is_empty() {
                "-".to_string()
            } else {
                effects.join(", ")
            };
            out.push_str(&format!(
                "| {label} | {input} | {next} | {effects} | {note} |\n"
            ));
        }
    }
    out
}

#[test]
fn transition_table_matches_docs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/state-machine.md");
    let doc = std::fs::read_to_string(path).expect("docs/state-machine.md exists");
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/state-machine.md lacks the {BEGIN} / {END} markers");
    };
    let table = render();
    let current = doc[a + BEGIN.len()..b].trim();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{BEGIN}\n{table}{}", &doc[..a], &doc[b..]);
        std::fs::write(path, updated).expect("docs/state-machine.md is writable");
        return;
    }
    assert_eq!(
        current,
        table.trim(),
        "docs/state-machine.md disagrees with the machine; rerun with UPDATE_DOCS=1 and review the diff"
    );
}
