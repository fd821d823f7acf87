//! The explanation as text: one labelled section per step, aligned, plain ASCII (values from
//! the configuration are printed as they are).

use std::fmt::Write;

use super::action::{DestinationStep, Endpoints, ForwardStep, Outcome, TunnelMode, round};
use super::{
    ChainStep, ExcludedStep, Explanation, L4RouteStep, RouteStep, ServerStep, VirtualHostStep,
};
use crate::snapshot::{HostMatch, ListenerProtocol, UpstreamProtocol};

/// Width of the label column.
const LABEL: usize = 11;

struct Out(String);

impl Out {
    /// A labelled line; an empty label continues the section above.
    fn line(&mut self, label: &str, text: impl AsRef<str>) {
        let _ = writeln!(self.0, "{label:<LABEL$}{}", text.as_ref());
    }

    /// A line indented under the label column by `extra` spaces.
    fn more(&mut self, extra: usize, text: impl AsRef<str>) {
        let _ = writeln!(
            self.0,
            "{:width$}{}",
            "",
            text.as_ref(),
            width = LABEL + extra
        );
    }
}

pub(super) fn render(ex: &Explanation) -> String {
    let mut o = Out(String::new());
    request(&mut o, ex);
    listener(&mut o, ex);
    if let Some(c) = &ex.chain {
        chain(&mut o, c);
    }
    if let Some(vh) = &ex.virtual_host {
        // Behind a TLS chain the server is the chain's, shown above.
        virtual_host(&mut o, vh, &ex.request.host, ex.chain.is_none());
    } else if !ex.domains.is_empty() {
        o.line(
            "Host",
            format!("{:?} matches no virtual host", ex.request.host),
        );
        o.more(
            0,
            format!("domains on this port: {}", ex.domains.join(", ")),
        );
    }
    routes(&mut o, ex);
    excluded(&mut o, &ex.excluded);
    l4_routes(&mut o, ex);
    outcome(&mut o, &ex.outcome);
    for n in &ex.notes {
        o.line("Note", n);
    }
    o.line("Result", &ex.result);
    o.0
}

fn request(o: &mut Out, ex: &Explanation) {
    let r = &ex.request;
    o.line("Request", format!("{} {}", r.method, r.url));
    o.more(0, format!("Host: {}", r.authority));
    for h in &r.headers {
        o.more(0, h);
    }
    if let Some(sni) = &r.sni {
        o.more(0, format!("(TLS SNI {sni})"));
    }
}

fn listener(o: &mut Out, ex: &Explanation) {
    let Some(l) = &ex.listener else {
        let ports: Vec<String> = ex
            .gateway_ports
            .iter()
            .map(|p| format!("{} ({})", p.port, p.protocol.as_str()))
            .collect();
        o.line(
            "Listener",
            format!(
                "none on port {}; Gateway ports: {}",
                ex.request.port,
                if ports.is_empty() {
                    "none".to_string()
                } else {
                    ports.join(", ")
                }
            ),
        );
        return;
    };
    o.line(
        "Listener",
        format!("port {} ({})", l.port, l.protocol.as_str()),
    );
    // The servers that matter are shown with the virtual host or TLS chain that chose them;
    // a TCP port has no such choice, and a TLS port without a matching chain shows them all.
    if l.protocol == ListenerProtocol::Tcp
        || (l.protocol == ListenerProtocol::Tls && ex.chain.is_none())
    {
        for s in &l.servers {
            o.line("Server", server(s));
        }
    }
}

/// `Gateway ns/name servers[0] (HTTP, hosts ...)`, or for a Gateway API listener
/// `Gateway.gateway.networking.k8s.io ns/name listeners[0] (...)`.
fn server(s: &ServerStep) -> String {
    let at = match s.source.field.strip_prefix("spec.") {
        Some(field) if !s.source.resource.is_empty() => format!("{} {field}", s.source.resource),
        _ => format!("Gateway {} servers[{}]", s.gateway, s.index),
    };
    let mut text = format!("{at} ({}, hosts {})", s.protocol, s.hosts.join(", "));
    if s.https_redirect {
        text.push_str(" httpsRedirect");
    }
    text.push_str(&format!("  {}", s.source));
    text
}

fn how(m: HostMatch) -> &'static str {
    match m {
        HostMatch::Exact => "exact match",
        HostMatch::Wildcard => "longest wildcard match",
        HostMatch::Any => "'*': nothing more specific matches",
    }
}

