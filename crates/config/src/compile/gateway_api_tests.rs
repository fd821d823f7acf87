//! Table tests of the Gateway API compiler: YAML in, route tables and diagnostics out.

use isthmus_api::load::load_str;

use crate::build::{LastGood, build};
use crate::explain::brief;
use crate::instance::Instance;
use crate::snapshot::{ActionKind, Snapshot};
use crate::tls::ChainRoutes;

/// Services `a`, `b` (namespace `default`) and `c` (namespace `other`) on port 8080, and a
/// Namespace `other` labelled `team: blue`.
const BASE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.default.svc.cluster.local, b.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: other}
spec:
  hosts: [c.other.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.3}]
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: blue}}
";

/// A Gateway `gw` in `default` of class `isthmus` with the given listeners (YAML list items).
fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: isthmus
  listeners:
{listeners}"
    )
}

const HTTP_ALL: &str =
    "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n";

fn compile_with(text: &str, instance: &Instance) -> (Snapshot, Vec<String>) {
    let loaded = load_str("t.yaml", &format!("{BASE}---\n{text}")).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        instance,
    );
    let diags = loaded
        .diagnostics
        .iter()
        .chain(&b.diagnostics)
        .map(ToString::to_string)
        .collect();
    (b.snapshot, diags)
}

fn compile(text: &str) -> (Snapshot, Vec<String>) {
    compile_with(text, &Instance::default())
}

/// `domain: match -> action` for every route of port `port` (plaintext HTTP).
fn table(s: &Snapshot, port: u16) -> Vec<String> {
    let Some(l) = s.listeners.get(&port) else {
        return vec![];
    };
    l.virtual_hosts
        .hosts
        .iter()
        .flat_map(|vh| {
            vh.routes.iter().map(move |r| {
                format!(
                    "{}: {} -> {}",
                    vh.domain,
                    r.matcher.describe(),
                    brief(&r.action)
                )
            })
        })
        .collect()
}

fn has(diags: &[String], needle: &str) -> bool {
    diags.iter().any(|d| d.contains(needle))
}

const A: &str = "outbound|8080||a.default.svc.cluster.local";
const B: &str = "outbound|8080||b.default.svc.cluster.local";

#[test]
fn gateways_of_other_classes_or_controllers_are_not_served() {
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
";
    let (s, diags) = compile(&format!(
        "{}{route}",
        gateway(HTTP_ALL).replace("isthmus", "istio")
    ));
    assert!(s.listeners.is_empty());
    assert!(
        has(
            &diags,
            "note: Gateway.gateway.networking.k8s.io default/gw: spec.gatewayClassName: class \"istio\" is not this instance's GatewayClass"
        ),
        "{diags:#?}"
    );
    // The route's parent belongs to another implementation: nothing to say about it.
    assert!(!has(&diags, "HTTPRoute"), "{diags:#?}");

    let class = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: isthmus}
spec: {controllerName: example.com/other}
";
    let (s, diags) = compile(&format!("{}{route}{class}", gateway(HTTP_ALL)));
    assert!(s.listeners.is_empty());
    assert!(
        has(
            &diags,
            "GatewayClass isthmus: spec.controllerName: GatewayClass isthmus names controller \"example.com/other\""
        ),
        "{diags:#?}"
    );

    let ours = class.replace("example.com/other", "isthmus.io/gateway-controller");
    let (s, _) = compile(&format!("{}{route}{ours}", gateway(HTTP_ALL)));
    assert_eq!(
        table(&s, 80),
        [format!("*: uri path prefix \"/\" -> forward {A}")]
    );

    // --gateway restricts the instance to one Gateway.
    let mut one = Instance {
        gateway: Some(("default".into(), "elsewhere".into())),
        ..Instance::default()
    };
    let (s, _) = compile_with(&format!("{}{route}", gateway(HTTP_ALL)), &one);
    assert!(s.listeners.is_empty());
    one.gateway = Some(("default".into(), "gw".into()));
    let (s, _) = compile_with(&format!("{}{route}", gateway(HTTP_ALL)), &one);
    assert_eq!(table(&s, 80).len(), 1);
}

/// Routes from `default` and `other`, attached to a listener with `allowed`.
fn attach_from_namespaces(allowed: &str) -> Vec<String> {
    let listeners =
        format!("  - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {allowed}}}\n");
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{path: {value: /mine}}], backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: theirs, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: default}]
  rules: [{matches: [{path: {value: /theirs}}], backendRefs: [{name: c, port: 8080}]}]
";
    let (s, _) = compile(&format!("{}{routes}", gateway(&listeners)));
    table(&s, 80)
}

