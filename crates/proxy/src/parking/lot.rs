//! Where a listener's parked connections wait for their next request: one task and one table
//! for all of them, so that a parked connection holds no task, timer or future of its own.
//!
//! Each parked connection's socket is polled with a waker that only records the connection's
//! key, so the lot's task learns which sockets became readable without looking at the others.
//! The lot also closes parked connections at their idle timeout (one ordered set of deadlines
//! for the lot, not a timer each) and all of them when the gateway drains or the listener goes.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use prometheus_client::metrics::gauge::Gauge;
use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::drain::DrainWatch;

/// A parked connection, as its lot sees it.
pub trait Parked: Send + 'static {
    /// Polls for the next request's first byte; `Ok(false)` if the client closed.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>>;
    /// Serves the connection again, in a task of its own: its next request has begun.
    fn resume(self: Box<Self>);
    /// Closes the connection: its idle timeout passed.
    fn expire(self: Box<Self>);
}

/// A listener's parked connections; clones share them.
#[derive(Clone)]
pub struct Lot {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    /// Keys of connections whose sockets' readiness changed, pushed by their wakers.
    woken: Mutex<Vec<usize>>,
    /// Wakes the lot's task: keys were pushed or a deadline was added.
    notify: Notify,
    /// Parked connections, all lots together.
    gauge: Gauge,
}

#[derive(Default)]
struct Table {
    parked: Slab<Entry>,
    /// Idle deadlines with their connections' keys, earliest first.
    deadlines: BTreeSet<(Instant, usize)>,
    /// The lot closed its connections for good (a drain, or its listener is gone): a
    /// connection parked from now on is closed at once.
    closed: bool,
}

struct Entry {
    conn: Box<dyn Parked>,
    deadline: Option<Instant>,
    /// Polls `conn`: records its key in [`Shared::woken`].
    waker: Waker,
}

/// A parked connection's waker.
struct KeyWaker {
    key: usize,
    lot: Weak<Shared>,
}

