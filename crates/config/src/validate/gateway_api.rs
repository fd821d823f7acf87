//! Checks of Gateway API resources alone: what the CRDs' schemas and validation rules reject
//! (`kubectl apply` would refuse the object), as errors that reject the resource.

use std::collections::BTreeSet;

use isthmus_api::Diagnostic;
use isthmus_api::gateway_api::gateway::{GatewaySpec, Listener};
use isthmus_api::gateway_api::route::{
    BackendRef, CorsFilter, GrpcRouteSpec, HeaderMatch, HeaderModifier, HttpBackendRef,
    HttpRouteMatch, HttpRouteRule, HttpRouteSpec, L4RouteSpec, ParentReference, PathModifier,
    RequestRedirect, RouteFilter,
};
use isthmus_api::gateway_api::{GatewayClassSpec, ReferenceGrantSpec};

use crate::diag::Subject;
use crate::hosts::check_dns_name;
use crate::matching::full_match_regex;

const PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "TLS", "TCP", "UDP"];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
const REDIRECT_CODES: &[u32] = &[301, 302, 303, 307, 308];

pub fn gateway_class(s: &Subject<'_>, spec: &GatewayClassSpec, out: &mut Vec<Diagnostic>) {
    if spec.controller_name.as_deref().is_none_or(str::is_empty) {
        out.push(s.error("spec.controllerName", "controllerName is required"));
    }
}

pub fn gateway(s: &Subject<'_>, spec: &GatewaySpec, out: &mut Vec<Diagnostic>) {
    if spec.gateway_class_name.as_deref().is_none_or(str::is_empty) {
        out.push(s.error("spec.gatewayClassName", "gatewayClassName is required"));
    }
    if spec.listeners.is_empty() || spec.listeners.len() > 64 {
        out.push(s.error("spec.listeners", "a Gateway needs 1 to 64 listeners"));
    }
    let mut names = BTreeSet::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let f = format!("spec.listeners[{i}]");
        match l.name.as_deref() {
            None | Some("") => out.push(s.error(&format!("{f}.name"), "listener name is required")),
            Some(n) if !names.insert(n) => out.push(s.error(
                &format!("{f}.name"),
                format!("listener name {n:?} is used twice"),
            )),
            Some(_) => {}
        }
        listener(s, &f, l, out);
    }
}

fn listener(s: &Subject<'_>, f: &str, l: &Listener, out: &mut Vec<Diagnostic>) {
    match l.port {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => out.push(s.error(&format!("{f}.port"), format!("port {p} is not in 1..65535"))),
        None => out.push(s.error(&format!("{f}.port"), "port is required")),
    }
    match l.protocol.as_deref() {
        None | Some("") => out.push(s.error(&format!("{f}.protocol"), "protocol is required")),
        // Other names must be domain-prefixed (implementation-specific protocols).
        Some(p) if !PROTOCOLS.contains(&p) && !p.contains('/') => out.push(s.error(
            &format!("{f}.protocol"),
            format!(
                "unknown protocol {p:?}; expected one of {} or a domain-prefixed name",
                PROTOCOLS.join(", ")
            ),
        )),
        Some(_) => {}
    }
    if let Some(h) = &l.hostname {
        hostname(s, &format!("{f}.hostname"), h, out);
    }
    if let Some(tls) = &l.tls {
        if let Some(m) = tls
            .mode
            .as_deref()
            .filter(|m| !matches!(*m, "Terminate" | "Passthrough"))
        {
            out.push(s.error(
                &format!("{f}.tls.mode"),
                format!("unknown TLS mode {m:?} (Terminate or Passthrough)"),
            ));
        }
        if tls.certificate_refs.len() > 64 {
            out.push(s.error(
                &format!("{f}.tls.certificateRefs"),
                "at most 64 certificateRefs",
            ));
        }
    }
    if let Some(ns) = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        let af = format!("{f}.allowedRoutes.namespaces");
        match ns.from.as_deref() {
            None | Some("Same" | "All" | "None") => {}
            Some("Selector") if ns.selector.is_none() => {
                out.push(s.error(&format!("{af}.selector"), "from: Selector needs a selector"))
            }
            Some("Selector") => {}
            Some(other) => out.push(s.error(
                &format!("{af}.from"),
                format!("unknown value {other:?} (Same, All or Selector)"),
            )),
        }
    }
}

