//! Sending a request upstream on pooled keep-alive connections, with the route's retry policy:
//! conditions, per-try timeout, jittered exponential back-off and a preference for endpoints
//! not tried yet.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use isthmus_config::actions::{RetryPolicy, retry_on};

use crate::body::{RequestBody, UpstreamBody};
use crate::clusters::{ClusterState, Target};
use crate::headers::X_ATTEMPT_COUNT;
use crate::local_reply::LocalReply;

/// Istio's default upstream connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default upstream idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The shared HTTP/1.1 connection pool to every upstream.
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
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
        Upstream { client }
    }

    /// Sends once to one endpoint, without retries (mirrors).
    pub async fn send_once(
        &self,
        target: &Target,
        parts: &http::request::Parts,
        body: UpstreamBody,
    ) -> Option<Response<Incoming>> {
        let req = build_request(parts, target, body, None)?;
        self.client.request(req).await.ok()
    }

    /// Sends `parts` + `body` to endpoints of `cluster` under `policy`.
    pub async fn send(
        &self,
        cluster: &ClusterState,
        parts: &http::request::Parts,
        mut body: RequestBody,
        policy: &RetryPolicy,
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
            let Some(req) = build_request(parts, &target, b, Some(attempt)) else {
                return fail(LocalReply::UpstreamProtocolError, false);
            };
            let can_retry = attempt < max && body.is_replayable();
            let outcome = self.attempt(req, policy.per_try_timeout).await;
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
            };
        }
    }

    async fn attempt(
        &self,
        req: Request<UpstreamBody>,
        per_try: Option<Duration>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let fut = self.client.request(req);
        let result = match per_try {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| AttemptError::PerTryTimeout)?,
            None => fut.await,
        };
        result.map_err(|e| {
            if e.is_connect() {
                AttemptError::Connect
            } else {
                tracing::debug!("upstream error: {e:?}");
                AttemptError::Reset(classify(&e))
            }
        })
    }
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
    let mut source = std::error::Error::source(e);
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

fn build_request(
    parts: &http::request::Parts,
    target: &Target,
    body: UpstreamBody,
    attempt: Option<u32>,
) -> Option<Request<UpstreamBody>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.authority.clone())
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    if !req.headers().contains_key(header::HOST) {
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
