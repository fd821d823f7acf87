//! Kubernetes Ingress (`networking.k8s.io/v1`) compiled as Istio translates it: one plaintext
//! server on port 80 for every host, one HTTPS server on port 443 per `tls` entry (SIMPLE,
//! the certificate from `secretName`), and per host the paths of every Ingress, longest
//! first with Exact before Prefix on equal length. `Prefix` matches whole path segments;
//! `ImplementationSpecific` keeps Istio's legacy reading (`/foo/*` and `foo.*` are prefixes,
//! an empty path matches everything, anything else is exact). Backends are Services, looked
//! up as `NAME.NAMESPACE.svc.DOMAIN` in the service registry; one that is not there answers
//! 503, as in Istio.

use std::collections::BTreeMap;
use std::sync::Arc;

use isthmus_api::k8s::{IngressBackend, IngressSpec};
use isthmus_api::{Diagnostic, Object, Resource};

use super::secrets::{SecretError, Secrets};
use super::services::{Registry, Unresolved};
use crate::diag::subject;
use crate::hosts::{ServerHost, intersect};
use crate::instance::{INGRESS_CONTROLLER, Instance};
use crate::matching::{RequestMatch, StrMatcher};
use crate::snapshot::{
    ActionKind, Forward, Listener, ListenerProtocol, Route, RouteAction, ServerInfo, Source,
    VirtualHost, VirtualHosts, WeightedDestination,
};
use crate::tls::{
    CertificateSource, ChainRoutes, ChainTls, ClientAuth, ClientCertChecks, FilterChain,
    TlsTermination, TlsVersion,
};

/// The annotation that names an Ingress's class (older than `spec.ingressClassName`).
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The annotation that makes an IngressClass the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

type Ingress<'a> = (&'a Resource, &'a Object<IngressSpec>);

/// A route of a host with its place: longer paths first, Exact before Prefix on equal
/// length, match-everything (`len` -1) last; equal places keep creation order.
#[derive(Clone)]
struct Ranked {
    len: i64,
    exact: bool,
    route: Route,
}