/// A route or listener hostname: a DNS name, optionally with a `*.` first label; no IP.
fn hostname(s: &Subject<'_>, f: &str, h: &str, out: &mut Vec<Diagnostic>) {
    if h.parse::<std::net::IpAddr>().is_ok() {
        out.push(s.error(
            f,
            format!("hostname {h:?} is an IP address; a DNS name is required"),
        ));
    } else if h == "*" {
        out.push(s.error(
            f,
            "hostname \"*\" is not allowed; leave the hostname out to match every host",
        ));
    } else if let Err(e) = check_dns_name(h) {
        out.push(s.error(f, e));
    }
}

fn parent_refs(s: &Subject<'_>, refs: &[ParentReference], out: &mut Vec<Diagnostic>) {
    if refs.len() > 32 {
        out.push(s.error("spec.parentRefs", "at most 32 parentRefs"));
    }
    for (i, p) in refs.iter().enumerate() {
        if p.name.as_deref().is_none_or(str::is_empty) {
            out.push(s.error(&format!("spec.parentRefs[{i}].name"), "name is required"));
        }
    }
}

fn hostnames(s: &Subject<'_>, list: &[String], out: &mut Vec<Diagnostic>) {
    for (i, h) in list.iter().enumerate() {
        hostname(s, &format!("spec.hostnames[{i}]"), h, out);
    }
}

pub fn http_route(s: &Subject<'_>, spec: &HttpRouteSpec, out: &mut Vec<Diagnostic>) {
    parent_refs(s, &spec.parent_refs, out);
    hostnames(s, &spec.hostnames, out);
    for (i, rule) in spec.rules.iter().enumerate() {
        http_rule(s, &format!("spec.rules[{i}]"), rule, out);
    }
}

fn http_rule(s: &Subject<'_>, f: &str, rule: &HttpRouteRule, out: &mut Vec<Diagnostic>) {
    for (j, m) in rule.matches.iter().enumerate() {
        http_match(s, &format!("{f}.matches[{j}]"), m, out);
    }
    filters(s, &format!("{f}.filters"), &rule.filters, false, out);
    let types: Vec<&str> = rule
        .filters
        .iter()
        .filter_map(|x| x.filter_type.as_deref())
        .collect();
    let redirect = types.contains(&"RequestRedirect");
    if redirect && types.contains(&"URLRewrite") {
        out.push(s.error(
            &format!("{f}.filters"),
            "RequestRedirect and URLRewrite cannot both be used",
        ));
    }
    if redirect && !rule.backend_refs.is_empty() {
        out.push(s.error(
            &format!("{f}.backendRefs"),
            "a rule with a RequestRedirect filter cannot have backendRefs",
        ));
    }
    prefix_match_needed(s, f, rule, out);
    for (k, b) in rule.backend_refs.iter().enumerate() {
        http_backend(s, &format!("{f}.backendRefs[{k}]"), b, false, out);
    }
    if let Some(t) = &rule.timeouts
        && let (Some(req), Some(be)) = (t.request, t.backend_request)
        && !req.0.is_zero()
        && (be.0 > req.0 || be.0.is_zero())
    {
        out.push(s.error(
            &format!("{f}.timeouts.backendRequest"),
            format!("backendRequest ({be}) must not be longer than request ({req})"),
        ));
    }
    if let Some(r) = &rule.retry {
        for (i, c) in r.codes.iter().enumerate() {
            if !(400..=599).contains(c) {
                out.push(s.error(
                    &format!("{f}.retry.codes[{i}]"),
                    format!("{c} is not a status code in 400..599"),
                ));
            }
        }
        if r.attempts.is_some_and(|a| a < 0) {
            out.push(s.error(
                &format!("{f}.retry.attempts"),
                "attempts must not be negative",
            ));
        }
    }
}

/// `ReplacePrefixMatch` (in a redirect or rewrite) needs exactly one `PathPrefix` match.
fn prefix_match_needed(s: &Subject<'_>, f: &str, rule: &HttpRouteRule, out: &mut Vec<Diagnostic>) {
    let uses = rule.filters.iter().any(|x| {
        let path = x
            .request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
            .or(x.url_rewrite.as_ref().and_then(|r| r.path.as_ref()));
        path.and_then(|p| p.modifier_type.as_deref()) == Some("ReplacePrefixMatch")
    });
    if !uses {
        return;
    }
    let kind = |m: &HttpRouteMatch| {
        m.path
            .as_ref()
            .and_then(|p| p.match_type.as_deref())
            .unwrap_or("PathPrefix")
            .to_string()
    };
    let ok = match rule.matches.as_slice() {
        [] => true,
        [m] => kind(m) == "PathPrefix",
        _ => false,
    };
    if !ok {
        out.push(s.error(
            &format!("{f}.matches"),
            "a ReplacePrefixMatch path modifier needs exactly one PathPrefix match",
        ));
    }
}

