//! The Kubernetes Gateway API end to end: the conformance suite's own manifests (from the
//! shared acceptance data, `{GATEWAY_CLASS_NAME}` replaced by `isthmus`) served by the real
//! binary, checked with the requests and expected responses of the suite's tests
//! (kubernetes-sigs/gateway-api `conformance/tests/*.go`).
//!
//! The suite's Services are ServiceEntries for `NAME.NAMESPACE.svc.cluster.local` (how file
//! mode resolves a Service) whose endpoint is a local backend answering as `NAME`; its
//! Namespaces are loaded with their labels. Backends echo the request (headers with repeated
//! values joined, path and query) and name themselves in `x-backend`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::*;

const INFRA: &str = "gateway-conformance-infra";

// === Fixtures ===

/// A conformance scenario's manifests, with Isthmus's GatewayClass.
fn scenario(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/acceptance-data/gateway-api")
        .join(name)
        .join("config.yaml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .replace("{GATEWAY_CLASS_NAME}", "isthmus")
}

/// The suite's namespaces, with the labels its Gateways select on.
const NAMESPACES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-infra, labels: {gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: backend}}
";

/// The ServiceEntry standing for Service `namespace/name` (one port, one endpoint).
fn service_entry(
    namespace: &str,
    name: &str,
    port: u16,
    protocol: &str,
    addr: SocketAddr,
) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}.{namespace}.svc.cluster.local]
  ports: [{{number: {port}, name: p, protocol: {protocol}, targetPort: {}}}]
  resolution: STATIC
  endpoints: [{{address: {}}}]
",
        addr.port(),
        addr.ip()
    )
}

/// The suite's HTTP backends (`infra-backend-v1` to `-v3`, and `web-backend` in its own
/// namespace) as echo backends, with their ServiceEntries and the Namespaces.
async fn base() -> Vec<(String, String)> {
    let mut files = vec![("namespaces.yaml".to_string(), NAMESPACES.to_string())];
    for (ns, name) in [
        (INFRA, "infra-backend-v1"),
        (INFRA, "infra-backend-v2"),
        (INFRA, "infra-backend-v3"),
        ("gateway-conformance-web-backend", "web-backend"),
    ] {
        let addr = backend_joined(name).await;
        files.push((
            format!("svc-{name}.yaml"),
            service_entry(ns, name, 8080, "HTTP", addr),
        ));
    }
    files
}

/// Starts a gateway on a scenario and the base (plus `extra` files and arguments), and
/// checks that the configuration has no error.
async fn start(name: &str, extra: Vec<(String, String)>, args: &[&str]) -> Gateway {
    let mut files = base().await;
    files.extend(extra);
    files.push(("scenario.yaml".into(), scenario(name)));
    let g = start_files_with(&files, args).await;
    let errors: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains(": error:"))
        .collect();
    assert!(
        errors.is_empty(),
        "{name}: configuration errors: {errors:#?}"
    );
    g
}

// === Requests and expectations ===

/// One request of a conformance table and what must answer it.
#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    /// A backend name, or a status code.
    want: String,
}

fn get(path: &'static str) -> Case {
    Case {
        method: "GET",
        host: "example.com",
        path,
        headers: Vec::new(),
        want: String::new(),
    }
}

impl Case {
    fn host(mut self, host: &'static str) -> Case {
        self.host = host;
        self
    }

    fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    fn to(mut self, backend: &str) -> Case {
        self.want = backend.to_string();
        self
    }

    fn status(mut self, status: u16) -> Case {
        self.want = status.to_string();
        self
    }

    async fn send(&self, client: &reqwest::Client, addr: SocketAddr) -> Reply {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut rb = client
            .request(method, format!("http://{addr}{}", self.path))
            .header("host", self.host);
        for (k, v) in &self.headers {
            rb = rb.header(*k, *v);
        }
        Reply::from(rb.send().await.unwrap()).await
    }
}

/// The backend that answered with 200, or else the status.
fn outcome(r: &Reply) -> String {
    match (r.status, r.backend()) {
        (200, Some(b)) => b.to_string(),
        (status, _) => status.to_string(),
    }
}

