//! Log files: rotation, and a slow, missing or full disk never stalling capture.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use processcontrol_adapters::logs::{
    spawn_file_writer, Capture, CaptureReport, FileConfig, FileSink, LogLine, LogRing, Stream,
    WriterStatus,
};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh, empty directory for one test.
fn test_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pc-logs-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn line(i: usize) -> LogLine {
    LogLine {
        time: SystemTime::now(),
        stream: Stream::Stdout,
        instance: 7,
        text: format!("line {i:06} {}", "p".repeat(40)),
    }
}

/// Runs a capture of `lines` lines written by a fake child into `sink`.
async fn capture_lines(ring: &Arc<LogRing>, sink: FileSink, lines: usize) -> CaptureReport {
    let (mut child, pipe) = tokio::io::duplex(64 << 10);
    let writer = tokio::spawn(async move {
        let mut chunk = Vec::new();
        for i in 0..lines {
            chunk.extend_from_slice(format!("flood {i}\n").as_bytes());
            if chunk.len() > 32 << 10 {
                child.write_all(&chunk).await?;
                chunk.clear();
            }
        }
        child.write_all(&chunk).await?;
        child.shutdown().await
    });
    let report = timeout(
        WAIT,
        Capture::new(ring.clone(), Stream::Stdout, 1)
            .with_file(sink)
            .run(pipe),
    )
    .await
    .expect("capture never waits for the disk");
    timeout(WAIT, writer)
        .await
        .expect("in time")
        .expect("no panic")
        .expect("writes");
    report
}

/// Sum of the N of every `[processcontrol: N lines dropped]` record.
fn marked_drops(content: &str) -> u64 {
    content
        .lines()
        .filter_map(|l| l.split("[processcontrol: ").nth(1))
        .filter_map(|rest| rest.strip_suffix(" lines dropped]"))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum()
}

fn numbers(path: &Path) -> Vec<usize> {
    std::fs::read_to_string(path)
        .expect("readable")
        .lines()
        .map(|l| {
            let text = l.splitn(4, ' ').nth(3).expect("4 columns");
            text[5..11].parse().expect("line number")
        })
        .collect()
}

