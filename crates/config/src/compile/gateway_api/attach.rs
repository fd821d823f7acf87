//! Route attachment: which listeners accept a route through its `parentRefs` (`sectionName`,
//! `port`, `allowedRoutes` namespaces and kinds) and for which hostnames (the intersection of
//! the listener's hostname with the route's `hostnames`).

use std::collections::BTreeSet;

use isthmus_api::gateway_api::GROUP;
use isthmus_api::gateway_api::route::ParentReference;
use isthmus_api::{Diagnostic, Resource};

use super::Context;
use super::listeners::GwListener;
use crate::diag::subject;
use crate::gateway_status::{AcceptedReason, ParentRef};
use crate::hosts::intersect;

/// The route kinds Isthmus serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl RouteKind {
    pub fn parse(group: &str, kind: &str) -> Option<RouteKind> {
        if group != GROUP {
            return None;
        }
        match kind {
            "HTTPRoute" => Some(RouteKind::Http),
            "GRPCRoute" => Some(RouteKind::Grpc),
            "TLSRoute" => Some(RouteKind::Tls),
            "TCPRoute" => Some(RouteKind::Tcp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tls => "TLSRoute",
            RouteKind::Tcp => "TCPRoute",
        }
    }
}

pub fn route_kind(r: &Resource) -> Option<RouteKind> {
    match r {
        Resource::HttpRoute(_) => Some(RouteKind::Http),
        Resource::GrpcRoute(_) => Some(RouteKind::Grpc),
        Resource::TlsRoute(_) => Some(RouteKind::Tls),
        Resource::TcpRoute(_) => Some(RouteKind::Tcp),
        _ => None,
    }
}

/// The parent references and hostnames of a route.
fn route_parts(r: &Resource) -> (&[ParentReference], &[String]) {
    match r {
        Resource::HttpRoute(o) => (&o.spec.parent_refs, &o.spec.hostnames),
        Resource::GrpcRoute(o) => (&o.spec.parent_refs, &o.spec.hostnames),
        Resource::TlsRoute(o) => (&o.spec.parent_refs, &o.spec.hostnames),
        Resource::TcpRoute(o) => (&o.spec.parent_refs, &[]),
        _ => (&[], &[]),
    }
}

/// A route attached to a listener, for the hostnames both accept.
pub struct Attachment {
    /// Index into the listeners.
    pub listener: usize,
    /// Index into the routes (which are in creation order).
    pub route: usize,
    /// Virtual host domains (HTTP) or SNI names (TLS), lower case; `*` for any.
    pub domains: Vec<String>,
}

/// Why a parent reference attaches a route to no listener: the status reason (`None` when the
/// parent is not a Gateway and so gets no status from a gateway), and the diagnostic text.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Option<AcceptedReason>,
    pub message: String,
}

impl Refusal {
    fn new(reason: AcceptedReason, message: String) -> Self {
        Refusal {
            reason: Some(reason),
            message,
        }
    }
}

/// What became of one Gateway parent reference of a route, for its status.
pub struct ParentOutcome {
    /// Index into the routes.
    pub route: usize,
    pub parent_ref: ParentRef,
    /// `Ok` when it attached to at least one listener; `Err(None)` when the parent is none of
    /// this instance's business.
    pub result: Result<(), Option<Refusal>>,
}

