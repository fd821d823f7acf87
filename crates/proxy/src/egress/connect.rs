//! `CONNECT host:port` on a forward-proxy port: the registry and the outbound policy choose the
//! cluster as for any request no virtual host takes, the upstream connection is opened first
//! (so a failure is answered with Envoy's status), then `200` is answered and the bytes are
//! spliced both ways. The tunnel carries the client's own TLS: the cluster's TLS origination
//! does not apply to it.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isthmus_config::egress::{Outbound, OutboundDecision, PASSTHROUGH_CLUSTER, destination_port};
use isthmus_config::hosts::request_host;
use isthmus_config::snapshot::{ActionKind, Route};

use super::forward_proxy::{blocked, external};
use super::original_dst::Target;
use crate::local_reply::{LocalReply, ResponseBody, local_response};
use crate::response_flags::ResponseFlags;
use crate::{Active, ClusterState, tcp};

/// The answer to a CONNECT, and what metrics record of it.
pub struct Tunnel<'a> {
    pub response: Response<ResponseBody>,
    pub cluster: Option<&'a ClusterState>,
    pub flags: ResponseFlags,
}

impl<'a> Tunnel<'a> {
    fn reply(reply: LocalReply, cluster: Option<&'a ClusterState>) -> Self {
        Tunnel {
            response: reply.response(),
            cluster,
            flags: reply.flag(),
        }
    }
}

/// Opens the tunnel a CONNECT request asks for, on a forward-proxy port (`outbound`); other
/// ports answer 404, as Envoy does for a CONNECT that no route accepts.
pub async fn open<'a>(
    active: &'a Active,
    outbound: Option<&'a Outbound>,
    parts: &mut http::request::Parts,
    hold: Option<crate::drain::DrainWatch>,
) -> Tunnel<'a> {
    let Some(outbound) = outbound else {
        return Tunnel::reply(LocalReply::NoRoute, None);
    };
    let Some(authority) = parts.uri.authority().map(|a| a.as_str().to_string()) else {
        return Tunnel {
            response: local_response(StatusCode::BAD_REQUEST, Bytes::new()),
            cluster: None,
            flags: ResponseFlags::NONE,
        };
    };
    let host = request_host(&authority);
    let port = destination_port(&authority, "https");
    let (route, labels) = match outbound.decide(&host, port) {
        OutboundDecision::Registered(svc) => (&svc.route, None),
        OutboundDecision::Passthrough(route) => (route, Some(external(&host, PASSTHROUGH_CLUSTER))),
        OutboundDecision::Blocked => {
            return Tunnel {
                response: blocked(&host, port),
                cluster: None,
                flags: ResponseFlags::NONE,
            };
        }
    };
    let Some(shared) = cluster_of(active, route) else {
        return Tunnel::reply(LocalReply::NoCluster, None);
    };
    let cluster = shared.as_ref();
    let target = Target { host: &host, port };
    let upstream = match tcp::connect(cluster, Some(target)).await {
        Ok((_, s)) => s,
        Err(reply) => return Tunnel::reply(reply, Some(cluster)),
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // A connection that cannot be taken over (not HTTP/1.1 or HTTP/2).
        return Tunnel::reply(LocalReply::UpstreamProtocolError, Some(cluster));
    };
    let owned = shared.clone();
    tokio::spawn(async move {
        splice(owned, on_upgrade, upstream).await;
        // Until the tunnel ends, a drain waits for it.
        drop(hold);
    });
    let mut response = local_response(StatusCode::OK, Bytes::new());
    if let Some(l) = labels {
        response.extensions_mut().insert(l);
    }
    Tunnel {
        response,
        cluster: Some(cluster),
        flags: ResponseFlags::NONE,
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

/// Waits for the client's side of the tunnel (after the 200 is written) and copies bytes both
/// ways. The tunnel depends on no snapshot, so reloads leave it alone.
async fn splice(
    cluster: Arc<ClusterState>,
    on_upgrade: OnUpgrade,
    upstream: tokio::net::TcpStream,
) {
    match on_upgrade.await {
        Ok(client) => tcp::pipe(&cluster, TokioIo::new(client), upstream).await,
        Err(e) => tracing::debug!(cluster = %cluster.name, "CONNECT upgrade failed: {e}"),
    }
}