fn http_match(s: &Subject<'_>, f: &str, m: &HttpRouteMatch, out: &mut Vec<Diagnostic>) {
    if let Some(p) = &m.path {
        let pf = format!("{f}.path");
        let kind = p.match_type.as_deref().unwrap_or("PathPrefix");
        let value = p.value.as_deref().unwrap_or("/");
        match kind {
            "Exact" | "PathPrefix" => path_value(s, &format!("{pf}.value"), value, out),
            "RegularExpression" => regex(s, &format!("{pf}.value"), value, out),
            other => out.push(s.error(
                &format!("{pf}.type"),
                format!(
                    "unknown path match type {other:?} (Exact, PathPrefix or RegularExpression)"
                ),
            )),
        }
    }
    header_matches(s, &format!("{f}.headers"), &m.headers, true, out);
    header_matches(s, &format!("{f}.queryParams"), &m.query_params, false, out);
    if let Some(method) = &m.method
        && !METHODS.contains(&method.as_str())
    {
        out.push(s.error(
            &format!("{f}.method"),
            format!(
                "unknown method {method:?}; expected one of {}",
                METHODS.join(", ")
            ),
        ));
    }
}

/// An Exact or PathPrefix value: an absolute path without `//` or dot segments.
fn path_value(s: &Subject<'_>, f: &str, value: &str, out: &mut Vec<Diagnostic>) {
    let dot_segment = value.split('/').any(|seg| seg == "." || seg == "..");
    if !value.starts_with('/') {
        out.push(s.error(f, format!("path {value:?} must start with /")));
    } else if value.contains("//") || dot_segment {
        out.push(s.error(
            f,
            format!("path {value:?} must not contain // or . and .. segments"),
        ));
    } else if value.contains(['?', '#']) {
        out.push(s.error(
            f,
            format!("path {value:?} must not contain a query or fragment"),
        ));
    }
}

fn regex(s: &Subject<'_>, f: &str, pattern: &str, out: &mut Vec<Diagnostic>) {
    if let Err(e) = full_match_regex(pattern) {
        let msg = e.to_string();
        let msg = msg.lines().last().unwrap_or(&msg).trim().to_string();
        out.push(s.error(f, format!("invalid regex {pattern:?}: {msg}")));
    }
}

fn header_matches(
    s: &Subject<'_>,
    f: &str,
    list: &[HeaderMatch],
    header: bool,
    out: &mut Vec<Diagnostic>,
) {
    for (i, h) in list.iter().enumerate() {
        let hf = format!("{f}[{i}]");
        match h.name.as_deref() {
            None | Some("") => out.push(s.error(&format!("{hf}.name"), "name is required")),
            Some(n) if header && http::HeaderName::from_bytes(n.as_bytes()).is_err() => {
                out.push(s.error(
                    &format!("{hf}.name"),
                    format!("{n:?} is not a valid header name"),
                ))
            }
            Some(_) => {}
        }
        let value = h.value.as_deref().unwrap_or("");
        match h.match_type.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            "RegularExpression" => regex(s, &format!("{hf}.value"), value, out),
            other => out.push(s.error(
                &format!("{hf}.type"),
                format!("unknown match type {other:?} (Exact or RegularExpression)"),
            )),
        }
    }
}

/// The filter types each route kind allows (GRPCRoute has fewer).
fn allowed_filter(kind: &str, grpc: bool) -> bool {
    const GRPC: &[&str] = &[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "ExtensionRef",
    ];
    const HTTP: &[&str] = &[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "CORS",
        "ExtensionRef",
        "ExternalAuth",
    ];
    if grpc {
        GRPC.contains(&kind)
    } else {
        HTTP.contains(&kind)
    }
}

