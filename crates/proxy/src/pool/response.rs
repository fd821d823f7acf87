//! A response body from an upstream connection. An HTTP/1.1 body is read straight from its
//! connection, which goes back to its pool once the body has been read to its end (and the
//! request has been sent whole); a body dropped before its end closes the connection, since
//! unread bytes would be left on it. An HTTP/2 body is hyper's stream.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::local_reply::LocalReply;

use super::codec::{BodyKind, Chunk, ChunkedDecoder};
use super::exchange::Outgoing;
use super::http1::{Conn, put_back};

pub struct PooledBody {
    inner: Inner,
    /// The route timeout, which runs until the response has been read to its end (Envoy's
    /// route timeout spans the whole response).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Kept until the body ends or is dropped: the request's circuit-breaker slot and its
    /// in-flight count on the endpoint.
    hold: Option<Box<dyn Send + Sync>>,
    /// The local address of the connection it came on (Envoy's `%UPSTREAM_LOCAL_ADDRESS%`).
    local: Option<SocketAddr>,
}

enum Inner {
    /// Boxed: the response is moved whole through every layer between the pool and the
    /// client's connection, and the connection is most of it.
    Http1(Box<Http1Body>),
    Http2(Incoming),
}

/// The idle list a connection goes back to.
pub(super) struct Return {
    pub(super) idle: Arc<Mutex<Vec<Conn>>>,
    pub(super) freed: Arc<Notify>,
}

/// An HTTP/1.1 response body, read from its connection.
pub(super) struct Http1Body {
    /// `None` once the body has ended (or failed) and the connection went back or closed.
    conn: Option<Conn>,
    reading: Reading,
    /// The rest of a request body still being sent.
    out: Option<Outgoing>,
    /// Where the connection goes when the exchange is over; `None` if it cannot be reused.
    back: Option<Return>,
    /// A 101: the connection is the caller's to take as a tunnel.
    switched: bool,
}

enum Reading {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Why an HTTP/1.1 response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error("upstream closed the connection before the response body ended")]
    Incomplete,
    #[error("invalid upstream response body: {0}")]
    Invalid(#[from] super::codec::HeadError),
    #[error("reading the upstream response body: {0}")]
    Io(#[from] io::Error),
}

impl Http1Body {
    pub(super) fn new(
        conn: Conn,
        kind: BodyKind,
        out: Outgoing,
        back: Option<Return>,
        switched: bool,
    ) -> Self {
        let reading = match kind {
            BodyKind::Empty => Reading::Done,
            BodyKind::Length(n) => Reading::Length(n),
            BodyKind::Chunked => Reading::Chunked(ChunkedDecoder::default()),
            BodyKind::UntilClose => Reading::UntilClose,
        };
        let mut body = Http1Body {
            conn: Some(conn),
            back: back.filter(|_| kind != BodyKind::UntilClose && !switched),
            out: (!out.is_done()).then_some(out),
            reading,
            switched,
        };
        if matches!(body.reading, Reading::Done) && !switched {
            body.end();
        }
        body
    }

    /// The body has ended: the connection goes back if the request was sent whole and
    /// nothing else was read from it; otherwise it is closed.
    fn end(&mut self) {
        self.reading = Reading::Done;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let back = self.back.take().filter(|_| conn.wire.read.is_empty());
        match self.out.take() {
            None => {
                if let Some(back) = back {
                    put_back(&back.idle, &back.freed, conn);
                }
            }
            // The upstream answered before the request was sent whole (an early response to
            // an upload): the rest still goes, as the client sends it, and only then may the
            // connection carry another request.
            Some(out) => {
                tokio::spawn(finish_request(conn, out, back));
            }
        }
    }

    /// Gives up the connection: it is closed.
    fn fail(&mut self) {
        self.reading = Reading::Done;
        self.conn = None;
        self.back = None;
        self.out = None;
    }

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // A streaming request body goes on while its response is read.
        if let Some(out) = self.out.as_mut() {
            match out.poll_send(&mut conn.wire.io, cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.out = None,
                Poll::Ready(Err(e)) => {
                    tracing::debug!("upstream request body: {e}");
                    self.out = None;
                    self.back = None;
                }
            }
        }
        loop {
            let wire = &mut conn.wire;
            let frame = match &mut self.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) if !wire.read.is_empty() => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(wire.read.len());
                    *left -= n as u64;
                    let data = wire.read.split_to(n).freeze();
                    Some(Frame::data(data))
                }
                Reading::Chunked(decoder) => match decoder.decode(&mut wire.read)? {
                    Chunk::Data(d) => Some(Frame::data(d)),
                    Chunk::End(Some(t)) => Some(Frame::trailers(t)),
                    Chunk::End(None) => {
                        self.end();
                        return Poll::Ready(None);
                    }
                    Chunk::More => None,
                },
                Reading::UntilClose if !wire.read.is_empty() => {
                    let data = wire.read.split().freeze();
                    Some(Frame::data(data))
                }
                Reading::Length(_) | Reading::UntilClose => None,
            };
            if let Some(frame) = frame {
                if self.finished() {
                    self.end();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            match ready!(wire.poll_fill(cx))? {
                0 if matches!(self.reading, Reading::UntilClose) => {
                    self.end();
                    return Poll::Ready(None);
                }
                0 => return Poll::Ready(Some(Err(UpstreamBodyError::Incomplete))),
                _ => {}
            }
        }
    }

    /// Whether the frame just taken was the body's last.
    fn finished(&self) -> bool {
        match &self.reading {
            Reading::Length(left) => *left == 0,
            Reading::Chunked(d) => d.is_done(),
            Reading::UntilClose => false,
            Reading::Done => true,
        }
    }
}

