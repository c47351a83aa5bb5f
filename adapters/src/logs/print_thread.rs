//! The one thread that writes the foreground printer's lines to the supervisor's own stdout
//! and stderr.
//!
//! A terminal or pipe can stall for good (a paused pager, `up | less` left open, a stuck
//! container log driver). A blocking write there must never sit on a runtime worker: the
//! control socket, signal handling and every other process share those workers. So writes
//! happen here, on a thread of their own, fed by the printers' bounded queue; when this
//! thread is stuck the queue fills and the [`Printer`](super::Printer)s drop lines, counted,
//! and mark the gap with `[processcontrol: N lines dropped]` once output flows again.

use std::io;

use tokio::sync::mpsc;

use super::own_output::{write_all, written, STDERR};
use super::{PrintLine, Stream};

/// Most bytes gathered from the queue into one `write`.
const BATCH_BYTES: usize = 64 << 10;

/// Starts the thread; it ends when every sender of `lines` is gone.
pub fn spawn_print_thread(mut lines: mpsc::Receiver<PrintLine>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("processcontrol-print".into())
        .spawn(move || {
            let mut batch = Batch::default();
            while let Some(first) = lines.blocking_recv() {
                batch.push(&first);
                while batch.bytes.len() < BATCH_BYTES {
                    match lines.try_recv() {
                        Ok(next) => batch.push(&next),
                        Err(_) => break,
                    }
                }
                batch.flush();
            }
        })
        .map(drop)
}

/// Lines of one stream waiting to be written together.
#[derive(Default)]
struct Batch {
    stream: Option<Stream>,
    bytes: Vec<u8>,
    lines: u64,
}

impl Batch {
    fn push(&mut self, item: &PrintLine) {
        if self.stream.is_some_and(|s| s != item.line.stream) {
            // Keep the order in which lines were printed across the two streams.
            self.flush();
        }
        self.stream = Some(item.line.stream);
        self.bytes.extend_from_slice(item.source.as_bytes());
        self.bytes.extend_from_slice(item.line.text.as_bytes());
        self.bytes.push(b'\n');
        self.lines += 1;
    }

    fn flush(&mut self) {
        // A closed stdout is not worth stopping anything for: the lines are still in the ring
        // and the log file.
        let _ = match self.stream {
            Some(Stream::Stdout) => write_all(io::stdout(), &self.bytes),
            Some(Stream::Stderr) => {
                let _one_writer = STDERR.lock().unwrap_or_else(|p| p.into_inner());
                write_all(io::stderr(), &self.bytes)
            }
            None => Ok(()),
        };
        written(std::mem::take(&mut self.lines));
        self.bytes.clear();
        if self.bytes.capacity() > BATCH_BYTES * 2 {
            self.bytes.shrink_to(BATCH_BYTES);
        }
    }
}
