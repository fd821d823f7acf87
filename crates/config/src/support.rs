//! Which fields Isthmus acts on. A field that is set in a resource but not acted on yet
//! gets a warning naming it: nothing is ignored silently.
//!
//! Patterns are field paths with `[]` for any list index and `*` for any map key (one or more
//! path segments, since label keys contain dots). A path is acted on when it matches a pattern
//! or is an ancestor of one.

use isthmus_api::{Diagnostic, Kind, Resource};

use crate::diag::subject;

const STRING_MATCH: &[&str] = &["exact", "prefix", "regex"];

fn patterns(kind: Kind) -> Vec<String> {
    let mut p: Vec<String> = Vec::new();
    let mut add = |s: &str| p.push(s.to_string());
    match kind {
        Kind::Gateway => {
            for s in [
                "spec.selector.*",
                "spec.servers[].port.number",
                "spec.servers[].port.protocol",
                "spec.servers[].port.name",
                "spec.servers[].hosts[]",
                "spec.servers[].name",
                "spec.servers[].tls.httpsRedirect",
                "spec.servers[].tls.mode",
                "spec.servers[].tls.serverCertificate",
                "spec.servers[].tls.privateKey",
                "spec.servers[].tls.caCertificates",
                "spec.servers[].tls.credentialName",
                "spec.servers[].tls.credentialNames[]",
                "spec.servers[].tls.caCertCredentialName",
                "spec.servers[].tls.tlsCertificates[].serverCertificate",
                "spec.servers[].tls.tlsCertificates[].privateKey",
                "spec.servers[].tls.minProtocolVersion",
                "spec.servers[].tls.maxProtocolVersion",
                "spec.servers[].tls.cipherSuites[]",
                "spec.servers[].tls.subjectAltNames[]",
                "spec.servers[].tls.verifyCertificateSpki[]",
                "spec.servers[].tls.verifyCertificateHash[]",
            ] {
                add(s);
            }
        }
        Kind::VirtualService => {
            for s in [
                "spec.hosts[]",
                "spec.gateways[]",
                "spec.exportTo[]",
                "spec.http[].name",
                "spec.http[].route[].destination.host",
                "spec.http[].route[].destination.subset",
                "spec.http[].route[].destination.port.number",
                "spec.http[].route[].weight",
                "spec.http[].match[].name",
                "spec.http[].match[].port",
                "spec.http[].match[].gateways[]",
                "spec.http[].match[].ignoreUriCase",
            ] {
                add(s);
            }
            for field in ["uri", "scheme", "method", "authority"] {
                for m in STRING_MATCH {
                    add(&format!("spec.http[].match[].{field}.{m}"));
                }
            }
            for field in ["headers", "withoutHeaders", "queryParams"] {
                add(&format!("spec.http[].match[].{field}.*"));
            }
            for s in [
                "redirect.uri",
                "redirect.authority",
                "redirect.port",
                "redirect.derivePort",
                "redirect.scheme",
                "redirect.redirectCode",
                "redirect.prefixRewrite",
                "directResponse.status",
                "directResponse.body.string",
                "directResponse.body.bytes",
                "directResponse.body.filename",
                "delegate.name",
                "delegate.namespace",
                "rewrite.uri",
                "rewrite.authority",
                "rewrite.uriRegexRewrite.match",
                "rewrite.uriRegexRewrite.rewrite",
                "timeout",
                "retries.attempts",
                "retries.perTryTimeout",
                "retries.retryOn",
                "retries.retryIgnorePreviousHosts",
                "retries.backoff",
                "fault.delay.fixedDelay",
                "fault.delay.percentage.value",
                "fault.delay.percent",
                "fault.abort.httpStatus",
                "fault.abort.grpcStatus",
                "fault.abort.percentage.value",
                "mirror.host",
                "mirror.subset",
                "mirror.port.number",
                "mirrorPercentage.value",
                "mirrorPercent",
                "mirrors[].destination.host",
                "mirrors[].destination.subset",
                "mirrors[].destination.port.number",
                "mirrors[].percentage.value",
                "corsPolicy.allowOrigin[]",
                "corsPolicy.allowOrigins[].exact",
                "corsPolicy.allowOrigins[].prefix",
                "corsPolicy.allowOrigins[].regex",
                "corsPolicy.allowMethods[]",
                "corsPolicy.allowHeaders[]",
                "corsPolicy.exposeHeaders[]",
                "corsPolicy.maxAge",
                "corsPolicy.allowCredentials",
                "corsPolicy.unmatchedPreflights",
            ] {
                add(&format!("spec.http[].{s}"));
            }
            for kind in ["tls", "tcp"] {
                for f in [
                    "match[].port",
                    "match[].gateways[]",
                    "route[].destination.host",
                    "route[].destination.subset",
                    "route[].destination.port.number",
                    "route[].weight",
                ] {
                    add(&format!("spec.{kind}[].{f}"));
                }
            }
            add("spec.tls[].match[].sniHosts[]");
            for level in ["spec.http[]", "spec.http[].route[]"] {
                for dir in ["request", "response"] {
                    add(&format!("{level}.headers.{dir}.set.*"));
                    add(&format!("{level}.headers.{dir}.add.*"));
                    add(&format!("{level}.headers.{dir}.remove[]"));
                }
            }
        }
        Kind::DestinationRule => {
            for s in [
                "spec.host",
                "spec.exportTo[]",
                "spec.subsets[].name",
                "spec.subsets[].labels.*",
            ] {
                add(s);
            }
            // Traffic policy, at every level Istio merges.
            for level in ["spec.trafficPolicy", "spec.subsets[].trafficPolicy"] {
                for pool in ["connectionPool", "portLevelSettings[].connectionPool"] {
                    for f in [
                        "h2UpgradePolicy",
                        "useClientProtocol",
                        "http1MaxPendingRequests",
                        "http2MaxRequests",
                        "maxRequestsPerConnection",
                        "maxRetries",
                        "idleTimeout",
                    ] {
                        add(&format!("{level}.{pool}.http.{f}"));
                    }
                    for f in [
                        "maxConnections",
                        "connectTimeout",
                        "maxConnectionDuration",
                        "idleTimeout",
                        "tcpKeepalive.time",
                        "tcpKeepalive.interval",
                        "tcpKeepalive.probes",
                    ] {
                        add(&format!("{level}.{pool}.tcp.{f}"));
                    }
                }
                for lb in ["loadBalancer", "portLevelSettings[].loadBalancer"] {
                    for f in [
                        "simple",
                        "consistentHash.httpHeaderName",
                        "consistentHash.httpCookie.name",
                        "consistentHash.httpCookie.path",
                        "consistentHash.httpCookie.ttl",
                        "consistentHash.useSourceIp",
                        "consistentHash.httpQueryParameterName",
                        "consistentHash.ringHash.minimumRingSize",
                        "consistentHash.maglev.tableSize",
                        "consistentHash.minimumRingSize",
                        "localityLbSetting.enabled",
                        "localityLbSetting.distribute[].from",
                        "localityLbSetting.distribute[].to.*",
                        "localityLbSetting.failover[].from",
                        "localityLbSetting.failover[].to",
                        "localityLbSetting.failoverPriority[]",
                        "warmupDurationSecs",
                        "warmup.duration",
                        "warmup.minimumPercent",
                        "warmup.aggression",
                    ] {
                        add(&format!("{level}.{lb}.{f}"));
                    }
                }
                for od in ["outlierDetection", "portLevelSettings[].outlierDetection"] {
                    for f in [
                        "consecutiveErrors",
                        "consecutive5xxErrors",
                        "consecutiveGatewayErrors",
                        "consecutiveLocalOriginFailures",
                        "splitExternalLocalOriginErrors",
                        "interval",
                        "baseEjectionTime",
                        "maxEjectionPercent",
                        "minHealthPercent",
                    ] {
                        add(&format!("{level}.{od}.{f}"));
                    }
                }
                add(&format!("{level}.portLevelSettings[].port.number"));
                // TLS origination; caCrl is not acted on.
                for tls in ["tls", "portLevelSettings[].tls"] {
                    for f in [
                        "mode",
                        "caCertificates",
                        "clientCertificate",
                        "privateKey",
                        "sni",
                        "subjectAltNames[]",
                        "insecureSkipVerify",
                        "credentialName",
                    ] {
                        add(&format!("{level}.{tls}.{f}"));
                    }
                }
            }
        }
        Kind::ServiceEntry => {
            for s in [
                "spec.hosts[]",
                "spec.exportTo[]",
                "spec.location",
                "spec.resolution",
                "spec.ports[].number",
                "spec.ports[].name",
                "spec.ports[].protocol",
                "spec.ports[].targetPort",
                "spec.endpoints[].address",
                "spec.endpoints[].ports.*",
                "spec.endpoints[].labels.*",
                "spec.endpoints[].weight",
                "spec.endpoints[].locality",
            ] {
                add(s);
            }
        }
        // Secrets are read by TLS; all their fields are data.
        Kind::Secret => add("*"),
        Kind::Namespace => add("spec.finalizers[]"),
        Kind::GatewayClass => {
            add("spec.controllerName");
            add("spec.description");
        }
        Kind::KubeGateway => gateway_api_gateway(&mut add),
        Kind::HttpRoute => {
            route_common(&mut add, true);
            http_route_rules(&mut add);
        }
        Kind::GrpcRoute => {
            route_common(&mut add, true);
            grpc_route_rules(&mut add);
        }
        Kind::TlsRoute | Kind::TcpRoute => {
            route_common(&mut add, kind == Kind::TlsRoute);
            add("spec.rules[].name");
            backend_ref(&mut add, "spec.rules[].backendRefs[]", true);
        }
        Kind::ReferenceGrant => {
            for f in [
                "from[].group",
                "from[].kind",
                "from[].namespace",
                "to[].group",
                "to[].kind",
                "to[].name",
            ] {
                add(&format!("spec.{f}"));
            }
        }
        Kind::Ingress => {
            for f in [
                "ingressClassName",
                "tls[].hosts[]",
                "tls[].secretName",
                "rules[].host",
                "rules[].http.paths[].path",
                "rules[].http.paths[].pathType",
            ] {
                add(&format!("spec.{f}"));
            }
            // `resource` backends are reported by the compiler (the path is not served).
            for at in ["spec.defaultBackend", "spec.rules[].http.paths[].backend"] {
                for f in [
                    "service.name",
                    "service.port.name",
                    "service.port.number",
                    "resource.*",
                ] {
                    add(&format!("{at}.{f}"));
                }
            }
        }
        Kind::IngressClass => add("spec.controller"),
    }
    p
}

