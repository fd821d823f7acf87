//! Serving one downstream connection: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the
//! same port, told apart by the HTTP/2 preface. HTTP/1.1 connections can be upgraded
//! (WebSocket): the handler then splices them to the upstream's. An HTTP/1.1 connection quiet
//! between requests is parked ([`crate::parking`]): its task ends, and its listener's lot
//! starts it again, with a new hyper connection, when its next request arrives.
//!
//! Limits of the HTTP libraries are set here; the timeouts and the premature-reset rule they
//! lack are enforced by the connection's [`Activity`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use crate::Gateway;
use crate::activity::{Activity, ClientBody, Ending, Timeouts, Tracked, Watched};
use crate::drain::DrainWatch;
use crate::edge::EdgeSettings;
use crate::h1;
use crate::handler::{ConnInfo, TlsInfo, handle};
use crate::parking::{Detach, Lot, Parkable, Parked, Protocol, Resting};
use crate::telemetry::TelemetryBody;
use crate::woken::OnWake;

/// Envoy's limits: 60 KiB of request headers, 100 headers (431 beyond).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
pub(crate) const MAX_HEADERS: usize = 100;
/// HTTP/2 streams the client reset before the gateway accepted them, at most; one more gets
/// GOAWAY `ENHANCE_YOUR_CALM` (h2's rapid-reset guard, kept at its default, made explicit so
/// an upgrade of the library cannot loosen it).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams the gateway may reset because of the client's protocol errors, at most,
/// before GOAWAY `ENHANCE_YOUR_CALM` (the "MadeYouReset" flood, CVE-2025-8671).
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// hyper's settings for both protocols, made once for every connection.
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Whether HTTP/1 clients may half-close (see [`Protocols::with_half_close`]).
    half_close: bool,
}

impl Protocols {
    /// For the fuzz harnesses: a client closing its side once it has sent everything (as they
    /// do) lets the requests it sent finish, so every input gets its answers. The gateway
    /// itself ends a connection at once when the client closes, as Envoy does.
    pub(crate) fn with_half_close(mut self) -> Self {
        self.http1.half_close(true);
        self.half_close = true;
        self
    }
}

pub fn protocols(edge: &EdgeSettings) -> Protocols {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        // hyper's timer runs from the moment it waits for a head, so on a keep-alive
        // connection it would also be an idle timeout; [`Activity`] times heads from their
        // first byte instead (Envoy's `request_headers_timeout`).
        .header_read_timeout(None)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(Some(edge.h2_max_concurrent_streams))
        .initial_stream_window_size(edge.h2_initial_stream_window)
        .initial_connection_window_size(edge.h2_initial_connection_window)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_ACCEPT_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        // WebSocket over HTTP/2 (RFC 8441 extended CONNECT), as Envoy allows on gateways.
        .enable_connect_protocol()
        // A larger header block gets 431; CONTINUATION frames beyond what this needs get
        // GOAWAY `ENHANCE_YOUR_CALM` (h2 counts them), so a flood cannot grow memory.
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    Protocols {
        http1,
        http2,
        half_close: false,
    }
}

/// What a connection keeps of its listener for as long as it lives, parked or not.
pub struct FromListener {
    /// The gateway's drain and the listener's (when its port goes).
    pub drain: [DrainWatch; 2],
    /// Where the connection waits while it is parked.
    pub lot: Lot,
    /// The listener's connection slot (`--max-connections`) the connection holds.
    pub slot: Option<OwnedSemaphorePermit>,
}

/// Serves one client connection. Set up before the returned future is first polled, so that
/// the future carries only what the connection needs (not its arguments as well).
pub fn connection<S>(
    gw: Arc<Gateway>,
    protocols: Arc<Protocols>,
    stream: S,
    mut info: ConnInfo,
    from: FromListener,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let FromListener { drain, lot, slot } = from;
    info.drain = Some(drain[0].clone());
    let conn = Conn {
        held: Held {
            _open: GaugeGuard::new(&gw.metrics.active_connections),
            gw,
            protocols,
            lot,
            _slot: slot,
        },
        info: Arc::new(info),
    };
    let (io, watch) = conn.start(stream, drain, None);
    serve(conn, io, watch)
}

type Io<S> = Parkable<Watched<S>>;

/// What a client connection keeps from one hyper connection to the next. Its [`Activity`]
/// and the [`Watch`] on it are made anew each time it wakes from its lot.
struct Conn {
    held: Held,
    /// Shared with the requests in flight.
    info: Arc<ConnInfo>,
}

