//! One request: find the route in the active snapshot, pick a destination and an endpoint,
//! forward, and shape the response as an Istio gateway does.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use isthmus_config::matching::RequestView;
use isthmus_config::snapshot::RouteAction;
use tokio::time::Instant;

use crate::local_reply::{LocalReply, ResponseBody};
use crate::metrics::RequestLabels;
use crate::{Active, ClusterState, Gateway, path};

/// The `server` header of every response, as Istio's gateways send it.
pub const SERVER_NAME: &str = "istio-envoy";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");

/// What the connection knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The Gateway port the connection arrived on (not the bound port).
    pub port: u16,
    pub peer: SocketAddr,
}

/// What is recorded once the request is answered.
struct Outcome<'a> {
    cluster: Option<&'a ClusterState>,
    flag: &'static str,
}

pub async fn handle(
    gw: Arc<Gateway>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let active = gw.active.load_full();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let protocol = if grpc { "grpc" } else { "http" };
    let (resp, outcome) = route_and_forward(&gw, &active, conn, req).await;
    record(&gw, &resp, &outcome, protocol);
    resp
}

async fn route_and_forward<'a>(
    gw: &Gateway,
    active: &'a Active,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> (Response<ResponseBody>, Outcome<'a>) {
    let local = |r: LocalReply, cluster| {
        (
            r.response(),
            Outcome {
                cluster,
                flag: r.flag(),
            },
        )
    };
    if req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09 {
        return local(LocalReply::Http10, None);
    }
    let (mut parts, body) = req.into_parts();
    let Some(listener) = active.snapshot.listeners.get(&conn.port) else {
        return local(LocalReply::NoRoute, None);
    };
    // Route with borrowed views of the request; nothing is copied unless it must change.
    let (route, normalized) = {
        let authority = request_authority(&parts);
        let host = host_without_port(authority);
        let norm = path::normalize(parts.uri.path());
        let view = RequestView {
            method: parts.method.as_str(),
            scheme: "http",
            authority,
            path: &norm,
            query: parts.uri.query(),
            headers: &parts.headers,
        };
        let route = listener
            .virtual_hosts
            .find(&host)
            .and_then(|vh| vh.find(&view));
        let normalized = match norm {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        (route, normalized)
    };
    let Some(route) = route else {
        return local(LocalReply::NoRoute, None);
    };
    let RouteAction::Forward(forward) = route.action.as_ref();
    let point = fastrand::u32(0..forward.total_weight().max(1));
    let Some(cluster) = forward
        .pick(point)
        .and_then(|d| d.cluster)
        .and_then(|i| active.clusters.get(i))
    else {
        return local(LocalReply::NoCluster, None);
    };
    if let Some(p) = normalized {
        set_path(&mut parts, &p);
    }
    // HTTP/2 and absolute-form requests carry the host in the URI: HTTP/1.1 upstreams need it
    // in Host.
    if let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    prepare_request_headers(&mut parts.headers, conn);
    let started = Instant::now();
    match gw.upstream.send(cluster, parts, body).await {
        Ok((resp, _endpoint)) => {
            let elapsed = started.elapsed().as_millis();
            let mut resp = resp.map(Either::Left);
            prepare_response_headers(resp.headers_mut(), elapsed);
            (
                resp,
                Outcome {
                    cluster: Some(cluster),
                    flag: "-",
                },
            )
        }
        Err(reply) => local(reply, Some(cluster)),
    }
}

/// `:authority` for HTTP/2 and absolute-form requests, else the Host header.
fn request_authority(parts: &http::request::Parts) -> &str {
    match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    }
}

/// Gateways ignore the port when matching hosts; names compare in lower case.
fn host_without_port(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn set_path(parts: &mut http::request::Parts, path: &str) {
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Ok(uri) = http::Uri::builder().path_and_query(pq).build() {
        parts.uri = uri;
    }
}

/// Hop-by-hop headers are for one connection only (RFC 9110 section 7.6.1).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

fn prepare_request_headers(headers: &mut HeaderMap, conn: ConnInfo) {
    strip_hop_by_hop(headers);
    // Gateways use the peer address as the client (use_remote_address): append it.
    let peer = conn.peer.ip().to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {peer}"),
        _ => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if !headers.contains_key(&X_REQUEST_ID) {
        let id = uuid::Uuid::new_v4();
        let mut buf = uuid::Uuid::encode_buffer();
        if let Ok(v) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)) {
            headers.insert(X_REQUEST_ID.clone(), v);
        }
    }
}

fn prepare_response_headers(headers: &mut HeaderMap, upstream_ms: u128) {
    strip_hop_by_hop(headers);
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    headers.insert(
        X_UPSTREAM_TIME.clone(),
        HeaderValue::from(upstream_ms as u64),
    );
}

fn record(
    gw: &Gateway,
    resp: &Response<ResponseBody>,
    outcome: &Outcome<'_>,
    protocol: &'static str,
) {
    let dest = outcome
        .cluster
        .map_or(&gw.unknown_destination, |c| &c.labels);
    let labels = RequestLabels {
        reporter: "source",
        source_workload: gw.identity.workload.clone(),
        source_workload_namespace: gw.identity.namespace.clone(),
        destination_service: dest.service.clone(),
        destination_service_name: dest.name.clone(),
        destination_service_namespace: dest.namespace.clone(),
        request_protocol: protocol,
        response_code: resp.status().as_u16(),
        response_flags: outcome.flag,
    };
    gw.metrics.requests.get_or_create(&labels).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_case() {
        let cases = [
            ("a.example.com", "a.example.com"),
            ("A.Example.com:8080", "a.example.com"),
            ("[::1]:80", "[::1]"),
            ("example.com.", "example.com"),
            ("", ""),
        ];
        for (authority, want) in cases {
            assert_eq!(host_without_port(authority), want);
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);
    }
}
