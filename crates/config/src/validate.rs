//! Checks of one resource alone, as Istio's validating webhook (and, for the Gateway API and
//! Ingress, the Kubernetes API server) makes them. An error rejects the resource; the rest of
//! the configuration still applies.

mod gateway_api;
mod ingress;

use isthmus_api::istio::destination_rule::DestinationRuleSpec;
use isthmus_api::istio::gateway::{GatewaySpec, ServerTlsSettings};
use isthmus_api::istio::service_entry::ServiceEntrySpec;
use isthmus_api::istio::virtual_service::{
    HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec,
};
use isthmus_api::{Diagnostic, Resource};

use crate::diag::{Subject, subject};
use crate::hosts::check_dns_name;
use crate::matching::full_match_regex;
use crate::tls::{parse_certificate_hash, parse_spki_pin};

/// Gateway protocols Istio accepts (case-insensitive).
pub const PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
];

/// ServiceEntry resolutions.
pub const RESOLUTIONS: &[&str] = &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"];

/// Every diagnostic of one resource; the resource is invalid if any is an error.
pub fn validate(r: &Resource) -> Vec<Diagnostic> {
    let s = subject(r);
    let mut out = Vec::new();
    match r {
        Resource::Gateway(o) => {
            gateway(&s, &o.spec, &mut out);
            forward_proxy_annotation(&s, o, &mut out);
        }
        Resource::VirtualService(o) => virtual_service(&s, &o.spec, &mut out),
        Resource::DestinationRule(o) => {
            destination_rule(&s, &o.spec, &mut out);
            health_check_annotation(&s, &o.meta.annotations, &mut out);
        }
        Resource::ServiceEntry(o) => service_entry(&s, &o.spec, &mut out),
        Resource::Secret(_) | Resource::Namespace(_) => {}
        Resource::GatewayClass(o) => gateway_api::gateway_class(&s, &o.spec, &mut out),
        Resource::KubeGateway(o) => gateway_api::gateway(&s, &o.spec, &mut out),
        Resource::HttpRoute(o) => gateway_api::http_route(&s, &o.spec, &mut out),
        Resource::GrpcRoute(o) => gateway_api::grpc_route(&s, &o.spec, &mut out),
        Resource::TlsRoute(o) => gateway_api::l4_route(&s, &o.spec, true, &mut out),
        Resource::TcpRoute(o) => gateway_api::l4_route(&s, &o.spec, false, &mut out),
        Resource::ReferenceGrant(o) => gateway_api::reference_grant(&s, &o.spec, &mut out),
        Resource::Ingress(o) => ingress::ingress(&s, &o.spec, &mut out),
        Resource::IngressClass(o) => ingress::ingress_class(&s, &o.spec, &mut out),
    }
    out
}

fn port_number(s: &Subject<'_>, field: &str, n: Option<u32>, out: &mut Vec<Diagnostic>) {
    match n {
        None => out.push(s.error(field, "port number is required")),
        Some(n) if !(1..=65535).contains(&n) => {
            out.push(s.error(field, format!("port number {n} is not in 1..65535")))
        }
        Some(_) => {}
    }
}

