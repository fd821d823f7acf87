//! Sending a request upstream on pooled keep-alive connections, with the route's retry policy:
//! conditions, per-try timeout, jittered exponential back-off and a preference for endpoints
//! not tried yet. HTTP/1.1 goes through a pool of keep-alive connections; HTTP/2 (prior
//! knowledge) through one multiplexed connection per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use isthmus_config::actions::{RetryPolicy, retry_on};

use crate::body::{RequestBody, UpstreamBody};
use crate::clusters::{ClusterState, Target};
use crate::headers::X_ATTEMPT_COUNT;
use crate::local_reply::LocalReply;
use crate::tls::client_config::UpstreamTlsConfig;

/// Istio's default upstream connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default upstream idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Istio's HTTP/2 flow-control windows for upstream connections.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The shared connection pools to every upstream: HTTP/1.1 and HTTP/2.
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
    h2: H2Pool,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

/// A response and how it was obtained.
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub endpoint: SocketAddr,
    pub attempts: u32,
    /// The answer matched a retry condition but retries ran out (Envoy's `URX`).
    pub exhausted: bool,
}

/// Why no response came back, and after how many attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub reply: LocalReply,
    pub attempts: u32,
    /// Retries were allowed but ran out (Envoy's `URX`).
    pub exhausted: bool,
}

/// Conditions under which Envoy retries any upstream reset, a per-try timeout or a connect
/// failure: it counts them as 5xx (`wouldRetryFromReset`).
const ANY_RESET: u32 = retry_on::RESET | retry_on::FIVE_XX | retry_on::GATEWAY_ERROR;

enum AttemptError {
    Connect,
    PerTryTimeout,
    Reset(LocalReply),
    /// An HTTP/2 stream the upstream refused (`REFUSED_STREAM`, or beyond its GOAWAY): it was
    /// not processed.
    Refused,
}

impl Upstream {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(300)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .set_host(false)
            .build(connector);
        Upstream {
            client,
            h2: H2Pool::default(),
        }
    }

    /// Sends once to one endpoint, without retries (mirrors).
    pub async fn send_once(
        &self,
        target: &Target,
        parts: &http::request::Parts,
        body: UpstreamBody,
    ) -> Option<Response<Incoming>> {
        let req = build_request(parts, target, body, None, Version::HTTP_11)?;
        self.client.request(req).await.ok()
    }

    /// Sends `parts` + `body` to endpoints of `cluster` under `policy`, over HTTP/1.1 or
    /// HTTP/2 as `version` says.
    pub async fn send(
        &self,
        cluster: &ClusterState,
        parts: &http::request::Parts,
        mut body: RequestBody,
        policy: &RetryPolicy,
        version: Version,
    ) -> Result<Forwarded, Failed> {
        let endpoints = cluster.endpoints();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let max = 1 + policy.attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fail = |reply, exhausted| {
                Err(Failed {
                    reply,
                    attempts: attempt,
                    exhausted,
                })
            };
            let avoid: &[SocketAddr] = if policy.ignore_previous_hosts {
                &tried
            } else {
                &[]
            };
            let Some(target) = cluster.pick(&endpoints, avoid) else {
                return fail(LocalReply::NoHealthyUpstream, false);
            };
            let Some(b) = body.take_for_attempt() else {
                return fail(LocalReply::UpstreamReset, false);
            };
            let Some(req) = build_request(parts, &target, b, Some(attempt), version) else {
                return fail(LocalReply::UpstreamProtocolError, false);
            };
            let can_retry = attempt < max && body.is_replayable();
            let outcome = self
                .attempt(
                    req,
                    target.address,
                    policy.per_try_timeout,
                    cluster.tls.as_ref(),
                )
                .await;
            tried.push(target.address);
            let retriable = match &outcome {
                Ok(resp) => policy.retries_status(resp.status().as_u16(), grpc_status(resp)),
                // A connection never made is also a reset before the request started.
                Err(AttemptError::Connect) => policy.retries_on(
                    ANY_RESET | retry_on::CONNECT_FAILURE | retry_on::RESET_BEFORE_REQUEST,
                ),
                Err(AttemptError::PerTryTimeout | AttemptError::Reset(_)) => {
                    policy.retries_on(ANY_RESET)
                }
                Err(AttemptError::Refused) => policy.retries_on(
                    ANY_RESET | retry_on::REFUSED_STREAM | retry_on::RESET_BEFORE_REQUEST,
                ),
            };
            if can_retry && retriable {
                drop(outcome);
                tokio::time::sleep(backoff(policy.backoff, attempt)).await;
                continue;
            }
            // Envoy's URX: the outcome called for a retry, but none was left.
            let exhausted = retriable && attempt > 1 && attempt == max;
            return match outcome {
                Ok(response) => Ok(Forwarded {
                    response,
                    endpoint: target.address,
                    attempts: attempt,
                    exhausted,
                }),
                Err(AttemptError::Connect) => fail(LocalReply::ConnectFailure, exhausted),
                Err(AttemptError::PerTryTimeout) => fail(LocalReply::UpstreamTimeout, exhausted),
                Err(AttemptError::Reset(r)) => fail(r, exhausted),
                Err(AttemptError::Refused) => fail(LocalReply::UpstreamReset, exhausted),
            };
        }
    }

    async fn attempt(
        &self,
        req: Request<UpstreamBody>,
        endpoint: SocketAddr,
        per_try: Option<Duration>,
        tls: Option<&UpstreamTlsConfig>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let fut = async {
            if let Some(tls) = tls {
                return send_tls(tls, endpoint, req).await;
            }
            if req.version() == Version::HTTP_2 {
                return self.h2.send(endpoint, req).await;
            }
            self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    AttemptError::Connect
                } else {
                    tracing::debug!("upstream error: {e:?}");
                    AttemptError::Reset(classify(&e))
                }
            })
        };
        match per_try {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| AttemptError::PerTryTimeout)?,
            None => fut.await,
        }
    }
}

