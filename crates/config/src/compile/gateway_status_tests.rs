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
                l.conditions.iter().all(|c| c.status),
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
