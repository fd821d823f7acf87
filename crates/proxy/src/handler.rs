//! One request: find the route in the active snapshot, apply its action (redirect, direct
//! response, or forward with rewrite, header edits, fault, CORS, mirror, retries and timeout),
//! and shape the response as an Istio gateway does. WebSocket upgrades are forwarded and the
//! upgraded connections spliced; the gateway's own answers to gRPC requests are gRPC errors.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isthmus_config::actions::{
    AbortWith, DirectResponse, Fault, Redirect, RedirectInput, https_redirect_location,
};
use isthmus_config::hosts::request_host;
use isthmus_config::matching::RequestView;
use isthmus_config::path;
use isthmus_config::snapshot::{ActionKind, Forward, Route, UpstreamProtocol, WeightedDestination};
use tokio::time::Instant;

use crate::activity::ClientBody;
use crate::body::{BodyError, Received, RequestBody};
use crate::cors::{self, Decision};
use crate::drain::DrainWatch;
use crate::edge;
use crate::egress::forward_proxy::{Fallback, fallback};
use crate::headers::{
    self, GRPC_TIMEOUT, TemplateContext, X_EXPECTED_TIMEOUT, X_EXTERNAL_ADDRESS,
    X_FORWARDED_CLIENT_CERT, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_ORIGINAL_PATH, X_REQUEST_ID,
    X_UPSTREAM_TIME,
};
use crate::local_reply::{self, LocalReply, ResponseBody, local_response};
use crate::response_flags::ResponseFlags;
use crate::telemetry::{
    Arrival, Exchange, Outcome, Progress, RequestLog, TelemetryBody, Unanswered, UpstreamInfo,
};
use crate::{Active, Gateway, egress, mirror, trace_context};

/// The `server` header of every response, as Istio's gateways send it.
pub const SERVER_NAME: &str = "istio-envoy";

/// What the connection knows about itself.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The Gateway port the connection arrived on (not the bound port).
    pub port: u16,
    pub peer: SocketAddr,
    /// The peer's address as a header value (X-Forwarded-For, x-envoy-external-address):
    /// written once per connection, then shared by its requests without a copy.
    pub peer_value: HeaderValue,
    pub local: SocketAddr,
    /// What TLS told, if the connection began with a ClientHello. Boxed: a plain connection
    /// then carries 8 bytes for it instead of 72, for as long as it lives (parked as well).
    pub tls: Option<Box<TlsInfo>>,
    /// Held by the tunnels (WebSocket, CONNECT) the connection opens: they outlive the HTTP
    /// connection, and a drain must wait for them (up to its deadline) as for the connection.
    pub drain: Option<DrainWatch>,
}

/// What a TLS connection's handshake told.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The SNI of the TLS connection, for the access log.
    pub sni: Option<Arc<str>>,
    /// The filter chain that terminated TLS here, whose route table serves the connection;
    /// `None` if TLS passes through.
    pub chain: Option<Arc<str>>,
    /// `x-forwarded-client-cert` for every request: set from the client certificate once the
    /// handshake verified it, so it is computed once per connection, not per request.
    pub client_cert: Option<HeaderValue>,
}

impl ConnInfo {
    pub fn plain(port: u16, peer: SocketAddr, local: SocketAddr) -> Self {
        ConnInfo {
            port,
            peer,
            peer_value: address_value(peer.ip()),
            local,
            tls: None,
            drain: None,
        }
    }

    /// TLS was terminated here.
    pub fn secure(&self) -> bool {
        self.chain().is_some()
    }

    /// The filter chain that terminated TLS, if TLS was terminated here.
    pub fn chain(&self) -> Option<&str> {
        self.tls.as_ref()?.chain.as_deref()
    }

    /// The SNI the client sent, if any.
    pub fn sni(&self) -> Option<&Arc<str>> {
        self.tls.as_ref()?.sni.as_ref()
    }

    pub fn client_cert(&self) -> Option<&HeaderValue> {
        self.tls.as_ref()?.client_cert.as_ref()
    }

    pub fn scheme(&self) -> &'static str {
        if self.secure() { "https" } else { "http" }
    }
}

