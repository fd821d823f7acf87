//! One client connection's plain HTTP/1.1 requests, one after another (pipelined ones too),
//! until one is not plain, the connection closes, or it is parked.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use http::Method;
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use super::request::{self, Head};
use super::response::{self, Asked, Framing};
use crate::activity::Tracked;
use crate::parking::Parkable;
use crate::pool::codec::BodyShape;
use crate::serve::{Service, ServiceFuture};
use crate::telemetry::TelemetryBody;
use crate::woken::WakeFlag;

/// What the first read of a connection or of a head reserves, as hyper's read buffer starts.
const READ_CAPACITY: usize = 8 * 1024;
/// Response bytes kept before they are written, at most: a body arriving faster than the
/// client reads it waits upstream, not here.
const WRITE_HIGH: usize = 64 * 1024;

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client closed, or the last response was sent and the connection shut down.
    Closed,
    /// The next request is not plain: hyper serves the connection from the bytes in
    /// [`Server::into_parts`].
    Handoff,
    /// Quiet between requests with nothing read of the next: the connection can be parked.
    Parked,
}

/// The server of one connection's plain requests.
pub struct Server<S> {
    io: Parkable<S>,
    service: Service,
    /// Read from the client and not yet taken: the start of the next head.
    read: BytesMut,
    /// To write to the client.
    out: BytesMut,
    scratch: request::Scratch,
    state: State,
    /// Asked to finish what is in flight and close (a drain, or the idle timeout).
    closing: bool,
    /// A client that closed its sending side still gets the answers to what it sent (only
    /// the fuzz harnesses; the gateway ends such a connection at once, as Envoy does).
    half_close: bool,
    read_closed: bool,
    /// The read that watches for the client leaving while a request is in flight, polled with
    /// its own waker: the connection's task wakes several times per request, and each poll of
    /// the socket through its layers costs more than a look at this flag.
    gone: WakeFlag,
    /// Whether that read is registered for the request in flight.
    gone_armed: bool,
}

#[expect(
    clippy::large_enum_variant,
    reason = "the server is boxed whole, once per connection: its size is the largest state's anyway"
)]
enum State {
    Head,
    Answering {
        call: ServiceFuture,
        asked: Request,
    },
    Body {
        body: Option<Tracked<TelemetryBody>>,
        framing: Framing,
        trailers: Option<http::HeaderMap>,
        last: bool,
    },
    /// The response is framed whole: write it out, then wait for the next head or close.
    Sent {
        last: bool,
    },
    Close,
}

