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
//!
//! Mesh VirtualServices route tunnels as a sidecar routes outbound connections: when their
//! `tcp` rules cover the CONNECT's host and port, the tunnel goes to the rule's weighted
//! destinations. When a `tls` rule could apply, the destination depends on the SNI of the
//! ClientHello the client sends inside the tunnel: the `200` is answered first, the ClientHello
//! read (for at most [`CLIENT_HELLO_TIMEOUT`]), then the destination chosen and connected (a
//! failure closes the tunnel). The rules are compiled into the port's [`Outbound`] table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use isthmus_config::egress::{
    BLACKHOLE_CLUSTER, Outbound, OutboundDecision, PASSTHROUGH_CLUSTER, destination_port,
};
use isthmus_config::hosts::request_host;
use isthmus_config::snapshot::{ActionKind, Forward, Route};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::forward_proxy::{blocked, external};
use super::original_dst::Target;
use crate::handler::ConnInfo;
use crate::local_reply::{LocalReply, ResponseBody, local_response};
use crate::metrics::DestinationStats;
use crate::response_flags::ResponseFlags;
use crate::telemetry::RequestLog;
use crate::tls::{client_hello, prefixed::Prefixed};
use crate::{Active, ClusterState, Gateway, tcp};

/// A client whose tunnel is routed by SNI has this long to send its ClientHello; without one
/// (or with something else) the tunnel takes a `tcp` rule or the default destination.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A tunnel that was answered `200`, waiting for the client's side.
pub struct Opened {
    on_upgrade: OnUpgrade,
    upstream: Upstream,
}

/// The destination side of a tunnel.
enum Upstream {
    /// Chosen by the CONNECT (a `tcp` rule, the registry or the policy) and connected.
    Connected {
        cluster: Arc<ClusterState>,
        upstream: TcpStream,
        upstream_host: SocketAddr,
        /// The series of a passed-through host (`PassthroughCluster`).
        external: Option<Arc<DestinationStats>>,
    },
    /// Chosen by the SNI of the client's ClientHello (`tls` rules), once it has come.
    BySni(Box<BySni>),
}

/// What a tunnel routed by SNI needs to choose its destination.
struct BySni {
    /// The snapshot whose rules apply; held only until the destination is chosen.
    active: Arc<Active>,
    host: String,
    port: u16,
    /// When no rule takes the tunnel: the registry's or the policy's cluster.
    default: Arc<ClusterState>,
    external: Option<Arc<DestinationStats>>,
}

/// Opens the tunnel a CONNECT request asks for, on a forward-proxy port (`outbound`); other
/// ports answer 404, as Envoy does for a CONNECT that no route accepts.
pub async fn open<'a>(
    gw: &Gateway,
    active: &'a Arc<Active>,
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
    let by_sni = outbound.tunnel_has_tls(&host, port);
    // A `tcp` rule of a mesh VirtualService takes the tunnel; a `tls` rule may, once the SNI
    // is known; otherwise the registry's or the policy's route.
    let rule = match outbound.tunnel_tcp(&host, port) {
        Some(r) if !by_sni => Some(r),
        _ => None,
    };
    let (labels, chosen) = match rule {
        Some(r) => (None, pick(active, &r.forward)),
        None => (labels, cluster_of(active, route)),
    };
    let external = labels.as_ref().map(|l| istio.destination(l));
    let Some(shared) = chosen else {
        tcp::count_refused(istio.unknown(), ResponseFlags::NC);
        return Tunnel::reply(LocalReply::NoCluster, None);
    };
    let cluster = shared.as_ref();
    let stats = external.as_ref().unwrap_or(&cluster.stats);
    let upstream = if by_sni {
        Upstream::BySni(Box::new(BySni {
            active: active.clone(),
            host: host.into_owned(),
            port,
            default: shared.clone(),
            external,
        }))
    } else {
        let target = Target { host: &host, port };
        match tcp::connect(cluster, Some(target)).await {
            Ok((upstream_host, upstream)) => Upstream::Connected {
                cluster: shared.clone(),
                upstream,
                upstream_host,
                external,
            },
            Err(reply) => {
                tcp::count_refused(stats, reply.flag());
                return Tunnel::reply(reply, Some(cluster));
            }
        }
    };
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // A connection that cannot be taken over (not HTTP/1.1 or HTTP/2).
        let reply = LocalReply::UpstreamProtocolError;
        let stats = match &upstream {
            Upstream::Connected { external, .. } => external.as_ref(),
            Upstream::BySni(b) => b.external.as_ref(),
        };
        tcp::count_refused(stats.unwrap_or(&cluster.stats), reply.flag());
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
            on_upgrade,
            upstream,
        }),
    }
}

