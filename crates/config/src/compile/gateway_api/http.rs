//! HTTPRoute and GRPCRoute rules compiled into routes, each with its place in the
//! specification's precedence order.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use isthmus_api::gateway_api::route::{
    GrpcRouteMatch, GrpcRouteSpec, HeaderMatch, HttpBackendRef, HttpRouteMatch, HttpRouteRetry,
    HttpRouteSpec, HttpRouteTimeouts,
};
use isthmus_api::{Diagnostic, Object, Resource};

use super::Context;
use super::backends::{self, Target};
use super::filters::{self, Filters, PathMatch};
use crate::actions::{DirectResponse, RetryPolicy, retry_on};
use crate::compile::services::Registry;
use crate::diag::subject;
use crate::matching::{RequestMatch, StrMatcher, full_match_regex};
use crate::snapshot::{ActionKind, Forward, Route, RouteAction, Source, WeightedDestination};

/// Where a route goes in a virtual host: more specific matches first (for HTTPRoute: exact
/// path, then longer path, with Istio's order Exact > PathPrefix > RegularExpression; then a
/// method match, more header matches, more query parameter matches; for GRPCRoute: longer
/// service, longer method, more header matches), then the older route, then `namespace/name`,
/// then rule and match order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    specificity: Reverse<[usize; 5]>,
    created: Created,
    name: String,
    rule: usize,
    matched: usize,
}

/// When a route was created: its `creationTimestamp` (RFC 3339 strings sort in time order);
/// without one, its place among the loaded resources stands in for it (file order, as
/// `kubectl apply -f` would have created them), so that equal timestamps, and only those,
/// fall through to the name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Created {
    timestamp: String,
    order: usize,
}

impl Created {
    pub fn of(r: &Resource, order: usize) -> Self {
        match r
            .meta()
            .creation_timestamp
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            Some(t) => Created {
                timestamp: t.to_string(),
                order: 0,
            },
            None => Created {
                timestamp: String::new(),
                order,
            },
        }
    }
}

/// A compiled route with its precedence.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub precedence: Precedence,
    pub route: Route,
}

/// The status a rule answers when it has no usable backend: 500 for HTTPRoute; gRPC's
/// UNAVAILABLE (HTTP 503) for GRPCRoute, as the specification says.
fn no_backend_status(grpc: bool) -> u16 {
    if grpc { 503 } else { 500 }
}

/// One rule of either kind, as the compiler needs it.
struct Rule<'a> {
    field: String,
    name: Option<&'a str>,
    filters: Filters<'a>,
    backends: &'a [HttpBackendRef],
    timeouts: Option<&'a HttpRouteTimeouts>,
    retry: Option<&'a HttpRouteRetry>,
    grpc: bool,
}

/// A match of a rule, compiled.
struct Match {
    field: String,
    matcher: RequestMatch,
    path: PathMatch,
    specificity: [usize; 5],
}

/// Everything one route's rules share.
struct RouteScope<'a, 'r> {
    ctx: &'a Context<'a>,
    resource: &'r Resource,
    created: Created,
    name: String,
}

/// The compiled match blocks of a rule at `field`; a rule without any matches everything
/// (one default match block), as the specification says.
fn rule_matches<M: Default>(
    field: &str,
    matches: &[M],
    compile: impl Fn(&str, &M) -> Result<Match, String>,
) -> Vec<Result<Match, String>> {
    if matches.is_empty() {
        return vec![compile(field, &M::default())];
    }
    matches
        .iter()
        .enumerate()
        .map(|(j, m)| compile(&format!("{field}.matches[{j}]"), m))
        .collect()
}

impl<'a, 'r> RouteScope<'a, 'r> {
    fn new(
        ctx: &'a Context<'a>,
        resource: &'r Resource,
        namespace: &str,
        name: &str,
        created: usize,
    ) -> Self {
        RouteScope {
            ctx,
            resource,
            created: Created::of(resource, created),
            name: format!("{namespace}/{name}"),
        }
    }
}

