use super::*;

fn load(text: &str) -> LoadedFile {
    match load_str("f.yaml", text) {
        Ok(l) => l,
        Err(e) => panic!("unexpected syntax error: {e}"),
    }
}

fn rendered(l: &LoadedFile) -> Vec<String> {
    l.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn loads_every_kind_with_namespace_default() {
    let l = load(
        "apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: vs, namespace: prod}
spec: {hosts: [a.example.com], gateways: [gw]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec: {host: a, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec: {hosts: [a.example.com], resolution: STATIC, endpoints: [{address: 127.0.0.1}]}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: AAAA, tls.key: BBBB}
",
    );
    assert_eq!(rendered(&l), Vec::<String>::new());
    let keys: Vec<String> = l.resources.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(
        keys,
        [
            "Gateway default/gw",
            "VirtualService prod/vs",
            "DestinationRule default/dr",
            "ServiceEntry default/se",
            "Secret istio-system/cert"
        ]
    );
    let ordinals: Vec<usize> = l.resources.iter().map(|r| r.origin().ordinal).collect();
    assert_eq!(ordinals, [1, 2, 3, 4, 5]);
}

#[test]
fn diagnostics_name_file_line_resource_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [a]
  htttp: []
",
            "f.yaml:6: warning: VirtualService default/vs: spec.htttp: unknown field `htttp` (ignored; check the spelling)",
        ),
        (
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  http:
  - route:
    - destination:
        host: a
        port: {numbr: 80}
",
            "f.yaml:9: warning: VirtualService default/vs: spec.http[0].route[0].destination.port.numbr: unknown field `numbr` (ignored; check the spelling)",
        ),
        (
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port:
      number: eighty
",
            "f.yaml:7: error: Gateway default/gw: spec.servers[0].port.number: invalid type: string \"eighty\", expected u32; object rejected",
        ),
        (
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  http:
  - timeout: soon
",
            "f.yaml:6: error: VirtualService default/vs: spec.http[0].timeout: invalid duration \"soon\": expected a number with a unit (h, m, s, ms, us, ns), such as 1.5s; object rejected",
        ),
        (
            "apiVersion: networking.istio.io/v3
kind: Gateway
metadata: {name: gw}
",
            "f.yaml:1: error: Gateway -: apiVersion: unsupported version v3 of networking.istio.io Gateway (expected v1, v1beta1 or v1alpha3); object skipped",
        ),
        (
            "apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
",
            "f.yaml:1: note: Deployment -: kind: apps/v1 Deployment is not a kind Isthmus reads; skipped",
        ),
        (
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {namespace: x}
",
            "f.yaml:3: error: Gateway x/-: metadata.name: metadata.name is required; object skipped",
        ),
        (
            "- just\n- a list\n",
            "f.yaml:1: error: -: -: expected a Kubernetes object (a mapping with apiVersion and kind)",
        ),
        (
            "kind: Gateway\nmetadata: {name: x}\n",
            "f.yaml:1: error: -: apiVersion: object has no apiVersion; skipped",
        ),
    ];
    for (text, want) in cases {
        let l = load(text);
        assert_eq!(rendered(&l), vec![want.to_string()], "{text}");
    }
}

#[test]
fn rejected_objects_are_listed() {
    let l = load(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {servers: 3}
",
    );
    assert!(l.resources.is_empty());
    assert_eq!(l.rejected.len(), 1);
    assert_eq!(l.rejected[0].to_string(), "Gateway default/gw");
}

#[test]
fn list_items_are_loaded_with_their_own_lines() {
    let l = load(
        "apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata: {name: a}
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata: {name: b}
  spec:
    servers:
    - prot: {}
",
    );
    assert_eq!(l.resources.len(), 2);
    assert_eq!(l.resources[1].origin().line(), 7);
    assert_eq!(
        rendered(&l),
        [
            "f.yaml:12: warning: Gateway default/b: spec.servers[0].prot: unknown field `prot` (ignored; check the spelling)"
        ]
    );
}

#[test]
fn syntax_errors_fail_the_whole_file_with_a_line() {
    let err = match load_str("f.yaml", "a: 1\n---\nb: [1\nc: 2\n") {
        Ok(_) => panic!("expected a syntax error"),
        Err(e) => e.0,
    };
    assert_eq!(err.line, 4);
    assert!(
        err.message.starts_with("YAML syntax error"),
        "{}",
        err.message
    );
}

