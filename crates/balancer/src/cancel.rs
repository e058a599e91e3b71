//! Waiting for a [`CancellationToken`] from a loop that polls the wait
//! again on every turn.
//!
//! A client connection selects on the server's shutdown token (and on its
//! own kill token) beside its reads, so the wait is polled once or twice a
//! request. Each poll of tokio-util's `WaitForCancellationFuture` locks
//! the token's waiter list to compare wakers; for the shutdown token that
//! list is shared by every connection on every worker thread.
//! [`cancelled`] polls it once to register, and after that only reads the
//! token's flag while the task's waker is the one registered: a
//! cancellation still wakes that waker, and the next poll sees the flag.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// `token`'s cancellation, cheap to poll again: pin it once per
/// connection (`std::pin::pin!(cancel::cancelled(token))`) and select on
/// it beside the work.
pub fn cancelled(token: &CancellationToken) -> Cheap<'_, WaitForCancellationFuture<'_>> {
    Cheap::wrap(token, token.cancelled())
}

pin_project_lite::pin_project! {
    /// See [`cancelled`]: drives `wait` only when it has to register a
    /// waker.
    pub struct Cheap<'a, F> {
        token: &'a CancellationToken,
        #[pin]
        wait: F,
        // The waker `wait` last registered, if it returned `Pending`.
        registered: Option<Waker>,
    }
}

impl<'a, F: Future<Output = ()>> Cheap<'a, F> {
    /// `wait` must resolve once `token` is cancelled.
    fn wrap(token: &'a CancellationToken, wait: F) -> Self {
        Self {
            token,
            wait,
            registered: None,
        }
    }
}

impl<F: Future<Output = ()>> Future for Cheap<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        match this.wait.poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                *this.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use super::*;

    /// Counts how often the inner wait is polled.
    struct Counted<F> {
        inner: F,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future<Output = ()> + Unpin> Future for Counted<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll(cx)
        }
    }

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn polls_the_wait_once_per_waker_and_wakes_on_cancel() {
        let token = CancellationToken::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let wait = Counted {
            inner: Box::pin(token.cancelled()),
            polls: polls.clone(),
        };
        let mut cheap = std::pin::pin!(Cheap::wrap(&token, wait));
        let flag = Arc::new(Flag(AtomicUsize::new(0)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10 {
            assert!(cheap.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "registered once");

        // Another waker (the task moved) registers again.
        let other = Waker::from(Arc::new(Flag(AtomicUsize::new(0))));
        assert!(
            cheap
                .as_mut()
                .poll(&mut Context::from_waker(&other))
                .is_pending()
        );
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        assert!(cheap.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 3);

        token.cancel();
        assert!(
            flag.0.load(Ordering::Relaxed) >= 1,
            "the registered waker is woken"
        );
        assert!(cheap.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_select_loop_ends_when_the_token_is_cancelled() {
        let token = CancellationToken::new();
        let mut stopping = std::pin::pin!(cancelled(&token));
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            canceller.cancel();
        });
        let mut turns = 0;
        loop {
            tokio::select! {
                biased;
                () = stopping.as_mut() => break,
                () = tokio::time::sleep(std::time::Duration::from_millis(1)) => turns += 1,
            }
        }
        assert!(turns > 1);
    }
}