fn gateway_api_gateway(add: &mut impl FnMut(&str)) {
    add("spec.gatewayClassName");
    for f in [
        "name",
        "hostname",
        "port",
        "protocol",
        "tls.mode",
        "tls.certificateRefs[].group",
        "tls.certificateRefs[].kind",
        "tls.certificateRefs[].name",
        "tls.certificateRefs[].namespace",
        "allowedRoutes.namespaces.from",
        "allowedRoutes.namespaces.selector.matchLabels.*",
        "allowedRoutes.namespaces.selector.matchExpressions[].key",
        "allowedRoutes.namespaces.selector.matchExpressions[].operator",
        "allowedRoutes.namespaces.selector.matchExpressions[].values[]",
        "allowedRoutes.kinds[].group",
        "allowedRoutes.kinds[].kind",
    ] {
        add(&format!("spec.listeners[].{f}"));
    }
}

/// `parentRefs` and (for kinds that have them) `hostnames`.
fn route_common(add: &mut impl FnMut(&str), hostnames: bool) {
    for f in ["group", "kind", "namespace", "name", "sectionName", "port"] {
        add(&format!("spec.parentRefs[].{f}"));
    }
    if hostnames {
        add("spec.hostnames[]");
    }
}

fn backend_ref(add: &mut impl FnMut(&str), at: &str, weight: bool) {
    for f in ["group", "kind", "name", "namespace", "port"] {
        add(&format!("{at}.{f}"));
    }
    if weight {
        add(&format!("{at}.weight"));
    }
}