/// What a connection holds for as long as it lives, served or parked.
struct Held {
    gw: Arc<Gateway>,
    protocols: Arc<Protocols>,
    lot: Lot,
    _open: GaugeGuard,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Conn {
    /// What serving `stream` takes besides the connection; `woken_by` is the byte that woke
    /// a parked connection (read by its lot), which starts its next HTTP/1 request.
    fn start<S>(&self, stream: S, drain: [DrainWatch; 2], woken_by: Option<u8>) -> (Io<S>, Watch)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let activity = Activity::new();
        let [shutdown, closing] = drain;
        let watch = Watch {
            timeouts: self.held.gw.edge.timeouts(),
            activity: activity.clone(),
            shutdown,
            closing,
            peer: self.info.peer,
        };
        let mut io = Parkable::new(Watched::new(stream, activity.clone()), activity);
        if let Some(byte) = woken_by {
            watch.activity.speaks_http1();
            io.unpark(&[byte]);
        }
        (io, watch)
    }

    fn service(&self, watch: &Watch) -> Service {
        Service {
            gw: self.held.gw.clone(),
            info: self.info.clone(),
            activity: watch.activity.clone(),
        }
    }

    fn ended(&self, result: Result<(), ConnError>) {
        if let Err(e) = result {
            tracing::debug!(peer = %self.info.peer, "connection ended: {e}");
        }
    }
}

async fn serve<S>(conn: Conn, mut io: Io<S>, mut watch: Watch)
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let protocol = match watch.unless_ending(io.sniff()).await {
        Some(Ok(Some(p))) => p,
        Some(Err(e)) => return conn.ended(Err(ConnError::Io(e))),
        Some(Ok(None)) | None => return,
    };
    if protocol == Protocol::Http1 {
        return http1(conn, io, watch).await;
    }
    // HTTP/2 is never parked: h2 owns the connection until it ends.
    watch.timeouts.park = None;
    watch.activity.speaks_http2();
    let h2 = conn
        .held
        .protocols
        .http2
        .serve_connection(TokioIo::new(io), conn.service(&watch));
    let mut h2 = Box::pin(h2);
    let (_, result) = drive(h2.as_mut(), &mut watch).await;
    conn.ended(result.unwrap_or(Ok(())).map_err(ConnError::Http));
}

/// Serves HTTP/1 requests until the connection closes or is parked (the lot then has it, and
/// this task ends): plain requests with the gateway's own server ([`crate::h1`]), and from
/// the first other one (a body, an upgrade, a malformed head) with hyper, until hyper's
/// connection is parked or sees a request start in its buffer at its end.
async fn http1<S>(conn: Conn, mut io: Io<S>, mut watch: Watch)
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let mut own = true;
    let result = loop {
        watch.activity.request_park(false);
        let next = if own {
            own_segment(&conn, io, &mut watch).await
        } else {
            hyper_segment(&conn, io, &mut watch).await
        };
        match next {
            Next::Own(back) => (io, own) = (back, true),
            Next::Hyper(back) => (io, own) = (back, false),
            Next::Park(back) => return park(conn, back, watch),
            Next::End(result) => break result,
        }
    };
    conn.ended(result);
}

/// What serves a connection next, once one server has stopped.
enum Next<S> {
    Own(Io<S>),
    Hyper(Io<S>),
    Park(Io<S>),
    End(Result<(), ConnError>),
}

/// Plain requests, served by the gateway's own server until it stops.
async fn own_segment<S>(conn: &Conn, io: Io<S>, watch: &mut Watch) -> Next<S>
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let half_close = conn.held.protocols.half_close;
    // Boxed, as hyper's connection is: the connection's task holds a pointer to it, not
    // its few hundred bytes of state, and parking frees it with its buffers.
    let mut server = Box::pin(h1::Server::new(io, conn.service(watch), half_close));
    let (draining, result) = drive(server.as_mut(), watch).await;
    let ended = match result {
        // Cut off at once (headers timeout): dropping the server closes the socket.
        None => return Next::End(Ok(())),
        Some(Err(e)) => return Next::End(Err(ConnError::Io(e))),
        Some(Ok(ended)) => ended,
    };
    let (mut io, unread) = Pin::into_inner(server).into_parts();
    match ended {
        h1::Ended::Closed => Next::End(Ok(())),
        h1::Ended::Handoff => {
            tracing::trace!(peer = %conn.info.peer, "request not plain: hyper serves the connection");
            io.unpark(&unread);
            Next::Hyper(io)
        }
        h1::Ended::Parked if draining => Next::End(Ok(())),
        h1::Ended::Parked => {
            io.unpark(&[]);
            Next::Park(io)
        }
    }
}

