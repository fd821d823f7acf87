//! Connections to one upstream endpoint: a pool of keep-alive HTTP/1.1 connections and one
//! multiplexed HTTP/2 connection, each plain or TLS. Every connection is tied to the TLS
//! configuration and SNI it was opened with ([`ConnKey`]); a request only reuses a connection
//! opened the way it would open one.

pub(crate) mod codec;
mod connect;
mod exchange;
mod http1;
mod http2;
mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use isthmus_config::policy::Limits;

use crate::balance::limits::Counters;
use crate::local_reply::LocalReply;

pub use codec::RequestHead;
pub use exchange::Outgoing;
pub use response::{PooledBody, Upgraded, body_failure};

/// Istio's default upstream connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default upstream idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a request could not be sent on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be made (TCP connect, TLS handshake or HTTP/2 preface failed).
    Connect,
    /// The connection broke after the request was (possibly) sent.
    Reset(LocalReply),
    /// An HTTP/2 stream the upstream refused (`REFUSED_STREAM`, or beyond its GOAWAY): it was
    /// not processed.
    Refused,
    /// A circuit breaker is open: no connection may be opened and no request may wait.
    Overflow,
}

/// How connections are opened and how long they live: Istio's defaults until a
/// DestinationRule's `connectionPool` says otherwise.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// TCP keep-alive probes (`connectionPool.tcp.tcpKeepalive`), off unless configured.
    pub keepalive: Option<socket2::TcpKeepalive>,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Requests per connection before it is closed; 0 is unlimited.
    pub max_requests_per_connection: u32,
    /// Age after which a connection takes no new requests.
    pub max_connection_duration: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            keepalive: None,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_requests_per_connection: 0,
            max_connection_duration: None,
        }
    }
}

/// The TLS a connection was opened with, if any; connections are shared only between
/// requests with equal keys.
#[derive(Clone, Default)]
pub struct ConnKey {
    tls: Option<TlsKey>,
}

#[derive(Clone)]
struct TlsKey {
    config: Arc<ClientConfig>,
    sni: ServerName<'static>,
}

impl ConnKey {
    pub fn plain() -> Self {
        ConnKey { tls: None }
    }

    pub fn tls(config: Arc<ClientConfig>, sni: ServerName<'static>) -> Self {
        ConnKey {
            tls: Some(TlsKey { config, sni }),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl PartialEq for ConnKey {
    fn eq(&self, other: &Self) -> bool {
        match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.config, &b.config) && a.sni == b.sni,
            _ => false,
        }
    }
}

/// What a request needs to find or open a connection.
pub struct ConnSpec<'a> {
    pub key: ConnKey,
    pub settings: &'a PoolSettings,
    /// The cluster's circuit breakers, if any limit applies.
    pub limits: Option<(&'a Arc<Counters>, &'a Limits)>,
    /// The endpoint's count of open connections, which a new connection joins.
    pub open: &'a Arc<AtomicUsize>,
}

/// Sends one HTTP/1.1 request on a connection of its own, outside any pool, and returns the
/// response's status (health checks).
pub async fn http1_status(
    endpoint: std::net::SocketAddr,
    spec: &ConnSpec<'_>,
    req: Outgoing,
) -> Result<http::StatusCode, SendError> {
    http1::status_of(endpoint, spec, req).await
}

/// The connections of one endpoint.
#[derive(Default)]
pub struct EndpointPool {
    pub http1: http1::Http1Pool,
    pub http2: http2::Http2Pool,
    /// Connections open to the endpoint (for the admin's gauges).
    pub open: Arc<AtomicUsize>,
}

impl EndpointPool {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts a connection as open for as long as its task holds this.
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenGuard(count.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
