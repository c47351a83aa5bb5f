//! The in-memory tail of one process's output.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::line::{cap_text, MIN_LINE_BYTES};
use super::{LogError, LogLine};

/// Bounds of one [`LogRing`]; whatever the child writes, the ring holds at most
/// `max_lines` lines and `max_bytes` bytes of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Most lines kept; older lines are evicted first.
    pub max_lines: usize,
    /// Most bytes of line text kept (the sum of `text.len()`); the per-line overhead
    /// (about 56 bytes) is bounded by `max_lines` instead.
    pub max_bytes: usize,
    /// Longest line text; longer lines are cut and end with a truncation marker. At
    /// least 128 and at most `max_bytes`, so one line always fits.
    pub max_line_bytes: usize,
    /// Lines buffered for live followers before the slowest one starts missing lines.
    /// While a follower exists, up to this many already-evicted lines may stay alive in the
    /// broadcast buffer, so memory is bounded by `follow_capacity * max_line_bytes` on top
    /// of `max_bytes`.
    pub follow_capacity: usize,
}

impl Default for RingConfig {
    /// 1000 lines, 1 MiB of text, 16 KiB per line, 256 lines of follow buffer.
    fn default() -> Self {
        Self {
            max_lines: 1000,
            max_bytes: 1 << 20,
            max_line_bytes: 16 << 10,
            follow_capacity: 256,
        }
    }
}

/// Upper bound of `follow_capacity`: Tokio's broadcast panics on huge capacities, and a
/// follower that is this far behind should resynchronise from `tail` anyway.
const MAX_FOLLOW_CAPACITY: usize = 1 << 16;

impl RingConfig {
    /// Checks the bounds before anything allocates, so a bad setting is an error value
    /// rather than a panic deep inside a capture task.
    pub fn validate(&self) -> Result<(), LogError> {
        let fail = |why: String| Err(LogError::InvalidConfig(why));
        if self.max_lines == 0 {
            return fail("ring max_lines must be at least 1".into());
        }
        if self.max_line_bytes < MIN_LINE_BYTES {
            return fail(format!(
                "ring max_line_bytes must be at least {MIN_LINE_BYTES}, got {}",
                self.max_line_bytes
            ));
        }
        if self.max_bytes < self.max_line_bytes {
            return fail(format!(
                "ring max_bytes ({}) must be at least max_line_bytes ({})",
                self.max_bytes, self.max_line_bytes
            ));
        }
        if !(1..=MAX_FOLLOW_CAPACITY).contains(&self.follow_capacity) {
            return fail(format!(
                "ring follow_capacity must be within 1..={MAX_FOLLOW_CAPACITY}, got {}",
                self.follow_capacity
            ));
        }
        Ok(())
    }
}

/// Counters of a ring, for status displays and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// Lines currently held.
    pub lines: usize,
    /// Bytes of text currently held.
    pub bytes: usize,
    /// Lines ever pushed.
    pub pushed: u64,
    /// Lines pushed out by the bounds.
    pub evicted: u64,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<LogLine>,
    bytes: usize,
    pushed: u64,
    evicted: u64,
    /// Created on the first `subscribe` and dropped when nobody follows any more: a
    /// broadcast channel allocates its whole buffer up front, which idle rings must not pay.
    follow: Option<broadcast::Sender<Arc<LogLine>>>,
}

/// The last lines of one supervised process, shared by its capture tasks and its readers.
///
/// An empty ring owns no heap memory; it grows as lines arrive, up to its bounds. All
/// operations take a short, non-async lock and never wait for readers.
#[derive(Debug)]
pub struct LogRing {
    config: RingConfig,
    inner: Mutex<Inner>,
}

impl Default for LogRing {
    /// A ring with [`RingConfig::default`] bounds.
    fn default() -> Self {
        Self {
            config: RingConfig::default(),
            inner: Mutex::default(),
        }
    }
}