#[test]
fn loads_gateway_api_ingress_and_cluster_scoped_kinds() {
    let l = load(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: isthmus, namespace: ignored}
spec: {controllerName: isthmus.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: isthmus
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    timeouts: {request: 1m30s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec: {rules: [{matches: [{method: {service: a.B}}]}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: t}
spec: {hostnames: [a.example.com]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t}
spec: {rules: [{backendRefs: [{name: s, port: 9000}]}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: infra}
spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], to: [{group: '', kind: Service}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i}
spec: {ingressClassName: isthmus, rules: [{host: a.example.com}]}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: isthmus}
spec: {controller: isthmus.io/ingress-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra, labels: {team: a}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: u}
---
apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata: {name: old}
",
    );
    let keys: Vec<String> = l.resources.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(
        keys,
        [
            "GatewayClass isthmus",
            "Gateway.gateway.networking.k8s.io infra/gw",
            "HTTPRoute default/r",
            "GRPCRoute default/g",
            "TLSRoute default/t",
            "TCPRoute default/t",
            "ReferenceGrant infra/g",
            "Ingress default/i",
            "IngressClass isthmus",
            "Namespace infra",
        ]
    );
    assert_eq!(
        rendered(&l),
        [
            "f.yaml:56: note: UDPRoute -: kind: gateway.networking.k8s.io/v1alpha2 UDPRoute is not a kind Isthmus reads; skipped",
            "f.yaml:60: error: Ingress -: apiVersion: unsupported version v1beta1 of networking.k8s.io Ingress (expected v1); object skipped",
        ]
    );
    let Some(Resource::HttpRoute(r)) = l.resources.get(2).map(|r| &**r) else {
        panic!("no HTTPRoute")
    };
    let timeout = r.spec.rules[0].timeouts.as_ref().and_then(|t| t.request);
    assert_eq!(timeout.map(|d| d.0.as_secs()), Some(90));
    assert_eq!(r.origin.line_of("spec.rules[0].timeouts.request"), 20);
}

#[test]
fn gateway_api_duration_errors_name_the_field() {
    let l = load(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules:
  - timeouts: {request: 1.5s}
",
    );
    assert_eq!(l.rejected.len(), 1);
    assert!(
        rendered(&l)
            .first()
            .is_some_and(|d| d.starts_with("f.yaml:6: error: HTTPRoute default/r: spec.rules[0].timeouts.request: invalid duration \"1.5s\"")),
        "{:?}",
        rendered(&l)
    );
}

#[test]
fn acceptance_manifests_load_without_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/acceptance-data");
    let dirs = ["istio", "gateway-api"].into_iter().flat_map(|set| {
        let Ok(dirs) = std::fs::read_dir(root.join(set)) else {
            // The shared folder sits beside the repository on developer machines and in CI.
            panic!("acceptance data missing at {}", root.display());
        };
        dirs
    });
    let mut loaded = 0;
    for dir in dirs.flatten() {
        let path = dir.path().join("config.yaml");
        let l = match load_file(&path) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let errors: Vec<_> = l
            .diagnostics
            .iter()
            .filter(|d| d.severity != Severity::Note)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        loaded += l.resources.len();
    }
    assert!(loaded > 150, "only {loaded} resources loaded");
}

#[test]
fn a_big_file_loads_in_parts_as_it_loads_whole() {
    let vs = |i: usize| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v{i}}}\nspec:\n  hosts: [h{i}]\n  http:\n{}",
            "  - route: [{destination: {host: b}}]\n".repeat(40)
        )
    };
    let mut docs: Vec<String> = (0..800).map(vs).collect();
    // A type error and an unknown field far down the file: their lines must be the file's.
    docs[700] = docs[700].replace("hosts: [h700]", "hosts: h700");
    docs[750] = docs[750].replace("  http:", "  htp: 1\n  http:");
    let text = docs.join("---\n");
    assert!(text.len() > PARALLEL_BYTES);
    assert!(
        split_documents(&text).len() > 1
            || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    );
    let parts = load(&text);
    let whole = load_documents(&Arc::from("f.yaml"), crate::fast::parse(&text, 1).unwrap()).0;
    assert_eq!(parts.resources, whole.resources);
    assert_eq!(parts.rejected, whole.rejected);
    assert_eq!(rendered(&parts), rendered(&whole));
    assert_eq!(parts.resources.len(), 799);
    let ordinals: Vec<usize> = parts.resources.iter().map(|r| r.origin().ordinal).collect();
    assert_eq!(
        ordinals,
        (1..=800).filter(|o| *o != 701).collect::<Vec<_>>()
    );
    assert_eq!(rendered(&parts).len(), 2, "{:?}", rendered(&parts));
}

#[test]
fn splits_only_at_document_markers() {
    let text = format!(
        "a: 1\n{}---\nb: 2\n--- # c\nc: 3\n----\n",
        "x: y\n".repeat(PARALLEL_BYTES / 4)
    );
    let parts = split_documents(&text);
    for (part, line) in &parts[1..] {
        assert!(
            part.starts_with("---\n") || part.starts_with("--- "),
            "{part:.20}"
        );
        assert_eq!(
            text.lines().nth(line - 1).unwrap(),
            part.lines().next().unwrap()
        );
    }
    let joined: String = parts.iter().map(|p| p.0).collect();
    assert_eq!(joined, text);
}
