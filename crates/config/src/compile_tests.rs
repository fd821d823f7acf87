//! Table tests of compilation: YAML in, route tables and diagnostics out.

use isthmus_api::load::load_str;

use crate::build::{LastGood, build};
use crate::instance::Instance;
use crate::snapshot::{ActionKind, EndpointSource, Snapshot};

const GATEWAY: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.svc, b.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}}
  - {address: 127.0.0.2, ports: {http: 9002}, labels: {version: v2}}
";

fn compile_yaml(extra: &str) -> (Snapshot, Vec<String>) {
    let text = format!("{GATEWAY}---\n{extra}");
    let loaded = load_str("t.yaml", &text).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
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

/// `domain: route-name -> cluster names` for every route of port 80.
fn table(s: &Snapshot) -> Vec<String> {
    let Some(l) = s.listeners.get(&80) else {
        return vec![];
    };
    l.virtual_hosts
        .hosts
        .iter()
        .flat_map(|vh| {
            vh.routes.iter().map(move |r| {
                let dests: Vec<String> = match &r.action.kind {
                    ActionKind::Forward(f) => f
                        .destinations
                        .iter()
                        .map(|d| format!("{}@{}", d.cluster_name, d.weight))
                        .collect(),
                    other => vec![format!("{other:?}")],
                };
                format!("{}: {} -> {}", vh.domain, r.name, dests.join(" "))
            })
        })
        .collect()
}

#[test]
fn host_intersection_and_merge_in_creation_order_with_catch_alls_last() {
    let (s, diags) = compile_yaml(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: first}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - name: all-a
    route: [{destination: {host: a.svc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: second}
spec:
  hosts: [a.example.com, '*.example.com']
  gateways: [default/gw]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: b.svc}}]
",
    );
    assert_eq!(diags, Vec::<String>::new());
    assert_eq!(
        table(&s),
        [
            "*.example.com: api -> outbound|80||b.svc@1",
            "a.example.com: api -> outbound|80||b.svc@1",
            "a.example.com: all-a -> outbound|80||a.svc@1",
        ]
    );
}

#[test]
fn subsets_select_endpoints_and_weights_are_kept() {
    let (s, diags) = compile_yaml(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a.svc
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route:
    - {destination: {host: a.svc, subset: v1}, weight: 80}
    - {destination: {host: a.svc, subset: v2}, weight: 20}
",
    );
    assert_eq!(diags, Vec::<String>::new());
    assert_eq!(
        table(&s),
        ["*:  -> outbound|80|v1|a.svc@80 outbound|80|v2|a.svc@20"]
    );
    let addrs: Vec<String> = s
        .clusters
        .iter()
        .map(|c| match &c.endpoints {
            EndpointSource::Static(e) => format!(
                "{} {}",
                c.name,
                e.iter()
                    .map(|e| e.address.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            EndpointSource::Dns(_) | EndpointSource::OriginalDestination { .. } => c.name.clone(),
        })
        .collect();
    assert_eq!(
        addrs,
        [
            "outbound|80|v1|a.svc 127.0.0.1:9001",
            "outbound|80|v2|a.svc 127.0.0.2:9002"
        ]
    );
}

#[test]
fn unresolvable_destinations_are_diagnosed_and_answer_503() {
    let (s, diags) = compile_yaml(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ['*']
  gateways: [gw, missing]
  http:
  - match: [{uri: {prefix: /x}}]
    route: [{destination: {host: a.svc, subset: v9}}]
  - route: [{destination: {host: nowhere}}]
",
    );
    assert_eq!(
        diags,
        [
            "t.yaml:28: warning: VirtualService default/vs: spec.gateways[1]: Gateway default/missing is not defined by any loaded resource",
            "t.yaml:31: error: VirtualService default/vs: spec.http[0].route[0].destination.subset: subset \"v9\" is not defined by any DestinationRule for host a.svc; requests to it answer 503",
            "t.yaml:32: warning: VirtualService default/vs: spec.http[1].route[0].destination.host: no ServiceEntry defines host nowhere.default.svc.cluster.local; requests to it answer 503",
        ]
    );
    let ActionKind::Forward(f) = &s.listeners[&80].virtual_hosts.hosts[0].routes[0]
        .action
        .kind
    else {
        panic!("not a forward")
    };
    assert!(f.destinations[0].cluster.is_none());
}

#[test]
fn gateways_for_other_instances_and_unsupported_fields() {
    let (s, diags) = compile_yaml(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 81, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{destination: {host: a.svc}}]
    retries: {attempts: 3, retryRemoteLocalities: true}
",
    );
    assert_eq!(s.listeners.keys().copied().collect::<Vec<_>>(), [80]);
    assert_eq!(
        diags,
        [
            "t.yaml:40: warning: VirtualService default/vs: spec.http[0].retries.retryRemoteLocalities: field is not acted on by this version of Isthmus (ignored)"
        ]
    );
}

#[test]
fn invalid_resources_keep_their_last_good_version() {
    let good = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {regex: '/ok/.*'}}]
    route: [{destination: {host: a.svc}}]
