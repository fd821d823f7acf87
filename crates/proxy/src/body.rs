//! Request bodies on their way upstream. A body small enough is buffered so that a retry or a
//! mirror can send it again; a larger one streams once, its already-read head first. The
//! limit is `--max-request-buffer-bytes` ([`crate::edge::EdgeSettings::max_request_buffer`]):
//! no request makes the gateway hold more than that of its body.
//!
//! A body larger than `--max-request-body-bytes` ([`crate::edge::EdgeSettings::max_request_body`])
//! is refused: at once when its `Content-Length` says so, otherwise when its bytes pass the
//! limit on their way upstream ([`BodyError::TooLarge`], answered 413).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::activity::ClientBody;

/// Why a request body could not be passed on.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's stream broke: a bad chunk, a reset, a connection closed early.
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The body is larger than the gateway accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

/// A request body read as far as needed to decide whether it can be replayed.
pub enum RequestBody {
    /// The whole body (possibly empty) and its trailers: can be sent any number of times.
    Replayable {
        data: Vec<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Too large to keep: the part read so far and the rest of the stream. Sent once.
    /// `received` counts its bytes as they pass; more than `max` fail the stream.
    Streaming {
        head: Vec<Bytes>,
        rest: ClientBody,
        received: Arc<AtomicU64>,
        max: u64,
    },
    /// A streaming body already sent (it still counts its bytes as they pass).
    Consumed(Arc<AtomicU64>),
}

/// How many body bytes a request has sent: known once read whole, or counted as it streams.
#[derive(Debug, Clone)]
pub enum Received {
    Bytes(u64),
    Counted(Arc<AtomicU64>),
}

impl Received {
    pub fn get(&self) -> u64 {
        match self {
            Received::Bytes(n) => *n,
            Received::Counted(c) => c.load(Ordering::Relaxed),
        }
    }
}

impl RequestBody {
    /// Reads `body` until its end or until more than `limit` bytes were read. A body that
    /// declares more than `max` bytes is refused unread; one that sends more fails when it
    /// does.
    ///
    /// Only a body whose length is declared and small enough is read ahead: a body of unknown
    /// length (a chunked upload, a gRPC stream) is forwarded as it comes, because its sender
    /// may be waiting for the answer before it sends more (bidirectional streaming). Such a
    /// body is not replayed for retries or mirrors.
    pub async fn read(
        mut body: ClientBody,
        limit: usize,
        max: u64,
    ) -> Result<RequestBody, BodyError> {
        let declared = body.size_hint().exact();
        if declared.is_some_and(|n| n > max) {
            return Err(BodyError::TooLarge(max));
        }
        if !body.is_end_stream() && declared.is_none_or(|n| n > limit as u64) {
            return Ok(RequestBody::streaming(Vec::new(), body, max));
        }
        let mut data = Vec::new();
        let mut size = 0usize;
        loop {
            if body.is_end_stream() {
                return Ok(RequestBody::Replayable {
                    data,
                    trailers: None,
                });
            }
            match body.frame().await {
                None => {
                    return Ok(RequestBody::Replayable {
                        data,
                        trailers: None,
                    });
                }
                Some(frame) => match frame?.into_data() {
                    Ok(chunk) => {
                        size += chunk.len();
                        data.push(chunk);
                        if size as u64 > max {
                            return Err(BodyError::TooLarge(max));
                        }
                        if size > limit {
                            return Ok(RequestBody::streaming(data, body, max));
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().ok();
                        return Ok(RequestBody::Replayable { data, trailers });
                    }
                },
            }
        }
    }

    fn streaming(head: Vec<Bytes>, rest: ClientBody, max: u64) -> RequestBody {
        let read: usize = head.iter().map(Bytes::len).sum();
        RequestBody::Streaming {
            head,
            rest,
            received: Arc::new(AtomicU64::new(read as u64)),
            max,
        }
    }

    /// The body bytes received from the client so far (or, for a stream, as they come).
    pub fn received(&self) -> Received {
        match self {
            RequestBody::Replayable { data, .. } => {
                Received::Bytes(data.iter().map(|d| d.len() as u64).sum())
            }
            RequestBody::Streaming { received, .. } | RequestBody::Consumed(received) => {
                Received::Counted(received.clone())
            }
        }
    }

    pub fn is_replayable(&self) -> bool {
        matches!(self, RequestBody::Replayable { .. })
    }

    /// A body for one attempt: a copy if replayable, else the stream itself (once).
    pub fn take_for_attempt(&mut self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Replayable { data, trailers } => {
                Some(UpstreamBody::buffered(data.clone(), trailers.clone()))
            }
            RequestBody::Streaming { received, .. } => {
                let left = RequestBody::Consumed(received.clone());
                match std::mem::replace(self, left) {
                    RequestBody::Streaming {
                        head,
                        rest,
                        received,
                        max,
                    } => Some(UpstreamBody {
                        chunks: head.into(),
                        trailers: None,
                        rest: Some(Box::new(Rest {
                            body: rest,
                            received,
                            max,
                        })),
                    }),
                    _ => None,
                }
            }
            RequestBody::Consumed(_) => None,
        }
    }

    /// A copy for a mirror, if the body is replayable.
    pub fn copy(&self) -> Option<UpstreamBody> {
        match self {
            RequestBody::Replayable { data, trailers } => {
                Some(UpstreamBody::buffered(data.clone(), trailers.clone()))
            }
            RequestBody::Streaming { .. } | RequestBody::Consumed(_) => None,
        }
    }
}

/// The body sent upstream: buffered chunks, then trailers or the rest of a stream (whose
/// bytes are counted as they pass).
pub struct UpstreamBody {
    chunks: VecDeque<Bytes>,
    /// Boxed: few requests have trailers, and the body is moved whole with the request, level
    /// by level, on its way to the connection (96 of its 184 bytes).
    trailers: Option<Box<HeaderMap>>,
    /// Boxed for the same reason: few bodies stream.
    rest: Option<Box<Rest>>,
}

/// The part of a body still streaming from the client.
struct Rest {
    body: ClientBody,
    /// Body bytes received so far, the buffered head included.
    received: Arc<AtomicU64>,
    /// More than this many bytes fail the stream ([`BodyError::TooLarge`]).
    max: u64,
}

impl UpstreamBody {
    fn buffered(data: Vec<Bytes>, trailers: Option<HeaderMap>) -> Self {
        UpstreamBody {
            chunks: data.into(),
            trailers: trailers.map(Box::new),
            rest: None,
        }
    }

    pub fn empty() -> Self {
        UpstreamBody {
            chunks: VecDeque::new(),
            trailers: None,
            rest: None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(*t))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut rest.body).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let n = data.len() as u64;
            if rest.received.fetch_add(n, Ordering::Relaxed) + n > rest.max {
                return Poll::Ready(Some(Err(BodyError::TooLarge(rest.max))));
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(BodyError::Client)))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let h = rest.body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(h.lower() + buffered);
                if let Some(u) = h.upper() {
                    hint.set_upper(u + buffered);
                }
                hint
            }
        }
    }
}
