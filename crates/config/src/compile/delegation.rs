//! VirtualService delegation: a root route with `delegate` is replaced by the delegate
//! VirtualService's routes, each merged with the root route as Istio merges them (matches
//! ANDed, the delegate's settings winning over the root's). One level only.

use isthmus_api::istio::virtual_service::{
    HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec,
};
use isthmus_api::{Diagnostic, Object, Resource};

use crate::diag::subject;

/// One route to compile, with where it came from (for diagnostics and host completion).
pub struct Expanded<'a> {
    /// Borrowed from the VirtualService unless delegation made a new route: configurations
    /// with many routes would otherwise copy every one of them here.
    pub route: std::borrow::Cow<'a, HttpRoute>,
    pub field: String,
    pub origin: &'a Resource,
    /// Namespace used to complete destination hosts: the namespace of the VirtualService
    /// that wrote the route.
    pub namespace: String,
    /// Whether `route.matches` are the blocks written at `field` (not combinations of the
    /// root's and the delegate's).
    pub own_matches: bool,
}

pub fn expand<'a>(
    root: &'a Resource,
    vs: &'a Object<VirtualServiceSpec>,
    all: &[&'a Resource],
    diags: &mut Vec<Diagnostic>,
) -> Vec<Expanded<'a>> {
    let mut out = Vec::new();
    for (i, route) in vs.spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        let Some(d) = &route.delegate else {
            out.push(Expanded {
                route: std::borrow::Cow::Borrowed(route),
                field,
                origin: root,
                namespace: vs.namespace.clone(),
                own_matches: true,
            });
            continue;
        };
        let name = d.name.as_deref().unwrap_or("");
        let ns = d.namespace.as_deref().unwrap_or(&vs.namespace);
        let Some((res, delegate)) = find(all, ns, name) else {
            diags.push(subject(root).warning(
                &format!("{field}.delegate"),
                format!(
                    "delegate VirtualService {ns}/{name} is not defined; this route is dropped"
                ),
            ));
            continue;
        };
        if !visible(delegate, &vs.namespace) {
            diags.push(subject(root).warning(
                &format!("{field}.delegate"),
                format!("delegate VirtualService {ns}/{name} is not exported to namespace {}; this route is dropped", vs.namespace),
            ));
            continue;
        }
        if !delegate.spec.hosts.is_empty() {
            diags.push(subject(res).error(
                "spec.hosts",
                format!(
                    "a delegate VirtualService must not have hosts (it is delegated to by {}/{})",
                    vs.namespace, vs.name
                ),
            ));
            continue;
        }
        for (j, child) in delegate.spec.http.iter().enumerate() {
            let child_field = format!("spec.http[{j}]");
            if child.delegate.is_some() {
                diags.push(subject(res).error(
                    &format!("{child_field}.delegate"),
                    "delegation is one level deep: a delegate VirtualService cannot delegate again; route dropped",
                ));
                continue;
            }
            match merge(route, child) {
                Some(merged) => out.push(Expanded {
                    route: std::borrow::Cow::Owned(merged),
                    field: child_field,
                    origin: res,
                    namespace: delegate.namespace.clone(),
                    own_matches: route.matches.is_empty(),
                }),
                None => diags.push(subject(res).warning(
                    &format!("{child_field}.match"),
                    format!(
                        "no match of this route falls within the match of the delegating route {}/{} {field}; route dropped",
                        vs.namespace, vs.name
                    ),
                )),
            }
        }
    }
    out
}

fn find<'a>(
    all: &[&'a Resource],
    ns: &str,
    name: &str,
) -> Option<(&'a Resource, &'a Object<VirtualServiceSpec>)> {
    all.iter().find_map(|r| match r {
        Resource::VirtualService(v) if v.namespace == ns && v.name == name => Some((*r, v)),
        _ => None,
    })
}

fn visible(delegate: &Object<VirtualServiceSpec>, root_ns: &str) -> bool {
    let e = &delegate.spec.export_to;
    e.is_empty()
        || e.iter()
            .any(|x| x == "*" || x == root_ns || (x == "." && delegate.namespace == root_ns))
}

