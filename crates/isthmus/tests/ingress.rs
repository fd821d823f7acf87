//! Kubernetes Ingress end to end, translated as Istio translates it: class selection, the
//! path types and their order across Ingresses, the default backend, named ports, TLS from
//! `secretName`, and what `validate` and `explain` say about Ingresses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;

use support::*;

/// The ServiceEntry standing for Service `shop/NAME` with ports 8080 (`http`) and 9090
/// (`admin`), both reaching `addr`.
fn service_entry(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: [{name}.shop.svc.cluster.local]
  ports:
  - {{number: 8080, name: http, protocol: HTTP, targetPort: {port}}}
  - {{number: 9090, name: admin, protocol: HTTP, targetPort: {port}}}
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
",
        port = addr.port(),
        ip = addr.ip()
    )
}

const SHOP: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: shop}
spec:
  ingressClassName: isthmus
  defaultBackend: {service: {name: fallback, port: {number: 8080}}}
  tls: [{hosts: [shop.example.com], secretName: shop-cert}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
      - {path: /legacy/*, pathType: ImplementationSpecific, backend: {service: {name: legacy, port: {number: 8080}}}}
";

/// A second Ingress for the same host: its paths join the first's, longest first.
const ADMIN: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: admin
  namespace: shop
  annotations: {kubernetes.io/ingress.class: isthmus}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /api/admin, pathType: Exact, backend: {service: {name: admin, port: {name: admin}}}}
";

/// A third Ingress of another controller's class.
const OTHER: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: shop}
spec:
  ingressClassName: nginx
  rules:
  - host: other.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 8080}}}}]}
";

async fn files(pki: &Pki) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for name in ["web", "api", "legacy", "admin", "fallback"] {
        let addr = backend(name).await;
        files.push((format!("svc-{name}.yaml"), service_entry(name, addr)));
    }
    let secret = tls_secret("shop-cert", &pki.server(&["shop.example.com"]), None)
        .replace("istio-system", "shop");
    files.push(("secret.yaml".into(), secret));
    files.push(("shop.yaml".into(), SHOP.into()));
    files.push(("admin.yaml".into(), ADMIN.into()));
    files.push(("other.yaml".into(), OTHER.into()));
    files
}

fn outcome(r: &Reply) -> String {
    match (r.status, r.backend()) {
        (200, Some(b)) => b.to_string(),
        (status, _) => status.to_string(),
    }
}

#[tokio::test]
async fn ingress_paths_route_in_istio_order_over_http_and_https() {
    let pki = Pki::new("ingress");
    let files = files(&pki).await;
    let g = start_files_with(&files, &["--bind", "443=127.0.0.1:0"]).await;
    let cases = [
        ("shop.example.com", "/", "web"),
        ("shop.example.com", "/cart", "web"),
        ("shop.example.com", "/api", "api"),
        ("shop.example.com", "/api/items", "api"),
        // Prefix is by whole segments.
        ("shop.example.com", "/apis", "web"),
        // The second Ingress's exact path is longer, so it comes first.
        ("shop.example.com", "/api/admin", "admin"),
        ("shop.example.com", "/api/admin/x", "api"),
        // ImplementationSpecific `/legacy/*` is Istio's plain prefix.
        ("shop.example.com", "/legacy/old", "legacy"),
        ("shop.example.com", "/legacyish", "legacy"),
        // The default backend takes other hosts; another class's host is not served.
        ("elsewhere.example.com", "/anything", "fallback"),
        ("other.example.com", "/", "fallback"),
    ];
    let url = g.url(80, "").await;
    let mut wrong = Vec::new();
    for (host, path, want) in cases {
        let got = outcome(&get(&format!("{url}{path}"), host, &[]).await);
        if got != want {
            wrong.push(format!("{host}{path}: got {got}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\n{}",
        g.admin_get("/routes?format=text").await.1
    );
    // HTTPS with the certificate of `secretName`, the same routes.
    let addr = g.addr(443).await;
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([pki.reqwest_certificate()])
        .resolve("shop.example.com", addr)
        .timeout(WAIT)
        .build()
        .unwrap();
    for (path, want) in [("/api/items", "api"), ("/api/admin", "admin"), ("/", "web")] {
        let r = https
            .get(format!("https://shop.example.com:{}{path}", addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(outcome(&Reply::from(r).await), want, "https {path}");
    }
    assert!(
        g.diagnostics()
            .await
            .iter()
            .any(|d| d.contains("Ingress shop/other")
                && d.contains("Ingress class nginx is not this instance's")),
        "{:#?}",
        g.diagnostics().await
    );
}

#[tokio::test]
async fn the_ingress_class_flag_chooses_which_ingresses_are_served() {
    let pki = Pki::new("ingress");
    let files = files(&pki).await;
    let g = start_files_with(&files, &["--ingress-class", "nginx"]).await;
    let url = g.url(80, "/").await;
    assert_eq!(outcome(&get(&url, "other.example.com", &[]).await), "web");
    assert_eq!(outcome(&get(&url, "shop.example.com", &[]).await), "404");
}

#[test]
fn validate_and_explain_cover_ingresses() {
    let bad = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, namespace: shop}
spec:
  ingressClassName: isthmus
  rules:
  - host: 10.0.0.1
    http:
      paths:
      - {path: relative, pathType: Prefix, backend: {service: {name: web, port: {number: 8080, name: http}}}}
";
    let out = validate_files(&[("bad.yaml", bad)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let file = out.file("bad.yaml");
    for line in [
        "7: error: Ingress shop/bad: spec.rules[0].host: host \"10.0.0.1\" is an IP address",
        "10: error: Ingress shop/bad: spec.rules[0].http.paths[0].path: path \"relative\" must start with /",
        "10: error: Ingress shop/bad: spec.rules[0].http.paths[0].backend.service.port: set exactly one of name and number",
    ] {
        assert!(
            out.has_prefix(&format!("{file}:{line}")),
            "{line}\n{}",
            out.lines.join("\n")
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.yaml"), SHOP).unwrap();
    std::fs::write(dir.path().join("admin.yaml"), ADMIN).unwrap();
    let admin = service_entry("admin", "127.0.0.1:9".parse().unwrap());
    std::fs::write(dir.path().join("svc.yaml"), admin).unwrap();
    let out = explain_in(dir.path(), &["http://shop.example.com/api/admin"]);
    for needle in [
        "Listener   port 80 (HTTP)",
        "MATCH #0 Ingress shop/admin spec.rules[0].http.paths[0]",
        "outbound|9090||admin.shop.svc.cluster.local",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle}\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// The example of the README (examples/ingress), with the demo backend's port replaced by a
/// local backend: it validates cleanly and routes as documented.
#[tokio::test]
async fn the_ingress_example_validates_and_routes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ingress");
    let out = run_isthmus(&["validate".as_ref(), path.as_os_str()]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    let text = std::fs::read_to_string(path.join("httpbin.yaml")).unwrap();
    let b = backend("httpbin").await;
    let text = text.replace("targetPort: 9081", &format!("targetPort: {}", b.port()));
    let g = Gateway::start(&[("httpbin.yaml", &text)]).await;
    let r = get(&g.url(80, "/status/418").await, "httpbin.example.com", &[]).await;
    assert_eq!((r.status, r.backend()), (418, Some("httpbin")));
}