pub async fn handle(
    gw: Arc<Gateway>,
    conn: &ConnInfo,
    req: Request<ClientBody>,
) -> Response<TelemetryBody> {
    let active = gw.active.load_full();
    let (mut parts, body) = req.into_parts();
    // gRPC as Envoy and Istio's metrics tell it (gRPC-Web is HTTP).
    let grpc = local_reply::is_grpc(&parts.headers);
    let head = parts.method == Method::HEAD;
    let mut arrival = Arrival::of(&parts, grpc);
    // What Envoy's connection manager adds before routing, so routes and logs see it; the
    // client's own x-envoy-* and x-forwarded-client-cert go first.
    headers::strip_envoy_headers(&mut parts.headers);
    let hops = gw.edge.num_trusted_proxies;
    let client = edge::client_address(&parts.headers, conn.peer.ip(), hops);
    add_gateway_headers(&mut parts.headers, conn, client, hops);
    if gw.access_log.is_some() {
        arrival.log_request(RequestLog::capture(&parts, conn, SystemTime::now()));
    }
    // (An extended CONNECT, with `:protocol`, is a WebSocket, not a tunnel.)
    let tunnel =
        parts.method == Method::CONNECT && parts.extensions.get::<hyper::ext::Protocol>().is_none();
    // Until the response is ready, a client that goes away (dropping this future) is
    // recorded as Envoy records it.
    let mut pending = Unanswered::new(&gw, &active, arrival);
    let (mut resp, outcome) = if tunnel {
        // Boxed, as tunnels are rare: inline, the tunnel's future would take 1.4 KB more
        // of every request's own box.
        Box::pin(connect(&gw, &active, conn, parts, &mut pending.arrival)).await
    } else {
        let progress = &pending.progress;
        match resolve_route(&gw, &active, conn, &mut parts, progress) {
            Err(answered) => *answered,
            Ok(Routed {
                route,
                normalized,
                start,
                external,
            }) => {
                // Boxed: the request's own box (hyper's service future) then holds only
                // this function's state, and the kilobytes of forwarding are copied once.
                let (mut resp, mut outcome) = Box::pin(run_route(
                    &gw, &active, route, conn, client, &mut parts, body, normalized, start,
                    progress,
                ))
                .await;
                outcome.route = Some(Cow::Borrowed(route.name.as_str()));
                if let Some(labels) = external {
                    resp.extensions_mut().insert(*labels);
                }
                (resp, outcome)
            }
        }
    };
    if grpc {
        resp = local_reply::grpc_local_reply(resp, head);
    }
    let arrival = pending.answered();
    let outcome = outcome.detach(arrival.is_logged());
    let exchange = Exchange::new(gw, active, arrival, outcome, &resp);
    // Nothing follows the head of these, whatever their body holds.
    let status = resp.status();
    let bodiless = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    resp.map(|b| TelemetryBody::new(b, exchange, bodiless))
}

/// What an HTTP/1.1 `Connection: upgrade` request asks for.
enum Upgrade {
    None,
    /// `Upgrade: websocket`, which Istio allows on every route: the header's value.
    WebSocket(HeaderValue),
    /// WebSocket over HTTP/2: an extended CONNECT with `:protocol websocket` (RFC 8441),
    /// already turned into an HTTP/1.1-style upgrade request by [`h2_websocket_as_upgrade`].
    H2WebSocket,
    /// Any other protocol: Envoy refuses it with 403 (h2c upgrades are ignored instead).
    Refused,
}

impl Upgrade {
    /// Envoy's `Utility::isUpgrade`: an `Upgrade` header and an `upgrade` token in
    /// `Connection`, on HTTP/1.1 only.
    fn of(parts: &http::request::Parts) -> Upgrade {
        if parts.extensions.get::<H2WebSocket>().is_some() {
            return Upgrade::H2WebSocket;
        }
        let Some(value) = parts.headers.get(header::UPGRADE) else {
            return Upgrade::None;
        };
        let connection_upgrade = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        if parts.version != Version::HTTP_11 || !connection_upgrade {
            return Upgrade::None;
        }
        if value.as_bytes().eq_ignore_ascii_case(b"websocket") {
            Upgrade::WebSocket(value.clone())
        } else if value.as_bytes().eq_ignore_ascii_case(b"h2c") {
            // Envoy's HTTP/1 codec drops h2c upgrade headers and serves the request as is.
            Upgrade::None
        } else {
            Upgrade::Refused
        }
    }
}

/// Marks a request that arrived as an HTTP/2 extended CONNECT for WebSocket.
#[derive(Clone, Copy)]
struct H2WebSocket;

