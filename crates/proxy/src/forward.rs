//! Sending a request upstream on pooled keep-alive connections, with the route's retry policy:
//! conditions, per-try timeout, jittered exponential back-off and a preference for endpoints
//! not tried yet. HTTP/1.1 goes through a pool of keep-alive connections; HTTP/2 (prior
//! knowledge) through one multiplexed connection per endpoint.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use isthmus_config::actions::{RetryPolicy, retry_on};
use isthmus_config::policy::{HashKey, LoadBalancer};
use rustls_pki_types::ServerName;

use crate::balance::health::InFlight;
use crate::balance::limits::{Which, acquire};
use crate::balance::{hash, outlier};
use crate::body::{RequestBody, UpstreamBody};
use crate::clusters::{ClusterSettings, ClusterState, Endpoint};
use crate::egress::original_dst::Target;
use crate::headers::{X_ATTEMPT_COUNT, number};
use crate::local_reply::LocalReply;
use crate::pool::{ConnKey, ConnSpec, Outgoing, PooledBody, RequestHead, SendError};
use crate::trace_context::TraceFields;
use isthmus_config::egress::destination_port;
use isthmus_config::hosts::request_host as routing_host;

/// Sends requests upstream; the connections themselves are kept by each endpoint.
#[derive(Default)]
pub struct Upstream;

/// A response and how it was obtained.
pub struct Forwarded {
    pub response: Response<PooledBody>,
    pub endpoint: SocketAddr,
    pub attempts: u32,
    /// The answer matched a retry condition but retries ran out (Envoy's `URX`).
    pub exhausted: bool,
    /// A consistent-hash cookie the gateway generated, for the response.
    pub set_cookie: Option<HeaderValue>,
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
    Send(SendError),
    PerTryTimeout,
}

impl From<SendError> for AttemptError {
    fn from(e: SendError) -> Self {
        AttemptError::Send(e)
    }
}

impl Upstream {
    pub fn new() -> Self {
        Upstream
    }

    /// Sends once to one endpoint, without retries (mirrors).
    pub async fn send_once(
        &self,
        cluster: &ClusterState,
        endpoint: &Endpoint,
        parts: &http::request::Parts,
        body: UpstreamBody,
        version: Version,
    ) -> Option<Response<PooledBody>> {
        let settings = cluster.settings();
        let tls = settings.tls.is_some();
        let req = build_request(parts, None, endpoint, body, None, version, tls)?;
        send(cluster, &settings, endpoint, req).await.ok()
    }

    /// Sends `parts` + `trace` + `body` to endpoints of `cluster` under `policy`, over HTTP/1.1
    /// or HTTP/2 as `version` says.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        cluster: &ClusterState,
        parts: &http::request::Parts,
        trace: &TraceFields,
        // Borrowed: the caller's future holds it anyway, and this one is boxed and moved.
        body: &mut RequestBody,
        policy: &RetryPolicy,
        version: Version,
        client: IpAddr,
    ) -> Result<Forwarded, Failed> {
        let settings = cluster.settings();
        let (key, set_cookie) = hash_key(&settings.policy.load_balancer, parts, client);
        // Envoy's `http2MaxRequests` breaker counts requests in flight, whatever the protocol.
        let request_slot = if settings.limited {
            match acquire(
                &cluster.counters,
                Which::Requests,
                settings.policy.limits.max_requests,
            ) {
                Some(slot) => Some(slot),
                None => {
                    return Err(Failed {
                        reply: LocalReply::Overflow,
                        attempts: 0,
                        exhausted: false,
                    });
                }
            }
        } else {
            None
        };
        let mut retry_slot = None;
        // The destination the request names by its Host (after rewrites, as Envoy's dynamic
        // forward proxy uses it), for original-destination clusters: 80 when no port is given.
        let named = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|_| cluster.is_original_destination())
            .map(|a| (routing_host(a), destination_port(a, "http")));
        let destination = named
            .as_ref()
            .map(|(host, port)| Target { host, port: *port });
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
            let target = match cluster.pick(destination, key, avoid).await {
                Ok(Some(t)) => t,
                Ok(None) => return fail(LocalReply::NoHealthyUpstream, false),
                Err(e) => {
                    tracing::debug!(cluster = %cluster.name, "{e}");
                    return fail(LocalReply::DnsFailure, false);
                }
            };
            let in_flight = InFlight::new(target.clone());
            let Some(b) = body.take_for_attempt() else {
                return fail(LocalReply::UpstreamReset, false);
            };
            let tls = settings.tls.is_some();
            // In a block: the request moves into the attempt's box, and its room here ends.
            let sending = {
                let req =
                    build_request(parts, Some(trace), &target, b, Some(attempt), version, tls);
                let Some(req) = req else {
                    return fail(LocalReply::UpstreamProtocolError, false);
                };
                send(cluster, &settings, &target, req)
            };
            let can_retry = attempt < max && body.is_replayable();
            let outcome = attempt_once(sending, policy.per_try_timeout).await;
            tried.push(target.address);
            cluster.report(&target, outlier_outcome(&outcome));
            if let Err(AttemptError::Send(SendError::Overflow)) = outcome {
                return fail(LocalReply::Overflow, false);
            }
            let retriable = match &outcome {
                Ok(resp) => policy.retries_status(resp.status().as_u16(), grpc_status(resp)),
                // A connection never made is also a reset before the request started.
                Err(AttemptError::Send(SendError::Connect)) => policy.retries_on(
                    ANY_RESET | retry_on::CONNECT_FAILURE | retry_on::RESET_BEFORE_REQUEST,
                ),
                Err(AttemptError::PerTryTimeout | AttemptError::Send(SendError::Reset(_))) => {
                    policy.retries_on(ANY_RESET)
                }
                Err(AttemptError::Send(SendError::Refused)) => policy.retries_on(
                    ANY_RESET | retry_on::REFUSED_STREAM | retry_on::RESET_BEFORE_REQUEST,
                ),
                Err(AttemptError::Send(SendError::Overflow)) => false,
            };
            // Envoy's `maxRetries` breaker: a retry beyond it is not made.
            let may_retry = can_retry
                && retriable
                && (!settings.limited || {
                    retry_slot = acquire(
                        &cluster.counters,
                        Which::Retries,
                        settings.policy.limits.max_retries,
                    );
                    retry_slot.is_some()
                });
            if may_retry {
                drop(outcome);
                tokio::time::sleep(backoff(policy.backoff, attempt)).await;
                continue;
            }
            // Envoy's URX: the outcome called for a retry, but none was left.
            let exhausted = retriable && attempt > 1 && attempt == max;
            return match outcome {
                Ok(response) => Ok(Forwarded {
                    response: response
                        .map(|b| b.holding(Box::new((in_flight, request_slot, retry_slot)))),
                    endpoint: target.address,
                    attempts: attempt,
                    exhausted,
                    set_cookie,
                }),
                Err(AttemptError::Send(SendError::Connect)) => {
                    fail(LocalReply::ConnectFailure, exhausted)
                }
                Err(AttemptError::PerTryTimeout) => fail(LocalReply::UpstreamTimeout, exhausted),
                Err(AttemptError::Send(SendError::Reset(r))) => fail(r, exhausted),
                Err(AttemptError::Send(SendError::Refused)) => {
                    fail(LocalReply::UpstreamRefused, exhausted)
                }
                Err(AttemptError::Send(SendError::Overflow)) => fail(LocalReply::Overflow, false),
            };
        }
    }
}