fn header_modifiers(add: &mut impl FnMut(&str), at: &str) {
    for m in ["requestHeaderModifier", "responseHeaderModifier"] {
        for f in [
            "set[].name",
            "set[].value",
            "add[].name",
            "add[].value",
            "remove[]",
        ] {
            add(&format!("{at}.{m}.{f}"));
        }
    }
}

/// Filters of a rule: `ExtensionRef` and `ExternalAuth` count as acted on, since a rule with
/// one answers 500 (and is diagnosed as such) rather than ignoring it.
fn route_filters(add: &mut impl FnMut(&str), at: &str, http: bool) {
    add(&format!("{at}.type"));
    header_modifiers(add, at);
    backend_ref(add, &format!("{at}.requestMirror.backendRef"), false);
    for f in ["percent", "fraction.numerator", "fraction.denominator"] {
        add(&format!("{at}.requestMirror.{f}"));
    }
    add(&format!("{at}.extensionRef.*"));
    if !http {
        return;
    }
    add(&format!("{at}.externalAuth.*"));
    for f in ["scheme", "hostname", "port", "statusCode"] {
        add(&format!("{at}.requestRedirect.{f}"));
    }
    for p in ["requestRedirect.path", "urlRewrite.path"] {
        for f in ["type", "replaceFullPath", "replacePrefixMatch"] {
            add(&format!("{at}.{p}.{f}"));
        }
    }
    add(&format!("{at}.urlRewrite.hostname"));
    for f in [
        "allowOrigins[]",
        "allowCredentials",
        "allowMethods[]",
        "allowHeaders[]",
        "exposeHeaders[]",
        "maxAge",
    ] {
        add(&format!("{at}.cors.{f}"));
    }
}

