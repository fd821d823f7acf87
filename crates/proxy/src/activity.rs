//! What one downstream HTTP connection is doing, for the protections hyper does not give:
//!
//! - the request-headers timeout (slowloris): a request head must be complete within the
//!   timeout of its first byte, and the first request of a connection within the timeout of
//!   the connection's start (hyper's own HTTP/1 timer also runs while a keep-alive connection
//!   waits, and hyper-util's protocol detection has none at all);
//! - the idle timeout: a connection without a request in flight is closed after it, as
//!   Envoy's `common_http_protocol_options.idle_timeout`;
//! - premature resets (HTTP/2 rapid reset, CVE-2023-44487): streams the client cancels before
//!   their answer, shortly after opening them, are counted, and a connection made mostly of
//!   them is closed, as Envoy 1.27.1+ does (`overload.premature_reset_*`);
//! - parking: an HTTP/1 connection quiet for [`Timeouts::park`] between requests gives back
//!   hyper's connection state and buffers until its next request (see [`crate::parking`]).
//!
//! One [`Activity`] per connection; [`Activity::watch`] resolves when the connection must end.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A stream cancelled by the client within this time of its start is a premature reset
/// (Envoy's `overload.premature_reset_min_stream_lifetime_seconds`, default 1).
pub const PREMATURE_RESET_LIFETIME: Duration = Duration::from_secs(1);
/// Envoy's `overload.premature_reset_total_stream_count` (default 500): once this many streams
/// closed, a connection is closed when half of them were premature resets; before that, when
/// premature resets reach half of it.
pub const PREMATURE_RESET_TOTAL: u64 = 500;

/// The timeouts a connection is held to; `None` turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub request_headers: Option<Duration>,
    pub idle: Option<Duration>,
    /// How long an HTTP/1 connection waits between requests before it is parked.
    pub park: Option<Duration>,
}

/// Why [`Activity::watch`] says the connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A request head (or the first request) did not arrive in time: close at once.
    HeadersTimeout,
    /// Nothing in flight for the idle timeout: close gracefully (GOAWAY on HTTP/2).
    Idle,
    /// Mostly premature resets: close at once, as Envoy aborts such a connection.
    TooManyResets,
    /// An HTTP/1 connection between requests (nothing in flight, no request body still
    /// arriving, no byte of the next head) for [`Timeouts::park`]: park it. Not said again
    /// until the parking is done or called off ([`Activity::request_park`]).
    Park,
}

#[derive(Debug)]
struct State {
    /// Requests in flight: from the service call until the response body is done.
    active: usize,
    /// Request bodies hyper may still be reading (see [`ClientBody`]).
    bodies: usize,
    /// When the current request head started arriving (the connection's start for the
    /// first), while no request is in flight.
    head_since: Option<Instant>,
    /// When the last request finished: its response sent and its body read.
    idle_since: Instant,
    /// Whether the connection speaks HTTP/2: after its first stream, bytes between requests
    /// are PINGs and WINDOW_UPDATEs, not a request head, so they arm no timer.
    http2: bool,
    started_streams: u64,
    closed_streams: u64,
    premature_resets: u64,
    /// The first bytes were read (protocol known).
    seen_bytes: bool,
    /// What the connection's watch sleeps to (`None`: only to a change), and the timeouts it
    /// was given, as it last looked: changes that bring no deadline nearer than that do not
    /// wake it (a wake-up is a poll of the whole connection).
    watch_until: Option<Instant>,
    watch_timeouts: Option<Timeouts>,
}

impl State {
    /// Whether the watch, as it last looked, wakes by `due` anyway.
    fn watch_wakes_by(&self, due: Option<Instant>) -> bool {
        match (due, self.watch_until) {
            (None, _) => true,
            (Some(due), Some(wakes)) => wakes <= due,
            (Some(_), None) => false,
        }
    }

    /// The park delay, if this connection may be parked (HTTP/1, not being parked already).
    fn park_delay(&self, t: Timeouts, parking: bool) -> Option<Duration> {
        t.park.filter(|_| !self.http2 && !parking)
    }

    /// How soon a connection idle from now could be closed or parked.
    fn soonest_end(&self, t: Timeouts, parking: bool) -> Option<Duration> {
        t.idle.into_iter().chain(self.park_delay(t, parking)).min()
    }
}

