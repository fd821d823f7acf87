//! `CONNECT host:port` on a forward-proxy port: the registry and the outbound policy choose the
//! cluster as for any request no virtual host takes, the upstream connection is opened first
//! (so a failure is answered with Envoy's status), then `200` is answered and the bytes are
//! spliced both ways. The tunnel carries the client's own TLS: the cluster's TLS origination
//! does not apply to it (originating TLS around the client's TLS would encrypt twice, and the
//! external server would see a TLS record where it expects a ClientHello).
//!
//! A tunnel is a TCP connection for telemetry: it is counted in Istio's `istio_tcp_*` series
//! (with the requested host as `destination_service` outside the registry, as HTTP requests
//! are) and logged once, when it closes, by the same [`tcp::Session`] as plain TCP. A CONNECT
//! that opens no tunnel is counted as a TCP connection refused with its response flag, and is
//! logged as the HTTP exchange it was.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isthmus_config::egress::{
    BLACKHOLE_CLUSTER, Outbound, OutboundDecision, PASSTHROUGH_CLUSTER, destination_port,
};
use isthmus_config::hosts::request_host;
use isthmus_config::snapshot::{ActionKind, Route};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::forward_proxy::{blocked, external};
use super::original_dst::Target;
use crate::handler::ConnInfo;
use crate::local_reply::{LocalReply, ResponseBody, local_response};
use crate::metrics::DestinationStats;
use crate::response_flags::ResponseFlags;
use crate::telemetry::RequestLog;
use crate::{Active, ClusterState, Gateway, tcp};

/// The answer to a CONNECT, and what metrics record of it.
pub struct Tunnel<'a> {
    pub response: Response<ResponseBody>,
    pub cluster: Option<&'a ClusterState>,
    pub flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` of the answer.
    pub details: &'static str,
    /// The tunnel to run once the `200` is written; `None` when the CONNECT was refused.
    pub opened: Option<Opened>,
}

impl<'a> Tunnel<'a> {
    fn reply(reply: LocalReply, cluster: Option<&'a ClusterState>) -> Self {
        Tunnel {
            response: reply.response(),
            cluster,
            flags: reply.flag(),
            details: reply.details(),
            opened: None,
        }
    }
}

/// A tunnel whose upstream connection is open, waiting for the client's side.
pub struct Opened {
    cluster: Arc<ClusterState>,
    on_upgrade: OnUpgrade,
    upstream: TcpStream,
    upstream_host: SocketAddr,
    /// The series of a passed-through host (`PassthroughCluster`).
    external: Option<Arc<DestinationStats>>,
}

/// Opens the tunnel a CONNECT request asks for, on a forward-proxy port (`outbound`); other
/// ports answer 404, as Envoy does for a CONNECT that no route accepts.
pub async fn open<'a>(
    gw: &Gateway,
    active: &'a Active,
    outbound: Option<&'a Outbound>,
    parts: &mut http::request::Parts,
) -> Tunnel<'a> {
    let Some(outbound) = outbound else {
        return Tunnel::reply(LocalReply::NoRoute, None);
    };
    let Some(authority) = parts.uri.authority().map(|a| a.as_str().to_string()) else {
        return Tunnel {
            response: local_response(StatusCode::BAD_REQUEST, Bytes::new()),
            cluster: None,
            flags: ResponseFlags::NONE,
            details: "missing_host_header",
            opened: None,
        };
    };
    let host = request_host(&authority);
    let port = destination_port(&authority, "https");
    let istio = &gw.metrics.istio;
    let (route, labels) = match outbound.decide(&host, port) {
        OutboundDecision::Registered(svc) => (&svc.route, None),
        OutboundDecision::Passthrough(route) => (route, Some(external(&host, PASSTHROUGH_CLUSTER))),
        OutboundDecision::Blocked => {
            // As Istio counts a TCP connection sent to its BlackHoleCluster (a cluster with
            // no endpoint): opened and closed at once, `UH`.
            let hole = istio.destination(&external(&host, BLACKHOLE_CLUSTER));
            tcp::count_refused(&hole, ResponseFlags::UH);
            return Tunnel {
                response: blocked(&host, port),
                cluster: None,
                flags: ResponseFlags::NONE,
                // Istio's `block_all` route answers with a direct response.
                details: "direct_response",
                opened: None,
            };
        }
    };
    let external = labels.as_ref().map(|l| istio.destination(l));
    let Some(shared) = cluster_of(active, route) else {
        tcp::count_refused(istio.unknown(), ResponseFlags::NC);
        return Tunnel::reply(LocalReply::NoCluster, None);
    };
    let cluster = shared.as_ref();
    let stats = external.as_ref().unwrap_or(&cluster.stats);
    let target = Target { host: &host, port };
    let (upstream_host, upstream) = match tcp::connect(cluster, Some(target)).await {
        Ok(c) => c,
        Err(reply) => {
            tcp::count_refused(stats, reply.flag());
            return Tunnel::reply(reply, Some(cluster));
        }
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // A connection that cannot be taken over (not HTTP/1.1 or HTTP/2).
        let reply = LocalReply::UpstreamProtocolError;
        tcp::count_refused(stats, reply.flag());
        return Tunnel::reply(reply, Some(cluster));
    };
    let mut response = local_response(StatusCode::OK, Bytes::new());
    if let Some(l) = labels {
        response.extensions_mut().insert(l);
    }
    Tunnel {
        response,
        cluster: Some(cluster),
        flags: ResponseFlags::NONE,
        details: "via_upstream",
        opened: Some(Opened {
            cluster: shared.clone(),
            on_upgrade,
            upstream,
            upstream_host,
            external,
        }),
    }
}

/// The cluster of a route's (only) destination.
fn cluster_of<'a>(active: &'a Active, route: &Route) -> Option<&'a Arc<ClusterState>> {
    let ActionKind::Forward(f) = &route.action.kind else {
        return None;
    };
    f.destinations
        .first()
        .and_then(|d| d.cluster)
        .and_then(|i| active.clusters.get(i))
}

impl Opened {
    /// Waits for the client's side of the tunnel (after the 200 is written) and copies bytes
    /// both ways, then logs the tunnel as its CONNECT `request` (which arrived at `start`).
    /// The tunnel holds its cluster, not the snapshot, so reloads leave it alone.
    pub async fn run(
        self,
        gw: Arc<Gateway>,
        conn: ConnInfo,
        request: Option<RequestLog>,
        start: Instant,
    ) {
        let Opened {
            cluster,
            on_upgrade,
            upstream,
            upstream_host,
            external,
        } = self;
        let session =
            tcp::Session::new(&gw, &conn, start).tunnel(&cluster, external, request.as_ref());
        match on_upgrade.await {
            Ok(client) => {
                session
                    .relay(&cluster, TokioIo::new(client), upstream, upstream_host)
                    .await;
            }
            Err(e) => {
                // The client went away before its side of the tunnel was taken over.
                tracing::debug!(cluster = %cluster.name, "CONNECT upgrade failed: {e}");
                session.refused(ResponseFlags::DC);
            }
        }
    }
}
