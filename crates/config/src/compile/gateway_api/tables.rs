//! Listeners by port, with their route tables: HTTP listeners of a port share one table of
//! virtual hosts; each HTTPS or TLS listener is a filter chain chosen by SNI; TCP listeners
//! carry their TCPRoute.
//!
//! Listener isolation: a request is served by the most specific listener of its Gateway
//! whose hostname covers it, so a route attached to a less specific listener is left out of
//! the hosts a more specific listener of the same Gateway covers, and every listener hostname
//! has its own virtual host (empty if no route attached), which answers 404 there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use isthmus_api::{Diagnostic, Resource};

use super::Context;
use super::attach::{Attachment, RouteKind, route_kind};
use super::http::{self, Ranked};
use super::l4;
use super::listeners::{GwListener, Protocol, host_specificity};
use crate::compile::services::Registry;
use crate::diag::subject;
use crate::hosts::covers;
use crate::snapshot::{Forward, Listener, ListenerProtocol, Source, VirtualHost, VirtualHosts};
use crate::tls::{ChainRoutes, ChainTls, FilterChain, TcpRoute, TlsRoute};

/// Everything the assembly reads, and the routes compiled so far (each route is compiled
/// once, on first use, whatever the number of listeners it attaches to).
struct Tables<'a, 'r, 'g> {
    ctx: &'a Context<'a>,
    listeners: &'a [GwListener<'r>],
    routes: &'a [&'r Resource],
    attached: &'a [Attachment],
    registry: &'a mut Registry<'g>,
    http: Vec<Option<Vec<Ranked>>>,
    l4: Vec<Option<Forward>>,
}