#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    /// Cheap check for the read path: whether a read may arm the headers timer.
    arm_on_read: AtomicBool,
    abusive: AtomicBool,
    /// A park was asked for and is not yet done or called off.
    parking: AtomicBool,
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Activity {
            state: Mutex::new(State {
                active: 0,
                bodies: 0,
                head_since: Some(now),
                idle_since: now,
                http2: false,
                started_streams: 0,
                closed_streams: 0,
                premature_resets: 0,
                seen_bytes: false,
                watch_until: None,
                watch_timeouts: None,
            }),
            arm_on_read: AtomicBool::new(true),
            abusive: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: take it back.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called with the bytes of every read from the client.
    fn on_read(&self, data: &[u8]) {
        if data.is_empty() || !self.arm_on_read.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.lock();
        if !s.seen_bytes {
            s.seen_bytes = true;
            s.http2 = data.starts_with(b"PRI * HTTP/2.0");
        }
        // Bytes of a request body still arriving after its response are not a new head.
        let arms = s.active == 0 && s.bodies == 0 && !(s.http2 && s.started_streams > 0);
        if arms && s.head_since.is_none() {
            let now = Instant::now();
            s.head_since = Some(now);
            // The watch is woken only if it would not wake up before the head's deadline
            // anyway (the park's deadline, nearer, usually comes first): a wake-up costs a
            // poll of the whole connection, and a head starts with every request.
            let due = s
                .watch_timeouts
                .and_then(|t| t.request_headers)
                .map(|t| now + t);
            let in_time = s.watch_wakes_by(due);
            drop(s);
            if !in_time {
                self.changed.notify_one();
            }
        }
        self.arm_on_read.store(false, Ordering::Relaxed);
    }

    /// The connection speaks HTTP/1, as a parked connection is known to (its next bytes are
    /// not read through [`Watched`] first).
    pub fn speaks_http1(&self) {
        let mut s = self.lock();
        s.seen_bytes = true;
        s.http2 = false;
    }

    /// The connection speaks HTTP/2, as its preface said (the first read alone may be too
    /// short to tell).
    pub fn speaks_http2(&self) {
        let mut s = self.lock();
        s.seen_bytes = true;
        s.http2 = true;
    }

    /// A request's head is complete and its handling starts.
    pub fn stream_started(self: &Arc<Self>) -> StreamGuard {
        let now = Instant::now();
        let mut s = self.lock();
        s.active += 1;
        s.started_streams += 1;
        s.head_since = None;
        self.arm_on_read.store(false, Ordering::Relaxed);
        // Busy, nothing ends the connection, but it could idle out or park this soon after
        // the request ([`Next::Look`]); the watch is woken only if it would sleep past that
        // (the first request's headers timeout, say), not with every request.
        let due = s
            .watch_timeouts
            .and_then(|t| s.soonest_end(t, self.parking()))
            .map(|d| now + d);
        let in_time = s.watch_wakes_by(due);
        drop(s);
        if !in_time {
            self.changed.notify_one();
        }
        StreamGuard {
            activity: self.clone(),
            started: now,
            responded: false,
        }
    }

    fn stream_ended(&self, started: Instant, responded: bool) {
        let mut s = self.lock();
        s.active = s.active.saturating_sub(1);
        s.closed_streams += 1;
        if !responded && started.elapsed() < PREMATURE_RESET_LIFETIME {
            s.premature_resets += 1;
        }
        let abusive = premature_resets_excessive(s.premature_resets, s.closed_streams);
        if abusive {
            self.abusive.store(true, Ordering::Relaxed);
        }
        let idle = s.active == 0 && s.bodies == 0;
        if idle {
            s.idle_since = Instant::now();
            // Bytes from now on start the next request head (HTTP/1).
            self.arm_on_read
                .store(!(s.http2 && s.started_streams > 0), Ordering::Relaxed);
        }
        drop(s);
        // Only this ends the connection at once; becoming idle brings no deadline nearer
        // than the one the watch looks again at ([`Next::Look`]).
        if abusive {
            self.changed.notify_one();
        }
    }

    /// Marks a park as asked for ([`Ending::Park`] is not said again meanwhile), or with
    /// `false`, as done or called off.
    pub fn request_park(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    pub fn parking(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }

    /// When an idle timeout of `idle` closes the connection if nothing happens (parked, it
    /// has nothing in flight).
    pub fn idle_deadline(&self, idle: Option<Duration>) -> Option<Instant> {
        idle.map(|t| self.lock().idle_since + t)
    }

    /// Resolves when the connection must end, by `timeouts` or for premature resets, or (with
    /// [`Timeouts::park`]) when it should be parked.
    pub async fn watch(&self, timeouts: Timeouts) -> Ending {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so a change in between is not missed.
            changed.as_mut().enable();
            if self.abusive.load(Ordering::Relaxed) {
                return Ending::TooManyResets;
            }
            match self.deadline(timeouts) {
                Next::End(at, ending) if at <= Instant::now() => return ending,
                Next::End(at, _) | Next::Look(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
                Next::Wait => changed.await,
            }
        }
    }
}

/// What [`Activity::watch`] does next if nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The connection ends (or parks) then.
    End(Instant, Ending),
    /// Busy, nothing ends it; it could idle out or park no sooner than this, so the watch
    /// looks again then (instead of being woken when the last stream ends, with every
    /// request).
    Look(Instant),
    /// Nothing can end it but a change.
    Wait,
}

