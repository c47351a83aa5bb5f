//! Log files with size-based rotation, written behind a bounded queue.
//!
//! The disk is the one sink that can be arbitrarily slow (network file systems, a dying
//! disk) or refuse writes (ENOSPC). Capture tasks therefore only `try_send` into a queue
//! bounded in lines and bytes; a writer task drains it in batches and does the blocking
//! I/O on Tokio's blocking pool. When the queue is full, lines are dropped and counted,
//! and a `[processcontrol: N lines dropped]` record marks the gap. When a write fails,
//! the error is logged once, the writer drops what arrives for a backoff period (growing
//! up to `retry_max`), then tries again: no panic, no busy loop, no stalled pipe.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{geteuid, unlinkat, UnlinkatFlags};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::time::write_rfc3339_millis;
use super::{LogError, LogLine};

/// Where and how one log file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// Directory of the files; it must exist (it is not created, so a typo does not
    /// scatter directories). Until it can be opened, lines are dropped and counted.
    pub dir: PathBuf,
    /// Base name: the files are `name.log`, `name.log.1` (newest rotated) ... A plain
    /// file name, no `/`.
    pub name: String,
    /// Size at which `name.log` is rotated; no file grows beyond it (a single record
    /// longer than this is cut). At least 1024.
    pub max_file_bytes: u64,
    /// Files kept, `name.log` included: `name.log` and `name.log.1` ..
    /// `name.log.{keep_files - 1}`. Within 1..=1000.
    pub keep_files: usize,
    /// Lines the queue holds while the disk is slow before lines are dropped.
    pub queue_lines: usize,
    /// Bytes of text the queue holds before lines are dropped (a line alone in the queue
    /// is always accepted).
    pub queue_bytes: usize,
    /// Wait after a failed write before the next attempt; doubles on each failure.
    pub retry_initial: Duration,
    /// Longest wait between attempts (at most one hour).
    pub retry_max: Duration,
}

impl FileConfig {
    /// Defaults for `dir/name.log`: 10 MiB files, 5 kept, a queue of 4096 lines or 1 MiB,
    /// retries after 1 s growing to 30 s.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            name: name.into(),
            max_file_bytes: 10 << 20,
            keep_files: 5,
            queue_lines: 4096,
            queue_bytes: 1 << 20,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Checks the settings, so a bad one is an error value instead of a panic in Tokio
    /// (zero-sized channels) or a busy retry loop (zero backoff).
    pub fn validate(&self) -> Result<(), LogError> {
        let fail = |why: String| Err(LogError::InvalidConfig(why));
        let name = self.name.as_str();
        if name.is_empty()
            || name.len() > 200
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
        {
            return fail(format!(
                "log file name must be a plain file name, got {name:?}"
            ));
        }
        if self.max_file_bytes < 1024 {
            return fail(format!(
                "max_file_bytes must be at least 1024, got {}",
                self.max_file_bytes
            ));
        }
        if !(1..=1000).contains(&self.keep_files) {
            return fail(format!(
                "keep_files must be within 1..=1000, got {}",
                self.keep_files
            ));
        }
        if !(1..=1 << 20).contains(&self.queue_lines) {
            return fail(format!(
                "queue_lines must be within 1..=1048576, got {}",
                self.queue_lines
            ));
        }
        if self.queue_bytes < 1024 {
            return fail(format!(
                "queue_bytes must be at least 1024, got {}",
                self.queue_bytes
            ));
        }
        if self.retry_initial < Duration::from_millis(1)
            || self.retry_max < self.retry_initial
            || self.retry_max > MAX_RETRY
        {
            return fail(format!(
                "retry delays must satisfy 1ms <= retry_initial ({:?}) <= retry_max ({:?}) <= 1h",
                self.retry_initial, self.retry_max
            ));
        }
        Ok(())
    }
}

