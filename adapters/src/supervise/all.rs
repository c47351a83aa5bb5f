//! One task for the futures of an instance (its two output captures and the wait for its
//! end), instead of one task each.
//!
//! Each task costs about 200 bytes besides its future, and `tokio::join!` inside an `async`
//! block would hold each future twice (the block keeps what it captured, the join its moved
//! copy). With 500 quiet processes both add up, so the futures are pinned in place here and
//! polled together until all have finished.
//!
//! Sharing a task must not let one future hold up another, which separate tasks would not:
//! - tokio's cooperative budget is per task, and a capture of a flooding pipe spends all of
//!   it, after which every budgeted wait (a watch channel's) answers "not yet". So the wait
//!   for the end is polled first, and the two captures take turns at going first.
//! - A panic in one future would end the task, and with it the others. Each poll is isolated:
//!   a future that panics is dropped and logged, the others go on.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// Completes when every future present has completed; their outputs are dropped.
    pub(crate) struct All3<A, B, C> {
        #[pin]
        first: Option<C>,
        #[pin]
        a: Option<A>,
        #[pin]
        b: Option<B>,
        // Which of `a` and `b` goes first next time.
        b_first: bool,
    }
}

impl<A, B, C> All3<A, B, C> {
    /// Absent futures count as already finished. `first` is polled before the others on
    /// every wake-up.
    pub(crate) fn new(first: Option<C>, a: Option<A>, b: Option<B>) -> Self {
        All3 {
            first,
            a,
            b,
            b_first: false,
        }
    }
}

impl<A: Future, B: Future, C: Future> Future for All3<A, B, C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // Every future is polled on every wake-up (a waker does not say which one it was):
        // cheap, since each is a few pending checks.
        let first = poll_slot(this.first, cx);
        let (a, b) = if *this.b_first {
            let b = poll_slot(this.b, cx);
            (poll_slot(this.a, cx), b)
        } else {
            let a = poll_slot(this.a, cx);
            (a, poll_slot(this.b, cx))
        };
        *this.b_first = !*this.b_first;
        if first && a && b {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Polls the future in `slot` if it is still there, and drops it once finished (or once it
/// panicked), so what it holds (a pipe, a channel) is released as early as with a task of
/// its own.
fn poll_slot<F: Future>(mut slot: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> bool {
    let Some(future) = slot.as_mut().as_pin_mut() else {
        return true;
    };
    // The future is dropped right after a panic, never polled again, so no broken state of
    // it can be observed.
    match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => false,
        Ok(Poll::Ready(_)) => {
            slot.set(None);
            true
        }
        Err(_) => {
            tracing::error!("an instance's output capture or exit wait panicked; dropped");
            slot.set(None);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::All3;
    use std::future::{pending, Ready};
    use std::time::Duration;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn waits_for_every_future_and_drops_each_when_done() {
        let (tx_a, rx_a) = tokio::sync::oneshot::channel::<()>();
        let (tx_c, rx_c) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<&str>();
        let a = {
            let done = done_tx.clone();
            async move {
                let _ = rx_a.await;
                let _ = done.send("a");
            }
        };
        let c = async move {
            let _ = rx_c.await;
            let _ = done_tx.send("c");
        };
        let task = tokio::spawn(All3::new(Some(c), Some(a), None::<Ready<()>>));
        tx_c.send(()).expect("c waits");
        assert_eq!(done_rx.recv().await, Some("c"));
        assert!(!task.is_finished());
        tx_a.send(()).expect("a waits");
        assert_eq!(done_rx.recv().await, Some("a"));
        tokio::time::timeout(LIMIT, task)
            .await
            .expect("finishes once all have")
            .expect("no panic");
        // Both senders were dropped with their finished futures.
        assert_eq!(done_rx.recv().await, None);
    }

    /// Spends the task's whole cooperative budget on every poll, like a capture of a pipe
    /// that is never empty.
    async fn flood() {
        loop {
            tokio::task::consume_budget().await;
        }
    }

    #[tokio::test]
    async fn a_flooding_future_does_not_starve_the_others() {
        let (end_tx, end_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (other_tx, other_rx) = tokio::sync::oneshot::channel::<()>();
        let end = async move {
            let mut end_rx = end_rx;
            let _ = end_rx.wait_for(|ended| *ended).await;
            let _ = done_tx.send(());
        };
        // A budgeted wait in the other capture slot: it must get its turn before the flood.
        let other = async move {
            let _ = go_rx.await;
            let _ = other_tx.send(());
            pending::<()>().await;
        };
        let task = tokio::spawn(All3::new(Some(end), Some(flood()), Some(other)));
        go_tx.send(()).expect("the other waits");
        tokio::time::timeout(LIMIT, other_rx)
            .await
            .expect("the second capture runs too")
            .expect("sent");
        end_tx.send_replace(true);
        tokio::time::timeout(LIMIT, done_rx)
            .await
            .expect("the end is seen while the flood goes on")
            .expect("sent");
        task.abort();
    }

    #[tokio::test]
    async fn a_panicking_future_does_not_take_the_others_down() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let boom = async {
            panic!("capture bug");
        };
        let end = async move {
            let _ = rx.await;
            let _ = done_tx.send(());
        };
        let task = tokio::spawn(All3::new(Some(end), Some(boom), None::<Ready<()>>));
        tx.send(()).expect("end waits");
        tokio::time::timeout(LIMIT, done_rx)
            .await
            .expect("the end is still reported")
            .expect("sent");
        tokio::time::timeout(LIMIT, task)
            .await
            .expect("finishes")
            .expect("the panic did not escape");
    }
}
