//! Table tests of the Gateway API status: the conditions follow the compiler's decisions.

use isthmus_api::load::load_str;

use crate::build::{LastGood, build};
use crate::gateway_status::{AcceptedReason, GatewayApiStatus, RefsReason};
use crate::instance::Instance;

const BASE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.default.svc.cluster.local]
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
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: isthmus, generation: 3}
spec: {controllerName: isthmus.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default, generation: 2}
spec:
  gatewayClassName: isthmus
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: '*.example.com'}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: bad, port: 81, protocol: UDP}
";

fn status(text: &str) -> GatewayApiStatus {
    let loaded = load_str("t.yaml", &format!("{BASE}---\n{text}")).unwrap();
    build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    )
    .snapshot
    .gateway_status
}

fn route(parent: &str, hostname: &str, backend: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default, generation: 5}}
spec:
  parentRefs: [{parent}]
  hostnames: ['{hostname}']
  rules: [{{backendRefs: [{backend}]}}]
"
    )
}

const GOOD: &str = "{name: a, port: 8080}";

/// (parentRef, hostname, backendRef, the parent's (Accepted, ResolvedRefs) reasons if any)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<(AcceptedReason, RefsReason)>,
);

#[test]
fn class_and_gateway_conditions_and_listeners() {
    let s = status(&route("{name: gw}", "www.example.com", GOOD));
    assert_eq!(s.classes.len(), 1);
    assert_eq!(s.classes[0].generation, Some(3));
    assert!(s.classes[0].conditions[0].status);
    let g = s.gateway("default", "gw").unwrap();
    assert_eq!(g.generation, Some(2));
    let conds: Vec<(&str, bool)> = g.conditions.iter().map(|c| (c.kind, c.status)).collect();
    assert_eq!(conds, [("Accepted", true), ("Programmed", true)]);
    let listeners: Vec<(&str, usize, Vec<&str>, bool)> = g
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.attached_routes,
                l.supported_kinds.clone(),
                l.conditions
                    .iter()
                    .any(|c| c.kind == "Programmed" && c.status),
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("http", 1, vec!["HTTPRoute", "GRPCRoute"], true),
            ("tcp", 0, vec!["TCPRoute"], true),
            ("bad", 0, vec![], false),
        ]
    );
}

/// A listener's conditions as `Type=Status/Reason`, in the order of the specification's list.
fn listener_conditions(s: &GatewayApiStatus, gateway: &str, listener: &str) -> Vec<String> {
    let g = s.gateway("default", gateway).unwrap();
    let l = g.listeners.iter().find(|l| l.name == listener).unwrap();
    l.conditions
        .iter()
        .map(|c| {
            format!(
                "{}={}/{}",
                c.kind,
                if c.status { "True" } else { "False" },
                c.reason
            )
        })
        .collect()
}

#[test]
fn listener_conditions_name_why_a_listener_is_not_served() {
    let s = status(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: lg, namespace: default}
spec:
  gatewayClassName: isthmus
  listeners:
  - {name: ok, port: 8080, protocol: HTTP}
  - {name: same-host-a, port: 8081, protocol: HTTP, hostname: a.example.com}
  - {name: same-host-b, port: 8081, protocol: HTTP, hostname: a.example.com}
  - {name: plain, port: 8082, protocol: HTTP}
  - {name: stream, port: 8082, protocol: TCP}
  - {name: only-bad-kinds, port: 8083, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: some-bad-kinds, port: 8084, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: TLSRoute}]}}
  - {name: good-cert, port: 8443, protocol: HTTPS, hostname: g.example.com, tls: {certificateRefs: [{name: cert}]}}
  - {name: missing-cert, port: 8443, protocol: HTTPS, hostname: m.example.com, tls: {certificateRefs: [{name: nope}]}}
  - {name: not-a-secret, port: 8443, protocol: HTTPS, hostname: w.example.com, tls: {certificateRefs: [{group: example.com, kind: Cert, name: x}]}}
  - {name: no-grant, port: 8443, protocol: HTTPS, hostname: f.example.com, tls: {certificateRefs: [{name: cert, namespace: other}]}}
  - {name: udp, port: 5353, protocol: UDP}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: default}