fn chain(o: &mut Out, c: &ChainStep) {
    let sni = c
        .sni
        .as_deref()
        .map_or("no SNI".to_string(), |s| format!("SNI {s:?}"));
    o.line(
        "TLS",
        format!(
            "{sni} -> server name {} ({}), mode {}",
            c.server_name,
            how(c.matched_by),
            c.tls_mode
        ),
    );
    if let Some(s) = &c.server {
        o.line("Server", server(s));
    }
}

fn virtual_host(o: &mut Out, vh: &VirtualHostStep, host: &str, servers: bool) {
    o.line(
        "Host",
        format!(
            "{host:?} -> virtual host {} ({})",
            vh.domain,
            how(vh.matched_by)
        ),
    );
    if servers {
        for s in &vh.servers {
            o.line("Server", server(s));
        }
    }
}

fn routes(o: &mut Out, ex: &Explanation) {
    if ex.routes.is_empty() {
        return;
    }
    let total = ex.routes.len() + ex.routes_not_evaluated;
    o.line(
        "Routes",
        format!("{total} in this virtual host, evaluated in order; the first match wins"),
    );
    for r in &ex.routes {
        route(o, r);
    }
    if ex.routes_not_evaluated > 0 {
        o.more(
            2,
            format!("({} later route(s) not evaluated)", ex.routes_not_evaluated),
        );
    }
}

fn route(o: &mut Out, r: &RouteStep) {
    let mark = if r.matched { "MATCH" } else { "skip " };
    o.more(
        2,
        format!(
            "{mark} #{} {}",
            r.index,
            origin(&r.virtual_service, &r.name, &r.source)
        ),
    );
    o.more(11, format!("when {}", r.when));
    if let Some(w) = &r.why_not {
        o.more(11, format!("why  {w}"));
    }
}

/// `VirtualService ns/name route "x" spec.http[0].match[1]  file:line`, naming the delegate
/// when the route was written there; a Gateway API route is named by its own kind
/// (`HTTPRoute ns/name ...`).
fn origin(virtual_service: &str, name: &str, source: &crate::snapshot::Source) -> String {
    let own = format!("VirtualService {virtual_service}");
    let istio = source.resource.is_empty() || source.resource.starts_with("VirtualService ");
    let mut s = if istio {
        own.clone()
    } else {
        source.resource.to_string()
    };
    if istio && !source.resource.is_empty() && *source.resource != *own {
        s.push_str(&format!(" (delegate {})", source.resource));
    }
    if !name.is_empty() {
        s.push_str(&format!(" route {name:?}"));
    }
    s.push_str(&format!(" {}  {source}", source.field));
    s
}

fn excluded(o: &mut Out, list: &[ExcludedStep]) {
    if list.is_empty() {
        return;
    }
    o.line(
        "Excluded",
        "match blocks bound to this host but not in its table",
    );
    for e in list {
        o.more(
            2,
            format!("- {}", origin(&e.virtual_service, &e.name, &e.source)),
        );
        o.more(11, format!("why  {}", e.reason));
    }
}

fn l4_routes(o: &mut Out, ex: &Explanation) {
    if ex.l4_routes.is_empty() {
        return;
    }
    let tls = ex.l4_routes.iter().any(|r| !r.sni_hosts.is_empty());
    o.line(
        "Routes",
        if tls {
            "tls routes by SNI, evaluated in order; the first match wins"
        } else {
            "the first tcp route takes every connection"
        },
    );
    for r in &ex.l4_routes {
        l4_route(o, r);
    }
}

fn l4_route(o: &mut Out, r: &L4RouteStep) {
    let mark = if r.matched { "MATCH" } else { "skip " };
    o.more(
        2,
        format!(
            "{mark} #{} {}",
            r.index,
            origin(&r.virtual_service, "", &r.source)
        ),
    );
    if !r.sni_hosts.is_empty() {
        o.more(11, format!("when sniHosts {}", r.sni_hosts.join(", ")));
    }
    if let Some(w) = &r.why_not {
        o.more(11, format!("why  {w}"));
    }
}

