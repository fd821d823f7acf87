//! Table tests of the Ingress translation: YAML in, route tables and diagnostics out.

use isthmus_api::load::load_str;

use crate::build::{LastGood, build};
use crate::explain::brief;
use crate::instance::Instance;
use crate::snapshot::Snapshot;
use crate::tls::ChainRoutes;

/// Services `web` (ports 8080 `http` and 9090 `admin`) and `api` in namespace `shop`.
const BASE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local, api.shop.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: admin, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
";

fn compile(text: &str) -> (Snapshot, Vec<String>) {
    let loaded = load_str("t.yaml", &format!("{BASE}---\n{text}")).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let diags = loaded
        .diagnostics
        .iter()
        .chain(&b.diagnostics)
        .map(ToString::to_string)
        .collect();
    (b.snapshot, diags)
}

/// `domain: match -> action` for every route of port 80.
fn table(s: &Snapshot) -> Vec<String> {
    let Some(l) = s.listeners.get(&80) else {
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

fn ingress(name: &str, meta: &str, spec: &str) -> String {
    format!(
        "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: shop{meta}}}
spec:
{spec}"
    )
}

const WEB: &str = "outbound|8080||web.shop.svc.cluster.local";
const API: &str = "outbound|8080||api.shop.svc.cluster.local";

#[test]
fn ingresses_of_this_class_only() {
    let spec = |class: &str| {
        format!(
            "  {class}
  rules: [{{host: a.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 8080}}}}}}}}]}}}}]
"
        )
    };
    let class = |name: &str, controller: &str, default: bool| {
        let annotation = if default {
            ", annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}"
        } else {
            ""
        };
        format!(
            "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: {name}{annotation}}}
spec: {{controller: {controller}}}
"
        )
    };
    let cases = [
        (ingress("i", "", &spec("ingressClassName: isthmus")), true),
        (ingress("i", "", &spec("ingressClassName: nginx")), false),
        (
            ingress(
                "i",
                ", annotations: {kubernetes.io/ingress.class: isthmus}",
                &spec(""),
            ),
            true,
        ),
        (
            ingress(
                "i",
                ", annotations: {kubernetes.io/ingress.class: istio}",
                &spec("ingressClassName: isthmus"),
            ),
            false,
        ),
        (
            format!(
                "{}{}",
                ingress("i", "", &spec("ingressClassName: mine")),
                class("mine", "isthmus.io/ingress-controller", false)
            ),
            true,
        ),
        (
            format!(
                "{}{}",
                ingress("i", "", &spec("ingressClassName: isthmus")),
                class("isthmus", "example.com/other", false)
            ),
            false,
        ),
        (ingress("i", "", &spec("")), false),
        (
            format!(
                "{}{}",
                ingress("i", "", &spec("")),
                class("mine", "isthmus.io/ingress-controller", true)
            ),
            true,
        ),
    ];
    for (text, served) in cases {
        let (s, diags) = compile(&text);
        assert_eq!(!table(&s).is_empty(), served, "{text}\n{diags:#?}");
        if !served {
            assert!(
                diags
                    .iter()
                    .any(|d| d.contains("is not this instance's (isthmus")),
                "{diags:#?}"
            );
        }
    }
}