type H2Sender = http2::SendRequest<UpstreamBody>;
type H2Slot = Arc<tokio::sync::Mutex<Option<H2Conn>>>;

/// One upstream HTTP/2 connection, told apart from its replacements by `id`.
#[derive(Clone)]
struct H2Conn {
    id: u64,
    sender: H2Sender,
}

/// HTTP/2 with prior knowledge: one connection per endpoint, multiplexing every request to it,
/// as Envoy does. A connection that ends or fails a request is replaced on the next request;
/// streams already open on it finish there.
#[derive(Default)]
struct H2Pool {
    slots: std::sync::Mutex<HashMap<SocketAddr, H2Slot>>,
    next_id: AtomicU64,
}

impl H2Pool {
    fn slot(&self, endpoint: SocketAddr) -> H2Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if !slots.contains_key(&endpoint) {
            // Forget endpoints whose connection is gone, such as endpoints no longer in use.
            slots.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |s| s.as_ref().is_some_and(|c| !c.sender.is_closed()))
            });
        }
        slots.entry(endpoint).or_default().clone()
    }

    /// The endpoint's connection, connecting if there is none (or it ended); and whether it
    /// was there already.
    async fn conn(&self, endpoint: SocketAddr) -> Result<(H2Conn, bool), AttemptError> {
        let slot = self.slot(endpoint);
        // Held while connecting, so that concurrent requests share the new connection.
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| !c.sender.is_closed()) {
            return Ok((c.clone(), true));
        }
        *cached = None;
        let conn = H2Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sender: connect_h2(endpoint).await?,
        };
        *cached = Some(conn.clone());
        Ok((conn, false))
    }

    /// Stops handing out connection `id` of `endpoint`.
    async fn discard(&self, endpoint: SocketAddr, id: u64) {
        let slot = self.slot(endpoint);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.id == id) {
            *cached = None;
        }
    }

    /// Sends on the endpoint's connection. A request that a reused connection could not take
    /// (it ended meanwhile) goes once more on a new connection, as it never left.
    async fn send(
        &self,
        endpoint: SocketAddr,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let mut retried = false;
        loop {
            let (conn, reused) = self.conn(endpoint).await?;
            let may_retry = reused && !retried;
            retried = true;
            let mut sender = conn.sender;
            if sender.ready().await.is_err() {
                self.discard(endpoint, conn.id).await;
                if may_retry {
                    continue;
                }
                return Err(AttemptError::Reset(LocalReply::UpstreamReset));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => {
                    // A connection that failed a request gets no new ones.
                    self.discard(endpoint, conn.id).await;
                    match e.take_message() {
                        Some(back) if may_retry => req = back,
                        _ => {
                            tracing::debug!("upstream HTTP/2 error: {:?}", e.error());
                            return Err(classify_h2(e.error()));
                        }
                    }
                }
            }
        }
    }
}