fn http_route_rules(add: &mut impl FnMut(&str)) {
    add("spec.rules[].name");
    for f in ["path.type", "path.value", "method"] {
        add(&format!("spec.rules[].matches[].{f}"));
    }
    for list in ["headers", "queryParams"] {
        for f in ["type", "name", "value"] {
            add(&format!("spec.rules[].matches[].{list}[].{f}"));
        }
    }
    route_filters(add, "spec.rules[].filters[]", true);
    backend_ref(add, "spec.rules[].backendRefs[]", true);
    // Backends act on header modifiers and URL rewrites.
    add("spec.rules[].backendRefs[].filters[].type");
    header_modifiers(add, "spec.rules[].backendRefs[].filters[]");
    add("spec.rules[].backendRefs[].filters[].urlRewrite.hostname");
    for f in ["type", "replaceFullPath", "replacePrefixMatch"] {
        add(&format!(
            "spec.rules[].backendRefs[].filters[].urlRewrite.path.{f}"
        ));
    }
    for f in [
        "timeouts.request",
        "timeouts.backendRequest",
        "retry.codes[]",
        "retry.attempts",
        "retry.backoff",
    ] {
        add(&format!("spec.rules[].{f}"));
    }
}

fn grpc_route_rules(add: &mut impl FnMut(&str)) {
    add("spec.rules[].name");
    for f in [
        "method.type",
        "method.service",
        "method.method",
        "headers[].type",
        "headers[].name",
        "headers[].value",
    ] {
        add(&format!("spec.rules[].matches[].{f}"));
    }
    route_filters(add, "spec.rules[].filters[]", false);
    backend_ref(add, "spec.rules[].backendRefs[]", true);
    add("spec.rules[].backendRefs[].filters[].type");
    header_modifiers(add, "spec.rules[].backendRefs[].filters[]");
}

/// Splits `spec.http[3].match[0].uri` into `["spec", "http[]", "match[]", "uri"]`.
#[cfg(test)]
fn normalise(path: &str) -> Vec<String> {
    let mut out = String::with_capacity(path.len());
    shape_of(path, &mut out);
    out.split('.').map(str::to_string).collect()
}

#[cfg(test)]
/// Appends the shape of `path` to `out`: `spec.http[3].match[0].uri` -> `spec.http[].match[].uri`.
fn shape_of(path: &str, out: &mut String) {
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
}

