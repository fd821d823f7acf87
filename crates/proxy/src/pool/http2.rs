//! HTTP/2 to one endpoint: one connection multiplexing every request, as Envoy does. A
//! connection that ends or fails a request is replaced on the next request; streams already
//! open on it finish there.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use tokio::sync::Mutex;

use super::connect::{self, H2Sender};
use super::{ConnKey, ConnSpec, PooledBody, SendError};
use crate::body::UpstreamBody;
use crate::local_reply::LocalReply;

#[derive(Default)]
pub struct Http2Pool {
    /// Held while connecting, so that concurrent requests share the new connection.
    slot: Mutex<Option<Conn>>,
    next_id: AtomicU64,
}

/// One connection, told apart from its replacements by `id`.
#[derive(Clone)]
struct Conn {
    id: u64,
    key: ConnKey,
    sender: H2Sender,
    local: Option<SocketAddr>,
}

impl Http2Pool {
    /// Sends on the endpoint's connection. A request that a reused connection could not take
    /// (it ended meanwhile) goes once more on a new connection, as it never left.
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut retried = false;
        loop {
            let (conn, reused) = self.conn(endpoint, spec).await?;
            let may_retry = reused && !retried;
            retried = true;
            let (mut sender, local) = (conn.sender, conn.local);
            if sender.ready().await.is_err() {
                self.discard(conn.id).await;
                if may_retry {
                    continue;
                }
                return Err(SendError::Reset(LocalReply::UpstreamReset));
            }
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    // As the HTTP/1.1 codec leaves them out of the head it reads (RFC 9113
                    // §8.2.2 forbids them, and hyper drops most, but not every one).
                    crate::headers::strip_hop_by_hop(resp.headers_mut());
                    return Ok(resp.map(|b| PooledBody::http2(b, local)));
                }
                Err(mut e) => {
                    // A connection that failed a request gets no new ones.
                    self.discard(conn.id).await;
                    match e.take_message() {
                        Some(back) if may_retry => req = back,
                        _ => {
                            tracing::debug!(%endpoint, "upstream HTTP/2 error: {:?}", e.error());
                            return Err(classify_h2(e.error()));
                        }
                    }
                }
            }
        }
    }

    /// The endpoint's connection, connecting if there is none (or it ended, or was opened
    /// with other TLS settings); and whether it was there already.
    async fn conn(
        &self,
        endpoint: SocketAddr,
        spec: &ConnSpec<'_>,
    ) -> Result<(Conn, bool), SendError> {
        let mut cached = self.slot.lock().await;
        if let Some(c) = cached
            .as_ref()
            .filter(|c| !c.sender.is_closed() && c.key == spec.key)
        {
            return Ok((c.clone(), true));
        }
        *cached = None;
        // Boxed: connecting is rare, and its future (TCP, TLS, the HTTP/2 handshake) would
        // otherwise be inlined into every request's future, which is moved as it is awaited.
        let (sender, local) = Box::pin(connect::http2(endpoint, spec)).await?;
        let conn = Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: spec.key.clone(),
            sender,
            local,
        };
        *cached = Some(conn.clone());
        Ok((conn, false))
    }

    /// Stops handing out connection `id`.
    async fn discard(&self, id: u64) {
        let mut cached = self.slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.id == id) {
            *cached = None;
        }
    }
}

fn classify_h2(e: &hyper::Error) -> SendError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
            if refused {
                return SendError::Refused;
            }
            return SendError::Reset(h2_failure(h2).unwrap_or_else(|| classify(e)));
        }
        source = s.source();
    }
    SendError::Reset(classify(e))
}

/// What an HTTP/2 error says of the upstream, when it says something: a protocol error, or
/// the upstream resetting the stream (Envoy's `remote reset`). A connection that went away is
/// left to [`classify`].
pub(crate) fn h2_failure(h2: &h2::Error) -> Option<LocalReply> {
    if h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
        Some(LocalReply::UpstreamProtocolError)
    } else if h2.is_reset() && h2.is_remote() {
        Some(LocalReply::UpstreamRemoteReset)
    } else {
        None
    }
}

/// A failure of the request body we were sending (the client's stream broke, e.g. a bad
/// chunk) is the client's: 400 (Envoy's codec error, `DPE`); a body grown past the limit is
/// told apart by the handler, which counted it. Otherwise a protocol error anywhere in the
/// chain is Envoy's `UPE`; anything else a reset.
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
