//! Opaque TCP: pick a weighted destination and an endpoint, connect, and copy bytes both
//! ways until either side closes (half-close is passed on).

use isthmus_config::snapshot::Forward;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::balance::outlier;
use crate::egress::original_dst::Target;
use crate::local_reply::LocalReply;
use crate::{Active, ClusterState, Gateway};

/// Endpoints tried before giving up on a connection.
const CONNECT_ATTEMPTS: usize = 3;

/// Serves a plain TCP port: the first TCP route of the listener.
pub async fn connection(gw: std::sync::Arc<Gateway>, stream: TcpStream, port: u16) {
    let _ = stream.set_nodelay(true);
    let active = gw.active.load_full();
    let Some(route) = active
        .snapshot
        .listeners
        .get(&port)
        .and_then(|l| l.tcp_route())
    else {
        return;
    };
    splice(&gw, &active, &route.forward, None, stream).await;
}

/// Connects to a destination of `forward` and copies bytes between it and `client`. `target`
/// is the destination the connection names (SNI, CONNECT target), for original-destination
/// clusters.
pub async fn splice<S>(
    _gw: &Gateway,
    active: &Active,
    forward: &Forward,
    target: Option<Target<'_>>,
    client: S,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let point = fastrand::u32(0..forward.total_weight().max(1));
    let Some(cluster) = forward
        .pick(point)
        .and_then(|d| d.cluster)
        .and_then(|i| active.clusters.get(i))
    else {
        return;
    };
    let upstream = match connect(cluster, target).await {
        Ok(s) => s,
        Err(reply) => {
            tracing::debug!(cluster = %cluster.name, flag = reply.flag(), "no endpoint accepted the connection");
            return;
        }
    };
    pipe(cluster, client, upstream).await;
}

/// Opens a connection to an endpoint of `cluster`, trying up to [`CONNECT_ATTEMPTS`] of them.
/// The error says why, as the local reply an HTTP request would get.
pub async fn connect(
    cluster: &ClusterState,
    target: Option<Target<'_>>,
) -> Result<TcpStream, LocalReply> {
    let connect_timeout = cluster.settings().pool.connect_timeout;
    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let chosen = cluster.pick(target, None, &tried).await.map_err(|e| {
            tracing::debug!(cluster = %cluster.name, "{e}");
            LocalReply::DnsFailure
        })?;
        let Some(endpoint) = chosen else {
            break;
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(endpoint.address)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            _ => {
                cluster.report(&endpoint, outlier::Outcome::LocalFailure);
                tried.push(endpoint.address);
            }
        }
    }
    Err(if tried.is_empty() {
        LocalReply::NoHealthyUpstream
    } else {
        LocalReply::ConnectFailure
    })
}

/// Copies bytes both ways until both sides are closed (half-closes are passed on).
pub async fn pipe<S>(cluster: &ClusterState, mut client: S, mut upstream: TcpStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(cluster = %cluster.name, "tcp proxy ended: {e}");
    }
}
