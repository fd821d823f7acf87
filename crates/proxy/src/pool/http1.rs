//! Keep-alive HTTP/1.1 connections to one endpoint. A connection goes back to the pool when
//! the response body has been read to its end (see [`PooledBody`]); the most recently used
//! idle connection is taken first, so a quiet period lets the others time out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::balance::limits::{Slot, Which, acquire};

use super::connect::{self, H1Sender};
use super::response::{PooledBody, Release};
use super::{ConnKey, ConnSpec, PoolSettings, SendError};
use crate::body::UpstreamBody;
use crate::local_reply::LocalReply;

/// At most this many idle connections are kept per endpoint.
const MAX_IDLE: usize = 256;
/// How long a taken idle connection may take to become ready (its previous exchange still
/// finishing) before another is used.
const READY_WAIT: Duration = Duration::from_millis(100);

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
    sender: H1Sender,
    /// The connection's own address, for the access log.
    local: Option<SocketAddr>,
    key: ConnKey,
    opened: Instant,
    /// Requests sent on it so far.
    used: u32,
    idle_since: Instant,
}

impl Conn {
    fn usable(&self, key: &ConnKey, settings: &PoolSettings, now: Instant) -> bool {
        !self.sender.is_closed()
            && self.key == *key
            && now.duration_since(self.idle_since) < settings.idle_timeout
            && !self.worn_out(settings, now)
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
    /// not take (it closed meanwhile) goes once more on a new connection, as it never left.
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let mut conn = match self.checkout(spec).await {
                Some(c) => c,
                // Boxed: opening is the rare path, and its future would otherwise make every
                // request's future (moved as it is awaited, level by level) kilobytes bigger.
                None => Box::pin(self.open_or_wait(endpoint, spec)).await?,
            };
            let reused = conn.used > 0;
            conn.used += 1;
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, conn, spec.settings)),
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    _ => {
                        tracing::debug!(%endpoint, "upstream error: {:?}", e.error());
                        return Err(SendError::Reset(classify(e.error())));
                    }
                },
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
                return self.open(endpoint, spec, Some(Box::new(guard))).await;
            }
            if pending.is_none() {
                pending = Some(
                    acquire(counters, Which::Pending, limits.max_pending_requests)
                        .ok_or(SendError::Overflow)?,
                );
            }
            let freed = self.freed.notified();
            if let Some(c) = self.checkout(spec).await {
                return Ok(c);
            }
            freed.await;
            if let Some(c) = self.checkout(spec).await {
                return Ok(c);
            }
        }
    }

    async fn open(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
        guard: Option<Box<dyn Send + 'static>>,
    ) -> Result<Conn, SendError> {
        let now = Instant::now();
        let (sender, local) = connect::http1(endpoint, spec, guard).await?;
        Ok(Conn {
            sender,
            local,
            key: spec.key.clone(),
            opened: now,
            used: 0,
            idle_since: now,
        })
    }

    /// Idle connections kept (for the admin's gauges).
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    async fn checkout(&self, spec: &ConnSpec<'_>) -> Option<Conn> {
        loop {
            let mut conn = self.pop(spec)?;
            if conn.sender.is_ready() {
                return Some(conn);
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, conn.sender.ready()).await {
                return Some(conn);
            }
        }
    }

    /// The most recently idle usable connection; closed and expired ones met on the way are
    /// dropped.
    fn pop(&self, spec: &ConnSpec<'_>) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.iter().rposition(|c| c.key == spec.key) {
            let conn = idle.swap_remove(i);
            if conn.usable(&spec.key, spec.settings, now) {
                return Some(conn);
            }
        }
        None
    }

    /// The response, its body returning the connection to the pool when read to the end,
    /// unless the connection cannot take another request.
    fn wrap(
        &self,
        resp: Response<hyper::body::Incoming>,
        conn: Conn,
        settings: &PoolSettings,
    ) -> Response<PooledBody> {
        let closing = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || resp
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
            || conn.worn_out(settings, Instant::now());
        let local = conn.local;
        let release = (!closing).then(|| Release {
            conn,
            idle: self.idle.clone(),
            freed: self.freed.clone(),
        });
        resp.map(|body| PooledBody::new(body, release, local))
    }
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

/// A failure of the request body we were sending (the client's stream broke, e.g. a bad
/// chunk) is the client's: 400 (Envoy's codec error, `DPE`). Otherwise a protocol error
/// anywhere in the chain is Envoy's `UPE`; anything else a reset.
pub(crate) fn classify(e: &(dyn std::error::Error + 'static)) -> LocalReply {
    if e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_user)
    {
        return LocalReply::BadRequest;
    }
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_parse()
        {
            return LocalReply::UpstreamProtocolError;
        }
        source = s.source();
    }
    LocalReply::UpstreamReset
}
