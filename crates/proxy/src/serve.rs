//! Serving one downstream connection: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the
//! same port, told apart by the HTTP/2 preface. HTTP/1.1 connections can be upgraded
//! (WebSocket): the handler then splices them to the upstream's.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::Gateway;
use crate::drain::DrainWatch;
use crate::handler::{ConnInfo, handle};

/// Envoy's limits: 60 KiB of request headers, 100 headers (431 beyond, on HTTP/1).
const MAX_HEADER_BYTES: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
/// A client that sends nothing for this long after connecting is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

pub fn builder(edge: &crate::edge::EdgeSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(Some(edge.h2_max_concurrent_streams))
        // WebSocket over HTTP/2 (RFC 8441 extended CONNECT), as Envoy allows on gateways.
        .enable_connect_protocol()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    b
}

pub async fn connection<S>(
    gw: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    info: ConnInfo,
    drain: [DrainWatch; 2],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let [mut shutdown, mut closing] = drain;
    let peer = info.peer;
    let info = Arc::new(info);
    let counted = gw.clone();
    counted.metrics.active_connections.inc();
    let service = service_fn(move |req| {
        let (gw, info) = (gw.clone(), info.clone());
        // Boxed: hyper keeps room for one request future in every connection, idle or not,
        // and the handler's future is tens of kilobytes. Boxed, an idle keep-alive
        // connection holds a pointer, and the room is taken only while a request runs.
        let handling: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { handle(gw, &info, req).await });
        async move { Ok::<_, std::convert::Infallible>(handling.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.started() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        () = closing.started() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    counted.metrics.active_connections.dec();
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