/// The root route with the delegate route's matches ANDed in and its settings overriding.
/// `None` if no combination of matches is consistent.
fn merge(root: &HttpRoute, child: &HttpRoute) -> Option<HttpRoute> {
    let matches = match (root.matches.is_empty(), child.matches.is_empty()) {
        (true, _) => child.matches.clone(),
        (false, true) => root.matches.clone(),
        (false, false) => {
            let combined: Vec<HttpMatchRequest> = root
                .matches
                .iter()
                .flat_map(|r| child.matches.iter().filter_map(move |c| merge_match(r, c)))
                .collect();
            if combined.is_empty() {
                return None;
            }
            combined
        }
    };
    Some(HttpRoute {
        name: child.name.clone().or_else(|| root.name.clone()),
        matches,
        route: child.route.clone(),
        redirect: child.redirect.clone(),
        direct_response: child.direct_response.clone(),
        delegate: None,
        rewrite: child.rewrite.clone().or_else(|| root.rewrite.clone()),
        timeout: child.timeout.or(root.timeout),
        retries: child.retries.clone().or_else(|| root.retries.clone()),
        fault: child.fault.clone().or_else(|| root.fault.clone()),
        mirror: child.mirror.clone().or_else(|| root.mirror.clone()),
        mirrors: if child.mirrors.is_empty() {
            root.mirrors.clone()
        } else {
            child.mirrors.clone()
        },
        mirror_percent: child.mirror_percent.or(root.mirror_percent),
        mirror_percentage: child
            .mirror_percentage
            .clone()
            .or_else(|| root.mirror_percentage.clone()),
        cors_policy: child
            .cors_policy
            .clone()
            .or_else(|| root.cors_policy.clone()),
        headers: child.headers.clone().or_else(|| root.headers.clone()),
    })
}

/// A single-value condition: both may set it only if the child's is within the root's.
fn merge_single(
    root: &Option<StringMatch>,
    child: &Option<StringMatch>,
) -> Option<Option<StringMatch>> {
    match (root, child) {
        (None, c) => Some(c.clone()),
        (r, None) => Some(r.clone()),
        (Some(r), Some(c)) => {
            if r.regex.is_some() || c.regex.is_some() {
                return (r == c).then(|| Some(c.clone()));
            }
            let within = match (&r.exact, &r.prefix, &c.exact, &c.prefix) {
                (Some(re), _, Some(ce), _) => re == ce,
                (_, Some(rp), Some(ce), _) => ce.starts_with(rp.as_str()),
                (_, Some(rp), _, Some(cp)) => cp.starts_with(rp.as_str()),
                _ => false,
            };
            within.then(|| Some(c.clone()))
        }
    }
}

fn merge_map(
    root: &std::collections::BTreeMap<String, StringMatch>,
    child: &std::collections::BTreeMap<String, StringMatch>,
) -> Option<std::collections::BTreeMap<String, StringMatch>> {
    let mut out = root.clone();
    for (k, v) in child {
        match out.get(k) {
            Some(existing) if existing != v => return None,
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Some(out)
}

fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let port = match (root.port, child.port) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => b.or(a),
    };
    Some(HttpMatchRequest {
        name: child.name.clone().or_else(|| root.name.clone()),
        uri: merge_single(&root.uri, &child.uri)?,
        scheme: merge_single(&root.scheme, &child.scheme)?,
        method: merge_single(&root.method, &child.method)?,
        authority: merge_single(&root.authority, &child.authority)?,
        headers: merge_map(&root.headers, &child.headers)?,
        port,
        source_labels: root.source_labels.clone(),
        gateways: root.gateways.clone(),
        query_params: merge_map(&root.query_params, &child.query_params)?,
        ignore_uri_case: child.ignore_uri_case.or(root.ignore_uri_case),
        without_headers: merge_map(&root.without_headers, &child.without_headers)?,
        source_namespace: root.source_namespace.clone(),
        stat_prefix: child
            .stat_prefix
            .clone()
            .or_else(|| root.stat_prefix.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            prefix: Some(p.into()),
            ..Default::default()
        })
    }
    fn exact(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            exact: Some(p.into()),
            ..Default::default()
        })
    }
    fn regex(p: &str) -> Option<StringMatch> {
        Some(StringMatch {
            regex: Some(p.into()),
            ..Default::default()
        })
    }

    #[test]
    fn single_conditions_merge_only_within_the_root() {
        let cases = [
            (prefix("/api"), prefix("/api/v1"), Some(prefix("/api/v1"))),
            (prefix("/api"), exact("/api/x"), Some(exact("/api/x"))),
            (prefix("/api"), prefix("/web"), None),
            (exact("/a"), exact("/a"), Some(exact("/a"))),
            (exact("/a"), prefix("/a"), None),
            (regex("/a.*"), prefix("/a"), None),
            (None, prefix("/x"), Some(prefix("/x"))),
            (prefix("/x"), None, Some(prefix("/x"))),
        ];
        for (r, c, want) in cases {
            assert_eq!(merge_single(&r, &c), want, "{r:?} + {c:?}");
        }
    }
}