/// What outlier detection learns from an attempt.
fn outlier_outcome(outcome: &Result<Response<PooledBody>, AttemptError>) -> outlier::Outcome {
    match outcome {
        Ok(resp) => outlier::Outcome::Answered(resp.status().as_u16()),
        Err(_) => outlier::Outcome::LocalFailure,
    }
}

/// The consistent-hash key of a request, and the cookie to set when the hash cookie was
/// absent and has a TTL (Envoy generates one then, so the next requests stick).
fn hash_key(
    lb: &LoadBalancer,
    parts: &http::request::Parts,
    client: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    let key = match lb {
        LoadBalancer::RingHash { key, .. } | LoadBalancer::Maglev { key, .. } => key,
        _ => return (None, None),
    };
    match key {
        HashKey::Header(name) => (
            parts
                .headers
                .get(name.as_str())
                .map(|v| hash::hash_bytes(v.as_bytes())),
            None,
        ),
        HashKey::SourceIp => (Some(hash::hash_bytes(client.to_string().as_bytes())), None),
        HashKey::QueryParameter(name) => (
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| hash::hash_bytes(v.as_bytes()))
            }),
            None,
        ),
        HashKey::Cookie {
            name,
            path,
            ttl_secs,
        } => {
            if let Some(v) = cookie(&parts.headers, name) {
                return (Some(hash::hash_bytes(v.as_bytes())), None);
            }
            let Some(ttl) = ttl_secs else {
                return (None, None);
            };
            let value = format!("{:016x}", fastrand::u64(..));
            let mut set = format!("{name}=\"{value}\"");
            if *ttl > 0 {
                set.push_str(&format!("; Max-Age={ttl}"));
            }
            if let Some(p) = path {
                set.push_str(&format!("; Path={p}"));
            }
            set.push_str("; HttpOnly");
            (
                Some(hash::hash_bytes(format!("\"{value}\"").as_bytes())),
                HeaderValue::from_str(&set).ok(),
            )
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// One attempt on one endpoint, bounded by the per-try timeout.
async fn attempt_once(
    sending: Sending<'_>,
    per_try: Option<Duration>,
) -> Result<Response<PooledBody>, AttemptError> {
    match per_try {
        Some(t) => tokio::time::timeout(t, sending)
            .await
            .map_err(|_| AttemptError::PerTryTimeout)?
            .map_err(AttemptError::Send),
        None => sending.await.map_err(AttemptError::Send),
    }
}

/// One attempt's request, as its connection's protocol takes it.
enum Attempt {
    /// Encoded from the client's head as it stands: its header map is not copied. `host` is
    /// the host it is for, when TLS needs it for SNI.
    Http1 {
        out: Outgoing,
        host: Option<String>,
    },
    Http2(Request<UpstreamBody>),
}

/// An attempt on its way: boxed, as every enclosing future (the retry loop's, the route's,
/// the handler's) would otherwise contain the pool's, and each is moved as it is first
/// awaited; one allocation saves kilobytes of copying per request. The request moves into
/// the box at once, so the retry loop does not keep room for it either.
type Sending<'a> =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody>, SendError>> + Send + 'a>>;

/// Sends on the endpoint's HTTP/2 connection or one of its HTTP/1.1 connections, as the
/// request's version says, opened with the cluster's TLS.
fn send<'a>(
    cluster: &'a ClusterState,
    settings: &'a ClusterSettings,
    endpoint: &'a Endpoint,
    req: Attempt,
) -> Sending<'a> {
    match req {
        Attempt::Http1 { out, host } => Box::pin(async move {
            let spec = conn_spec(cluster, settings, endpoint, host, false)?;
            endpoint.pool.http1.send(endpoint.address, &spec, out).await
        }),
        Attempt::Http2(req) => Box::pin(async move {
            let host = req.uri().authority().map(|a| a.host().to_string());
            let spec = conn_spec(cluster, settings, endpoint, host, true)?;
            endpoint.pool.http2.send(endpoint.address, &spec, req).await
        }),
    }
}