impl Activity {
    /// The next thing to happen if nothing changes, and when; recorded as what
    /// [`Activity::watch`] now sleeps to, so that a head or a stream starting
    /// ([`Activity::on_read`], [`Activity::stream_started`]) wakes it only when that brings a
    /// nearer deadline.
    fn deadline(&self, timeouts: Timeouts) -> Next {
        let mut s = self.lock();
        let next = next_deadline(&s, timeouts, self.parking());
        s.watch_until = match next {
            Next::End(at, _) | Next::Look(at) => Some(at),
            Next::Wait => None,
        };
        s.watch_timeouts = Some(timeouts);
        next
    }

    fn body_ended(&self) {
        let mut s = self.lock();
        s.bodies = s.bodies.saturating_sub(1);
        if s.bodies == 0 && s.active == 0 {
            s.idle_since = Instant::now();
            // Bytes from now on start the next request head (HTTP/1).
            self.arm_on_read
                .store(!(s.http2 && s.started_streams > 0), Ordering::Relaxed);
            // No wake-up: the watch looks again by the time an idle connection could end
            // ([`Next::Look`]).
        }
    }
}

/// What ends or parks a connection in state `s` next if nothing changes, and when.
fn next_deadline(s: &State, timeouts: Timeouts, parking: bool) -> Next {
    // A request body still arriving after its response keeps the connection busy.
    if s.active > 0 || s.bodies > 0 {
        // Idle from now at the earliest, so ended or parked no sooner than this.
        let soonest = s.soonest_end(timeouts, parking);
        return soonest.map_or(Next::Wait, |t| Next::Look(Instant::now() + t));
    }
    if let Some(since) = s.head_since {
        return timeouts
            .request_headers
            .map_or(Next::Wait, |t| Next::End(since + t, Ending::HeadersTimeout));
    }
    let idle = timeouts.idle.map(|t| (s.idle_since + t, Ending::Idle));
    let park = s
        .park_delay(timeouts, parking)
        .map(|t| (s.idle_since + t, Ending::Park));
    let next = match (idle, park) {
        (Some(i), Some(p)) if p.0 < i.0 => Some(p),
        (Some(i), _) => Some(i),
        (None, p) => p,
    };
    next.map_or(Next::Wait, |(at, ending)| Next::End(at, ending))
}

/// Envoy's rule (`ConnectionManagerImpl::maybeDrainDueToPrematureResets`).
fn premature_resets_excessive(premature: u64, closed: u64) -> bool {
    if closed < PREMATURE_RESET_TOTAL {
        premature * 2 >= PREMATURE_RESET_TOTAL
    } else {
        premature * 2 >= closed
    }
}

/// One request in flight. Dropped when its response body ends (or is dropped); dropped
/// before [`StreamGuard::responded`], it was cancelled by the client.
#[derive(Debug)]
pub struct StreamGuard {
    activity: Arc<Activity>,
    started: Instant,
    responded: bool,
}

