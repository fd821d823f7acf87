//! Binding VirtualServices to the Gateway servers of each port, and compiling their HTTP
//! routes into the ordered route table of each virtual host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use isthmus_api::istio::virtual_service::{
    Destination, HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec,
};
use isthmus_api::{Diagnostic, Object, Resource};

use super::actions;
use super::delegation;
use super::l4;
use super::listeners::{PortServers, ServerRef};
use super::memo;
use super::services::{Registry, Unresolved, check_service_entries};
use crate::actions::Mirror;
use crate::diag::{Subject, subject};
use crate::hosts::{complete, intersect};
use crate::instance::Instance;
use crate::matching::{RequestMatch, StrMatcher, full_match_regex};
use crate::snapshot::{
    ActionKind, Excluded, Forward, Listener, ListenerProtocol, Route, RouteAction, Source,
    VirtualHost, VirtualHosts, WeightedDestination,
};

/// A gateway reference from `gateways:` resolved to `(namespace, name)`.
pub(super) fn gateway_ref(text: &str, vs_ns: &str) -> (String, String) {
    match text.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (vs_ns.to_string(), text.to_string()),
    }
}

pub fn bind(
    resources: &[&Resource],
    instance: &Instance,
    ports: &BTreeMap<u16, PortServers<'_>>,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, Listener> {
    check_gateway_refs(resources, diags);
    check_service_entries(resources, diags);
    registry.check_rules(resources, diags);
    let mut listeners = BTreeMap::new();
    for (port, p) in ports {
        let all: Vec<&ServerRef<'_>> = p.servers.iter().collect();
        let mut listener = Listener {
            port: *port,
            protocol: p.protocol,
            servers: p.servers.iter().map(ServerRef::info).collect(),
            virtual_hosts: VirtualHosts::default(),
            chains: Vec::new(),
            tcp: Vec::new(),
            outbound: None,
        };
        match p.protocol {
            ListenerProtocol::Http => {
                listener.virtual_hosts =
                    http_table(resources, instance, *port, &all, registry, diags);
                if p.servers.iter().any(|s| s.outbound) {
                    report_shared_forward_proxy(*port, &p.servers, diags);
                    let tunnels = l4::mesh_tunnels(resources, instance, &all, registry, diags);
                    listener.outbound =
                        Some(super::egress::outbound(instance, registry).with_tunnels(tunnels));
                }
            }
            ListenerProtocol::Tls => {
                listener.chains = p
                    .servers
                    .iter()
                    .filter_map(|s| l4::chain(resources, instance, *port, s, registry, diags))
                    .collect();
            }
            ListenerProtocol::Tcp => {
                listener.tcp = l4::tcp_routes(resources, instance, *port, &all, registry, diags);
            }
        }
        listeners.insert(*port, listener);
    }
    report_unbound(resources, ports, instance, diags);
    listeners
}

