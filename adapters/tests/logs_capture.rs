//! Capture of a pipe into the ring and the printer.
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use processcontrol_adapters::logs::{
    Capture, FollowEvent, LogError, LogLine, LogRing, PrintLine, Printer, RingConfig, Stream,
};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

/// Captures everything `input` holds, as a child that wrote it and exited would.
async fn capture_bytes(
    ring: &Arc<LogRing>,
    input: Vec<u8>,
) -> processcontrol_adapters::logs::CaptureReport {
    let (mut child, pipe) = tokio::io::duplex(64 << 10);
    let writer = tokio::spawn(async move {
        child.write_all(&input).await?;
        child.shutdown().await
    });
    let report = timeout(
        WAIT,
        Capture::new(ring.clone(), Stream::Stdout, 1).run(pipe),
    )
    .await
    .expect("capture ends at EOF");
    timeout(WAIT, writer)
        .await
        .expect("writer done")
        .expect("no panic")
        .expect("writes succeed");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_a_million_lines_through_a_pipe_keeps_the_ring_bounded() {
    let ring = Arc::new(LogRing::default());
    let (mut child, pipe) = tokio::io::duplex(64 << 10);
    let writer = tokio::spawn(async move {
        let mut chunk = Vec::with_capacity(1 << 20);
        for i in 0..1_000_000u32 {
            chunk.extend_from_slice(format!("flood line {i}\n").as_bytes());
            if chunk.len() > (1 << 20) - 64 {
                child.write_all(&chunk).await?;
                chunk.clear();
            }
        }
        child.write_all(&chunk).await?;
        child.shutdown().await
    });
    let capture = Capture::new(ring.clone(), Stream::Stdout, 3)
        .spawn(pipe)
        .expect("inside a runtime");
    let report = timeout(WAIT, capture)
        .await
        .expect("in time")
        .expect("no panic");
    timeout(WAIT, writer)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("writes");
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.lines, 1_000_000);
    let stats = ring.stats();
    assert_eq!(stats.lines, ring.config().max_lines);
    assert!(stats.bytes <= ring.config().max_bytes);
    assert_eq!(stats.pushed, 1_000_000);
    let last = ring.tail(2);
    assert_eq!(texts(&last), ["flood line 999998", "flood line 999999"]);
    assert!(last
        .iter()
        .all(|l| l.instance == 3 && l.stream == Stream::Stdout));
}

#[tokio::test]
async fn partial_last_line_without_newline_is_kept_at_eof() {
    let ring = Arc::new(LogRing::default());
    let report = capture_bytes(&ring, b"first\r\nsecond\nno newline at end".to_vec()).await;
    assert_eq!(report.lines, 3);
    assert_eq!(
        texts(&ring.tail(10)),
        ["first", "second", "no newline at end"]
    );
}

#[tokio::test]
async fn very_long_line_is_capped_and_the_next_line_survives() {
    let ring = Arc::new(LogRing::new(RingConfig::default()).expect("valid"));
    let cap = ring.config().max_line_bytes;
    let mut input = vec![b'a'; 5 << 20];
    input.extend_from_slice(b"\nafter\n");
    let report = capture_bytes(&ring, input).await;
    assert_eq!(report.lines, 2);
    assert_eq!(report.truncated, 1);
    let lines = ring.tail(10);
    assert!(lines[0].text.len() <= cap, "{}", lines[0].text.len());
    assert!(lines[0].text.starts_with("aaaa"));
    assert!(lines[0].text.ends_with(&format!(
        "[processcontrol: line of {} bytes truncated]",
        5 << 20
    )));
    assert_eq!(lines[1].text, "after");
}

#[tokio::test]
async fn invalid_utf8_is_replaced_not_rejected() {
    let ring = Arc::new(LogRing::default());
    capture_bytes(&ring, b"caf\xe9 ok\n\xff\xfe\n".to_vec()).await;
    assert_eq!(
        texts(&ring.tail(10)),
        ["caf\u{FFFD} ok", "\u{FFFD}\u{FFFD}"]
    );
}