/// Which connections an attempt may use, and what bounds opening one.
fn conn_spec<'a>(
    cluster: &'a ClusterState,
    settings: &'a ClusterSettings,
    endpoint: &'a Endpoint,
    host: Option<String>,
    h2: bool,
) -> Result<ConnSpec<'a>, SendError> {
    Ok(ConnSpec {
        key: conn_key(settings, endpoint.address, host, h2)?,
        settings: &settings.pool,
        limits: settings
            .limited
            .then_some((&cluster.counters, &settings.policy.limits)),
        open: &endpoint.pool.open,
    })
}

/// The TLS of a connection: none, or the cluster's configuration with the SNI the
/// DestinationRule sets, else the request's `host` (Istio's automatic SNI), else the address.
fn conn_key(
    settings: &ClusterSettings,
    address: SocketAddr,
    host: Option<String>,
    h2: bool,
) -> Result<ConnKey, SendError> {
    let Some(tls) = &settings.tls else {
        return Ok(ConnKey::plain());
    };
    let config = tls.for_version(h2).ok_or(SendError::Connect)?;
    let sni = match &tls.sni {
        Some(s) => s.clone(),
        None => host.unwrap_or_else(|| address.ip().to_string()),
    };
    let name = ServerName::try_from(sni).map_err(|_| SendError::Connect)?;
    Ok(ConnKey::tls(config.clone(), name))
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
fn grpc_status(resp: &Response<PooledBody>) -> Option<u32> {
    resp.headers()
        .get(&crate::headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The request for one attempt. Over HTTP/1.1 the request line carries the path only
/// (origin form) and `Host` the service; over HTTP/2 the Host moves to `:authority`, as
/// Envoy's codec does. `trace`: the trace fields, if they are not in `parts` already.
fn build_request(
    parts: &http::request::Parts,
    trace: Option<&TraceFields>,
    endpoint: &Endpoint,
    body: UpstreamBody,
    attempt: Option<u32>,
    version: Version,
    tls: bool,
) -> Option<Attempt> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if version == Version::HTTP_2 {
        let mut req = http2_request(parts, endpoint, path, body, attempt, tls)?;
        if let Some(t) = trace {
            t.insert_into(req.headers_mut());
        }
        return Some(Attempt::Http2(req));
    }
    let given = parts.headers.get(header::HOST);
    let mut set = Vec::with_capacity(2);
    if given.is_none() {
        let authority = HeaderValue::from_str(endpoint.authority.as_str()).ok()?;
        set.push((&HOST, authority));
    }
    if let Some(n) = attempt {
        set.push((&X_ATTEMPT_COUNT, number(u64::from(n))));
    }
    let head = RequestHead {
        method: &parts.method,
        path,
        headers: &parts.headers,
        set: &set,
        rendered: trace.map_or(&[], TraceFields::wire),
    };
    let host = tls.then(|| {
        given
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .map_or_else(
                || endpoint.authority.host().to_string(),
                |a| a.host().to_string(),
            )
    });
    Some(Attempt::Http1 {
        out: Outgoing::new(&head, body),
        host,
    })
}

/// `Host` as a static, so the gateway's own fields can borrow it for as long as a request.
static HOST: header::HeaderName = header::HOST;

fn http2_request(
    parts: &http::request::Parts,
    endpoint: &Endpoint,
    path: &str,
    body: UpstreamBody,
    attempt: Option<u32>,
    tls: bool,
) -> Option<Request<UpstreamBody>> {
    let mut headers = parts.headers.clone();
    let authority = match headers
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
    {
        Some(a) => {
            headers.remove(header::HOST);
            a
        }
        None => endpoint.authority.clone(),
    };
    let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = headers;
    if let Some(n) = attempt {
        req.headers_mut()
            .insert(X_ATTEMPT_COUNT.clone(), number(u64::from(n)));
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