impl StreamGuard {
    pub fn responded(&mut self) {
        self.responded = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.activity.stream_ended(self.started, self.responded);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub struct Tracked<B> {
    inner: B,
    guard: Option<StreamGuard>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        Tracked {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Done: the request is no longer in flight, even if hyper keeps the body.
            self.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body as hyper reads it from the client, counted by the connection's
/// [`Activity`] until it ends or is dropped: hyper may still be reading it after the response
/// is done (an upload the upstream answered early), and a connection must not be parked
/// then. Or one the gateway's own server read whole with its head.
pub struct ClientBody {
    inner: Inner,
    activity: Option<Arc<Activity>>,
}

/// Where a request body comes from.
enum Inner {
    /// hyper's server, as the client sends it.
    Streamed(Incoming),
    /// Read whole with the head by the gateway's own server; `None` once given out (or if
    /// the request had no body).
    Whole(Option<Bytes>),
}

impl ClientBody {
    /// Counts `inner` on `activity` unless it has already ended.
    pub fn new(inner: Incoming, activity: &Arc<Activity>) -> Self {
        let activity = (!inner.is_end_stream()).then(|| {
            activity.lock().bodies += 1;
            activity.clone()
        });
        ClientBody {
            inner: Inner::Streamed(inner),
            activity,
        }
    }

    /// The body of a request that has none.
    pub fn empty() -> Self {
        ClientBody::whole(Bytes::new())
    }

    /// A body read whole already: nothing more arrives for it, so it is not counted on the
    /// connection's activity.
    pub fn whole(data: Bytes) -> Self {
        ClientBody {
            inner: Inner::Whole((!data.is_empty()).then_some(data)),
            activity: None,
        }
    }

    fn ended(&mut self) {
        if let Some(a) = self.activity.take() {
            a.body_ended();
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.ended();
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let inner = match &mut self.inner {
            Inner::Whole(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Streamed(inner) => inner,
        };
        let frame = Pin::new(&mut *inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || inner.is_end_stream() {
            self.ended();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Whole(data) => data.is_none(),
            Inner::Streamed(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Whole(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Streamed(inner) => inner.size_hint(),
        }
    }
}

/// The client's side of a connection, telling its [`Activity`] when bytes arrive.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Some(new) = buf.filled().get(before..)
        {
            self.activity.on_read(new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoys_premature_reset_rule() {
        // Before 500 closed streams: 250 premature resets close the connection.
        assert!(!premature_resets_excessive(249, 300));
        assert!(premature_resets_excessive(250, 300));
        // After: half of the closed streams.
        assert!(!premature_resets_excessive(400, 1000));
        assert!(premature_resets_excessive(500, 1000));
        // Ordinary traffic with the odd cancellation never trips it.
        assert!(!premature_resets_excessive(10, 100_000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_must_arrive_within_the_headers_timeout() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(3600)),
            park: None,
        };
        let started = Instant::now();
        assert_eq!(a.watch(t).await, Ending::HeadersTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_the_last_response_and_headers_timed_from_the_first_byte() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            park: None,
        };
        a.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let mut g = a.stream_started();
        g.responded();
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(g);
        let idle_from = Instant::now();
        assert_eq!(a.watch(t).await, Ending::Idle);
        assert_eq!(idle_from.elapsed(), Duration::from_secs(60));

        // A new request head starting arms the headers timer from its first byte.
        a.on_read(b"GET");
        let from = Instant::now();
        assert_eq!(a.watch(t).await, Ending::HeadersTimeout);
        assert_eq!(from.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_starting_while_the_watch_sleeps_is_timed_from_its_first_byte() {
        // The watch sleeps to the idle timeout (far) or to the park (near) when the head
        // starts: either way the head's own deadline ends the connection.
        for park in [None, Some(Duration::from_secs(1))] {
            let a = Activity::new();
            let t = Timeouts {
                request_headers: Some(Duration::from_secs(10)),
                idle: Some(Duration::from_secs(3600)),
                park,
            };
            a.on_read(b"GET / HTTP/1.1\r\n\r\n");
            let mut g = a.stream_started();
            g.responded();
            drop(g);
            let watch = a.watch(t);
            tokio::pin!(watch);
            let early = tokio::time::timeout(Duration::from_millis(500), &mut watch).await;
            assert!(early.is_err(), "{park:?}: {early:?}");
            a.on_read(b"GET");
            let from = Instant::now();
            assert_eq!(watch.await, Ending::HeadersTimeout, "{park:?}");
            assert_eq!(from.elapsed(), Duration::from_secs(10), "{park:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_request_of_a_watched_connection_parks_it_on_time() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            park: Some(Duration::from_secs(1)),
        };
        // The watch sleeps to the first request's headers timeout, 10 s away.
        let watch = a.watch(t);
        tokio::pin!(watch);
        let early = tokio::time::timeout(Duration::from_millis(100), &mut watch).await;
        assert!(early.is_err(), "{early:?}");
        a.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let mut g = a.stream_started();
        let busy = tokio::time::timeout(Duration::from_secs(3), &mut watch).await;
        assert!(busy.is_err(), "a busy connection ended: {busy:?}");
        g.responded();
        drop(g);
        let from = Instant::now();
        assert_eq!(watch.await, Ending::Park);
        assert_eq!(from.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_do_not_arm_the_headers_timer() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            park: None,
        };
        a.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        let mut g = a.stream_started();
        g.responded();
        drop(g);
        a.on_read(b"\0\0\x08\x06\0\0\0\0\0ping-ping");
        let from = Instant::now();
        assert_eq!(a.watch(t).await, Ending::Idle);
        assert_eq!(from.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_timed_out_and_idles_out_after_it() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(1)),
            idle: Some(Duration::from_secs(1)),
            park: None,
        };
        let g = a.stream_started();
        let watch = a.watch(t);
        tokio::pin!(watch);
        assert!(
            tokio::time::timeout(Duration::from_secs(100), &mut watch)
                .await
                .is_err()
        );
        // Not woken by the request's end, it still idles the connection out on time.
        drop(g);
        let idle_from = Instant::now();
        assert_eq!(watch.await, Ending::Idle);
        assert_eq!(idle_from.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn http1_connections_park_after_the_delay_once_then_idle_out() {
        let a = Activity::new();
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            park: Some(Duration::from_secs(1)),
        };
        // Not while the first request is awaited: the headers timeout runs then.
        assert_eq!(a.watch(t).await, Ending::HeadersTimeout);
        a.on_read(b"GET / HTTP/1.1\r\n\r\n");
        let mut g = a.stream_started();
        g.responded();
        drop(g);
        let from = Instant::now();
        assert_eq!(a.watch(t).await, Ending::Park);
        assert_eq!(from.elapsed(), Duration::from_secs(1));
        // Asked for, it is not said again; the idle timeout still runs.
        a.request_park(true);
        assert_eq!(a.watch(t).await, Ending::Idle);
        assert_eq!(from.elapsed(), Duration::from_secs(60));
        // Called off, it is said again.
        a.request_park(false);
        assert_eq!(a.watch(t).await, Ending::Park);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_and_heads_in_progress_do_not_park() {
        let t = Timeouts {
            request_headers: Some(Duration::from_secs(10)),
            idle: Some(Duration::from_secs(60)),
            park: Some(Duration::from_secs(1)),
        };
        let h2 = Activity::new();
        h2.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(h2.stream_started());
        let from = Instant::now();
        assert_eq!(h2.watch(t).await, Ending::Idle);
        assert_eq!(from.elapsed(), Duration::from_secs(60));

        let h1 = Activity::new();
        h1.on_read(b"GET / HTTP/1.1\r\n\r\n");
        drop(h1.stream_started());
        h1.on_read(b"GET /next HT");
        let from = Instant::now();
        assert_eq!(h1.watch(t).await, Ending::HeadersTimeout);
        assert_eq!(from.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn cancelled_streams_close_the_connection() {
        let a = Activity::new();
        for _ in 0..PREMATURE_RESET_TOTAL / 2 {
            drop(a.stream_started());
        }
        let t = Timeouts {
            request_headers: None,
            idle: None,
            park: None,
        };
        assert_eq!(a.watch(t).await, Ending::TooManyResets);
    }
}