#[test]
fn allowed_routes_by_namespace() {
    let mine = format!("*: uri path prefix \"/mine\" -> forward {A}");
    let theirs =
        "*: uri path prefix \"/theirs\" -> forward outbound|8080||c.other.svc.cluster.local"
            .to_string();
    let cases = [
        ("{}", vec![mine.clone()]),
        ("{namespaces: {from: Same}}", vec![mine.clone()]),
        (
            "{namespaces: {from: All}}",
            // The longer prefix first.
            vec![theirs.clone(), mine.clone()],
        ),
        (
            "{namespaces: {from: Selector, selector: {matchLabels: {team: blue}}}}",
            vec![theirs.clone()],
        ),
        (
            "{namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: default}}}}",
            vec![mine.clone()],
        ),
        (
            "{namespaces: {from: Selector, selector: {matchExpressions: [{key: team, operator: DoesNotExist}]}}}",
            vec![mine.clone()],
        ),
    ];
    for (allowed, want) in cases {
        assert_eq!(attach_from_namespaces(allowed), want, "{allowed}");
    }
}

#[test]
fn allowed_route_kinds_and_parent_refs() {
    let listeners =
        "  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}
  - {name: other, port: 81, protocol: HTTP}
";
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: http}, {name: gw, port: 81}, {name: nowhere}]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(listeners)));
    assert!(table(&s, 80).is_empty());
    assert_eq!(table(&s, 81).len(), 1);
    assert!(
        has(
            &diags,
            "spec.parentRefs[0]: Gateway default/gw: listener \"http\" does not allow HTTPRoute (NotAllowedByListeners)"
        ),
        "{diags:#?}"
    );
    assert!(
        has(
            &diags,
            "spec.parentRefs[2]: Gateway default/nowhere is not defined by any loaded resource"
        ),
        "{diags:#?}"
    );
}

#[test]
fn precedence_across_rules_and_routes() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: z-older, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: a, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x, value: '1'}]}]
    backendRefs: [{name: a, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-newer, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - {path: {type: Exact, value: /api}}
    - {path: {type: PathPrefix, value: /api}, method: GET}
    - {path: {type: PathPrefix, value: /api/v1}}
    - {path: {type: PathPrefix, value: /api}, queryParams: [{name: q, value: '1'}]}
    - {path: {type: RegularExpression, value: '/api/[0-9]+'}}
    backendRefs: [{name: b, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x, value: '1'}]}]
    backendRefs: [{name: b, port: 8080}]
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(HTTP_ALL)));
    assert!(diags.is_empty(), "{diags:#?}");
    let want = [
        format!("*: uri exact \"/api\" -> forward {B}"),
        format!("*: uri path prefix \"/api/v1\" -> forward {B}"),
        format!("*: uri path prefix \"/api\" and method exact \"GET\" -> forward {B}"),
        // Equal matches: the older route wins (z-older comes first in the file).
        format!("*: uri path prefix \"/api\" and header \"x\" exact \"1\" -> forward {A}"),
        format!("*: uri path prefix \"/api\" and header \"x\" exact \"1\" -> forward {B}"),
        format!("*: uri path prefix \"/api\" and query param \"q\" exact \"1\" -> forward {B}"),
        format!("*: uri path prefix \"/\" -> forward {A}"),
        // Istio ranks regular expressions after every prefix.
        format!("*: uri regex \"/api/[0-9]+\" -> forward {B}"),
    ];
    assert_eq!(table(&s, 80), want);
}

#[test]
fn creation_timestamps_order_equal_routes_and_names_break_ties() {
    let route = |name: &str, created: &str, svc: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{matches: [{{path: {{value: /x}}}}], backendRefs: [{{name: {svc}, port: 8080}}]}}]
"
        )
    };
    let text = format!(
        "{}{}{}",
        gateway(HTTP_ALL),
        route("first-in-file", "2024-05-01T00:00:00Z", "a"),
        route("older", "2024-01-01T00:00:00Z", "b")
    );
    let (s, _) = compile(&text);
    assert_eq!(
        table(&s, 80),
        [
            format!("*: uri path prefix \"/x\" -> forward {B}"),
            format!("*: uri path prefix \"/x\" -> forward {A}"),
        ]
    );
    let text = format!(
        "{}{}{}",
        gateway(HTTP_ALL),
        route("zz", "2024-01-01T00:00:00Z", "a"),
        route("aa", "2024-01-01T00:00:00Z", "b")
    );
    let (s, _) = compile(&text);
    // Same creation time: alphabetical namespace/name.
    assert_eq!(
        table(&s, 80).first().map(String::as_str),
        Some(format!("*: uri path prefix \"/x\" -> forward {B}").as_str())
    );
}

