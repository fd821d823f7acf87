//! Sending a request upstream on pooled keep-alive connections, with Istio's default retry of
//! connection failures on another endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::clusters::{ClusterState, Target};
use crate::local_reply::LocalReply;

pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// Istio's default upstream connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default upstream idle timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Istio's default policy retries connection failures twice.
const CONNECT_RETRIES: usize = 2;
/// Istio's default retry back-off base; the wait is jittered up to this.
const BACKOFF_BASE: Duration = Duration::from_millis(25);

/// The shared HTTP/1.1 connection pool to every upstream.
pub struct Upstream {
    client: Client<HttpConnector, UpstreamBody>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
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

    /// Sends `parts` + `body` to an endpoint of `cluster`. A request without a body is retried
    /// on another endpoint when the connection cannot be made, as Istio's default retry policy
    /// does; a request with a body is sent once, since its body cannot be replayed.
    pub async fn send(
        &self,
        cluster: &ClusterState,
        parts: http::request::Parts,
        body: Incoming,
    ) -> Result<(Response<Incoming>, SocketAddr), LocalReply> {
        let endpoints = cluster.endpoints();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let replayable = body.is_end_stream();
        let mut body = Some(body);
        loop {
            let target = cluster
                .pick(&endpoints, &tried)
                .ok_or(LocalReply::NoHealthyUpstream)?;
            let req_body = match body.take() {
                Some(b) if !replayable => Either::Left(b),
                _ => Either::Right(Empty::new()),
            };
            let req = build_request(&parts, &target, req_body)?;
            match self.client.request(req).await {
                Ok(resp) => return Ok((resp, target.address)),
                Err(e) if e.is_connect() => {
                    tracing::debug!(upstream = %target.address, "connect failed: {e}");
                    tried.push(target.address);
                    if !replayable || tried.len() > CONNECT_RETRIES {
                        return Err(LocalReply::ConnectFailure);
                    }
                    let jitter = fastrand::u64(0..=BACKOFF_BASE.as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => {
                    tracing::debug!(upstream = %target.address, "upstream error: {e:?}");
                    return Err(classify(&e));
                }
            }
        }
    }
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
) -> Result<Request<UpstreamBody>, LocalReply> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(target.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|_| LocalReply::UpstreamProtocolError)?;
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut()
            .insert(header::HOST, http::HeaderValue::from_static("localhost"));
    }
    Ok(req)
}
