//! Where a listener's parked connections wait for their next request: one task and one table
//! for all of them, so that a parked connection holds no task, timer or future of its own.
//!
//! A parked plain socket leaves tokio's reactor for the lot's own epoll set (on Linux,
//! [`super::rest`]), which reports it by the connection's key. Any other parked connection is
//! polled with a waker that only records its key. Either way the lot's task learns which
//! sockets became readable without looking at the others.
//! The lot also closes parked connections at their idle timeout (one ordered set of deadlines
//! for the lot, not a timer each) and all of them when the gateway drains or the listener goes.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

#[cfg(target_os = "linux")]
use std::os::fd::BorrowedFd;

use prometheus_client::metrics::gauge::Gauge;
use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

#[cfg(target_os = "linux")]
use super::poller::Poller;
use super::rest::{Detach, Resting};
use crate::drain::DrainWatch;

/// A parked connection, as its lot sees it.
pub trait Parked: Send + 'static {
    /// Polls for the next request's first byte; `Ok(false)` if the client closed.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>>;
    /// Its socket, if it left tokio's reactor for the lot's poller; polled with a waker if not.
    #[cfg(target_os = "linux")]
    fn detached_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
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
    /// Watches the sockets of detached connections.
    #[cfg(target_os = "linux")]
    poller: Option<Poller>,
}

/// Room for this many parked connections is kept when the lot empties.
const KEEP_SLOTS: usize = 64;

struct Table {
    parked: Slab<Entry>,
    /// Idle deadlines with their connections' keys, earliest first.
    deadlines: BTreeSet<(Tick, usize)>,
    /// When the lot began: [`Tick`]s count from it.
    epoch: Instant,
    /// The lot closed its connections for good (a drain, or its listener is gone): a
    /// connection parked from now on is closed at once.
    closed: bool,
}

struct Entry {
    conn: Box<dyn Parked>,
    deadline: Tick,
}

/// An idle deadline, in whole milliseconds since the lot began, rounded up (never early).
/// Every parked connection has one in the table and one in the ordered set: 8 bytes each,
/// where an `Option<Instant>` takes 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(u64);

impl Tick {
    /// No idle timeout.
    const NEVER: Tick = Tick(u64::MAX);

    fn after(epoch: Instant, at: Instant) -> Tick {
        let since = at.saturating_duration_since(epoch);
        let ms = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        Tick(u64::try_from(ms).unwrap_or(u64::MAX - 1).min(u64::MAX - 1))
    }

    /// The last whole millisecond reached at `now`.
    fn reached(epoch: Instant, now: Instant) -> Tick {
        let ms = now.saturating_duration_since(epoch).as_millis();
        Tick(u64::try_from(ms).unwrap_or(u64::MAX - 1))
    }

    /// When it comes; `None` if beyond what the clock can name (as good as never).
    fn instant(self, epoch: Instant) -> Option<Instant> {
        epoch.checked_add(std::time::Duration::from_millis(self.0))
    }
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
        if entry.deadline != Tick::NEVER {
            self.deadlines.remove(&(entry.deadline, key));
        }
        // A slab keeps the room of its largest size. Once a spike of parked connections has
        // left, that room (24 bytes a slot) goes back, rather than being kept for good.
        if self.parked.is_empty() && self.parked.capacity() > KEEP_SLOTS {
            self.parked = Slab::new();
        }
        Some(entry)
    }
}

impl Lot {
    /// A lot counting its connections on `gauge`; nothing leaves it until [`Lot::run`] runs.
    pub fn new(gauge: Gauge) -> Self {
        Lot {
            shared: Arc::new(Shared {
                table: Mutex::new(Table {
                    parked: Slab::new(),
                    deadlines: BTreeSet::new(),
                    epoch: Instant::now(),
                    closed: false,
                }),
                woken: Mutex::new(Vec::new()),
                notify: Notify::new(),
                gauge,
                #[cfg(target_os = "linux")]
                poller: Poller::new(),
            }),
        }
    }

