//! Opaque TCP: pick a weighted destination and an endpoint, connect, and copy bytes both
//! ways until either side closes (half-close is passed on) or the connection has been idle
//! for the cluster's idle timeout (Istio's default: one hour). Every connection is counted in
//! Istio's TCP metrics, its bytes as they pass, and logged when it ends. CONNECT tunnels of
//! forward-proxy ports go through the same [`Session`], so they are counted and logged alike.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use isthmus_config::snapshot::Forward;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access_log::Entry;
use crate::balance::outlier;
use crate::egress::original_dst::Target;
use crate::handler::ConnInfo;
use crate::local_reply::LocalReply;
use crate::metrics::{DestinationStats, TcpSeries};
use crate::response_flags::ResponseFlags;
use crate::telemetry::RequestLog;
use crate::{Active, ClusterState, Gateway};

/// Endpoints tried before giving up on a connection.
const CONNECT_ATTEMPTS: usize = 3;
/// The idle timer checks for traffic this many times per idle timeout.
const IDLE_CHECKS: u32 = 4;

/// Serves a plain TCP port: the first TCP route of the listener.
pub async fn connection(gw: Arc<Gateway>, stream: TcpStream, info: ConnInfo) {
    let _ = stream.set_nodelay(true);
    let active = gw.active.load_full();
    let Some(route) = active
        .snapshot
        .listeners
        .get(&info.port)
        .and_then(|l| l.tcp_route())
    else {
        return;
    };
    splice(&gw, &active, &route.forward, None, stream, &info).await;
}

/// What one connection (or CONNECT tunnel) did, for its metrics and log line.
pub struct Session<'a> {
    gw: &'a Gateway,
    conn: &'a ConnInfo,
    start: Instant,
    start_time: SystemTime,
    cluster: Option<&'a ClusterState>,
    /// The series of a destination outside the registry (a tunnel through
    /// `PassthroughCluster`), labelled with the host it names; `None`: the cluster's.
    external: Option<Arc<DestinationStats>>,
    /// The CONNECT request that opened a tunnel: the line is the request's, as Envoy logs a
    /// CONNECT stream when it ends, with the tunnel's bytes and duration.
    request: Option<&'a RequestLog>,
}

impl<'a> Session<'a> {
    /// A connection that started at `start`.
    pub fn new(gw: &'a Gateway, conn: &'a ConnInfo, start: Instant) -> Self {
        Session {
            gw,
            conn,
            start,
            start_time: SystemTime::now(),
            cluster: None,
            external: None,
            request: None,
        }
    }

    /// A tunnel opened by a CONNECT request to `cluster`, counted in `external`'s series
    /// when given, and logged as `request` when the access log is on.
    pub fn tunnel(
        mut self,
        cluster: &'a ClusterState,
        external: Option<Arc<DestinationStats>>,
        request: Option<&'a RequestLog>,
    ) -> Self {
        self.cluster = Some(cluster);
        self.external = external;
        self.request = request;
        self
    }

    /// A tunnel opened by a CONNECT request that reached no cluster, logged as `request`.
    pub fn for_request(mut self, request: Option<&'a RequestLog>) -> Self {
        self.request = request;
        self
    }

    fn stats(&self) -> &Arc<DestinationStats> {
        match &self.external {
            Some(s) => s,
            None => self
                .cluster
                .map_or(self.gw.metrics.istio.unknown(), |c| &c.stats),
        }
    }

    /// A connection that never reached an upstream: opened and closed at once, with `flags`.
    pub fn refused(&self, flags: ResponseFlags) {
        count_refused(self.stats(), flags);
        self.log(flags, &Totals::default(), None, None);
    }

    /// Copies bytes between `client` and `upstream` (an endpoint of `cluster`, at
    /// `upstream_host`) until both sides close or the cluster's idle timeout passes without a
    /// byte, counting the connection and its bytes as they pass, then logs it.
    pub async fn relay<S>(
        &self,
        cluster: &ClusterState,
        client: S,
        upstream: TcpStream,
        upstream_host: SocketAddr,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let series = self.stats().tcp(ResponseFlags::NONE);
        series.value.opened.fetch_add(1, Ordering::Relaxed);
        let totals = Totals::default();
        let upstream_local = upstream.local_addr().ok();
        let idle = Duration::from_millis(cluster.settings().policy.connection.tcp_idle_timeout_ms);
        let mut client = Counted {
            inner: client,
            totals: &totals,
            series: &series.value,
        };
        if let Err(e) = pump(&mut client, upstream, idle).await {
            tracing::debug!(cluster = %cluster.name, "tcp proxy ended: {e}");
        }
        series.value.closed.fetch_add(1, Ordering::Relaxed);
        self.log(
            ResponseFlags::NONE,
            &totals,
            Some(upstream_host),
            upstream_local,
        );
    }

    fn log(
        &self,
        flags: ResponseFlags,
        totals: &Totals,
        upstream: Option<SocketAddr>,
        upstream_local: Option<SocketAddr>,
    ) {
        let Some(sink) = &self.gw.access_log else {
            return;
        };
        let base = match self.request {
            // The tunnel's CONNECT, answered 200 (Envoy's `%BYTES_*%` of a CONNECT stream
            // are the tunnel's bytes).
            Some(r) => Entry {
                code: 200,
                details: Some("via_upstream"),
                ..r.entry()
            },
            None => Entry {
                start: Some(self.start_time),
                downstream_local: Some(self.conn.local),
                downstream_remote: Some(self.conn.peer),
                server_name: self.conn.sni().map(|s| &**s),
                ..Entry::default()
            },
        };
        sink.log(&Entry {
            flags,
            bytes_received: totals.received.load(Ordering::Relaxed),
            bytes_sent: totals.sent.load(Ordering::Relaxed),
            duration_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            upstream_host: upstream,
            upstream_cluster: self.cluster.map(|c| c.name.as_str()),
            upstream_local,
            ..base
        });
    }
}

