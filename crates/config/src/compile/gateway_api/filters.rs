//! HTTPRoute and GRPCRoute filters compiled into route actions: header modifiers, redirects,
//! URL rewrites, mirrors and CORS. Redirects and rewrites depend on the path match they follow
//! (`ReplacePrefixMatch` replaces the matched prefix), so they are built per match.

use http::HeaderName;
use isthmus_api::gateway_api::route::{
    CorsFilter, HeaderModifier, PathModifier, RequestMirror, RequestRedirect, RouteFilter,
    UrlRewrite,
};
use isthmus_api::{Diagnostic, Resource};

use super::Context;
use super::backends::{self, Target};
use crate::actions::{
    Cors, HeaderEdits, HeaderOps, Mirror, PathRewrite, Redirect, RedirectPort, Template,
};
use crate::compile::services::Registry;
use crate::matching::{StrMatcher, full_match_regex};
use crate::snapshot::Rewrite;

/// The path match a redirect or rewrite follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact,
    Prefix(String),
    Regex,
}

/// The filters of a rule (or of one backend), compiled.
#[derive(Default)]
pub struct Filters<'a> {
    pub headers: HeaderEdits,
    /// A `Host` set by the RequestHeaderModifier: a host rewrite, as in Istio.
    pub authority: Option<String>,
    pub redirect: Option<&'a RequestRedirect>,
    pub rewrite: Option<&'a UrlRewrite>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    /// An `ExtensionRef` or `ExternalAuth` filter Isthmus cannot run: the specification
    /// forbids skipping it, so the rule answers 500.
    pub unsupported: Option<String>,
}

pub fn compile<'a>(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    route: &Resource,
    field: &str,
    filters: &'a [RouteFilter],
    diags: &mut Vec<Diagnostic>,
) -> Filters<'a> {
    let mut out = Filters::default();
    for (i, f) in filters.iter().enumerate() {
        let ff = format!("{field}[{i}]");
        match f.filter_type.as_deref().unwrap_or("") {
            "RequestHeaderModifier" => {
                if let Some(m) = &f.request_header_modifier {
                    let (ops, authority) = header_ops(m, true);
                    out.headers.request = ops;
                    out.authority = authority;
                }
            }
            "ResponseHeaderModifier" => {
                if let Some(m) = &f.response_header_modifier {
                    out.headers.response = header_ops(m, false).0;
                }
            }
            "RequestRedirect" => out.redirect = f.request_redirect.as_ref(),
            "URLRewrite" => out.rewrite = f.url_rewrite.as_ref(),
            "RequestMirror" => {
                if let Some(m) = &f.request_mirror {
                    out.mirrors
                        .push(mirror(ctx, registry, route, &ff, m, diags));
                }
            }
            "CORS" => out.cors = f.cors.as_ref().map(cors),
            other => {
                out.unsupported
                    .get_or_insert_with(|| format!("{ff}: a {other} filter"));
            }
        }
    }
    out
}

/// The header modifiers of one backend (its URLRewrite is [`backend_rewrite`]; other filters
/// are left out).
pub fn backend(filters: &[RouteFilter]) -> (HeaderEdits, Option<String>) {
    let mut edits = HeaderEdits::default();
    let mut authority = None;
    for f in filters {
        match (f.filter_type.as_deref().unwrap_or(""), f) {
            (
                "RequestHeaderModifier",
                RouteFilter {
                    request_header_modifier: Some(m),
                    ..
                },
            ) => (edits.request, authority) = header_ops(m, true),
            (
                "ResponseHeaderModifier",
                RouteFilter {
                    response_header_modifier: Some(m),
                    ..
                },
            ) => edits.response = header_ops(m, false).0,
            _ => {}
        }
    }
    (edits, authority)
}

/// The URLRewrite filter of a backend, if it has one.
pub fn backend_rewrite(filters: &[RouteFilter]) -> Option<&UrlRewrite> {
    filters
        .iter()
        .filter(|f| f.filter_type.as_deref() == Some("URLRewrite"))
        .find_map(|f| f.url_rewrite.as_ref())
}

/// Header edits; names are case-insensitive and values literal. A request `Host` set (or
/// added) becomes a host rewrite, as Istio translates it.
fn header_ops(m: &HeaderModifier, request: bool) -> (HeaderOps, Option<String>) {
    let mut authority = None;
    let mut named = |list: &[isthmus_api::gateway_api::route::HttpHeader]| {
        let mut out = Vec::new();
        for h in list {
            let (Some(name), Some(value)) = (h.name.as_deref(), h.value.as_deref()) else {
                continue;
            };
            if request && name.eq_ignore_ascii_case("host") {
                authority = Some(value.to_string());
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                out.push((n, Template::literal(value)));
            }
        }
        out
    };
    let add = named(&m.add);
    let set = named(&m.set);
    let ops = HeaderOps {
        remove: m
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
            .collect(),
        set,
        add,
    };
    (ops, authority)
}