pub fn build(
    ctx: &Context<'_>,
    listeners: &[GwListener<'_>],
    routes: &[&Resource],
    attached: &[Attachment],
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, Listener> {
    let mut t = Tables {
        ctx,
        listeners,
        routes,
        attached,
        registry,
        http: vec![None; routes.len()],
        l4: vec![None; routes.len()],
    };
    let mut ports: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        ports.entry(l.port).or_default().push(i);
    }
    let mut out = BTreeMap::new();
    for (port, idx) in ports {
        if let Some(listener) = t.port(port, &idx, diags) {
            out.insert(port, listener);
        }
    }
    out
}

impl Tables<'_, '_, '_> {
    fn listener(&self, i: usize) -> Option<&GwListener<'_>> {
        self.listeners.get(i)
    }

    /// The listener of one port. Listeners of a protocol family other than the first one's
    /// (from other Gateways) cannot share the port and are not served.
    fn port(&mut self, port: u16, idx: &[usize], diags: &mut Vec<Diagnostic>) -> Option<Listener> {
        let first = self.listener(*idx.first()?)?;
        let family = first.protocol.family();
        let first_label = format!("{}/{} ({})", first.namespace, first.gateway, first.name);
        let mut same = Vec::new();
        for i in idx {
            let Some(l) = self.listener(*i) else { continue };
            if l.protocol.family() == family {
                same.push(*i);
            } else {
                diags.push(subject(l.resource).error(
                    &l.field,
                    format!("port {port} is already served by listener {first_label} with protocol {}; listener not served", first.protocol.as_str()),
                ));
            }
        }
        let mut listener = Listener {
            port,
            protocol: family,
            servers: same
                .iter()
                .filter_map(|i| self.listener(*i))
                .map(GwListener::info)
                .collect(),
            virtual_hosts: VirtualHosts::default(),
            chains: Vec::new(),
            tcp: Vec::new(),
            outbound: None,
        };
        match family {
            ListenerProtocol::Http => listener.virtual_hosts = self.http_hosts(&same, diags),
            ListenerProtocol::Tls => listener.chains = self.chains(&same, diags),
            ListenerProtocol::Tcp => listener.tcp = self.tcp(&same, diags),
        }
        Some(listener)
    }

    /// The compiled routes of HTTPRoute or GRPCRoute `ri`.
    fn http_routes(&mut self, ri: usize, diags: &mut Vec<Diagnostic>) -> Vec<Ranked> {
        if let Some(Some(done)) = self.http.get(ri) {
            return done.clone();
        }
        let compiled = match self.routes.get(ri) {
            Some(r @ Resource::HttpRoute(o)) => {
                http::http_route(self.ctx, self.registry, r, o, ri, diags)
            }
            Some(r @ Resource::GrpcRoute(o)) => {
                http::grpc_route(self.ctx, self.registry, r, o, ri, diags)
            }
            _ => Vec::new(),
        };
        if let Some(slot) = self.http.get_mut(ri) {
            *slot = Some(compiled.clone());
        }
        compiled
    }

    /// The forward of TLSRoute or TCPRoute `ri`.
    fn l4_forward(&mut self, ri: usize, diags: &mut Vec<Diagnostic>) -> Forward {
        if let Some(Some(done)) = self.l4.get(ri) {
            return done.clone();
        }
        let compiled = match self.routes.get(ri) {
            Some(r @ (Resource::TlsRoute(o) | Resource::TcpRoute(o))) => {
                l4::forward(self.ctx, self.registry, r, o, diags)
            }
            _ => Forward::new(Vec::new()),
        };
        if let Some(slot) = self.l4.get_mut(ri) {
            *slot = Some(compiled.clone());
        }
        compiled
    }

    /// The attachments of routes of `kinds` to the listeners `table`.
    fn attachments(&self, table: &[usize], kinds: &[RouteKind]) -> Vec<&Attachment> {
        self.attached
            .iter()
            .filter(|a| table.contains(&a.listener))
            .filter(|a| {
                self.routes
                    .get(a.route)
                    .and_then(|r| route_kind(r))
                    .is_some_and(|k| kinds.contains(&k))
            })
            .collect()
    }

    /// Whether a more specific listener of the same Gateway in `table` covers `domain`: then
    /// requests for it are that listener's, not `l`'s (listener isolation).
    fn shadowed(&self, l: &GwListener<'_>, domain: &str, table: &[usize]) -> bool {
        table.iter().filter_map(|i| self.listener(*i)).any(|o| {
            std::ptr::eq(o.resource, l.resource)
                && o.specificity() > l.specificity()
                && covers(o.host(), domain)
        })
    }

    /// The virtual hosts of HTTP listeners `table` (all the HTTP listeners of a port, or one
    /// HTTPS listener).
    fn http_hosts(&mut self, table: &[usize], diags: &mut Vec<Diagnostic>) -> VirtualHosts {
        let mut domains: BTreeMap<String, Vec<(usize, Ranked)>> = BTreeMap::new();
        for l in table.iter().filter_map(|i| self.listener(*i)) {
            domains.entry(l.host().to_string()).or_default();
        }
        let mut seen: BTreeSet<(String, usize)> = BTreeSet::new();
        let wanted: Vec<(usize, usize, Vec<String>)> = self
            .attachments(table, &[RouteKind::Http, RouteKind::Grpc])
            .into_iter()
            .map(|a| (a.listener, a.route, a.domains.clone()))
            .collect();
        for (li, ri, ds) in wanted {
            for d in ds {
                let shadowed = self
                    .listener(li)
                    .is_some_and(|l| self.shadowed(l, &d, table));
                if shadowed || !seen.insert((d.clone(), ri)) {
                    continue;
                }
                let ranked = self.http_routes(ri, diags);
                domains
                    .entry(d)
                    .or_default()
                    .extend(ranked.into_iter().map(|x| (ri, x)));
            }
        }
        let hosts = domains
            .into_iter()
            .map(|(domain, routes)| {
                let routes = self.ordered(&domain, routes, diags);
                VirtualHost {
                    domain,
                    require_tls: false,
                    routes: Arc::new(routes),
                    excluded: Arc::default(),
                }
            })
            .collect();
        VirtualHosts::new(hosts)
    }

    /// The routes of one virtual host in precedence order. An HTTPRoute and a GRPCRoute cannot
    /// share a hostname: the older route's kind is kept, as the specification says.
    fn ordered(
        &self,
        domain: &str,
        mut routes: Vec<(usize, Ranked)>,
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<crate::snapshot::Route> {
        let kind_of = |ri: usize| self.routes.get(ri).and_then(|r| route_kind(r));
        if let Some(oldest) = routes.iter().map(|(ri, _)| *ri).min() {
            let keep = kind_of(oldest);
            let dropped: BTreeSet<usize> = routes
                .iter()
                .map(|(ri, _)| *ri)
                .filter(|ri| kind_of(*ri) != keep)
                .collect();
            for ri in dropped {
                if let (Some(r), Some(old)) = (self.routes.get(ri), self.routes.get(oldest)) {
                    diags.push(subject(r).warning(
                        "spec.parentRefs",
                        format!("host {domain} is also routed by the older {}; an HTTPRoute and a GRPCRoute cannot share a hostname on a listener, so this route is not served for it", old.key()),
                    ));
                }
            }
            routes.retain(|(ri, _)| kind_of(*ri) == keep);
        }
        routes.sort_by(|a, b| a.1.precedence.cmp(&b.1.precedence));
        routes.into_iter().map(|(_, r)| r.route).collect()
    }

    /// The filter chains of TLS listeners `table`: one per HTTPS listener and TLS passthrough
    /// listener, one per SNI name of a TLS listener that terminates for TLSRoutes.
    fn chains(&mut self, table: &[usize], diags: &mut Vec<Diagnostic>) -> Vec<FilterChain> {
        let mut chains = Vec::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for li in table {
            let Some(l) = self.listener(*li) else {
                continue;
            };
            let label = format!("{}/{} ({})", l.namespace, l.gateway, l.name);
            if let Some(first) = names.get(l.host()) {
                diags.push(subject(l.resource).warning(
                    &l.field,
                    format!("hostname {} on port {} is already served by listener {first}; listener not served", l.host(), l.port),
                ));
                continue;
            }
            names.insert(l.host().to_string(), label);
            let (protocol, tls, key, host) =
                (l.protocol, l.tls.clone(), l.key(), l.host().to_string());
            match (protocol, tls) {
                (Protocol::Https, Some(tls @ ChainTls::Terminate(_))) => chains.push(FilterChain {
                    key,
                    server_names: vec![host],
                    tls,
                    routes: ChainRoutes::Http(self.http_hosts(&[*li], diags)),
                }),
                (Protocol::Tls, Some(ChainTls::Passthrough)) => chains.push(FilterChain {
                    key,
                    server_names: vec![host],
                    tls: ChainTls::Passthrough,
                    routes: ChainRoutes::Tls(self.tls_routes(*li, diags)),
                }),
                (Protocol::Tls, Some(tls @ ChainTls::Terminate(_))) => {
                    chains.extend(self.terminated(*li, &tls, diags));
                }
                _ => {}
            }
        }
        chains
    }

    /// Passthrough routes of a TLS listener: TLSRoutes by SNI name, the most specific name
    /// first (then the older route), and TCPRoutes after them for any name.
    fn tls_routes(&mut self, li: usize, diags: &mut Vec<Diagnostic>) -> Vec<TlsRoute> {
        let wanted: Vec<(usize, Vec<String>, bool)> = self
            .attachments(&[li], &[RouteKind::Tls, RouteKind::Tcp])
            .into_iter()
            .map(|a| {
                let tcp =
                    self.routes.get(a.route).and_then(|r| route_kind(r)) == Some(RouteKind::Tcp);
                (a.route, a.domains.clone(), tcp)
            })
            .collect();
        let mut out: Vec<((u8, usize), usize, TlsRoute)> = Vec::new();
        for (ri, domains, tcp) in wanted {
            let forward = self.l4_forward(ri, diags);
            let Some(r) = self.routes.get(ri) else {
                continue;
            };
            for d in domains {
                let rank = if tcp { (0, 0) } else { host_specificity(&d) };
                out.push((
                    rank,
                    ri,
                    TlsRoute {
                        virtual_service: format!("{}/{}", r.namespace(), r.name()),
                        source: Arc::new(Source::of(r, "spec.rules[0]")),
                        sni_hosts: vec![d],
                        forward: forward.clone(),
                    },
                ));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        out.into_iter().map(|(_, _, r)| r).collect()
    }

    /// Chains of a TLS listener that terminates TLS: one per TLSRoute SNI name (the older
    /// route wins a name), and one for the listener's hostname carrying its TCPRoute.
    fn terminated(
        &mut self,
        li: usize,
        tls: &ChainTls,
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<FilterChain> {
        let Some(l) = self.listener(li) else {
            return Vec::new();
        };
        let (key, host) = (l.key(), l.host().to_string());
        let wanted: Vec<(usize, Vec<String>, bool)> = self
            .attachments(&[li], &[RouteKind::Tls, RouteKind::Tcp])
            .into_iter()
            .map(|a| {
                let tcp =
                    self.routes.get(a.route).and_then(|r| route_kind(r)) == Some(RouteKind::Tcp);
                (a.route, a.domains.clone(), tcp)
            })
            .collect();
        let mut by_name: BTreeMap<String, Vec<TcpRoute>> = BTreeMap::new();
        for (ri, domains, tcp) in wanted {
            let forward = self.l4_forward(ri, diags);
            let Some(r) = self.routes.get(ri) else {
                continue;
            };
            let names = if tcp { vec![host.clone()] } else { domains };
            for d in names {
                let list = by_name.entry(d).or_default();
                if let Some(first) = list.first() {
                    diags.push(subject(r).warning(
                        "spec.parentRefs",
                        format!("{} already takes the connections of this listener for this name; not served", first.virtual_service),
                    ));
                    continue;
                }
                list.push(TcpRoute {
                    virtual_service: format!("{}/{}", r.namespace(), r.name()),
                    source: Arc::new(Source::of(r, "spec.rules[0]")),
                    forward: forward.clone(),
                });
            }
        }
        by_name
            .into_iter()
            .map(|(name, routes)| FilterChain {
                key: if name == host {
                    key.clone()
                } else {
                    format!("{key}/{name}")
                },
                server_names: vec![name],
                tls: tls.clone(),
                routes: ChainRoutes::Tcp(routes),
            })
            .collect()
    }

    /// The TCPRoutes of TCP listeners: the oldest takes every connection.
    fn tcp(&mut self, table: &[usize], diags: &mut Vec<Diagnostic>) -> Vec<TcpRoute> {
        let mut ris: Vec<usize> = self
            .attachments(table, &[RouteKind::Tcp])
            .into_iter()
            .map(|a| a.route)
            .collect();
        ris.sort_unstable();
        ris.dedup();
        let mut out = Vec::new();
        for ri in ris {
            let forward = self.l4_forward(ri, diags);
            let Some(r) = self.routes.get(ri) else {
                continue;
            };
            if let Some(first) = out.first() {
                let first: &TcpRoute = first;
                diags.push(subject(r).warning(
                    "spec.parentRefs",
                    format!(
                        "TCPRoute {} already takes every connection of this port; not served",
                        first.virtual_service
                    ),
                ));
            }
            out.push(TcpRoute {
                virtual_service: format!("{}/{}", r.namespace(), r.name()),
                source: Arc::new(Source::of(r, "spec.rules[0]")),
                forward,
            });
        }
        out
    }
}
