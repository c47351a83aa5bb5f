use super::*;
use processcontrol_core::ExitStatus;

fn event(what: What, pid: Option<u32>) -> Arc<Event> {
    Arc::new(Event {
        time: "2026-12-03T12:21:05.000Z".into(),
        process: "web".into(),
        instance: Some(1),
        pid,
        what,
    })
}

fn gave_up(next_trial: Option<&str>) -> What {
    What::Transition {
        from: StateName::Restarting,
        to: StateName::BreakerOpen,
        cause: "breaker_tripped",
        exit: None,
        expected: None,
        error: None,
        resource: None,
        reason: Some("5 restarts in 60 s".into()),
        next_trial: next_trial.map(str::to_string),
    }
}

fn exit(code: i32, expected: bool, to: StateName) -> What {
    What::Transition {
        from: StateName::Running,
        to,
        cause: "exited",
        exit: Some(ExitStatus::Code(code)),
        expected: Some(expected),
        error: None,
        resource: None,
        reason: Some(format!("exited with {code}")),
        next_trial: None,
    }
}

fn texts(lines: Vec<Said>) -> Vec<String> {
    lines.into_iter().map(|s| s.text).collect()
}

#[test]
fn an_exit_and_its_restart_are_one_line() {
    let mut n = Narrator::new();
    let t0 = Instant::now();
    assert!(n
        .event(&event(exit(1, false, StateName::Restarting), Some(7)), t0)
        .is_empty());
    assert_eq!(n.next_due(), Some(t0 + HOLD));
    let lines = n.event(
        &event(
            What::BackoffScheduled {
                delay_ms: 200,
                restart: 2,
            },
            None,
        ),
        t0,
    );
    assert_eq!(
        texts(lines),
        ["exited with 1 (unexpected), restart 2 in 200 ms"]
    );
    assert_eq!(n.next_due(), None);
}

#[test]
fn a_held_exit_is_told_alone_when_nothing_follows_in_time() {
    let mut n = Narrator::new();
    let t0 = Instant::now();
    n.event(&event(exit(0, true, StateName::ShuttingDown), Some(7)), t0);
    assert!(n.due(t0 + HOLD / 2).is_empty());
    assert_eq!(texts(n.due(t0 + HOLD)), ["exited with 0 (expected)"]);
}

#[test]
fn an_unrelated_event_releases_the_held_exit_first() {
    let mut n = Narrator::new();
    let t0 = Instant::now();
    n.event(&event(exit(3, false, StateName::Restarting), Some(7)), t0);
    let lines = texts(n.event(&event(gave_up(Some("2026-12-03T12:26:05.000Z")), None), t0));
    assert_eq!(lines[0], "exited with 3 (unexpected)");
    assert!(
        lines[1].starts_with("gave up: 5 restarts in 60 s, breaker open, next trial at "),
        "{lines:?}"
    );
}

#[test]
fn a_breaker_without_cooldown_says_there_is_no_trial() {
    let mut n = Narrator::new();
    assert_eq!(
        texts(n.event(&event(gave_up(None), None), Instant::now())),
        ["gave up: 5 restarts in 60 s, breaker open, no further trial"]
    );
}

#[test]
fn probes_limits_and_readiness_have_their_lines() {
    let mut n = Narrator::new();
    let now = Instant::now();
    let probe = |k| What::ProbeFailed {
        probe: "liveness",
        failure: "http_status",
        consecutive: k,
        threshold: 3,
        reason: "GET /healthz -> 503 Service Unavailable".into(),
    };
    assert_eq!(
        texts(n.event(&event(probe(1), Some(7)), now)),
        ["liveness failed 1/3: GET /healthz -> 503 Service Unavailable"]
    );
    assert_eq!(
        texts(n.event(&event(probe(3), Some(7)), now)),
        ["liveness failed 3/3: GET /healthz -> 503 Service Unavailable: restarting"]
    );
    let limit = What::LimitExceeded {
        resource: "memory",
        observed: 76_665_241,
        max: 64 << 20,
        for_ms: 10_000,
        action: "restart",
        reason: "memory 73.1 MiB > 64 MiB for 10 s".into(),
    };
    assert_eq!(
        texts(n.event(&event(limit, Some(7)), now)),
        ["memory 73.1 MiB > 64 MiB for 10 s: restarting"]
    );
    let ready = What::Ready {
        ready: true,
        reason: None,
    };
    assert_eq!(texts(n.event(&event(ready, Some(7)), now)), ["ready"]);
    let quiet = What::Ready {
        ready: false,
        reason: None,
    };
    assert!(n.event(&event(quiet, Some(7)), now).is_empty());
}

#[test]
fn plain_lines_have_no_escape_codes_and_coloured_ones_do() {
    let at = SystemTime::now();
    let plain = line(false, at, Some("web"), "ready", Tone::Good);
    assert!(!plain.contains('\x1b'));
    assert!(plain.ends_with(" web: ready"), "{plain}");
    let coloured = line(true, at, Some("web"), "ready", Tone::Good);
    assert!(coloured.contains("\x1b[32mready\x1b[0m"), "{coloured:?}");
    assert!(coloured.contains(&format!("{}web\x1b[0m", name_colour("web"))));
}

#[test]
fn summaries_read_as_the_issue_shows_them() {
    assert_eq!(
        start_summary(3, &["web"], Duration::from_millis(1800)),
        "3 processes up, web ready, in 1.8 s"
    );
    assert_eq!(
        shutdown_summary(&["worker", "web", "db"], Duration::from_millis(400)),
        "stopped worker, web, db in 0.4 s"
    );
    assert_eq!(
        reload_summary(&["api"], &["web"], &[], 2),
        "reloaded: started api; restarted web; 2 unchanged"
    );
}