/// Whether `path` matches a leading part of `pattern` (so ancestors of acted-on fields count).
fn matches_prefix(pattern: &[&str], path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    let Some((p, prest)) = pattern.split_first() else {
        return false;
    };
    if *p == "*" {
        // A map key: one or more segments.
        return (1..=path.len()).any(|n| matches_prefix(prest, path.get(n..).unwrap_or(&[])));
    }
    // A list node itself (`spec.hosts`) is the ancestor of its items (`spec.hosts[]`).
    let list_node = rest.is_empty() && p.strip_suffix("[]") == Some(first.as_str());
    (*p == first.as_str() || list_node) && matches_prefix(prest, rest)
}

/// Warnings for the fields of `r` that are set but not acted on yet, in the order of their
/// paths.
pub fn unsupported_fields(r: &Resource) -> Vec<Diagnostic> {
    let patterns = patterns(r.kind());
    let split: Vec<Vec<&str>> = patterns.iter().map(|p| p.split('.').collect()).collect();
    let s = subject(r);
    let secret = r.kind() == Kind::Secret;
    let mut found: Vec<(String, Diagnostic)> = Vec::new();
    // Large resources repeat the same field shapes (`spec.http[].match[].uri.prefix` for
    // every route): each shape is matched against the patterns once.
    let mut memo: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    // The fields are walked in document order, a field before those under it: a reported
    // field's subtree, an unknown field's and everything outside the spec are skipped whole.
    r.origin().walk_fields(|path, shape| {
        if !(secret || path == "spec" || path.starts_with("spec.")) || r.origin().is_unknown(path) {
            return false;
        }
        let acted_on = match memo.get(shape) {
            Some(known) => *known,
            None => {
                let segments: Vec<String> = shape.split('.').map(str::to_string).collect();
                let known = split.iter().any(|p| matches_prefix(p, &segments));
                memo.insert(shape.to_string(), known);
                known
            }
        };
        if !acted_on {
            let warning = s.warning(
                path,
                "field is not acted on by this version of Isthmus (ignored)",
            );
            found.push((path.to_string(), warning));
        }
        acted_on
    });
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    found.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported(kind: Kind, path: &str) -> bool {
        let pats = patterns(kind);
        let split: Vec<Vec<&str>> = pats.iter().map(|p| p.split('.').collect()).collect();
        let seg = normalise(path);
        split.iter().any(|p| matches_prefix(p, &seg))
    }

    #[test]
    fn acted_on_fields() {
        let vs = Kind::VirtualService;
        let cases = [
            (vs, "spec", true),
            (vs, "spec.http[2]", true),
            (vs, "spec.http[2].match[0].uri.prefix", true),
            (vs, "spec.http[2].match[0].headers.end-user.exact", true),
            (vs, "spec.http[2].match[0].queryParams.a.b.regex", true),
            (vs, "spec.http[0].retries.attempts", true),
            (vs, "spec.http[0].retries.retryRemoteLocalities", false),
            (vs, "spec.http[1].route[0].headers.request.set.x-a", true),
            (vs, "spec.http[1].corsPolicy.allowOrigins[2].regex", true),
            (vs, "spec.tcp[0].route[0].weight", true),
            (vs, "spec.tcp[0].match[0].sourceLabels", false),
            (Kind::Gateway, "spec.selector.app.kubernetes.io/name", true),
            (Kind::Gateway, "spec.servers[0].tls.mode", true),
            (
                Kind::Gateway,
                "spec.servers[0].tls.verifyCertificateSpki[0]",
                true,
            ),
            (Kind::Gateway, "spec.servers[0].tls.caCrl", false),
            (Kind::DestinationRule, "spec.trafficPolicy.tls.mode", true),
            (
                Kind::DestinationRule,
                "spec.subsets[0].trafficPolicy.portLevelSettings[0].tls.sni",
                true,
            ),
            (
                Kind::DestinationRule,
                "spec.trafficPolicy.tls.credentialName",
                true,
            ),
            (
                Kind::DestinationRule,
                "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
                true,
            ),
            (
                Kind::DestinationRule,
                "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
                true,
            ),
            (
                Kind::DestinationRule,
                "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
                false,
            ),
            (
                Kind::DestinationRule,
                "spec.subsets[0].trafficPolicy.portLevelSettings[1].connectionPool.http.useClientProtocol",
                true,
            ),
            (
                Kind::DestinationRule,
                "spec.subsets[1].labels.version",
                true,
            ),
            // Weights and localities of endpoints set load-balancing weights and priorities.
            (Kind::ServiceEntry, "spec.endpoints[0].weight", true),
            (Kind::ServiceEntry, "spec.endpoints[1].locality", true),
            (Kind::ServiceEntry, "spec.endpoints[0].network", false),
            (Kind::Secret, "data.tls.crt", true),
            (
                Kind::KubeGateway,
                "spec.listeners[1].tls.certificateRefs[0].name",
                true,
            ),
            (
                Kind::KubeGateway,
                "spec.listeners[1].tls.options.a/b",
                false,
            ),
            (
                Kind::KubeGateway,
                "spec.listeners[0].allowedRoutes.namespaces.selector.matchLabels.a.b/c",
                true,
            ),
            (Kind::KubeGateway, "spec.addresses[0].value", false),
            (Kind::KubeGateway, "spec.infrastructure.labels.a", false),
            (
                Kind::HttpRoute,
                "spec.rules[0].matches[1].headers[0].value",
                true,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].filters[0].requestRedirect.path.type",
                true,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].filters[0].cors.allowOrigins[1]",
                true,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].backendRefs[0].filters[0].requestHeaderModifier.set[0].name",
                true,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].backendRefs[0].filters[0].urlRewrite.hostname",
                true,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].backendRefs[0].filters[0].requestRedirect.port",
                false,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].sessionPersistence.sessionName",
                false,
            ),
            (
                Kind::HttpRoute,
                "spec.rules[0].timeouts.backendRequest",
                true,
            ),
            (
                Kind::GrpcRoute,
                "spec.rules[0].matches[0].method.service",
                true,
            ),
            (
                Kind::GrpcRoute,
                "spec.rules[0].filters[0].requestRedirect.hostname",
                false,
            ),
            (Kind::TcpRoute, "spec.rules[0].backendRefs[0].weight", true),
            (Kind::TcpRoute, "spec.hostnames[0]", false),
            (
                Kind::Ingress,
                "spec.rules[0].http.paths[0].backend.service.port.number",
                true,
            ),
            (Kind::Ingress, "spec.defaultBackend.resource.kind", true),
            (
                Kind::Ingress,
                "spec.rules[0].http.paths[0].backend.service.weight",
                false,
            ),
            (Kind::IngressClass, "spec.parameters.kind", false),
        ];
        for (kind, path, want) in cases {
            assert_eq!(supported(kind, path), want, "{kind} {path}");
        }
    }

    #[test]
    fn reports_the_outermost_field_not_acted_on_once_per_place() {
        let text = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, labels: {anything: goes}}
spec:
  hosts: [a]
  http:
  - match: [{uri: {prefix: /a}, sourceLabels: {app: x, tier: web}}]
    route: [{destination: {host: a}}]
    retries: {attempts: 1, retryRemoteLocalities: true}
    tiemout: 1s
  - match: [{uri: {prefix: /b}, sourceLabels: {app: z}}]
    route: [{destination: {host: a}}]
    retries: {attempts: 1, retryRemoteLocalities: true}
";
        let loaded = isthmus_api::load::load_str("t.yaml", text).unwrap();
        let [r] = loaded.resources.as_slice() else {
            panic!("one resource expected: {:?}", loaded.diagnostics)
        };
        let fields: Vec<String> = unsupported_fields(r).into_iter().map(|d| d.field).collect();
        // Not the labels under sourceLabels, nor the misspelt field (reported as unknown by
        // the loader), nor metadata.
        assert_eq!(
            fields,
            [
                "spec.http[0].match[0].sourceLabels",
                "spec.http[0].retries.retryRemoteLocalities",
                "spec.http[1].match[0].sourceLabels",
                "spec.http[1].retries.retryRemoteLocalities",
            ]
        );
    }
}
