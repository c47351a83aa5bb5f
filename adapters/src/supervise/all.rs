//! One task for the few futures of an instance (its two output captures and the wait for its
//! end), instead of one task each.
//!
//! Each task costs about 200 bytes besides its future, and `tokio::join!` inside an `async`
//! block would hold each future twice (the block keeps what it captured, the join its moved
//! copy). With 500 quiet processes both add up, so the futures are pinned in place here and
//! polled together until all have finished.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// Completes when every future present has completed; their outputs are dropped.
    pub(crate) struct All3<A, B, C> {
        #[pin]
        a: Option<A>,
        #[pin]
        b: Option<B>,
        #[pin]
        c: Option<C>,
    }
}

impl<A, B, C> All3<A, B, C> {
    /// Absent futures count as already finished.
    pub(crate) fn new(a: Option<A>, b: Option<B>, c: Option<C>) -> Self {
        All3 { a, b, c }
    }
}

impl<A: Future, B: Future, C: Future> Future for All3<A, B, C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // Every future is polled on every wake-up (a waker does not say which one it was):
        // cheap, since each is a few pending checks.
        let a = poll_slot(this.a, cx);
        let b = poll_slot(this.b, cx);
        let c = poll_slot(this.c, cx);
        if a && b && c {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Polls the future in `slot` if it is still there, and drops it once finished, so what it
/// holds (a pipe, a channel) is released as early as with a task of its own.
fn poll_slot<F: Future>(mut slot: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> bool {
    let Some(future) = slot.as_mut().as_pin_mut() else {
        return true;
    };
    if future.poll(cx).is_ready() {
        slot.set(None);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::All3;

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
        let task = tokio::spawn(All3::new(Some(a), None::<std::future::Ready<()>>, Some(c)));
        tx_c.send(()).expect("c waits");
        assert_eq!(done_rx.recv().await, Some("c"));
        assert!(!task.is_finished());
        tx_a.send(()).expect("a waits");
        assert_eq!(done_rx.recv().await, Some("a"));
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("finishes once all have")
            .expect("no panic");
        // Both senders were dropped with their finished futures.
        assert_eq!(done_rx.recv().await, None);
    }
}
