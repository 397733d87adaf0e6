//! A handle that cuts one client connection from outside its task: the hub evicts a slow
//! subscriber even while hyper, blocked on a full socket, is not polling its body.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// Shared by a connection's task (which waits on it) and the requests it serves.
#[derive(Clone, Default)]
pub struct Cut(Arc<State>);

#[derive(Default)]
struct State {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    pub fn new() -> Cut {
        Cut::default()
    }

    /// Asks the connection's task to drop the connection.
    pub fn cut(&self) {
        self.0.cut.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    pub fn is_cut(&self) -> bool {
        self.0.cut.load(Ordering::Acquire)
    }

    /// Resolves once [`Cut::cut`] was called. Polling it costs one atomic load and a waker
    /// check, so the connection task can poll it on every wake-up.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.0.waker.register(cx.waker());
            if self.is_cut() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_after_cut_from_another_task() {
        let cut = Cut::new();
        let other = cut.clone();
        let task = tokio::spawn(async move { other.wait().await });
        assert!(!cut.is_cut());
        cut.cut();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("wait resolved")
            .expect("task ran");
        assert!(cut.is_cut());
    }
}
