//! Copying a child's output byte for byte to the supervisor's own stdout and stderr, while it
//! is also captured for the ring and the log file (`run` with a log file).
//!
//! Printing captured lines drops what a slow reader cannot take and rewrites what is not a
//! line of text; a program's own output through `run` must arrive as it was written. So the
//! bytes read from the pipe are queued, as read, for a thread of their own that writes them
//! to the descriptor; when that queue is full the capture waits, so the child waits, exactly
//! as if it wrote to the descriptor itself. Nothing blocks a runtime worker.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::own_output::{not_queued, queuing, write_all, written, STDERR};
use super::Stream;

/// Chunks (of up to 64 KiB each) waiting for the thread.
const QUEUE: usize = 16;

/// One process's copy to the supervisor's stdout and stderr. Clones share the thread.
#[derive(Clone, Debug)]
pub struct Copier {
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
    /// The program's stdout goes to the supervisor's stderr (`run --events -`).
    stdout_to_stderr: bool,
}

/// Captures that copy and have not reached the end of their pipe yet, process-wide.
static COPYING: AtomicUsize = AtomicUsize::new(0);
static COPIED: Notify = Notify::const_new();

impl Copier {
    /// Starts the writer thread; it ends when every clone is gone.
    pub fn start(stdout_to_stderr: bool) -> io::Result<Copier> {
        let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(QUEUE);
        std::thread::Builder::new()
            .name("processcontrol-copy".into())
            .spawn(move || {
                while let Some((stream, bytes)) = rx.blocking_recv() {
                    // A closed stdout is not worth stopping anything for; the rest is still
                    // in the ring and the log file.
                    let _ = match stream {
                        Stream::Stdout => write_all(io::stdout(), &bytes),
                        Stream::Stderr => {
                            let _one_writer = STDERR.lock().unwrap_or_else(|p| p.into_inner());
                            write_all(io::stderr(), &bytes)
                        }
                    };
                    written(1);
                }
            })?;
        Ok(Copier {
            tx,
            stdout_to_stderr,
        })
    }

    /// Queues the bytes of `stream` as read, waiting while the queue is full.
    pub(super) async fn copy(&self, stream: Stream, bytes: &[u8]) {
        let stream = match stream {
            Stream::Stdout if self.stdout_to_stderr => Stream::Stderr,
            other => other,
        };
        queuing();
        if self.tx.send((stream, bytes.to_vec())).await.is_err() {
            not_queued();
        }
    }

    /// Counts a capture as copying until the guard is dropped (at the end of its pipe).
    pub(super) fn copying() -> CopyingGuard {
        COPYING.fetch_add(1, Ordering::AcqRel);
        CopyingGuard
    }
}

/// Held by a capture while it copies.
pub(super) struct CopyingGuard;

impl Drop for CopyingGuard {
    fn drop(&mut self) {
        if COPYING.fetch_sub(1, Ordering::AcqRel) == 1 {
            COPIED.notify_waiters();
        }
    }
}

/// Waits until every copying capture has read its pipe to the end (the program and whatever
/// it started have closed their output), for at most `limit`; `false` if some had not. The
/// bytes are then queued: [`super::drain_output`] writes them before exit.
pub async fn copies_finished(limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            let copied = COPIED.notified();
            tokio::pin!(copied);
            copied.as_mut().enable();
            if COPYING.load(Ordering::Acquire) == 0 {
                return;
            }
            copied.await;
        }
    })
    .await
    .is_ok()
}