/// Counts a connection that reached no upstream (opened and closed at once) in `stats`.
pub fn count_refused(stats: &DestinationStats, flags: ResponseFlags) {
    let series = stats.tcp(flags);
    series.value.opened.fetch_add(1, Ordering::Relaxed);
    series.value.closed.fetch_add(1, Ordering::Relaxed);
}

/// Connects to a destination of `forward` and copies bytes between it and `client`. `target`
/// is the destination the connection names (SNI), for original-destination clusters.
pub async fn splice<S>(
    gw: &Gateway,
    active: &Active,
    forward: &Forward,
    target: Option<Target<'_>>,
    client: S,
    conn: &ConnInfo,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let point = fastrand::u32(0..forward.total_weight().max(1));
    let cluster = forward
        .pick(point)
        .and_then(|d| d.cluster)
        .and_then(|i| active.clusters.get(i));
    let mut session = Session::new(gw, conn, Instant::now());
    let Some(cluster) = cluster else {
        session.refused(ResponseFlags::NC);
        return;
    };
    session.cluster = Some(cluster);
    let (upstream_host, upstream) = match connect(cluster, target).await {
        Ok(c) => c,
        Err(reply) => {
            tracing::debug!(cluster = %cluster.name, details = reply.details(), "no endpoint accepted the connection");
            session.refused(reply.flag());
            return;
        }
    };
    session
        .relay(cluster, client, upstream, upstream_host)
        .await;
}

/// Opens a connection to an endpoint of `cluster`, trying up to [`CONNECT_ATTEMPTS`] of them.
/// The error says why, as the local reply an HTTP request would get.
pub async fn connect(
    cluster: &ClusterState,
    target: Option<Target<'_>>,
) -> Result<(SocketAddr, TcpStream), LocalReply> {
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
                return Ok((endpoint.address, s));
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

/// Copies both ways until both sides have closed, or until no byte has moved for `idle`
/// (checked every quarter of it, so an idle connection closes between `idle` and 1.25 × `idle`
/// after its last byte).
async fn pump<C, U>(
    client: &mut Counted<'_, C>,
    mut upstream: U,
    idle: Duration,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let totals = client.totals;
    let check = (idle / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut timer = tokio::time::interval_at(Instant::now() + check, check);
    let copy = tokio::io::copy_bidirectional(client, &mut upstream);
    tokio::pin!(copy);
    let (mut seen, mut quiet) = (totals.moved(), 0);
    loop {
        tokio::select! {
            r = &mut copy => return r.map(|_| ()),
            _ = timer.tick() => {
                let moved = totals.moved();
                quiet = if moved == seen { quiet + 1 } else { 0 };
                seen = moved;
                if quiet >= IDLE_CHECKS {
                    tracing::debug!(?idle, "tcp connection idle: closing");
                    return Ok(());
                }
            }
        }
    }
}

/// One connection's byte counts.
#[derive(Debug, Default)]
struct Totals {
    /// From the client.
    received: AtomicU64,
    /// To the client.
    sent: AtomicU64,
}

impl Totals {
    fn moved(&self) -> u64 {
        self.received.load(Ordering::Relaxed) + self.sent.load(Ordering::Relaxed)
    }
}

/// The client's side of a connection, counting bytes into the connection's totals and its
/// metric series as they pass (Istio reports TCP bytes while connections are open too).
struct Counted<'a, S> {
    inner: S,
    totals: &'a Totals,
    series: &'a TcpSeries,
}

impl<S> Counted<'_, S> {
    fn received(&self, n: usize) {
        self.totals.received.fetch_add(n as u64, Ordering::Relaxed);
        self.series.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn sent(&self, n: usize) {
        self.totals.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.series.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.received(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, data))?;
        self.sent(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_and_busy_ones_do_not() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let totals = Totals::default();
        let series = TcpSeries::default();
        let mut counted = Counted {
            inner: client,
            totals: &totals,
            series: &series,
        };
        let idle = Duration::from_secs(60);
        let started = Instant::now();
        let talk = async {
            // Traffic every 50 s keeps it open past several idle periods.
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                client_peer.write_all(b"ping").await.unwrap();
                let mut b = [0; 4];
                upstream_peer.read_exact(&mut b).await.unwrap();
                upstream_peer.write_all(b"pong!").await.unwrap();
                client_peer.read_exact(&mut [0; 5]).await.unwrap();
            }
            (client_peer, upstream_peer)
        };
        let (result, _peers) = tokio::join!(pump(&mut counted, upstream, idle), talk);
        result.unwrap();
        let lasted = started.elapsed();
        // Last byte at 200 s; closed between 60 s and 75 s later.
        assert!(
            lasted >= Duration::from_secs(260) && lasted <= Duration::from_secs(276),
            "{lasted:?}"
        );
        assert_eq!(totals.received.load(Ordering::Relaxed), 16);
        assert_eq!(totals.sent.load(Ordering::Relaxed), 20);
        assert_eq!(series.sent.load(Ordering::Relaxed), 20);
    }
}
