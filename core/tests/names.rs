//! The names and texts people and tools see: event and status output, logs and the control
//! protocol carry them, so each one is fixed here, and the machine's clock as it reports it.

use std::time::Duration;

use processcontrol_core::group::{Condition, GroupConfigError, GroupConfigErrors};
use processcontrol_core::{
    Cooldown, ExitStatus, IgnoreReason, Input, Instance, LimitAction, Machine, Notification,
    Policy, ProbeFailure, ProbeResult, ProbeRole, Resource, RestartCause, Signal, SpawnError,
    Timestamp, Usage,
};

#[test]
fn every_input_has_its_snake_case_name() {
    let i = Instance(1);
    let cases = [
        (Input::Start, "start"),
        (Input::Stop { grace: None }, "stop"),
        (Input::Kill, "kill"),
        (
            Input::Restart {
                cause: RestartCause::Manual,
            },
            "restart",
        ),
        (Input::ResetBreaker, "reset_breaker"),
        (
            Input::Forward {
                signal: Signal::Hup,
            },
            "forward",
        ),
        (
            Input::Spawned {
                instance: i,
                pid: 1,
            },
            "spawned",
        ),
        (
            Input::SpawnFailed {
                instance: i,
                error: SpawnError::InvalidSpec,
            },
            "spawn_failed",
        ),
        (
            Input::Exited {
                instance: i,
                status: ExitStatus::Code(0),
            },
            "exited",
        ),
        (Input::Gone { instance: i }, "gone"),
        (
            Input::Probe {
                instance: i,
                role: ProbeRole::Liveness,
                result: ProbeResult::Pass,
            },
            "probe",
        ),
        (
            Input::Sampled {
                instance: i,
                usage: Usage::default(),
            },
            "sampled",
        ),
        (Input::Tick, "tick"),
    ];
    for (input, name) in cases {
        assert_eq!(input.name(), name, "{input:?}");
    }
}

/// An ignored input is reported under its name.
#[test]
fn an_ignored_input_is_named() {
    let mut m = Machine::new(Policy::default()).unwrap();
    let out = m.handle(Timestamp::ZERO, Input::Kill);
    let named = out.notifications.iter().find_map(|n| match *n {
        Notification::Ignored { input, reason } => Some((input, reason)),
        _ => None,
    });
    assert_eq!(named, Some(("kill", IgnoreReason::NotApplicable)));
}

#[test]
fn probe_roles_have_their_names() {
    assert_eq!(ProbeRole::Liveness.name(), "liveness");
    assert_eq!(ProbeRole::Readiness.name(), "readiness");
    assert_eq!(ProbeRole::Startup.name(), "startup");
}

#[test]
fn facts_read_as_text() {
    assert_eq!(Instance(42).to_string(), "#42");
    assert_eq!(ExitStatus::Code(3).to_string(), "exit code 3");
    assert_eq!(ExitStatus::Signal(9).to_string(), "signal 9");
    assert_eq!(
        ExitStatus::OomKilled.to_string(),
        "killed by the OOM killer"
    );
    assert_eq!(SpawnError::Os(2).to_string(), "os error 2");
    assert_eq!(
        SpawnError::InvalidSpec.to_string(),
        "invalid process specification"
    );
}

/// A probe failure's name (the `reason` in events and metrics) and its text (narration,
/// `status`), for every kind.
#[test]
fn probe_failures_have_names_and_texts() {
    for (failure, name, text) in [
        (ProbeFailure::Timeout, "timeout", "timed out"),
        (ProbeFailure::Refused, "refused", "connection refused"),
        (ProbeFailure::HttpStatus(503), "http_status", "HTTP 503"),
        (ProbeFailure::ExitCode(2), "exit_code", "exited with 2"),
        (
            ProbeFailure::ExitSignal(9),
            "exit_signal",
            "killed by signal 9",
        ),
        (ProbeFailure::Dns, "dns", "name not resolved"),
        (ProbeFailure::Watchdog, "watchdog", "watchdog missed"),
        (ProbeFailure::Io, "io", "I/O error"),
    ] {
        assert_eq!(failure.name(), name);
        assert_eq!(failure.to_string(), text);
    }
}

/// A breaker cooldown reads as it is written in a config file, and back.
#[test]
fn cooldowns_read_as_written() {
    for (cooldown, text) in [
        (Cooldown::Never, "never"),
        (Cooldown::After(Duration::from_secs(300)), "300s"),
        (Cooldown::After(Duration::from_millis(1500)), "1500ms"),
    ] {
        assert_eq!(cooldown.to_string(), text);
        assert_eq!(text.parse::<Cooldown>(), Ok(cooldown));
    }
}

/// Resources, limit actions and dependency conditions are named as users write them.
#[test]
fn resources_actions_and_conditions_have_their_names() {
    let names: Vec<_> = Resource::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["memory", "cpu", "fds", "processes", "threads"]);
    for (action, name) in [
        (LimitAction::Warn, "warn"),
        (LimitAction::Restart, "restart"),
        (LimitAction::GracefulShutdown, "graceful-shutdown"),
        (LimitAction::Kill, "kill"),
    ] {
        assert_eq!(action.name(), name);
    }
    let conditions: Vec<_> = Condition::ALL.iter().map(|c| c.to_string()).collect();
    assert_eq!(conditions, ["started", "healthy", "completed"]);
}

/// A signal is read as `SIGTERM`, `TERM` or `term`, each the signal of that name.
#[test]
fn signals_read_by_name() {
    for signal in Signal::ALL {
        let name = signal.name();
        assert_eq!(name.parse::<Signal>(), Ok(signal));
        assert_eq!(name[3..].to_ascii_lowercase().parse::<Signal>(), Ok(signal));
    }
    assert!("SIGNOPE".parse::<Signal>().is_err());
}

/// A group's problems read as one line, each separated by `; `.
#[test]
fn group_config_errors_read_as_one_line() {
    let errors = GroupConfigErrors(vec![
        GroupConfigError::Cycle(vec!["a".into(), "b".into()]),
        GroupConfigError::Cycle(vec!["c".into(), "d".into()]),
    ]);
    assert_eq!(
        errors.to_string(),
        "dependency cycle among a, b; dependency cycle among c, d"
    );
    assert_eq!(
        GroupConfigErrors(vec![GroupConfigError::Cycle(vec!["x".into()])]).to_string(),
        "dependency cycle among x"
    );
}

/// Durations in a serialized policy read as config files write them, and back.
#[test]
fn durations_deserialize_as_written() {
    use serde::de::IntoDeserializer;
    let read = |text: &str| {
        processcontrol_core::units::serde_duration::deserialize(text.into_deserializer()
            as serde::de::value::StrDeserializer<'_, serde::de::value::Error>)
    };
    assert_eq!(read("1m 30s"), Ok(Duration::from_secs(90)));
    assert!(read("soon").is_err());
}

/// Timestamps keep their nanoseconds.
#[test]
fn timestamps_keep_their_nanoseconds() {
    assert_eq!(Timestamp::from_nanos(123_456_789).as_nanos(), 123_456_789);
}

/// The machine's clock is the latest `now` it was given; an earlier one does not move it back.
#[test]
fn the_clock_is_the_latest_now() {
    let mut m = Machine::new(Policy::default()).unwrap();
    assert_eq!(m.now(), Timestamp::ZERO);
    let later = Timestamp::ZERO.saturating_add(Duration::from_secs(5));
    m.handle(later, Input::Tick);
    assert_eq!(m.now(), later);
    m.handle(Timestamp::from_millis(1), Input::Tick);
    assert_eq!(m.now(), later);
}