/// Envoy's HTTP/2 codec turns `CONNECT` with `:protocol websocket` into the HTTP/1.1 upgrade
/// request it stands for, so routes see `GET` with `Upgrade: websocket`; the upstream then gets
/// an ordinary WebSocket handshake (with a fresh `Sec-WebSocket-Key`, which HTTP/2 clients do
/// not send).
fn h2_websocket_as_upgrade(parts: &mut http::request::Parts) {
    let is_ws = parts.version == Version::HTTP_2
        && parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return;
    }
    parts.method = http::Method::GET;
    let h = &mut parts.headers;
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if !h.contains_key(header::SEC_WEBSOCKET_KEY) {
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            fastrand::u128(..).to_le_bytes(),
        );
        if let Ok(v) = HeaderValue::from_str(&key) {
            h.insert(header::SEC_WEBSOCKET_KEY, v);
        }
    }
    parts.extensions.insert(H2WebSocket);
}

/// Envoy's answer to an upgrade the route does not allow: 403, and the connection closes so
/// that no upgraded bytes can be read as a request.
fn upgrade_refused() -> Response<ResponseBody> {
    let mut r = local_response(StatusCode::FORBIDDEN, Bytes::new());
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn local<'a>(r: LocalReply) -> (Response<ResponseBody>, Outcome<'a>) {
    let outcome = Outcome {
        flags: r.flag(),
        ..Outcome::answered(r.details())
    };
    (r.response(), outcome)
}

/// The registry and outbound policy of a forward-proxy port (plaintext), if `conn` is on one.
fn outbound_of<'a>(
    active: &'a Active,
    conn: &ConnInfo,
) -> Option<&'a isthmus_config::egress::Outbound> {
    active
        .snapshot
        .listeners
        .get(&conn.port)
        .and_then(|l| l.outbound.as_ref())
        .filter(|_| conn.chain().is_none())
}

/// A `CONNECT host:port` request. It is answered before the HTTP/1.0 check: proxy clients
/// (Python's http.client among them) send `CONNECT ... HTTP/1.0`, and a tunnel has no HTTP/1.0
/// semantics to refuse. The request is counted in `istio_requests_total` as any; a tunnel it
/// opens is logged when it closes, in place of the request's own line.
async fn connect<'a>(
    gw: &Arc<Gateway>,
    active: &'a Arc<Active>,
    conn: &ConnInfo,
    mut parts: http::request::Parts,
    arrival: &mut Arrival,
) -> (Response<ResponseBody>, Outcome<'a>) {
    let t = egress::connect::open(gw, active, outbound_of(active, conn), &mut parts).await;
    if let Some(opened) = t.opened {
        let request = arrival.take_request_log();
        let tunnel = opened.run(gw.clone(), conn.clone(), request, arrival.start);
        let hold = conn.drain.clone();
        tokio::spawn(async move {
            tunnel.await;
            // Until the tunnel ends, a drain waits for it.
            drop(hold);
        });
    }
    let cluster = t.cluster.and_then(|c| {
        active
            .clusters
            .iter()
            .position(|x| std::ptr::eq(x.as_ref(), c))
    });
    let outcome = Outcome {
        cluster,
        flags: t.flags,
        ..Outcome::answered(t.details)
    };
    (t.response, outcome)
}

/// The route a request takes, found by [`resolve_route`].
struct Routed<'a> {
    route: &'a Route,
    /// The normalized path, when it differs from the request's.
    normalized: Option<String>,
    start: SystemTime,
    /// Metric labels of a request outside the registry (PassthroughCluster); boxed, as they
    /// are rare and this is kept while the request is forwarded.
    external: Option<Box<crate::metrics::DestinationLabels>>,
}

