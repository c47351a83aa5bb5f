//! Draining one pipe of a child into the ring, the printer and the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::copy::Copier;
use super::line::{LineSplitter, RawLine};
use super::ring::LogRing;
use super::rotate::FileSink;
use super::{LogError, LogLine, Stream};

/// First size of the read buffer: small, because most supervised processes are quiet and
/// hundreds of them may be waiting on their pipes at once.
const MIN_READ_BUFFER: usize = 128;
/// Largest read buffer, reached only while a child floods us.
const MAX_READ_BUFFER: usize = 64 << 10;

/// A line for the foreground printer, tagged with the name the printer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintLine {
    /// The process name to prefix the line with.
    pub source: Arc<str>,
    /// The line itself.
    pub line: LogLine,
}

/// How echoed lines look: `up` tags them with their process's name, padded to the longest,
/// coloured on a terminal, `|` after a stdout line's name and `!` after a stderr line's
/// (`web    | GET /`, `worker ! warning`), and with the time on request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoFormat {
    /// The name to tag lines with; none prints lines as they are.
    pub name: Option<Arc<str>>,
    /// Pad names to this width (the longest name of the group).
    pub width: usize,
    /// Colour the name (only on a terminal).
    pub colour: bool,
    /// Start each line with its time (`12:21:05.123`).
    pub timestamps: bool,
    /// Print stdout lines on stderr too, where stdout carries something else
    /// (`run --events -`).
    pub stdout_to_stderr: bool,
}

impl EchoFormat {
    /// The text printed before a line: time, name and stream marker.
    pub fn prefix(&self, line: &LogLine) -> String {
        let mut out = String::new();
        if self.timestamps {
            let time = super::time::format_rfc3339_millis(line.time);
            // `2026-12-03T12:21:05.123Z` -> `12:21:05.123`.
            out.push_str(time.get(11..23).unwrap_or(&time));
            out.push(' ');
        }
        if let Some(name) = &self.name {
            let mark = match line.stream {
                Stream::Stdout => '|',
                Stream::Stderr => '!',
            };
            let padded = format!("{name:<width$} {mark}", width = self.width);
            if self.colour {
                out.push_str(crate::narrate::name_colour(name));
                out.push_str(&padded);
                out.push_str("\x1b[0m ");
            } else {
                out.push_str(&padded);
                out.push(' ');
            }
        }
        out
    }
}

/// Forwards lines to a foreground printer over a bounded channel.
///
/// A terminal can stall (a paused pager, Ctrl-S), and that must not stall the child: when
/// the channel is full, lines are dropped and counted, and the next line that gets through
/// is preceded by a `[processcontrol: N lines dropped]` line. Clones share the counter, so
/// one printer can serve both streams of a process.
#[derive(Debug, Clone)]
pub struct Printer {
    source: Arc<str>,
    format: Option<Arc<EchoFormat>>,
    tx: mpsc::Sender<PrintLine>,
    pending_drops: Arc<AtomicU64>,
    total_drops: Arc<AtomicU64>,
}

impl Printer {
    /// A printer tagging lines with `source` (the process name) and sending them to `tx`.
    pub fn new(source: impl Into<Arc<str>>, tx: mpsc::Sender<PrintLine>) -> Self {
        Self {
            source: source.into(),
            format: None,
            tx,
            pending_drops: Arc::default(),
            total_drops: Arc::default(),
        }
    }

    /// A printer whose lines look as `format` says (the `source` is then made per line).
    pub fn formatted(format: EchoFormat, tx: mpsc::Sender<PrintLine>) -> Self {
        let mut printer = Printer::new("", tx);
        printer.format = Some(Arc::new(format));
        printer
    }

    /// The line as the printer passes it on: tagged by its format, on the stream it says.
    fn print_line(&self, line: LogLine) -> PrintLine {
        let Some(format) = &self.format else {
            return PrintLine {
                source: self.source.clone(),
                line,
            };
        };
        let source = format.prefix(&line).into();
        let mut line = line;
        if format.stdout_to_stderr {
            line.stream = Stream::Stderr;
        }
        PrintLine { source, line }
    }

