//! Writing to the supervisor's own stdout and stderr, from the writer threads only.
//!
//! Two threads write there: the printers' ([`super::spawn_print_thread`]) and the
//! supervisor's own lines' ([`super::write_stderr`]). Both may wait in `write(2)` for as long
//! as a reader stalls; nothing else does. What they still hold at exit is written by
//! [`drain_output`], as long as the reader keeps taking it.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Held for each write to stderr, so the two threads' lines never interleave mid-line (a
/// write to a full pipe is not atomic).
pub(super) static STDERR: Mutex<()> = Mutex::new(());

/// Lines queued for a writer thread and not written yet.
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Lines written so far, to tell a slow reader from a stalled one.
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// Wakes [`drain_output`] when lines were written.
static PROGRESS: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// A line is about to be queued (counted before it is, so the writer never counts it first).
pub(super) fn queuing() {
    PENDING.fetch_add(1, Ordering::AcqRel);
}

/// A line counted by [`queuing`] could not be queued after all.
pub(super) fn not_queued() {
    PENDING.fetch_sub(1, Ordering::AcqRel);
}

/// `lines` queued lines were written (or failed for good).
pub(super) fn written(lines: u64) {
    PENDING.fetch_sub(lines, Ordering::AcqRel);
    WRITTEN.fetch_add(lines, Ordering::AcqRel);
    let _woken = PROGRESS.0.lock().unwrap_or_else(|p| p.into_inner());
    PROGRESS.1.notify_all();
}

/// Waits until every queued line of the supervisor's stdout and stderr is written, or until
/// `patience` passes without any being written (a reader that stalled for good must not
/// keep the supervisor, or a container, from exiting). Call it once, before exit.
pub fn drain_output(patience: Duration) {
    let mut guard = PROGRESS.0.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if PENDING.load(Ordering::Acquire) == 0 {
            return;
        }
        let before = WRITTEN.load(Ordering::Acquire);
        let (next, timeout) = PROGRESS
            .1
            .wait_timeout(guard, patience)
            .unwrap_or_else(|p| p.into_inner());
        guard = next;
        if timeout.timed_out() && WRITTEN.load(Ordering::Acquire) == before {
            return;
        }
    }
}

/// Writes to the descriptor directly, not through the std handle's lock, which other threads
/// would then wait on while this one is stuck.
pub(super) fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> nix::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd.as_fd(), bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            // Someone made the shared descriptor non-blocking: wait here, not in a spin.
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
