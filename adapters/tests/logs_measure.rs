//! Measurements: heap cost of idle rings and capture tasks, with bounds. Throughput is a
//! benchmark: `cargo bench -p processcontrol-adapters --bench logs_throughput`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use processcontrol_adapters::logs::{Capture, LogLine, LogRing, Stream};

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