/// Checks the request and finds its route; or the answer when it has none or may not have
/// one: boxed, as the handler's future keeps room for what this returns while it forwards.
fn resolve_route<'a>(
    gw: &Arc<Gateway>,
    active: &'a Arc<Active>,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    progress: &Progress<'a>,
) -> Result<Routed<'a>, Box<(Response<ResponseBody>, Outcome<'a>)>> {
    let listener = active.snapshot.listeners.get(&conn.port);
    let outbound = outbound_of(active, conn);
    if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 {
        return Err(Box::new(local(LocalReply::Http10)));
    }
    let start = SystemTime::now();
    if let Err(reply) = edge::check_request(parts, &gw.edge) {
        return Err(Box::new(local(reply)));
    }
    edge::apply_header_policy(&mut parts.headers, &gw.edge);
    h2_websocket_as_upgrade(parts);
    let Some(table) = listener.and_then(|l| l.http_routes(conn.chain())) else {
        return Err(Box::new(local(LocalReply::NoRoute)));
    };
    let mut external = None;
    // Route with borrowed views of the request; nothing is copied unless it must change.
    let (route, normalized) = {
        let authority = request_authority(parts);
        let host = request_host(authority);
        let vhost = table.find(&host);
        if let Some(vh) = vhost
            && vh.require_tls
            && !conn.secure()
        {
            let redirect = https_redirect(authority, parts);
            return Err(Box::new((redirect, Outcome::answered(DIRECT_RESPONSE))));
        }
        let Some(norm) = path::normalize_with(parts.uri.path(), active.snapshot.path_normalization)
        else {
            return Err(Box::new(local(LocalReply::BadRequest)));
        };
        let view = RequestView {
            method: parts.method.as_str(),
            scheme: conn.scheme(),
            authority,
            path: &norm,
            query: parts.uri.query(),
            headers: &parts.headers,
        };
        let route = match (vhost, outbound) {
            (Some(vh), _) => vh.find(&view),
            (None, None) => None,
            (None, Some(o)) => match fallback(o, &host, authority, conn.scheme()) {
                Fallback::Route(r, labels) => {
                    external = labels.map(Box::new);
                    Some(r)
                }
                Fallback::Blocked(resp) => {
                    return Err(Box::new((*resp, Outcome::answered(DIRECT_RESPONSE))));
                }
            },
        };
        let normalized = match norm {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        (route, normalized)
    };
    let Some(route) = route else {
        return Err(Box::new(local(LocalReply::NoRoute)));
    };
    let _ = progress.route.set(route.name.as_str());
    Ok(Routed {
        route,
        normalized,
        start,
        external,
    })
}

/// Applies the matched route's action and its response edits.
#[allow(clippy::too_many_arguments)]
async fn run_route<'a>(
    gw: &Arc<Gateway>,
    active: &'a Arc<Active>,
    route: &'a Route,
    conn: &ConnInfo,
    client: IpAddr,
    parts: &mut http::request::Parts,
    body: ClientBody,
    normalized: Option<String>,
    start: SystemTime,
    progress: &Progress<'a>,
) -> (Response<ResponseBody>, Outcome<'a>) {
    let upgrade = match Upgrade::of(parts) {
        Upgrade::Refused => return (upgrade_refused(), Outcome::answered("upgrade_failed")),
        Upgrade::WebSocket(v) => parts.extensions.remove::<OnUpgrade>().map(|on| (v, on)),
        Upgrade::H2WebSocket => parts
            .extensions
            .remove::<OnUpgrade>()
            .map(|on| (HeaderValue::from_static("websocket"), on)),
        Upgrade::None => None,
    };
    if let Some(p) = normalized {
        set_path(parts, &p, None);
    }
    let action = &route.action;
    let mut cors_headers = None;
    if let Some(policy) = &action.cors {
        match cors::decide(policy, &parts.method, &parts.headers) {
            Decision::Pass => {}
            Decision::Respond(resp) => return (*resp, Outcome::answered("cors_response")),
            Decision::Decorate(h) => cors_headers = Some(h),
        }
    }
    let ctx_protocol = if parts.version == Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    };
    let (mut resp, outcome, dest) = match &action.kind {
        ActionKind::Redirect(r) => (
            redirect(r, parts, conn),
            Outcome::answered(DIRECT_RESPONSE),
            None,
        ),
        ActionKind::DirectResponse(d) => (direct(d), Outcome::answered(DIRECT_RESPONSE), None),
        // Inline, not a function of its own: each async layer adds its state to the boxed
        // routing future and copies the answer once more on its way out.
        ActionKind::Forward(f) => 'forward: {
            let request = Forwarding {
                route,
                f,
                conn,
                client,
                start,
                protocol: ctx_protocol,
                progress,
            };
            let (dest, cluster) = pick_destination(active, &request);
            let mut delayed = ResponseFlags::NONE;
            if let Some(fault) = &action.fault {
                let (abort, flags) = inject_fault(fault, &parts.headers).await;
                if let Some((resp, flags)) = abort {
                    let outcome = Outcome {
                        cluster,
                        flags,
                        ..Outcome::answered("fault_filter_abort")
                    };
                    break 'forward (resp, outcome, None);
                }
                delayed = flags;
            }
            let (resp, mut outcome, dest) =
                forward(gw, active, &request, dest, parts, body, upgrade).await;
            outcome.flags |= delayed;
            (resp, outcome, dest)
        }
    };
    // Response edits: the destination's first, then the route's, so the route's win.
    let ctx = TemplateContext {
        peer: conn.peer,
        local: conn.local,
        protocol: ctx_protocol,
        start,
        request: Some(&parts.headers),
        upstream: None,
    };
    if let Some(d) = dest {
        headers::apply(&d.headers.response, resp.headers_mut(), &ctx);
    }
    headers::apply(&action.headers.response, resp.headers_mut(), &ctx);
    if let Some(h) = cors_headers {
        resp.headers_mut().extend(h);
    }
    (resp, outcome)
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` of redirects and direct responses.
const DIRECT_RESPONSE: &str = "direct_response";

/// A forwarding route and the request's context.
struct Forwarding<'a, 'c> {
    route: &'a Route,
    f: &'a Forward,
    conn: &'c ConnInfo,
    /// The trusted client address: the peer, or what trusted proxies recorded, found before
    /// the gateway appends to `X-Forwarded-For`.
    client: IpAddr,
    start: SystemTime,
    protocol: &'static str,
    progress: &'c Progress<'a>,
}

type Answer<'a> = (
    Response<ResponseBody>,
    Outcome<'a>,
    Option<&'a WeightedDestination>,
);

/// Picks the destination, as Envoy does when it resolves the route, so that a fault's answer
/// is counted against it; and its cluster, if it is known.
fn pick_destination<'a>(
    active: &Active,
    request: &Forwarding<'a, '_>,
) -> (Option<&'a WeightedDestination>, Option<usize>) {
    let f = request.f;
    let dest = f.pick(fastrand::u32(0..f.total_weight().max(1)));
    let cluster = dest
        .and_then(|d| d.cluster)
        .filter(|i| active.clusters.get(*i).is_some());
    if let Some(c) = cluster {
        let _ = request.progress.cluster.set(c);
    }
    (dest, cluster)
}

async fn forward<'a>(
    gw: &Arc<Gateway>,
    active: &'a Arc<Active>,
    request: &Forwarding<'a, '_>,
    dest: Option<&'a WeightedDestination>,
    parts: &mut http::request::Parts,
    body: ClientBody,
    upgrade: Option<(HeaderValue, OnUpgrade)>,
) -> Answer<'a> {
    let Some(dest) = dest else {
        let (r, o) = local(LocalReply::NoCluster);
        return (r, o, None);
    };
    let Some((index, cluster)) = dest
        .cluster
        .and_then(|i| active.clusters.get(i).map(|c| (i, c)))
    else {
        let reply = request
            .f
            .invalid_backend_status
            .map_or(LocalReply::NoCluster, LocalReply::InvalidBackend);
        let (r, o) = local(reply);
        return (r, o, Some(dest));
    };
    let f = request.f;
    prepare_request(parts, request, dest);
    let (_span, trace) = trace_context::propagate(&mut parts.headers, gw.trace_sampling);
    let h2_client = parts.extensions.get::<H2WebSocket>().is_some();
    let client = request.client;
    let (version, downstream_upgrade) = match upgrade {
        // Upgrades go over HTTP/1.1 (Envoy would use extended CONNECT to an HTTP/2 upstream).
        Some((value, on)) => {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, value);
            (Version::HTTP_11, Some(on))
        }
        None => (upstream_version(active, dest, parts.version), None),
    };
    let read = RequestBody::read(body, gw.edge.max_request_buffer, gw.edge.max_request_body);
    let mut body = match read.await {
        Ok(body) => body,
        Err(BodyError::TooLarge(_)) => {
            let (r, o) = local(LocalReply::PayloadTooLarge);
            let outcome = Outcome {
                cluster: Some(index),
                ..o
            };
            return (r, outcome, Some(dest));
        }
        Err(BodyError::Client(_)) => {
            // The client went away or sent a broken body.
            let mut r = LocalReply::UpstreamReset.response();
            *r.status_mut() = StatusCode::BAD_REQUEST;
            let outcome = Outcome {
                cluster: Some(index),
                flags: ResponseFlags::DPE,
                ..Outcome::answered("downstream_protocol_error")
            };
            return (r, outcome, Some(dest));
        }
    };
    // An upgrade is not mirrored: a shadow that switched protocols would be left hanging.
    if !f.mirrors.is_empty() && downstream_upgrade.is_none() {
        mirror::send(gw, active, &f.mirrors, parts, &trace, &body);
    }
    // Envoy starts the route timeout when the request ends, which an upgrade never does.
    let timeout =
        effective_timeout(f.timeout_ms, &parts.headers).filter(|_| downstream_upgrade.is_none());
    if let Some(t) = timeout {
        parts.headers.insert(
            X_EXPECTED_TIMEOUT.clone(),
            headers::number(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    let received = body.received();
    let started = Instant::now();
    // Boxed: every enclosing future, up to the request's own box, would otherwise hold its
    // 1.5 KB inline and copy it again each time one is moved into its caller's (a callgrind
    // of the proxied request: about 9 KB less copied, one more small allocation).
    let send = Box::pin(
        gw.upstream
            .send(cluster, parts, &trace, &mut body, &f.retry, version, client),
    );
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, send)
            .await
            .unwrap_or(Err(crate::forward::Failed {
                reply: LocalReply::UpstreamTimeout,
                attempts: 0,
                exhausted: false,
            })),
        None => send.await,
    };
    let mut outcome = Outcome {
        cluster: Some(index),
        received: Some(received),
        ..Outcome::answered("via_upstream")
    };
    match result {
        Ok(done) => {
            let service_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if done.exhausted {
                outcome.flags = ResponseFlags::URX;
            }
            outcome.upstream = Some(UpstreamInfo {
                host: done.endpoint,
                local: done.response.body().local_addr(),
                service_ms,
            });
            let deadline = timeout.map(|t| started + t);
            let tunnel = downstream_upgrade.map(|on| (on, request.conn.drain.clone()));
            let resp = upstream_response(done, tunnel, service_ms, deadline, h2_client);
            (resp, outcome, Some(dest))
        }
        Err(failed) => {
            // A body that grew past the limit on its way failed the request, however the
            // upstream's connection reported it (an HTTP/2 stream reset, a body error).
            let sent = outcome.received.as_ref().map_or(0, Received::get);
            let reply = if sent > gw.edge.max_request_body {
                LocalReply::PayloadTooLarge
            } else {
                failed.reply
            };
            outcome.flags = reply.flag();
            if failed.exhausted {
                outcome.flags |= ResponseFlags::URX;
            }
            outcome.details = reply.details();
            (reply.response(), outcome, Some(dest))
        }
    }
}

/// The upstream's response for the client: hop-by-hop headers out, the gateway's in, and a
/// switched protocol spliced (the tunnel holding the connection's drain watch).
fn upstream_response(
    mut done: crate::forward::Forwarded,
    downstream_upgrade: Option<(OnUpgrade, Option<DrainWatch>)>,
    service_ms: u64,
    deadline: Option<Instant>,
    h2_client: bool,
) -> Response<ResponseBody> {
    let switched = done.response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgraded = match downstream_upgrade {
        Some((down, hold)) if switched => {
            let up = done.response.body_mut().take_upgraded();
            tokio::spawn(async move {
                splice(down, up).await;
                drop(hold);
            });
            done.response.headers().get(header::UPGRADE).cloned()
        }
        _ => None,
    };
    // The route timeout runs on until the body has ended, as Envoy's.
    let mut resp = done.response.map(|b| {
        Either::Left(match deadline {
            Some(at) => b.until(at),
            None => b,
        })
    });
    prepare_response_headers(resp.headers_mut(), service_ms);
    if let Some(cookie) = done.set_cookie.take() {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some(v) = upgraded {
        if h2_client {
            // Over HTTP/2 the tunnel opens with 200 and no upgrade headers (RFC 8441).
            *resp.status_mut() = StatusCode::OK;
            let h = resp.headers_mut();
            for name in [
                header::CONNECTION,
                header::UPGRADE,
                header::SEC_WEBSOCKET_ACCEPT,
            ] {
                h.remove(name);
            }
        } else {
            let h = resp.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, v);
        }
    }
    resp
}

/// The HTTP version to the cluster of `dest`: its own, or the client's (`useClientProtocol`).
fn upstream_version(active: &Active, dest: &WeightedDestination, client: Version) -> Version {
    let protocol = dest
        .cluster
        .and_then(|i| active.snapshot.clusters.get(i))
        .map_or(UpstreamProtocol::Http1, |c| c.protocol);
    match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Client if client == Version::HTTP_2 => Version::HTTP_2,
        UpstreamProtocol::Client => Version::HTTP_11,
    }
}

/// Copies bytes both ways between an upgraded client connection and the upstream's, until
/// both sides are closed. The tunnel depends on no snapshot, so reloads leave it alone.
async fn splice(downstream: OnUpgrade, upstream: Option<crate::pool::Upgraded>) {
    let Some(mut up) = upstream else {
        tracing::debug!("upgrade failed: the upstream connection is gone");
        return;
    };
    let down = match downstream.await {
        Ok(down) => down,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
}

/// Rewrites and header edits on the request, in Envoy's order: the gateway's own headers,
/// then the destination's edits, then the route's (so the route's win).
fn prepare_request(
    parts: &mut http::request::Parts,
    request: &Forwarding<'_, '_>,
    dest: &WeightedDestination,
) {
    let Forwarding {
        route,
        f,
        conn,
        start,
        client: _,
        protocol,
        progress: _,
    } = *request;
    // HTTP/2 and absolute-form requests carry the host in the URI: HTTP/1.1 upstreams need it
    // in Host.
    if let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    // The destination's host rewrite first: the route's wins, as in Envoy (and Istio).
    if let Some(a) = dest
        .authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        parts.headers.insert(header::HOST, a);
    }
    // The route's path rewrite wins over the destination's, as its host rewrite does.
    let path_rewrite = f
        .rewrite
        .as_ref()
        .and_then(|rw| rw.path.as_ref())
        .or(dest.path.as_ref());
    if let Some(p) = path_rewrite {
        let old = parts.uri.path();
        let new = p.apply(old);
        if new != old {
            // Envoy records the whole original :path, query included.
            let original = parts.uri.path_and_query().map(|pq| pq.as_str().to_string());
            set_path(parts, &new, original.as_deref());
        }
    }
    if let Some(a) = f
        .rewrite
        .as_ref()
        .and_then(|rw| rw.authority.as_deref())
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        parts.headers.insert(header::HOST, a);
    }
    let ctx = TemplateContext {
        peer: conn.peer,
        local: conn.local,
        protocol,
        start,
        request: None,
        upstream: None,
    };
    headers::apply(&dest.headers.request, &mut parts.headers, &ctx);
    headers::apply(&route.action.headers.request, &mut parts.headers, &ctx);
}

/// The route timeout, shortened by the `grpc-timeout` header of a gRPC request. Istio sets
/// Envoy's `max_grpc_timeout` to the route timeout (0: no cap), which Envoy applies to gRPC
/// requests only: other requests ignore the header.
fn effective_timeout(route_ms: Option<u64>, headers: &HeaderMap) -> Option<Duration> {
    let route = route_ms.map(Duration::from_millis);
    let is_grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let grpc = is_grpc
        .then(|| headers.get(&GRPC_TIMEOUT))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match (route, grpc) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Fault injection: the delay first, then the abort, each drawn by its percentage. Returns the
/// abort response with its flags, if any, and `DI` if the request was delayed.
async fn inject_fault(
    fault: &Fault,
    headers: &HeaderMap,
) -> (
    Option<(Response<ResponseBody>, ResponseFlags)>,
    ResponseFlags,
) {
    let draw = |percent: f64| percent >= 100.0 || fastrand::f64() * 100.0 < percent;
    let mut delayed = ResponseFlags::NONE;
    if let Some(d) = fault.delay
        && draw(d.percent)
    {
        tokio::time::sleep(d.delay).await;
        delayed = ResponseFlags::DI;
    }
    if let Some(a) = fault.abort
        && draw(a.percent)
    {
        let resp = match a.with {
            AbortWith::Http(code) => LocalReply::FaultAbort(code).response(),
            AbortWith::Grpc(code) => grpc_abort(code, headers),
        };
        return (Some((resp, delayed | ResponseFlags::FI)), delayed);
    }
    (None, delayed)
}

/// A gRPC abort: HTTP 200, trailers-only, with `grpc-status`.
fn grpc_abort(code: u32, _req: &HeaderMap) -> Response<ResponseBody> {
    let mut r = local_response(StatusCode::OK, Bytes::from_static(b"fault filter abort"));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert(
        "grpc-message",
        HeaderValue::from_static("fault filter abort"),
    );
    r
}

fn redirect(r: &Redirect, parts: &http::request::Parts, conn: &ConnInfo) -> Response<ResponseBody> {
    let input = RedirectInput {
        scheme: conn.scheme(),
        authority: request_authority(parts),
        path: parts.uri.path(),
        query: parts.uri.query(),
        listener_port: conn.port,
    };
    let location = r.location(&input);
    let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut resp = local_response(status, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `httpsRedirect`: a 301 to `https://` + the Host as sent (port included, as Envoy's