/// Sends every case to Gateway port `port` and reports every mismatch at once.
async fn check(g: &Gateway, port: u16, cases: &[Case]) {
    let client = client_no_redirects();
    let addr = g.addr(port).await;
    let mut wrong = Vec::new();
    for c in cases {
        let got = outcome(&c.send(&client, addr).await);
        if got != c.want {
            wrong.push(format!(
                "  {} {} Host: {} {:?}: got {got}, want {}",
                c.method, c.path, c.host, c.headers, c.want
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} requests answered wrongly:\n{}\nroutes:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        g.admin_get("/routes?format=text").await.1
    );
}

const V1: &str = "infra-backend-v1";
const V2: &str = "infra-backend-v2";
const V3: &str = "infra-backend-v3";

// === Matching ===

#[tokio::test]
async fn path_header_query_and_method_matches_with_their_precedence() {
    let tables: Vec<(&str, Vec<Case>)> = vec![
        (
            "httproute-matching",
            vec![
                get("/").to(V1),
                get("/example").to(V1),
                get("/").header("version", "one").to(V1),
                get("/v2").to(V2),
                get("/v2/example").to(V2),
                get("/").header("version", "two").to(V2),
                get("/v2/").to(V2),
                get("/v2example").to(V1),
                get("/foo/v2/example").to(V1),
            ],
        ),
        (
            "httproute-path-match-order",
            vec![
                get("/match/exact/one").to(V3),
                get("/match/exact").to(V2),
                get("/match").to(V1),
                get("/match/prefix/one/any").to(V2),
                get("/match/prefix/any").to(V1),
                get("/match/any").to(V3),
            ],
        ),
        (
            "httproute-exact-path-matching",
            vec![
                get("/one").to(V1),
                get("/two").to(V2),
                get("/").status(404),
                get("/one/example").status(404),
                get("/two/").status(404),
            ],
        ),
        (
            "httproute-method-matching",
            vec![
                get("/").method("POST").to(V1),
                get("/").to(V2),
                get("/").method("HEAD").status(404),
                get("/path1").to(V1),
                get("/").method("PUT").header("version", "one").to(V2),
                get("/path2").method("POST").header("version", "two").to(V3),
                get("/path3").method("PATCH").to(V1),
                get("/path4")
                    .method("DELETE")
                    .header("version", "three")
                    .to(V1),
                get("/").method("PUT").status(404),
                get("/path4").method("DELETE").status(404),
                get("/path5").method("PATCH").to(V1),
                get("/").method("PATCH").header("version", "four").to(V2),
            ],
        ),
        (
            "httproute-query-param-matching",
            vec![
                get("/?animal=whale").to(V1),
                get("/?animal=dolphin").to(V2),
                get("/?animal=dolphin&color=blue").to(V3),
                get("/?ANIMAL=Whale").to(V3),
                get("/?animal=whale&otherparam=irrelevant").to(V1),
                get("/?animal=dolphin&color=yellow").to(V2),
                get("/?color=blue").status(404),
                get("/?animal=dog").status(404),
                get("/?animal=whaledolphin").status(404),
                get("/").status(404),
                get("/path1?animal=whale").to(V1),
                get("/?animal=whale").header("version", "one").to(V2),
                get("/path2?animal=whale").header("version", "two").to(V3),
                get("/path3?animal=shark").to(V1),
                get("/path4?animal=kraken")
                    .header("version", "three")
                    .to(V1),
                get("/?animal=shark").status(404),
                get("/path4?animal=kraken").status(404),
                get("/path5?animal=hydra").to(V1),
                get("/?animal=hydra").header("version", "four").to(V3),
            ],
        ),
        (
            "httproute-header-matching",
            vec![
                get("/").header("Version", "one").to(V1),
                get("/").header("Version", "two").to(V2),
                get("/")
                    .header("Version", "two")
                    .header("Color", "orange")
                    .to(V1),
                get("/")
                    .header("Version", "two")
                    .header("Color", "blue")
                    .to(V2),
                get("/").header("Color", "orange").status(404),
                get("/").header("Some-Other-Header", "one").status(404),
                get("/").header("Color", "blue").to(V1),
                get("/").header("Color", "green").to(V1),
                get("/").header("Color", "red").to(V2),
                get("/").header("Color", "yellow").to(V2),
                get("/").header("Color", "purple").status(404),
            ],
        ),
        (
            "httproute-matching-across-routes",
            vec![
                get("/").host("example.com").to(V1),
                get("/").host("example.net").to(V1),
                get("/example").host("example.com").to(V1),
                get("/v2").host("example.com").to(V2),
                get("/v2").host("example.net").to(V1),
                get("/").host("example.com").header("version", "two").to(V2),
                get("/").host("example.net").header("version", "two").to(V1),
                get("/").host("example.org").status(404),
            ],
        ),
    ];
    for (name, cases) in tables {
        let g = start(name, Vec::new(), &[]).await;
        check(&g, 80, &cases).await;
    }
}

#[tokio::test]
async fn hostnames_intersect_with_listeners_and_listeners_are_isolated() {
    let g = start("httproute-listener-hostname-matching", Vec::new(), &[]).await;
    check(
        &g,
        80,
        &[
            get("/").host("bar.com").to(V1),
            get("/").host("foo.bar.com").to(V2),
            get("/").host("baz.bar.com").to(V3),
            get("/").host("boo.bar.com").to(V3),
            get("/").host("multiple.prefixes.bar.com").to(V3),
            get("/").host("multiple.prefixes.foo.com").to(V3),
            get("/").host("foo.com").status(404),
            get("/").host("no.matching.host").status(404),
        ],
    )
    .await;
    drop(g);
    let g = start("httproute-hostname-intersection", Vec::new(), &[]).await;
    check(
        &g,
        80,
        &[
            get("/s1").host("very.specific.com").to(V1),
            // The Host's port does not take part in matching.
            get("/s1").host("very.specific.com:1234").to(V1),
            get("/s1").host("non.matching.com").status(404),
            get("/s1").host("foo.nonmatchingwildcard.io").status(404),
            get("/s1").host("foo.wildcard.io").status(404),
            get("/non-matching-prefix")
                .host("very.specific.com")
                .status(404),
            get("/s2").host("foo.wildcard.io").to(V2),
            get("/s2").host("bar.wildcard.io").to(V2),
            get("/s2").host("foo.bar.wildcard.io").to(V2),
            get("/s2").host("wildcard.io").status(404),
            get("/s2").host("very.specific.com").status(404),
            get("/s3").host("very.specific.com").to(V3),
            get("/s3").host("foo.specific.com").status(404),
            get("/s4").host("foo.anotherwildcard.io").to(V1),
            get("/s4").host("bar.anotherwildcard.io").to(V1),
        ],
    )
    .await;
    drop(g);
    // Listener isolation (GatewayHTTPListenerIsolation): a request is routed by the most
    // specific listener whose hostname covers it, and only by its routes.
    let g = start("gateway-http-listener-isolation", Vec::new(), &[]).await;
    check(
        &g,
        80,
        &[
            get("/empty-hostname").host("bar.com").to(V1),
            get("/empty-hostname").host("foo.example.com").status(404),
            get("/empty-hostname")
                .host("abc.foo.example.com")
                .status(404),
            get("/wildcard-example-com").host("foo.example.com").to(V1),
            get("/wildcard-example-com")
                .host("bar.foo.example.com")
                .status(404),
            get("/wildcard-example-com")
                .host("abc.foo.example.com")
                .status(404),
            get("/wildcard-foo-example-com")
                .host("bar.foo.example.com")
                .to(V1),
            get("/wildcard-foo-example-com")
                .host("abc.foo.example.com")
                .status(404),
            get("/abc-foo-example-com")
                .host("abc.foo.example.com")
                .to(V1),
            get("/abc-foo-example-com").host("bar.com").status(404),
        ],
    )
    .await;
}

// === Backends ===

/// How many of `n` GETs of `path` each backend (or status) answered.
async fn tally(g: &Gateway, path: &str, n: usize) -> BTreeMap<String, usize> {
    let client = client();
    let url = g.url(80, path).await;
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let resp = client
            .get(&url)
            .header("host", "example.com")
            .send()
            .await
            .unwrap();
        let r = Reply::from(resp).await;
        *counts.entry(outcome(&r)).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_backends_split_traffic_and_weight_zero_gets_none() {
    let g = start("httproute-weight", Vec::new(), &[]).await;
    let n = 400;
    let counts = tally(&g, "/", n).await;
    let share = |b: &str| counts.get(b).copied().unwrap_or(0) as f64 / n as f64;
    // 70/30/0, with a tolerance far beyond the binomial deviation (about 2.3%).
    assert!((share(V1) - 0.7).abs() < 0.1, "{counts:?}");
    assert!((share(V2) - 0.3).abs() < 0.1, "{counts:?}");
    assert_eq!(counts.get(V3), None, "{counts:?}");
}

#[tokio::test]
async fn invalid_and_missing_backends_answer_500_for_their_share() {
    let g = start("httproute-invalid-nonexistent-backendref", Vec::new(), &[]).await;
    check(
        &g,
        80,
        &[get("/").status(500), get("/any/path").status(500)],
    )
    .await;
    drop(g);
    let g = start("httproute-omitted-backendrefs", Vec::new(), &[]).await;
    check(
        &g,
        80,
        &[
            get("/forward").to(V1),
            get("/omitted-no-forward").status(500),
            get("/empty-no-forward").status(500),
        ],
    )
    .await;
    drop(g);
    // One valid and one unknown backend of equal weight: about half the requests answer 500.
    let split = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - matches: [{{path: {{value: /split}}}}]
    backendRefs:
    - {{name: {V1}, port: 8080}}
    - {{name: nonexistent-too, port: 8080}}
    - {{group: example.com, kind: Bucket, name: x}}
"
    );
    let g = start(
        "httproute-invalid-nonexistent-backendref",
        vec![("split.yaml".into(), split)],
        &[],
    )
    .await;
    let n = 300;
    let counts = tally(&g, "/split", n).await;
    let ok = counts.get(V1).copied().unwrap_or(0) as f64 / n as f64;
    let failed = counts.get("500").copied().unwrap_or(0) as f64 / n as f64;
    assert!((ok - 1.0 / 3.0).abs() < 0.1, "{counts:?}");
    assert!((failed - 2.0 / 3.0).abs() < 0.1, "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    let prom = g.prometheus().await;
    assert!(
        metric_sum(
            &prom,
            "istio_requests_total",
            &[("response_code", "500"), ("response_flags", "NC")]
        ) > 0.0,
        "{prom}"
    );
}

#[tokio::test]
async fn cross_namespace_backends_need_a_reference_grant() {
    // The route lives in the backend's namespace, which the listener selects by label.
    let g = start("httproute-cross-namespace", Vec::new(), &[]).await;
    check(&g, 80, &[get("/").to("web-backend")]).await;
    drop(g);
    // A route in the infra namespace reaching web-backend: 500 until a ReferenceGrant allows it.
    let route = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: reach, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - backendRefs: [{{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}}]
"
    );
    let g = start(
        "httproute-simple-same-namespace",
        vec![("reach.yaml".into(), route)],
        &[],
    )
    .await;
    check(&g, 80, &[get("/reach").status(500)]).await;
    assert!(
        g.diagnostics()
            .await
            .iter()
            .any(|d| d.contains("(RefNotPermitted)")),
        "{:#?}",
        g.diagnostics().await
    );
    let grant = format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: from-infra, namespace: gateway-conformance-web-backend}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {INFRA}}}]
  to: [{{group: '', kind: Service, name: web-backend}}]