#[tokio::test]
async fn follower_sees_each_line_while_the_child_is_still_running() {
    let ring = Arc::new(LogRing::default());
    let mut follower = ring.subscribe();
    let (mut child, pipe) = tokio::io::duplex(1024);
    let capture = Capture::new(ring.clone(), Stream::Stderr, 2)
        .spawn(pipe)
        .expect("inside a runtime");
    for word in ["hello", "world"] {
        child
            .write_all(format!("{word}\n").as_bytes())
            .await
            .expect("write");
        match timeout(WAIT, follower.next())
            .await
            .expect("line arrives live")
        {
            Some(FollowEvent::Line(l)) => {
                assert_eq!(l.text, word);
                assert_eq!(l.stream, Stream::Stderr);
                assert_eq!(l.instance, 2);
            }
            other => panic!("expected {word}, got {other:?}"),
        }
    }
    assert!(!capture.is_finished(), "child has not closed its output");
    drop(child);
    let report = timeout(WAIT, capture)
        .await
        .expect("ends at EOF")
        .expect("no panic");
    assert_eq!(report.lines, 2);
}

#[tokio::test]
async fn a_stalled_printer_never_blocks_capture_and_gaps_are_marked() {
    let ring = Arc::new(LogRing::default());
    let (tx, mut rx) = mpsc::channel::<PrintLine>(4);
    let printer = Printer::new("web", tx);
    let input: String = (0..100).map(|i| format!("l{i}\n")).collect();
    let (mut child, pipe) = tokio::io::duplex(64 << 10);
    child.write_all(input.as_bytes()).await.expect("write");
    drop(child);
    let report = timeout(
        WAIT,
        Capture::new(ring.clone(), Stream::Stdout, 1)
            .with_printer(printer.clone())
            .run(pipe),
    )
    .await
    .expect("capture does not wait for the printer");
    assert_eq!(report.lines, 100);
    assert_eq!(report.printer_dropped, 96);
    assert_eq!(printer.dropped(), 96);
    assert_eq!(ring.len(), 100);
    let mut got = Vec::new();
    while let Ok(item) = rx.try_recv() {
        assert_eq!(&*item.source, "web");
        got.push(item.line.text);
    }
    assert_eq!(got, ["l0", "l1", "l2", "l3"]);
    // Room again: the next line is preceded by the gap marker.
    let next = LogLine {
        time: SystemTime::now(),
        stream: Stream::Stdout,
        instance: 1,
        text: "back".into(),
    };
    assert!(printer.send(&next));
    let marker = rx.try_recv().expect("marker").line.text;
    assert_eq!(marker, "[processcontrol: 96 lines dropped]");
    assert_eq!(rx.try_recv().expect("line").line.text, "back");
}

/// Yields some bytes, then fails like a broken pipe would.
struct FailingReader {
    sent: bool,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.sent {
            return Poll::Ready(Err(io::Error::other("pipe broke")));
        }
        self.sent = true;
        buf.put_slice(b"one\ntwo");
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_read_error_ends_capture_with_the_error_and_keeps_what_was_read() {
    let ring = Arc::new(LogRing::default());
    let report = timeout(
        WAIT,
        Capture::new(ring.clone(), Stream::Stdout, 1).run(FailingReader { sent: false }),
    )
    .await
    .expect("in time");
    assert!(matches!(
        report.error,
        Some(LogError::Read {
            stream: Stream::Stdout,
            ..
        })
    ));
    assert_eq!(texts(&ring.tail(10)), ["one", "two"]);
}

#[tokio::test]
async fn captures_a_real_child_pipe() {
    use std::os::fd::OwnedFd;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "for i in 1 2 3; do echo out $i; done; printf tail"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs");
    let stdout = OwnedFd::from(child.stdout.take().expect("piped"));
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout).expect("a pipe");
    let ring = Arc::new(LogRing::default());
    let report = timeout(
        WAIT,
        Capture::new(ring.clone(), Stream::Stdout, 1).run(pipe),
    )
    .await
    .expect("EOF when the child exits");
    assert!(report.error.is_none());
    assert_eq!(texts(&ring.tail(10)), ["out 1", "out 2", "out 3", "tail"]);
    assert!(child.wait().expect("reaped").success());
}

#[test]
fn spawning_outside_a_runtime_is_an_error() {
    let (_child, pipe) = tokio::io::duplex(16);
    let result = Capture::new(Arc::new(LogRing::default()), Stream::Stdout, 1).spawn(pipe);
    assert!(matches!(result, Err(LogError::NoRuntime(_))));
}