/// Longest accepted retry delay: beyond an hour, a recovered disk would go unused for too
/// long (and absurd values would overflow instant arithmetic).
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// What the writer has done so far, published after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStatus {
    /// Lines written to disk.
    pub written_lines: u64,
    /// Lines dropped because the queue was full (slow disk).
    pub queue_dropped: u64,
    /// Lines dropped because writing failed or was backing off after a failure.
    pub write_dropped: u64,
    /// Rotations done.
    pub rotations: u64,
    /// Failed write attempts (at most one per backoff period).
    pub write_errors: u64,
    /// Whether the last attempt failed.
    pub failing: bool,
    /// The last write error, kept after recovery for diagnosis.
    pub last_error: Option<String>,
}

impl WriterStatus {
    /// All lines that did not reach the disk.
    pub fn dropped_lines(&self) -> u64 {
        self.queue_dropped + self.write_dropped
    }
}

/// A queued record.
#[derive(Debug)]
enum Entry {
    Line(LogLine),
    /// This many lines were dropped here because the queue was full.
    Dropped(u64),
}

/// Bytes charged per queued entry on top of its text, so empty lines are bounded too.
const ENTRY_OVERHEAD: usize = 64;
/// Most bytes of text taken from the queue per blocking write.
const BATCH_BYTES: usize = 256 << 10;
/// Most entries taken from the queue per blocking write.
const BATCH_LINES: usize = 4096;

/// Log lines in a batch.
fn count_lines(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| matches!(e, Entry::Line(_)))
        .count() as u64
}

/// Lines a batch stands for: its log lines plus the drops its markers report.
fn weight(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match e {
            Entry::Line(_) => 1,
            Entry::Dropped(n) => *n,
        })
        .sum()
}

fn cost(entry: &Entry) -> usize {
    match entry {
        Entry::Line(line) => line.text.len() + ENTRY_OVERHEAD,
        Entry::Dropped(_) => ENTRY_OVERHEAD,
    }
}

#[derive(Debug)]
struct Shared {
    queued_bytes: AtomicUsize,
    queue_bytes: usize,
    /// Drops not yet marked in the queue.
    pending_drops: AtomicU64,
    /// Drops ever.
    total_drops: AtomicU64,
}

impl Shared {
    fn reserve(&self, bytes: usize) -> bool {
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before.saturating_add(bytes) > self.queue_bytes {
            self.release(bytes);
            return false;
        }
        true
    }

    fn release(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    fn drop_lines(&self, n: u64) {
        self.pending_drops.fetch_add(n, Ordering::AcqRel);
        self.total_drops.fetch_add(n, Ordering::Relaxed);
    }
}

/// The sending side of a log file, shared by the capture tasks of one process (clone it
/// for stdout and stderr). The writer stops once every clone is dropped and the queue is
/// written out.
#[derive(Debug, Clone)]
pub struct FileSink {
    tx: mpsc::Sender<Entry>,
    shared: Arc<Shared>,
    status: watch::Receiver<WriterStatus>,
}

impl FileSink {
    /// Queues a line without waiting; `false` if it was dropped (queue full or writer
    /// gone), in which case it is counted and marked in the file.
    pub fn send(&self, line: &LogLine) -> bool {
        let shared = &self.shared;
        let missed = shared.pending_drops.swap(0, Ordering::AcqRel);
        if missed > 0 {
            let marked = shared.reserve(ENTRY_OVERHEAD)
                && match self.tx.try_send(Entry::Dropped(missed)) {
                    Ok(()) => true,
                    Err(_) => {
                        shared.release(ENTRY_OVERHEAD);
                        false
                    }
                };
            if !marked {
                shared.pending_drops.fetch_add(missed, Ordering::AcqRel);
                shared.drop_lines(1);
                return false;
            }
        }
        let bytes = line.text.len() + ENTRY_OVERHEAD;
        if !shared.reserve(bytes) {
            shared.drop_lines(1);
            return false;
        }
        if self.tx.try_send(Entry::Line(line.clone())).is_err() {
            shared.release(bytes);
            shared.drop_lines(1);
            return false;
        }
        true
    }

    /// The writer's latest status, with the queue drops counted up to now.
    pub fn status(&self) -> WriterStatus {
        let mut status = self.status.borrow().clone();
        status.queue_dropped = self.shared.total_drops.load(Ordering::Relaxed);
        status
    }