";
    let text = format!("{GATEWAY}---\n{good}");
    let first = load_str("t.yaml", &text).unwrap();
    let b1 = build(
        &first.resources,
        &first.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let bad = text.replace("'/ok/.*'", "'/ok/(['");
    let second = load_str("t.yaml", &bad).unwrap();
    let b2 = build(
        &second.resources,
        &second.rejected,
        &b1.accepted,
        &Instance::default(),
    );
    let msgs: Vec<String> = b2
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.severity, d.message))
        .collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("error: invalid regex")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("last good version keeps serving")),
        "{msgs:?}"
    );
    assert_eq!(table(&b2.snapshot), table(&b1.snapshot));
    assert_eq!(table(&b2.snapshot).len(), 1);
}

#[test]
fn validation_errors() {
    let cases = [
        (
            "kind: Gateway\nmetadata: {name: g2}\nspec: {servers: [{port: {number: 70000, protocol: HTTP}, hosts: ['a..b']}]}",
            vec![
                "spec.servers[0].port.number: port number 70000 is not in 1..65535",
                "spec.servers[0].hosts[0]: invalid host",
            ],
        ),
        (
            "kind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [a], http: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a}}]}]}",
            vec!["spec.http[0].match[0].uri: exact, prefix and regex are mutually exclusive"],
        ),
        (
            "kind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [a], http: [{match: [{headers: {End-User: {exact: x}}}], route: [{destination: {host: a}}]}]}",
            vec![
                "spec.http[0].match[0].headers.End-User: header name \"End-User\" must be lower-case",
            ],
        ),
        (
            "kind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}}]}]}",
            vec![
                "spec.http[0].route: with several destinations, at least one needs a weight above 0",
            ],
        ),
        (
            "kind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [a], http: [{name: nothing}]}",
            vec![
                "spec.http[0]: an HTTP route needs one of route, redirect, directResponse or delegate",
            ],
        ),
        (
            "kind: ServiceEntry\nmetadata: {name: s}\nspec: {hosts: [x.com], resolution: STATIC, ports: [{number: 80, name: http}], endpoints: [{address: x.com}]}",
            vec!["spec.endpoints[0].address: \"x.com\" is not an IP address"],
        ),
        (
            "kind: Gateway\nmetadata: {name: g3}\nspec: {servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.com], tls: {mode: MUTUAL, verifyCertificateHash: ['12:34'], verifyCertificateSpki: ['c2hvcnQ=']}}]}",
            vec![
                "spec.servers[0].tls.verifyCertificateHash[0]: \"12:34\" is not hex",
                "spec.servers[0].tls.verifyCertificateSpki[0]: \"c2hvcnQ=\" holds 5 bytes; a SHA-256 digest has 32",
            ],
        ),
        (
            "kind: DestinationRule\nmetadata: {name: d}\nspec: {host: a, subsets: [{name: v1}, {name: v1}]}",
            vec!["spec.subsets[1].name: duplicate subset name \"v1\""],
        ),
    ];
    for (doc, wants) in cases {
        let text = format!("apiVersion: networking.istio.io/v1\n{doc}\n");
        let loaded = load_str("t.yaml", &text).unwrap();
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &Instance::default(),
        );
        let errors: Vec<String> = b
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        assert_eq!(errors.len(), wants.len(), "{doc}: {errors:?}");
        for (got, want) in errors.iter().zip(&wants) {
            assert!(got.starts_with(want), "{doc}: got {got:?}, want {want:?}");
        }
        assert!(
            b.accepted.is_empty(),
            "{doc}: an invalid resource was accepted"
        );
    }
}

