//! Where `run --events` goes: a file, or stdout (`-`).
//!
//! Lines go through a bounded queue to a thread of their own, so a stalled reader (a paused
//! pager, a full pipe) never blocks the runtime that handles signals and the program; when the
//! queue is full, events are dropped and counted in a warning.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

use tokio::sync::oneshot;

/// How long the end of `run` waits for the events output to take the last events; a reader
/// that has stalled for good must not keep the supervisor (and a container) from exiting.
const DRAIN: Duration = Duration::from_secs(5);

/// Events queued for the writer thread at most.
const QUEUE: usize = 4096;

/// The `--events` output.
pub struct EventsOut {
    tx: SyncSender<String>,
    done: oneshot::Receiver<()>,
    dropped: u64,
}

/// Fires once the reader of the events is gone (a broken pipe: `| head -3`).
pub struct ReaderGone(Option<oneshot::Receiver<()>>);

impl ReaderGone {
    /// Waits until the reader leaves; never returns if it does not (or after it fired once).
    pub async fn wait(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                let left = rx.await.is_ok();
                self.0 = None;
                if left {
                    return;
                }
                std::future::pending().await
            }
            None => std::future::pending().await,
        }
    }
}

impl EventsOut {
    /// Opens `path` (`-` for stdout) and starts its writer; a one-line error names the flag.
    pub fn open(path: Option<&Path>) -> Result<(Option<EventsOut>, ReaderGone), String> {
        let out: Box<dyn Write + Send> = match path {
            None => return Ok((None, ReaderGone(None))),
            Some(p) if p == Path::new("-") => Box::new(std::io::stdout()),
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        format!(
                            "invalid value '{}' for '--events <PATH|->': {e}",
                            p.display()
                        )
                    })?,
            ),
        };
        let (out, gone) = EventsOut::start(out)
            .map_err(|e| format!("cannot start the events output thread: {e}"))?;
        Ok((Some(out), gone))
    }

    fn start(mut out: Box<dyn Write + Send>) -> std::io::Result<(EventsOut, ReaderGone)> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let (gone_tx, gone) = oneshot::channel();
        std::thread::Builder::new()
            .name("processcontrol-events".into())
            .spawn(move || {
                let mut gone_tx = Some(gone_tx);
                while let Ok(first) = rx.recv() {
                    let mut written = writeln!(out, "{first}");
                    for line in rx.try_iter() {
                        written = written.and_then(|()| writeln!(out, "{line}"));
                    }
                    match written.and_then(|()| out.flush()) {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                            if let Some(tx) = gone_tx.take() {
                                let _ = tx.send(());
                            }
                            break;
                        }
                        // Other errors (a full disk) must not stop the supervision.
                        _ => {}
                    }
                }
                let _ = done_tx.send(());
            })?;
        let out = EventsOut {
            tx,
            done,
            dropped: 0,
        };
        Ok((out, ReaderGone(Some(gone))))
    }

    /// Queues one line without waiting.
    pub fn send(&mut self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                // Once per power of two: a stalled reader does not turn into a flood of
                // warnings.
                if self.dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped = self.dropped,
                        "events output is stalled: events dropped"
                    );
                }
            }
            // The reader left; `ReaderGone` says so.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (a bounded time) until every queued event is written.
    pub async fn finish(self) {
        let EventsOut { tx, done, dropped } = self;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "events were dropped while the events output was stalled"
            );
        }
        drop(tx);
        if tokio::time::timeout(DRAIN, done).await.is_err() {
            tracing::warn!("events output stalled: the last events may be missing");
        }
    }
}