pub fn attach(
    ctx: &Context<'_>,
    listeners: &[GwListener<'_>],
    routes: &[&Resource],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<Attachment>, Vec<ParentOutcome>) {
    let mut out = Vec::new();
    let mut outcomes = Vec::new();
    for (ri, r) in routes.iter().enumerate() {
        let Some(kind) = route_kind(r) else { continue };
        let (parents, hostnames) = route_parts(r);
        if parents.is_empty() {
            diags.push(subject(r).warning(
                "spec.parentRefs",
                format!(
                    "a {} without parentRefs attaches to no Gateway; not served",
                    kind.name()
                ),
            ));
        }
        for (pi, p) in parents.iter().enumerate() {
            let field = format!("spec.parentRefs[{pi}]");
            let found = parent(ctx, listeners, r, kind, p, hostnames);
            let result = match found {
                Ok(list) => {
                    out.extend(list.into_iter().map(|(listener, domains)| Attachment {
                        listener,
                        route: ri,
                        domains,
                    }));
                    Ok(())
                }
                Err(Some(why)) => {
                    diags.push(subject(r).warning(&field, why.message.clone()));
                    Err(Some(why))
                }
                Err(None) => Err(None),
            };
            let is_gateway = p.group.as_deref().unwrap_or(GROUP) == GROUP
                && p.kind.as_deref().unwrap_or("Gateway") == "Gateway";
            if is_gateway {
                outcomes.push(ParentOutcome {
                    route: ri,
                    parent_ref: ParentRef {
                        namespace: p.namespace.as_deref().unwrap_or(r.namespace()).to_string(),
                        name: p.name.clone().unwrap_or_default(),
                        section_name: p.section_name.clone(),
                        port: p.port,
                    },
                    result,
                });
            }
        }
    }
    (out, outcomes)
}

/// The listeners one parent reference attaches the route to, with their domains; or why it
/// attaches to none (`None` when the parent is not this instance's business).
fn parent(
    ctx: &Context<'_>,
    listeners: &[GwListener<'_>],
    r: &Resource,
    kind: RouteKind,
    p: &ParentReference,
    hostnames: &[String],
) -> Result<Vec<(usize, Vec<String>)>, Option<Refusal>> {
    let group = p.group.as_deref().unwrap_or(GROUP);
    let parent_kind = p.kind.as_deref().unwrap_or("Gateway");
    if group != GROUP || parent_kind != "Gateway" {
        return Err(Some(Refusal {
            reason: None,
            message: format!(
                "parentRef {group}/{parent_kind} is not a Gateway (mesh attachment is not served by a gateway); ignored"
            ),
        }));
    }
    let ns = p.namespace.as_deref().unwrap_or(r.namespace());
    let name = p.name.as_deref().unwrap_or("");
    let of_gateway: Vec<(usize, &GwListener<'_>)> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.namespace == ns && l.gateway == name)
        .collect();
    if of_gateway.is_empty() {
        return Err(unknown_gateway(ctx, ns, name));
    }
    let candidates: Vec<(usize, &GwListener<'_>)> = of_gateway
        .into_iter()
        .filter(|(_, l)| p.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| p.port.is_none_or(|port| port == u32::from(l.port)))
        .collect();
    if candidates.is_empty() {
        return Err(Some(Refusal::new(
            AcceptedReason::NoMatchingParent,
            format!(
                "Gateway {ns}/{name} has no served listener with this sectionName and port (NoMatchingParent); not attached"
            ),
        )));
    }
    let mut out = Vec::new();
    let mut why = None;
    for (i, l) in candidates {
        match accepts(ctx, l, r.namespace(), kind, hostnames) {
            Ok(domains) => out.push((i, domains)),
            Err(reason) => {
                why.get_or_insert(reason);
            }
        }
    }
    if out.is_empty() {
        return Err(why.map(|w: Refusal| Refusal {
            reason: w.reason,
            message: format!("Gateway {ns}/{name}: {}; not attached", w.message),
        }));
    }
    Ok(out)
}

/// Why a reference to a Gateway that serves no listener here finds nothing.
fn unknown_gateway(ctx: &Context<'_>, ns: &str, name: &str) -> Option<Refusal> {
    let loaded = ctx.resources.iter().find_map(|r| match r {
        Resource::KubeGateway(g) if g.namespace == ns && g.name == name => Some(g),
        _ => None,
    });
    match loaded {
        None => Some(Refusal::new(
            AcceptedReason::NoMatchingParent,
            format!("Gateway {ns}/{name} is not defined by any loaded resource; not attached"),
        )),
        // A Gateway of another class belongs to another implementation.
        Some(g) if g.spec.gateway_class_name.as_deref() != Some(&ctx.instance.gateway_class) => {
            None
        }
        Some(_) => Some(Refusal::new(
            AcceptedReason::NoMatchingParent,
            format!("Gateway {ns}/{name} has no listener this instance serves; not attached"),
        )),
    }
}

/// The domains a listener accepts the route for, or why it does not accept it.
fn accepts(
    ctx: &Context<'_>,
    l: &GwListener<'_>,
    route_ns: &str,
    kind: RouteKind,
    hostnames: &[String],
) -> Result<Vec<String>, Refusal> {
    if !l.kinds.contains(&kind) {
        return Err(Refusal::new(
            AcceptedReason::NotAllowedByListeners,
            format!(
                "listener {:?} does not allow {} (NotAllowedByListeners)",
                l.name,
                kind.name()
            ),
        ));
    }
    if !namespace_allowed(ctx, l, route_ns) {
        return Err(Refusal::new(
            AcceptedReason::NotAllowedByListeners,
            format!(
                "listener {:?} does not allow routes from namespace {route_ns} (NotAllowedByListeners)",
                l.name
            ),
        ));
    }
    if hostnames.is_empty() || kind == RouteKind::Tcp {
        return Ok(vec![l.host().to_string()]);
    }
    let domains: BTreeSet<String> = hostnames
        .iter()
        .filter_map(|h| intersect(l.host(), &h.to_ascii_lowercase()))
        .collect();
    if domains.is_empty() {
        return Err(Refusal::new(
            AcceptedReason::NoMatchingListenerHostname,
            format!(
                "no hostname of the route matches the hostname {} of listener {:?} (NoMatchingListenerHostname)",
                l.host(),
                l.name
            ),
        ));
    }
    Ok(domains.into_iter().collect())
}

/// `allowedRoutes.namespaces`: `Same` (the default), `All`, or a `Selector` of namespace labels.
fn namespace_allowed(ctx: &Context<'_>, l: &GwListener<'_>, route_ns: &str) -> bool {
    let Some(n) = l.allowed.and_then(|a| a.namespaces.as_ref()) else {
        return route_ns == l.namespace;
    };
    match n.from.as_deref().unwrap_or("Same") {
        "All" => true,
        "Same" => route_ns == l.namespace,
        "Selector" => n
            .selector
            .as_ref()
            .is_some_and(|s| s.matches(&ctx.namespace_labels(route_ns))),
        _ => false,
    }
}
