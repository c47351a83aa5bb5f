//! Log capture: the child's stdout and stderr, turned into timestamped lines.
//!
//! The supervisor must show what a process said without ever letting a chatty or stuck
//! process hurt it, and without letting a slow disk or a slow reader hurt the process.
//! So every store here is bounded and every hand-off is non-blocking:
//!
//! - [`LogRing`] keeps the last lines of one process in memory (line count *and* byte
//!   budget), allocates nothing while the process is silent, and feeds live followers
//!   through a broadcast channel that reports missed lines instead of applying back-pressure.
//! - [`Capture`] drains one pipe line by line until EOF and fans every line out to the ring,
//!   an optional foreground [`Printer`] and an optional [`FileSink`]; it never waits on them.
//! - [`spawn_file_writer`] appends to `name.log` with size-based rotation behind a bounded
//!   queue; when the disk is slow or full, lines are dropped and counted, and a
//!   `[processcontrol: N lines dropped]` marker is written where the gap is.
//!
//! - [`Copier`] copies a child's bytes, as read, to the supervisor's stdout and stderr with
//!   backpressure (for `run`'s one program when a log file must see its output too).
//! - [`spawn_print_thread`] and [`write_stderr`] write the printers' lines and the
//!   supervisor's own lines to its stdout and stderr from threads of their own, so a stalled
//!   terminal or pipe never blocks a runtime worker; [`drain_output`] writes what is left at
//!   exit.
//!
//! This module knows nothing of the core's types: a process is a ring plus an instance number.

mod capture;
mod copy;
mod line;
mod messages;
mod own_output;
mod print_thread;
mod ring;
mod rotate;
pub(crate) mod time;

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use capture::{Capture, CaptureReport, EchoFormat, PrintLine, Printer};
pub use copy::{copies_finished, Copier};
pub use messages::{write_stderr, StderrLine};
pub use own_output::drain_output;
pub use print_thread::spawn_print_thread;
pub use ring::{FollowEvent, Follower, LogRing, RingConfig, RingStats};
pub use rotate::{spawn_file_writer, FileConfig, FileSink, FileWriter, WriterStatus};

/// Which pipe a line came from, so readers can tell errors from normal output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

impl Stream {
    /// The lowercase name used in JSON and in log files, kept stable for grep and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of output, as a human will read it later.
///
/// In JSON, `time` is an RFC 3339 UTC timestamp with milliseconds
/// (`"2024-05-01T12:00:00.123Z"`): readable by people and by every JSON consumer, and
/// precise enough to order lines of one stream. Times outside years 0000..=9999 are
/// clamped to that range when formatted. Deserialization accepts any RFC 3339 offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Wall-clock time at which the first byte of the line was read; for humans, not for
    /// measuring durations (the clock may jump).
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    pub time: SystemTime,
    /// The pipe the line was read from.
    pub stream: Stream,
    /// Which run of the process wrote it, so lines of a previous run stay distinguishable
    /// after a restart.
    pub instance: u64,
    /// The line without its newline (and without a trailing `\r`); invalid UTF-8 replaced
    /// by U+FFFD; capped in length with a `[processcontrol: line of N bytes truncated]` marker.
    pub text: String,
}

fn serialize_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time::format_rfc3339_millis(*time))
}

fn deserialize_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    time::parse_rfc3339(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {text:?}")))
}

/// Formats a wall-clock time the way log lines and files show it (RFC 3339, UTC, ms), so
/// callers printing lines (the foreground printer) match the files exactly.
pub fn format_time(time: SystemTime) -> String {
    time::format_rfc3339_millis(time)
}

/// Why a log component could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A configuration value would break a bound or make a component panic; nothing started.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// A component that runs as a task was started outside a Tokio runtime.
    #[error("log capture needs a Tokio runtime: {0}")]
    NoRuntime(String),
    /// A background task panicked or was cancelled (runtime shutting down) before reporting.
    #[error("log task failed: {0}")]
    TaskFailed(String),
    /// Reading the child's pipe failed; capture stopped after keeping what it had read.
    #[error("reading {stream} failed: {source}")]
    Read {
        /// The pipe that failed.
        stream: Stream,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