stringData: {tls.crt: C, tls.key: K}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: other}
stringData: {tls.crt: C, tls.key: K}
",
    );
    let served = [
        "Accepted=True/Accepted",
        "Programmed=True/Programmed",
        "ResolvedRefs=True/ResolvedRefs",
        "Conflicted=False/NoConflicts",
    ];
    let cases: &[(&str, [&str; 4])] = &[
        ("ok", served),
        ("good-cert", served),
        (
            "same-host-a",
            [
                "Accepted=False/HostnameConflict",
                "Programmed=False/Invalid",
                "ResolvedRefs=True/ResolvedRefs",
                "Conflicted=True/HostnameConflict",
            ],
        ),
        (
            "same-host-b",
            [
                "Accepted=False/HostnameConflict",
                "Programmed=False/Invalid",
                "ResolvedRefs=True/ResolvedRefs",
                "Conflicted=True/HostnameConflict",
            ],
        ),
        (
            "plain",
            [
                "Accepted=False/ProtocolConflict",
                "Programmed=False/Invalid",
                "ResolvedRefs=True/ResolvedRefs",
                "Conflicted=True/ProtocolConflict",
            ],
        ),
        (
            "stream",
            [
                "Accepted=False/ProtocolConflict",
                "Programmed=False/Invalid",
                "ResolvedRefs=True/ResolvedRefs",
                "Conflicted=True/ProtocolConflict",
            ],
        ),
        (
            "only-bad-kinds",
            [
                "Accepted=True/Accepted",
                "Programmed=True/Programmed",
                "ResolvedRefs=False/InvalidRouteKinds",
                "Conflicted=False/NoConflicts",
            ],
        ),
        (
            "some-bad-kinds",
            [
                "Accepted=True/Accepted",
                "Programmed=True/Programmed",
                "ResolvedRefs=False/InvalidRouteKinds",
                "Conflicted=False/NoConflicts",
            ],
        ),
        (
            "missing-cert",
            [
                "Accepted=True/Accepted",
                "Programmed=False/Invalid",
                "ResolvedRefs=False/InvalidCertificateRef",
                "Conflicted=False/NoConflicts",
            ],
        ),
        (
            "not-a-secret",
            [
                "Accepted=True/Accepted",
                "Programmed=False/Invalid",
                "ResolvedRefs=False/InvalidCertificateRef",
                "Conflicted=False/NoConflicts",
            ],
        ),
        (
            "no-grant",
            [
                "Accepted=True/Accepted",
                "Programmed=False/Invalid",
                "ResolvedRefs=False/RefNotPermitted",
                "Conflicted=False/NoConflicts",
            ],
        ),
        (
            "udp",
            [
                "Accepted=False/UnsupportedProtocol",
                "Programmed=False/Invalid",
                "ResolvedRefs=True/ResolvedRefs",
                "Conflicted=False/NoConflicts",
            ],
        ),
    ];
    for (listener, want) in cases {
        assert_eq!(listener_conditions(&s, "lg", listener), want, "{listener}");
    }
    // Refused listeners still say which kinds they would admit; bad kinds are left out.
    let g = s.gateway("default", "lg").unwrap();
    let kinds = |name: &str| {
        g.listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.supported_kinds.clone())
            .unwrap()
    };
    assert_eq!(kinds("missing-cert"), ["HTTPRoute", "GRPCRoute"]);
    assert_eq!(kinds("stream"), ["TCPRoute"]);
    assert!(kinds("only-bad-kinds").is_empty());
    assert_eq!(kinds("some-bad-kinds"), ["HTTPRoute"]);
    // The message says what is wrong, as the diagnostic does.
    let missing = g
        .listeners
        .iter()
        .find(|l| l.name == "missing-cert")
        .unwrap();
    assert!(
        missing.conditions[2].message.contains("nope"),
        "{:?}",
        missing.conditions
    );
    // Some listeners are served: the Gateway is accepted, saying that not all are valid.
    assert_eq!(
        gateway_conditions(g),
        [
            ("Accepted", true, "ListenersNotValid"),
            ("Programmed", true, "Programmed")
        ]
    );
}

/// A Gateway's own conditions as `(type, status, reason)`.
fn gateway_conditions(
    g: &crate::gateway_status::GatewayStatus,
) -> Vec<(&'static str, bool, &'static str)> {
    g.conditions
        .iter()
        .map(|c| (c.kind, c.status, c.reason))
        .collect()
}