pub fn compile(
    resources: &[&Resource],
    instance: &Instance,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (BTreeMap<u16, Listener>, Vec<(String, String)>) {
    let ingresses = selected(resources, instance, diags);
    let served = ingresses
        .iter()
        .map(|(_, ing)| (ing.namespace.clone(), ing.name.clone()))
        .collect();
    (
        listeners(resources, instance, &ingresses, registry, diags),
        served,
    )
}

/// The listeners of the selected Ingresses: port 80 for every rule host, 443 for TLS hosts.
fn listeners(
    resources: &[&Resource],
    instance: &Instance,
    ingresses: &[Ingress<'_>],
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, Listener> {
    let mut out = BTreeMap::new();
    if ingresses.is_empty() {
        return out;
    }
    let mut hosts: BTreeMap<String, Vec<Ranked>> = BTreeMap::new();
    for (r, ing) in ingresses {
        routes(r, ing, registry, &mut hosts, diags);
    }
    let mut chains = Vec::new();
    let mut tls_servers = Vec::new();
    for (r, ing) in ingresses {
        for (chain, info) in tls(resources, instance, r, ing, &hosts, diags) {
            chains.push(chain);
            tls_servers.push(info);
        }
    }
    let vhosts = virtual_hosts(hosts);
    out.insert(
        80,
        Listener {
            port: 80,
            protocol: ListenerProtocol::Http,
            servers: ingresses
                .iter()
                .map(|(r, _)| server(r, "spec.rules", "HTTP", &["*"]))
                .collect(),
            virtual_hosts: VirtualHosts::new(vhosts),
            chains: Vec::new(),
            tcp: Vec::new(),
            outbound: None,
        },
    );
    if !chains.is_empty() {
        out.insert(
            443,
            Listener {
                port: 443,
                protocol: ListenerProtocol::Tls,
                servers: tls_servers,
                virtual_hosts: VirtualHosts::default(),
                chains,
                tcp: Vec::new(),
                outbound: None,
            },
        );
    }
    out
}

/// Virtual hosts with their routes in the Ingress order.
fn virtual_hosts(hosts: BTreeMap<String, Vec<Ranked>>) -> Vec<VirtualHost> {
    hosts
        .into_iter()
        .map(|(domain, mut ranked)| {
            ranked.sort_by(|a, b| b.len.cmp(&a.len).then(b.exact.cmp(&a.exact)));
            VirtualHost {
                domain,
                require_tls: false,
                routes: Arc::new(ranked.into_iter().map(|x| x.route).collect()),
                excluded: Arc::default(),
            }
        })
        .collect()
}

/// The Ingresses of this instance's class, in creation order: the `kubernetes.io/ingress.class`
/// annotation names it, or `spec.ingressClassName` names an IngressClass of Isthmus's
/// controller (or, when no IngressClass of that name is loaded, the class itself, since
/// files often carry none), or neither is set and the default IngressClass is Isthmus's.
fn selected<'a>(
    resources: &[&'a Resource],
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Ingress<'a>> {
    let classes: BTreeMap<&str, &str> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::IngressClass(c) => {
                Some((c.name.as_str(), c.spec.controller.as_deref().unwrap_or("")))
            }
            _ => None,
        })
        .collect();
    let default_is_ours = resources.iter().any(|r| match r {
        Resource::IngressClass(c) => {
            c.meta
                .annotations
                .get(DEFAULT_CLASS_ANNOTATION)
                .map(String::as_str)
                == Some("true")
                && c.spec.controller.as_deref() == Some(INGRESS_CONTROLLER)
        }
        _ => false,
    });
    let mut out = Vec::new();
    for r in resources {
        let Resource::Ingress(ing) = r else { continue };
        let (ours, named) = match (
            ing.meta.annotations.get(CLASS_ANNOTATION),
            ing.spec.ingress_class_name.as_deref(),
        ) {
            (Some(a), _) => (*a == instance.ingress_class, a.clone()),
            (None, Some(name)) => match classes.get(name) {
                Some(controller) => (*controller == INGRESS_CONTROLLER, name.to_string()),
                None => (name == instance.ingress_class, name.to_string()),
            },
            (None, None) => (default_is_ours, "(default)".to_string()),
        };
        if ours {
            out.push((*r, ing));
        } else {
            diags.push(subject(r).note(
                "spec.ingressClassName",
                format!(
                    "Ingress class {named} is not this instance's ({}, --ingress-class, or an IngressClass of controller {INGRESS_CONTROLLER}); not served here",
                    instance.ingress_class
                ),
            ));
        }
    }
    out
}

/// The routes of one Ingress, added to their hosts.
fn routes(
    r: &Resource,
    ing: &Object<IngressSpec>,
    registry: &mut Registry<'_>,
    hosts: &mut BTreeMap<String, Vec<Ranked>>,
    diags: &mut Vec<Diagnostic>,
) {
    let name = format!("{}/{}", ing.namespace, ing.name);
    for (i, rule) in ing.spec.rules.iter().enumerate() {
        let host = rule
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .map_or_else(|| "*".to_string(), str::to_ascii_lowercase);
        let Some(http) = &rule.http else {
            diags.push(subject(r).note(
                &format!("spec.rules[{i}]"),
                "a rule without http paths routes nothing",
            ));
            continue;
        };
        for (j, p) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            let (uri, len, exact) =
                path_match(p.path_type.as_deref(), p.path.as_deref().unwrap_or(""));
            let Some(action) = p.backend.as_ref().and_then(|b| {
                forward(
                    r,
                    &ing.namespace,
                    &format!("{field}.backend"),
                    b,
                    registry,
                    diags,
                )
            }) else {
                continue;
            };
            hosts.entry(host.clone()).or_default().push(Ranked {
                len,
                exact,
                route: route(r, &name, &field, uri, action),
            });
        }
    }
    // The default backend takes what no rule does: the catch-all of every host.
    if let Some(action) = ing
        .spec
        .default_backend
        .as_ref()
        .and_then(|b| forward(r, &ing.namespace, "spec.defaultBackend", b, registry, diags))
    {
        hosts.entry("*".into()).or_default().push(Ranked {
            len: -1,
            exact: false,
            route: route(r, &name, "spec.defaultBackend", None, action),
        });
    }
}

fn route(
    r: &Resource,
    name: &str,
    field: &str,
    uri: Option<StrMatcher>,
    action: RouteAction,
) -> Route {
    Route {
        name: String::new(),
        virtual_service: name.to_string(),
        source: Arc::new(Source::of(r, field)),
        matcher: RequestMatch {
            uri,
            ..RequestMatch::default()
        },
        action: Arc::new(action),
    }
}