"
    );
    g.write("grant.yaml", &grant).await;
    check(&g, 80, &[get("/reach").to("web-backend")]).await;
    // Removing the grant revokes the access at once.
    g.remove("grant.yaml").await;
    check(&g, 80, &[get("/reach").status(500)]).await;
}

// === Filters ===

/// The echo of the backend for a request, as a reply.
async fn echo(g: &Gateway, c: &Case) -> Reply {
    c.send(&client_no_redirects(), g.addr(80).await).await
}

#[tokio::test]
async fn request_and_response_header_modifiers() {
    let g = start("httproute-request-header-modifier", Vec::new(), &[]).await;
    let seen = |r: &Reply, name: &str| r.json()["headers"][name].as_str().map(str::to_string);
    let r = echo(&g, &get("/set").header("X-Header-Set", "some-other-value")).await;
    assert_eq!(
        seen(&r, "x-header-set").as_deref(),
        Some("set-overwrites-values"),
        "{r:?}"
    );
    let r = echo(&g, &get("/add").header("X-Header-Add", "some-other-value")).await;
    // `add` appends (the backend joins repeated values with ", ").
    assert_eq!(
        seen(&r, "x-header-add").as_deref(),
        Some("some-other-value, add-appends-values"),
        "{r:?}"
    );
    let r = echo(&g, &get("/remove").header("X-Header-Remove", "val")).await;
    assert_eq!(seen(&r, "x-header-remove"), None, "{r:?}");
    let r = echo(
        &g,
        &get("/multiple")
            .header("X-Header-Set-2", "set-val-2")
            .header("X-Header-Add-2", "add-val-2")
            .header("X-Header-Remove-2", "remove-val-2")
            .header("Another-Header", "another-header-val"),
    )
    .await;
    for (name, want) in [
        ("x-header-set-1", Some("header-set-1")),
        ("x-header-set-2", Some("header-set-2")),
        ("x-header-add-1", Some("header-add-1")),
        ("x-header-add-2", Some("add-val-2, header-add-2")),
        ("x-header-add-3", Some("header-add-3")),
        ("another-header", Some("another-header-val")),
        ("x-header-remove-1", None),
        ("x-header-remove-2", None),
    ] {
        assert_eq!(seen(&r, name).as_deref(), want, "{name}: {r:?}");
    }
    drop(g);

    let g = start("httproute-response-header-modifier", Vec::new(), &[]).await;
    let r = echo(&g, &get("/set")).await;
    assert_eq!(r.header("x-header-set"), Some("set-overwrites-values"));
    let r = echo(&g, &get("/response-headers?X-Header-Add=upstream")).await;
    assert_eq!(r.status, 404, "the /add route only; this path has no route");
    let r = echo(&g, &get("/add")).await;
    assert_eq!(r.all("x-header-add"), ["add-appends-values"]);
    let r = echo(&g, &get("/multiple")).await;
    assert_eq!(r.header("x-header-set-1"), Some("header-set-1"));
    assert_eq!(r.header("x-header-add-3"), Some("header-add-3"));
    drop(g);

    // Header modifiers on one backend of a weighted pair act only when it is picked.
    let g = start(
        "httproute-request-header-modifier-backend-weights",
        Vec::new(),
        &[],
    )
    .await;
    let mut by_backend: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for _ in 0..40 {
        let r = echo(&g, &get("/")).await;
        let b = r.backend().unwrap_or("?").to_string();
        by_backend.entry(b).or_default().push(seen(&r, "backend"));
    }
    assert!(by_backend.len() == 2, "{by_backend:?}");
    for (b, values) in &by_backend {
        assert!(
            values.iter().all(|v| v.as_deref() == Some(b.as_str())),
            "{by_backend:?}"
        );
    }
}