/// One request over a new TLS connection (HTTP/1.1), SNI from the config or the Host.
async fn send_tls(
    tls: &UpstreamTlsConfig,
    endpoint: SocketAddr,
    mut req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, AttemptError> {
    let Some(config) = tls.config.clone() else {
        return Err(AttemptError::Connect);
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| Authority::try_from(h).ok())
        .map(|a| a.host().to_string());
    let sni = tls
        .sni
        .clone()
        .or(host)
        .unwrap_or_else(|| endpoint.ip().to_string());
    let name = rustls_pki_types::ServerName::try_from(sni).map_err(|_| AttemptError::Connect)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| AttemptError::Connect)?
        .map_err(|_| AttemptError::Connect)?;
    let _ = stream.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| {
            tracing::debug!(%endpoint, "upstream TLS handshake failed: {e}");
            AttemptError::Connect
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| AttemptError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, "upstream TLS connection ended: {e}");
        }
    });
    // The connection is the endpoint's: the request carries only the path.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| AttemptError::Reset(LocalReply::UpstreamProtocolError))?;
    *req.uri_mut() = path;
    *req.version_mut() = Version::HTTP_11;
    sender.send_request(req).await.map_err(|e| {
        tracing::debug!("upstream error: {e:?}");
        AttemptError::Reset(LocalReply::UpstreamReset)
    })
}

async fn connect_h2(endpoint: SocketAddr) -> Result<H2Sender, AttemptError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| AttemptError::Connect)?
        .map_err(|_| AttemptError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| AttemptError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, "upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}

fn classify_h2(e: &hyper::Error) -> AttemptError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote());
            if refused {
                return AttemptError::Refused;
            }
            if h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                return AttemptError::Reset(LocalReply::UpstreamProtocolError);
            }
        }
        source = s.source();
    }
    AttemptError::Reset(classify_source(e))
}

/// Full-jitter exponential back-off: up to base·2^(n-1), capped at 10× the base (Envoy).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(10);
    let ceiling = base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(cap);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

/// `grpc-status` of a trailers-only gRPC response.
fn grpc_status(resp: &Response<Incoming>) -> Option<u32> {
    resp.headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn classify(e: &hyper_util::client::legacy::Error) -> LocalReply {
    match std::error::Error::source(e) {
        Some(s) => classify_source(s),
        None => LocalReply::UpstreamReset,
    }
}

/// A protocol error anywhere in the chain is Envoy's `UPE`; anything else a reset.
fn classify_source(e: &(dyn std::error::Error + 'static)) -> LocalReply {
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

/// The request for one attempt. Over HTTP/1.1 the URI names the endpoint (the pool's key) and
/// Host the service; over HTTP/2 the Host moves to `:authority`, as Envoy's codec does, and the
/// endpoint is chosen by the pool.
fn build_request(
    parts: &http::request::Parts,
    target: &Target,
    body: UpstreamBody,
    attempt: Option<u32>,
    version: Version,
) -> Option<Request<UpstreamBody>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers.clone();
    let authority = match version {
        Version::HTTP_2 => {
            match headers
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            {
                Some(a) => {
                    headers.remove(header::HOST);
                    a
                }
                None => target.authority.clone(),
            }
        }
        _ => target.authority.clone(),
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    if version != Version::HTTP_2 && !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    if let Some(n) = attempt {
        req.headers_mut()
            .insert(X_ATTEMPT_COUNT.clone(), HeaderValue::from(n));
    }
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let base = Duration::from_millis(25);
        for attempt in 1..30 {
            let d = backoff(base, attempt);
            assert!(d <= base * 10, "{attempt}: {d:?}");
            assert!(d <= base * (1 << (attempt - 1).min(16)), "{attempt}: {d:?}");
        }
    }
}