fn outcome(o: &mut Out, outcome: &Outcome) {
    match outcome {
        Outcome::Forward(f) => forward(o, f),
        Outcome::Redirect { status, location } => {
            o.line("Action", format!("redirect {status}, Location: {location}"));
        }
        Outcome::HttpsRedirect { status, location } => o.line(
            "Action",
            format!("httpsRedirect: {status} before any route, Location: {location}"),
        ),
        Outcome::DirectResponse {
            status,
            content_type,
            body_bytes,
        } => {
            let body = if *body_bytes == 0 {
                "no body".to_string()
            } else {
                format!("{body_bytes} byte(s) of {content_type}")
            };
            o.line("Action", format!("direct response {status}, {body}"));
        }
        Outcome::Tunnel { mode, destinations } => {
            let what = match mode {
                TunnelMode::TlsPassthrough => "TLS passthrough: the encrypted bytes are spliced",
                TunnelMode::TlsTerminatedTcp => "TLS terminated; the plaintext is proxied as TCP",
                TunnelMode::Tcp => "TCP proxy",
            };
            o.line("Action", what);
            for d in destinations {
                destination(o, d, destinations.len() > 1, false);
            }
        }
        Outcome::Refused { .. } => {}
    }
}

fn forward(o: &mut Out, f: &ForwardStep) {
    o.line("Action", "forward");
    for d in &f.destinations {
        destination(o, d, f.destinations.len() > 1, true);
    }
    if let Some(p) = &f.upstream_path {
        o.more(2, format!("path     rewritten to {p}"));
    }
    if let Some(h) = &f.upstream_host {
        o.more(2, format!("host     rewritten to {h}"));
    }
    o.more(
        2,
        format!("timeout  {}", f.timeout.as_deref().unwrap_or("none")),
    );
    let per_try = f
        .retries
        .per_try_timeout
        .as_deref()
        .map_or(String::new(), |t| format!(", {t} per try"));
    o.more(
        2,
        format!(
            "retries  {} on {}{per_try}",
            f.retries.attempts, f.retries.retry_on
        ),
    );
    for x in &f.fault {
        o.more(2, format!("fault    {x}"));
    }
    for m in &f.mirrors {
        o.more(
            2,
            format!("mirror   {} ({}% of requests)", m.cluster, round(m.percent)),
        );
    }
    for h in &f.headers {
        o.more(2, format!("headers  {h}"));
    }
    if let Some(c) = &f.cors {
        o.more(2, format!("cors     {c}"));
    }
}

/// A destination; `http` shows the HTTP version spoken to it.
fn destination(o: &mut Out, d: &DestinationStep, weighted: bool, http: bool) {
    let share = if weighted {
        format!("{}% ", round(d.percent))
    } else {
        String::new()
    };
    o.more(2, format!("to       {share}{}", d.cluster));
    let pad = 11;
    if let Some(service) = &d.service {
        let mut s = format!("service {service}");
        if let Some(p) = d.port {
            s.push_str(&format!(" port {p}"));
        }
        if let Some(sub) = &d.subset {
            s.push_str(&format!(", subset {sub}"));
        }
        if let Some(p) = d.protocol.filter(|_| http) {
            s.push_str(match p {
                UpstreamProtocol::Http1 => ", HTTP/1.1",
                UpstreamProtocol::Http2 => ", HTTP/2",
                UpstreamProtocol::Client => ", the client's HTTP version",
            });
        }
        o.more(pad, s);
    }
    if let Some(t) = &d.tls {
        o.more(pad, format!("upstream TLS {t}"));
    }
    if let Some(h) = &d.host_rewrite {
        o.more(pad, format!("host rewritten to {h}"));
    }
    if let Some(p) = &d.path_rewrite {
        o.more(pad, format!("path rewritten to {p}"));
    }
    for h in &d.headers {
        o.more(pad, format!("headers {h}"));
    }
    match &d.endpoints {
        Endpoints::Static { addresses } if addresses.is_empty() => {
            o.more(pad, "endpoints none: 503 no healthy upstream (UH)");
        }
        Endpoints::Static { addresses } => {
            o.more(pad, "endpoints (static)");
            for e in addresses {
                let labels: Vec<String> =
                    e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!(" {{{}}}", labels.join(", "))
                };
                o.more(pad + 2, format!("{}{labels}", e.address));
            }
        }
        Endpoints::Dns { names } => {
            o.more(pad, format!("endpoints (DNS) {}", names.join(", ")));
        }
        Endpoints::OriginalDestination { port } => {
            let port = port.map_or("the request's port".to_string(), |p| format!("port {p}"));
            o.more(
                pad,
                format!("endpoints (original destination) the request's host, resolved per request, {port}"),
            );
        }
        Endpoints::Unknown { reason } => o.more(pad, format!("no cluster: {reason}")),
    }
}