/// One hyper connection, from the bytes the own server handed over, until it ends or is
/// parked.
async fn hyper_segment<S>(conn: &Conn, io: Io<S>, watch: &mut Watch) -> Next<S>
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let h1 = conn
        .held
        .protocols
        .http1
        .serve_connection(TokioIo::new(io), conn.service(watch))
        .with_upgrades();
    // Boxed: hyper's connection state is then freed when the connection is parked.
    let mut h1 = Box::pin(h1);
    let (draining, result) = drive(h1.as_mut(), watch).await;
    if let Some(Err(e)) = result {
        return Next::End(Err(ConnError::Http(e)));
    }
    // `None`: upgraded (WebSocket, CONNECT); the handler has the connection.
    let Some(parts) = Pin::into_inner(h1).into_parts() else {
        return Next::End(Ok(()));
    };
    // Taken apart here: `parts` held across an await would grow every connection's task.
    let hyper::server::conn::http1::Parts {
        io: tio, read_buf, ..
    } = parts;
    let mut io = tio.into_inner();
    if draining || !io.parked() {
        return Next::End(Ok(()));
    }
    io.unpark(&read_buf);
    if io.has_prefix() {
        // A request started arriving as hyper stopped: the own server takes it.
        Next::Own(io)
    } else {
        Next::Park(io)
    }
}

/// Hands a connection between requests, with nothing read of the next, to its lot.
fn park<S>(conn: Conn, io: Io<S>, watch: Watch)
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let deadline = watch.activity.idle_deadline(watch.timeouts.idle);
    let Watch {
        shutdown, closing, ..
    } = watch;
    let lot = conn.held.lot.clone();
    let stream = match lot.rest(io.into_inner().into_inner()) {
        Ok(stream) => stream,
        Err(e) => return conn.ended(Err(ConnError::Io(e))),
    };
    let Conn { held, info } = conn;
    // No request holds it any more: taken out of its `Arc`, it shares the parked
    // connection's one allocation.
    let info = Arc::try_unwrap(info).unwrap_or_else(|shared| ConnInfo::clone(&shared));
    // `info.drain` is the same watch as `drain[0]`; given back on waking.
    let ConnInfo {
        port,
        peer,
        local,
        tls,
        peer_value: _,
        drain: _,
    } = info;
    let parked = ParkedConn {
        held,
        port,
        peer,
        local,
        tls,
        drain: [shutdown, closing],
        stream,
        woken_by: 0,
    };
    lot.park(Box::new(parked), deadline);
}

/// A connection in its listener's lot, between two requests: no HTTP state and no task, and
/// one allocation (made as it parks, so it does not keep alive the memory pages of what was
/// allocated with the connection and freed since). Its connection info is laid out flat, so
/// that a plain one fits in 192 bytes.
struct ParkedConn<S> {
    held: Held,
    port: u16,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<Box<TlsInfo>>,
    drain: [DrainWatch; 2],
    stream: Resting<S>,
    /// The next request's first byte, once read.
    woken_by: u8,
}

impl<S> Parked for ParkedConn<S>
where
    S: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let first = ready!(self.stream.poll_first_byte(cx))?;
        self.woken_by = first.unwrap_or(0);
        Poll::Ready(Ok(first.is_some()))
    }

    #[cfg(target_os = "linux")]
    fn detached_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.stream.detached_fd()
    }

    fn resume(self: Box<Self>) {
        let ParkedConn {
            held,
            port,
            peer,
            local,
            tls,
            drain,
            stream,
            woken_by,
        } = *self;
        let info = ConnInfo {
            tls,
            drain: Some(drain[0].clone()),
            ..ConnInfo::plain(port, peer, local)
        };
        let conn = Conn {
            held,
            info: Arc::new(info),
        };
        let stream = match stream.wake() {
            Ok(stream) => stream,
            Err(e) => return conn.ended(Err(ConnError::Io(e))),
        };
        let (io, watch) = conn.start(stream, drain, Some(woken_by));
        tokio::spawn(http1(conn, io, watch));
    }

    fn expire(self: Box<Self>) {
        log_ending(self.peer, Ending::Idle);
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Http(hyper::Error),
    #[error("{0}")]
    Io(std::io::Error),
}

/// What a connection ends for, besides its client: the gateway's drain, the listener's
/// removal, and the [`Activity`]'s timeouts.
struct Watch {
    timeouts: Timeouts,
    activity: Arc<Activity>,
    shutdown: DrainWatch,
    closing: DrainWatch,
    peer: SocketAddr,
}