#[tokio::test]
async fn redirects_follow_the_gateway_api_rules() {
    let g = start("httproute-redirect-scheme", Vec::new(), &[]).await;
    let loc = |r: &Reply| r.header("location").unwrap_or("").to_string();
    let cases = [
        ("/scheme", 302, "https://example.com/scheme"),
        (
            "/scheme-and-host",
            302,
            "https://example.org/scheme-and-host",
        ),
        (
            "/scheme-and-status",
            301,
            "https://example.com/scheme-and-status",
        ),
        (
            "/scheme-and-host-and-status",
            302,
            "https://example.org/scheme-and-host-and-status",
        ),
    ];
    for (path, status, want) in cases {
        // The Host's port (here the client's) never carries over into the Location.
        let r = echo(&g, &get(path).host("example.com:8080")).await;
        assert_eq!((r.status, loc(&r).as_str()), (status, want), "{path}");
    }
    drop(g);
    let g = start("httproute-redirect-path", Vec::new(), &[]).await;
    let cases = [
        (
            "/original-prefix/lemon",
            302,
            "http://example.com/replacement-prefix/lemon",
        ),
        (
            "/full/path/original",
            302,
            "http://example.com/full-path-replacement",
        ),
        (
            "/path-and-host",
            302,
            "http://example.org/replacement-prefix",
        ),
        (
            "/path-and-status",
            301,
            "http://example.com/replacement-prefix",
        ),
        (
            "/full-path-and-host",
            302,
            "http://example.org/replacement-full",
        ),
        (
            "/full-path-and-status",
            301,
            "http://example.com/replacement-full",
        ),
    ];
    for (path, status, want) in cases {
        let r = echo(&g, &get(path)).await;
        assert_eq!((r.status, loc(&r).as_str()), (status, want), "{path}");
    }
    drop(g);
    let g = start("httproute-redirect-port", Vec::new(), &[]).await;
    let cases = [
        ("/port", 302, "http://example.com:8083/port"),
        (
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host",
        ),
        (
            "/port-and-status",
            301,
            "http://example.com:8083/port-and-status",
        ),
        (
            "/port-and-host-and-status",
            302,
            "http://example.org:8083/port-and-host-and-status",
        ),
    ];
    for (path, status, want) in cases {
        let r = echo(&g, &get(path)).await;
        assert_eq!((r.status, loc(&r).as_str()), (status, want), "{path}");
    }
    drop(g);
    for (name, status) in [
        ("httproute-redirect-host-and-status", 0),
        ("httproute-303-redirect", 303),
        ("httproute-307-redirect", 307),
        ("httproute-308-redirect", 308),
    ] {
        let g = start(name, Vec::new(), &[]).await;
        let routes = g.admin_get("/routes?format=text").await.1;
        let path = routes
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix('"')
                    .and_then(|w| w.strip_suffix('"'))
                    .filter(|w| w.starts_with('/'))
            })
            .unwrap_or_else(|| panic!("{name}: no path in {routes}"))
            .to_string();
        let r = echo(&g, &get(Box::leak(path.into_boxed_str()))).await;
        if status != 0 {
            assert_eq!(r.status, status, "{name}: {r:?}");
        }
        assert!(loc(&r).starts_with("http://"), "{name}: {r:?}");
    }
}