/// `require_tls`) + the path.
fn https_redirect(host: &str, parts: &http::request::Parts) -> Response<ResponseBody> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut resp = local_response(StatusCode::MOVED_PERMANENTLY, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&https_redirect_location(host, pq)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn direct(d: &DirectResponse) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
    let mut resp = local_response(status, d.body.clone());
    if !d.body.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(d.content_type),
        );
    }
    resp
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

/// Replaces the path (keeping the query); records `original` in `x-envoy-original-path`.
fn set_path(parts: &mut http::request::Parts, path: &str, original: Option<&str>) {
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Ok(uri) = http::Uri::builder().path_and_query(pq).build() {
        parts.uri = uri;
        if let Some(o) = original.and_then(|o| HeaderValue::from_str(o).ok()) {
            parts.headers.insert(X_ORIGINAL_PATH.clone(), o);
        }
    }
}

/// `ip` as a header value. Its text is allocated once and its bytes are shared by every
/// copy (`to_string` then `HeaderValue::from_str` would allocate three times).
fn address_value(ip: IpAddr) -> HeaderValue {
    let text = ip.to_string();
    // An address's text is always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `list`, a comma, and the address `value` after it: X-Forwarded-For with one more hop.
fn append_address(list: &[u8], value: &HeaderValue) -> Option<HeaderValue> {
    let mut text = Vec::with_capacity(list.len() + 2 + value.len());
    text.extend_from_slice(list);
    text.extend_from_slice(b", ");
    text.extend_from_slice(value.as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

fn add_gateway_headers(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    client: std::net::IpAddr,
    trusted_hops: usize,
) {
    // Gateways use the peer address as the client (use_remote_address), or with trusted
    // proxies in front, the address they recorded; an external client is named in
    // x-envoy-external-address. The peer is appended to X-Forwarded-For either way.
    if !edge::is_internal(client) {
        let v = if client == conn.peer.ip() {
            conn.peer_value.clone()
        } else {
            address_value(client)
        };
        headers.insert(X_EXTERNAL_ADDRESS.clone(), v);
    }
    // Entries: one lookup of each name where a look and an insert would take two.
    match headers.entry(X_FORWARDED_FOR.clone()) {
        Entry::Occupied(mut e) => {
            let prev = e.get().as_bytes();
            let v = if prev.is_empty() {
                Some(conn.peer_value.clone())
            } else {
                append_address(prev, &conn.peer_value)
            };
            if let Some(v) = v {
                e.insert(v);
            }
        }
        Entry::Vacant(e) => {
            e.insert(conn.peer_value.clone());
        }
    }
    // SANITIZE_SET: the client's own value is already gone; the verified certificate's
    // details take its place.
    if let Some(v) = conn.client_cert() {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
    }
    // The scheme a trusted proxy in front recorded is kept; otherwise it is ours.
    if trusted_hops == 0 || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(conn.scheme()),
        );
    }
    if let Entry::Vacant(e) = headers.entry(X_REQUEST_ID.clone()) {
        // A version-4 UUID from the thread-local generator: no system call per request.
        let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        if let Ok(v) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)) {
            e.insert(v);
        }
    }
}

