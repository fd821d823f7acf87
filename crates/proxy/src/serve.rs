//! Serving one downstream connection: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the
//! same port, told apart by the HTTP/2 preface. HTTP/1.1 connections can be upgraded
//! (WebSocket): the handler then splices them to the upstream's.
//!
//! Limits of the HTTP libraries are set here; the timeouts and the premature-reset rule they
//! lack are enforced by the connection's [`Activity`].

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::Gateway;
use crate::activity::{Activity, Ending, Tracked, Watched};
use crate::drain::DrainWatch;
use crate::edge::EdgeSettings;
use crate::handler::{ConnInfo, handle};

/// Envoy's limits: 60 KiB of request headers, 100 headers (431 beyond).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
/// HTTP/2 streams the client reset before the gateway accepted them, at most; one more gets
/// GOAWAY `ENHANCE_YOUR_CALM` (h2's rapid-reset guard, kept at its default, made explicit so
/// an upgrade of the library cannot loosen it).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// HTTP/2 streams the gateway may reset because of the client's protocol errors, at most,
/// before GOAWAY `ENHANCE_YOUR_CALM` (the "MadeYouReset" flood, CVE-2025-8671).
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

pub fn builder(edge: &EdgeSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        // hyper's timer runs from the moment it waits for a head, so on a keep-alive
        // connection it would also be an idle timeout; [`Activity`] times heads from their
        // first byte instead (Envoy's `request_headers_timeout`).
        .header_read_timeout(None)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(Some(edge.h2_max_concurrent_streams))
        .initial_stream_window_size(edge.h2_initial_stream_window)
        .initial_connection_window_size(edge.h2_initial_connection_window)
        .max_pending_accept_reset_streams(Some(H2_MAX_PENDING_ACCEPT_RESETS))
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_ERROR_RESETS))
        // WebSocket over HTTP/2 (RFC 8441 extended CONNECT), as Envoy allows on gateways.
        .enable_connect_protocol()
        // A larger header block gets 431; CONTINUATION frames beyond what this needs get
        // GOAWAY `ENHANCE_YOUR_CALM` (h2 counts them), so a flood cannot grow memory.
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    b
}

pub async fn connection<S>(
    gw: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: S,
    mut info: ConnInfo,
    drain: [DrainWatch; 2],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let [mut shutdown, mut closing] = drain;
    info.drain = Some(shutdown.clone());
    let peer = info.peer;
    let info = Arc::new(info);
    let timeouts = gw.edge.timeouts();
    let counted = gw.clone();
    counted.metrics.active_connections.inc();
    let activity = Activity::new();
    let streams = activity.clone();
    let service = service_fn(move |req| {
        let (gw, info) = (gw.clone(), info.clone());
        let mut stream = streams.stream_started();
        // Boxed: hyper keeps room for one request future in every connection, idle or not,
        // and the handler's future is kilobytes. Boxed, an idle keep-alive connection holds
        // a pointer, and the room is taken only while a request runs.
        let handling: std::pin::Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { handle(gw, &info, req).await });
        async move {
            let resp = handling.await;
            stream.responded();
            Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, stream)))
        }
    });
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, service);
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
        ending = activity.watch(timeouts) => match ending {
            Ending::Idle => {
                tracing::debug!(%peer, "idle timeout: closing the connection");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            // Dropping the connection closes the socket: nothing more is read or answered.
            Ending::HeadersTimeout => {
                tracing::debug!(%peer, "request headers timeout: connection closed");
                Ok(())
            }
            Ending::TooManyResets => {
                tracing::info!(%peer, "too many premature stream resets: connection closed");
                Ok(())
            }
        },
    };
    counted.metrics.active_connections.dec();
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
