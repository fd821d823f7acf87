//! One HTTP/1.1 exchange on an upstream connection, driven by the request's own task: the
//! request is written and the response head read here; the response body is read by whoever
//! reads it ([`super::response`]), which also sends what is left of a streaming request body,
//! since HTTP/1.1 is full duplex. There is no task per connection and no channel between a
//! request and its connection: each costs a wake-up and a poll of its own per request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http::Method;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::codec::{self, BodyShape, Framing, HeadError, RequestHead, ResponseHead};
use crate::body::UpstreamBody;
use crate::local_reply::LocalReply;

/// Room kept free in the read buffer before a read, and what is added when there is less.
const READ_ROOM: usize = 4 * 1024;
const READ_GROWTH: usize = 8 * 1024;
/// Request bytes gathered for one write: the head and as much of the body as is ready.
const WRITE_BATCH: usize = 64 * 1024;

/// An upstream connection's socket, plain or TLS.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An upstream connection's socket and the bytes read from it but not yet used.
pub(super) struct Connection {
    pub(super) io: Io,
    pub(super) read: BytesMut,
}

impl Connection {
    pub(super) fn new(io: Io) -> Self {
        Connection {
            io,
            read: BytesMut::new(),
        }
    }

    /// Whether the upstream closed the connection, or sent bytes no request asked for, while
    /// it sat idle. Nothing waits: a socket with nothing to read is open.
    pub(super) fn is_closed(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut scratch = [0u8; 64];
        let mut buf = ReadBuf::new(&mut scratch);
        // Ready is an end of stream, an error or unasked-for bytes: unusable all the same.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    /// Reads more into the buffer; `Ok(0)` is the upstream's end of stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_ROOM {
            self.read.reserve(READ_GROWTH);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// Why the request could not be written.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendFail {
    /// The client's body stream broke (a bad chunk, a reset) or grew past the limit (which
    /// the handler tells apart): the client's fault.
    #[error("request body: {0}")]
    Body(crate::body::BodyError),
    /// The client's body did not match the length it declared.
    #[error("request body length differs from Content-Length")]
    Length,
    #[error("writing the request: {0}")]
    Io(#[from] io::Error),
}

/// An HTTP/1.1 request on its way out: its encoded bytes and the body still to come.
pub struct Outgoing {
    out: BytesMut,
    /// Bytes of `out` already written.
    written: usize,
    /// The body left to encode; `None` once it has ended.
    body: Option<UpstreamBody>,
    framing: Framing,
    /// Body bytes encoded so far.
    sent: u64,
    /// Whether `out` was emptied to make room (so it no longer holds the whole request).
    emptied: bool,
    /// Whether the whole request has been written and flushed.
    done: bool,
    pub(super) is_head: bool,
    pub(super) upgrade: bool,
    idempotent: bool,
}

impl Outgoing {
    /// The request `head` with `body`, encoded for the wire (the head now, the body as it is
    /// sent).
    pub fn new(head: &RequestHead<'_>, body: UpstreamBody) -> Self {
        let shape = BodyShape::of(&body);
        let mut out = BytesMut::new();
        let framing = codec::write_request_head(&mut out, head, shape);
        let method = head.method;
        Outgoing {
            out,
            written: 0,
            body: (shape != BodyShape::Empty).then_some(body),
            framing,
            sent: 0,
            emptied: false,
            done: false,
            is_head: *method == Method::HEAD,
            upgrade: head.headers.contains_key(http::header::UPGRADE),
            idempotent: matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
        }
    }

    /// Whether the whole request has been written.
    pub(super) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the request can be written again, whole, on another connection: all of it is
    /// still in the buffer.
    fn replayable(&self) -> bool {
        self.body.is_none() && !self.emptied
    }

    /// Back to its first byte, for another connection.
    fn rewind(&mut self) {
        self.written = 0;
        self.done = false;
    }

    /// Writes what it can. Ready once the whole request is written and flushed.
    pub(super) fn poll_send(
        &mut self,
        io: &mut Io,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFail>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            self.fill(cx)?;
            let wrote = self.written < self.out.len();
            while let Some(rest) = self.out.get(self.written..).filter(|r| !r.is_empty()) {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, rest))?;
                if n == 0 {
                    return Poll::Ready(Err(SendFail::Io(io::ErrorKind::WriteZero.into())));
                }
                self.written += n;
            }
            if self.body.is_none() {
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            if !wrote {
                // The body has nothing more for now; it wakes the task when it has.
                ready!(Pin::new(&mut *io).poll_flush(cx))?;
                return Poll::Pending;
            }
            self.out.clear();
            self.written = 0;
            self.emptied = true;
        }
    }