/// The cluster of one of a rule's weighted destinations, picked by weight.
fn pick<'a>(active: &'a Active, forward: &Forward) -> Option<&'a Arc<ClusterState>> {
    let point = fastrand::u32(0..forward.total_weight().max(1));
    forward
        .pick(point)
        .and_then(|d| d.cluster)
        .and_then(|i| active.clusters.get(i))
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
    /// The tunnel holds its cluster, not the snapshot, so reloads leave it alone (a tunnel
    /// routed by SNI holds the snapshot only until its ClientHello has come).
    pub async fn run(
        self,
        gw: Arc<Gateway>,
        conn: ConnInfo,
        request: Option<RequestLog>,
        start: Instant,
    ) {
        let Opened {
            on_upgrade,
            upstream,
        } = self;
        let client = match on_upgrade.await {
            Ok(client) => TokioIo::new(client),
            Err(e) => {
                // The client went away before its side of the tunnel was taken over.
                tracing::debug!("CONNECT upgrade failed: {e}");
                let (cluster, external) = match upstream {
                    Upstream::Connected {
                        cluster, external, ..
                    } => (cluster, external),
                    Upstream::BySni(b) => (b.default, b.external),
                };
                tcp::Session::new(&gw, &conn, start)
                    .tunnel(&cluster, external, request.as_ref())
                    .refused(ResponseFlags::DC);
                return;
            }
        };
        match upstream {
            Upstream::Connected {
                cluster,
                upstream,
                upstream_host,
                external,
            } => {
                tcp::Session::new(&gw, &conn, start)
                    .tunnel(&cluster, external, request.as_ref())
                    .relay(&cluster, client, upstream, upstream_host)
                    .await;
            }
            Upstream::BySni(b) => b.run(&gw, &conn, request.as_ref(), start, client).await,
        }
    }
}

impl BySni {
    /// Reads the ClientHello, chooses the destination (the first `tls` rule whose `sniHosts`
    /// cover its SNI, else the first `tcp` rule, else the default), connects and relays; the
    /// bytes read go first.
    async fn run<S>(
        self,
        gw: &Gateway,
        conn: &ConnInfo,
        request: Option<&RequestLog>,
        start: Instant,
        mut client: S,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut head = Vec::new();
        let hello = tokio::time::timeout(
            CLIENT_HELLO_TIMEOUT,
            client_hello::read(&mut client, &mut head),
        )
        .await;
        let sni = match hello {
            Ok(Ok(Some(h))) => h.sni,
            _ => None,
        };
        let BySni {
            active,
            host,
            port,
            default,
            external,
        } = self;
        let outbound = active
            .snapshot
            .listeners
            .get(&conn.port)
            .and_then(|l| l.outbound.as_ref());
        let rule = outbound.and_then(|o| {
            sni.as_deref()
                .and_then(|sni| o.tunnel_tls(&host, port, sni).map(|r| &r.forward))
                .or_else(|| o.tunnel_tcp(&host, port).map(|r| &r.forward))
        });
        let (cluster, external) = match rule {
            Some(forward) => match pick(&active, forward) {
                Some(c) => (c.clone(), None),
                None => {
                    tcp::Session::new(gw, conn, start)
                        .for_request(request)
                        .refused(ResponseFlags::NC);
                    return;
                }
            },
            None => (default, external),
        };
        drop(active);
        let session = tcp::Session::new(gw, conn, start).tunnel(&cluster, external, request);
        let target = Target { host: &host, port };
        match tcp::connect(&cluster, Some(target)).await {
            Ok((upstream_host, upstream)) => {
                session
                    .relay(
                        &cluster,
                        Prefixed::new(head, client),
                        upstream,
                        upstream_host,
                    )
                    .await;
            }
            Err(reply) => {
                tracing::debug!(cluster = %cluster.name, details = reply.details(), "no endpoint accepted the tunnel");
                session.refused(reply.flag());
            }
        }
    }
}
