//! Opaque TCP: pick a weighted destination and an endpoint, connect, and copy bytes both
//! ways until either side closes (half-close is passed on).

use isthmus_config::snapshot::Forward;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::balance::outlier;
use crate::{Active, Gateway};

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
    splice(&gw, &active, &route.forward, stream).await;
}

/// Connects to a destination of `forward` and copies bytes between it and `client`.
pub async fn splice<S>(_gw: &Gateway, active: &Active, forward: &Forward, mut client: S)
where
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
    let connect_timeout = cluster.settings().pool.connect_timeout;
    let mut tried = Vec::new();
    let mut upstream = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(target) = cluster.choose(None, &tried) else {
            break;
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(target.address)).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            _ => {
                cluster.report(&target, outlier::Outcome::LocalFailure);
                tried.push(target.address);
            }
        }
    }
    let Some(mut upstream) = upstream else {
        tracing::debug!(cluster = %cluster.name, "no endpoint accepted the connection");
        return;
    };
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(cluster = %cluster.name, "tcp proxy ended: {e}");
    }
}