    /// A receiver notified after every batch the writer handles, to wait for a state
    /// (written, failing, recovered) without polling.
    pub fn watch(&self) -> watch::Receiver<WriterStatus> {
        self.status.clone()
    }
}

/// The running writer task; await [`FileWriter::finish`] after dropping every sink to
/// know everything was written.
#[derive(Debug)]
pub struct FileWriter {
    handle: JoinHandle<WriterStatus>,
}

impl FileWriter {
    /// Waits until the writer has drained its queue (all sinks must be dropped first) and
    /// returns its final counters.
    pub async fn finish(self) -> Result<WriterStatus, LogError> {
        self.handle
            .await
            .map_err(|e| LogError::TaskFailed(e.to_string()))
    }
}

/// Starts the writer of `dir/name.log` on the current Tokio runtime. Nothing is opened
/// yet: the file is opened at the first batch, and failures there are handled like write
/// failures.
pub fn spawn_file_writer(config: FileConfig) -> Result<(FileSink, FileWriter), LogError> {
    config.validate()?;
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|e| LogError::NoRuntime(e.to_string()))?;
    let (tx, rx) = mpsc::channel(config.queue_lines);
    let (status_tx, status_rx) = watch::channel(WriterStatus::default());
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        queue_bytes: config.queue_bytes,
        pending_drops: AtomicU64::new(0),
        total_drops: AtomicU64::new(0),
    });
    let sink = FileSink {
        tx,
        shared: shared.clone(),
        status: status_rx,
    };
    let handle = runtime.spawn(run_writer(rx, shared, config, status_tx));
    Ok((sink, FileWriter { handle }))
}

/// Result of writing one batch.
#[derive(Debug, Default)]
struct BatchOutcome {
    /// Log lines written.
    written: u64,
    /// Log lines not written.
    lost: u64,
    /// Lines (lost ones and earlier gaps) whose loss is not marked in the file yet.
    unmarked: u64,
    rotations: u64,
    error: Option<io::Error>,
}

async fn run_writer(
    mut rx: mpsc::Receiver<Entry>,
    shared: Arc<Shared>,
    config: FileConfig,
    status_tx: watch::Sender<WriterStatus>,
) -> WriterStatus {
    let path = config.dir.join(format!("{}.log", config.name));
    let mut file = Some(RotatingFile::new(&config));
    let mut status = WriterStatus::default();
    let mut batch: Vec<Entry> = Vec::new();
    // Lines lost by the writer itself whose marker is still to be written.
    let mut unmarked: u64 = 0;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = config.retry_initial;
    loop {
        let closed = match rx.recv().await {
            Some(entry) => {
                batch.push(entry);
                false
            }
            None => true,
        };
        let mut bytes: usize = batch.iter().map(cost).sum();
        while !closed && bytes < BATCH_BYTES && batch.len() < BATCH_LINES {
            match rx.try_recv() {
                Ok(entry) => {
                    bytes += cost(&entry);
                    batch.push(entry);
                }
                Err(_) => break,
            }
        }
        shared.release(bytes);
        if closed {
            // Mark drops that happened after the last queued line, then one last attempt.
            let missed = shared.pending_drops.swap(0, Ordering::AcqRel);
            if missed > 0 {
                batch.push(Entry::Dropped(missed));
            }
            if batch.is_empty() && unmarked == 0 {
                break;
            }
        } else if retry_at.is_some_and(|at| Instant::now() < at) {
            // Backing off after a failure: drop, count, and keep the queue moving.
            for entry in batch.drain(..) {
                match entry {
                    Entry::Line(_) => {
                        status.write_dropped += 1;
                        unmarked += 1;
                    }
                    Entry::Dropped(n) => unmarked += n,
                }
            }
            status.queue_dropped = shared.total_drops.load(Ordering::Relaxed);
            status_tx.send_replace(status.clone());
            continue;
        }

        let mut writer = file.take().unwrap_or_else(|| RotatingFile::new(&config));
        let entries = std::mem::take(&mut batch);
        let marker = unmarked;
        let (batch_lines, batch_weight) = (count_lines(&entries), weight(&entries));
        let job = tokio::task::spawn_blocking(move || {
            let outcome = writer.write_batch(marker, &entries);
            (writer, entries, outcome)
        });
        let outcome = match job.await {
            Ok((writer, mut entries, outcome)) => {
                file = Some(writer);
                entries.clear();
                batch = entries;
                outcome
            }
            Err(e) => BatchOutcome {
                // The file state went with the failed job; it is reopened next time.
                lost: batch_lines,
                unmarked: marker + batch_weight,
                error: Some(io::Error::other(format!("log writer job failed: {e}"))),
                ..BatchOutcome::default()
            },
        };
        status.written_lines += outcome.written;
        status.write_dropped += outcome.lost;
        status.rotations += outcome.rotations;
        unmarked = outcome.unmarked;
        match outcome.error {
            None => {
                if status.failing {
                    tracing::info!(file = %path.display(), "log file writable again");
                }
                status.failing = false;
                retry_at = None;
                backoff = config.retry_initial;
            }
            Some(e) => {
                if !status.failing {
                    tracing::warn!(
                        file = %path.display(),
                        error = %e,
                        "cannot write log file; dropping lines and retrying with backoff"
                    );
                } else {
                    tracing::debug!(file = %path.display(), error = %e, "log file still failing");
                }
                status.failing = true;
                status.write_errors += 1;
                status.last_error = Some(e.to_string());
                retry_at = Some(Instant::now() + backoff);
                backoff = backoff.saturating_mul(2).min(config.retry_max);
            }
        }
        status.queue_dropped = shared.total_drops.load(Ordering::Relaxed);
        status_tx.send_replace(status.clone());
        if closed {
            break;
        }
    }
    status.queue_dropped = shared.total_drops.load(Ordering::Relaxed);
    status_tx.send_replace(status.clone());
    status
}