#[test]
fn a_gateway_without_a_valid_listener_is_not_accepted() {
    let s = status(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: none, namespace: default}
spec:
  gatewayClassName: isthmus
  listeners: [{name: udp, port: 5353, protocol: UDP}]
",
    );
    let g = s.gateway("default", "none").unwrap();
    assert_eq!(
        gateway_conditions(g),
        [
            ("Accepted", false, "ListenersNotValid"),
            ("Programmed", false, "Invalid")
        ]
    );
}

#[test]
fn route_parent_reasons() {
    let cases: &[Case<'_>] = &[
        (
            "{name: gw}",
            "www.example.com",
            GOOD,
            Some((AcceptedReason::Accepted, RefsReason::ResolvedRefs)),
        ),
        (
            "{name: gw}",
            "www.other.org",
            GOOD,
            Some((
                AcceptedReason::NoMatchingListenerHostname,
                RefsReason::ResolvedRefs,
            )),
        ),
        (
            "{name: gw, sectionName: tcp}",
            "www.example.com",
            GOOD,
            Some((
                AcceptedReason::NotAllowedByListeners,
                RefsReason::ResolvedRefs,
            )),
        ),
        (
            "{name: gw, sectionName: nope}",
            "www.example.com",
            GOOD,
            Some((AcceptedReason::NoMatchingParent, RefsReason::ResolvedRefs)),
        ),
        (
            "{name: gw}",
            "www.example.com",
            "{name: missing, port: 8080}",
            Some((AcceptedReason::Accepted, RefsReason::BackendNotFound)),
        ),
        (
            "{name: gw}",
            "www.example.com",
            "{name: c, namespace: other, port: 8080}",
            Some((AcceptedReason::Accepted, RefsReason::RefNotPermitted)),
        ),
        (
            "{name: gw}",
            "www.example.com",
            "{group: example.com, kind: Bucket, name: x, port: 1}",
            Some((AcceptedReason::Accepted, RefsReason::InvalidKind)),
        ),
        // Parents that are not this instance's Gateways get no status from it.
        ("{name: elsewhere}", "www.example.com", GOOD, None),
        (
            "{group: '', kind: Service, name: a}",
            "www.example.com",
            GOOD,
            None,
        ),
    ];
    for (parent, host, backend, want) in cases {
        let s = status(&route(parent, host, backend));
        let got = s.route("HTTPRoute", "default", "r").map(|r| {
            assert_eq!(r.generation, Some(5));
            assert_eq!(r.parents.len(), 1);
            (r.parents[0].accepted, r.parents[0].refs)
        });
        assert_eq!(got, *want, "{parent} {host} {backend}");
    }
}

#[test]
fn status_json_has_the_api_shape() {
    let s = status(&route(
        "{name: gw, sectionName: http}",
        "www.example.com",
        GOOD,
    ));
    let objects = s.objects();
    let r = objects.iter().find(|o| o.kind == "HTTPRoute").unwrap();
    let parent = &r.status["parents"][0];
    assert_eq!(parent["controllerName"], "isthmus.io/gateway-controller");
    assert_eq!(
        parent["parentRef"],
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                           "namespace": "default", "name": "gw", "sectionName": "http"})
    );
    assert_eq!(parent["conditions"][0]["type"], "Accepted");
    assert_eq!(parent["conditions"][0]["status"], "True");
    assert_eq!(parent["conditions"][0]["observedGeneration"], 5);
    assert_eq!(parent["conditions"][1]["reason"], "ResolvedRefs");
    let g = objects.iter().find(|o| o.kind == "Gateway").unwrap();
    assert_eq!(g.status["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(
        g.status["listeners"][0]["supportedKinds"][0],
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"})
    );
    assert!(
        objects
            .iter()
            .any(|o| o.kind == "GatewayClass" && o.namespace.is_empty())
    );
}

#[test]
fn a_class_of_another_controller_gets_no_status() {
    let loaded = load_str(
        "t.yaml",
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: isthmus}
spec: {controllerName: example.com/other}
",
    )
    .unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    assert_eq!(b.snapshot.gateway_status, GatewayApiStatus::default());
}