impl LogRing {
    /// A ring with the given bounds; fails if they are inconsistent.
    pub fn new(config: RingConfig) -> Result<Self, LogError> {
        config.validate()?;
        Ok(Self {
            config,
            inner: Mutex::default(),
        })
    }

    /// The bounds, so capture tasks cut lines at the same length as the ring.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The lock, even if a thread panicked while holding it: the ring's state is a plain
    /// queue that every operation leaves consistent, so it is still usable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a line, evicting the oldest ones beyond the bounds, and hands it to live
    /// followers. Text longer than `max_line_bytes` is cut with a marker.
    pub fn push(&self, mut line: LogLine) {
        if line.text.len() > self.config.max_line_bytes {
            line.text = cap_text(std::mem::take(&mut line.text), self.config.max_line_bytes);
        }
        let mut inner = self.lock();
        if let Some(tx) = &inner.follow {
            if tx.receiver_count() == 0 {
                inner.follow = None;
            } else {
                // Fails only without receivers, which was just ruled out; never blocks.
                let _ = tx.send(Arc::new(line.clone()));
            }
        }
        inner.bytes += line.text.len();
        inner.pushed += 1;
        inner.lines.push_back(line);
        while inner.lines.len() > self.config.max_lines || inner.bytes > self.config.max_bytes {
            match inner.lines.pop_front() {
                Some(old) => {
                    inner.bytes -= old.text.len();
                    inner.evicted += 1;
                }
                None => break,
            }
        }
    }

    /// The last `n` lines (fewer if the ring holds fewer), oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let inner = self.lock();
        let skip = inner.lines.len().saturating_sub(n);
        inner.lines.iter().skip(skip).cloned().collect()
    }

    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether the ring holds no line (a silent process).
    pub fn is_empty(&self) -> bool {
        self.lock().lines.is_empty()
    }

    /// Current counters.
    pub fn stats(&self) -> RingStats {
        let inner = self.lock();
        RingStats {
            lines: inner.lines.len(),
            bytes: inner.bytes,
            pushed: inner.pushed,
            evicted: inner.evicted,
        }
    }

    /// Follows lines pushed from now on (for `logs --follow`). A follower that falls more
    /// than `follow_capacity` lines behind is told how many it missed; it never slows the
    /// writers.
    pub fn subscribe(&self) -> Follower {
        let mut inner = self.lock();
        Follower {
            rx: Self::subscribe_locked(&mut inner, self.config.follow_capacity),
        }
    }

    /// The last `n` lines and a follower starting right after them, taken atomically so a
    /// `tail -f` shows every line exactly once.
    pub fn follow(&self, n: usize) -> (Vec<LogLine>, Follower) {
        let mut inner = self.lock();
        let skip = inner.lines.len().saturating_sub(n);
        let tail = inner.lines.iter().skip(skip).cloned().collect();
        let rx = Self::subscribe_locked(&mut inner, self.config.follow_capacity);
        (tail, Follower { rx })
    }

    fn subscribe_locked(inner: &mut Inner, capacity: usize) -> broadcast::Receiver<Arc<LogLine>> {
        match &inner.follow {
            Some(tx) => tx.subscribe(),
            None => {
                // `capacity` was validated to be within tokio's limits.
                let (tx, rx) = broadcast::channel(capacity);
                inner.follow = Some(tx);
                rx
            }
        }
    }
}

/// What a follower receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The next line.
    Line(LogLine),
    /// The follower was too slow and this many lines went by unseen; following resumes
    /// with the oldest line still buffered.
    Missed(u64),
}

/// A live view of a ring's new lines, from [`LogRing::subscribe`] or [`LogRing::follow`].
#[derive(Debug)]
pub struct Follower {
    rx: broadcast::Receiver<Arc<LogLine>>,
}

impl Follower {
    /// Waits for the next line or lag report; `None` once the ring is gone.
    pub async fn next(&mut self) -> Option<FollowEvent> {
        match self.rx.recv().await {
            Ok(line) => Some(FollowEvent::Line(Arc::unwrap_or_clone(line))),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(FollowEvent::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