#[test]
fn invalid_backends_answer_500_for_their_share() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /split}}]
    backendRefs:
    - {name: a, port: 8080, weight: 3}
    - {name: missing, port: 8080, weight: 1}
    - {group: example.com, kind: Bucket, name: x, weight: 1}
  - matches: [{path: {value: /cross}}]
    backendRefs: [{name: c, namespace: other, port: 8080}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: a, port: 8080, weight: 0}]
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: x}}]
    backendRefs: [{name: a, port: 8080}]
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(HTTP_ALL)));
    let l = s.listeners.get(&80).unwrap();
    let routes = &l.virtual_hosts.hosts.first().unwrap().routes;
    let action = |path: &str| {
        routes
            .iter()
            .find(|r| r.matcher.describe().contains(&format!("\"{path}\"")))
            .map(|r| &r.action.kind)
            .unwrap()
    };
    let ActionKind::Forward(f) = action("/split") else {
        panic!("split is not a forward")
    };
    let clusters: Vec<bool> = f.destinations.iter().map(|d| d.cluster.is_some()).collect();
    assert_eq!(clusters, [true, false, false]);
    assert_eq!(f.total_weight(), 5);
    assert_eq!(f.invalid_backend_status, Some(500));
    let ActionKind::Forward(f) = action("/cross") else {
        panic!("cross is not a forward")
    };
    assert!(f.destinations.iter().all(|d| d.cluster.is_none()));
    for path in ["/none", "/zero", "/ext"] {
        assert!(
            matches!(action(path), ActionKind::DirectResponse(d) if d.status == 500),
            "{path}"
        );
    }
    for needle in [
        "spec.rules[0].backendRefs[1]: no ServiceEntry defines host missing.default.svc.cluster.local",
        "spec.rules[0].backendRefs[2]: backend kind example.com/Bucket is not supported",
        "spec.rules[1].backendRefs[0]: no ReferenceGrant in namespace other lets HTTPRoutes of default use Service other/c (RefNotPermitted)",
        "spec.rules[4].filters: spec.rules[4].filters[0]: a ExtensionRef filter is not supported",
    ] {
        assert!(has(&diags, needle), "{needle}: {diags:#?}");
    }
}

#[test]
fn reference_grants_open_other_namespaces() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: c, namespace: other, port: 8080}]}]
";
    let grant = |to_name: &str, from_kind: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: other}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: default}}]
  to: [{{group: '', kind: Service{to_name}}}]
"
        )
    };
    let cases = [
        (grant("", "HTTPRoute"), true),
        (grant(", name: c", "HTTPRoute"), true),
        (grant(", name: d", "HTTPRoute"), false),
        (grant("", "GRPCRoute"), false),
    ];
    for (g, want) in cases {
        let (s, _) = compile(&format!("{}{routes}{g}", gateway(HTTP_ALL)));
        let l = s.listeners.get(&80).unwrap();
        let r = l
            .virtual_hosts
            .hosts
            .first()
            .unwrap()
            .routes
            .first()
            .unwrap();
        let ActionKind::Forward(f) = &r.action.kind else {
            panic!("not a forward")
        };
        assert_eq!(
            f.destinations.first().unwrap().cluster.is_some(),
            want,
            "{g}"
        );
    }
}

#[test]
fn conflicting_listeners_of_a_gateway_are_not_served() {
    let listeners = "  - {name: a, port: 80, protocol: HTTP}
  - {name: b, port: 80, protocol: TCP}
  - {name: c, port: 81, protocol: HTTP, hostname: x.example.com}
  - {name: d, port: 81, protocol: HTTP, hostname: x.example.com}
  - {name: e, port: 81, protocol: HTTP, hostname: y.example.com}
  - {name: f, port: 82, protocol: UDP}
";
    let (s, diags) = compile(&gateway(listeners));
    assert!(!s.listeners.contains_key(&80));
    let hosts: Vec<&str> = s
        .listeners
        .get(&81)
        .unwrap()
        .virtual_hosts
        .hosts
        .iter()
        .map(|h| h.domain.as_str())
        .collect();
    assert_eq!(hosts, ["y.example.com"]);
    assert!(!s.listeners.contains_key(&82));
    for needle in [
        "spec.listeners[0]: port 80 is also used by listener \"b\" with protocol TCP (ProtocolConflict)",
        "spec.listeners[2]: listener \"d\" has the same port 81 and hostname x.example.com (HostnameConflict)",
        "spec.listeners[5].protocol: protocol \"UDP\" is not supported",
    ] {
        assert!(has(&diags, needle), "{needle}: {diags:#?}");
    }
}