fn gateway(s: &Subject<'_>, spec: &GatewaySpec, out: &mut Vec<Diagnostic>) {
    if spec.servers.is_empty() {
        out.push(s.error("spec.servers", "a Gateway needs at least one server"));
    }
    for (i, server) in spec.servers.iter().enumerate() {
        let f = format!("spec.servers[{i}]");
        match &server.port {
            None => out.push(s.error(&format!("{f}.port"), "server port is required")),
            Some(port) => {
                port_number(s, &format!("{f}.port.number"), port.number, out);
                match port.protocol.as_deref() {
                    None => {
                        out.push(s.error(&format!("{f}.port.protocol"), "protocol is required"))
                    }
                    Some(p) if !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str()) => {
                        out.push(s.error(
                            &format!("{f}.port.protocol"),
                            format!(
                                "unknown protocol {p:?}; expected one of {}",
                                PROTOCOLS.join(", ")
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        if server.hosts.is_empty() {
            out.push(s.error(&format!("{f}.hosts"), "a server needs at least one host"));
        }
        for (j, h) in server.hosts.iter().enumerate() {
            let host = h.split_once('/').map_or(h.as_str(), |(_, h)| h);
            if let Err(e) = check_dns_name(host) {
                out.push(s.error(&format!("{f}.hosts[{j}]"), e));
            }
        }
        if let Some(tls) = &server.tls {
            certificate_pins(s, &format!("{f}.tls"), tls, out);
        }
    }
}

/// Envoy refuses a listener whose pins do not decode to SHA-256 digests; here the Gateway is
/// rejected instead, so its last good version keeps serving.
fn certificate_pins(s: &Subject<'_>, f: &str, tls: &ServerTlsSettings, out: &mut Vec<Diagnostic>) {
    for (j, pin) in tls.verify_certificate_hash.iter().enumerate() {
        if let Err(e) = parse_certificate_hash(pin) {
            out.push(s.error(&format!("{f}.verifyCertificateHash[{j}]"), e.to_string()));
        }
    }
    for (j, pin) in tls.verify_certificate_spki.iter().enumerate() {
        if let Err(e) = parse_spki_pin(pin) {
            out.push(s.error(&format!("{f}.verifyCertificateSpki[{j}]"), e.to_string()));
        }
    }
}

fn virtual_service(s: &Subject<'_>, spec: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    let delegate = spec.hosts.is_empty();
    if delegate && !spec.gateways.is_empty() {
        out.push(s.error(
            "spec.hosts",
            "a VirtualService bound to gateways needs at least one host",
        ));
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        if let Err(e) =
            check_dns_name(h).or_else(|e| h.parse::<std::net::IpAddr>().map(|_| ()).map_err(|_| e))
        {
            out.push(s.error(&format!("spec.hosts[{i}]"), e));
        }
    }
    for (i, route) in spec.http.iter().enumerate() {
        http_route(s, &format!("spec.http[{i}]"), route, out);
    }
}

fn http_route(s: &Subject<'_>, f: &str, route: &HttpRoute, out: &mut Vec<Diagnostic>) {
    let actions = [
        !route.route.is_empty(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
        route.delegate.is_some(),
    ];
    match actions.iter().filter(|a| **a).count() {
        0 => out.push(s.error(
            f,
            "an HTTP route needs one of route, redirect, directResponse or delegate",
        )),
        1 => {}
        _ => out.push(s.error(
            f,
            "route, redirect, directResponse and delegate are mutually exclusive",
        )),
    }
    for (j, m) in route.matches.iter().enumerate() {
        http_match(s, &format!("{f}.match[{j}]"), m, out);
    }
    let mut total: i64 = 0;
    for (j, d) in route.route.iter().enumerate() {
        let df = format!("{f}.route[{j}]");
        match d.destination.as_ref().and_then(|d| d.host.as_deref()) {
            None | Some("") => out.push(s.error(
                &format!("{df}.destination.host"),
                "destination host is required",
            )),
            Some(h) => {
                if let Err(e) = check_dns_name(h) {
                    out.push(s.error(&format!("{df}.destination.host"), e));
                } else if h.contains('*') {
                    out.push(s.error(
                        &format!("{df}.destination.host"),
                        "a destination host cannot be a wildcard",
                    ));
                }
            }
        }
        if let Some(p) = d.destination.as_ref().and_then(|d| d.port.as_ref()) {
            port_number(s, &format!("{df}.destination.port.number"), p.number, out);
        }
        let w = d.weight.unwrap_or(0);
        if w < 0 {
            out.push(s.error(&format!("{df}.weight"), format!("weight {w} is negative")));
        }
        total += i64::from(w.max(0));
    }
    if route.route.len() > 1 && total == 0 {
        out.push(s.error(
            &format!("{f}.route"),
            "with several destinations, at least one needs a weight above 0",
        ));
    }
    if total > i64::from(u32::MAX) {
        out.push(s.error(&format!("{f}.route"), "the sum of weights is too large"));
    }
    route_actions(s, f, route, out);
}

fn http_match(s: &Subject<'_>, f: &str, m: &HttpMatchRequest, out: &mut Vec<Diagnostic>) {
    let singles = [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ];
    for (name, sm) in singles {
        if let Some(sm) = sm {
            string_match(s, &format!("{f}.{name}"), sm, false, out);
        }
    }
    let maps = [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
        ("queryParams", &m.query_params),
    ];
    for (name, map) in maps {
        for (key, sm) in map {
            let kf = format!("{f}.{name}.{key}");
            if name != "queryParams" {
                if key.bytes().any(|b| b.is_ascii_uppercase()) {
                    out.push(s.error(&kf, format!("header name {key:?} must be lower-case")));
                } else if http::HeaderName::from_bytes(key.as_bytes()).is_err()
                    && !key.starts_with('@')
                {
                    out.push(s.error(&kf, format!("{key:?} is not a valid header name")));
                }
            }
            string_match(s, &kf, sm, name != "queryParams", out);
        }
    }
    if let Some(p) = m.port
        && !(1..=65535).contains(&p)
    {
        out.push(s.error(&format!("{f}.port"), format!("port {p} is not in 1..65535")));
    }
}

fn string_match(
    s: &Subject<'_>,
    f: &str,
    m: &StringMatch,
    empty_ok: bool,
    out: &mut Vec<Diagnostic>,
) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()];
    match set.iter().filter(|b| **b).count() {
        0 if !empty_ok => out.push(s.error(f, "one of exact, prefix or regex is required")),
        0 | 1 => {}
        _ => out.push(s.error(f, "exact, prefix and regex are mutually exclusive")),
    }
    if let Some(re) = &m.regex
        && let Err(e) = full_match_regex(re)
    {
        let msg = e.to_string();
        let msg = msg.lines().last().unwrap_or(&msg).trim();
        out.push(s.error(
            &format!("{f}.regex"),
            format!("invalid regex {re:?}: {msg}"),
        ));
    }
}

fn destination_rule(s: &Subject<'_>, spec: &DestinationRuleSpec, out: &mut Vec<Diagnostic>) {
    match spec.host.as_deref() {
        None | Some("") => out.push(s.error("spec.host", "host is required")),
        Some(h) => {
            if let Err(e) = check_dns_name(h) {
                out.push(s.error("spec.host", e));
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}].name");
        match subset.name.as_deref() {
            None | Some("") => out.push(s.error(&f, "subset name is required")),
            Some(n) if !seen.insert(n) => {
                out.push(s.error(&f, format!("duplicate subset name {n:?}")))
            }
            Some(_) => {}
        }
        if let Some(p) = &subset.traffic_policy {
            traffic_policy(s, &format!("spec.subsets[{i}].trafficPolicy"), p, out);
        }
    }
    if let Some(p) = &spec.traffic_policy {
        traffic_policy(s, "spec.trafficPolicy", p, out);
    }
}

/// The `isthmus.io/forward-proxy` annotation parses, names servers of the Gateway, and names
/// only plaintext HTTP servers (a TLS or TCP port has no request to read a destination from).
fn forward_proxy_annotation(
    s: &Subject<'_>,
    gw: &isthmus_api::Object<GatewaySpec>,
    out: &mut Vec<Diagnostic>,
) {
    use crate::egress::{FORWARD_PROXY_ANNOTATION, ForwardProxyPorts};
    let Some(text) = gw.meta.annotations.get(FORWARD_PROXY_ANNOTATION) else {
        return;
    };
    let field = format!("metadata.annotations.{FORWARD_PROXY_ANNOTATION}");
    let marked = match ForwardProxyPorts::parse(text) {
        Ok(m) => m,
        Err(e) => {
            out.push(s.error(&field, e));
            return;
        }
    };
    let servers: Vec<(u32, Option<&str>, String)> = gw
        .spec
        .servers
        .iter()
        .filter_map(|sv| sv.port.as_ref())
        .map(|p| {
            (
                p.number.unwrap_or(0),
                p.name.as_deref(),
                p.protocol.as_deref().unwrap_or("").to_ascii_uppercase(),
            )
        })
        .collect();
    if let ForwardProxyPorts::Listed(items) = &marked {
        for item in items {
            let names_one = servers
                .iter()
                .any(|(n, name, _)| *item == n.to_string() || Some(item.as_str()) == *name);
            if !names_one {
                out.push(s.warning(
                    &field,
                    format!("{item:?} is neither the port number nor the port name of a server of this Gateway"),
                ));
            }
        }
    }
    let explicit = matches!(marked, ForwardProxyPorts::Listed(_));
    for (i, (number, name, protocol)) in servers.iter().enumerate() {
        let http = matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB");
        if explicit && marked.covers(*number, *name) && !http {
            out.push(s.warning(
                &format!("spec.servers[{i}].port.protocol"),
                format!("{FORWARD_PROXY_ANNOTATION} names this {protocol} server, but only plaintext HTTP servers can be forward proxies; it is served as a plain Gateway server"),
            ));
        }
    }
}

/// The `isthmus.io/health-check` annotation parses.
fn health_check_annotation(
    s: &Subject<'_>,
    annotations: &std::collections::BTreeMap<String, String>,
    out: &mut Vec<Diagnostic>,
) {
    let key = crate::compile::HEALTH_CHECK_ANNOTATION;
    if let Some(text) = annotations.get(key)
        && let Err(e) = crate::compile::parse_health_check(text)
    {
        out.push(s.error(&format!("metadata.annotations.{key}"), e));
    }
}

/// Load balancer and outlier detection settings at one level of a DestinationRule.
fn traffic_policy(
    s: &Subject<'_>,
    at: &str,
    p: &isthmus_api::istio::destination_rule::TrafficPolicy,
    out: &mut Vec<Diagnostic>,
) {
    let mut levels = vec![(
        at.to_string(),
        p.load_balancer.as_ref(),
        p.outlier_detection.as_ref(),
    )];
    for (i, l) in p.port_level_settings.iter().enumerate() {
        levels.push((
            format!("{at}.portLevelSettings[{i}]"),
            l.load_balancer.as_ref(),
            l.outlier_detection.as_ref(),
        ));
    }
    for (f, lb, od) in levels {
        if let Some(lb) = lb {
            load_balancer(s, &format!("{f}.loadBalancer"), lb, out);
        }
        if let Some(od) = od {
            for (name, v) in [
                ("maxEjectionPercent", od.max_ejection_percent),
                ("minHealthPercent", od.min_health_percent),
            ] {
                if let Some(v) = v.filter(|v| !(0..=100).contains(v)) {
                    out.push(s.error(
                        &format!("{f}.outlierDetection.{name}"),
                        format!("{v} is not a percentage (0..100)"),
                    ));
                }
            }
        }
    }
}

const SIMPLE_LB: &[&str] = &[
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
];

fn load_balancer(
    s: &Subject<'_>,
    f: &str,
    lb: &isthmus_api::istio::destination_rule::LoadBalancerSettings,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(simple) = lb.simple.as_deref()
        && !SIMPLE_LB.contains(&simple)
    {
        out.push(s.error(
            &format!("{f}.simple"),
            format!(
                "unknown load balancer {simple:?}; expected one of {}",
                SIMPLE_LB.join(", ")
            ),
        ));
    }
    if let Some(ch) = &lb.consistent_hash {
        if lb.simple.is_some() {
            out.push(s.error(f, "set one of simple and consistentHash, not both"));
        }
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if keys != 1 {
            out.push(s.error(
                &format!("{f}.consistentHash"),
                "set exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName",
            ));
        }
        if let Some(c) = &ch.http_cookie
            && c.name.as_deref().is_none_or(str::is_empty)
        {
            out.push(s.error(
                &format!("{f}.consistentHash.httpCookie.name"),
                "a cookie name is required",
            ));
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            out.push(s.error(
                &format!("{f}.consistentHash"),
                "set one of ringHash and maglev, not both",
            ));
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            out.push(s.error(
                &format!("{f}.localityLbSetting"),
                "distribute and failover cannot both be set",
            ));
        }
        for (i, d) in l.distribute.iter().enumerate() {
            let total: u64 = d.to.values().map(|v| u64::from(*v)).sum();
            if total != 100 {
                out.push(s.error(
                    &format!("{f}.localityLbSetting.distribute[{i}].to"),
                    format!("weights add up to {total}, not 100"),
                ));
            }
        }
        for (i, fo) in l.failover.iter().enumerate() {
            if fo.from.is_some() && fo.from == fo.to {
                out.push(s.error(
                    &format!("{f}.localityLbSetting.failover[{i}].to"),
                    "failover to the same region",
                ));
            }
        }
    }
}

fn service_entry(s: &Subject<'_>, spec: &ServiceEntrySpec, out: &mut Vec<Diagnostic>) {
    if spec.hosts.is_empty() {
        out.push(s.error("spec.hosts", "a ServiceEntry needs at least one host"));
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let f = format!("spec.hosts[{i}]");
        if h == "*" {
            out.push(s.error(&f, "a ServiceEntry host cannot be `*`"));
        } else if let Err(e) = check_dns_name(h) {
            out.push(s.error(&f, e));
        }
    }
    let mut numbers = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        port_number(s, &format!("{f}.number"), p.number, out);
        if let Some(n) = p.number
            && !numbers.insert(n)
        {
            out.push(s.error(&format!("{f}.number"), format!("duplicate port number {n}")));
        }
        match p.name.as_deref() {
            None | Some("") => out.push(s.error(&format!("{f}.name"), "port name is required")),
            Some(n) if !names.insert(n) => {
                out.push(s.error(&format!("{f}.name"), format!("duplicate port name {n:?}")))
            }
            Some(_) => {}
        }
        if let Some(t) = p.target_port
            && !(1..=65535).contains(&t)
        {
            out.push(s.error(
                &format!("{f}.targetPort"),
                format!("port {t} is not in 1..65535"),
            ));
        }
    }
    let resolution = spec.resolution.as_deref().unwrap_or("NONE");
    if !RESOLUTIONS.contains(&resolution) {
        out.push(s.error(
            "spec.resolution",
            format!(
                "unknown resolution {resolution:?}; expected one of {}",
                RESOLUTIONS.join(", ")
            ),
        ));
    }
    resolution_rules(s, spec, resolution, out);
    for (i, e) in spec.endpoints.iter().enumerate() {
        let f = format!("spec.endpoints[{i}].address");
        let Some(addr) = e.address.as_deref().filter(|a| !a.is_empty()) else {
            if e.network.is_none() {
                out.push(s.error(&f, "endpoint address is required"));
            }
            continue;
        };
        let is_ip = addr.parse::<std::net::IpAddr>().is_ok();
        if resolution == "STATIC" && !is_ip && !addr.starts_with("unix://") {
            out.push(s.error(
                &f,
                format!("{addr:?} is not an IP address; with resolution STATIC endpoints must be IPs (use resolution DNS for names)"),
            ));
        } else if !is_ip
            && !addr.starts_with("unix://")
            && let Err(e) = check_dns_name(addr)
        {
            out.push(s.error(&f, e));
        }
        for (name, port) in &e.ports {
            if !(1..=65535).contains(port) {
                out.push(s.error(
                    &format!("spec.endpoints[{i}].ports.{name}"),
                    format!("port {port} is not in 1..65535"),
                ));
            }
        }
    }
}

/// Istio's rules tying endpoints and hosts to the resolution.
fn resolution_rules(
    s: &Subject<'_>,
    spec: &ServiceEntrySpec,
    resolution: &str,
    out: &mut Vec<Diagnostic>,
) {
    match resolution {
        // The destination comes from each request, so endpoints would never be used.
        "NONE" | "DYNAMIC_DNS" if !spec.endpoints.is_empty() => out.push(s.error(
            "spec.endpoints",
            format!("no endpoints may be given with resolution {resolution}: the request's own host (Host, SNI or CONNECT target) is the destination"),
        )),
        "DNS" | "DNS_ROUND_ROBIN" => {
            if spec.endpoints.is_empty() {
                for (i, h) in spec.hosts.iter().enumerate() {
                    if h.contains('*') {
                        out.push(s.error(
                            &format!("spec.hosts[{i}]"),
                            format!("{h:?} is a wildcard, but with resolution {resolution} and no endpoints the hosts themselves are resolved, so they must be names (use resolution NONE or DYNAMIC_DNS for wildcard hosts)"),
                        ));
                    }
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && spec.endpoints.len() > 1 {
                out.push(s.error(
                    "spec.endpoints",
                    "resolution DNS_ROUND_ROBIN takes at most one endpoint (it uses the first address of one name)",
                ));
            }
        }
        _ => {}
    }
}

fn percent_field(
    s: &Subject<'_>,
    f: &str,
    p: Option<&isthmus_api::istio::Percent>,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(p) = p
        && !(0.0..=100.0).contains(&p.value)
    {
        out.push(s.error(
            &format!("{f}.value"),
            format!("percentage {} is not in 0..100", p.value),
        ));
    }
}

fn header_ops_check(
    s: &Subject<'_>,
    f: &str,
    h: Option<&isthmus_api::istio::virtual_service::Headers>,
    out: &mut Vec<Diagnostic>,
) {
    let Some(h) = h else { return };
    for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let names = ops
            .set
            .keys()
            .chain(ops.add.keys())
            .chain(ops.remove.iter());
        for name in names {
            let pseudo = dir == "request" && matches!(name.as_str(), ":authority");
            if !pseudo
                && http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).is_err()
            {
                out.push(s.error(
                    &format!("{f}.{dir}"),
                    format!("{name:?} is not a valid header name"),
                ));
            }
        }
        for (kind, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                if let Err(e) = crate::actions::Template::parse(value) {
                    out.push(s.error(&format!("{f}.{dir}.{kind}.{name}"), e));
                } else if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    out.push(s.error(
                        &format!("{f}.{dir}.{kind}.{name}"),
                        "header values cannot contain CR, LF or NUL",
                    ));
                }
            }
        }
    }
}

fn min_duration(
    s: &Subject<'_>,
    f: &str,
    d: Option<isthmus_api::duration::ProtoDuration>,
    allow_zero: bool,
    out: &mut Vec<Diagnostic>,
) {
    if let Some(d) = d
        && d.0 < std::time::Duration::from_millis(1)
        && !(allow_zero && d.0.is_zero())
    {
        out.push(s.error(f, "duration must be at least 1ms"));
    }
}

/// Checks rewrite, redirect, direct response, headers, retries, timeouts, faults, mirrors, CORS
/// and delegate of one HTTP route.
fn route_actions(s: &Subject<'_>, f: &str, route: &HttpRoute, out: &mut Vec<Diagnostic>) {
    if route.rewrite.is_some() && route.redirect.is_some() {
        out.push(s.error(
            &format!("{f}.rewrite"),
            "rewrite and redirect cannot be used together",
        ));
    }
    if let Some(rw) = &route.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            out.push(s.error(
                &format!("{f}.rewrite"),
                "uri and uriRegexRewrite are mutually exclusive",
            ));
        }
        if let Some(re) = &rw.uri_regex_rewrite {
            match re.pattern.as_deref() {
                None => out.push(s.error(
                    &format!("{f}.rewrite.uriRegexRewrite.match"),
                    "match is required",
                )),
                Some(p) => {
                    if let Err(e) = crate::matching::substitution_regex(p) {
                        let msg = e.to_string();
                        let msg = msg.lines().last().unwrap_or(&msg).trim().to_string();
                        out.push(s.error(
                            &format!("{f}.rewrite.uriRegexRewrite.match"),
                            format!("invalid regex {p:?}: {msg}"),
                        ));
                    }
                }
            }
            if re.rewrite.is_none() {
                out.push(s.error(
                    &format!("{f}.rewrite.uriRegexRewrite.rewrite"),
                    "rewrite is required",
                ));
            }
        }
    }
    if let Some(r) = &route.redirect {
        let rf = format!("{f}.redirect");
        if let Some(code) = r.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            out.push(s.error(
                &format!("{rf}.redirectCode"),
                format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
            ));
        }
        if let Some(d) = r.derive_port.as_deref()
            && !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT")
        {
            out.push(s.error(
                &format!("{rf}.derivePort"),
                format!(
                    "unknown derivePort {d:?}; expected FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"
                ),
            ));
        }
        if r.port.is_some() && r.derive_port.is_some() {
            out.push(s.error(
                &format!("{rf}.port"),
                "port and derivePort are mutually exclusive",
            ));
        }
        if let Some(p) = r.port
            && !(1..=65535).contains(&p)
        {
            out.push(s.error(
                &format!("{rf}.port"),
                format!("port {p} is not in 1..65535"),
            ));
        }
        if let Some(sch) = r.scheme.as_deref()
            && !matches!(sch, "http" | "https")
        {
            out.push(s.error(
                &format!("{rf}.scheme"),
                format!("scheme {sch:?} is not http or https"),
            ));
        }
        if r.uri.is_some() && r.prefix_rewrite.is_some() {
            out.push(s.error(
                &format!("{rf}.uri"),
                "uri and prefixRewrite are mutually exclusive",
            ));
        }
    }
    if let Some(d) = &route.direct_response {
        let df = format!("{f}.directResponse");
        match d.status {
            None => out.push(s.error(&format!("{df}.status"), "status is required")),
            Some(st) if !(200..=599).contains(&st) => out.push(s.error(
                &format!("{df}.status"),
                format!("status {st} is not in 200..599"),
            )),
            Some(_) => {}
        }
        if let Some(b) = &d.body {
            let set = [b.string.is_some(), b.bytes.is_some(), b.filename.is_some()];
            if set.iter().filter(|x| **x).count() > 1 {
                out.push(s.error(
                    &format!("{df}.body"),
                    "string, bytes and filename are mutually exclusive",
                ));
            }
            if let Some(name) = &b.filename {
                let base = std::path::Path::new(&*s.origin.file)
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                if let Err(e) = crate::compile::read_body_file(&base, name) {
                    out.push(s.error(&format!("{df}.body.filename"), e));
                }
            }
            let len = match (&b.string, &b.bytes) {
                (Some(t), _) => Some(t.len()),
                (None, Some(b64)) => {
                    use base64::Engine;
                    match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                        Ok(v) => Some(v.len()),
                        Err(e) => {
                            out.push(s.error(
                                &format!("{df}.body.bytes"),
                                format!("not valid base64: {e}"),
                            ));
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some(len) = len
                && len > crate::actions::MAX_DIRECT_BODY
            {
                out.push(s.error(
                    &format!("{df}.body"),
                    format!("body is {len} bytes, more than the limit of 1 MiB"),
                ));
            }
        }
    }
    header_ops_check(s, &format!("{f}.headers"), route.headers.as_ref(), out);
    for (j, d) in route.route.iter().enumerate() {
        header_ops_check(
            s,
            &format!("{f}.route[{j}].headers"),
            d.headers.as_ref(),
            out,
        );
    }
    min_duration(s, &format!("{f}.timeout"), route.timeout, true, out);
    if let Some(r) = &route.retries {
        let rf = format!("{f}.retries");
        if r.attempts.is_some_and(|a| a < 0) {
            out.push(s.error(&format!("{rf}.attempts"), "attempts cannot be negative"));
        }
        min_duration(
            s,
            &format!("{rf}.perTryTimeout"),
            r.per_try_timeout,
            false,
            out,
        );
        min_duration(s, &format!("{rf}.backoff"), r.backoff, false, out);
        if let Some(on) = r.retry_on.as_deref()
            && let Err(e) = crate::compile::parse_retry_on(on)
        {
            out.push(s.error(&format!("{rf}.retryOn"), e));
        }
    }
    if let Some(fault) = &route.fault {
        let ff = format!("{f}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            out.push(s.error(&ff, "a fault needs a delay or an abort"));
        }
        if let Some(d) = &fault.delay {
            if d.fixed_delay.is_none() {
                out.push(s.error(
                    &format!("{ff}.delay.fixedDelay"),
                    "fixedDelay is required (exponentialDelay is not supported)",
                ));
            }
            min_duration(
                s,
                &format!("{ff}.delay.fixedDelay"),
                d.fixed_delay,
                false,
                out,
            );
            percent_field(
                s,
                &format!("{ff}.delay.percentage"),
                d.percentage.as_ref(),
                out,
            );
        }
        if let Some(a) = &fault.abort {
            match (a.http_status, a.grpc_status.as_deref()) {
                (Some(code), _) if !(200..=599).contains(&code) => out.push(s.error(
                    &format!("{ff}.abort.httpStatus"),
                    format!("status {code} is not in 200..599"),
                )),
                (None, Some(g)) if crate::compile::grpc_code(g).is_none() => out.push(s.error(
                    &format!("{ff}.abort.grpcStatus"),
                    format!("unknown gRPC status {g:?}; expected a name such as UNAVAILABLE"),
                )),
                (None, None) => out.push(s.error(
                    &format!("{ff}.abort"),
                    "httpStatus or grpcStatus is required",
                )),
                _ => {}
            }
            percent_field(
                s,
                &format!("{ff}.abort.percentage"),
                a.percentage.as_ref(),
                out,
            );
        }
    }
    percent_field(
        s,
        &format!("{f}.mirrorPercentage"),
        route.mirror_percentage.as_ref(),
        out,
    );
    for (j, m) in route.mirrors.iter().enumerate() {
        if m.destination
            .as_ref()
            .and_then(|d| d.host.as_deref())
            .is_none()
        {
            out.push(s.error(
                &format!("{f}.mirrors[{j}].destination.host"),
                "destination host is required",
            ));
        }
        percent_field(
            s,
            &format!("{f}.mirrors[{j}].percentage"),
            m.percentage.as_ref(),
            out,
        );
    }
    if let Some(c) = &route.cors_policy {
        for (j, o) in c.allow_origins.iter().enumerate() {
            string_match(
                s,
                &format!("{f}.corsPolicy.allowOrigins[{j}]"),
                o,
                false,
                out,
            );
        }
        if let Some(u) = c.unmatched_preflights.as_deref()
            && !matches!(u, "UNSPECIFIED" | "FORWARD" | "IGNORE")
        {
            out.push(s.error(
                &format!("{f}.corsPolicy.unmatchedPreflights"),
                format!("unknown value {u:?}; expected FORWARD or IGNORE"),
            ));
        }
    }
    if let Some(d) = &route.delegate
        && d.name.as_deref().is_none_or(str::is_empty)
    {
        out.push(s.error(&format!("{f}.delegate.name"), "delegate name is required"));
    }
}