    /// Offers a line without waiting; `false` if it was dropped.
    pub fn send(&self, line: &LogLine) -> bool {
        let missed = self.pending_drops.swap(0, Ordering::AcqRel);
        if missed > 0 {
            let marker = self.print_line(LogLine {
                time: line.time,
                stream: line.stream,
                instance: line.instance,
                text: format!("[processcontrol: {missed} lines dropped]"),
            });
            super::own_output::queuing();
            if self.tx.try_send(marker).is_err() {
                super::own_output::not_queued();
                self.pending_drops.fetch_add(missed + 1, Ordering::AcqRel);
                self.total_drops.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let item = self.print_line(line.clone());
        super::own_output::queuing();
        if self.tx.try_send(item).is_err() {
            super::own_output::not_queued();
            self.pending_drops.fetch_add(1, Ordering::AcqRel);
            self.total_drops.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Lines this printer (and its clones) dropped so far.
    pub fn dropped(&self) -> u64 {
        self.total_drops.load(Ordering::Relaxed)
    }
}

/// What a capture task did, returned when its pipe reaches EOF or fails.
#[derive(Debug, Default)]
pub struct CaptureReport {
    /// Lines read (including a last line without newline).
    pub lines: u64,
    /// Bytes read from the pipe.
    pub bytes: u64,
    /// Lines cut to the line cap.
    pub truncated: u64,
    /// Lines the printer could not take.
    pub printer_dropped: u64,
    /// Lines the file writer's queue could not take.
    pub file_dropped: u64,
    /// Why reading stopped before EOF, if it did; the lines read before are kept.
    pub error: Option<LogError>,
}

/// The capture of one pipe (stdout or stderr) of one run of a process.
///
/// It reads as fast as the child writes: the ring is a short in-memory push, the printer
/// and the file get `try_send`s that drop rather than wait. So the child can never block
/// on a full pipe because of us (unless a [`Copier`] copies its bytes to a slow reader), and
/// our memory stays bounded by the ring, the queues and one read buffer.
#[derive(Debug)]
pub struct Capture {
    ring: Arc<LogRing>,
    stream: Stream,
    instance: u64,
    printer: Option<Printer>,
    file: Option<FileSink>,
    copier: Option<Copier>,
}

impl Capture {
    /// Captures into `ring`, tagging lines with `stream` and the run number `instance`.
    pub fn new(ring: Arc<LogRing>, stream: Stream, instance: u64) -> Self {
        Self {
            ring,
            stream,
            instance,
            printer: None,
            file: None,
            copier: None,
        }
    }

    /// Also forwards every line to a foreground printer.
    pub fn with_printer(mut self, printer: Printer) -> Self {
        self.printer = Some(printer);
        self
    }

    /// Also copies every byte, as read, to the supervisor's own stdout or stderr; unlike the
    /// rest of the capture, this waits (and so makes the child wait) for a slow reader.
    pub fn with_copier(mut self, copier: Copier) -> Self {
        self.copier = Some(copier);
        self
    }

    /// Also appends every line to a log file.
    pub fn with_file(mut self, file: FileSink) -> Self {
        self.file = Some(file);
        self
    }

    /// Runs the capture on the current Tokio runtime; fails only outside a runtime.
    pub fn spawn<R>(self, reader: R) -> Result<JoinHandle<CaptureReport>, LogError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| LogError::NoRuntime(e.to_string()))?;
        Ok(handle.spawn(self.run(reader)))
    }

    /// Reads `reader` to EOF (or to its first error), then reports.
    ///
    /// Not an `async fn`: those keep their arguments twice (as passed, and as moved into the
    /// body), and hundreds of these futures wait on quiet pipes at once.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    pub fn run<R: AsyncRead + Unpin>(
        self,
        mut reader: R,
    ) -> impl std::future::Future<Output = CaptureReport> {
        async move {
            let _copying = self.copier.as_ref().map(|_| Copier::copying());
            let mut report = CaptureReport::default();
            let mut splitter = LineSplitter::new(self.ring.config().max_line_bytes);
            let mut buf = vec![0u8; MIN_READ_BUFFER];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        report.error = Some(LogError::Read {
                            stream: self.stream,
                            source,
                        });
                        break;
                    }
                };
                report.bytes += n as u64;
                if let Some(copier) = &self.copier {
                    copier.copy(self.stream, &buf[..n]).await;
                }
                let now = SystemTime::now();
                splitter.feed(&buf[..n], now, &mut |raw| self.emit(raw, &mut report));
                // Grow while the child floods, shrink back when it calms down, so a quiet
                // process holds a small buffer.
                if n == buf.len() && buf.len() < MAX_READ_BUFFER {
                    buf.resize(buf.len() * 2, 0);
                } else if n < buf.len() / 8 && buf.len() > MIN_READ_BUFFER {
                    buf.truncate(buf.len() / 2);
                    buf.shrink_to_fit();
                }
            }
            splitter.finish(&mut |raw| self.emit(raw, &mut report));
            report
        }
    }

    fn emit(&self, raw: RawLine, report: &mut CaptureReport) {
        let line = LogLine {
            time: raw.time,
            stream: self.stream,
            instance: self.instance,
            text: raw.text,
        };
        report.lines += 1;
        report.truncated += u64::from(raw.truncated);
        if let Some(file) = &self.file {
            if !file.send(&line) {
                report.file_dropped += 1;
            }
        }
        if let Some(printer) = &self.printer {
            if !printer.send(&line) {
                report.printer_dropped += 1;
            }
        }
        self.ring.push(line);
    }
}
