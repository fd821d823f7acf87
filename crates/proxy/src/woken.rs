//! A future polled only when it was woken itself.
//!
//! `tokio::select!` polls every branch whenever its task wakes. A connection's task wakes at
//! least twice per request, and each time its drain and activity watches were polled too:
//! about 1,000 instructions per request to learn that nothing changed (tokio's `Notify`
//! takes its waiters' lock on every poll). Wrapped in [`OnWake`], such a branch is polled once,
//! then only after its own waker fired: a flag and a waker registration per task wake-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `F`, polled at first and then only when it woke its waker.
pub struct OnWake<F> {
    inner: F,
    woken: WakeFlag,
    polled: bool,
}

/// A waker to poll something with, that tells whether it fired, and wakes the task that last
/// asked.
pub struct WakeFlag {
    flag: Arc<Flag>,
    /// Raises the flag and wakes the task.
    waker: Waker,
}

impl WakeFlag {
    pub fn new() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        WakeFlag {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// The waker to poll with.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Whether [`WakeFlag::waker`] fired since the last call; `task` is woken when it fires
    /// next. (Registered before the flag is read: a wake-up in between wakes the task again.)
    pub fn take(&self, task: &Waker) -> bool {
        self.flag.task.register(task);
        self.flag.woken.swap(false, Ordering::AcqRel)
    }
}

impl Default for WakeFlag {
    fn default() -> Self {
        WakeFlag::new()
    }
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> OnWake<F> {
    /// `inner` must register the waker it is polled with for everything it waits on, as every
    /// well-behaved future does (it is not polled for any other reason).
    pub fn new(inner: F) -> Self {
        OnWake {
            inner,
            woken: WakeFlag::new(),
            polled: false,
        }
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.woken.take(cx.waker()) && this.polled {
            return Poll::Pending;
        }
        this.polled = true;
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(this.woken.waker()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, pending (and waiting for a wake) before.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if let Ok(mut w) = self.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        }
    }

    /// The task's own wake-ups do not reach the inner future; its waker's do, and wake the
    /// task that polled last.
    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut fut = OnWake::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        });
        let (task, task_woken) = counting_waker();
        let mut cx = Context::from_waker(&task);
        for _ in 0..5 {
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "polled once, then left alone"
        );
        ready.store(true, Ordering::SeqCst);
        assert!(
            Pin::new(&mut fut).poll(&mut cx).is_pending(),
            "not woken yet"
        );
        let w = inner_waker.lock().unwrap().take().unwrap();
        w.wake();
        assert_eq!(task_woken.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    /// Real tokio primitives behind it: a watch change and a timer both get through.
    #[tokio::test]
    async fn a_watch_change_and_a_timer_get_through() {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let changed = std::pin::pin!(async move {
            let _ = rx.wait_for(|v| *v).await;
        });
        let waiting = tokio::spawn(async move {
            let sleep = std::pin::pin!(tokio::time::sleep(std::time::Duration::from_millis(20)));
            OnWake::new(sleep).await;
        });
        let mut changed = OnWake::new(changed);
        let (task, _) = counting_waker();
        assert!(
            Pin::new(&mut changed)
                .poll(&mut Context::from_waker(&task))
                .is_pending()
        );
        tx.send_replace(true);
        let bounded = std::time::Duration::from_secs(10);
        tokio::time::timeout(bounded, &mut changed).await.unwrap();
        tokio::time::timeout(bounded, waiting)
            .await
            .unwrap()
            .unwrap();
    }

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wake-ups, and the count.
    fn counting_waker() -> (Waker, Arc<Counter>) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (Waker::from(c.clone()), c)
    }
}