/// The route table of HTTP servers (all plaintext servers of a port, or one HTTPS server):
/// VirtualServices bound by host intersection, merged in creation order, catch-alls last;
/// hosts of `httpsRedirect` servers answer with a redirect to https.
pub(super) fn http_table(
    resources: &[&Resource],
    instance: &Instance,
    port: u16,
    servers: &[&ServerRef<'_>],
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> VirtualHosts {
    // domain -> the routes of each VirtualService bound to it, in creation order.
    let mut domains: BTreeMap<String, Vec<Arc<Compiled>>> = BTreeMap::new();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        if !instance.sees(&vs.namespace, &vs.spec.export_to) {
            continue;
        }
        bind_one(
            r,
            vs,
            resources,
            port,
            servers,
            instance,
            registry,
            &mut domains,
            diags,
        );
        bind_mesh(
            r,
            vs,
            resources,
            port,
            servers,
            instance,
            registry,
            &mut domains,
            diags,
        );
    }
    let mut redirect_hosts: BTreeSet<String> = BTreeSet::new();
    for s in servers.iter().filter(|s| s.https_redirect()) {
        for h in &s.hosts {
            domains.entry(h.host.clone()).or_default();
            redirect_hosts.insert(h.host.clone());
        }
    }
    let hosts = domains
        .into_iter()
        .map(|(domain, parts)| {
            let (routes, excluded) = registry.memo.host(parts);
            VirtualHost {
                require_tls: redirect_hosts
                    .iter()
                    .any(|h| crate::hosts::covers(h, &domain)),
                domain,
                routes,
                excluded,
            }
        })
        .collect();
    VirtualHosts::new(hosts)
}

#[allow(clippy::too_many_arguments)]
fn bind_one(
    r: &Resource,
    vs: &Object<VirtualServiceSpec>,
    all: &[&Resource],
    port: u16,
    servers: &[&ServerRef<'_>],
    instance: &Instance,
    registry: &mut Registry<'_>,
    domains: &mut BTreeMap<String, Vec<Arc<Compiled>>>,
    diags: &mut Vec<Diagnostic>,
) {
    let vs_hosts: Vec<String> = vs
        .spec
        .hosts
        .iter()
        .map(|h| complete(h, &vs.namespace, &instance.domain_suffix))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for g in &vs.spec.gateways {
        let (ns, name) = gateway_ref(g, &vs.namespace);
        let mut bound: BTreeSet<String> = BTreeSet::new();
        for server in servers
            .iter()
            .filter(|s| s.gateway_ns == ns && s.gateway_name == name)
        {
            for sh in &server.hosts {
                if sh.namespace.as_deref().is_some_and(|n| n != vs.namespace) {
                    continue;
                }
                for h in &vs_hosts {
                    if let Some(d) = intersect(&sh.host, h) {
                        bound.insert(d);
                    }
                }
            }
        }
        let fresh: Vec<String> = bound
            .into_iter()
            .filter(|d| done.insert(d.clone()))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let binding = Binding::Gateway {
            ns: &ns,
            name: &name,
        };
        let compiled = compile_routes(r, vs, all, binding, port, registry, diags);
        for d in fresh {
            domains.entry(d).or_default().push(compiled.clone());
        }
    }
}

/// On a forward-proxy port, a VirtualService written for the mesh (no `gateways`, or `mesh`
/// among them) applies as it would in the sidecar of the workload that sends through the
/// proxy: its `mesh` rules, for its hosts that the forward-proxy servers admit. A
/// VirtualService that names a Gateway of the port is bound by that name instead (above), so
/// rules written for the egress gateway itself are not applied twice.
#[allow(clippy::too_many_arguments)]
fn bind_mesh(
    r: &Resource,
    vs: &Object<VirtualServiceSpec>,
    all: &[&Resource],
    port: u16,
    servers: &[&ServerRef<'_>],
    instance: &Instance,
    registry: &mut Registry<'_>,
    domains: &mut BTreeMap<String, Vec<Arc<Compiled>>>,
    diags: &mut Vec<Diagnostic>,
) {
    let bound = mesh_hosts(vs, servers, instance);
    if bound.is_empty() {
        return;
    }
    let compiled = compile_routes(r, vs, all, Binding::Mesh, port, registry, diags);
    for d in bound {
        domains.entry(d).or_default().push(compiled.clone());
    }
}

/// The hosts a VirtualService bound to the mesh (`gateways` missing or naming `mesh`) gives
/// the forward-proxy servers of a port: its hosts intersected with theirs. None when it is not
/// for the mesh, or when it names a Gateway of this port (its rules written for the egress
/// gateway itself are not applied twice).
pub(super) fn mesh_hosts(
    vs: &Object<VirtualServiceSpec>,
    servers: &[&ServerRef<'_>],
    instance: &Instance,
) -> BTreeSet<String> {
    let mut bound: BTreeSet<String> = BTreeSet::new();
    let for_mesh = vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH);
    let names_a_gateway_here = vs.spec.gateways.iter().any(|g| {
        let (ns, name) = gateway_ref(g, &vs.namespace);
        servers
            .iter()
            .any(|s| s.gateway_ns == ns && s.gateway_name == name)
    });
    if !for_mesh || names_a_gateway_here {
        return bound;
    }
    for server in servers.iter().filter(|s| s.outbound) {
        for sh in &server.hosts {
            if sh.namespace.as_deref().is_some_and(|n| n != vs.namespace) {
                continue;
            }
            for h in &vs.spec.hosts {
                let h = complete(h, &vs.namespace, &instance.domain_suffix);
                bound.extend(intersect(&sh.host, &h));
            }
        }
    }
    bound
}

/// Istio's name for the sidecars in `gateways`.
pub(super) const MESH: &str = "mesh";

/// Whom a VirtualService's rules are compiled for.
#[derive(Clone, Copy)]
enum Binding<'a> {
    /// A Gateway of this instance.
    Gateway { ns: &'a str, name: &'a str },
    /// The mesh, on a forward-proxy port.
    Mesh,
}

/// Servers of a forward-proxy port that are not forward proxies themselves still share its
/// route table, so requests for their hosts are also served as the proxy serves them.
fn report_shared_forward_proxy(port: u16, servers: &[ServerRef<'_>], diags: &mut Vec<Diagnostic>) {
    let Some(proxy) = servers.iter().find(|s| s.outbound) else {
        return;
    };
    for s in servers.iter().filter(|s| !s.outbound) {
        diags.push(subject(s.resource).warning(
            &s.field,
            format!(
                "port {port} is a forward proxy ({} has the {} annotation); this server shares its route table, so requests for hosts no route takes follow the outbound traffic policy here too",
                proxy.label,
                crate::egress::FORWARD_PROXY_ANNOTATION
            ),
        ));
    }
}

/// The routes a VirtualService gives a virtual host, and its match blocks left out.
#[derive(Default)]
pub(super) struct Compiled {
    routes: Vec<Route>,
    excluded: Vec<Excluded>,
}

/// The route table of a host from the routes of the VirtualServices bound to it, in creation
/// order: merged, with every catch-all route moved behind the others, as Istio does.
pub(super) fn merged(parts: &[Arc<Compiled>]) -> (Vec<Route>, Vec<Excluded>) {
    let all = || parts.iter().flat_map(|p| &p.routes);
    let routes = all()
        .filter(|r| !r.matcher.is_catch_all())
        .chain(all().filter(|r| r.matcher.is_catch_all()))
        .cloned()
        .collect();
    let excluded = parts
        .iter()
        .flat_map(|p| p.excluded.iter().cloned())
        .collect();
    (routes, excluded)
}

/// A VirtualService's routes for `binding` on `port`: the previous build's if they cannot
/// have changed (see [`memo`]), else compiled now.
fn compile_routes(
    r: &Resource,
    vs: &Object<VirtualServiceSpec>,
    all: &[&Resource],
    binding: Binding<'_>,
    port: u16,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Arc<Compiled> {
    if !memo::cacheable(vs) {
        return Arc::new(compile_routes_now(
            r, vs, all, binding, port, registry, diags,
        ));
    }
    let gateway = match binding {
        Binding::Gateway { ns, name } => Some((ns, name)),
        Binding::Mesh => None,
    };
    let key = memo::Key::new(r, port, gateway);
    if let Some(entry) = registry.memo.previous(&key)
        && registry.replay(&entry.clusters)
    {
        diags.extend(entry.diagnostics.iter().cloned());
        let compiled = entry.compiled.clone();
        registry.memo.keep(key, entry);
        return compiled;
    }
    let mut found = Vec::new();
    registry.record();
    let compiled = Arc::new(compile_routes_now(
        r, vs, all, binding, port, registry, &mut found,
    ));
    let clusters = registry.recorded();
    diags.extend(found.iter().cloned());
    let entry = memo::Entry {
        compiled: compiled.clone(),
        diagnostics: found,
        clusters,
    };
    registry.memo.keep(key, Arc::new(entry));
    compiled
}

#[allow(clippy::too_many_arguments)]
fn compile_routes_now(
    r: &Resource,
    vs: &Object<VirtualServiceSpec>,
    all: &[&Resource],
    binding: Binding<'_>,
    port: u16,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Compiled {
    let mut out = Compiled::default();
    let vs_name = format!("{}/{}", vs.namespace, vs.name);
    // As Istio: nothing after a catch-all can match, so the rest of the VirtualService is
    // dropped (merging moves catch-alls to the end, which would otherwise make those later
    // routes reachable).
    let mut catch_all: Option<String> = None;
    // The key of the resource the last rule came from (delegation mixes several).
    let mut key: Option<(&Resource, Arc<str>)> = None;
    for item in delegation::expand(r, vs, all, diags) {
        let s = subject(item.origin);
        let resource = match &key {
            Some((from, k)) if std::ptr::eq(*from, item.origin) => k.clone(),
            _ => {
                let k: Arc<str> = item.origin.key().to_string().into();
                key = Some((item.origin, k.clone()));
                k
            }
        };
        let route: &HttpRoute = &item.route;
        let blocks: Vec<Option<&HttpMatchRequest>> = if route.matches.is_empty() {
            vec![None]
        } else {
            route.matches.iter().map(Some).collect()
        };
        let mut forward_cache: Option<Forward> = None;
        for (j, m) in blocks.into_iter().enumerate() {
            let name = route_name(route.name.as_deref(), m.and_then(|m| m.name.as_deref()));
            let field = block_field(&item, m.map(|_| j));
            let source = Arc::new(Source::keyed(resource.clone(), item.origin, &field));
            let exclude = |reason: String| Excluded {
                virtual_service: vs_name.clone(),
                name: name.clone(),
                source: source.clone(),
                reason,
            };
            if let Some(reason) = m.and_then(|m| not_here(m, &vs.namespace, binding, port)) {
                out.excluded.push(exclude(reason));
                continue;
            }
            if let Some(at) = &catch_all {
                out.excluded.push(exclude(format!(
                    "it comes after the catch-all route at {at}, so it can never match (Istio drops it)"
                )));
                continue;
            }
            let (headers, header_authority) = actions::header_edits(route.headers.as_ref());
            let kind = if let Some(redirect) = &route.redirect {
                ActionKind::Redirect(actions::redirect(redirect, actions::uri_of(m)))
            } else if let Some(direct) = &route.direct_response {
                match actions::direct_response(direct, &base_dir(item.origin)) {
                    Some(d) => ActionKind::DirectResponse(d),
                    None => {
                        out.excluded.push(exclude(
                            "its directResponse is invalid (see the diagnostics)".into(),
                        ));
                        continue;
                    }
                }
            } else if !route.route.is_empty() {
                let base = forward_cache.get_or_insert_with(|| {
                    forward(&s, &item.field, route, &item.namespace, registry, diags)
                });
                let mut f = base.clone();
                f.rewrite =
                    actions::rewrite(route.rewrite.as_ref(), actions::uri_of(m), header_authority);
                ActionKind::Forward(f)
            } else {
                out.excluded.push(exclude(
                    "it has no route, redirect or directResponse".into(),
                ));
                continue;
            };
            let action = RouteAction {
                kind,
                headers,
                fault: actions::fault(route.fault.as_ref()),
                cors: actions::cors(route.cors_policy.as_ref()),
            };
            let mut matcher = m.map(request_match).unwrap_or_default();
            if let Binding::Mesh = binding {
                matcher.port = m.and_then(|m| m.port).and_then(|p| u16::try_from(p).ok());
            }
            if matcher.is_catch_all() {
                catch_all = Some(source.field.clone());
            }
            out.routes.push(Route {
                name,
                virtual_service: vs_name.clone(),
                source,
                matcher,
                action: Arc::new(action),
            });
        }
    }
    out
}

/// Why a match block does not apply to this gateway's port, if it does not.
fn not_here(m: &HttpMatchRequest, vs_ns: &str, binding: Binding<'_>, port: u16) -> Option<String> {
    let (gw_ns, gw_name) = match binding {
        Binding::Gateway { ns, name } => (ns, name),
        // A mesh rule's port is the destination's, matched per request.
        Binding::Mesh if m.gateways.is_empty() || m.gateways.iter().any(|g| g == MESH) => {
            return None;
        }
        Binding::Mesh => {
            return Some(format!(
                "match gateways {:?} do not include mesh (this forward-proxy port applies the mesh rules of VirtualServices that name none of its Gateways)",
                m.gateways
            ));
        }
    };
    let for_gateway = m.gateways.is_empty()
        || m.gateways
            .iter()
            .any(|g| gateway_ref(g, vs_ns) == (gw_ns.to_string(), gw_name.to_string()));
    if !for_gateway {
        return Some(format!(
            "match gateways {:?} do not include {gw_ns}/{gw_name}",
            m.gateways
        ));
    }
    match m.port {
        Some(p) if p != u32::from(port) => Some(format!("match port {p} != listener port {port}")),
        _ => None,
    }
}

/// The field a compiled route comes from: its match block when the block is the one written
/// there, else the rule (a delegated rule's blocks are combinations of two rules' blocks).
fn block_field(item: &delegation::Expanded<'_>, block: Option<usize>) -> String {
    match block {
        Some(j) if item.own_matches => format!("{}.match[{j}]", item.field),
        _ => item.field.clone(),
    }
}

fn route_name(route: Option<&str>, matcher: Option<&str>) -> String {
    match (route, matcher) {
        (Some(r), Some(m)) => format!("{r}.{m}"),
        (Some(r), None) => r.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => String::new(),
    }
}

/// The cluster of a destination; unresolvable ones are diagnosed and answer 503 (`NC`).
pub(super) fn resolve(
    s: &Subject<'_>,
    field: &str,
    dest: &Destination,
    ns: &str,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (String, Option<usize>) {
    let host = complete(
        dest.host.as_deref().unwrap_or(""),
        ns,
        registry.domain_suffix(),
    );
    let port = dest
        .port
        .as_ref()
        .and_then(|p| p.number)
        .and_then(|n| u16::try_from(n).ok());
    match registry.cluster(&host, port, dest.subset.as_deref()) {
        Ok((name, i)) => (name, Some(i)),
        Err(why) => {
            let (f, msg) = match why {
                Unresolved::UnknownHost => (
                    format!("{field}.host"),
                    format!("no ServiceEntry defines host {host}; requests to it answer 503"),
                ),
                Unresolved::Port(msg) => (format!("{field}.port"), msg),
                Unresolved::Subset(msg) => (format!("{field}.subset"), msg),
            };
            diags.push(if f.ends_with(".subset") {
                s.error(&f, msg)
            } else {
                s.warning(&f, msg)
            });
            let p = port.map(|p| p.to_string()).unwrap_or_default();
            (
                format!(
                    "outbound|{p}|{}|{host}",
                    dest.subset.as_deref().unwrap_or("")
                ),
                None,
            )
        }
    }
}

/// The folder of the file a resource came from: relative file names in it resolve there.
fn base_dir(r: &Resource) -> std::path::PathBuf {
    std::path::Path::new(&*r.origin().file)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// Destination `j` of `count` in a route: its cluster, and its weight (a lone destination
/// takes all traffic whatever its weight, as in Istio).
#[allow(clippy::too_many_arguments)]
pub(super) fn weighted_destination(
    s: &Subject<'_>,
    field: &str,
    j: usize,
    count: usize,
    dest: Option<&Destination>,
    weight: Option<i32>,
    ns: &str,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> WeightedDestination {
    let dest = dest.cloned().unwrap_or_default();
    let (cluster_name, cluster) = resolve(
        s,
        &format!("{field}.route[{j}].destination"),
        &dest,
        ns,
        registry,
        diags,
    );
    let weight = if count == 1 {
        1
    } else {
        u32::try_from(weight.unwrap_or(0)).unwrap_or(0)
    };
    WeightedDestination {
        cluster_name,
        cluster,
        weight,
        headers: Default::default(),
        authority: None,
        path: None,
    }
}

fn forward(
    s: &Subject<'_>,
    field: &str,
    route: &HttpRoute,
    ns: &str,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Forward {
    let count = route.route.len();
    let dests = route
        .route
        .iter()
        .enumerate()
        .map(|(j, d)| {
            let mut wd = weighted_destination(
                s,
                field,
                j,
                count,
                d.destination.as_ref(),
                d.weight,
                ns,
                registry,
                diags,
            );
            (wd.headers, wd.authority) = actions::header_edits(d.headers.as_ref());
            wd
        })
        .collect();
    let mut mirrors = Vec::new();
    if let Some(m) = &route.mirror {
        let (cluster_name, cluster) =
            resolve(s, &format!("{field}.mirror"), m, ns, registry, diags);
        let percent = route
            .mirror_percentage
            .as_ref()
            .map(|p| p.value)
            .or(route.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push(Mirror {
            cluster_name,
            cluster,
            percent: percent.clamp(0.0, 100.0),
        });
    }
    for (j, m) in route.mirrors.iter().enumerate() {
        let Some(dest) = &m.destination else { continue };
        let (cluster_name, cluster) = resolve(
            s,
            &format!("{field}.mirrors[{j}].destination"),
            dest,
            ns,
            registry,
            diags,
        );
        let percent = m
            .percentage
            .as_ref()
            .map_or(100.0, |p| p.value)
            .clamp(0.0, 100.0);
        mirrors.push(Mirror {
            cluster_name,
            cluster,
            percent,
        });
    }
    let timeout_ms = route
        .timeout
        .map(|t| u64::try_from(t.0.as_millis()).unwrap_or(u64::MAX))
        .filter(|ms| *ms > 0);
    Forward::with(
        dests,
        None,
        timeout_ms,
        actions::retry(route.retries.as_ref()),
        mirrors,
    )
}

fn string_matcher(m: &StringMatch, lower: bool) -> Option<StrMatcher> {
    let fold = |s: &String| {
        if lower {
            s.to_ascii_lowercase()
        } else {
            s.clone()
        }
    };
    if let Some(e) = &m.exact {
        Some(StrMatcher::Exact(fold(e)))
    } else if let Some(p) = &m.prefix {
        Some(StrMatcher::Prefix(fold(p)))
    } else if let Some(r) = &m.regex {
        full_match_regex(r).ok().map(StrMatcher::Regex)
    } else {
        Some(StrMatcher::Present)
    }
}

/// Istio ignores these keys in `headers`: they have their own fields.
const PSEUDO_KEYS: &[&str] = &["uri", "scheme", "method", "authority"];

fn request_match(m: &HttpMatchRequest) -> RequestMatch {
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let map = |entries: &BTreeMap<String, StringMatch>| -> Vec<(String, StrMatcher)> {
        entries
            .iter()
            .filter(|(k, _)| !PSEUDO_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.clone(), string_matcher(v, false)?)))
            .collect()
    };
    RequestMatch {
        uri: m.uri.as_ref().and_then(|u| string_matcher(u, ignore_case)),
        ignore_uri_case: ignore_case,
        scheme: m.scheme.as_ref().and_then(|u| string_matcher(u, false)),
        method: m.method.as_ref().and_then(|u| string_matcher(u, false)),
        authority: m.authority.as_ref().and_then(|u| string_matcher(u, false)),
        headers: map(&m.headers),
        without_headers: map(&m.without_headers),
        query_params: m
            .query_params
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), string_matcher(v, false)?)))
            .collect(),
        port: None,
    }
}

/// VirtualServices that name a Gateway no loaded resource defines.
fn check_gateway_refs(resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
    let gateways: BTreeSet<(String, String)> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Gateway(g) => Some((g.namespace.clone(), g.name.clone())),
            _ => None,
        })
        .collect();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            if g == "mesh" {
                continue;
            }
            let key = gateway_ref(g, &vs.namespace);
            if !gateways.contains(&key) {
                diags.push(subject(r).warning(
                    &format!("spec.gateways[{i}]"),
                    format!(
                        "Gateway {}/{} is not defined by any loaded resource",
                        key.0, key.1
                    ),
                ));
            }
        }
    }
}

/// VirtualServices bound to a Gateway of this instance whose hosts match none of its servers.
fn report_unbound(
    resources: &[&Resource],
    ports: &BTreeMap<u16, PortServers<'_>>,
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) {
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        let hosts: Vec<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| complete(h, &vs.namespace, &instance.domain_suffix))
            .collect();
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            let (ns, name) = gateway_ref(g, &vs.namespace);
            let servers: Vec<&ServerRef<'_>> = ports
                .values()
                .flat_map(|p| p.servers.iter())
                .filter(|s| s.gateway_ns == ns && s.gateway_name == name)
                .collect();
            if servers.is_empty() {
                continue;
            }
            let any = servers.iter().any(|s| {
                s.hosts.iter().any(|sh| {
                    sh.namespace.as_deref().is_none_or(|n| n == vs.namespace)
                        && hosts.iter().any(|h| intersect(&sh.host, h).is_some())
                })
            });
            if !any {
                diags.push(subject(r).warning(
                    &format!("spec.gateways[{i}]"),
                    format!("no host of this VirtualService matches a host of Gateway {ns}/{name} (or the Gateway does not admit namespace {}); it is not served there", vs.namespace),
                ));
            }
        }
    }
}