/// Sends the rest of a request whose response has already ended.
async fn finish_request(mut conn: Conn, mut out: Outgoing, back: Option<Return>) {
    let sent = std::future::poll_fn(|cx| out.poll_send(&mut conn.wire.io, cx)).await;
    match (sent, back) {
        (Ok(()), Some(back)) => put_back(&back.idle, &back.freed, conn),
        (Ok(()), None) => {}
        (Err(e), _) => tracing::debug!("upstream request body after its response: {e}"),
    }
}

impl PooledBody {
    pub(super) fn http1(body: Http1Body, local: Option<SocketAddr>) -> Self {
        PooledBody {
            inner: Inner::Http1(Box::new(body)),
            local,
            deadline: None,
            hold: None,
        }
    }

    /// An HTTP/2 response's body.
    pub fn http2(inner: Incoming, local: Option<SocketAddr>) -> Self {
        PooledBody {
            inner: Inner::Http2(inner),
            local,
            deadline: None,
            hold: None,
        }
    }

    /// The local address of the upstream connection, when known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Ends the body with an error if it is not complete by `at`.
    pub fn until(mut self, at: tokio::time::Instant) -> Self {
        if !self.is_end_stream() {
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        self
    }

    /// Keeps `hold` alive until the body ends.
    pub fn holding(mut self, hold: Box<dyn Send + Sync>) -> Self {
        if !self.is_end_stream() {
            self.hold = Some(hold);
        }
        self
    }

    /// After a 101 (Switching Protocols): the upstream connection, to carry the switched
    /// protocol's bytes. `None` for any other response, or once taken.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        let Inner::Http1(body) = &mut self.inner else {
            return None;
        };
        if !body.switched {
            return None;
        }
        body.switched = false;
        body.conn.take().map(|mut conn| {
            let ahead = std::mem::take(&mut conn.wire.read).freeze();
            Upgraded { conn, ahead }
        })
    }

    fn stop(&mut self) {
        self.hold = None;
        self.deadline = None;
        if let Inner::Http1(body) = &mut self.inner {
            body.fail();
        }
    }
}

/// The response body did not end within the route timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response timeout")]
pub struct BodyTimeout;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What cut a response body short, named as the failure before a response would be: the
/// route timeout, the upstream closing or resetting, or bytes that are not HTTP. The record
/// of the exchange takes its flag and, with
/// [`LocalReply::details_after_response_started`], Envoy's details.
pub fn body_failure(e: &(dyn std::error::Error + 'static)) -> LocalReply {
    if e.is::<BodyTimeout>() {
        return LocalReply::UpstreamTimeout;
    }
    if let Some(e) = e.downcast_ref::<UpstreamBodyError>() {
        return match e {
            UpstreamBodyError::Invalid(_) => LocalReply::UpstreamProtocolError,
            UpstreamBodyError::Incomplete | UpstreamBodyError::Io(_) => LocalReply::UpstreamReset,
        };
    }
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(reply) = s
            .downcast_ref::<h2::Error>()
            .and_then(super::http2::h2_failure)
        {
            return reply;
        }
        source = s.source();
    }
    super::http2::classify(e)
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(d) = self.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            // The connection has unread bytes: it is closed, not pooled.
            self.stop();
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        let frame = match &mut self.inner {
            Inner::Http1(body) => ready!(body.poll_data(cx)).map(|f| f.map_err(BoxError::from)),
            Inner::Http2(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|f| f.map_err(BoxError::from))
            }
        };
        match &frame {
            Some(Err(_)) => self.stop(),
            None => self.hold = None,
            Some(Ok(_)) if self.is_end_stream() => self.hold = None,
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(body) => matches!(body.reading, Reading::Done),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1(body) => match body.reading {
                Reading::Length(n) => SizeHint::with_exact(n),
                Reading::Done => SizeHint::with_exact(0),
                Reading::Chunked(_) | Reading::UntilClose => SizeHint::default(),
            },
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

/// An upstream connection after a 101, carrying the switched protocol: the bytes the
/// upstream sent after its response head come first. It holds the connection's pool slot.
pub struct Upgraded {
    conn: Conn,
    ahead: Bytes,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.conn.wire.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn.wire.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn.wire.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn.wire.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response_flags::ResponseFlags;

    #[test]
    fn a_body_cut_short_is_named_as_envoy_names_it() {
        let cases: [(BoxError, ResponseFlags, &str); 5] = [
            (Box::new(BodyTimeout), ResponseFlags::UT, "response_timeout"),
            (
                Box::new(UpstreamBodyError::Incomplete),
                ResponseFlags::UC,
                "upstream_reset_after_response_started{connection_termination}",
            ),
            (
                Box::new(UpstreamBodyError::Io(io::ErrorKind::ConnectionReset.into())),
                ResponseFlags::UC,
                "upstream_reset_after_response_started{connection_termination}",
            ),
            (
                Box::new(UpstreamBodyError::Invalid(
                    super::super::codec::HeadError::Chunked,
                )),
                ResponseFlags::UPE,
                "upstream_reset_after_response_started{protocol_error}",
            ),
            // A protocol error anywhere in an HTTP/2 error's chain.
            (
                Box::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)),
                ResponseFlags::UPE,
                "upstream_reset_after_response_started{protocol_error}",
            ),
        ];
        for (e, flag, details) in cases {
            let failure = body_failure(e.as_ref());
            assert_eq!(failure.flag(), flag, "{e}");
            assert_eq!(failure.details_after_response_started(), details, "{e}");
        }
    }
}