#[tokio::test]
async fn redirect_ports_follow_the_listener_and_the_scheme() {
    // HTTPRouteRedirectPortAndScheme: listeners on 80, 8080 and (HTTPS) 443.
    let pki = Pki::new("conformance");
    let secret = tls_secret(
        "tls-validity-checks-certificate",
        &pki.server(&["example.org"]),
        None,
    )
    .replace("istio-system", INFRA);
    let g = start(
        "httproute-redirect-port-and-scheme",
        vec![("secret.yaml".into(), secret)],
        &["--bind", "8080=127.0.0.1:0", "--bind", "443=127.0.0.1:0"],
    )
    .await;
    let loc = |r: &Reply| r.header("location").unwrap_or("").to_string();
    let on_80 = [
        (
            "/scheme-nil-and-port-nil",
            "http://example.org/scheme-nil-and-port-nil",
        ),
        (
            "/scheme-nil-and-port-80",
            "http://example.org/scheme-nil-and-port-80",
        ),
        (
            "/scheme-nil-and-port-8080",
            "http://example.org:8080/scheme-nil-and-port-8080",
        ),
        (
            "/scheme-https-and-port-nil",
            "https://example.org/scheme-https-and-port-nil",
        ),
        (
            "/scheme-https-and-port-443",
            "https://example.org/scheme-https-and-port-443",
        ),
        (
            "/scheme-https-and-port-8443",
            "https://example.org:8443/scheme-https-and-port-8443",
        ),
    ];
    let client = client_no_redirects();
    for (port, cases) in [(80, &on_80[..])] {
        let addr = g.addr(port).await;
        for (path, want) in cases {
            let r = get(Box::leak(path.to_string().into_boxed_str()))
                .send(&client, addr)
                .await;
            assert_eq!(
                (r.status, loc(&r).as_str()),
                (302, *want),
                "port {port} {path}"
            );
        }
    }
    let addr = g.addr(8080).await;
    let on_8080 = [
        (
            "/scheme-nil-and-port-nil",
            "http://example.org:8080/scheme-nil-and-port-nil",
        ),
        (
            "/scheme-nil-and-port-80",
            "http://example.org/scheme-nil-and-port-80",
        ),
        (
            "/scheme-https-and-port-nil",
            "https://example.org/scheme-https-and-port-nil",
        ),
    ];
    for (path, want) in on_8080 {
        let r = get(Box::leak(path.to_string().into_boxed_str()))
            .send(&client, addr)
            .await;
        assert_eq!(
            (r.status, loc(&r).as_str()),
            (302, want),
            "port 8080 {path}"
        );
    }
    // On the HTTPS listener (443) without a scheme, the scheme stays https and the port is
    // the listener's own, left out as https's default.
    let https = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([pki.reqwest_certificate()])
        .resolve("example.org", g.addr(443).await)
        .timeout(WAIT)
        .build()
        .unwrap();
    let port = g.addr(443).await.port();
    let r = https
        .get(format!(
            "https://example.org:{port}/scheme-nil-and-port-nil"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://example.org/scheme-nil-and-port-nil")
    );
}

#[tokio::test]
async fn url_rewrites_replace_the_host_and_path_segments() {
    let g = start("httproute-rewrite-path", Vec::new(), &[]).await;
    let seen_path = |r: &Reply| r.json()["path"].as_str().unwrap_or("").to_string();
    for (path, want) in [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
        ("/full/rewrite-path-and-modify-headers/test", "/test"),
        ("/prefix/rewrite-path-and-modify-headers/one", "/prefix/one"),
    ] {
        let r = echo(&g, &get(path)).await;
        assert_eq!(
            (r.backend(), seen_path(&r).as_str()),
            (Some(V1), want),
            "{path}: {r:?}"
        );
    }
    drop(g);
    // HTTPRouteBackendURLRewrite: the rewrite of one backend, after the rule's match.
    let g = start("httproute-backend-url-rewrite", Vec::new(), &[]).await;
    for (path, want) in [
        ("/full/original", "/rewritten-full"),
        ("/prefix/original", "/rewritten-prefix/original"),
    ] {
        let r = echo(&g, &get(path)).await;
        assert_eq!(
            (r.backend(), seen_path(&r).as_str()),
            (Some(V1), want),
            "{path}: {r:?}"
        );
    }
    drop(g);
    let g = start("httproute-rewrite-host", Vec::new(), &[]).await;
    let seen_host = |r: &Reply| {
        r.json()["headers"]["host"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for (path, backend, host) in [
        ("/one", V1, "one.example.org"),
        ("/two", V2, "example.org"),
        ("/rewrite-host-and-modify-headers", V2, "test.example.org"),
    ] {
        let r = echo(
            &g,
            &get(path)
                .host("rewrite.example")
                .header("X-Header-Remove", "x"),
        )
        .await;
        assert_eq!(
            (r.backend(), seen_host(&r).as_str()),
            (Some(backend), host),
            "{path}: {r:?}"
        );
    }
    let r = echo(
        &g,
        &get("/rewrite-host-and-modify-headers")
            .host("rewrite.example")
            .header("X-Header-Remove", "x"),
    )
    .await;
    assert_eq!(
        r.json()["headers"]["x-header-remove"],
        serde_json::Value::Null,
        "{r:?}"
    );
    assert_eq!(
        r.json()["headers"]["x-header-set"],
        "set-overwrites-values",
        "{r:?}"
    );
}

#[tokio::test]
async fn request_mirrors_copy_requests_to_other_backends() {
    // The mirror target records what it receives.
    let mirror = recording_backend(V2, |_| Answer::ok()).await;
    let g = {
        let mut files = vec![("namespaces.yaml".to_string(), NAMESPACES.to_string())];
        let v1 = backend_joined(V1).await;
        files.push(("v1.yaml".into(), service_entry(INFRA, V1, 8080, "HTTP", v1)));
        files.push((
            "v2.yaml".into(),
            service_entry(INFRA, V2, 8080, "HTTP", mirror.addr),
        ));
        files.push(("scenario.yaml".into(), scenario("httproute-request-mirror")));
        start_files(&files).await
    };
    let r = echo(&g, &get("/mirror")).await;
    assert_eq!(r.backend(), Some(V1));
    let copy = mirror.next().await;
    assert_eq!(copy.path, "/mirror");
    let r = echo(
        &g,
        &get("/mirror-and-modify-headers").header("X-Header-Remove", "x"),
    )
    .await;
    assert_eq!(r.backend(), Some(V1));
    let copy = mirror.next().await;
    assert_eq!(copy.path, "/mirror-and-modify-headers");
    // The mirror sees the request as modified by the rule's filters.
    assert_eq!(copy.header("x-header-set"), Some("set-overwrites-values"));
    assert_eq!(copy.header("x-header-remove"), None);
}

#[tokio::test]
async fn cors_preflights_and_actual_requests() {
    let g = start("httproute-cors", Vec::new(), &[]).await;
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| {
        get(path)
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "x-header-1, x-header-2")
    };
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let r = echo(&g, &preflight("/cors-1", origin, "GET")).await;
        assert!(matches!(r.status, 200 | 204), "{origin}: {r:?}");
        for (name, want) in [
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", "GET, OPTIONS"),
            ("access-control-allow-headers", "x-header-1, x-header-2"),
            ("access-control-expose-headers", "x-header-3, x-header-4"),
            ("access-control-max-age", "3600"),
            ("access-control-allow-credentials", "true"),
        ] {
            assert_eq!(r.header(name), Some(want), "{origin} {name}: {r:?}");
        }
    }
    let r = echo(&g, &preflight("/cors-1", "https://foobar.com", "GET")).await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    let r = echo(&g, &get("/cors-1").header("origin", "https://www.bar.com")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.bar.com")
    );
    let r = echo(&g, &get("/cors-1").header("origin", "https://foobar.com")).await;
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    // `*` methods echo the preflight's method; no credentials header unless allowed.
    let r = echo(&g, &preflight("/cors-2", "https://www.foo.com", "POST")).await;
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST"),
        "{r:?}"
    );
    assert_eq!(r.header("access-control-allow-credentials"), None, "{r:?}");
    // maxAge defaults to 5 seconds.
    assert_eq!(r.header("access-control-max-age"), Some("5"), "{r:?}");
    // A `*` origin admits any origin, and the origin is echoed.
    let r = echo(
        &g,
        &preflight("/cors-wildcard-origin", "https://foobar.com:12345", "PUT"),
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://foobar.com:12345"),
        "{r:?}"
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("PUT"),
        "{r:?}"
    );
}