pub fn http_route(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    r: &Resource,
    o: &Object<HttpRouteSpec>,
    created: usize,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Ranked> {
    let scope = RouteScope::new(ctx, r, &o.namespace, &o.name, created);
    let mut out = Vec::new();
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let matches = rule_matches(&field, &rule.matches, http_match);
        let compiled = Rule {
            filters: filters::compile(
                ctx,
                registry,
                r,
                &format!("{field}.filters"),
                &rule.filters,
                diags,
            ),
            field,
            name: rule.name.as_deref(),
            backends: &rule.backend_refs,
            timeouts: rule.timeouts.as_ref(),
            retry: rule.retry.as_ref(),
            grpc: false,
        };
        out.extend(rule_routes(&scope, registry, i, &compiled, matches, diags));
    }
    out
}

pub fn grpc_route(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    r: &Resource,
    o: &Object<GrpcRouteSpec>,
    created: usize,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Ranked> {
    let scope = RouteScope::new(ctx, r, &o.namespace, &o.name, created);
    let mut out = Vec::new();
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let matches = rule_matches(&field, &rule.matches, grpc_match);
        let mut filters = filters::compile(
            ctx,
            registry,
            r,
            &format!("{field}.filters"),
            &rule.filters,
            diags,
        );
        // Validation reports these; a GRPCRoute cannot redirect, rewrite or answer CORS.
        filters.redirect = None;
        filters.rewrite = None;
        filters.cors = None;
        let compiled = Rule {
            filters,
            field,
            name: rule.name.as_deref(),
            backends: &rule.backend_refs,
            timeouts: None,
            retry: None,
            grpc: true,
        };
        out.extend(rule_routes(&scope, registry, i, &compiled, matches, diags));
    }
    out
}

