//! The HTTP part: virtual host by Host, `httpsRedirect`, then the routes in order, with the
//! reason each one before the match failed.

use crate::actions::{RedirectInput, https_redirect_location};
use crate::egress::{Outbound, OutboundDecision, destination_port};
use crate::hosts::{covers, request_host};
use crate::matching::RequestView;
use crate::snapshot::{ServerInfo, Snapshot, VirtualHost, VirtualHosts};

use super::action::{Outcome, http_outcome};
use super::{ExcludedStep, Explanation, Request, RouteStep, ServerStep, VirtualHostStep};

/// Routes `req` through an HTTP route table: the plaintext port's, or that of the TLS server
/// that terminated the connection (`secure`). `servers` are the Gateway servers behind it.
pub(super) fn walk(
    ex: &mut Explanation,
    snapshot: &Snapshot,
    table: &VirtualHosts,
    req: &Request,
    secure: bool,
    servers: &[ServerInfo],
    outbound: Option<&Outbound>,
) {
    let host = request_host(&req.authority);
    let Some((vh, how)) = table.lookup(&host) else {
        ex.domains = table.hosts.iter().map(|v| v.domain.clone()).collect();
        ex.outcome = match outbound {
            Some(o) => outbound_outcome(ex, snapshot, o, &host, req),
            None => no_virtual_host(&host, req.port, &ex.domains),
        };
        return;
    };
    ex.virtual_host = Some(VirtualHostStep {
        domain: vh.domain.clone(),
        matched_by: how,
        https_redirect: vh.require_tls,
        routes: vh.routes.len(),
        servers: servers
            .iter()
            .filter(|s| s.hosts.iter().any(|h| covers(&h.host, &vh.domain)))
            .map(ServerStep::of)
            .collect(),
    });
    ex.excluded = excluded(vh);
    if vh.require_tls && !secure {
        // Before any route, as Envoy's require_tls; the location keeps the path as sent.
        ex.outcome = Outcome::HttpsRedirect {
            status: 301,
            location: https_redirect_location(&req.authority, &req.path_and_query()),
        };
        return;
    }
    let scheme = if secure { "https" } else { "http" };
    let path = crate::path::normalize_with(&req.path, snapshot.path_normalization)
        .unwrap_or(std::borrow::Cow::Borrowed(req.path.as_str()));
    let view = RequestView {
        method: &req.method,
        scheme,
        authority: &req.authority,
        path: &path,
        query: req.query.as_deref(),
        headers: &req.headers,
    };
    let matched = trace(ex, vh, &view);
    let Some(route) = matched else {
        ex.outcome = Outcome::Refused {
            status: Some(404),
            flag: Some("NR"),
            reason: format!(
                "none of the {} route(s) of virtual host {} matches (Envoy answers 404 with an empty body)",
                vh.routes.len(),
                vh.domain
            ),
        };
        return;
    };
    notes(ex, req, route);
    let input = RedirectInput {
        scheme,
        authority: &req.authority,
        path: &path,
        query: req.query.as_deref(),
        listener_port: req.port,
    };
    ex.outcome = http_outcome(snapshot, &route.action, &input);
}

/// Evaluates the routes in order, recording each, up to the first match.
fn trace<'a>(
    ex: &mut Explanation,
    vh: &'a VirtualHost,
    view: &RequestView<'_>,
) -> Option<&'a crate::snapshot::Route> {
    for (index, route) in vh.routes.iter().enumerate() {
        let why_not = route.matcher.why_not(view);
        let matched = why_not.is_none();
        ex.routes.push(RouteStep {
            index,
            virtual_service: route.virtual_service.clone(),
            name: route.name.clone(),
            source: (*route.source).clone(),
            when: route.matcher.describe(),
            matched,
            why_not,
        });
        if matched {
            ex.routes_not_evaluated = vh.routes.len() - index - 1;
            return Some(route);
        }
    }
    None
}

fn excluded(vh: &VirtualHost) -> Vec<ExcludedStep> {
    vh.excluded
        .iter()
        .map(|e| ExcludedStep {
            virtual_service: e.virtual_service.clone(),
            name: e.name.clone(),
            source: (*e.source).clone(),
            reason: e.reason.clone(),
        })
        .collect()
}

/// A forward-proxy port: the registry, then the outbound traffic policy, as the data plane
/// decides with the same [`Outbound::decide`].
fn outbound_outcome(
    ex: &mut Explanation,
    snapshot: &Snapshot,
    outbound: &Outbound,
    host: &str,
    req: &Request,
) -> Outcome {
    let port = destination_port(&req.authority, "http");
    let route = match outbound.decide(host, port) {
        OutboundDecision::Registered(svc) => {
            ex.notes.push(format!(
                "no virtual host matches {host:?} on this forward-proxy port: ServiceEntry host {} port {port} takes it, with Istio's default route",
                svc.host
            ));
            &svc.route
        }
        OutboundDecision::Passthrough(route) => {
            ex.notes.push(format!(
                "no virtual host matches {host:?} and no ServiceEntry declares it on port {port}: ALLOW_ANY passes it through to {host}:{port} (PassthroughCluster)"
            ));
            route
        }
        OutboundDecision::Blocked => {
            return Outcome::Refused {
                status: Some(502),
                flag: None,
                reason: format!(
                    "no virtual host matches {host:?} and no ServiceEntry declares it on port {port}: REGISTRY_ONLY refuses it with 502 (Istio's block_all route, BlackHoleCluster)"
                ),
            };
        }
    };
    let path = crate::path::normalize(&req.path);
    let input = RedirectInput {
        scheme: "http",
        authority: &req.authority,
        path: &path,
        query: req.query.as_deref(),
        listener_port: req.port,
    };
    http_outcome(snapshot, &route.action, &input)
}

fn no_virtual_host(host: &str, port: u16, domains: &[String]) -> Outcome {
    let mut reason = format!("no virtual host of port {port} matches host {host:?}");
    // Istio completes short VirtualService hosts: `reviews` is served as the FQDN.
    if !host.contains('.')
        && let Some(fqdn) = domains
            .iter()
            .find(|d| d.strip_prefix(host).is_some_and(|r| r.starts_with('.')))
    {
        reason.push_str(&format!(
            "; short names are completed to the service's FQDN: did you mean {fqdn}?"
        ));
    }
    reason.push_str(" (Envoy answers 404 with an empty body)");
    Outcome::Refused {
        status: Some(404),
        flag: Some("NR"),
        reason,
    }
}

/// What the route's action does before it forwards, for this request.
fn notes(ex: &mut Explanation, req: &Request, route: &crate::snapshot::Route) {
    let upgrade = req
        .headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok());
    if let Some(u) = upgrade {
        if u.eq_ignore_ascii_case("websocket") {
            ex.notes
                .push("Upgrade: websocket is forwarded and the upgraded connection spliced".into());
        } else if !u.eq_ignore_ascii_case("h2c") {
            ex.notes.push(format!(
                "an HTTP/1.1 Upgrade to {u:?} (with Connection: upgrade) is refused with 403, as Envoy does"
            ));
        }
    }
    let preflight = req.method == "OPTIONS"
        && req.headers.contains_key(http::header::ORIGIN)
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && route.action.cors.is_some() {
        ex.notes.push(
            "this is a CORS preflight and the route has a corsPolicy: the gateway answers it itself when the origin is allowed".into(),
        );
    }
}