/// The gateway's response headers (the pool has taken the hop-by-hop ones out already).
fn prepare_response_headers(headers: &mut HeaderMap, upstream_ms: u64) {
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    headers.insert(X_UPSTREAM_TIME.clone(), headers::number(upstream_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_shortens_the_route_timeout_of_grpc_requests_only() {
        let headers = |content_type: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static("200m"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(content_type).unwrap(),
            );
            h
        };
        let ms = Duration::from_millis;
        let cases = [
            (None, "application/grpc", Some(ms(200))),
            (Some(100), "application/grpc", Some(ms(100))),
            (Some(500), "application/grpc+proto", Some(ms(200))),
            (None, "application/json", None),
            (Some(500), "text/plain", Some(ms(500))),
        ];
        for (route, content_type, want) in cases {
            assert_eq!(
                effective_timeout(route, &headers(content_type)),
                want,
                "{route:?} {content_type}"
            );
        }
    }

    #[test]
    fn grpc_timeouts() {
        let cases = [
            ("1S", Some(Duration::from_secs(1))),
            ("500m", Some(Duration::from_millis(500))),
            ("2M", Some(Duration::from_secs(120))),
            ("10u", Some(Duration::from_micros(10))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("1x", None),
        ];
        for (v, want) in cases {
            assert_eq!(parse_grpc_timeout(v), want, "{v}");
        }
    }
}
