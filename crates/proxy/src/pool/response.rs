//! A response body from a pooled connection, which hands the connection back to its pool once
//! the body has been read to its end. A body dropped before its end closes the connection,
//! since unread bytes would be left on it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use super::http1::{Conn, put_back};

pub struct PooledBody {
    inner: Incoming,
    /// Boxed: the response is moved whole through every layer between the pool and the
    /// client's connection, and the connection is most of it (152 of 248 bytes).
    release: Option<Box<Release>>,
    /// The route timeout, which runs until the response has been read to its end (Envoy's
    /// route timeout spans the whole response).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Kept until the body ends or is dropped: the request's circuit-breaker slot and its
    /// in-flight count on the endpoint.
    hold: Option<Box<dyn Send + Sync>>,
    /// The local address of the connection it came on (Envoy's `%UPSTREAM_LOCAL_ADDRESS%`).
    local: Option<SocketAddr>,
}

/// A connection and the idle list it goes back to.
pub(super) struct Release {
    pub(super) conn: Conn,
    pub(super) idle: Arc<Mutex<Vec<Conn>>>,
    pub(super) freed: Arc<Notify>,
}

impl PooledBody {
    pub(super) fn new(
        inner: Incoming,
        release: Option<Release>,
        local: Option<SocketAddr>,
    ) -> Self {
        let mut body = PooledBody {
            inner,
            release: release.map(Box::new),
            local,
            deadline: None,
            hold: None,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// A body whose connection is not pooled here (HTTP/2, upgrades).
    pub fn unpooled(inner: Incoming) -> Self {
        PooledBody {
            inner,
            release: None,
            local: None,
            deadline: None,
            hold: None,
        }
    }

    pub(super) fn with_local(mut self, local: Option<SocketAddr>) -> Self {
        self.local = local;
        self
    }

    /// The local address of the upstream connection, when known.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Ends the body with an error if it is not complete by `at`.
    pub fn until(mut self, at: tokio::time::Instant) -> Self {
        if !self.inner.is_end_stream() {
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        self
    }

    /// Keeps `hold` alive until the body ends.
    pub fn holding(mut self, hold: Box<dyn Send + Sync>) -> Self {
        if !self.inner.is_end_stream() {
            self.hold = Some(hold);
        }
        self
    }

    fn release(&mut self) {
        self.hold = None;
        if let Some(r) = self.release.take() {
            put_back(&r.idle, &r.freed, r.conn);
        }
    }
}

/// The response body did not end within the route timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response timeout")]
pub struct BodyTimeout;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
            self.release = None;
            self.hold = None;
            self.deadline = None;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        let frame =
            ready!(Pin::new(&mut self.inner).poll_frame(cx)).map(|f| f.map_err(BoxError::from));
        match &frame {
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            None => self.release(),
            Some(Err(_)) => {
                self.release = None;
                self.hold = None;
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
