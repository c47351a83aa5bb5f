//! Group machine stories on virtual time: what a driver and `status` read of the gate and of
//! an ordered stop while they happen.

use processcontrol_core::{
    Condition, Group, GroupConfig, GroupEffect, GroupInput, GroupNotification, GroupOutcome,
    GroupPolicy, MemberConfig, MemberId, Observed, StateName, Timestamp,
};

/// `db` (with a readiness condition) and `web`, which needs `db` healthy.
fn db_and_web() -> (Group, MemberId, MemberId, GroupOutcome) {
    let member = |name: &str, depends_on: Vec<(String, Condition)>, fingerprint| MemberConfig {
        name: name.into(),
        depends_on,
        fingerprint,
        has_readiness: name == "db",
    };
    let config = GroupConfig::new(vec![
        member("web", vec![("db".into(), Condition::Healthy)], 22),
        member("db", Vec::new(), 11),
    ])
    .expect("valid");
    let mut group = Group::new(GroupPolicy::default());
    let mut out = GroupOutcome::default();
    group.handle(Timestamp::ZERO, GroupInput::Apply(config), &mut out);
    let db = group.find("db").expect("db");
    let web = group.find("web").expect("web");
    (group, db, web, out)
}

fn seen(state: StateName, ready: bool, newest: u64) -> Observed {
    Observed {
        state,
        ready,
        has_instance: !matches!(state, StateName::Stopped | StateName::Exited),
        newest,
    }
}

fn observe(group: &mut Group, member: MemberId, seen: Observed, out: &mut GroupOutcome) {
    group.handle(Timestamp::ZERO, GroupInput::Observed { member, seen }, out);
}

#[test]
fn a_gated_start_says_what_it_waits_for_until_it_is_sent() {
    let (mut group, db, web, mut out) = db_and_web();
    assert!(out.effects.contains(&GroupEffect::Start(db)));
    assert!(!out.effects.contains(&GroupEffect::Start(web)));
    let waiting = GroupNotification::Waiting {
        member: web,
        dependency: db,
        condition: Condition::Healthy,
    };
    assert!(out.notifications.contains(&waiting), "said once it waits");
    assert_eq!(group.fingerprint(db), Some(11));
    assert_eq!(group.fingerprint(web), Some(22));
    assert_eq!(group.waiting_for(web), Some((db, Condition::Healthy)));
    assert_eq!(group.waiting_for(db), None, "db's start is sent");
    assert!(group.is_start_pending(web));
    assert!(!group.is_start_pending(db));

    observe(&mut group, db, seen(StateName::Running, false, 1), &mut out);
    assert!(!out.effects.contains(&GroupEffect::Start(web)));
    assert!(!out.notifications.contains(&waiting), "not said again");
    assert_eq!(group.waiting_for(web), Some((db, Condition::Healthy)));

    observe(&mut group, db, seen(StateName::Running, true, 1), &mut out);
    assert_eq!(out.effects, [GroupEffect::Start(web)]);
    assert_eq!(group.waiting_for(web), None);
    assert!(!group.is_start_pending(web));
}

#[test]
fn an_ordered_stop_holds_a_dependency_until_its_dependents_are_gone() {
    let (mut group, db, web, mut out) = db_and_web();
    observe(&mut group, db, seen(StateName::Running, true, 1), &mut out);
    observe(
        &mut group,
        web,
        seen(StateName::Running, false, 1),
        &mut out,
    );
    assert!(!group.is_stop_pending(db) && !group.is_stop_pending(web));

    group.handle(Timestamp::ZERO, GroupInput::StopAll, &mut out);
    assert_eq!(out.effects, [GroupEffect::Stop(web)]);
    assert!(group.is_stop_pending(db), "db waits for web to be gone");
    assert!(!group.is_stop_pending(web), "web's stop is sent");
    assert!(!group.is_start_pending(db) && !group.is_start_pending(web));

    observe(
        &mut group,
        web,
        seen(StateName::Stopped, false, 1),
        &mut out,
    );
    assert_eq!(out.effects, [GroupEffect::Stop(db)]);
    assert!(!group.is_stop_pending(db));

    // A restart of everything: stopped members count as starts to come until they are sent.
    observe(&mut group, db, seen(StateName::Stopped, false, 1), &mut out);
    group.handle(Timestamp::ZERO, GroupInput::RestartAll, &mut out);
    assert!(out.effects.contains(&GroupEffect::Start(db)));
    assert!(group.is_start_pending(web));
}