/// One more on a gauge while it lives.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Watch {
    /// `fut`'s output, or `None` if the connection must end first (nothing is in flight:
    /// it is closed at once).
    async fn unless_ending<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let timeouts = Timeouts {
            park: None,
            ..self.timeouts
        };
        tokio::select! {
            out = fut => Some(out),
            () = self.shutdown.started() => None,
            () = self.closing.started() => None,
            ending = self.activity.watch(timeouts) => {
                self.log(ending);
                None
            }
        }
    }

    fn log(&self, ending: Ending) {
        log_ending(self.peer, ending);
    }
}

fn log_ending(peer: SocketAddr, ending: Ending) {
    match ending {
        Ending::Idle => tracing::debug!(%peer, "idle timeout: closing the connection"),
        Ending::HeadersTimeout => {
            tracing::debug!(%peer, "request headers timeout: connection closed");
        }
        Ending::TooManyResets => {
            tracing::info!(%peer, "too many premature stream resets: connection closed");
        }
        Ending::Park => {}
    }
}

/// A connection's server that can be asked to finish what it is doing and close.
trait Graceful: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Graceful for h1::Server<S> {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        h1::Server::graceful_shutdown(self.get_mut());
    }
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Runs `conn` to its end, closing it gracefully on a drain or the idle timeout, at once on
/// the headers timeout or too many premature resets (`None`: it did not end by itself), and
/// parking it when the [`Activity`] says so (its reads then end it). Also says whether it
/// was asked to close.
async fn drive<C: Graceful>(mut conn: Pin<&mut C>, watch: &mut Watch) -> (bool, Option<C::Output>) {
    loop {
        // The watches are polled only when they were woken (`OnWake`), not with every
        // wake-up of the connection (at least two per request); the connection first.
        let ending = {
            let watches = std::pin::pin!(async {
                tokio::select! {
                    () = watch.shutdown.started() => None,
                    () = watch.closing.started() => None,
                    ending = watch.activity.watch(watch.timeouts) => Some(ending),
                }
            });
            tokio::select! {
                biased;
                r = conn.as_mut() => return (false, Some(r)),
                ending = OnWake::new(watches) => ending,
            }
        };
        let Some(ending) = ending else { break };
        watch.log(ending);
        match ending {
            // The next poll of `conn` reads, and the read parks it unless a request came.
            Ending::Park => watch.activity.request_park(true),
            Ending::Idle => break,
            // Dropping the connection closes the socket: nothing more is read or answered.
            Ending::HeadersTimeout | Ending::TooManyResets => return (true, None),
        }
    }
    watch.activity.request_park(false);
    conn.as_mut().graceful_shutdown();
    (true, Some(conn.await))
}

/// The service every server of one client connection calls: hyper's, and the own server
/// of plain HTTP/1.1 requests.
#[derive(Clone)]
pub(crate) struct Service {
    gw: Arc<Gateway>,
    info: Arc<ConnInfo>,
    pub(crate) activity: Arc<Activity>,
}

pub(crate) type Handled = Result<http::Response<Tracked<TelemetryBody>>, Infallible>;
/// Boxed: hyper keeps room for one request future in every connection, idle or not, and the
/// handler's future is kilobytes. Boxed, the room is taken only while a request runs.
pub(crate) type ServiceFuture = Pin<Box<dyn Future<Output = Handled> + Send>>;

impl Service {
    /// Handles one request, counted as in flight on the connection until its response body
    /// is done.
    fn start(&self, req: Request<ClientBody>) -> ServiceFuture {
        let (gw, info) = (self.gw.clone(), self.info.clone());
        let mut stream = self.activity.stream_started();
        Box::pin(async move {
            let resp = handle(gw, &info, req).await;
            stream.responded();
            Ok(resp.map(|b| Tracked::new(b, stream)))
        })
    }

    /// A plain request of the own server, with its body read whole (empty if it has none).
    pub(crate) fn call_plain(&self, req: Request<()>, body: Bytes) -> ServiceFuture {
        self.start(req.map(|()| ClientBody::whole(body)))
    }
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = http::Response<Tracked<TelemetryBody>>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.start(req.map(|body| ClientBody::new(body, &self.activity)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands of idle keep-alive connections wait parked: what each holds is counted.
    /// mimalloc rounds 192 bytes to itself, and anything above to 224 or 256.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn a_parked_plain_connection_fits_in_192_bytes() {
        let size = std::mem::size_of::<ParkedConn<tokio::net::TcpStream>>();
        assert!(size <= 192, "a parked plain connection takes {size} bytes");
    }
}
