//! Keep-alive HTTP/1.1 connections to one endpoint. A connection goes back to the pool when
//! the response body has been read to its end (see [`PooledBody`]); the most recently used
//! idle connection is taken first, so a quiet period lets the others time out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::balance::limits::{Slot, Which, acquire};

use super::codec::{self, BodyKind, ResponseHead};
use super::connect;
use super::exchange::{self, Connection, Outgoing};
use super::response::{Http1Body, PooledBody, Return};
use super::{ConnKey, ConnSpec, OpenGuard, PoolSettings, SendError};
use crate::local_reply::LocalReply;

/// At most this many idle connections are kept per endpoint.
const MAX_IDLE: usize = 256;

#[derive(Default)]
pub struct Http1Pool {
    idle: Arc<Mutex<Vec<Conn>>>,
    /// Signalled when a connection goes idle or closes: a pending request may go on.
    freed: Arc<Notify>,
}

/// Holds a connection slot of the cluster while the connection lives.
struct Opened {
    _slot: Slot,
    freed: Arc<Notify>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

pub(super) struct Conn {
    pub(super) wire: Connection,
    /// The connection's own address, for the access log.
    local: Option<SocketAddr>,
    key: ConnKey,
    opened: Instant,
    /// Requests sent on it so far.
    used: u32,
    idle_since: Instant,
    /// Counts it among the endpoint's open connections while it lives.
    _open: OpenGuard,
    /// Released when it closes: its circuit-breaker slot, if the cluster has limits.
    _slot: Option<Opened>,
}

impl Conn {
    /// Whether it may take a request now: open, opened the same way, not idle too long and
    /// not worn out.
    fn usable(&mut self, key: &ConnKey, settings: &PoolSettings, now: Instant) -> bool {
        self.key == *key
            && now.duration_since(self.idle_since) < settings.idle_timeout
            && !self.worn_out(settings, now)
            && !self.wire.is_closed()
    }

    /// Whether it may take no more requests: too many sent, or too old.
    fn worn_out(&self, settings: &PoolSettings, now: Instant) -> bool {
        let max = settings.max_requests_per_connection;
        (max > 0 && self.used >= max)
            || settings
                .max_connection_duration
                .is_some_and(|d| now.duration_since(self.opened) >= d)
    }
}

impl Http1Pool {
    /// Sends on an idle connection, or a new one. A request that a reused connection could
    /// not take (the upstream had closed it) goes once more on a new connection.
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
        mut out: Outgoing,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let mut conn = match self.checkout(spec) {
                Some(c) => c,
                // Boxed: opening is the rare path, and its future would otherwise make every
                // request's future (moved as it is awaited, level by level) kilobytes bigger.
                None => Box::pin(self.open_or_wait(endpoint, spec)).await?,
            };
            let reused = conn.used > 0;
            conn.used += 1;
            match exchange::response_head(&mut conn.wire, &mut out).await {
                Ok(head) => return self.respond(head, conn, out, spec.settings),
                Err(f) if f.retry && reused => {
                    tracing::debug!(%endpoint, "reused connection closed; sending again");
                }
                Err(f) => return Err(SendError::Reset(f.reply)),
            }
        }
    }

    /// A new connection, or with the cluster at `maxConnections`, an idle one once it comes
    /// free, waiting as one of at most `http1MaxPendingRequests` pending requests (Envoy's
    /// circuit breakers); beyond that, overflow.
    async fn open_or_wait(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
    ) -> Result<Conn, SendError> {
        let Some((counters, limits)) = spec.limits else {
            return self.open(endpoint, spec, None).await;
        };
        let mut pending = None;
        loop {
            if let Some(slot) = acquire(counters, Which::Connections, limits.max_connections) {
                let guard = Opened {
                    _slot: slot,
                    freed: self.freed.clone(),
                };
                return self.open(endpoint, spec, Some(guard)).await;
            }
            if pending.is_none() {
                pending = Some(
                    acquire(counters, Which::Pending, limits.max_pending_requests)
                        .ok_or(SendError::Overflow)?,
                );
            }
            let freed = self.freed.notified();
            if let Some(c) = self.checkout(spec) {
                return Ok(c);
            }
            freed.await;
            if let Some(c) = self.checkout(spec) {
                return Ok(c);
            }
        }
    }

    async fn open(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
        slot: Option<Opened>,
    ) -> Result<Conn, SendError> {
        let now = Instant::now();
        let (wire, local) = connect::http1(endpoint, spec).await?;
        Ok(Conn {
            wire,
            local,
            key: spec.key.clone(),
            opened: now,
            used: 0,
            idle_since: now,
            _open: OpenGuard::new(spec.open),
            _slot: slot,
        })
    }

    /// Idle connections kept (for the admin's gauges).
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The most recently idle usable connection; closed and expired ones met on the way are
    /// dropped.
    fn checkout(&self, spec: &ConnSpec<'_>) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.iter().rposition(|c| c.key == spec.key) {
            let mut conn = idle.swap_remove(i);
            if conn.usable(&spec.key, spec.settings, now) {
                return Some(conn);
            }
        }
        None
    }

    /// The response, its body reading from the connection and returning it to the pool when
    /// read to the end, unless the connection cannot take another request.
    fn respond(
        &self,
        head: ResponseHead,
        conn: Conn,
        out: Outgoing,
        settings: &PoolSettings,
    ) -> Result<Response<PooledBody>, SendError> {
        let protocol_error = SendError::Reset(LocalReply::UpstreamProtocolError);
        let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
        if switched && !out.upgrade {
            tracing::debug!("upstream switched protocols without being asked");
            return Err(protocol_error);
        }
        let kind = if switched {
            BodyKind::Empty
        } else {
            codec::response_body(out.is_head, &head).map_err(|e| {
                tracing::debug!("upstream response: {e}");
                protocol_error
            })?
        };
        let reusable = codec::keeps_alive(&head) && !conn.worn_out(settings, Instant::now());
        let back = reusable.then(|| Return {
            idle: self.idle.clone(),
            freed: self.freed.clone(),
        });
        let local = conn.local;
        let body = Http1Body::new(conn, kind, out, back, switched);
        let mut resp = Response::new(PooledBody::http1(body, local));
        // The response keeps HTTP/1.1 as its version whatever the upstream spoke: the client
        // gets an HTTP/1.1 answer (chunked if its length is unknown), as Envoy gives it, not
        // the upstream's HTTP/1.0 status line.
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }
}

/// Sends one request on a new connection of its own and reads the response's status (health
/// checks).
pub(super) async fn status_of(
    endpoint: SocketAddr,
    spec: &ConnSpec<'_>,
    mut out: Outgoing,
) -> Result<StatusCode, SendError> {
    let (mut wire, _) = connect::http1(endpoint, spec).await?;
    exchange::response_head(&mut wire, &mut out)
        .await
        .map(|head| head.status)
        .map_err(|f| SendError::Reset(f.reply))
}

/// Puts a connection back among the idle ones, and wakes a pending request.
pub(super) fn put_back(idle: &Mutex<Vec<Conn>>, freed: &Notify, mut conn: Conn) {
    conn.idle_since = Instant::now();
    {
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
    freed.notify_one();
}
