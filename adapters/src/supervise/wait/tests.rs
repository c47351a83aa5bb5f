use std::time::SystemTime;

use super::*;

fn status(state: StateName, instance: Option<u64>, pid: Option<u32>, newest: u64) -> Status {
    let mut s = Status::new("web".into());
    s.state = state;
    s.instance = instance;
    s.pid = pid;
    s.newest = newest;
    s
}

fn running(instance: u64, pid: u32) -> Status {
    status(StateName::Running, Some(instance), Some(pid), instance)
}

fn event(instance: Option<u64>, what: What) -> Event {
    Event {
        time: String::new(),
        process: "web".into(),
        instance,
        pid: None,
        what,
    }
}

fn breaker_opened(reason: &str) -> What {
    What::Transition {
        from: StateName::Restarting,
        to: StateName::BreakerOpen,
        cause: "breaker_tripped",
        exit: None,
        expected: None,
        error: None,
        resource: None,
        reason: Some(reason.into()),
        next_trial: None,
    }
}

#[tokio::test]
async fn a_restart_is_reached_by_a_new_instance_running() {
    let judge = Judge::new(Goal::Restart, running(1, 10));
    assert_eq!(judge.at_once(None), None);
    // The old instance still running, then stopping: not yet.
    assert_eq!(judge.status(&running(1, 10)), None);
    assert_eq!(
        judge.status(&status(StateName::Restarting, None, None, 1)),
        None
    );
    let done = judge.status(&running(2, 20)).unwrap();
    assert!(done.ok);
    assert_eq!(done.outcome, "restarted");
    assert!(
        done.message
            .starts_with("web: restarted, pid 10 -> 20, up in "),
        "{}",
        done.message
    );
    assert_eq!((done.pid_before, done.pid), (Some(10), Some(20)));
}

#[tokio::test]
async fn a_process_with_readiness_is_up_once_ready() {
    let mut before = running(1, 10);
    before.has_readiness = true;
    before.ready = true;
    let judge = Judge::new(Goal::Restart, before);
    let mut new = running(2, 20);
    new.has_readiness = true;
    assert_eq!(judge.status(&new), None, "running, not ready yet");
    new.ready = true;
    let done = judge.status(&new).unwrap();
    assert!(done.message.contains(", ready in "), "{}", done.message);
}

#[tokio::test]
async fn a_restart_that_opens_the_breaker_fails_naming_it() {
    let mut judge = Judge::new(Goal::Restart, running(6, 60));
    let opened = event(Some(6), breaker_opened("5 restarts in 60 s"));
    assert_eq!(judge.event(&opened, &running(6, 60)), None);
    let mut open = status(StateName::BreakerOpen, None, None, 6);
    open.next_trial = Some(SystemTime::now() + Duration::from_secs(300));
    let failed = judge.status(&open).unwrap();
    assert!(!failed.ok);
    assert_eq!(failed.outcome, "breaker_open");
    assert!(
        failed
            .message
            .starts_with("web: breaker open after 5 restarts in 60 s; next trial at "),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .ends_with("; 'processcontrol reset web' closes it"),
        "{}",
        failed.message
    );
    assert!(failed.next_trial.is_some());
}

#[tokio::test]
async fn an_open_breaker_seen_before_the_restart_took_effect_is_not_a_failure() {
    // A restart of a process whose breaker is open is a start: until a new instance
    // exists, the open breaker is the one from before.
    let before = status(StateName::BreakerOpen, None, None, 3);
    let judge = Judge::new(Goal::Restart, before.clone());
    assert_eq!(judge.status(&before), None);
    let done = judge.status(&running(4, 40)).unwrap();
    assert!(
        done.message.contains("(its breaker was open)"),
        "{}",
        done.message
    );
    // A new instance that opened the breaker again is a failure.
    let reopened = status(StateName::BreakerOpen, None, None, 5);
    assert_eq!(judge.status(&reopened).unwrap().outcome, "breaker_open");
}

#[tokio::test]
async fn a_stop_is_reached_at_rest_and_a_stopped_process_says_so_at_once() {
    let stopped = status(StateName::Stopped, None, None, 1);
    let at_once = Judge::new(Goal::Stop, stopped.clone())
        .at_once(None)
        .unwrap();
    assert_eq!(at_once.message, "web: already stopped");
    assert!(at_once.ok);
    let judge = Judge::new(Goal::Stop, running(1, 10));
    assert_eq!(judge.at_once(None), None);
    assert_eq!(
        judge.status(&status(StateName::ShuttingDown, Some(1), Some(10), 1)),
        None
    );
    let mut gone = stopped;
    gone.exit = Some(processcontrol_core::ExitStatus::Signal(15));
    let done = judge.status(&gone).unwrap();
    assert_eq!(done.outcome, "stopped");
    assert!(
        done.message
            .ends_with(": pid 10 killed by signal 15 (SIGTERM)"),
        "{}",
        done.message
    );
}

#[tokio::test]
async fn a_spawn_failure_of_a_new_instance_ends_a_start() {
    let mut judge = Judge::new(Goal::Start, status(StateName::Stopped, None, None, 2));
    let old = event(
        Some(2),
        What::SpawnFailed {
            error: "old".into(),
            reason: "old".into(),
        },
    );
    assert_eq!(judge.event(&old, &Status::new("web".into())), None);
    let failed = event(
        Some(3),
        What::SpawnFailed {
            error: "No such file or directory (os error 2)".into(),
            reason: "No such file or directory (os error 2)".into(),
        },
    );
    let outcome = judge.event(&failed, &Status::new("web".into())).unwrap();
    assert_eq!(outcome.outcome, "spawn_failed");
    assert_eq!(
        outcome.message,
        "web: cannot start: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn a_timeout_names_what_the_process_does_instead() {
    let mut judge = Judge::new(Goal::Start, status(StateName::Stopped, None, None, 0));
    let waiting = judge.timed_out(
        &Status::new("web".into()),
        Some("waiting for db to be healthy"),
        Duration::from_secs(30),
    );
    assert_eq!(
        waiting.message,
        "web: not up after 30 s: waiting for db to be healthy"
    );
    assert_eq!(waiting.outcome, "timeout");
    let crash = event(
        Some(1),
        What::Transition {
            from: StateName::Running,
            to: StateName::Restarting,
            cause: "exited",
            exit: None,
            expected: Some(false),
            error: None,
            resource: None,
            reason: Some("exited with 1".into()),
            next_trial: None,
        },
    );
    judge.event(&crash, &Status::new("web".into()));
    let restarting = status(StateName::Restarting, None, None, 1);
    let timed_out = judge.timed_out(&restarting, None, Duration::from_secs(2));
    assert_eq!(
        timed_out.message,
        "web: not up after 2 s: restarting; last failure: exited with 1"
    );
}

#[test]
fn a_signal_needs_a_running_process() {
    let stopped = signalled(&status(StateName::Stopped, None, None, 1), "SIGHUP");
    assert!(!stopped.ok);
    assert_eq!(
        stopped.message,
        "web: not running (stopped); no signal sent"
    );
    let sent = signalled(&running(1, 10), "SIGHUP");
    assert!(sent.ok);
    assert_eq!(sent.message, "web: SIGHUP sent to its processes (pid 10)");
}