#[test]
fn listener_isolation_and_hostname_intersection() {
    let listeners = "  - {name: any, port: 80, protocol: HTTP}
  - {name: wild, port: 80, protocol: HTTP, hostname: '*.example.com'}
  - {name: exact, port: 80, protocol: HTTP, hostname: foo.example.com}
";
    let route = |name: &str, section: &str, hostnames: &str, svc: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: {section}}}]
  hostnames: {hostnames}
  rules: [{{backendRefs: [{{name: {svc}, port: 8080}}]}}]
"
        )
    };
    let text = format!(
        "{}{}{}",
        gateway(listeners),
        route(
            "to-any",
            "any",
            "[foo.example.com, bar.example.com, other.org]",
            "a"
        ),
        route(
            "to-wild",
            "wild",
            "['*.example.com', foo.example.com, x.org]",
            "b"
        )
    );
    let (s, diags) = compile(&text);
    let want = [
        format!("*.example.com: uri path prefix \"/\" -> forward {B}"),
        // The wildcard listener owns bar.example.com and the exact one foo.example.com (with
        // no route attached, so it answers 404): only other.org is the catch-all listener's.
        format!("other.org: uri path prefix \"/\" -> forward {A}"),
    ];
    assert_eq!(table(&s, 80), want);
    let domains: Vec<&str> = s
        .listeners
        .get(&80)
        .unwrap()
        .virtual_hosts
        .hosts
        .iter()
        .map(|h| h.domain.as_str())
        .collect();
    assert_eq!(
        domains,
        ["*", "*.example.com", "foo.example.com", "other.org"]
    );
    assert!(diags.iter().all(|d| !d.contains("x.org")), "{diags:#?}");
}

#[test]
fn routes_with_no_matching_hostname_are_reported() {
    let listeners = "  - {name: http, port: 80, protocol: HTTP, hostname: a.example.com}\n";
    let route = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [b.example.com]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
";
    let (_, diags) = compile(&format!("{}{route}", gateway(listeners)));
    assert!(
        has(
            &diags,
            "t.yaml:36: warning: HTTPRoute default/r: spec.parentRefs[0]: Gateway default/gw: no hostname of the route matches the hostname a.example.com of listener \"http\" (NoMatchingListenerHostname); not attached"
        ),
        "{diags:#?}"
    );
}

#[test]
fn grpc_and_http_routes_cannot_share_a_hostname() {
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shared.example.com]
  rules: [{matches: [{method: {service: a.S}}], backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shared.example.com, web.example.com]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(HTTP_ALL)));
    assert_eq!(
        table(&s, 80),
        [
            format!("shared.example.com: uri prefix \"/a.S/\" -> forward {A}"),
            format!("web.example.com: uri path prefix \"/\" -> forward {B}"),
        ]
    );
    assert!(
        has(
            &diags,
            "HTTPRoute default/h: spec.parentRefs: host shared.example.com is also routed by the older GRPCRoute default/g"
        ),
        "{diags:#?}"
    );
}

#[test]
fn tls_listeners_terminate_or_pass_through_by_sni() {
    let listeners = "  - name: pass
    port: 443
    protocol: TLS
    hostname: '*.example.com'
    tls: {mode: Passthrough}
  - name: web
    port: 443
    protocol: HTTPS
    hostname: web.example.org
    tls: {certificateRefs: [{name: cert, namespace: certs}]}
  - {name: tcp, port: 9000, protocol: TCP}
";
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: wild, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: exact, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [abc.example.com]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: a, port: 8080, weight: 0}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: certs}
stringData: {tls.crt: C, tls.key: K}
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(listeners)));
    let l = s.listeners.get(&443).unwrap();
    let keys: Vec<&str> = l.chains.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["Gateway.gateway.networking.k8s.io/default/gw/pass"]);
    let Some(ChainRoutes::Tls(tls)) = l.chains.first().map(|c| &c.routes) else {
        panic!("no passthrough chain")
    };
    let sni: Vec<String> = tls
        .iter()
        .map(|r| format!("{} {}", r.sni_hosts.join(","), r.virtual_service))
        .collect();
    assert_eq!(
        sni,
        [
            "abc.example.com default/exact",
            "*.example.com default/wild"
        ]
    );
    assert!(
        has(
            &diags,
            "spec.listeners[1].tls.certificateRefs[0]: no ReferenceGrant in namespace certs lets Gateways of default use Secret certs/cert (RefNotPermitted)"
        ),
        "{diags:#?}"
    );
    // A TCPRoute whose only backend has weight 0 closes every connection.
    let tcp = s.listeners.get(&9000).unwrap();
    assert_eq!(
        tcp.tcp.first().map(|r| r.forward.destinations.len()),
        Some(0)
    );

    let grant = "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: '', kind: Secret}]