    /// Encodes the body frames that are ready, up to a batch.
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<(), SendFail> {
        while self.out.len() < WRITE_BATCH {
            let Some(body) = self.body.as_mut() else {
                return Ok(());
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(None) => None,
                Poll::Ready(Some(Err(e))) => return Err(SendFail::Body(e)),
                Poll::Ready(Some(Ok(f))) => Some(f),
            };
            match frame.map(http_body::Frame::into_data) {
                Some(Ok(data)) => self.put_data(&data)?,
                Some(Err(f)) => self.finish(f.into_trailers().ok())?,
                None => self.finish(None)?,
            }
        }
        Ok(())
    }

    fn put_data(&mut self, data: &Bytes) -> Result<(), SendFail> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        match self.framing {
            // GET, HEAD and CONNECT with a body of unknown length: it is not sent (hyper's
            // client did the same).
            Framing::None => {}
            Framing::Length(n) if self.sent > n => return Err(SendFail::Length),
            Framing::Length(_) => self.out.put_slice(data),
            Framing::Chunked => codec::put_chunk(&mut self.out, data),
        }
        Ok(())
    }

    fn finish(&mut self, trailers: Option<http::HeaderMap>) -> Result<(), SendFail> {
        self.body = None;
        match self.framing {
            Framing::Chunked => codec::put_last_chunk(&mut self.out, trailers.iter().flatten()),
            Framing::Length(n) if self.sent != n => return Err(SendFail::Length),
            Framing::Length(_) | Framing::None => {}
        }
        Ok(())
    }
}

/// Why an exchange ended before a response head, and whether the request may go again on
/// another connection.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) reply: LocalReply,
    /// No byte of a response came, and the request is whole in its buffer and either was not
    /// written whole or may be repeated (an idempotent method): a connection the upstream
    /// closed while it was idle.
    pub(super) retry: bool,
}

/// What ended an exchange before its response head.
enum Stop {
    Send(SendFail),
    Head(HeadError),
    /// The upstream closed the connection (or reset it).
    Closed,
}

/// Writes the request on `conn` and reads the response head, skipping interim (1xx)
/// responses other than 101.
pub(super) async fn response_head(
    conn: &mut Connection,
    out: &mut Outgoing,
) -> Result<ResponseHead, Failure> {
    let mut write_failed = false;
    let mut answered = false;
    // Written at once. Waiting for the other requests ready now (Envoy's deferred write)
    // batches the writes and wakes a backend on the same host less often, but measured on
    // loopback it cost more than it saved: bench/README.md, "Own HTTP/1.1 upstream exchange".
    let result = std::future::poll_fn(|cx| {
        loop {
            if !write_failed {
                match out.poll_send(&mut conn.io, cx) {
                    Poll::Ready(Err(SendFail::Io(e))) => {
                        // The upstream may have answered before it stopped reading: read on.
                        tracing::debug!("upstream write failed: {e}");
                        write_failed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Stop::Send(e))),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            answered |= !conn.read.is_empty();
            let parsed = if conn.read.is_empty() {
                Ok(None)
            } else {
                codec::parse_response_head(&mut conn.read)
            };
            match parsed {
                Err(e) => return Poll::Ready(Err(Stop::Head(e))),
                Ok(Some(head))
                    if head.status.is_informational()
                        && head.status != http::StatusCode::SWITCHING_PROTOCOLS =>
                {
                    continue;
                }
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(Stop::Closed)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("upstream read failed: {e}");
                    return Poll::Ready(Err(Stop::Closed));
                }
            }
        }
    })
    .await;
    result.map_err(|e| {
        let reply = match e {
            Stop::Send(SendFail::Body(_) | SendFail::Length) => LocalReply::BadRequest,
            Stop::Send(SendFail::Io(_)) | Stop::Closed => LocalReply::UpstreamReset,
            Stop::Head(e) => {
                tracing::debug!("upstream response: {e}");
                LocalReply::UpstreamProtocolError
            }
        };
        let retry = reply == LocalReply::UpstreamReset
            && !answered
            && out.replayable()
            && (write_failed || out.idempotent);
        if retry {
            out.rewind();
        }
        Failure { reply, retry }
    })
}