/// The blocking side: `name.log` and its rotated predecessors.
///
/// The directory may belong to the service's user (a service writing its own logs next to
/// ours), who can then replace `name.log` by anything: a symlink to a file only root may
/// write, a hard link to one, a FIFO that blocks whoever opens it. So every name is resolved
/// relative to a descriptor of the directory, the file is opened with `O_NOFOLLOW` (and
/// `O_NONBLOCK`, so a FIFO cannot hang the open), and anything but a regular file (or a FIFO,
/// for a log shipper) with a single link, owned by the supervisor's own user, is refused: the
/// service cannot create files in the supervisor's name. A file it creates is 0640.
#[derive(Debug)]
struct RotatingFile {
    dir_path: PathBuf,
    /// `name.log`, relative to the directory.
    base: String,
    max: u64,
    keep: usize,
    /// The directory, open while the file is.
    dir: Option<OwnedFd>,
    file: Option<File>,
    /// Size of `name.log` as far as we know (what we wrote since opening it).
    size: u64,
    /// A failed write left a partial record: start the next write on a fresh line.
    broken_line: bool,
    /// Scratch space for formatting one record.
    record: String,
}

impl RotatingFile {
    fn new(config: &FileConfig) -> Self {
        Self {
            dir_path: config.dir.clone(),
            base: format!("{}.log", config.name),
            max: config.max_file_bytes,
            keep: config.keep_files,
            dir: None,
            file: None,
            size: 0,
            broken_line: false,
            record: String::new(),
        }
    }

    fn rotated(&self, index: usize) -> String {
        format!("{}.{index}", self.base)
    }

    fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let dir = match self.dir.take() {
                Some(dir) => dir,
                None => open(
                    None,
                    &self.dir_path,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                )?,
            };
            let fd = open(
                Some(&dir),
                Path::new(&self.base),
                OFlag::O_WRONLY
                    | OFlag::O_APPEND
                    | OFlag::O_CREAT
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_CLOEXEC,
            )
            .map_err(|e| match e.raw_os_error() {
                // O_NOFOLLOW on a symlink; O_NONBLOCK on a FIFO nobody reads.
                Some(libc::ELOOP) => self.refused("a symbolic link"),
                Some(libc::ENXIO) => self.refused("a FIFO nobody reads"),
                _ => e,
            })?;
            let file = File::from(fd);
            let meta = file.metadata()?;
            let fifo = meta.file_type().is_fifo();
            if !meta.file_type().is_file() && !fifo {
                return Err(self.refused("not a regular file"));
            }
            if meta.uid() != geteuid().as_raw() {
                return Err(self.refused("owned by another user"));
            }
            if meta.nlink() != 1 {
                return Err(self.refused("a file with other hard links"));
            }
            if fifo {
                // Our own FIFO (a log shipper reading it): writes wait for the reader, like a
                // slow disk, on the blocking pool.
                nix::fcntl::fcntl(
                    file.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND),
                )?;
            }
            self.size = meta.len();
            self.dir = Some(dir);
            self.file = Some(file);
        }
        Ok(())
    }

    /// Why `name.log` is not written to: someone with access to the directory replaced it.
    fn refused(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is {what}: refusing to write to it (log files must be regular files of the \
                 supervisor's user; remove it to resume logging)",
                self.dir_path.join(&self.base).display()
            ),
        )
    }

    /// Writes `data` fully or fails, closing the file on failure so the next attempt
    /// reopens it (the directory may have been recreated meanwhile).
    fn write_out(&mut self, data: &[u8]) -> io::Result<()> {
        if self.broken_line {
            self.write_raw(b"\n")?;
            self.broken_line = false;
        }
        self.write_raw(data)
    }

    fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "log file not open"));
        };
        let mut done = 0;
        while done < data.len() {
            match file.write(&data[done..]) {
                Ok(0) => {
                    self.fail_after(done);
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_after(done);
                    return Err(e);
                }
            }
        }
        self.size += data.len() as u64;
        Ok(())
    }

    fn fail_after(&mut self, written: usize) {
        self.size += written as u64;
        if written > 0 {
            self.broken_line = true;
        }
        self.file = None;
        self.dir = None;
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let result = self.shift();
        if result.is_err() {
            self.dir = None;
        }
        result?;
        self.broken_line = false;
        self.ensure_open()
    }

    /// Renames `name.log.N` to `.N+1` (dropping the last) and `name.log` to `.1`, inside the
    /// directory we opened: renaming a planted symlink moves the link, never its target.
    fn shift(&mut self) -> io::Result<()> {
        if self.dir.is_none() {
            self.dir = Some(open(
                None,
                &self.dir_path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            )?);
        }
        let dir = self.dir.as_ref().expect("opened above");
        let ignore_missing = |result: nix::Result<()>| match result {
            Err(nix::errno::Errno::ENOENT) | Ok(()) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        };
        if self.keep == 1 {
            ignore_missing(unlinkat(
                Some(dir.as_raw_fd()),
                self.base.as_str(),
                UnlinkatFlags::NoRemoveDir,
            ))?;
        } else {
            for index in (1..self.keep - 1).rev() {
                ignore_missing(renameat(
                    Some(dir.as_raw_fd()),
                    self.rotated(index).as_str(),
                    Some(dir.as_raw_fd()),
                    self.rotated(index + 1).as_str(),
                ))?;
            }
            ignore_missing(renameat(
                Some(dir.as_raw_fd()),
                self.base.as_str(),
                Some(dir.as_raw_fd()),
                self.rotated(1).as_str(),
            ))?;
        }
        Ok(())
    }

    /// Formats one record into `self.record`, cut to the file size limit.
    fn format(&mut self, time: SystemTime, stream: &str, instance: Option<u64>, text: &str) {
        let record = &mut self.record;
        record.clear();
        write_rfc3339_millis(record, time);
        record.push(' ');
        record.push_str(stream);
        // Writing to a String cannot fail.
        let _ = match instance {
            Some(instance) => write!(record, " {instance} "),
            None => write!(record, " - "),
        };
        if text.contains('\n') {
            record.push_str(&text.replace('\n', "\\n"));
        } else {
            record.push_str(text);
        }
        let limit = usize::try_from(self.max).unwrap_or(usize::MAX) - 1;
        if record.len() > limit {
            let mut end = limit;
            while !record.is_char_boundary(end) {
                end -= 1;
            }
            record.truncate(end);
        }
        record.push('\n');
    }

    /// Writes a batch, rotating as needed. `marker` lines were lost before this batch and
    /// are marked first.
    fn write_batch(&mut self, marker: u64, entries: &[Entry]) -> BatchOutcome {
        let total_lines = count_lines(entries);
        let total_weight = marker + weight(entries);
        let mut out = BatchOutcome::default();
        // What is in `buf` (lines, weight) and what reached the disk.
        let (mut buf_lines, mut buf_weight, mut done_weight) = (0u64, 0u64, 0u64);
        let mut buf: Vec<u8> = Vec::new();
        let fail = |out: &mut BatchOutcome, e: io::Error, done_weight: u64| {
            out.lost = total_lines - out.written;
            out.unmarked = total_weight - done_weight;
            out.error = Some(e);
        };
        if let Err(e) = self.ensure_open() {
            self.file = None;
            fail(&mut out, e, 0);
            return out;
        }
        let now = SystemTime::now();
        let marker_entry = (marker > 0).then_some(Entry::Dropped(marker));
        for entry in marker_entry.iter().chain(entries) {
            let (is_line, weight) = match entry {
                Entry::Line(line) => {
                    self.format(
                        line.time,
                        line.stream.as_str(),
                        Some(line.instance),
                        &line.text,
                    );
                    (1, 1)
                }
                Entry::Dropped(n) => {
                    let text = format!("[processcontrol: {n} lines dropped]");
                    self.format(now, "-", None, &text);
                    (0, *n)
                }
            };
            let pending = self.size + buf.len() as u64 + u64::from(self.broken_line);
            if pending + self.record.len() as u64 > self.max && pending > 0 {
                if let Err(e) = self.write_out(&buf) {
                    fail(&mut out, e, done_weight);
                    return out;
                }
                out.written += buf_lines;
                done_weight += buf_weight;
                buf.clear();
                (buf_lines, buf_weight) = (0, 0);
                if let Err(e) = self.rotate() {
                    self.file = None;
                    fail(&mut out, e, done_weight);
                    return out;
                }
                out.rotations += 1;
            }
            buf.extend_from_slice(self.record.as_bytes());
            buf_lines += is_line;
            buf_weight += weight;
        }
        if let Err(e) = self.write_out(&buf) {
            fail(&mut out, e, done_weight);
            return out;
        }
        out.written += buf_lines;
        out
    }
}