#[test]
fn upstream_protocol_follows_the_port_protocol_and_destination_rules() {
    use crate::snapshot::UpstreamProtocol::{Client, Http1, Http2};
    // The service port's protocol, then the DestinationRule merged as Istio merges it: a
    // matching portLevelSettings entry replaces the top level, a subset's policy replaces
    // both, and a subset's own matching port-level entry replaces that.
    let cases = [
        ("HTTP", "", Http1),
        ("HTTP2", "", Http2),
        ("GRPC", "", Http2),
        ("grpc-web", "", Http2),
        ("TCP", "", Http1),
        (
            "HTTP",
            "trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}",
            Http2,
        ),
        (
            "HTTP2",
            "trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}}",
            Http2,
        ),
        (
            "GRPC",
            "trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}",
            Client,
        ),
        (
            "HTTP",
            "trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}, portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {maxConnections: 5}}}]}",
            Http1,
        ),
        (
            "HTTP",
            "trafficPolicy: {portLevelSettings: [{port: {number: 81}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}]}",
            Http1,
        ),
        (
            "HTTP",
            "trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}\n  subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {useClientProtocol: false}}}}]",
            Http1,
        ),
        (
            "HTTP",
            "subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}, portLevelSettings: [{port: {number: 80}, connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}]}}]",
            Http2,
        ),
    ];
    for (protocol, policy, want) in cases {
        let subset = if policy.contains("subsets") {
            ", subset: v1"
        } else {
            ""
        };
        let (s, diags) = compile_yaml(&format!(
            "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: p}}
spec:
  hosts: [p.svc]
  ports: [{{number: 80, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.3, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: p}}
spec:
  host: p.svc
  {policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: p.svc{subset}}}}}]
"
        ));
        let errors: Vec<&String> = diags.iter().filter(|d| d.contains("error")).collect();
        assert!(errors.is_empty(), "{protocol} {policy}: {errors:?}");
        assert_eq!(s.clusters.len(), 1, "{protocol} {policy}");
        assert_eq!(s.clusters[0].protocol, want, "{protocol} {policy}");
    }
}

#[test]
fn client_certificate_checks_are_compiled_and_bad_pins_name_their_line() {
    let hash = "AB:".repeat(31) + "AB";
    let spki = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let server = |mode: &str, hash: &str| {
        format!(
            "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: tls, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [a.example.com]
    tls:
      mode: {mode}
      serverCertificate: /c.pem
      privateKey: /k.pem
      caCertificates: /ca.pem
      subjectAltNames: [spiffe://cluster.local/ns/default/sa/client]
      verifyCertificateSpki:
      - {spki}
      verifyCertificateHash:
      - '{hash}'
"
        )
    };
    let (s, diags) = compile_yaml(&server("MUTUAL", &hash));
    assert_eq!(diags, Vec::<String>::new());
    let chain = &s.listeners[&443].chains[0];
    let crate::tls::ChainTls::Terminate(t) = &chain.tls else {
        panic!("not terminated: {chain:?}");
    };
    assert_eq!(
        t.client_checks.subject_alt_names,
        ["spiffe://cluster.local/ns/default/sa/client"]
    );
    assert_eq!(t.client_checks.cert_sha256[0].to_string(), "ab".repeat(32));
    assert_eq!(t.client_checks.spki_sha256[0].0[31], 31);

    // SIMPLE requests no client certificate: the checks are reported and dropped.
    let (s, diags) = compile_yaml(&server("SIMPLE", &hash));
    let crate::tls::ChainTls::Terminate(t) = &s.listeners[&443].chains[0].tls else {
        panic!("not terminated");
    };
    assert!(t.client_checks.is_empty());
    assert_eq!(diags.len(), 3, "{diags:?}");
    assert!(
        diags[0].contains("warning: Gateway default/tls: spec.servers[0].tls.subjectAltNames: client certificates are checked in MUTUAL and OPTIONAL_MUTUAL modes only"),
        "{diags:?}"
    );

    // A pin that is not a digest rejects the Gateway, with the file and line of the entry.
    let (s, diags) = compile_yaml(&server("MUTUAL", "not-a-hash"));
    assert!(!s.listeners.contains_key(&443));
    assert!(
        diags.iter().any(|d| d.starts_with(
            "t.yaml:40: error: Gateway default/tls: spec.servers[0].tls.verifyCertificateHash[0]: \"not-a-hash\" is not hex"
        )),
        "{diags:?}"
    );
}