#[tokio::test]
async fn rotation_keeps_exactly_k_files_under_the_limit_with_the_newest_in_name_log() {
    let dir = test_dir("rotation");
    let config = FileConfig {
        max_file_bytes: 4096,
        keep_files: 3,
        ..FileConfig::new(&dir, "web")
    };
    let (sink, writer) = spawn_file_writer(config).expect("valid config");
    let total = 2000;
    for i in 0..total {
        assert!(sink.send(&line(i)), "queue is large enough for this test");
    }
    drop(sink);
    let status = timeout(WAIT, writer.finish())
        .await
        .expect("in time")
        .expect("writer ok");
    assert_eq!(status.written_lines, total as u64);
    assert_eq!(status.dropped_lines(), 0);
    assert!(status.rotations > 3, "{status:?}");

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["web.log", "web.log.1", "web.log.2"]);
    for name in &names {
        let size = std::fs::metadata(dir.join(name)).expect("file").len();
        assert!(size <= 4096, "{name}: {size} bytes");
        // Rotated files were filled up to the limit (less than one record short).
        assert!(name == "web.log" || size > 4000, "{name}: {size} bytes");
    }
    let (old, mid, new) = (
        numbers(&dir.join("web.log.2")),
        numbers(&dir.join("web.log.1")),
        numbers(&dir.join("web.log")),
    );
    let all: Vec<usize> = [old, mid, new.clone()].concat();
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous, oldest first"
    );
    assert_eq!(new.last(), Some(&(total - 1)));

    let first = std::fs::read_to_string(dir.join("web.log")).expect("readable");
    let record = first.lines().next().expect("a record");
    let cols: Vec<&str> = record.splitn(4, ' ').collect();
    assert_eq!(cols[0].len(), 24, "RFC 3339 with ms: {record}");
    assert!(cols[0].ends_with('Z'));
    assert_eq!(&cols[1..3], ["stdout", "7"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn keep_one_file_truncates_in_place() {
    let dir = test_dir("keep-one");
    let config = FileConfig {
        max_file_bytes: 1024,
        keep_files: 1,
        ..FileConfig::new(&dir, "one")
    };
    let (sink, writer) = spawn_file_writer(config).expect("valid config");
    for i in 0..100 {
        sink.send(&line(i));
    }
    drop(sink);
    timeout(WAIT, writer.finish())
        .await
        .expect("in time")
        .expect("ok");
    let names: Vec<_> = std::fs::read_dir(&dir).expect("dir").collect();
    assert_eq!(names.len(), 1);
    assert_eq!(numbers(&dir.join("one.log")).last(), Some(&99));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_status(sink: &FileSink, what: impl Fn(&WriterStatus) -> bool) -> WriterStatus {
    let mut watch = sink.watch();
    let status = timeout(WAIT, watch.wait_for(|s| what(s)))
        .await
        .expect("status reached in time")
        .expect("writer alive")
        .clone();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directory_does_not_stall_capture_and_recovery_marks_the_gap() {
    let parent = test_dir("missing");
    let dir = parent.join("not-yet");
    let config = FileConfig {
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(50),
        ..FileConfig::new(&dir, "api")
    };
    let (sink, writer) = spawn_file_writer(config).expect("valid config");
    let ring = Arc::new(LogRing::default());
    let report = capture_lines(&ring, sink.clone(), 20_000).await;
    assert_eq!(report.lines, 20_000);
    assert_eq!(ring.len(), ring.config().max_lines);
    let failing = wait_status(&sink, |s| s.failing).await;
    assert!(failing.last_error.is_some());
    assert_eq!(failing.written_lines, 0);

    std::fs::create_dir(&dir).expect("create the directory");
    // Keep a trickle of output going until the writer's next attempt succeeds.
    let trickle = {
        let sink = sink.clone();
        tokio::spawn(async move {
            for i in 0.. {
                sink.send(&line(i));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_status(&sink, |s| !s.failing && s.written_lines > 0).await;
    trickle.abort();
    let _ = trickle.await;
    let before_end = sink.status();
    drop(sink);
    let status = timeout(WAIT, writer.finish())
        .await
        .expect("in time")
        .expect("ok");
    assert!(status.write_errors >= 1);
    assert!(status.dropped_lines() >= 20_000, "{status:?}");
    assert!(status.written_lines >= before_end.written_lines);
    let content = std::fs::read_to_string(dir.join("api.log")).expect("written");
    assert_eq!(
        marked_drops(&content),
        status.dropped_lines(),
        "every drop marked once"
    );
    assert_eq!(
        content.lines().count() as u64,
        status.written_lines + content.matches("lines dropped]").count() as u64
    );
    let _ = std::fs::remove_dir_all(&parent);
}

/// A one-page tmpfs mounted on a directory and filled to the last byte; unmounted on drop.
struct FullDisk(PathBuf);

impl FullDisk {
    fn mount(dir: &Path) -> Option<FullDisk> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let target = CString::new(dir.as_os_str().as_bytes()).expect("no NUL in a temp path");
        // SAFETY: mount(2) with valid C strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=4k".as_ptr().cast(),
            )
        };
        if rc != 0 {
            eprintln!(
                "skipped: cannot mount a tiny tmpfs to fill up (needs root): {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        let disk = FullDisk(dir.to_path_buf());
        let mut filler = std::fs::File::create(dir.join("filler")).expect("filler file");
        let page = [0u8; 4096];
        loop {
            match std::io::Write::write(&mut filler, &page) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        Some(disk)
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.0.as_os_str().as_bytes()) {
            // SAFETY: umount2(2) with a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_enospc_is_reported_without_stalling_or_spinning() {
    // A log file is never opened through a symlink (one to /dev/full included): a tiny tmpfs,
    // filled up before the writer starts, is a real full disk.
    let dir = test_dir("full");
    let Some(disk) = FullDisk::mount(&dir) else {
        return;
    };
    let retry = Duration::from_millis(50);
    let config = FileConfig {
        retry_initial: retry,
        retry_max: retry * 4,
        ..FileConfig::new(&dir, "db")
    };
    let started = Instant::now();
    let (sink, writer) = spawn_file_writer(config).expect("valid config");
    let ring = Arc::new(LogRing::default());
    let report = capture_lines(&ring, sink.clone(), 100_000).await;
    assert_eq!(report.lines, 100_000);
    assert_eq!(ring.len(), ring.config().max_lines);
    let status = wait_status(&sink, |s| s.failing).await;
    let error = status.last_error.expect("error kept");
    assert!(error.contains("No space left"), "{error}");
    drop(sink);
    let status = timeout(WAIT, writer.finish())
        .await
        .expect("writer stops promptly when the disk stays full")
        .expect("ok");
    let elapsed = started.elapsed();
    assert_eq!(status.written_lines, 0);
    assert_eq!(status.dropped_lines(), 100_000);
    // One attempt per backoff period at most (plus the final attempt), not one per batch.
    let bound = 2 + (elapsed.as_millis() / retry.as_millis()) as u64;
    assert!(
        (1..=bound).contains(&status.write_errors),
        "{} errors in {elapsed:?}",
        status.write_errors
    );
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_disk_fills_the_queue_and_the_gap_is_marked_when_writing_resumes() {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    // A FIFO as the log file, its buffer filled up front and nobody reading: the writer
    // blocks in write(2) exactly like a disk that stops answering. If the test fails
    // early, dropping `read_end` turns the blocked write into EPIPE, so nothing hangs.
    let dir = test_dir("slow");
    let fifo = dir.join("slow.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let read_end = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the FIFO's read end");
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open a FIFO write end");
    loop {
        match filler.write(b"filler\n") {
            Ok(7) => {}
            Ok(n) => panic!("short atomic write of {n} bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the FIFO: {e}"),
        }
    }
    drop(filler);

    let config = FileConfig {
        queue_lines: 100,
        ..FileConfig::new(&dir, "slow")
    };
    let (sink, writer) = spawn_file_writer(config).expect("valid config");
    let ring = Arc::new(LogRing::default());
    let total = 20_000;
    let started = Instant::now();
    let report = capture_lines(&ring, sink.clone(), total).await;
    let flood_time = started.elapsed();
    assert_eq!(report.lines, total as u64);
    assert!(report.file_dropped > total as u64 / 2, "{report:?}");
    assert_eq!(ring.len(), ring.config().max_lines);
    // The queue is full and the writer stuck: one more line is dropped too.
    assert!(!sink.send(&line(424_242)));

    // The disk wakes up: read everything the writer sends, until it closes the file.
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&read_end),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .expect("make the read end blocking");
    let reader = std::thread::spawn(move || {
        let mut read_end = read_end;
        let mut content = String::new();
        read_end.read_to_string(&mut content).map(|_| content)
    });
    drop(sink);
    let status = timeout(WAIT, writer.finish())
        .await
        .expect("in time")
        .expect("ok");
    let content = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("joined")
        .expect("no panic")
        .expect("read fifo");
    let content: String = content
        .lines()
        .filter(|l| *l != "filler")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        status.written_lines + status.dropped_lines(),
        total as u64 + 1
    );
    assert_eq!(status.write_dropped, 0);
    assert_eq!(status.queue_dropped, report.file_dropped + 1);
    assert_eq!(
        marked_drops(&content),
        status.queue_dropped,
        "every drop marked once"
    );
    assert_eq!(
        content.lines().count() as u64,
        status.written_lines + content.matches("lines dropped]").count() as u64
    );
    // Drops after the last queued line are marked when the writer finishes.
    let last = content.lines().last().expect("records");
    assert!(last.ends_with(" lines dropped]"), "{last}");
    println!("flood of {total} lines with a stuck disk captured in {flood_time:?}: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_file_settings_are_errors() {
    let result = spawn_file_writer(FileConfig {
        queue_lines: 0,
        ..FileConfig::new("/tmp", "x")
    });
    assert!(result.is_err());
    let result = spawn_file_writer(FileConfig::new("/tmp", "a/b"));
    assert!(result.is_err());
}
