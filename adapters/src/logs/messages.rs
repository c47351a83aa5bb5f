//! The supervisor's own lines on stderr (its narration, its log, its errors), written by a
//! thread of their own.
//!
//! They are said from runtime workers (the group's owner, `run`'s loop, any task that logs a
//! warning), and stderr can stall like stdout (`up 2>&1 | less`, a stuck container log
//! driver): a blocking write there would stop the control socket, signals and every process
//! with it. So they go through a bounded queue; while stderr is stalled, what the queue cannot
//! take is dropped and counted, and `[processcontrol: N lines dropped]` marks the gap once
//! stderr flows again.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;

use super::own_output::{not_queued, queuing, write_all, written, STDERR};

/// Lines waiting for the thread at most.
const QUEUE: usize = 1024;
/// Most bytes gathered from the queue into one `write`.
const BATCH_BYTES: usize = 64 << 10;

static QUEUED: OnceLock<Option<SyncSender<Vec<u8>>>> = OnceLock::new();
/// Lines dropped since the last marker.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Queues `bytes` (whole lines, newline included) for stderr without waiting.
pub fn write_stderr(bytes: Vec<u8>) {
    let Some(tx) = QUEUED.get_or_init(start) else {
        // No thread could be started (out of memory or threads): write here, as a last
        // resort, rather than lose the supervisor's errors.
        let _one_writer = STDERR.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_all(io::stderr(), &bytes);
        return;
    };
    let missed = DROPPED.swap(0, Ordering::AcqRel);
    if missed > 0
        && !offer(
            tx,
            format!("[processcontrol: {missed} lines dropped]\n").into(),
        )
    {
        DROPPED.fetch_add(missed + 1, Ordering::AcqRel);
        return;
    }
    if !offer(tx, bytes) {
        DROPPED.fetch_add(1, Ordering::AcqRel);
    }
}

fn offer(tx: &SyncSender<Vec<u8>>, bytes: Vec<u8>) -> bool {
    queuing();
    let taken = tx.try_send(bytes).is_ok();
    if !taken {
        not_queued();
    }
    taken
}

fn start() -> Option<SyncSender<Vec<u8>>> {
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("processcontrol-stderr".into())
        .spawn(move || serve(&rx))
        .ok()?;
    Some(tx)
}

fn serve(rx: &Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.extend_from_slice(&first);
        let mut lines = 1;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    batch.extend_from_slice(&next);
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        {
            let _one_writer = STDERR.lock().unwrap_or_else(|p| p.into_inner());
            // A closed stderr is not worth stopping anything for.
            let _ = write_all(io::stderr(), &batch);
        }
        written(lines);
        batch.clear();
        if batch.capacity() > BATCH_BYTES * 2 {
            batch.shrink_to(BATCH_BYTES);
        }
    }
}

/// A writer for the supervisor's log (`tracing`): each event is formatted into it, then
/// queued as a whole when it is dropped.
#[derive(Debug, Default)]
pub struct StderrLine(Vec<u8>);

impl io::Write for StderrLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for StderrLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_stderr(std::mem::take(&mut self.0));
        }
    }
}