impl Wake for KeyWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.lot.upgrade() {
            lock(&shared.woken).push(self.key);
            shared.notify.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can leave a table half changed: take it back after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Table {
    fn remove(&mut self, key: usize) -> Option<Entry> {
        let entry = self.parked.try_remove(key)?;
        if let Some(at) = entry.deadline {
            self.deadlines.remove(&(at, key));
        }
        Some(entry)
    }
}

impl Lot {
    /// A lot counting its connections on `gauge`; nothing leaves it until [`Lot::run`] runs.
    pub fn new(gauge: Gauge) -> Self {
        Lot {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                woken: Mutex::new(Vec::new()),
                notify: Notify::new(),
                gauge,
            }),
        }
    }

    /// Parks `conn` until its next request, its idle timeout (`deadline`, if it has one) or
    /// the lot's drain.
    pub fn park(&self, conn: Box<dyn Parked>, deadline: Option<Instant>) {
        let mut table = lock(&self.shared.table);
        if table.closed {
            drop(table);
            drop(conn);
            return;
        }
        let slot = table.parked.vacant_entry();
        let key = slot.key();
        let waker = Waker::from(Arc::new(KeyWaker {
            key,
            lot: Arc::downgrade(&self.shared),
        }));
        slot.insert(Entry {
            conn,
            deadline,
            waker,
        });
        if let Some(at) = deadline {
            table.deadlines.insert((at, key));
        }
        drop(table);
        self.shared.gauge.inc();
        // Its first poll, by the lot's task, registers its waker with the socket.
        lock(&self.shared.woken).push(key);
        self.shared.notify.notify_one();
    }

    /// The lot's task: resumes connections as their requests arrive and closes them at their
    /// idle timeout, until `drain` (the gateway's and the listener's) closes them all.
    pub async fn run(self, drain: [DrainWatch; 2]) {
        let [mut shutdown, mut closing] = drain;
        let mut keys = Vec::new();
        loop {
            let next = self.next_deadline();
            tokio::select! {
                () = self.shared.notify.notified() => {}
                () = sleep_until(next) => {}
                () = shutdown.started() => break,
                () = closing.started() => break,
            }
            std::mem::swap(&mut *lock(&self.shared.woken), &mut keys);
            self.poll_woken(keys.drain(..));
            self.expire(Instant::now());
        }
        self.close_all();
    }

    /// How many connections are parked here.
    #[cfg(test)]
    fn parked_count(&self) -> usize {
        lock(&self.shared.table).parked.len()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let table = lock(&self.shared.table);
        table.deadlines.first().map(|&(at, _)| at)
    }

    /// Polls the connections with these keys; resumes those whose next request has begun and
    /// drops those whose clients closed.
    fn poll_woken(&self, keys: impl Iterator<Item = usize>) {
        let mut left = Vec::new();
        {
            let mut table = lock(&self.shared.table);
            for key in keys {
                // Gone already: woken twice, or closed at its deadline.
                let Some(Entry { conn, waker, .. }) = table.parked.get_mut(key) else {
                    continue;
                };
                let woke = match conn.poll_wake(&mut Context::from_waker(waker)) {
                    Poll::Pending => continue,
                    Poll::Ready(Ok(woke)) => woke,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!("parked connection failed: {e}");
                        false
                    }
                };
                if let Some(entry) = table.remove(key) {
                    left.push((entry.conn, woke));
                }
            }
        }
        for (conn, woke) in left {
            self.shared.gauge.dec();
            if woke {
                conn.resume();
            }
        }
    }

    /// Closes the connections whose idle deadline is not after `now`.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut table = lock(&self.shared.table);
            while let Some(&(at, key)) = table.deadlines.first() {
                if at > now {
                    break;
                }
                // Taken off first, so the loop ends whatever the table holds.
                table.deadlines.pop_first();
                if let Some(entry) = table.remove(key) {
                    expired.push(entry.conn);
                }
            }
        }
        for conn in expired {
            self.shared.gauge.dec();
            conn.expire();
        }
    }

    fn close_all(&self) {
        let closed: Vec<Entry> = {
            let mut table = lock(&self.shared.table);
            table.closed = true;
            table.deadlines.clear();
            table.parked.drain().collect()
        };
        self.shared
            .gauge
            .dec_by(i64::try_from(closed.len()).unwrap_or(i64::MAX));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::sync::mpsc;

    use super::*;
    use crate::drain::DrainTrigger;

    #[derive(Debug, PartialEq)]
    enum Left {
        Resumed(u8),
        Expired,
        Dropped,
    }

    /// A parked connection that reports how it left the lot.
    struct Conn {
        io: DuplexStream,
        first: Option<u8>,
        report: mpsc::UnboundedSender<Left>,
        reported: bool,
    }

    impl Parked for Conn {
        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
            let mut byte = [0u8; 1];
            let mut buf = ReadBuf::new(&mut byte);
            std::task::ready!(std::pin::Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.first = buf.filled().first().copied();
            Poll::Ready(Ok(self.first.is_some()))
        }

        fn resume(mut self: Box<Self>) {
            self.reported = true;
            let _ = self.report.send(Left::Resumed(self.first.unwrap_or(0)));
        }

        fn expire(mut self: Box<Self>) {
            self.reported = true;
            let _ = self.report.send(Left::Expired);
        }
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            if !self.reported {
                let _ = self.report.send(Left::Dropped);
            }
        }
    }

    struct Fixture {
        lot: Lot,
        gauge: Gauge,
        shutdown: DrainTrigger,
        _closing: DrainTrigger,
        report: mpsc::UnboundedSender<Left>,
        left: mpsc::UnboundedReceiver<Left>,
    }

    fn fixture() -> Fixture {
        let gauge = Gauge::default();
        let lot = Lot::new(gauge.clone());
        let (shutdown, closing) = (DrainTrigger::new(), DrainTrigger::new());
        tokio::spawn(lot.clone().run([shutdown.watcher(), closing.watcher()]));
        let (report, left) = mpsc::unbounded_channel();
        Fixture {
            lot,
            gauge,
            shutdown,
            _closing: closing,
            report,
            left,
        }
    }

    impl Fixture {
        /// Parks a connection; its client's end is returned.
        fn park(&self, idle: Option<Duration>) -> DuplexStream {
            let (client, io) = tokio::io::duplex(64);
            let conn = Conn {
                io,
                first: None,
                report: self.report.clone(),
                reported: false,
            };
            self.lot
                .park(Box::new(conn), idle.map(|d| Instant::now() + d));
            client
        }

        async fn next(&mut self) -> Option<Left> {
            // Longer than the tests' deadlines, which a paused clock reaches at once.
            tokio::time::timeout(Duration::from_secs(100), self.left.recv())
                .await
                .ok()
                .flatten()
        }
    }

    #[tokio::test]
    async fn a_parked_connection_resumes_on_its_first_byte_and_only_it() {
        let mut f = fixture();
        let mut a = f.park(None);
        let _b = f.park(None);
        let mut c = f.park(None);
        assert_eq!(f.gauge.get(), 3);
        c.write_all(b"G").await.unwrap_or_default();
        assert_eq!(f.next().await, Some(Left::Resumed(b'G')));
        a.write_all(b"P").await.unwrap_or_default();
        assert_eq!(f.next().await, Some(Left::Resumed(b'P')));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (1, 1));
    }

    #[tokio::test]
    async fn a_client_closing_a_parked_connection_drops_it() {
        let mut f = fixture();
        let client = f.park(Some(Duration::from_secs(60)));
        drop(client);
        assert_eq!(f.next().await, Some(Left::Dropped));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (0, 0));
        assert_eq!(f.lot.next_deadline(), None, "its deadline went with it");
    }

    #[tokio::test(start_paused = true)]
    async fn parked_connections_close_at_their_idle_deadlines_in_order() {
        let mut f = fixture();
        let _late = f.park(Some(Duration::from_secs(20)));
        let _none = f.park(None);
        let _early = f.park(Some(Duration::from_secs(5)));
        let start = Instant::now();
        assert_eq!(f.next().await, Some(Left::Expired));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(f.next().await, Some(Left::Expired));
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (1, 1));
    }

    #[tokio::test]
    async fn a_drain_closes_every_parked_connection_and_any_parked_after() {
        let mut f = fixture();
        let _a = f.park(None);
        let _b = f.park(Some(Duration::from_secs(60)));
        let shutdown = std::mem::take(&mut f.shutdown);
        let drained = tokio::spawn(shutdown.drain(Duration::from_secs(10)));
        assert_eq!(f.next().await, Some(Left::Dropped));
        assert_eq!(f.next().await, Some(Left::Dropped));
        let drained = drained.await.unwrap_or(false);
        assert!(drained, "the lot's task let go of its drain watch");
        let _c = f.park(None);
        assert_eq!(f.next().await, Some(Left::Dropped));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (0, 0));
    }
}