    /// `stream` as it will wait here: out of tokio's reactor if it can be and this lot can
    /// watch it.
    pub fn rest<S: Detach>(&self, stream: S) -> io::Result<Resting<S>> {
        #[cfg(target_os = "linux")]
        if self.shared.poller.is_some() {
            return stream.detach();
        }
        Ok(Resting::Attached(Box::new(stream)))
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
        let key = table.parked.vacant_key();
        if let Err(e) = self.watch(conn.as_ref(), key) {
            drop(table);
            tracing::debug!("parked connection closed: cannot watch its socket: {e}");
            return;
        }
        let epoch = table.epoch;
        let deadline = deadline.map_or(Tick::NEVER, |at| Tick::after(epoch, at));
        table.parked.insert(Entry { conn, deadline });
        if deadline != Tick::NEVER {
            table.deadlines.insert((deadline, key));
        }
        drop(table);
        self.shared.gauge.inc();
        // Its first poll, by the lot's task, registers its waker with the socket, or finds
        // the bytes that came before its poller watched it.
        lock(&self.shared.woken).push(key);
        self.shared.notify.notify_one();
    }

    /// Adds a detached connection's socket to the lot's poller.
    fn watch(&self, conn: &dyn Parked, key: usize) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(fd) = conn.detached_fd() {
            let poller = self.shared.poller.as_ref();
            let poller = poller.ok_or_else(|| io::Error::other("the lot has no poller"))?;
            return poller.add(fd, key);
        }
        let _ = (conn, key);
        Ok(())
    }

    /// The waker that polls a connection: one that records its key in [`Shared::woken`] if
    /// it is still in tokio's reactor (which keeps a clone while it waits), none if the
    /// lot's poller watches it. Made for each poll (when it parks and when it wakes) rather
    /// than kept with every parked connection.
    fn waker_for(&self, conn: &dyn Parked, key: usize) -> Waker {
        #[cfg(target_os = "linux")]
        if conn.detached_fd().is_some() {
            return Waker::noop().clone();
        }
        let _ = conn;
        Waker::from(Arc::new(KeyWaker {
            key,
            lot: Arc::downgrade(&self.shared),
        }))
    }

    /// Takes a detached connection's socket out of the poller, before it is served again.
    fn unwatch(&self, conn: &dyn Parked) {
        #[cfg(target_os = "linux")]
        if let (Some(fd), Some(poller)) = (conn.detached_fd(), &self.shared.poller)
            && let Err(e) = poller.remove(fd)
        {
            tracing::debug!("parked socket not removed from the poller: {e}");
        }
        let _ = conn;
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
                () = self.polled(&mut keys) => {}
                () = sleep_until(next) => {}
                () = shutdown.started() => break,
                () = closing.started() => break,
            }
            keys.append(&mut lock(&self.shared.woken));
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

    /// How many the table has room for.
    #[cfg(test)]
    fn parked_capacity(&self) -> usize {
        lock(&self.shared.table).parked.capacity()
    }

    /// Returns once the poller reported sockets, their keys added to `keys`; never if the
    /// lot has no poller.
    async fn polled(&self, keys: &mut Vec<usize>) {
        #[cfg(target_os = "linux")]
        if let Some(poller) = &self.shared.poller {
            match poller.ready(keys).await {
                Ok(()) => return,
                // Not expected of an epoll set: its sockets are then woken only by the other
                // connections' wake-ups, and close at their idle timeouts.
                Err(e) => tracing::warn!("parked sockets' poller failed: {e}"),
            }
        }
        let _ = keys;
        std::future::pending().await
    }

    fn next_deadline(&self) -> Option<Instant> {
        let table = lock(&self.shared.table);
        let epoch = table.epoch;
        table
            .deadlines
            .first()
            .and_then(|&(at, _)| at.instant(epoch))
    }

    /// Polls the connections with these keys; resumes those whose next request has begun and
    /// drops those whose clients closed.
    fn poll_woken(&self, keys: impl Iterator<Item = usize>) {
        let mut left = Vec::new();
        {
            let mut table = lock(&self.shared.table);
            for key in keys {
                // Gone already: woken twice, or closed at its deadline.
                let Some(Entry { conn, .. }) = table.parked.get_mut(key) else {
                    continue;
                };
                let waker = self.waker_for(conn.as_ref(), key);
                let woke = match conn.poll_wake(&mut Context::from_waker(&waker)) {
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
                self.unwatch(conn.as_ref());
                conn.resume();
            }
        }
    }

    /// Closes the connections whose idle deadline is not after `now`.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut table = lock(&self.shared.table);
            let now = Tick::reached(table.epoch, now);
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

    /// Reports how a parked connection left the lot: dropped, unless it said otherwise.
    struct Reporter {
        tx: mpsc::UnboundedSender<Left>,
        sent: bool,
    }

    impl Reporter {
        fn send(&mut self, left: Left) {
            self.sent = true;
            let _ = self.tx.send(left);
        }
    }

    impl Drop for Reporter {
        fn drop(&mut self) {
            if !self.sent {
                let _ = self.tx.send(Left::Dropped);
            }
        }
    }

    /// A parked in-memory connection, polled with the lot's waker.
    struct Conn {
        io: DuplexStream,
        first: Option<u8>,
        report: Reporter,
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
            let first = self.first.unwrap_or(0);
            self.report.send(Left::Resumed(first));
        }

        fn expire(mut self: Box<Self>) {
            self.report.send(Left::Expired);
        }
    }

    /// A parked TCP connection, as the gateway parks a plain one: once resumed, it echoes its
    /// first byte through tokio's reactor.
    #[cfg(target_os = "linux")]
    struct TcpConn {
        stream: Resting<tokio::net::TcpStream>,
        first: Option<u8>,
        report: Reporter,
    }

    #[cfg(target_os = "linux")]
    impl Parked for TcpConn {
        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
            self.first = std::task::ready!(self.stream.poll_first_byte(cx))?;
            Poll::Ready(Ok(self.first.is_some()))
        }

        fn detached_fd(&self) -> Option<BorrowedFd<'_>> {
            self.stream.detached_fd()
        }

        fn resume(self: Box<Self>) {
            let TcpConn {
                stream,
                first,
                mut report,
            } = *self;
            let first = first.unwrap_or(0);
            tokio::spawn(async move {
                if let Ok(mut stream) = stream.wake() {
                    let _ = stream.write_all(&[first]).await;
                }
                report.send(Left::Resumed(first));
            });
        }

        fn expire(mut self: Box<Self>) {
            self.report.send(Left::Expired);
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
                report: self.reporter(),
            };
            self.lot
                .park(Box::new(conn), idle.map(|d| Instant::now() + d));
            client
        }

        fn reporter(&self) -> Reporter {
            Reporter {
                tx: self.report.clone(),
                sent: false,
            }
        }

        async fn next(&mut self) -> Option<Left> {
            // Longer than the tests' deadlines, which a paused clock reaches at once.
            tokio::time::timeout(Duration::from_secs(100), self.left.recv())
                .await
                .ok()
                .flatten()
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_tcp_connection_waits_out_of_tokios_reactor_and_resumes_in_it() {
        use tokio::io::AsyncReadExt;

        let mut f = fixture();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let listener = listener.unwrap_or_else(|e| panic!("{e}"));
        let mut a = park_tcp(&f, &listener)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b = park_tcp(&f, &listener)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = park_tcp(&f, &listener)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        a.write_all(b"G").await.unwrap_or_default();
        assert_eq!(f.next().await, Some(Left::Resumed(b'G')));
        let mut echo = [0u8; 1];
        a.read_exact(&mut echo).await.unwrap_or_default();
        assert_eq!(&echo, b"G", "the resumed socket works in tokio's reactor");
        drop(b);
        assert_eq!(f.next().await, Some(Left::Dropped));
        c.write_all(b"P").await.unwrap_or_default();
        assert_eq!(f.next().await, Some(Left::Resumed(b'P')));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (0, 0));
    }

    /// Parks a plain TCP connection as the gateway does; its client's end is returned.
    #[cfg(target_os = "linux")]
    async fn park_tcp(
        f: &Fixture,
        listener: &tokio::net::TcpListener,
    ) -> io::Result<tokio::net::TcpStream> {
        let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let stream = f.lot.rest(server)?;
        assert!(
            stream.detached_fd().is_some(),
            "a plain socket leaves tokio's reactor"
        );
        let conn = TcpConn {
            stream,
            first: None,
            report: f.reporter(),
        };
        f.lot.park(Box::new(conn), None);
        Ok(client)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn more_sockets_ready_at_once_than_one_poll_takes_all_leave_the_lot() {
        // Two workers: one left to drive the timers if the lot's spun on the other, and the
        // test waits on this thread. A spinning lot is caught by the timeout, and left behind
        // by `shutdown_timeout`.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let left = rt.block_on(async {
            let mut f = fixture();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let mut clients = Vec::new();
            for _ in 0..(2 * super::super::poller::BATCH + 10) {
                clients.push(park_tcp(&f, &listener).await?);
            }
            let n = clients.len();
            {
                // The lot's task cannot take any of them off until all are ready.
                let _held = lock(&f.lot.shared.table);
                drop(clients);
            }
            let dropped = tokio::time::timeout(Duration::from_secs(20), async {
                let mut dropped = 0;
                while dropped < n && f.left.recv().await == Some(Left::Dropped) {
                    dropped += 1;
                }
                dropped
            })
            .await;
            let parked = (f.lot.parked_count(), f.gauge.get());
            let mut next = park_tcp(&f, &listener).await?;
            next.write_all(b"G").await?;
            io::Result::Ok((n, dropped.ok(), parked, f.next().await))
        });
        // Asserted only now: a panic inside would wait for a spinning worker forever.
        rt.shutdown_timeout(Duration::from_secs(1));
        let (n, dropped, parked, next) = left.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dropped,
            Some(n),
            "every closed client's connection left the lot"
        );
        assert_eq!(parked, (0, 0));
        assert_eq!(next, Some(Left::Resumed(b'G')));
    }

    #[test]
    fn deadlines_round_up_to_the_millisecond_and_are_reached_on_it() {
        let epoch = Instant::now();
        let at = |us: u64| epoch + Duration::from_micros(us);
        let cases = [
            (0, 0, 0),
            (5_000_000, 5_000, 5_000),
            (5_000_300, 5_001, 5_000),
            (999, 1, 0),
        ];
        for (us, after, reached) in cases {
            assert_eq!(Tick::after(epoch, at(us)), Tick(after), "{us} µs");
            assert_eq!(Tick::reached(epoch, at(us)), Tick(reached), "{us} µs");
            assert!(
                Tick(after).instant(epoch) >= Some(at(us)),
                "never early: {us} µs"
            );
        }
        let before = epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch);
        assert_eq!(Tick::after(epoch, before), Tick(0));
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

    #[tokio::test(start_paused = true)]
    async fn the_table_gives_back_its_room_once_a_spike_has_left() {
        let mut f = fixture();
        let last = f.park(None);
        let _spike: Vec<_> = (0..999)
            .map(|_| f.park(Some(Duration::from_secs(5))))
            .collect();
        assert!(f.lot.parked_capacity() >= 1000);
        for _ in 0..999 {
            assert_eq!(f.next().await, Some(Left::Expired));
        }
        assert!(
            f.lot.parked_capacity() >= 1000,
            "the room stays while a connection is parked"
        );
        drop(last);
        assert_eq!(f.next().await, Some(Left::Dropped));
        assert_eq!((f.lot.parked_count(), f.gauge.get()), (0, 0));
        assert!(
            f.lot.parked_capacity() <= KEEP_SLOTS,
            "{}",
            f.lot.parked_capacity()
        );
        let _again = f.park(None);
        assert_eq!(f.lot.parked_count(), 1, "the lot still parks");
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
