//! Serving a TLS port: read the ClientHello, choose the filter chain by SNI in the current
//! snapshot, then terminate TLS (and serve HTTP, or splice TCP) or pass the bytes through.

use std::sync::Arc;
use std::time::Duration;

use isthmus_config::tls::{ChainRoutes, ChainTls, choose_chain, find_tls_route, first_tcp_route};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::prefixed::Prefixed;
use super::{client_hello, xfcc};
use crate::egress::original_dst::Target;
use crate::handler::{ConnInfo, TlsInfo};
use crate::serve::FromListener;
use crate::{Gateway, serve, tcp};

/// A client has this long to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn connection(
    gw: Arc<Gateway>,
    builder: Arc<serve::Protocols>,
    mut stream: TcpStream,
    mut info: ConnInfo,
    from: FromListener,
) {
    let _ = stream.set_nodelay(true);
    let mut head = Vec::new();
    let hello = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        client_hello::read(&mut stream, &mut head),
    )
    .await
    {
        Ok(Ok(Some(h))) => h,
        _ => return,
    };
    let active = gw.active.load_full();
    let Some(chain) = active
        .snapshot
        .listeners
        .get(&info.port)
        .and_then(|l| choose_chain(&l.chains, hello.sni.as_deref()))
    else {
        // No chain for this name: Envoy closes the connection.
        tracing::debug!(port = info.port, sni = ?hello.sni, "no filter chain matches");
        return;
    };
    let mut tls_info = Box::new(TlsInfo {
        sni: hello.sni.as_deref().map(Arc::from),
        ..TlsInfo::default()
    });
    let io = Prefixed::new(head, stream);
    match &chain.tls {
        ChainTls::Passthrough => {
            let ChainRoutes::Tls(routes) = &chain.routes else {
                return;
            };
            let Some(sni) = hello.sni.as_deref() else {
                return;
            };
            let Some(route) = find_tls_route(routes, sni) else {
                tracing::debug!(port = info.port, sni, "no tls route matches");
                return;
            };
            let host = sni.to_ascii_lowercase();
            let target = Target {
                host: &host,
                port: info.port,
            };
            info.tls = Some(tls_info);
            tcp::splice(&gw, &active, &route.forward, Some(target), io, &info).await;
        }
        ChainTls::Terminate(_) => {
            let Some(config) = active.tls.get(&chain.key).cloned() else {
                return;
            };
            let tls =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(io))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %info.peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            match &chain.routes {
                ChainRoutes::Http(_) => {
                    tls_info.chain = Some(chain.key.as_str().into());
                    tls_info.client_cert = match client_cert_details(tls.get_ref().1) {
                        Ok(v) => v,
                        Err(e) => {
                            // The certificate passed verification, so this is not expected;
                            // serving without the header would hide the client's identity.
                            tracing::warn!(peer = %info.peer, "closing: {e}");
                            return;
                        }
                    };
                    info.tls = Some(tls_info);
                    drop(active);
                    serve::connection(gw, builder, tls, info, from).await;
                }
                ChainRoutes::Tcp(routes) => {
                    if let Some(r) = first_tcp_route(routes) {
                        let host = hello.sni.as_deref().map(str::to_ascii_lowercase);
                        let target = host.as_deref().map(|host| Target {
                            host,
                            port: info.port,
                        });
                        info.tls = Some(tls_info);
                        tcp::splice(&gw, &active, &r.forward, target, tls, &info).await;
                    }
                }
                ChainRoutes::Tls(_) => {}
            }
        }
    }
}

/// `x-forwarded-client-cert` for a connection whose client presented a (verified)
/// certificate; `None` without one.
fn client_cert_details(
    conn: &rustls::ServerConnection,
) -> Result<Option<http::HeaderValue>, xfcc::XfccError> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| xfcc::header_value(leaf))
        .transpose()
}