/// `openat(dir, path, flags, 0640)`, or `open` without a directory.
fn open(dir: Option<&OwnedFd>, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let mode = Mode::from_bits_truncate(0o640);
    let raw = match dir {
        Some(dir) => nix::fcntl::openat(Some(dir.as_raw_fd()), path, flags, mode)?,
        None => nix::fcntl::open(path, flags, mode)?,
    };
    // SAFETY: `raw` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_settings_that_would_panic_or_spin() {
        let ok = FileConfig::new("/tmp", "web");
        assert!(ok.validate().is_ok());
        for bad in [
            FileConfig {
                name: "../etc".into(),
                ..ok.clone()
            },
            FileConfig {
                name: String::new(),
                ..ok.clone()
            },
            FileConfig {
                queue_lines: 0,
                ..ok.clone()
            },
            FileConfig {
                keep_files: 0,
                ..ok.clone()
            },
            FileConfig {
                max_file_bytes: 10,
                ..ok.clone()
            },
            FileConfig {
                retry_initial: Duration::ZERO,
                ..ok.clone()
            },
            FileConfig {
                retry_max: Duration::MAX,
                ..ok.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(LogError::InvalidConfig(_))));
        }
    }

    #[test]
    fn rotated_names_append_an_index() {
        let file = RotatingFile::new(&FileConfig::new("/logs", "web"));
        assert_eq!(file.rotated(2), "web.log.2");
    }
}