fn filters(s: &Subject<'_>, f: &str, list: &[RouteFilter], grpc: bool, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for (i, x) in list.iter().enumerate() {
        let ff = format!("{f}[{i}]");
        let Some(kind) = x.filter_type.as_deref() else {
            out.push(s.error(&format!("{ff}.type"), "type is required"));
            continue;
        };
        if !allowed_filter(kind, grpc) {
            out.push(s.error(
                &format!("{ff}.type"),
                format!(
                    "filter type {kind:?} is not allowed in a {}",
                    if grpc { "GRPCRoute" } else { "HTTPRoute" }
                ),
            ));
            continue;
        }
        if !matches!(kind, "RequestMirror" | "ExtensionRef") && !seen.insert(kind) {
            out.push(s.error(
                &format!("{ff}.type"),
                format!("a {kind} filter may appear only once"),
            ));
        }
        filter_body(s, &ff, kind, x, out);
    }
}

/// The field named by `type` must be set (and checked).
fn filter_body(s: &Subject<'_>, ff: &str, kind: &str, x: &RouteFilter, out: &mut Vec<Diagnostic>) {
    let missing = |field: &str, out: &mut Vec<Diagnostic>| {
        out.push(s.error(ff, format!("type {kind} needs the field {field}")));
    };
    match kind {
        "RequestHeaderModifier" => match &x.request_header_modifier {
            Some(m) => header_modifier(s, &format!("{ff}.requestHeaderModifier"), m, out),
            None => missing("requestHeaderModifier", out),
        },
        "ResponseHeaderModifier" => match &x.response_header_modifier {
            Some(m) => header_modifier(s, &format!("{ff}.responseHeaderModifier"), m, out),
            None => missing("responseHeaderModifier", out),
        },
        "RequestRedirect" => match &x.request_redirect {
            Some(r) => redirect(s, &format!("{ff}.requestRedirect"), r, out),
            None => missing("requestRedirect", out),
        },
        "URLRewrite" => match &x.url_rewrite {
            Some(r) => {
                if let Some(h) = &r.hostname {
                    hostname(s, &format!("{ff}.urlRewrite.hostname"), h, out);
                }
                if let Some(p) = &r.path {
                    path_modifier(s, &format!("{ff}.urlRewrite.path"), p, out);
                }
            }
            None => missing("urlRewrite", out),
        },
        "RequestMirror" => match x.request_mirror.as_ref() {
            Some(m) => {
                let mf = format!("{ff}.requestMirror");
                match &m.backend_ref {
                    Some(b) => backend(s, &format!("{mf}.backendRef"), b, out),
                    None => {
                        out.push(s.error(&format!("{mf}.backendRef"), "backendRef is required"))
                    }
                }
                if m.percent.is_some() && m.fraction.is_some() {
                    out.push(s.error(&mf, "set percent or fraction, not both"));
                }
                if m.percent.is_some_and(|p| p > 100) {
                    out.push(s.error(&format!("{mf}.percent"), "percent must be 0 to 100"));
                }
                if let Some(fr) = &m.fraction
                    && (fr.denominator == Some(0)
                        || fr.numerator.unwrap_or(0) > fr.denominator.unwrap_or(100))
                {
                    out.push(s.error(
                        &format!("{mf}.fraction"),
                        "the numerator must not exceed a denominator above 0",
                    ));
                }
            }
            None => missing("requestMirror", out),
        },
        "CORS" => match &x.cors {
            Some(c) => cors(s, &format!("{ff}.cors"), c, out),
            None => missing("cors", out),
        },
        "ExtensionRef" if x.extension_ref.is_none() => missing("extensionRef", out),
        _ => {}
    }
}

fn header_modifier(s: &Subject<'_>, f: &str, m: &HeaderModifier, out: &mut Vec<Diagnostic>) {
    let mut names = BTreeSet::new();
    let lists = [("set", &m.set), ("add", &m.add)];
    for (what, list) in lists {
        for (i, h) in list.iter().enumerate() {
            let hf = format!("{f}.{what}[{i}]");
            match h.name.as_deref() {
                None | Some("") => out.push(s.error(&format!("{hf}.name"), "name is required")),
                Some(n) if http::HeaderName::from_bytes(n.as_bytes()).is_err() => {
                    out.push(s.error(
                        &format!("{hf}.name"),
                        format!("{n:?} is not a valid header name"),
                    ))
                }
                Some(n) if !names.insert(n.to_ascii_lowercase()) => out.push(s.error(
                    &format!("{hf}.name"),
                    format!("header {n:?} is modified twice (one action per header name)"),
                )),
                Some(_) => {}
            }
            if h.value
                .as_deref()
                .is_some_and(|v| http::HeaderValue::from_str(v).is_err())
            {
                out.push(s.error(&format!("{hf}.value"), "not a valid header value"));
            }
        }
    }
    for (i, n) in m.remove.iter().enumerate() {
        if !names.insert(n.to_ascii_lowercase()) {
            out.push(s.error(
                &format!("{f}.remove[{i}]"),
                format!("header {n:?} is modified twice (one action per header name)"),
            ));
        }
    }
}