#[test]
fn group_inputs_have_their_names() {
    let (_, db, _, _) = db_and_web();
    let config = GroupConfig::new(Vec::new()).expect("empty is valid");
    for (input, name) in [
        (GroupInput::Apply(config), "apply"),
        (GroupInput::Start(db), "start"),
        (GroupInput::StartAll, "start_all"),
        (GroupInput::Stop(db), "stop"),
        (GroupInput::StopAll, "stop_all"),
        (GroupInput::RestartAll, "restart_all"),
        (GroupInput::Shutdown, "shutdown"),
        (
            GroupInput::Observed {
                member: db,
                seen: Observed::STOPPED,
            },
            "observed",
        ),
        (GroupInput::Tick, "tick"),
    ] {
        assert_eq!(input.name(), name);
    }
}

#[test]
fn a_shutdown_has_its_deadline_until_it_completes() {
    let (mut group, db, web, mut out) = db_and_web();
    assert_eq!(group.has_readiness(db), Some(true));
    assert_eq!(group.has_readiness(web), Some(false));
    observe(&mut group, db, seen(StateName::Running, true, 1), &mut out);
    assert!(!group.is_shutting_down());
    assert_eq!(group.poll_timeout(), None, "no deadline before a shutdown");

    let began = Timestamp::from_millis(5_000);
    group.handle(began, GroupInput::Shutdown, &mut out);
    assert!(group.is_shutting_down() && !group.is_shut_down());
    assert_eq!(
        group.poll_timeout(),
        Some(began.saturating_add(GroupPolicy::default().shutdown_grace))
    );
    observe(&mut group, db, seen(StateName::Stopped, false, 1), &mut out);
    assert!(group.is_shut_down());
    assert_eq!(group.poll_timeout(), None, "nothing left to kill");
}

/// At `shutdown_grace` exactly, whatever is still alive is killed and counted; a tick before
/// it does nothing.
#[test]
fn the_shutdown_grace_kills_what_is_left_exactly_when_it_ends() {
    let (mut group, db, web, mut out) = db_and_web();
    observe(&mut group, db, seen(StateName::Running, true, 1), &mut out);
    observe(
        &mut group,
        web,
        seen(StateName::Running, false, 1),
        &mut out,
    );
    group.handle(Timestamp::ZERO, GroupInput::Shutdown, &mut out);
    assert_eq!(out.effects, [GroupEffect::Stop(web)]);
    // web ignores its stop signal.
    observe(
        &mut group,
        web,
        seen(StateName::ShuttingDown, false, 1),
        &mut out,
    );
    let deadline = group.poll_timeout().expect("a deadline");
    let early = Timestamp::from_nanos(deadline.as_nanos() - 1);
    group.handle(early, GroupInput::Tick, &mut out);
    assert!(out.effects.is_empty() && out.notifications.is_empty());
    group.handle(deadline, GroupInput::Tick, &mut out);
    assert_eq!(out.effects, [GroupEffect::Kill(web), GroupEffect::Kill(db)]);
    assert!(out
        .notifications
        .contains(&processcontrol_core::GroupNotification::GraceExpired { killed: 2 }));
}

/// `StartsSent` is said once, when the last start a boot asked for has gone out, and not
/// again for observations after it.
#[test]
fn starts_sent_is_said_once_the_last_start_is_out() {
    use processcontrol_core::GroupNotification::StartsSent;
    let (mut group, db, web, mut out) = db_and_web();
    assert!(!out.notifications.contains(&StartsSent), "web still waits");
    observe(&mut group, db, seen(StateName::Running, true, 1), &mut out);
    assert_eq!(out.effects, [GroupEffect::Start(web)]);
    assert!(out.notifications.contains(&StartsSent));
    observe(
        &mut group,
        web,
        seen(StateName::Running, false, 1),
        &mut out,
    );
    assert!(!out.notifications.contains(&StartsSent), "said once");
}