/// The uri match of a path, its length for ordering (-1 for everything) and whether it is
/// exact.
fn path_match(path_type: Option<&str>, path: &str) -> (Option<StrMatcher>, i64, bool) {
    let len = |p: &str| i64::try_from(p.len()).unwrap_or(i64::MAX);
    match path_type {
        Some("Exact") => (Some(StrMatcher::Exact(path.to_string())), len(path), true),
        Some("Prefix") => (
            Some(StrMatcher::PathPrefix(path.to_string())),
            len(path),
            false,
        ),
        // ImplementationSpecific (or unset): Istio's legacy string matching.
        _ => {
            if path.is_empty() {
                return (None, -1, false);
            }
            match path.strip_suffix(".*").or_else(|| path.strip_suffix("/*")) {
                Some(prefix) => (
                    Some(StrMatcher::Prefix(prefix.to_string())),
                    len(prefix),
                    false,
                ),
                None => (Some(StrMatcher::Exact(path.to_string())), len(path), true),
            }
        }
    }
}

/// Forwarding to an Ingress backend: the Service's port by number, or by name among the
/// registry's ports. A backend that names no known service answers 503 (`NC`).
fn forward(
    r: &Resource,
    ns: &str,
    field: &str,
    b: &IngressBackend,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<RouteAction> {
    let s = subject(r);
    let Some(svc) = &b.service else {
        // Validation admits `resource` backends; Istio (and Isthmus) serve Services only.
        diags.push(s.warning(
            &format!("{field}.resource"),
            "resource backends are not supported (Services only); path not served",
        ));
        return None;
    };
    let name = svc.name.as_deref().unwrap_or("");
    let host = format!("{name}.{ns}.svc.{}", registry.domain_suffix());
    let resolved = port(svc.port.as_ref(), &host, registry)
        .and_then(|p| registry.cluster(&host, Some(p), None).map_err(|why| match why {
            Unresolved::UnknownHost => format!(
                "no ServiceEntry defines host {host} (a Service is its registry host NAME.NAMESPACE.svc.{})",
                registry.domain_suffix()
            ),
            Unresolved::Port(m) | Unresolved::Subset(m) => {
                m.trim_end_matches("; requests to it answer 503").to_string()
            }
        }));
    let (cluster_name, cluster) = match resolved {
        Ok((n, i)) => (n, Some(i)),
        Err(why) => {
            diags.push(s.warning(
                &format!("{field}.service"),
                format!("{why}; requests to it answer 503"),
            ));
            let p = svc
                .port
                .as_ref()
                .and_then(|p| p.number)
                .map(|p| p.to_string())
                .unwrap_or_default();
            (format!("outbound|{p}||{host}"), None)
        }
    };
    let dest = WeightedDestination {
        cluster_name,
        cluster,
        weight: 1,
        headers: Default::default(),
        authority: None,
        path: None,
    };
    Some(RouteAction {
        kind: ActionKind::Forward(Forward::new(vec![dest])),
        headers: Default::default(),
        fault: None,
        cors: None,
    })
}

/// The port of a backend: its number, or its name among the service's ports.
fn port(
    p: Option<&isthmus_api::k8s::ServiceBackendPort>,
    host: &str,
    registry: &Registry<'_>,
) -> Result<u16, String> {
    match p.map(|p| (p.number, p.name.as_deref())) {
        Some((Some(n), _)) => u16::try_from(n).map_err(|_| format!("port {n} is not a port")),
        Some((None, Some(name))) => registry
            .port_named(host, name)
            .ok_or_else(|| format!("service {host} has no port named {name:?}")),
        _ => Err("the backend names no port".into()),
    }
}

/// A server of the Ingress (for the listener's list and `isthmus explain`).
fn server(r: &Resource, field: &str, protocol: &str, hosts: &[&str]) -> ServerInfo {
    ServerInfo {
        label: format!(
            "{}/{} (ingress {})",
            r.namespace(),
            r.name(),
            protocol.to_ascii_lowercase()
        ),
        key: format!("{}/{}/{}/{field}", r.kind(), r.namespace(), r.name()),
        gateway: format!("{}/{}", r.namespace(), r.name()),
        index: 0,
        protocol: protocol.to_string(),
        hosts: hosts
            .iter()
            .map(|h| ServerHost {
                namespace: None,
                host: h.to_string(),
            })
            .collect(),
        https_redirect: false,
        source: Source::of(r, field),
    }
}

/// One HTTPS filter chain per `tls` entry with a `secretName` (SNI: its hosts, or any), whose
/// route table is the rule hosts intersected with the entry's hosts, as Istio binds the
/// translated VirtualServices to the HTTPS server: a rule host that intersects as the same
/// name as another merges its routes there (the rule without a host joins every name).
fn tls(
    resources: &[&Resource],
    instance: &Instance,
    r: &Resource,
    ing: &Object<IngressSpec>,
    rule_hosts: &BTreeMap<String, Vec<Ranked>>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(FilterChain, ServerInfo)> {
    let mut out = Vec::new();
    for (k, t) in ing.spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{k}]");
        let Some(secret) = t.secret_name.as_deref().filter(|n| !n.is_empty()) else {
            diags.push(subject(r).warning(
                &format!("{field}.secretName"),
                "a tls entry without secretName is not served (as in Istio)",
            ));
            continue;
        };
        let names: Vec<String> = if t.hosts.is_empty() {
            vec!["*".to_string()]
        } else {
            t.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
        };
        let Some(certificate) = certificate(
            resources,
            instance,
            r,
            &ing.namespace,
            &field,
            secret,
            diags,
        ) else {
            continue;
        };
        let mut merged: BTreeMap<String, Vec<Ranked>> = BTreeMap::new();
        for (host, ranked) in rule_hosts {
            for n in &names {
                if let Some(domain) = intersect(n, host) {
                    merged
                        .entry(domain)
                        .or_default()
                        .extend(ranked.iter().cloned());
                }
            }
        }
        let hosts = virtual_hosts(merged);
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let info = server(r, &field, "HTTPS", &name_refs);
        out.push((
            FilterChain {
                key: info.key.clone(),
                server_names: names,
                tls: ChainTls::Terminate(TlsTermination {
                    client_auth: ClientAuth::None,
                    certificates: vec![certificate],
                    client_ca: None,
                    min_version: TlsVersion::V12,
                    max_version: TlsVersion::V13,
                    cipher_suites: Vec::new(),
                    client_checks: ClientCertChecks::default(),
                }),
                routes: ChainRoutes::Http(VirtualHosts::new(hosts)),
            },
            info,
        ));
    }
    out
}

