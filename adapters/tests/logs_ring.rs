//! The in-memory ring: bounds, readers, follow mode and JSON form.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use processcontrol_adapters::logs::{FollowEvent, LogError, LogLine, LogRing, RingConfig, Stream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn line(text: impl Into<String>) -> LogLine {
    LogLine {
        time: SystemTime::now(),
        stream: Stream::Stdout,
        instance: 1,
        text: text.into(),
    }
}

#[test]
fn flood_of_a_million_lines_keeps_ring_within_line_and_byte_bounds() {
    let ring = LogRing::default();
    let config = ring.config().clone();
    for i in 0..1_000_000u32 {
        // Mostly short lines (the line bound binds), every 1000th one 8 KiB long.
        let text = if i % 1000 == 999 {
            format!("{i:08} {}", "x".repeat(8 << 10))
        } else {
            format!("{i:08} short")
        };
        ring.push(line(text));
        if i % 50_000 == 0 {
            let stats = ring.stats();
            assert!(stats.lines <= config.max_lines);
            assert!(stats.bytes <= config.max_bytes);
        }
    }
    let stats = ring.stats();
    assert_eq!(stats.lines, config.max_lines);
    assert!(stats.bytes <= config.max_bytes);
    assert_eq!(stats.pushed, 1_000_000);
    assert_eq!(stats.evicted, 1_000_000 - config.max_lines as u64);
    let held: usize = ring.tail(usize::MAX).iter().map(|l| l.text.len()).sum();
    assert_eq!(held, stats.bytes);

    // Now long lines: the byte budget binds before the line count.
    for i in 0..10_000u32 {
        ring.push(line(format!("{i:08} {}", "y".repeat(12 << 10))));
    }
    let stats = ring.stats();
    assert!(stats.bytes <= config.max_bytes, "{stats:?}");
    assert!(stats.lines < config.max_lines, "{stats:?}");
    assert!(stats.lines >= config.max_bytes / (13 << 10), "{stats:?}");
    let last = ring.tail(1);
    assert!(last[0].text.starts_with("00009999 "));
}

#[test]
fn tail_returns_the_newest_lines_oldest_first() {
    let ring = LogRing::new(RingConfig {
        max_lines: 5,
        ..RingConfig::default()
    })
    .expect("valid config");
    assert!(ring.is_empty());
    assert!(ring.tail(10).is_empty());
    for i in 0..8 {
        ring.push(line(i.to_string()));
    }
    let texts = |lines: Vec<LogLine>| lines.into_iter().map(|l| l.text).collect::<Vec<_>>();
    assert_eq!(texts(ring.tail(3)), ["5", "6", "7"]);
    assert_eq!(texts(ring.tail(100)), ["3", "4", "5", "6", "7"]);
    assert_eq!(ring.tail(0).len(), 0);
    assert_eq!(ring.len(), 5);
}

#[test]
fn a_pushed_line_longer_than_the_cap_is_cut_with_a_marker() {
    let ring = LogRing::new(RingConfig {
        max_line_bytes: 256,
        ..RingConfig::default()
    })
    .expect("valid config");
    ring.push(line("z".repeat(10_000)));
    let got = &ring.tail(1)[0].text;
    assert!(got.len() <= 256, "{}", got.len());
    assert!(got.starts_with("zzz"));
    assert!(got.ends_with("[processcontrol: line of 10000 bytes truncated]"));
}

#[test]
fn inconsistent_bounds_are_errors_not_panics() {
    let base = RingConfig::default();
    for bad in [
        RingConfig {
            max_lines: 0,
            ..base.clone()
        },
        RingConfig {
            follow_capacity: 0,
            ..base.clone()
        },
        RingConfig {
            follow_capacity: usize::MAX,
            ..base.clone()
        },
        RingConfig {
            max_line_bytes: 10,
            ..base.clone()
        },
        RingConfig {
            max_bytes: 1000,
            max_line_bytes: 2000,
            ..base.clone()
        },
    ] {
        assert!(
            matches!(LogRing::new(bad.clone()), Err(LogError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn follower_receives_lines_pushed_after_it_subscribed() {
    let ring = Arc::new(LogRing::default());
    ring.push(line("before"));
    let mut follower = ring.subscribe();
    let pusher = {
        let ring = ring.clone();
        tokio::spawn(async move {
            for i in 0..3 {
                ring.push(line(format!("live {i}")));
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 0..3 {
        let event = timeout(WAIT, follower.next()).await.expect("line in time");
        match event {
            Some(FollowEvent::Line(l)) => assert_eq!(l.text, format!("live {i}")),
            other => panic!("expected a line, got {other:?}"),
        }
    }
    timeout(WAIT, pusher)
        .await
        .expect("pusher done")
        .expect("no panic");
}

#[tokio::test]
async fn lagging_follower_is_told_how_many_lines_it_missed() {
    let ring = LogRing::new(RingConfig {
        follow_capacity: 4,
        ..RingConfig::default()
    })
    .expect("valid config");
    let mut follower = ring.subscribe();
    for i in 0..10 {
        ring.push(line(i.to_string()));
    }
    // The writer was never slowed: every line is in the ring.
    assert_eq!(ring.len(), 10);
    let first = timeout(WAIT, follower.next()).await.expect("event in time");
    assert_eq!(first, Some(FollowEvent::Missed(6)));
    for expected in ["6", "7", "8", "9"] {
        match timeout(WAIT, follower.next()).await.expect("event in time") {
            Some(FollowEvent::Line(l)) => assert_eq!(l.text, expected),
            other => panic!("expected line {expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn follow_gives_the_tail_then_every_new_line_exactly_once() {
    let ring = LogRing::default();
    for i in 0..5 {
        ring.push(line(i.to_string()));
    }
    let (tail, mut follower) = ring.follow(2);
    assert_eq!(
        tail.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["3", "4"]
    );
    ring.push(line("5"));
    match timeout(WAIT, follower.next()).await.expect("event in time") {
        Some(FollowEvent::Line(l)) => assert_eq!(l.text, "5"),
        other => panic!("expected line 5, got {other:?}"),
    }
}

#[tokio::test]
async fn follower_ends_when_the_ring_is_dropped() {
    let ring = LogRing::default();
    let mut follower = ring.subscribe();
    drop(ring);
    assert_eq!(timeout(WAIT, follower.next()).await.expect("in time"), None);
}

#[tokio::test]
async fn resubscribing_after_all_followers_left_still_works() {
    let ring = LogRing::default();
    drop(ring.subscribe());
    ring.push(line("nobody listens"));
    let mut follower = ring.subscribe();
    ring.push(line("heard"));
    match timeout(WAIT, follower.next()).await.expect("event in time") {
        Some(FollowEvent::Line(l)) => assert_eq!(l.text, "heard"),
        other => panic!("expected a line, got {other:?}"),
    }
}

#[test]
fn json_has_an_rfc3339_time_and_round_trips() {
    let original = LogLine {
        time: UNIX_EPOCH + Duration::from_millis(1_714_564_800_123),
        stream: Stream::Stderr,
        instance: 7,
        text: "boom \"quoted\"".into(),
    };
    let json = serde_json::to_string(&original).expect("serializes");
    assert_eq!(
        json,
        r#"{"time":"2024-05-01T12:00:00.123Z","stream":"stderr","instance":7,"text":"boom \"quoted\""}"#
    );
    let back: LogLine = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, original);
    let bad = json.replace("2024-05-01T12", "2024-05-01X12");
    assert!(serde_json::from_str::<LogLine>(&bad).is_err());
}