fn redirect(s: &Subject<'_>, f: &str, r: &RequestRedirect, out: &mut Vec<Diagnostic>) {
    if let Some(scheme) = r
        .scheme
        .as_deref()
        .filter(|x| !matches!(*x, "http" | "https"))
    {
        out.push(s.error(
            &format!("{f}.scheme"),
            format!("scheme {scheme:?} must be http or https"),
        ));
    }
    if let Some(h) = &r.hostname {
        hostname(s, &format!("{f}.hostname"), h, out);
    }
    if let Some(c) = r.status_code.filter(|c| !REDIRECT_CODES.contains(c)) {
        out.push(s.error(
            &format!("{f}.statusCode"),
            format!("status {c} is not one of 301, 302, 303, 307, 308"),
        ));
    }
    if let Some(p) = r.port.filter(|p| !(1..=65535).contains(p)) {
        out.push(s.error(&format!("{f}.port"), format!("port {p} is not in 1..65535")));
    }
    if let Some(p) = &r.path {
        path_modifier(s, &format!("{f}.path"), p, out);
    }
}

fn path_modifier(s: &Subject<'_>, f: &str, p: &PathModifier, out: &mut Vec<Diagnostic>) {
    match p.modifier_type.as_deref() {
        Some("ReplaceFullPath") if p.replace_full_path.is_none() => {
            out.push(s.error(f, "type ReplaceFullPath needs replaceFullPath"))
        }
        Some("ReplacePrefixMatch") if p.replace_prefix_match.is_none() => {
            out.push(s.error(f, "type ReplacePrefixMatch needs replacePrefixMatch"))
        }
        Some("ReplaceFullPath" | "ReplacePrefixMatch") => {}
        other => out.push(s.error(
            &format!("{f}.type"),
            format!(
                "unknown path modifier {:?} (ReplaceFullPath or ReplacePrefixMatch)",
                other.unwrap_or("")
            ),
        )),
    }
    for (name, v) in [
        ("replaceFullPath", &p.replace_full_path),
        ("replacePrefixMatch", &p.replace_prefix_match),
    ] {
        if let Some(v) = v
            .as_deref()
            .filter(|v| !v.is_empty() && !v.starts_with('/'))
        {
            out.push(s.error(
                &format!("{f}.{name}"),
                format!("path {v:?} must start with /"),
            ));
        }
    }
}

fn cors(s: &Subject<'_>, f: &str, c: &CorsFilter, out: &mut Vec<Diagnostic>) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let ok = o == "*"
            || o.split_once("://")
                .is_some_and(|(scheme, host)| !scheme.is_empty() && !host.is_empty());
        if !ok {
            out.push(s.error(
                &format!("{f}.allowOrigins[{i}]"),
                format!("origin {o:?} must be * or scheme://host[:port]"),
            ));
        }
    }
    if c.max_age == Some(0) {
        out.push(s.error(&format!("{f}.maxAge"), "maxAge must be at least 1"));
    }
}

fn http_backend(
    s: &Subject<'_>,
    f: &str,
    b: &HttpBackendRef,
    grpc: bool,
    out: &mut Vec<Diagnostic>,
) {
    let plain = BackendRef {
        group: b.group.clone(),
        kind: b.kind.clone(),
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        port: b.port,
        weight: b.weight,
    };
    backend(s, f, &plain, out);
    filters(s, &format!("{f}.filters"), &b.filters, grpc, out);
}

fn backend(s: &Subject<'_>, f: &str, b: &BackendRef, out: &mut Vec<Diagnostic>) {
    if b.name.as_deref().is_none_or(str::is_empty) {
        out.push(s.error(&format!("{f}.name"), "name is required"));
    }
    let service = b.group.as_deref().unwrap_or("").is_empty()
        && b.kind.as_deref().unwrap_or("Service") == "Service";
    if service && b.port.is_none() {
        out.push(s.error(&format!("{f}.port"), "a Service backend needs a port"));
    }
    if let Some(p) = b.port.filter(|p| !(1..=65535).contains(p)) {
        out.push(s.error(&format!("{f}.port"), format!("port {p} is not in 1..65535")));
    }
    if let Some(w) = b.weight.filter(|w| !(0..=1_000_000).contains(w)) {
        out.push(s.error(
            &format!("{f}.weight"),
            format!("weight {w} is not in 0..1000000"),
        ));
    }
}

