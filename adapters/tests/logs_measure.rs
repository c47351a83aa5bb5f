//! Measurements: heap cost of idle rings and capture tasks (always run, with bounds), and
//! throughput (ignored by default; run with
//! `cargo test --release -p processcontrol-adapters --test logs_measure -- --ignored --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use processcontrol_adapters::logs::{
    spawn_file_writer, Capture, FileConfig, LogLine, LogRing, Stream,
};
use tokio::io::AsyncWriteExt;

/// Counts the live heap bytes allocated by the current thread, so parallel tests do not
/// disturb each other's figures.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call is forwarded unchanged to the system allocator; we only count sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

#[test]
fn five_hundred_idle_rings_cost_almost_no_memory() {
    let mut rings = Vec::with_capacity(500);
    let before = live();
    for _ in 0..500 {
        rings.push(Arc::new(LogRing::default()));
    }
    let heap = live() - before;
    let per_ring = heap / 500;
    println!(
        "500 empty rings: size_of::<LogRing>() = {} B, heap {heap} B ({per_ring} B per ring, the Arc allocation only)",
        std::mem::size_of::<LogRing>()
    );
    assert!(per_ring <= 256, "{per_ring} B per idle ring");

    // A ring whose follower left gives the broadcast buffer back at the next line.
    let before = live();
    for ring in &rings {
        drop(ring.subscribe());
        ring.push(LogLine {
            time: SystemTime::now(),
            stream: Stream::Stdout,
            instance: 1,
            text: "x".into(),
        });
    }
    let per_ring = (live() - before) / 500;
    println!("after one follower came and went and one line: {per_ring} B more per ring");
    assert!(per_ring <= 512, "{per_ring} B per ring");
}

#[test]
fn five_hundred_parked_captures_cost_little_memory() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut pipes = Vec::with_capacity(500);
        let mut tasks = Vec::with_capacity(500);
        let polled = Arc::new(AtomicUsize::new(0));
        let before = live();
        for _ in 0..500 {
            let (child, pipe) = tokio::io::duplex(64 << 10);
            let ring = Arc::new(LogRing::default());
            let capture = Capture::new(ring, Stream::Stdout, 1);
            let polled = polled.clone();
            tasks.push(tokio::spawn(async move {
                // Counted in the same poll that parks the capture on its empty pipe.
                polled.fetch_add(1, Ordering::SeqCst);
                capture.run(pipe).await
            }));
            pipes.push(child);
        }
        let all_parked = async {
            while polled.load(Ordering::SeqCst) < 500 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all_parked)
            .await
            .expect("every capture task ran");
        let heap = live() - before;
        println!(
            "500 parked captures (ring + task + read buffer + test duplex pipe): {heap} B, {} B each",
            heap / 500
        );
        assert!(heap / 500 <= 4096, "{} B per parked capture", heap / 500);
        drop(pipes);
        for task in tasks {
            let report = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("EOF ends capture")
                .expect("no panic");
            assert_eq!(report.lines, 0);
        }
    });
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn throughput_of_ring_and_capture() {
    const LINES: u32 = 2_000_000;
    let ring = LogRing::default();
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("{i:04} a typical log line of some length"))
        .collect();
    let started = Instant::now();
    for i in 0..LINES {
        ring.push(LogLine {
            time: SystemTime::now(),
            stream: Stream::Stdout,
            instance: 1,
            text: texts[i as usize % 1000].clone(),
        });
    }
    let elapsed = started.elapsed();
    println!(
        "ring.push: {LINES} lines in {elapsed:?} = {:.2} M lines/s",
        f64::from(LINES) / elapsed.as_secs_f64() / 1e6
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ring = Arc::new(LogRing::default());
        let mut input = Vec::new();
        for i in 0..LINES {
            input.extend_from_slice(texts[i as usize % 1000].as_bytes());
            input.push(b'\n');
        }
        let bytes = input.len();
        let (mut child, pipe) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            child.write_all(&input).await?;
            child.shutdown().await
        });
        let started = Instant::now();
        let report = Capture::new(ring, Stream::Stdout, 1).run(pipe).await;
        let elapsed = started.elapsed();
        writer.await.expect("no panic").expect("writes");
        assert_eq!(report.lines, u64::from(LINES));
        println!(
            "capture (duplex pipe -> ring): {LINES} lines, {bytes} B in {elapsed:?} = {:.2} M lines/s, {:.0} MB/s",
            f64::from(LINES) / elapsed.as_secs_f64() / 1e6,
            bytes as f64 / elapsed.as_secs_f64() / 1e6
        );

        // Same flood with a log file behind it: capture speed is unchanged, the writer
        // keeps what it can and counts the rest.
        let dir = std::env::temp_dir().join(format!("pc-logs-measure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (sink, file_writer) =
            spawn_file_writer(FileConfig::new(&dir, "bench")).expect("valid config");
        let mut input = Vec::new();
        for i in 0..LINES {
            input.extend_from_slice(texts[i as usize % 1000].as_bytes());
            input.push(b'\n');
        }
        let (mut child, pipe) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            child.write_all(&input).await?;
            child.shutdown().await
        });
        let started = Instant::now();
        let ring = Arc::new(LogRing::default());
        let report = Capture::new(ring, Stream::Stdout, 1)
            .with_file(sink)
            .run(pipe)
            .await;
        let elapsed = started.elapsed();
        writer.await.expect("no panic").expect("writes");
        let status = file_writer.finish().await.expect("writer ok");
        println!(
            "capture with file: {LINES} lines in {elapsed:?} = {:.2} M lines/s; file got {} lines, {} dropped, {} rotations",
            f64::from(LINES) / elapsed.as_secs_f64() / 1e6,
            status.written_lines,
            status.dropped_lines(),
            status.rotations
        );
        assert_eq!(report.lines, u64::from(LINES));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