/// The certificate of `secretName`: a Secret of the Ingress's namespace (Kubernetes' rule), or
/// else of the instance's namespace (where Istio looks for it).
fn certificate(
    resources: &[&Resource],
    instance: &Instance,
    r: &Resource,
    ns: &str,
    field: &str,
    secret: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<CertificateSource> {
    let f = format!("{field}.secretName");
    let found = Secrets::new(resources, ns)
        .certificate_ref(secret)
        .or_else(|e| match e {
            SecretError::Missing(_) => {
                Secrets::new(resources, &instance.namespace).certificate_ref(secret)
            }
            invalid => Err(invalid),
        });
    match found {
        Ok((certificate, private_key, _)) => Some(CertificateSource {
            certificate,
            private_key,
        }),
        Err(SecretError::Missing(_)) => {
            diags.push(subject(r).warning(
                &f,
                format!("Secret {secret} is in neither namespace {ns} nor {} (--namespace); the HTTPS server waits for it", instance.namespace),
            ));
            None
        }
        Err(SecretError::Invalid(m)) => {
            diags.push(subject(r).error(&f, format!("{m}; HTTPS server not served")));
            None
        }
    }
}

#[cfg(test)]
#[path = "ingress_tests.rs"]
mod table_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_types_as_istio_reads_them() {
        let m = |t: Option<&str>, p: &str| {
            let (uri, len, exact) = path_match(t, p);
            (uri.map(|u| u.to_string()), len, exact)
        };
        let cases = [
            (Some("Exact"), "/foo", (Some(r#"exact "/foo""#), 4, true)),
            (
                Some("Prefix"),
                "/foo",
                (Some(r#"path prefix "/foo""#), 4, false),
            ),
            (
                Some("ImplementationSpecific"),
                "/foo/*",
                (Some(r#"prefix "/foo""#), 4, false),
            ),
            (
                Some("ImplementationSpecific"),
                "/foo.*",
                (Some(r#"prefix "/foo""#), 4, false),
            ),
            (None, "/foo", (Some(r#"exact "/foo""#), 4, true)),
            (None, "", (None, -1, false)),
            (
                Some("ImplementationSpecific"),
                "/*",
                (Some(r#"prefix """#), 0, false),
            ),
        ];
        for (t, p, (uri, len, exact)) in cases {
            assert_eq!(m(t, p), (uri.map(str::to_string), len, exact), "{t:?} {p}");
        }
    }
}
