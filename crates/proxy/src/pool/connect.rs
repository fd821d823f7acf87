//! Opening a connection: TCP (no Nagle), then TLS if the key says so, then for HTTP/2 the
//! handshake, all within the connect timeout. An HTTP/2 connection's task is spawned here.

use std::net::SocketAddr;

use hyper::client::conn::http2;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::exchange::{Connection, Io};
use super::{ConnKey, ConnSpec, OpenGuard, SendError};
use crate::body::UpstreamBody;

/// Istio's HTTP/2 flow-control windows for upstream connections.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

pub type H2Sender = http2::SendRequest<UpstreamBody>;

/// A new connection's sender and its local address (for the access log).
pub type Opened<S> = (S, Option<SocketAddr>);

/// Opens a connection for HTTP/1.1 exchanges (TCP, then TLS if the key says so), within the
/// connect timeout. Its exchanges run in the tasks of the requests that use it.
pub async fn http1(
    endpoint: SocketAddr,
    spec: &ConnSpec<'_>,
) -> Result<(Connection, Option<SocketAddr>), SendError> {
    let timeout = spec.settings.connect_timeout;
    tokio::time::timeout(timeout, async {
        let tcp = tcp(endpoint, spec.settings.keepalive.as_ref()).await?;
        let local = tcp.local_addr().ok();
        let io = tls(tcp, &spec.key, endpoint).await?;
        Ok((Connection::new(io), local))
    })
    .await
    .map_err(|_| SendError::Connect)?
}

pub async fn http2(
    endpoint: SocketAddr,
    spec: &ConnSpec<'_>,
) -> Result<Opened<H2Sender>, SendError> {
    let timeout = spec.settings.connect_timeout;
    tokio::time::timeout(timeout, async {
        let tcp = tcp(endpoint, spec.settings.keepalive.as_ref()).await?;
        let local = tcp.local_addr().ok();
        let sender = match tls(tcp, &spec.key, endpoint).await? {
            // Each its own type, so that hyper's HTTP/2 reads and writes need no dispatch.
            Io::Plain(s) => handshake_h2(TokioIo::new(s), endpoint, spec).await,
            Io::Tls(s) => handshake_h2(TokioIo::new(s), endpoint, spec).await,
        }?;
        Ok((sender, local))
    })
    .await
    .map_err(|_| SendError::Connect)?
}

async fn tcp(
    endpoint: SocketAddr,
    keepalive: Option<&socket2::TcpKeepalive>,
) -> Result<TcpStream, SendError> {
    let stream = TcpStream::connect(endpoint).await.map_err(|e| {
        tracing::debug!(%endpoint, "upstream connect failed: {e}");
        SendError::Connect
    })?;
    let _ = stream.set_nodelay(true);
    if let Some(k) = keepalive
        && let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(k)
    {
        tracing::debug!(%endpoint, "cannot set TCP keep-alive: {e}");
    }
    Ok(stream)
}

async fn tls(tcp: TcpStream, key: &ConnKey, endpoint: SocketAddr) -> Result<Io, SendError> {
    let Some(t) = &key.tls else {
        return Ok(Io::Plain(tcp));
    };
    let stream = tokio_rustls::TlsConnector::from(t.config.clone())
        .connect(t.sni.clone(), tcp)
        .await
        .map_err(|e| {
            tracing::debug!(%endpoint, "upstream TLS handshake failed: {e}");
            SendError::Connect
        })?;
    Ok(Io::Tls(Box::new(stream)))
}

async fn handshake_h2<T>(
    io: T,
    endpoint: SocketAddr,
    spec: &ConnSpec<'_>,
) -> Result<H2Sender, SendError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake(io)
        .await
        .map_err(|_| SendError::Connect)?;
    let open = OpenGuard::new(spec.open);
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = conn.await {
            tracing::debug!(%endpoint, "upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}
