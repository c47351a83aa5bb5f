//! The sampler task: add/remove at runtime, gone roots, shutdown.
#![allow(clippy::disallowed_types)] // the test's own helper processes, not started by a supervisor under test

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::Duration;

use processcontrol_adapters::sample::{spawn, SampleError, SampleReport};
use tokio::sync::mpsc;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// A `sleep` child in its own process group, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn next(rx: &mut mpsc::Receiver<SampleReport>) -> SampleReport {
    timeout(BOUND, rx.recv())
        .await
        .expect("no report in time")
        .expect("sampler ended")
}

fn tag_of(report: &SampleReport) -> u64 {
    match report {
        SampleReport::Usage(u) => u.tag,
        SampleReport::Gone { tag, .. } => *tag,
    }
}

#[tokio::test]
async fn add_remove_and_gone_at_runtime() {
    let mut a = Sleeper::start();
    let b = Sleeper::start();
    let (tx, mut rx) = mpsc::channel(64);
    let handle = spawn(Duration::from_millis(50), tx).unwrap();
    handle.add(1, a.pid()).unwrap();
    handle.add(2, b.pid()).unwrap();

    // Both roots are reported, the second time with a CPU figure.
    let mut seen = [0u32; 3];
    while seen[1] < 2 || seen[2] < 2 {
        let report = next(&mut rx).await;
        let SampleReport::Usage(u) = &report else {
            panic!("{report:?}")
        };
        assert_eq!(u.processes, 1);
        assert_eq!(u.pid, if u.tag == 1 { a.pid() } else { b.pid() });
        seen[u.tag as usize] += 1;
        if seen[u.tag as usize] >= 2 {
            assert!(u.cpu_percent.is_some(), "{u:?}");
        }
    }

    // After removal, tag 2 keeps coming and tag 1 stops. Reports of one tick come in tag
    // order, so a tag-1 report after a tag-2 one would come from a later tick.
    handle.remove(2).unwrap();
    handle.add(2, b.pid()).unwrap(); // re-adding restarts the root (no CPU baseline)
    handle.remove(1).unwrap();
    let mut tag2_seen = 0;
    while tag2_seen < 3 {
        let report = next(&mut rx).await;
        match tag_of(&report) {
            2 => tag2_seen += 1,
            1 => assert_eq!(tag2_seen, 0, "tag 1 reported after its removal"),
            other => panic!("unexpected tag {other}"),
        }
    }

    // Killing a root yields one Gone note, then nothing more for it.
    handle.add(1, a.pid()).unwrap();
    a.kill();
    loop {
        let report = next(&mut rx).await;
        if let SampleReport::Gone { tag, pid } = report {
            assert_eq!((tag, pid), (1, a.pid()));
            break;
        }
    }
    for _ in 0..3 {
        let report = next(&mut rx).await;
        assert!(
            matches!(report, SampleReport::Usage(ref u) if u.tag == 2),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn dropping_the_receiver_stops_the_sampler() {
    let b = Sleeper::start();
    let (tx, mut rx) = mpsc::channel(4);
    let handle = spawn(Duration::from_millis(20), tx).unwrap();
    handle.add(1, b.pid()).unwrap();
    next(&mut rx).await;
    drop(rx);
    timeout(BOUND, handle.stopped())
        .await
        .expect("sampler kept running without a receiver");
    assert_eq!(handle.add(2, b.pid()), Err(SampleError::Stopped));
}

#[tokio::test]
async fn zero_interval_is_rejected() {
    let (tx, _rx) = mpsc::channel(1);
    assert_eq!(
        spawn(Duration::ZERO, tx).unwrap_err(),
        SampleError::ZeroInterval
    );
}
