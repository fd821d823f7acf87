//! A response body from a pooled connection, which hands the connection back to its pool once
//! the body has been read to its end. A body dropped before its end closes the connection,
//! since unread bytes would be left on it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::http1::{Conn, put_back};

pub struct PooledBody {
    inner: Incoming,
    release: Option<Release>,
    /// The local address of the connection it came on (Envoy's `%UPSTREAM_LOCAL_ADDRESS%`).
    local: Option<SocketAddr>,
}

/// A connection and the idle list it goes back to.
pub(super) struct Release {
    pub(super) conn: Conn,
    pub(super) idle: Arc<Mutex<Vec<Conn>>>,
}

impl PooledBody {
    pub(super) fn new(
        inner: Incoming,
        release: Option<Release>,
        local: Option<SocketAddr>,
    ) -> Self {
        let mut body = PooledBody {
            inner,
            release,
            local,
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

    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            put_back(&r.idle, r.conn);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if self.inner.is_end_stream() => self.release(),
            None => self.release(),
            Some(Err(_)) => self.release = None,
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