/// What the response needs of its request.
struct Request {
    method: Method,
    close: bool,
    trailers: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Server<S> {
    pub fn new(io: Parkable<S>, service: Service, half_close: bool) -> Self {
        Server {
            io,
            service,
            read: BytesMut::new(),
            out: BytesMut::new(),
            scratch: request::Scratch::default(),
            state: State::Head,
            closing: false,
            half_close,
            read_closed: false,
            gone: WakeFlag::new(),
            gone_armed: false,
        }
    }

    /// The connection, and what was read of it and not served (for hyper, on a handoff).
    pub fn into_parts(self) -> (Parkable<S>, BytesMut) {
        (self.io, self.read)
    }

    /// Finishes the request in flight, if any, and closes.
    pub fn graceful_shutdown(&mut self) {
        self.closing = true;
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Ended>>> {
        if self.read.is_empty() && (self.closing || self.read_closed) {
            self.state = State::Close;
            return Poll::Ready(Ok(None));
        }
        let head = if self.read.is_empty() {
            Head::Partial
        } else {
            request::parse(&mut self.read, &mut self.scratch)
        };
        match head {
            Head::Plain(plain) => {
                let asked = Request {
                    method: plain.request.method().clone(),
                    close: plain.close,
                    trailers: plain.trailers,
                };
                let call = self.service.call_plain(plain.request, plain.body);
                self.gone_armed = false;
                self.state = State::Answering { call, asked };
                Poll::Ready(Ok(None))
            }
            Head::Other => Poll::Ready(Ok(Some(Ended::Handoff))),
            // hyper sees the bytes and the end of the stream, and answers as it does.
            Head::Partial if self.read_closed => Poll::Ready(Ok(Some(Ended::Handoff))),
            Head::Partial => {
                let n = ready!(self.poll_fill(cx))?;
                if n > 0 {
                    return Poll::Ready(Ok(None));
                }
                if self.io.parked() {
                    if self.read.is_empty() {
                        return Poll::Ready(Ok(Some(Ended::Parked)));
                    }
                    // Bytes of a head came before the park: no parking this time.
                    self.service.activity.request_park(false);
                    self.io.unpark(&[]);
                    return Poll::Ready(Ok(None));
                }
                if self.read.is_empty() {
                    return Poll::Ready(Ok(Some(Ended::Closed)));
                }
                if self.half_close {
                    self.read_closed = true;
                    return Poll::Ready(Ok(None));
                }
                Poll::Ready(Ok(Some(Ended::Handoff)))
            }
        }
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_client_gone(cx)?;
        let State::Answering { call, asked } = &mut self.state else {
            return Poll::Ready(Ok(()));
        };
        let Ok(resp) = ready!(call.as_mut().poll(cx));
        let (mut parts, body) = resp.into_parts();
        let size = BodyShape::of(&body);
        let ask = Asked {
            method: &asked.method,
            keep_alive: !asked.close && !self.closing,
            trailers: asked.trailers,
        };
        let encoded = response::write_head(&mut self.out, ask, parts.status, &parts.headers, size)
            .map_err(io::Error::other)?;
        // Kept, emptied, for the next request's fields: no map to allocate (as hyper does).
        parts.headers.clear();
        self.scratch.headers = Some(parts.headers);
        let last = encoded.last;
        self.state = if encoded.framing == Framing::Length(0) {
            // No body to send (HEAD, 204, 304, empty): hyper drops it too.
            State::Sent { last }
        } else {
            State::Body {
                body: Some(body),
                framing: encoded.framing,
                trailers: None,
                last,
            }
        };
        Poll::Ready(Ok(()))
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_client_gone(cx)?;
        loop {
            if self.out.len() >= WRITE_HIGH {
                ready!(self.poll_write_out(cx))?;
            }
            let State::Body {
                body,
                framing,
                trailers,
                last,
            } = &mut self.state
            else {
                return Poll::Ready(Ok(()));
            };
            let frame = match body.as_mut() {
                Some(b) => Pin::new(b).poll_frame(cx),
                None => Poll::Ready(None),
            };
            match frame {
                Poll::Pending => {
                    ready!(self.poll_write_out(cx))?;
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(e))) => {
                    // The upstream failed: what came before the failure still reaches the
                    // client, then the connection ends, without the body's end, so the client
                    // sees it cut.
                    tracing::debug!("response body: {e}");
                    self.state = State::Close;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if !response::put_data(&mut self.out, framing, &data) {
                            // All the declared bytes are there: the rest is not sent.
                            *body = None;
                        }
                    }
                    Err(frame) => *trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(None) => {
                    let ended = response::put_end(&mut self.out, framing, trailers.as_ref());
                    // A body cut short ends the connection, so the client sees it cut.
                    let last = *last || ended.is_err();
                    self.state = State::Sent { last };
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// While a request is in flight, notices a client that went away (its request is then
    /// cancelled, as hyper and Envoy cancel it), and reads no further than the next head.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.half_close || self.read_closed || !self.read.is_empty() {
            return Ok(());
        }
        // Nothing to read but what woke the flag's waker.
        if !self.gone.take(cx.waker()) && self.gone_armed {
            return Ok(());
        }
        self.gone_armed = true;
        let mut watching = Context::from_waker(self.gone.waker());
        match fill(&mut self.io, &mut self.read, &mut watching) {
            Poll::Ready(Ok(0)) => Err(io::ErrorKind::ConnectionAborted.into()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(_)) | Poll::Pending => Ok(()),
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        fill(&mut self.io, &mut self.read, cx)
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Server<S> {
    type Output = io::Result<Ended>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Head => {
                    if let Some(ended) = ready!(this.poll_head(cx))? {
                        return Poll::Ready(Ok(ended));
                    }
                }
                State::Answering { .. } => ready!(this.poll_answer(cx))?,
                State::Body { .. } => ready!(this.poll_body(cx))?,
                State::Sent { last } => {
                    ready!(this.poll_write_out(cx))?;
                    ready!(Pin::new(&mut this.io).poll_flush(cx))?;
                    this.state = if last || this.closing {
                        State::Close
                    } else {
                        State::Head
                    };
                }
                State::Close => {
                    ready!(this.poll_write_out(cx))?;
                    // The peer may be gone already: the connection ends either way.
                    let _ = ready!(Pin::new(&mut this.io).poll_shutdown(cx));
                    return Poll::Ready(Ok(Ended::Closed));
                }
            }
        }
    }
}

/// Reads what the client sent into `read`: the number of bytes, 0 at the end of the stream.
fn fill<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Parkable<S>,
    read: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < 1024 {
        read.reserve(READ_CAPACITY);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}