// === Timeouts and retries ===

#[tokio::test]
async fn request_and_backend_request_timeouts_answer_504() {
    // The suite's `?delay=1s` is a header here: the recorder sees no query.
    let slow = |s: &Seen| {
        if s.header("x-delay").is_some() {
            Answer::ok().after(Duration::from_secs(1))
        } else {
            Answer::ok()
        }
    };
    for (name, timed, disabled) in [
        (
            "httproute-timeout-request",
            "/request-timeout",
            "/disable-request-timeout",
        ),
        (
            "httproute-timeout-backend-request",
            "/backend-timeout",
            "/disable-backend-timeout",
        ),
    ] {
        let b = recording_backend(V1, slow).await;
        let files = vec![
            ("namespaces.yaml".to_string(), NAMESPACES.to_string()),
            (
                "v1.yaml".into(),
                service_entry(INFRA, V1, 8080, "HTTP", b.addr),
            ),
            ("scenario.yaml".into(), scenario(name)),
        ];
        let g = start_files(&files).await;
        let cases = [
            get(timed).to(V1),
            get(timed).header("x-delay", "1s").status(504),
            get(disabled).header("x-delay", "1s").to(V1),
        ];
        check(&g, 80, &cases).await;
    }
}

#[tokio::test]
async fn retry_codes_and_attempts() {
    // Fails the first two attempts of every request with 500, then answers.
    let b = recording_backend(V1, |s: &Seen| match s.attempt() {
        Some(1) | Some(2) => Answer::status(500),
        _ => Answer::ok(),
    })
    .await;
    let route = |attempts: u32| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: retry, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - backendRefs: [{{name: {V1}, port: 8080}}]
    retry: {{codes: [500, 502], attempts: {attempts}, backoff: 1ms}}
"
        )
    };
    let files = vec![
        ("namespaces.yaml".to_string(), NAMESPACES.to_string()),
        (
            "v1.yaml".into(),
            service_entry(INFRA, V1, 8080, "HTTP", b.addr),
        ),
        (
            "scenario.yaml".into(),
            scenario("httproute-simple-same-namespace"),
        ),
        ("retry.yaml".into(), route(2)),
    ];
    let g = start_files(&files).await;
    check(&g, 80, &[get("/retry").to(V1)]).await;
    assert_eq!(b.attempts(), [Some(1), Some(2), Some(3)]);
    g.write("retry.yaml", &route(1)).await;
    check(&g, 80, &[get("/retry").status(500)]).await;
}

// === TLS, passthrough, TCP ===