pub fn grpc_route(s: &Subject<'_>, spec: &GrpcRouteSpec, out: &mut Vec<Diagnostic>) {
    parent_refs(s, &spec.parent_refs, out);
    hostnames(s, &spec.hostnames, out);
    for (i, rule) in spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(method) = &m.method {
                grpc_method(s, &format!("{mf}.method"), method, out);
            }
            header_matches(s, &format!("{mf}.headers"), &m.headers, true, out);
        }
        filters(s, &format!("{f}.filters"), &rule.filters, true, out);
        for (k, b) in rule.backend_refs.iter().enumerate() {
            http_backend(s, &format!("{f}.backendRefs[{k}]"), b, true, out);
        }
    }
}

fn grpc_method(
    s: &Subject<'_>,
    f: &str,
    m: &isthmus_api::gateway_api::route::GrpcMethodMatch,
    out: &mut Vec<Diagnostic>,
) {
    let service = m.service.as_deref().filter(|x| !x.is_empty());
    let method = m.method.as_deref().filter(|x| !x.is_empty());
    if service.is_none() && method.is_none() {
        out.push(s.error(f, "one or both of service and method must be set"));
    }
    match m.match_type.as_deref().unwrap_or("Exact") {
        "Exact" => {
            let ok = |x: &str, dots: bool| {
                x.split('.').all(|part| {
                    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                }) && (dots || !x.contains('.'))
            };
            if service.is_some_and(|x| !ok(x, true)) {
                out.push(s.error(
                    &format!("{f}.service"),
                    "not a gRPC service name (such as pkg.Service)",
                ));
            }
            if method.is_some_and(|x| !ok(x, false)) {
                out.push(s.error(&format!("{f}.method"), "not a gRPC method name"));
            }
        }
        "RegularExpression" => {
            for (name, v) in [("service", service), ("method", method)] {
                if let Some(v) = v {
                    regex(s, &format!("{f}.{name}"), v, out);
                }
            }
        }
        other => out.push(s.error(
            &format!("{f}.type"),
            format!("unknown match type {other:?} (Exact or RegularExpression)"),
        )),
    }
}

/// TLSRoute (`hostnames` are SNI names) and TCPRoute (which has none).
pub fn l4_route(s: &Subject<'_>, spec: &L4RouteSpec, tls: bool, out: &mut Vec<Diagnostic>) {
    parent_refs(s, &spec.parent_refs, out);
    if tls {
        hostnames(s, &spec.hostnames, out);
    } else if !spec.hostnames.is_empty() {
        out.push(s.error("spec.hostnames", "a TCPRoute has no hostnames"));
    }
    if spec.rules.is_empty() {
        out.push(s.error("spec.rules", "at least one rule is required"));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        for (k, b) in rule.backend_refs.iter().enumerate() {
            backend(s, &format!("spec.rules[{i}].backendRefs[{k}]"), b, out);
        }
    }
}

pub fn reference_grant(s: &Subject<'_>, spec: &ReferenceGrantSpec, out: &mut Vec<Diagnostic>) {
    if spec.from.is_empty() {
        out.push(s.error("spec.from", "at least one from entry is required"));
    }
    if spec.to.is_empty() {
        out.push(s.error("spec.to", "at least one to entry is required"));
    }
    for (i, from) in spec.from.iter().enumerate() {
        for (name, v) in [
            ("kind", &from.kind),
            ("namespace", &from.namespace),
            ("group", &from.group),
        ] {
            if v.is_none() {
                out.push(s.error(
                    &format!("spec.from[{i}].{name}"),
                    format!("{name} is required"),
                ));
            }
        }
    }
    for (i, to) in spec.to.iter().enumerate() {
        for (name, v) in [("kind", &to.kind), ("group", &to.group)] {
            if v.is_none() {
                out.push(s.error(
                    &format!("spec.to[{i}].{name}"),
                    format!("{name} is required"),
                ));
            }
        }
    }
}
