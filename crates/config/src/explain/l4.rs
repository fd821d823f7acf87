//! TLS ports (the filter chain chosen by SNI, then HTTP, TCP or passthrough routing) and TCP
//! ports.

use crate::snapshot::{HostMatch, Listener, Snapshot};
use crate::tls::{ChainRoutes, ChainTls, ClientAuth, TcpRoute, TlsRoute, match_chain};

use super::action::{Outcome, TunnelMode, destinations};
use super::{ChainStep, Explanation, L4RouteStep, Request, ServerStep};

/// A TLS port: choose the chain by SNI, as the data plane does, and follow it.
pub(super) fn tls(ex: &mut Explanation, snapshot: &Snapshot, listener: &Listener, req: &Request) {
    let Some((chain, name)) = match_chain(&listener.chains, req.sni.as_deref()) else {
        ex.outcome = no_chain(listener, req.sni.as_deref());
        return;
    };
    let server = listener.servers.iter().find(|s| s.key == chain.key);
    let matched_by = match name {
        "*" => HostMatch::Any,
        n if n.starts_with('*') => HostMatch::Wildcard,
        _ => HostMatch::Exact,
    };
    ex.chain = Some(ChainStep {
        sni: req.sni.clone(),
        server_name: name.to_string(),
        matched_by,
        server: server.map(ServerStep::of),
        tls_mode: chain.tls.mode_name(),
    });
    if let ChainTls::Terminate(t) = &chain.tls
        && t.client_auth == ClientAuth::Required
    {
        ex.notes.push(
            "MUTUAL: the client must present a certificate signed by the server's CA, or the handshake fails".into(),
        );
    }
    match (&chain.tls, &chain.routes) {
        (ChainTls::Terminate(_), ChainRoutes::Http(table)) => {
            let servers: Vec<_> = server.into_iter().cloned().collect();
            super::http::walk(ex, snapshot, table, req, true, &servers, None);
        }
        (ChainTls::Terminate(_), ChainRoutes::Tcp(routes)) => {
            tcp_routes(ex, snapshot, routes, TunnelMode::TlsTerminatedTcp);
        }
        (ChainTls::Passthrough, ChainRoutes::Tls(routes)) => {
            passthrough(ex, snapshot, routes, req.sni.as_deref());
        }
        _ => {
            ex.outcome = closed("the server has no routes for its TLS mode".into());
        }
    }
}

/// A TCP port: whatever the client sends goes to the first `tcp` route.
pub(super) fn tcp(ex: &mut Explanation, snapshot: &Snapshot, listener: &Listener) {
    ex.notes.push(format!(
        "port {} carries opaque TCP: the bytes are proxied whatever the URL's scheme, host or path",
        listener.port
    ));
    tcp_routes(ex, snapshot, &listener.tcp, TunnelMode::Tcp);
}

fn tcp_routes(ex: &mut Explanation, snapshot: &Snapshot, routes: &[TcpRoute], mode: TunnelMode) {
    let Some(route) = crate::tls::first_tcp_route(routes) else {
        ex.outcome = closed("no VirtualService tcp route is bound to this server".into());
        return;
    };
    ex.l4_routes.push(L4RouteStep {
        index: 0,
        virtual_service: route.virtual_service.clone(),
        source: (*route.source).clone(),
        sni_hosts: Vec::new(),
        matched: true,
        why_not: None,
    });
    if routes.len() > 1 {
        ex.notes.push(format!(
            "{} more tcp route(s) are never used: the first takes every connection",
            routes.len() - 1
        ));
    }
    ex.outcome = Outcome::Tunnel {
        mode,
        destinations: destinations(snapshot, &route.forward),
    };
}

/// Passthrough: the first `tls` route whose SNI names cover the SNI.
fn passthrough(ex: &mut Explanation, snapshot: &Snapshot, routes: &[TlsRoute], sni: Option<&str>) {
    let Some(sni) = sni else {
        ex.outcome = closed("passthrough routes by SNI and the client sends none".into());
        return;
    };
    let chosen = crate::tls::find_tls_route(routes, sni);
    for (index, route) in routes.iter().enumerate() {
        let matched = chosen.is_some_and(|c| std::ptr::eq(c, route));
        ex.l4_routes.push(L4RouteStep {
            index,
            virtual_service: route.virtual_service.clone(),
            source: (*route.source).clone(),
            sni_hosts: route.sni_hosts.clone(),
            matched,
            why_not: (!matched)
                .then(|| format!("sniHosts {:?} do not cover {sni:?}", route.sni_hosts)),
        });
        if matched {
            break;
        }
    }
    ex.outcome = match chosen {
        Some(route) => Outcome::Tunnel {
            mode: TunnelMode::TlsPassthrough,
            destinations: destinations(snapshot, &route.forward),
        },
        None => closed(format!("no tls route matches SNI {sni:?}")),
    };
}

fn no_chain(listener: &Listener, sni: Option<&str>) -> Outcome {
    let names: Vec<&str> = listener
        .chains
        .iter()
        .flat_map(|c| c.server_names.iter().map(String::as_str))
        .collect();
    let what = match sni {
        Some(s) => format!("SNI {s:?}"),
        None => "a ClientHello without SNI (it takes only a '*' server)".into(),
    };
    closed(format!(
        "no server of port {} matches {what}; its server names: {}",
        listener.port,
        if names.is_empty() {
            "none (no server could be served)".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// Envoy closes a TLS connection it has no filter chain or route for.
fn closed(reason: String) -> Outcome {
    Outcome::Refused {
        status: None,
        flag: None,
        reason: format!("the connection is closed: {reason}"),
    }
}