#[tokio::test]
async fn https_listeners_terminate_with_certificate_refs_chosen_by_sni() {
    let pki = Pki::new("conformance");
    let leaf = pki.server(&["example.org", "second-example.org", "*.wildcard.org"]);
    let secret =
        tls_secret("tls-validity-checks-certificate", &leaf, None).replace("istio-system", INFRA);
    let g = start(
        "httproute-https-listener",
        vec![("secret.yaml".into(), secret)],
        &["--bind", "443=127.0.0.1:0"],
    )
    .await;
    let addr = g.addr(443).await;
    let client = |host: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([pki.reqwest_certificate()])
            .resolve(host, addr)
            .timeout(WAIT)
            .build()
            .unwrap()
    };
    for (host, want) in [
        ("example.org", Some(V1)),
        ("second-example.org", Some(V2)),
        ("third.wildcard.org", None),
    ] {
        let r = client(host)
            .get(format!("https://{host}:{}/", addr.port()))
            .send()
            .await
            .unwrap();
        let r = Reply::from(r).await;
        match want {
            Some(b) => assert_eq!((r.status, r.backend()), (200, Some(b)), "{host}: {r:?}"),
            None => assert_eq!(r.status, 404, "{host}: {r:?}"),
        }
    }
}

#[tokio::test]
async fn tls_routes_pass_through_by_sni_and_tcp_routes_carry_bytes() {
    let pki = Pki::new("backend");
    let tls_backend = tls_echo_backend("tcp-backend", &pki.server(&["abc.example.com"])).await;
    let tcp_backend = tcp_echo_backend("plain-tcp").await;
    let tcp = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tcp-gateway, namespace: {INFRA}}}
spec:
  gatewayClassName: isthmus
  listeners: [{{name: tcp, port: 9000, protocol: TCP}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: tcp-gateway}}]
  rules: [{{backendRefs: [{{name: plain-tcp, port: 9000}}]}}]
"
    );
    let files = vec![
        ("namespaces.yaml".to_string(), NAMESPACES.to_string()),
        (
            "tls.yaml".into(),
            service_entry(INFRA, "tcp-backend", 8443, "TLS", tls_backend),
        ),
        (
            "tcp.yaml".into(),
            service_entry(INFRA, "plain-tcp", 9000, "TCP", tcp_backend),
        ),
        (
            "scenario.yaml".into(),
            scenario("tlsroute-simple-same-namespace"),
        ),
        ("tcp-gateway.yaml".into(), tcp),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let g = Gateway::spawn(
        dir,
        &["--bind", "443=127.0.0.1:0", "--bind", "9000=127.0.0.1:0"],
    );
    g.wait_ready().await;
    // The gateway never sees inside: the backend's certificate answers the client.
    let config = tls_client(&pki, None);
    let mut stream = tls_connect(g.addr(443).await, "abc.example.com", &config)
        .await
        .unwrap();
    assert_eq!(read_line(&mut stream).await, "tcp-backend");
    // A name the listener covers but no TLSRoute: the connection is closed.
    let refused = match tls_connect(g.addr(443).await, "other.example.com", &config).await {
        Err(_) => true,
        Ok(mut s) => read_line_or_closed(&mut s).await,
    };
    assert!(
        refused,
        "a name without a TLSRoute must not reach a backend"
    );
    let mut plain = tokio::net::TcpStream::connect(g.addr(9000).await)
        .await
        .unwrap();
    assert_eq!(read_line(&mut plain).await, "plain-tcp");
}

/// Whether the stream is closed before sending anything, within [`WAIT`].
async fn read_line_or_closed<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// The first line a stream sends, within [`WAIT`].
async fn read_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while s.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            out.push(byte[0]);
        }
    })
    .await
    .unwrap();
    String::from_utf8(out).unwrap()
}

// === gRPC ===

#[tokio::test]
async fn grpc_routes_match_services_methods_and_headers() {
    let backends = [
        grpc_backend("grpc-infra-backend-v1").await,
        grpc_backend("grpc-infra-backend-v2").await,
        grpc_backend("grpc-infra-backend-v3").await,
    ];
    let mut files = vec![("namespaces.yaml".to_string(), NAMESPACES.to_string())];
    for (i, b) in backends.iter().enumerate() {
        let name = format!("grpc-infra-backend-v{}", i + 1);
        files.push((
            format!("{name}.yaml"),
            service_entry(INFRA, &name, 8080, "GRPC", b.addr),
        ));
    }
    let which = |path: &str| -> Vec<usize> {
        (0..3)
            .filter(|i| backends[*i].seen().iter().any(|s| s.path == path))
            .collect()
    };
    let mut with_scenario = files.clone();
    with_scenario.push((
        "scenario.yaml".into(),
        scenario("grpcroute-exact-method-matching"),
    ));
    let g = start_files(&with_scenario).await;
    let addr = g.addr(80).await;
    const SVC: &str = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
    for (method, want) in [("Echo", vec![0]), ("EchoTwo", vec![1])] {
        let path = format!("{SVC}/{method}");
        let _ = grpc_call(addr, "grpc.example.com", &path, b"hi", &[]).await;
        assert_eq!(which(&path), want, "{path}");
    }
    // No route: UNIMPLEMENTED.
    let call = grpc_call(
        addr,
        "grpc.example.com",
        &format!("{SVC}/EchoThree"),
        b"hi",
        &[],
    )
    .await;
    assert_eq!(call.status_field("grpc-status"), Some("12"));
    drop(g);

    let mut with_scenario = files;
    with_scenario.push((
        "scenario.yaml".into(),
        scenario("grpcroute-header-matching"),
    ));
    let g = start_files(&with_scenario).await;
    let addr = g.addr(80).await;
    let rules = g.admin_get("/routes?format=text").await.1;
    let before: Vec<usize> = backends.iter().map(|b| b.seen().len()).collect();
    let _ = grpc_call(
        addr,
        "grpc.example.com",
        &format!("{SVC}/Echo"),
        b"hi",
        &[("version", "one")],
    )
    .await;
    let after: Vec<usize> = backends.iter().map(|b| b.seen().len()).collect();
    assert_eq!(
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        [1, 0, 0],
        "routes:\n{rules}"
    );
    let _ = grpc_call(
        addr,
        "grpc.example.com",
        &format!("{SVC}/Echo"),
        b"hi",
        &[("version", "two")],
    )
    .await;
    let later: Vec<usize> = backends.iter().map(|b| b.seen().len()).collect();
    assert_eq!(
        later
            .iter()
            .zip(&after)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>(),
        [0, 1, 0],
        "routes:\n{rules}"
    );
}