#[test]
fn paths_of_all_ingresses_of_a_host_longest_first() {
    let first = ingress(
        "first",
        "",
        "  ingressClassName: isthmus
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
      - {path: /legacy/*, pathType: ImplementationSpecific, backend: {service: {name: web, port: {name: http}}}}
",
    );
    let second = ingress(
        "second",
        "",
        "  ingressClassName: isthmus
  defaultBackend: {service: {name: web, port: {number: 8080}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api, pathType: Exact, backend: {service: {name: web, port: {name: admin}}}}
      - {path: /static, pathType: Exact, backend: {service: {name: web, port: {number: 8080}}}}
",
    );
    let (s, diags) = compile(&format!("{first}{second}"));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(
        table(&s),
        [
            format!("*: any request -> forward {WEB}"),
            format!("shop.example.com: uri exact \"/static\" -> forward {WEB}"),
            format!("shop.example.com: uri prefix \"/legacy\" -> forward {WEB}"),
            "shop.example.com: uri exact \"/api\" -> forward outbound|9090||web.shop.svc.cluster.local".to_string(),
            format!("shop.example.com: uri path prefix \"/api\" -> forward {API}"),
            format!("shop.example.com: uri path prefix \"/\" -> forward {WEB}"),
        ]
    );
}

#[test]
fn unknown_services_and_resource_backends_are_reported() {
    let text = ingress(
        "i",
        "",
        "  ingressClassName: isthmus
  rules:
  - http:
      paths:
      - {path: /missing, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
      - {path: /bucket, pathType: Prefix, backend: {resource: {apiGroup: k8s.example.com, kind: Bucket, name: b}}}
      - {path: /port, pathType: Prefix, backend: {service: {name: web, port: {name: nope}}}}
",
    );
    let (s, diags) = compile(&text);
    assert_eq!(
        table(&s),
        [
            "*: uri path prefix \"/missing\" -> forward outbound|80||nope.shop.svc.cluster.local",
            "*: uri path prefix \"/port\" -> forward outbound|||web.shop.svc.cluster.local",
        ]
    );
    for needle in [
        "spec.rules[0].http.paths[0].backend.service: no ServiceEntry defines host nope.shop.svc.cluster.local",
        "spec.rules[0].http.paths[1].backend.resource: resource backends are not supported",
        "spec.rules[0].http.paths[2].backend.service: service web.shop.svc.cluster.local has no port named \"nope\"; requests to it answer 503",
    ] {
        assert!(
            diags.iter().any(|d| d.contains(needle)),
            "{needle}: {diags:#?}"
        );
    }
}

#[test]
fn tls_entries_are_https_servers_with_their_secret() {
    let text = format!(
        "{}---
apiVersion: v1
kind: Secret
metadata: {{name: shop-cert, namespace: shop}}
stringData: {{tls.crt: C, tls.key: K}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gateway-cert, namespace: istio-system}}
stringData: {{tls.crt: C, tls.key: K}}
",
        ingress(
            "i",
            "",
            "  ingressClassName: isthmus
  tls:
  - {hosts: [shop.example.com], secretName: shop-cert}
  - {hosts: ['*.example.org'], secretName: gateway-cert}
  - {hosts: [missing.example.com], secretName: nowhere}
  rules:
  - host: shop.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}]}
  - host: a.example.org
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}]}
  - http: {paths: [{path: /any, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}]}
",
        )
    );
    let (s, diags) = compile(&text);
    let l = s.listeners.get(&443).unwrap();
    let chains: Vec<String> = l
        .chains
        .iter()
        .map(|c| {
            let ChainRoutes::Http(vh) = &c.routes else {
                panic!("not HTTP")
            };
            let domains: Vec<&str> = vh.hosts.iter().map(|h| h.domain.as_str()).collect();
            format!("{} -> {}", c.server_names.join(","), domains.join(","))
        })
        .collect();
    // The rule without a host is served on every SNI name, as that name.
    assert_eq!(
        chains,
        [
            "shop.example.com -> shop.example.com",
            "*.example.org -> *.example.org,a.example.org",
        ]
    );
    let Some(ChainRoutes::Http(vh)) = l.chains.first().map(|c| &c.routes) else {
        panic!("no chain")
    };
    let routes: Vec<String> = vh
        .hosts
        .iter()
        .flat_map(|h| h.routes.iter().map(|r| r.matcher.describe()))
        .collect();
    assert_eq!(
        routes,
        ["uri path prefix \"/any\"", "uri path prefix \"/\""]
    );
    assert!(
        diags.iter().any(|d| d.contains(
            "spec.tls[2].secretName: Secret nowhere is in neither namespace shop nor istio-system"
        )),
        "{diags:#?}"
    );
}
