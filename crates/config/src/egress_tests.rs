//! Table tests of forward-proxy ports: the outbound registry, mesh rules and the diagnostics
//! of the annotation and of ServiceEntry resolutions.

use isthmus_api::load::load_str;

use crate::build::{LastGood, build};
use crate::egress::{OutboundDecision, PASSTHROUGH_CLUSTER};
use crate::instance::{Instance, OutboundPolicy};
use crate::matching::RequestView;
use crate::snapshot::{ActionKind, EndpointSource, Snapshot};

const EGRESS: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: egress
  namespace: istio-system
  annotations: {isthmus.io/forward-proxy: '3128'}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 3128, name: proxy, protocol: HTTP}
    hosts: ['*']
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.example.com]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wiki, namespace: default}
spec:
  hosts: ['*.wikipedia.org']
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
";

fn egress_instance(policy: OutboundPolicy) -> Instance {
    let mut i = Instance {
        outbound_policy: policy,
        ..Instance::default()
    };
    i.labels.insert("istio".into(), "egressgateway".into());
    i
}

fn compile(extra: &str, policy: OutboundPolicy) -> (Snapshot, Vec<String>) {
    let text = format!("{EGRESS}---\n{extra}");
    let loaded = load_str("e.yaml", &text).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &egress_instance(policy),
    );
    let mut diags: Vec<String> = loaded
        .diagnostics
        .iter()
        .chain(&b.diagnostics)
        .map(ToString::to_string)
        .collect();
    diags.sort();
    (b.snapshot, diags)
}

fn decision(s: &Snapshot, port: u16, host: &str, to: u16) -> String {
    let outbound = s.listeners[&port].outbound.as_ref().unwrap();
    match outbound.decide(host, to) {
        OutboundDecision::Registered(svc) => svc.cluster_name.clone(),
        OutboundDecision::Passthrough(r) => format!("{} ({})", r.name, PASSTHROUGH_CLUSTER),
        OutboundDecision::Blocked => "blocked".into(),
    }
}

#[test]
fn forward_proxy_ports_carry_the_registry_and_the_policy() {
    let (s, diags) = compile("", OutboundPolicy::AllowAny);
    assert_eq!(diags, Vec::<String>::new());
    assert!(s.listeners[&80].outbound.is_none(), "port 80 is not marked");
    let cases = [
        ("api.example.com", 80, "outbound|80||api.example.com"),
        ("api.example.com", 443, "outbound|443||api.example.com"),
        ("de.wikipedia.org", 443, "outbound|443||*.wikipedia.org"),
        ("api.example.com", 8080, "allow_any (PassthroughCluster)"),
        ("other.org", 80, "allow_any (PassthroughCluster)"),
    ];
    for (host, port, want) in cases {
        assert_eq!(decision(&s, 3128, host, port), want, "{host}:{port}");
    }
    let (s, _) = compile("", OutboundPolicy::RegistryOnly);
    assert_eq!(decision(&s, 3128, "other.org", 80), "blocked");
    assert_eq!(
        decision(&s, 3128, "api.example.com", 80),
        "outbound|80||api.example.com"
    );
    let wiki = s
        .clusters
        .iter()
        .find(|c| c.name == "outbound|443||*.wikipedia.org")
        .unwrap();
    assert_eq!(
        wiki.endpoints,
        EndpointSource::OriginalDestination { port: Some(443) }
    );
}

/// `domain: route name [port] -> clusters` of a port's route table.
fn routes(s: &Snapshot, port: u16) -> Vec<String> {
    s.listeners[&port]
        .virtual_hosts
        .hosts
        .iter()
        .flat_map(|vh| {
            vh.routes.iter().map(move |r| {
                let to = match &r.action.kind {
                    ActionKind::Forward(f) => f
                        .destinations
                        .iter()
                        .map(|d| d.cluster_name.clone())
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => format!("{other:?}"),
                };
                format!("{}: {} {:?} -> {to}", vh.domain, r.name, r.matcher.port)
            })
        })
        .collect()
}

#[test]
fn mesh_rules_apply_on_forward_proxy_ports_only() {
    let vs = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-timeout, namespace: default}
spec:
  hosts: [api.example.com]
  http:
  - name: slow
    match: [{port: 80}]
    timeout: 3s
    route: [{destination: {host: api.example.com, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: through-egress, namespace: istio-system}
spec:
  hosts: [api.example.com]
  gateways: [egress, mesh]
  http:
  - name: to-egress
    match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: egress.istio-system.svc.cluster.local}}]
  - name: out
    match: [{gateways: [egress], port: 80}]
    route: [{destination: {host: api.example.com, port: {number: 80}}}]
";
    let (s, diags) = compile(vs, OutboundPolicy::AllowAny);
    // The mesh rule of `through-egress` names a service that is not defined: it would be
    // reported if it were compiled; it is not, since the VirtualService names the Gateway.
    assert!(
        diags.iter().all(|d| !d.contains("egress.istio-system")),
        "{diags:#?}"
    );
    assert_eq!(
        routes(&s, 80),
        ["api.example.com: out None -> outbound|80||api.example.com"]
    );
    assert_eq!(
        routes(&s, 3128),
        ["api.example.com: slow Some(80) -> outbound|80||api.example.com"]
    );
    let vh = s.listeners[&3128]
        .virtual_hosts
        .find("api.example.com")
        .unwrap();
    let headers = http::HeaderMap::new();
    let view = |authority| RequestView {
        method: "GET",
        scheme: "http",
        authority,
        path: "/",
        query: None,
        headers: &headers,
    };
    assert!(vh.find(&view("api.example.com")).is_some());
    let other = view("api.example.com:8080");
    assert!(vh.find(&other).is_none());
    assert_eq!(
        vh.routes[0].matcher.why_not(&other).unwrap().reason,
        "port 80 does not match \"8080\""
    );
}

#[test]
fn annotation_and_resolution_diagnostics() {
    let text = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bad
  annotations: {isthmus.io/forward-proxy: '3128,,x'}
spec:
  servers:
  - port: {number: 3128, name: proxy, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: listed
  annotations: {isthmus.io/forward-proxy: 'tls, 9999'}
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ['*']
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none-with-endpoints}
spec:
  hosts: [a.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-wildcard}
spec:
  hosts: ['*.example.org']
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: round-robin}
spec:
  hosts: [rr.example.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
  endpoints: [{address: a.example.org}, {address: b.example.org}]
";
    let loaded = load_str("d.yaml", text).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let diags: Vec<String> = b.diagnostics.iter().map(ToString::to_string).collect();
    let has = |needle: &str| {
        assert!(
            diags.iter().any(|d| d.contains(needle)),
            "no diagnostic with {needle:?} in {diags:#?}"
        )
    };
    has(
        "d.yaml:6: error: Gateway default/bad: metadata.annotations.isthmus.io/forward-proxy: \"3128,,x\" is not",
    );
    has(
        "warning: Gateway default/listed: metadata.annotations.isthmus.io/forward-proxy: \"9999\" is neither the port number nor the port name of a server",
    );
    has(
        "warning: Gateway default/listed: spec.servers[0].port.protocol: isthmus.io/forward-proxy names this TLS server, but only plaintext HTTP servers can be forward proxies",
    );
    has(
        "error: ServiceEntry default/none-with-endpoints: spec.endpoints: no endpoints may be given with resolution NONE",
    );
    has("error: ServiceEntry default/dns-wildcard: spec.hosts[0]: \"*.example.org\" is a wildcard");
    has(
        "error: ServiceEntry default/round-robin: spec.endpoints: resolution DNS_ROUND_ROBIN takes at most one endpoint",
    );
}