";
    let (s, _) = compile(&format!("{}{routes}{grant}", gateway(listeners)));
    let l = s.listeners.get(&443).unwrap();
    let names: Vec<&str> = l
        .chains
        .iter()
        .flat_map(|c| c.server_names.iter().map(String::as_str))
        .collect();
    assert_eq!(names, ["*.example.com", "web.example.org"]);
}

#[test]
fn istio_and_gateway_api_share_a_plaintext_port() {
    let istio = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [istio.example.com]
  gateways: [istio-gw]
  http: [{route: [{destination: {host: a.default.svc.cluster.local}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [kube.example.com]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
";
    let (s, diags) = compile(&format!("{}{istio}", gateway(HTTP_ALL)));
    assert_eq!(
        table(&s, 80),
        [
            format!("istio.example.com: any request -> forward {A}"),
            format!("kube.example.com: uri path prefix \"/\" -> forward {B}"),
        ]
    );
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn validation_rejects_what_the_crds_reject() {
    let bad = "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: ['10.0.0.1']
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}, statusCode: 305}
  - matches: [{path: {type: RegularExpression, value: '/('}, method: FETCH}]
    backendRefs: [{name: a}]
    timeouts: {request: 1s, backendRequest: 2s}
";
    let (s, diags) = compile(&format!("{}{bad}", gateway(HTTP_ALL)));
    assert!(table(&s, 80).is_empty());
    for needle in [
        "t.yaml:37: error: HTTPRoute default/bad: spec.hostnames[0]: hostname \"10.0.0.1\" is an IP address",
        "t.yaml:39: error: HTTPRoute default/bad: spec.rules[0].matches: a ReplacePrefixMatch path modifier needs exactly one PathPrefix match",
        "t.yaml:42: error: HTTPRoute default/bad: spec.rules[0].filters[0].requestRedirect.statusCode: status 305",
        "t.yaml:43: error: HTTPRoute default/bad: spec.rules[1].matches[0].path.value: invalid regex \"/(\"",
        "t.yaml:43: error: HTTPRoute default/bad: spec.rules[1].matches[0].method: unknown method \"FETCH\"",
        "t.yaml:44: error: HTTPRoute default/bad: spec.rules[1].backendRefs[0].port: a Service backend needs a port",
        "t.yaml:45: error: HTTPRoute default/bad: spec.rules[1].timeouts.backendRequest: backendRequest (2s) must not be longer than request (1s)",
    ] {
        assert!(has(&diags, needle), "{needle}: {diags:#?}");
    }
}

#[test]
fn tls_listeners_that_terminate_give_each_sni_name_its_tcp_route() {
    let listeners = "  - name: tls
    port: 8443
    protocol: TLS
    hostname: '*.example.com'
    tls: {mode: Terminate, certificateRefs: [{name: cert}]}
    allowedRoutes: {kinds: [{kind: TLSRoute}, {kind: TCPRoute}]}
";
    let routes = "---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: a, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: also-a, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [a.example.com]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: rest, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: b, port: 8080}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: default}
stringData: {tls.crt: C, tls.key: K}
";
    let (s, diags) = compile(&format!("{}{routes}", gateway(listeners)));
    let l = s.listeners.get(&8443).unwrap();
    let chains: Vec<String> = l
        .chains
        .iter()
        .map(|c| {
            let ChainRoutes::Tcp(tcp) = &c.routes else {
                panic!("not a terminated TCP chain")
            };
            let to: Vec<String> = tcp
                .iter()
                .map(|r| crate::explain::brief_forward(&r.forward))
                .collect();
            format!(
                "{} {} -> {}",
                c.server_names.join(","),
                c.tls.mode_name(),
                to.join(" ")
            )
        })
        .collect();
    assert_eq!(
        chains,
        [
            format!("*.example.com SIMPLE -> {B}"),
            format!("a.example.com SIMPLE -> {A}"),
        ]
    );
    assert!(
        has(
            &diags,
            "TLSRoute default/also-a: spec.parentRefs: default/a already takes the connections of this listener for this name"
        ),
        "{diags:#?}"
    );
}