/// The routes of one rule: one per match, sharing the rule's destinations.
fn rule_routes(
    scope: &RouteScope<'_, '_>,
    registry: &mut Registry<'_>,
    index: usize,
    rule: &Rule<'_>,
    matches: Vec<Result<Match, String>>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Ranked> {
    let s = subject(scope.resource);
    let mut base: Option<Forward> = None;
    let mut out = Vec::new();
    for (j, m) in matches.into_iter().enumerate() {
        let m = match m {
            Ok(m) => m,
            // Validation reported the bad regex; the match cannot be served.
            Err(_) => continue,
        };
        let kind = match action_kind(scope, registry, rule, &m, &mut base, diags) {
            Ok(kind) => kind,
            Err(why) => {
                diags.push(s.error(&m.field, format!("{why}; this match is not served")));
                continue;
            }
        };
        let action = RouteAction {
            kind,
            headers: rule.filters.headers.clone(),
            fault: None,
            cors: rule.filters.cors.clone(),
        };
        out.push(Ranked {
            precedence: Precedence {
                specificity: Reverse(m.specificity),
                created: scope.created.clone(),
                name: scope.name.clone(),
                rule: index,
                matched: j,
            },
            route: Route {
                name: rule.name.unwrap_or("").to_string(),
                virtual_service: scope.name.clone(),
                source: Arc::new(Source::of(scope.resource, &m.field)),
                matcher: m.matcher,
                action: Arc::new(action),
            },
        });
    }
    if let Some(what) = &rule.filters.unsupported {
        diags.push(s.warning(
            &format!("{}.filters", rule.field),
            format!("{what} is not supported by Isthmus; as the specification requires, the rule is not skipped but answers 500"),
        ));
    }
    out
}

/// What a match of the rule does: a 500 for an unsupported filter, a redirect, a 500 (or gRPC
/// UNAVAILABLE) without backends, or forwarding to the weighted backends.
fn action_kind(
    scope: &RouteScope<'_, '_>,
    registry: &mut Registry<'_>,
    rule: &Rule<'_>,
    m: &Match,
    base: &mut Option<Forward>,
    diags: &mut Vec<Diagnostic>,
) -> Result<ActionKind, String> {
    if rule.filters.unsupported.is_some() {
        return Ok(direct(500));
    }
    if let Some(r) = rule.filters.redirect {
        return filters::redirect(r, &m.path).map(ActionKind::Redirect);
    }
    let forward = match base {
        Some(f) => f.clone(),
        None => base.insert(forward(scope, registry, rule, diags)).clone(),
    };
    if forward.total_weight() == 0 {
        return Ok(direct(no_backend_status(rule.grpc)));
    }
    let mut f = forward;
    f.rewrite = filters::rewrite(
        rule.filters.rewrite,
        &m.path,
        rule.filters.authority.clone(),
    )?;
    backend_rewrites(rule, &m.path, &mut f)?;
    Ok(ActionKind::Forward(f))
}

/// Each backend's own URLRewrite, after this match (its `ReplacePrefixMatch` replaces the
/// matched prefix): a path rewrite and a host for that destination alone.
fn backend_rewrites(rule: &Rule<'_>, path: &PathMatch, f: &mut Forward) -> Result<(), String> {
    for (b, d) in rule.backends.iter().zip(f.destinations.iter_mut()) {
        let Some(rw) = filters::backend_rewrite(&b.filters) else {
            continue;
        };
        if let Some(r) = filters::rewrite(Some(rw), path, None)? {
            d.path = r.path;
            if r.authority.is_some() {
                d.authority = r.authority;
            }
        }
    }
    Ok(())
}

fn direct(status: u16) -> ActionKind {
    ActionKind::DirectResponse(DirectResponse {
        status,
        body: bytes::Bytes::new(),
        content_type: "text/plain",
    })
}

/// The weighted backends of a rule, with their timeouts, retries and mirrors. Invalid
/// backends keep their weight without a cluster, so their share answers the rule's status.
fn forward(
    scope: &RouteScope<'_, '_>,
    registry: &mut Registry<'_>,
    rule: &Rule<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Forward {
    let status = no_backend_status(rule.grpc);
    let consequence = format!("its share of requests answers {status}");
    let mut dests = Vec::new();
    for (k, b) in rule.backends.iter().enumerate() {
        let field = format!("{}.backendRefs[{k}]", rule.field);
        let target = Target {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: b.name.as_deref(),
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        let (cluster_name, cluster) = backends::resolve(
            scope.ctx,
            registry,
            scope.resource,
            &field,
            &target,
            &consequence,
            diags,
        );
        // URLRewrite is per match (`backend_rewrites`); other backend filters are reported as
        // fields not acted on (support.rs).
        let (headers, authority) = filters::backend(&b.filters);
        dests.push(WeightedDestination {
            cluster_name,
            cluster,
            weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
            headers,
            authority,
            path: None,
        });
    }
    let backend_timeout = rule
        .timeouts
        .and_then(|t| t.backend_request)
        .map(|d| d.0)
        .filter(|d| !d.is_zero());
    let timeout_ms = rule
        .timeouts
        .and_then(|t| t.request)
        .map(|d| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX))
        .filter(|ms| *ms > 0);
    let mut f = Forward::with(
        dests,
        None,
        timeout_ms,
        retry(rule.retry, backend_timeout),
        rule.filters.mirrors.clone(),
    );
    f.invalid_backend_status = Some(status);
    f
}

/// Istio's retry policy (its default when the rule has no `retry`), with the rule's attempts,
/// status codes and backoff, and `backendRequest` as the per-try timeout, as Istio translates
/// them. Connection failures are always retried.
fn retry(r: Option<&HttpRouteRetry>, per_try: Option<Duration>) -> RetryPolicy {
    let mut p = RetryPolicy {
        per_try_timeout: per_try,
        ..RetryPolicy::default()
    };
    let Some(r) = r else { return p };
    if let Some(a) = r.attempts {
        p.attempts = u32::try_from(a).unwrap_or(0);
    }
    p.status_codes = r
        .codes
        .iter()
        .filter_map(|c| u16::try_from(*c).ok())
        .collect();
    if !p.status_codes.is_empty() {
        p.on |= retry_on::RETRIABLE_STATUS_CODES;
    }
    if let Some(b) = r.backoff {
        p.backoff = b.0.max(Duration::from_millis(1));
    }
    p
}

/// Header matches; names are case-insensitive and only the first of equal names counts.
fn header_matchers(list: &[HeaderMatch], fold: bool) -> Result<Vec<(String, StrMatcher)>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for h in list {
        let Some(name) = h.name.as_deref() else {
            continue;
        };
        let key = if fold {
            name.to_ascii_lowercase()
        } else {
            name.to_string()
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        let value = h.value.clone().unwrap_or_default();
        let m = match h.match_type.as_deref().unwrap_or("Exact") {
            "RegularExpression" => {
                StrMatcher::Regex(full_match_regex(&value).map_err(|e| e.to_string())?)
            }
            _ => StrMatcher::Exact(value),
        };
        out.push((key, m));
    }
    Ok(out)
}

fn http_match(field: &str, m: &HttpRouteMatch) -> Result<Match, String> {
    let kind = m
        .path
        .as_ref()
        .and_then(|p| p.match_type.as_deref())
        .unwrap_or("PathPrefix");
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".into());
    let (uri, rank, len, path) = match kind {
        "Exact" => (
            StrMatcher::Exact(value.clone()),
            3,
            value.len(),
            PathMatch::Exact,
        ),
        "RegularExpression" => {
            let re = full_match_regex(&value).map_err(|e| e.to_string())?;
            (StrMatcher::Regex(re), 1, value.len(), PathMatch::Regex)
        }
        _ => {
            let len = value.trim_end_matches('/').len();
            (
                StrMatcher::PathPrefix(value.clone()),
                2,
                len,
                PathMatch::Prefix(value),
            )
        }
    };
    let headers = header_matchers(&m.headers, true)?;
    let query_params = header_matchers(&m.query_params, false)?;
    let specificity = [
        rank,
        len,
        usize::from(m.method.is_some()),
        headers.len(),
        query_params.len(),
    ];
    Ok(Match {
        field: field.to_string(),
        matcher: RequestMatch {
            uri: Some(uri),
            method: m.method.clone().map(StrMatcher::Exact),
            headers,
            query_params,
            ..RequestMatch::default()
        },
        path,
        specificity,
    })
}

/// A gRPC method match is a match on the path `/SERVICE/METHOD`: exact for both, a prefix for
/// the service alone, a regex otherwise.
fn grpc_match(field: &str, m: &GrpcRouteMatch) -> Result<Match, String> {
    let method = m.method.as_ref();
    let service = method
        .and_then(|x| x.service.as_deref())
        .filter(|s| !s.is_empty());
    let name = method
        .and_then(|x| x.method.as_deref())
        .filter(|s| !s.is_empty());
    let regex = method.and_then(|x| x.match_type.as_deref()) == Some("RegularExpression");
    let uri = match (service, name, regex) {
        (None, None, _) => None,
        (Some(s), Some(n), false) => Some(StrMatcher::Exact(format!("/{s}/{n}"))),
        (Some(s), None, false) => Some(StrMatcher::Prefix(format!("/{s}/"))),
        (s, n, regex) => {
            let part = |p: Option<&str>| match (p, regex) {
                (Some(p), true) => p.to_string(),
                (Some(p), false) => regex::escape(p),
                (None, _) => "[^/]+".to_string(),
            };
            let pattern = format!("/{}/{}", part(s), part(n));
            Some(StrMatcher::Regex(
                full_match_regex(&pattern).map_err(|e| e.to_string())?,
            ))
        }
    };
    let headers = header_matchers(&m.headers, true)?;
    let specificity = [
        service.map_or(0, str::len),
        name.map_or(0, str::len),
        headers.len(),
        0,
        0,
    ];
    Ok(Match {
        field: field.to_string(),
        matcher: RequestMatch {
            uri,
            headers,
            ..RequestMatch::default()
        },
        path: PathMatch::Regex,
        specificity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_api::gateway_api::route::{GrpcMethodMatch, HttpPathMatch};

    fn path(kind: &str, value: &str) -> HttpRouteMatch {
        HttpRouteMatch {
            path: Some(HttpPathMatch {
                match_type: Some(kind.into()),
                value: Some(value.into()),
            }),
            ..Default::default()
        }
    }

    fn header(name: &str) -> HeaderMatch {
        HeaderMatch {
            match_type: None,
            name: Some(name.into()),
            value: Some("x".into()),
        }
    }

    /// The specification's precedence, match against match (same route and rule otherwise).
    #[test]
    fn http_precedence() {
        let with_method = HttpRouteMatch {
            method: Some("GET".into()),
            ..path("PathPrefix", "/")
        };
        let with_headers = |n: usize| HttpRouteMatch {
            headers: (0..n).map(|i| header(&format!("h{i}"))).collect(),
            ..path("PathPrefix", "/")
        };
        let with_query = HttpRouteMatch {
            query_params: vec![header("q")],
            ..path("PathPrefix", "/")
        };
        // Each case: (more specific, less specific).
        let cases = [
            (path("Exact", "/a"), path("PathPrefix", "/a/b/c")),
            (path("PathPrefix", "/a/b"), path("PathPrefix", "/a")),
            (path("PathPrefix", "/a"), path("RegularExpression", "/a.*")),
            (with_method.clone(), with_headers(3)),
            (with_headers(2), with_headers(1)),
            (with_headers(1), with_query.clone()),
            (with_query, path("PathPrefix", "/")),
        ];
        for (a, b) in cases {
            let sa = http_match("f", &a).unwrap().specificity;
            let sb = http_match("f", &b).unwrap().specificity;
            assert!(Reverse(sa) < Reverse(sb), "{a:?} should precede {b:?}");
        }
        // A trailing slash does not make a prefix longer.
        assert_eq!(
            http_match("f", &path("PathPrefix", "/a/"))
                .unwrap()
                .specificity,
            http_match("f", &path("PathPrefix", "/a"))
                .unwrap()
                .specificity
        );
    }

    #[test]
    fn ties_go_to_the_older_route_then_the_name_then_rule_order() {
        let p = |order, name: &str, rule| Precedence {
            specificity: Reverse([2, 1, 0, 0, 0]),
            created: Created {
                timestamp: String::new(),
                order,
            },
            name: name.into(),
            rule,
            matched: 0,
        };
        let mut v = vec![
            p(1, "a/b", 0),
            p(0, "z/z", 1),
            p(0, "z/z", 0),
            p(0, "a/a", 5),
        ];
        v.sort();
        assert_eq!(
            v,
            vec![
                p(0, "a/a", 5),
                p(0, "z/z", 0),
                p(0, "z/z", 1),
                p(1, "a/b", 0)
            ]
        );
    }

    #[test]
    fn header_matches_fold_names_and_keep_the_first_duplicate() {
        let list = vec![
            HeaderMatch {
                match_type: None,
                name: Some("Version".into()),
                value: Some("one".into()),
            },
            HeaderMatch {
                match_type: None,
                name: Some("version".into()),
                value: Some("two".into()),
            },
        ];
        let got = header_matchers(&list, true).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "version");
        assert!(got[0].1.matches("one"));
    }

    #[test]
    fn grpc_method_matches_are_path_matches() {
        let m = |kind: Option<&str>, service: Option<&str>, method: Option<&str>| GrpcRouteMatch {
            method: Some(GrpcMethodMatch {
                match_type: kind.map(str::to_string),
                service: service.map(str::to_string),
                method: method.map(str::to_string),
            }),
            headers: vec![],
        };
        let cases = [
            (m(None, Some("a.S"), Some("Get")), "/a.S/Get", true),
            (m(None, Some("a.S"), Some("Get")), "/a.S/Put", false),
            (m(None, Some("a.S"), None), "/a.S/Put", true),
            (m(None, Some("a.S"), None), "/a.Sx/Put", false),
            (m(None, None, Some("Get")), "/any.Svc/Get", true),
            (m(None, None, Some("Get")), "/any.Svc/GetMore", false),
            (
                m(Some("RegularExpression"), Some("a\\..*"), Some("G.t")),
                "/a.S/Get",
                true,
            ),
            (
                m(Some("RegularExpression"), Some("a\\..*"), Some("G.t")),
                "/b.S/Get",
                false,
            ),
            (GrpcRouteMatch::default(), "/x/y", true),
        ];
        for (gm, p, want) in cases {
            let got = grpc_match("f", &gm).unwrap();
            let ok = got.matcher.uri.as_ref().is_none_or(|u| u.matches(p));
            assert_eq!(ok, want, "{gm:?} on {p}");
        }
    }

    #[test]
    fn retries_follow_istio_with_the_rule_s_settings() {
        let d = retry(None, Some(Duration::from_millis(100)));
        assert_eq!(d.attempts, 2);
        assert_eq!(d.per_try_timeout, Some(Duration::from_millis(100)));
        let r = HttpRouteRetry {
            codes: vec![500, 502],
            attempts: Some(3),
            backoff: None,
        };
        let p = retry(Some(&r), None);
        assert_eq!(p.attempts, 3);
        assert!(p.retries_status(500, None));
        assert!(!p.retries_status(503, None));
        assert!(p.retries_on(retry_on::CONNECT_FAILURE));
    }
}