// === Classes, validation, explain ===

#[tokio::test]
async fn gateway_class_and_gateway_flags_choose_what_is_served() {
    let g = start(
        "httproute-simple-same-namespace",
        Vec::new(),
        &["--gateway-class", "other"],
    )
    .await;
    assert!(
        g.admin_get("/listeners").await.1.trim() == "{}",
        "{}",
        g.admin_get("/listeners").await.1
    );
    assert!(
        g.diagnostics()
            .await
            .iter()
            .any(|d| d.contains("is not this instance's GatewayClass \"other\""))
    );
    drop(g);
    let g = start(
        "httproute-simple-same-namespace",
        Vec::new(),
        &["--gateway", "gateway-conformance-infra/same-namespace"],
    )
    .await;
    check(&g, 80, &[get("/").to(V1)]).await;
    drop(g);
    let g = start(
        "httproute-simple-same-namespace",
        Vec::new(),
        &["--gateway", "gateway-conformance-infra/another"],
    )
    .await;
    assert_eq!(g.admin_get("/listeners").await.1.trim(), "{}");
}

#[test]
fn validate_reports_gateway_api_mistakes_with_file_and_line() {
    let bad = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: isthmus
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: http, port: 443, protocol: HTTPS}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: 'no-slash'}}]
    filters: [{type: RequestRedirect}]
";
    let out = validate_files(&[("gw.yaml", bad)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let file = out.file("gw.yaml");
    for line in [
        "8: error: Gateway.gateway.networking.k8s.io default/gw: spec.listeners[1].name: listener name \"http\" is used twice",
        "16: error: HTTPRoute default/r: spec.rules[0].matches[0].path.value: path \"no-slash\" must start with /",
        "17: error: HTTPRoute default/r: spec.rules[0].filters[0]: type RequestRedirect needs the field requestRedirect",
    ] {
        assert!(
            out.has_prefix(&format!("{file}:{line}")),
            "{line}\n{}",
            out.lines.join("\n")
        );
    }
    let good = format!(
        "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: sticky, namespace: {INFRA}}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - backendRefs: [{{name: infra-backend-v1, port: 8080}}]
    sessionPersistence: {{sessionName: s}}
",
        scenario("httproute-matching")
    );
    let out = validate_files(&[("ok.yaml", good.as_str())]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // The Services are not among the files: reported, not errors.
    assert!(
        out.lines.iter().any(|l| l.contains("(BackendNotFound)")),
        "{out:?}"
    );
    // A field Isthmus does not act on is named, with its line.
    let line = line_of(&good, "sessionPersistence");
    let want = format!(
        "{}:{line}: warning: HTTPRoute {INFRA}/sticky: spec.rules[0].sessionPersistence: field is not acted on by this version of Isthmus (ignored)",
        out.file("ok.yaml")
    );
    assert!(out.has_prefix(&want), "{want}\n{}", out.lines.join("\n"));
}

#[test]
fn explain_shows_a_backend_s_own_path_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("scenario.yaml"),
        scenario("httproute-backend-url-rewrite"),
    )
    .unwrap();
    let out = explain_in(dir.path(), &["http://example.com/prefix/original"]);
    assert!(
        out.stdout
            .contains("path rewritten to /rewritten-prefix/original"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn explain_names_the_httproute_and_listener() {
    let mut files = base().await;
    files.push(("scenario.yaml".into(), scenario("httproute-matching")));
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let out = explain_in(dir.path(), &["http://example.com/v2/x"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for needle in [
        "Server     Gateway.gateway.networking.k8s.io gateway-conformance-infra/same-namespace listeners[0] (HTTP, hosts *)",
        "MATCH #0 HTTPRoute gateway-conformance-infra/matching spec.rules[1].matches[0]",
        "outbound|8080||infra-backend-v2.gateway-conformance-infra.svc.cluster.local",
    ] {
        assert!(out.stdout.contains(needle), "{needle}\n{}", out.stdout);
    }
    let out = explain_in(dir.path(), &["http://example.com/v2/x"]);
    assert!(!out.stdout.contains("VirtualService"), "{}", out.stdout);
}

/// The example of the README (examples/gateway-api), with its demo backends' ports replaced
/// by local backends: it validates cleanly and routes as documented.
#[tokio::test]
async fn the_gateway_api_example_validates_and_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateway-api");
    let out = run_isthmus(&["validate".as_ref(), path.as_os_str()]);
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");
    let text = std::fs::read_to_string(path.join("httpbin.yaml")).unwrap();
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let text = text
        .replace("targetPort: 9081", &format!("targetPort: {}", v1.port()))
        .replace("targetPort: 9082", &format!("targetPort: {}", v2.port()));
    let g = Gateway::start(&[("httpbin.yaml", &text)]).await;
    check(
        &g,
        80,
        &[
            get("/get")
                .host("httpbin.example.com")
                .header("end-user", "jason")
                .to("v2"),
            get("/get").host("other.example.com").status(404),
        ],
    )
    .await;
    let url = g.url(80, "/get").await;
    let mut v1_count = 0;
    for _ in 0..50 {
        if get_reply(&url).await.backend() == Some("v1") {
            v1_count += 1;
        }
    }
    // 90% on average: far more than half.
    assert!(v1_count > 30, "{v1_count} of 50 went to v1");
}

async fn get_reply(url: &str) -> Reply {
    support::get(url, "httpbin.example.com", &[]).await
}