fn mirror(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    route: &Resource,
    field: &str,
    m: &RequestMirror,
    diags: &mut Vec<Diagnostic>,
) -> Mirror {
    let b = m.backend_ref.clone().unwrap_or_default();
    let target = Target {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: b.name.as_deref(),
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    let (cluster_name, cluster) = backends::resolve(
        ctx,
        registry,
        route,
        &format!("{field}.requestMirror.backendRef"),
        &target,
        "nothing is mirrored",
        diags,
    );
    let percent = match (&m.fraction, m.percent) {
        (Some(f), _) => {
            let den = f.denominator.unwrap_or(100).max(1);
            f64::from(f.numerator.unwrap_or(0)) * 100.0 / f64::from(den)
        }
        (None, Some(p)) => f64::from(p),
        (None, None) => 100.0,
    };
    Mirror {
        cluster_name,
        cluster,
        percent: percent.clamp(0.0, 100.0),
    }
}

/// The Gateway API's CORS filter. Origins are `scheme://host[:port]` with `*` matching any
/// characters (to the left of a host, any number of labels); `*` alone allows every origin,
/// and the origin is always echoed rather than `*` (what the specification requires with
/// credentials, and allowed without). `maxAge` defaults to 5 seconds.
fn cors(c: &CorsFilter) -> Cors {
    let join = |v: &[String]| (!v.is_empty()).then(|| v.join(", "));
    let allow_origins = c
        .allow_origins
        .iter()
        .filter_map(|o| origin_matcher(o))
        .collect();
    Cors {
        allow_origins,
        allow_methods: join(&c.allow_methods),
        allow_headers: join(&c.allow_headers),
        expose_headers: join(&c.expose_headers),
        max_age: Some(c.max_age.unwrap_or(5).to_string()),
        allow_credentials: c.allow_credentials.filter(|c| *c),
        forward_unmatched_preflights: true,
        expose_on_preflight: true,
    }
}

fn origin_matcher(origin: &str) -> Option<StrMatcher> {
    if origin == "*" {
        return Some(StrMatcher::Present);
    }
    if !origin.contains('*') {
        return Some(StrMatcher::Exact(origin.to_string()));
    }
    let pattern = origin
        .split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*");
    full_match_regex(&pattern).ok().map(StrMatcher::Regex)
}

/// The well-known port of a scheme.
fn scheme_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A RequestRedirect after `path`: the status defaults to 302; without a port, a scheme's
/// well-known port or else the listener's port is used, and the request's own port never
/// carries over (the specification's port rules).
pub fn redirect(r: &RequestRedirect, path: &PathMatch) -> Result<Redirect, String> {
    let port = match (
        r.port.and_then(|p| u16::try_from(p).ok()),
        r.scheme.as_deref(),
    ) {
        (Some(p), _) => RedirectPort::Explicit(p),
        (None, Some(s)) => scheme_port(s).map_or(RedirectPort::RequestPort, RedirectPort::Explicit),
        (None, None) => RedirectPort::RequestPort,
    };
    Ok(Redirect {
        code: r
            .status_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(302),
        scheme: r.scheme.clone(),
        authority: r.hostname.clone(),
        port,
        path: r.path.as_ref().map(|m| path_rewrite(m, path)).transpose()?,
        drop_request_port: true,
    })
}

/// A URLRewrite after `path`.
pub fn rewrite(
    r: Option<&UrlRewrite>,
    path: &PathMatch,
    header_authority: Option<String>,
) -> Result<Option<Rewrite>, String> {
    let Some(r) = r else {
        return Ok(header_authority.map(|a| Rewrite {
            path: None,
            authority: Some(a),
        }));
    };
    Ok(Some(Rewrite {
        path: r.path.as_ref().map(|m| path_rewrite(m, path)).transpose()?,
        authority: r.hostname.clone().or(header_authority),
    }))
}

/// `ReplaceFullPath`, or `ReplacePrefixMatch` of the matched prefix (which needs a
/// `PathPrefix` match).
fn path_rewrite(m: &PathModifier, path: &PathMatch) -> Result<PathRewrite, String> {
    match m.modifier_type.as_deref() {
        Some("ReplaceFullPath") => Ok(PathRewrite::Full(
            m.replace_full_path.clone().unwrap_or_else(|| "/".into()),
        )),
        Some("ReplacePrefixMatch") => match path {
            PathMatch::Prefix(prefix) => Ok(PathRewrite::SegmentPrefix {
                matched: prefix.clone(),
                replacement: m.replace_prefix_match.clone().unwrap_or_default(),
            }),
            _ => Err("ReplacePrefixMatch needs a PathPrefix match".into()),
        },
        other => Err(format!(
            "unknown path modifier type {:?}",
            other.unwrap_or("")
        )),
    }
}
