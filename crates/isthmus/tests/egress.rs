//! The egress gateway end to end: Istio's egress-gateway pattern (HTTP and TLS passthrough by
//! SNI), forward-proxy ports with the outbound traffic policy, CONNECT tunnels, TLS origination,
//! wildcard hosts, DNS refresh and the timeout of an external host.
//!
//! The "external" services are local servers on 127.0.0.0/8. Their names (`edition.cnn.com`,
//! `api.external.test`, ...) reach the gateway's resolver through `--resolve` and
//! `--hosts-file`; nothing is sent to a real external address.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::TcpListener;
use tokio::time::Instant;

// === Fixtures ===

/// An Istio acceptance manifest, verbatim.
fn manifest(task: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/acceptance-data/istio")
        .join(task)
        .join("config.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in\n{text}");
    text.replacen(from, to, 1)
}

/// The forward-proxy Gateway: port 3128 (HTTP, every host) of the egress instance.
const FORWARD_PROXY: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: egress-proxy
  namespace: istio-system
  annotations: {isthmus.io/forward-proxy: 'true'}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 3128, name: http-proxy, protocol: HTTP}
    hosts: ['*']
";

/// A MESH_EXTERNAL ServiceEntry with one port.
fn external_service(name: &str, host: &str, port: u16, protocol: &str, resolution: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: ['{host}']\n  location: MESH_EXTERNAL\n  ports: [{{number: {port}, name: p{port}, protocol: {protocol}}}]\n  resolution: {resolution}\n"
    )
}

/// Starts the egress instance (`istio=egressgateway`) on `files`, with Gateway ports 80, 443
/// and 3128 on 127.0.0.1, the outbound `policy`, and `extra` arguments (`--resolve ...`).
async fn start_egress(files: &[(&str, String)], policy: &str, extra: &[&str]) -> Gateway {
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let mut args = vec![
        "--labels",
        "istio=egressgateway",
        "--bind",
        "443=127.0.0.1:0",
        "--bind",
        "3128=127.0.0.1:0",
        "--outbound-traffic-policy",
        policy,
    ];
    args.extend_from_slice(extra);
    let g = Gateway::start_with(&refs, &args).await;
    let errors: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains(": error:"))
        .collect();
    assert!(errors.is_empty(), "configuration errors: {errors:#?}");
    g
}

/// A client that sends every request through the forward proxy at `proxy`.
fn proxied(proxy: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
        .timeout(WAIT)
}

async fn get_via(proxy: SocketAddr, url: &str) -> Reply {
    let client = proxied(proxy).build().unwrap();
    Reply::from(client.get(url).send().await.unwrap()).await
}

/// `istio_requests_total` for these labels.
async fn requests(g: &Gateway, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&g.prometheus().await, "istio_requests_total", labels)
}

/// Runs a command of a proxy-aware client with `env` (and no proxy settings of the test's own
/// environment), within a time limit: exit success, stdout, stderr.
async fn run_client(
    program: &str,
    args: Vec<String>,
    env: Vec<(&str, String)>,
) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(&args).stdin(Stdio::null());
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("cannot run the client"));
    let out = tokio::time::timeout(WAIT + Duration::from_secs(5), out)
        .await
        .expect("the client did not finish")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl through the proxy (`--proxy`), with a time limit.
async fn curl_proxy(proxy: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![
        "-sS".to_string(),
        "--max-time".into(),
        "10".into(),
        "--proxy".into(),
        format!("http://{proxy}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run_client("curl", all, vec![]).await
}

/// A GET with Python requests, which takes the proxy from `HTTP_PROXY`/`HTTPS_PROXY`; prints
/// the status and the body.
async fn python_get(proxy: SocketAddr, url: &str, ca: Option<&Path>) -> (bool, String, String) {
    let script = "import sys, requests\nverify = sys.argv[2] if len(sys.argv) > 2 else True\nr = requests.get(sys.argv[1], verify=verify, timeout=10)\nprint(r.status_code)\nprint(r.text)\n";
    let mut args = vec!["-c".to_string(), script.into(), url.into()];
    if let Some(ca) = ca {
        args.push(ca.display().to_string());
    }
    let proxy = format!("http://{proxy}");
    run_client(
        "python3",
        args,
        vec![("HTTP_PROXY", proxy.clone()), ("HTTPS_PROXY", proxy)],
    )
    .await
}

/// An HTTPS server with `leaf` (requiring a client certificate from `client_ca` when given)
/// that answers every request with JSON: its name, the SNI, the Host, the path and whether a
/// client certificate came.
async fn https_backend(name: &str, leaf: &Leaf, client_ca: Option<&Pki>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_https(listener, name, leaf, client_ca)
}

fn serve_https(
    listener: TcpListener,
    name: &str,
    leaf: &Leaf,
    client_ca: Option<&Pki>,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider,
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(vec![leaf.der()], leaf.key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, name) = (acceptor.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(stream)).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let sni = conn.server_name().unwrap_or("").to_string();
                let client_cert = conn.peer_certificates().is_some();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = serde_json::json!({
                        "backend": &*name,
                        "sni": sni,
                        "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
                        "path": req.uri().path(),
                        "client_cert": client_cert,
                    });
                    async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            body.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// === Istio's egress-gateway pattern ===

/// Istio's "egress gateway for HTTP traffic" task, its manifest as written: a Gateway of the
/// egress instance for `edition.cnn.com`, a VirtualService bound to it routing to the
/// ServiceEntry. The ServiceEntry's port gets a `targetPort` (the stand-in server's port), and
/// the resolution is each of DNS (the host resolved), STATIC and NONE (the Host resolved per
/// request).
#[tokio::test]
async fn istio_egress_gateway_pattern_for_http_with_each_resolution() {
    let cnn = backend("cnn").await;
    let base = edit(
        &manifest("egress-gateway-http"),
        "    name: http-port\n    protocol: HTTP\n",
        &format!(
            "    name: http-port\n    protocol: HTTP\n    targetPort: {}\n",
            cnn.port()
        ),
    );
    let static_endpoints = "resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n";
    for (resolution, text) in [
        ("DNS", base.clone()),
        ("STATIC", edit(&base, "resolution: DNS\n", static_endpoints)),
        (
            "NONE",
            edit(&base, "resolution: DNS\n", "resolution: NONE\n"),
        ),
    ] {
        let g = start_egress(
            &[("task.yaml", text)],
            "REGISTRY_ONLY",
            &["--resolve", "edition.cnn.com:127.0.0.1"],
        )
        .await;
        let r = get(&g.url(80, "/politics").await, "edition.cnn.com", &[]).await;
        assert_eq!(r.status, 200, "{resolution}: {}\n{}", r.body, g.log());
        assert_eq!(r.backend(), Some("cnn"), "{resolution}");
        assert_eq!(
            r.json()["headers"]["host"],
            "edition.cnn.com",
            "{resolution}"
        );
        let other = get(&g.url(80, "/").await, "other.example.com", &[]).await;
        assert_eq!(
            other.status, 404,
            "{resolution}: only the Gateway's host is served"
        );
        let labels = [
            ("destination_service", "edition.cnn.com"),
            ("response_code", "200"),
            ("source_workload", "istio-egressgateway"),
        ];
        assert_eq!(requests(&g, &labels).await, 1.0, "{resolution}");
    }
}

/// Istio's "egress gateway for HTTPS traffic" task (TLS passthrough by SNI on port 443): the
/// client's TLS goes through untouched to the external server, whose certificate it verifies.
#[tokio::test]
async fn istio_egress_gateway_pattern_for_tls_passthrough() {
    let ca = Pki::new("external");
    let leaf = ca.server(&["edition.cnn.com"]);
    let cnn = tls_echo_backend("cnn", &leaf).await;
    let base = edit(
        &manifest("egress-gateway-tls-passthrough"),
        "    name: tls\n    protocol: TLS\n  resolution: DNS",
        &format!(
            "    name: tls\n    protocol: TLS\n    targetPort: {}\n  resolution: DNS",
            cnn.port()
        ),
    );
    for (resolution, text) in [
        ("DNS", base.clone()),
        ("NONE", edit(&base, "resolution: DNS", "resolution: NONE")),
    ] {
        let g = start_egress(
            &[("task.yaml", text)],
            "REGISTRY_ONLY",
            &["--resolve", "edition.cnn.com:127.0.0.1"],
        )
        .await;
        let addr = g.addr(443).await;
        let mut s = tls_connect(addr, "edition.cnn.com", &tls_client(&ca, None))
            .await
            .unwrap_or_else(|e| panic!("{resolution}: {e}\n{}", g.log()));
        assert_eq!(peer_certificate(&s), leaf.der(), "{resolution}");
        assert_eq!(read_line(&mut s).await.unwrap(), "cnn\n", "{resolution}");
        let echoed = send_and_read_to_end(&mut s, b"hello").await.unwrap();
        assert_eq!(echoed, "hello<eof>", "{resolution}");
        // A name no server of the Gateway declares has no filter chain: closed.
        assert!(
            tls_connect(addr, "other.example.com", &tls_client(&ca, None))
                .await
                .is_err(),
            "{resolution}"
        );
    }
}

// === Forward-proxy ports and the outbound traffic policy ===

#[tokio::test]
async fn registry_only_answers_502_until_a_service_entry_is_added_live() {
    let api = backend("api").await;
    let g = start_egress(
        &[("proxy.yaml", FORWARD_PROXY.to_string())],
        "REGISTRY_ONLY",
        &["--resolve", "api.external.test:127.0.0.1"],
    )
    .await;
    let proxy = g.addr(3128).await;
    let url = format!("http://api.external.test:{}/get", api.port());
    let r = get_via(proxy, &url).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body, "");
    let blocked = [
        ("destination_service", "api.external.test"),
        ("destination_service_name", "BlackHoleCluster"),
        ("response_code", "502"),
    ];
    assert_eq!(requests(&g, &blocked).await, 1.0);
    assert!(g.log().contains("REGISTRY_ONLY"), "{}", g.log());
    // curl says the same.
    let (_, out, _) = curl_proxy(proxy, &["-o", "/dev/null", "-w", "%{http_code}", &url]).await;
    assert_eq!(out, "502");

    g.write(
        "api.yaml",
        &external_service("api", "api.external.test", api.port(), "HTTP", "DNS"),
    )
    .await;
    let r = get_via(proxy, &url).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    assert_eq!(r.backend(), Some("api"));
    assert_eq!(r.json()["path"], "/get");
    assert_eq!(
        r.json()["headers"]["host"],
        format!("api.external.test:{}", api.port())
    );
    let (ok, out, err) = curl_proxy(proxy, &[&url]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"backend\": \"api\""), "{out}");
    let allowed = [
        ("destination_service", "api.external.test"),
        ("destination_service_name", "api.external.test"),
        ("response_code", "200"),
    ];
    assert_eq!(requests(&g, &allowed).await, 2.0);
    // A port the ServiceEntry does not declare is still outside the registry.
    let other_port = format!(
        "http://api.external.test:{}/get",
        api.port().wrapping_add(1)
    );
    assert_eq!(get_via(proxy, &other_port).await.status, 502);
}

#[tokio::test]
async fn allow_any_passes_unknown_hosts_through_to_the_host_they_name() {
    let web = backend("web").await;
    let g = start_egress(
        &[("proxy.yaml", FORWARD_PROXY.to_string())],
        "ALLOW_ANY",
        &["--resolve", "*.anywhere.test:127.0.0.1"],
    )
    .await;
    let proxy = g.addr(3128).await;
    let url = format!("http://www.anywhere.test:{}/page?q=1", web.port());
    let r = get_via(proxy, &url).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    assert_eq!(r.backend(), Some("web"));
    assert_eq!(r.json()["query"], "q=1");
    // Proxy headers stay with the proxy; the gateway's own are added.
    assert!(r.json()["headers"].get("proxy-connection").is_none());
    assert!(r.json()["headers"]["x-forwarded-for"].is_string());
    // curl and Python requests with the proxy from the environment.
    let (ok, out, err) = run_client(
        "curl",
        vec!["-sS".into(), "--max-time".into(), "10".into(), url.clone()],
        vec![("http_proxy", format!("http://{proxy}"))],
    )
    .await;
    assert!(ok && out.contains("\"backend\": \"web\""), "{out}{err}");
    let (ok, out, err) = python_get(proxy, &url, None).await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("200\n") && out.contains("\"backend\": \"web\""),
        "{out}"
    );
    let passthrough = [
        ("destination_service", "www.anywhere.test"),
        ("destination_service_name", "PassthroughCluster"),
        ("response_code", "200"),
    ];
    assert_eq!(requests(&g, &passthrough).await, 3.0);
}

/// `CONNECT host:port` tunnels, with curl's `--proxy` and Python requests' `HTTPS_PROXY`: the
/// client's TLS reaches the external server, which it verifies. A wildcard ServiceEntry with
/// resolution NONE admits any name under it; other names are refused under REGISTRY_ONLY.
#[tokio::test]
async fn connect_tunnels_follow_the_registry_and_the_policy() {
    let ca = Pki::new("external");
    let leaf = ca.server(&["secure.external.test", "*.wiki.test"]);
    let secure = https_backend("secure", &leaf, None).await;
    let port = secure.port();
    let files = [
        ("proxy.yaml", FORWARD_PROXY.to_string()),
        (
            "secure.yaml",
            external_service("secure", "secure.external.test", port, "TLS", "DNS"),
        ),
        (
            "wiki.yaml",
            external_service("wiki", "*.wiki.test", port, "TLS", "NONE"),
        ),
    ];
    let g = start_egress(
        &files,
        "REGISTRY_ONLY",
        &[
            "--resolve",
            "secure.external.test:127.0.0.1",
            "--resolve",
            "*.wiki.test:127.0.0.1",
            "--resolve",
            "blocked.test:127.0.0.1",
        ],
    )
    .await;
    let proxy = g.addr(3128).await;
    let ca_file = write_file(g.dir.path(), "ca.pem.txt", &ca.ca_pem);
    let ca_arg = ca_file.display().to_string();
    for (host, backend_sni) in [
        ("secure.external.test", "secure.external.test"),
        ("en.wiki.test", "en.wiki.test"),
    ] {
        let url = format!("https://{host}:{port}/tunnel");
        let (ok, out, err) = curl_proxy(proxy, &["--cacert", &ca_arg, &url]).await;
        assert!(ok, "{host}: {err}\n{}", g.log());
        let body: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(body["sni"], backend_sni);
        assert_eq!(body["path"], "/tunnel");
    }
    let (ok, out, err) = python_get(
        proxy,
        &format!("https://secure.external.test:{port}/py"),
        Some(&ca_file),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("200\n") && out.contains("\"/py\""), "{out}");
    // reqwest's CONNECT, too.
    let client = proxied(proxy)
        .tls_certs_only([ca.reqwest_certificate()])
        .build()
        .unwrap();
    let r = client
        .get(format!("https://secure.external.test:{port}/rq"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (ok, _, err) = curl_proxy(
        proxy,
        &[
            "--cacert",
            &ca_arg,
            &format!("https://blocked.test:{port}/"),
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("502"), "{err}");
    let tunnels = [
        ("destination_service", "secure.external.test"),
        ("response_code", "200"),
    ];
    assert_eq!(requests(&g, &tunnels).await, 3.0);
    let blocked = [
        ("destination_service", "blocked.test"),
        ("destination_service_name", "BlackHoleCluster"),
        ("response_code", "502"),
    ];
    assert_eq!(requests(&g, &blocked).await, 1.0);
}

// === TLS origination ===

/// Istio's "egress TLS origination" task, its manifest as written (port 80 of the ServiceEntry
/// targets the server's TLS port; the DestinationRule originates TLS on it), with the CA added
/// to the DestinationRule: a plain-HTTP request through the forward proxy reaches the external
/// server over verified TLS, with the host as SNI. With a wrong CA the handshake fails: 503.
#[tokio::test]
async fn tls_origination_for_plain_http_requests_verifies_the_external_server() {
    let ca = Pki::new("external");
    let cnn = https_backend("cnn", &ca.server(&["edition.cnn.com"]), None).await;
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(dir.path(), "ca.pem", &ca.ca_pem);
    let wrong = write_file(dir.path(), "wrong.pem", &Pki::new("other").ca_pem);
    let task = |ca_file: &Path| {
        let t = edit(
            &manifest("egress-tls-origination"),
            "    targetPort: 443\n",
            &format!("    targetPort: {}\n", cnn.port()),
        );
        edit(
            &t,
            "        mode: SIMPLE",
            &format!(
                "        mode: SIMPLE\n        caCertificates: {}",
                ca_file.display()
            ),
        )
    };
    let g = start_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            ("task.yaml", task(&good)),
        ],
        "REGISTRY_ONLY",
        &["--resolve", "edition.cnn.com:127.0.0.1"],
    )
    .await;
    let proxy = g.addr(3128).await;
    let r = get_via(proxy, "http://edition.cnn.com/politics").await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    assert_eq!(r.json()["backend"], "cnn");
    assert_eq!(r.json()["sni"], "edition.cnn.com");
    assert_eq!(r.json()["path"], "/politics");

    g.write("task.yaml", &task(&wrong)).await;
    let r = get_via(proxy, "http://edition.cnn.com/politics").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("connection failure"), "{}", r.body);
}

/// TLS origination at the egress gateway in Istio's gateway pattern, MUTUAL: the workload
/// sends plain HTTP to the Gateway's port 80; the VirtualService routes to the external
/// service's port 443, where the DestinationRule opens TLS with a client certificate (and the
/// SNI it names). Without the client certificate the external server refuses the handshake.
#[tokio::test]
async fn mutual_tls_origination_through_the_egress_gateway() {
    let server_ca = Pki::new("external");
    let client_ca = Pki::new("client");
    let bank = https_backend(
        "bank",
        &server_ca.server(&["api.bank.test"]),
        Some(&client_ca),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_ca.client("egress.example.com");
    let ca = write_file(dir.path(), "ca.pem", &server_ca.ca_pem);
    let cert = write_file(dir.path(), "client.pem", &client.cert_pem);
    let key = write_file(dir.path(), "client.key", &client.key_pem);
    let gateway = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [api.bank.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bank-through-egress}
spec:
  hosts: [api.bank.test]
  gateways: [istio-egressgateway]
  http:
  - route:
    - destination: {host: api.bank.test, port: {number: 443}}
";
    let service = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: bank}}\nspec:\n  hosts: [api.bank.test]\n  ports: [{{number: 443, name: https, protocol: HTTPS, targetPort: {}}}]\n  resolution: DNS\n",
        bank.port()
    );
    let rule = |mutual: bool| {
        let identity = if mutual {
            format!(
                "mode: MUTUAL, clientCertificate: '{}', privateKey: '{}', ",
                cert.display(),
                key.display()
            )
        } else {
            "mode: SIMPLE, ".to_string()
        };
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: bank}}\nspec:\n  host: api.bank.test\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 443}}\n      tls: {{{identity}caCertificates: '{}', sni: api.bank.test}}\n",
            ca.display()
        )
    };
    let g = start_egress(
        &[
            ("gw.yaml", gateway.to_string()),
            ("se.yaml", service),
            ("dr.yaml", rule(true)),
        ],
        "REGISTRY_ONLY",
        &["--resolve", "api.bank.test:127.0.0.1"],
    )
    .await;
    let r = get(&g.url(80, "/balance").await, "api.bank.test", &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    assert_eq!(r.json()["client_cert"], true);
    assert_eq!(r.json()["sni"], "api.bank.test");
    let labels = [
        ("destination_service", "api.bank.test"),
        ("response_code", "200"),
    ];
    assert_eq!(requests(&g, &labels).await, 1.0);

    g.write("dr.yaml", &rule(false)).await;
    let r = get(&g.url(80, "/balance").await, "api.bank.test", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
}

// === Timeouts, wildcard hosts and DNS ===

/// Istio's "egress traffic control with a timeout" task, its manifest as written: the
/// VirtualService (for the mesh, no `gateways`) sets a 3 s timeout on `httpbin.org`, and the
/// forward-proxy port applies it as the workload's sidecar would.
#[tokio::test]
async fn the_timeout_of_an_external_host_applies_through_the_forward_proxy() {
    let httpbin = backend("httpbin").await;
    let task = edit(
        &manifest("egress-serviceentry-timeout"),
        "    protocol: HTTP\n",
        &format!("    protocol: HTTP\n    targetPort: {}\n", httpbin.port()),
    );
    let g = start_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            ("task.yaml", task),
        ],
        "REGISTRY_ONLY",
        &["--resolve", "httpbin.org:127.0.0.1"],
    )
    .await;
    let proxy = g.addr(3128).await;
    let r = get_via(proxy, "http://httpbin.org/delay/1").await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    let started = Instant::now();
    let r = get_via(proxy, "http://httpbin.org/delay/5").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4900),
        "{took:?}"
    );
    let timed_out = [
        ("destination_service", "httpbin.org"),
        ("response_code", "504"),
        ("response_flags", "UT"),
    ];
    assert_eq!(requests(&g, &timed_out).await, 1.0);
}

/// Wildcard ServiceEntry hosts: with DYNAMIC_DNS (and NONE) any name under `*.wikipedia.test`
/// goes to the address that name resolves to, on the request's host; other names are outside
/// the registry.
#[tokio::test]
async fn wildcard_hosts_resolve_each_name_they_cover() {
    let en = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = en.local_addr().unwrap().port();
    isthmus::demo::spawn_backend("en", en);
    // The same port on another loopback address, for another name.
    let de = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
    isthmus::demo::spawn_backend("de", de);
    let files = [
        ("proxy.yaml", FORWARD_PROXY.to_string()),
        (
            "wiki.yaml",
            external_service("wikipedia", "*.wikipedia.test", port, "HTTP", "DYNAMIC_DNS"),
        ),
    ];
    let g = start_egress(
        &files,
        "REGISTRY_ONLY",
        &[
            "--resolve",
            "en.wikipedia.test:127.0.0.1",
            "--resolve",
            "de.wikipedia.test:127.0.0.2",
            "--resolve",
            "wikipedia.test:127.0.0.1",
        ],
    )
    .await;
    let proxy = g.addr(3128).await;
    for (name, want) in [("en", "en"), ("de", "de")] {
        let r = get_via(proxy, &format!("http://{name}.wikipedia.test:{port}/wiki")).await;
        assert_eq!(r.status, 200, "{name}: {}\n{}", r.body, g.log());
        assert_eq!(r.backend(), Some(want));
    }
    let r = get_via(proxy, &format!("http://wikipedia.test:{port}/")).await;
    assert_eq!(r.status, 502, "the bare domain is not under the wildcard");
    let labels = [
        ("destination_service", "*.wikipedia.test"),
        ("response_code", "200"),
    ];
    assert_eq!(requests(&g, &labels).await, 2.0);
}

/// `resolution: DNS` uses every address of the name and follows changes of the answer (the
/// hosts file is read again when it changes); `DNS_ROUND_ROBIN` uses the first address only.
#[tokio::test]
async fn dns_endpoints_are_refreshed_and_round_robin_takes_the_first_address() {
    let one = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = one.local_addr().unwrap().port();
    isthmus::demo::spawn_backend("one", one);
    let two = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
    isthmus::demo::spawn_backend("two", two);
    let hosts_dir = tempfile::tempdir().unwrap();
    let hosts = hosts_dir.path().join("hosts");
    write_atomic(
        &hosts,
        "127.0.0.1 multi.test rr.test\n127.0.0.2 multi.test rr.test\n",
    );
    let files = [
        ("proxy.yaml", FORWARD_PROXY.to_string()),
        (
            "multi.yaml",
            external_service("multi", "multi.test", port, "HTTP", "DNS"),
        ),
        (
            "rr.yaml",
            external_service("rr", "rr.test", port, "HTTP", "DNS_ROUND_ROBIN"),
        ),
    ];
    let hosts_arg = hosts.display().to_string();
    let g = start_egress(&files, "REGISTRY_ONLY", &["--hosts-file", &hosts_arg]).await;
    let proxy = g.addr(3128).await;
    let client = proxied(proxy).build().unwrap();
    let backend_of = |host: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{host}:{port}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-backend"].to_str().unwrap().to_string()
        }
    };
    // Each request is a real exchange; the loop is bounded by WAIT.
    let deadline = Instant::now() + WAIT;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} answered for multi.test"
        );
        seen.insert(backend_of("multi.test").await);
    }
    for _ in 0..6 {
        assert_eq!(backend_of("rr.test").await, "one");
    }
    write_atomic(&hosts, "127.0.0.2 multi.test rr.test\n");
    eventually("multi.test follows the new answer", || async {
        let mut last = Vec::new();
        for _ in 0..4 {
            last.push(backend_of("multi.test").await);
        }
        last.iter().all(|b| b == "two")
    })
    .await;
    eventually("rr.test follows the new answer", || async {
        backend_of("rr.test").await == "two"
    })
    .await;
}

// === Telemetry of egress traffic ===

/// `start_egress` with the access log written to a file outside the config folder: the
/// gateway, the log's folder (kept alive by the caller) and the log's path.
async fn start_logging_egress(
    files: &[(&str, String)],
    policy: &str,
    extra: &[&str],
) -> (Gateway, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let path_arg = path.display().to_string();
    let mut args = vec!["--access-log", path_arg.as_str()];
    args.extend_from_slice(extra);
    let g = start_egress(files, policy, &args).await;
    (g, dir, path)
}

/// Waits (at most [`WAIT`]) until the access log has `n` lines, and returns them.
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= n {
            assert_eq!(lines.len(), n, "{lines:#?}");
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} access log lines: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The one line of `lines` that contains `needle`.
fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "{needle:?} in {lines:#?}");
    found[0]
}

/// Compares a TEXT access log line with a pattern token by token (split on spaces); `*`
/// matches any token.
fn assert_line(line: &str, pattern: &str) {
    let got: Vec<&str> = line.split(' ').collect();
    let want: Vec<&str> = pattern.split(' ').collect();
    assert_eq!(got.len(), want.len(), "{line}\nvs\n{pattern}");
    for (g, w) in got.iter().zip(&want) {
        assert!(*w == "*" || g == w, "{g} != {w} in\n{line}\nvs\n{pattern}");
    }
}

/// Waits (at most [`WAIT`]) until `metric` with `labels` reaches `want` in the gateway's
/// Prometheus text, and returns that text.
async fn metric_reaches(g: &Gateway, metric: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = g.prometheus().await;
        if metric_sum(&text, metric, labels) == want {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{metric}{labels:?} did not reach {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `CONNECT target` on a new connection to `proxy` and reads the response head, byte by
/// byte so that nothing of the tunnel is consumed: the status and the connection.
async fn raw_connect(proxy: SocketAddr, target: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: tunnel-test\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(WAIT, read).await.unwrap();
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, s)
}

/// A CONNECT tunnel to a host outside the registry (ALLOW_ANY) is a TCP connection for
/// telemetry: counted in the `istio_tcp_*` series with the host as `destination_service` and
/// `PassthroughCluster` as its name, its bytes as plain TCP counts them (what the client sent,
/// what it received through the tunnel), and logged once when it closes, as its CONNECT
/// request with the tunnel's bytes.
#[tokio::test]
async fn a_passthrough_tunnel_is_counted_and_logged_as_a_tcp_connection() {
    let echo = tcp_echo_backend("tcp-v1").await;
    let (g, _logs, log) = start_logging_egress(
        &[("proxy.yaml", FORWARD_PROXY.to_string())],
        "ALLOW_ANY",
        &["--resolve", "echo.anywhere.test:127.0.0.1"],
    )
    .await;
    let proxy = g.addr(3128).await;
    let target = format!("echo.anywhere.test:{}", echo.port());
    let (status, mut s) = raw_connect(proxy, &target).await;
    assert_eq!(status, 200, "{}", g.log());
    let client = s.local_addr().unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v1\n");
    // While the tunnel is open, it is counted as opened, not yet closed.
    let tunnel = [
        ("destination_service", "echo.anywhere.test"),
        ("destination_service_name", "PassthroughCluster"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
    ];
    let open = metric_reaches(&g, "istio_tcp_connections_opened_total", &tunnel, 1.0).await;
    assert_eq!(
        metric_sum(&open, "istio_tcp_connections_closed_total", &tunnel),
        0.0
    );
    assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty());
    assert_eq!(
        send_and_read_to_end(&mut s, b"hello").await.unwrap(),
        "hello<eof>"
    );

    let text = metric_reaches(&g, "istio_tcp_connections_closed_total", &tunnel, 1.0).await;
    assert_eq!(
        metric_sum(&text, "istio_tcp_received_bytes_total", &tunnel),
        5.0
    );
    // The greeting, the echo and `<eof>`.
    assert_eq!(
        metric_sum(&text, "istio_tcp_sent_bytes_total", &tunnel),
        17.0
    );
    // The CONNECT itself is an HTTP request answered 200, as Envoy counts it.
    let connect = [
        ("destination_service", "echo.anywhere.test"),
        ("destination_service_name", "PassthroughCluster"),
        ("response_code", "200"),
    ];
    assert_eq!(metric_sum(&text, "istio_requests_total", &connect), 1.0);

    let lines = log_lines(&log, 1).await;
    assert_line(
        &lines[0],
        &format!(
            "* \"CONNECT - HTTP/1.1\" 200 - via_upstream - \"-\" 5 17 * - \"127.0.0.1\" \"tunnel-test\" * \"{target}\" \"{echo}\" PassthroughCluster * {proxy} {client} - -"
        ),
    );
}

/// A tunnel to a ServiceEntry's host and port whose DestinationRule originates TLS: the
/// client's own TLS goes through the tunnel untouched (no second layer of TLS), and the tunnel
/// is counted and logged with the ServiceEntry's host and cluster. Under REGISTRY_ONLY a
/// CONNECT to an undeclared host is refused: 502, counted as a TCP connection to
/// `BlackHoleCluster` (`UH`, as Istio counts one), logged once as the refused request.
#[tokio::test]
async fn a_registered_tunnel_is_not_originated_and_is_counted_with_its_service() {
    let ca = Pki::new("external");
    let leaf = ca.server(&["secure.external.test"]);
    let secure = https_backend("secure", &leaf, None).await;
    let port = secure.port();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(dir.path(), "ca.pem", &ca.ca_pem);
    let origination = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.external.test\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: '{}'}}\n",
        ca_file.display()
    );
    let (g, _logs, log) = start_logging_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            (
                "secure.yaml",
                external_service("secure", "secure.external.test", port, "HTTPS", "DNS"),
            ),
            ("dr.yaml", origination),
        ],
        "REGISTRY_ONLY",
        &[
            "--resolve",
            "secure.external.test:127.0.0.1",
            "--resolve",
            "blocked.test:127.0.0.1",
        ],
    )
    .await;
    let proxy = g.addr(3128).await;
    let ca_arg = ca_file.display().to_string();
    let url = format!("https://secure.external.test:{port}/through");
    let (ok, out, err) = curl_proxy(proxy, &["--cacert", &ca_arg, &url]).await;
    assert!(ok, "{err}\n{}", g.log());
    let body: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["sni"], "secure.external.test");
    assert_eq!(body["path"], "/through");

    let tunnel = [
        ("destination_service", "secure.external.test"),
        ("destination_service_name", "secure.external.test"),
        ("destination_service_namespace", "default"),
        ("response_flags", "-"),
    ];
    let text = metric_reaches(&g, "istio_tcp_connections_closed_total", &tunnel, 1.0).await;
    assert_eq!(
        metric_sum(&text, "istio_tcp_connections_opened_total", &tunnel),
        1.0
    );
    // A TLS handshake and one exchange each way.
    assert!(metric_sum(&text, "istio_tcp_received_bytes_total", &tunnel) > 100.0);
    assert!(metric_sum(&text, "istio_tcp_sent_bytes_total", &tunnel) > 100.0);
    let lines = log_lines(&log, 1).await;
    assert_line(
        &lines[0],
        &format!(
            "* \"CONNECT - HTTP/1.1\" 200 - via_upstream - \"-\" * * * - \"127.0.0.1\" * * \"secure.external.test:{port}\" \"{secure}\" outbound|{port}||secure.external.test * {proxy} * - -"
        ),
    );

    let (ok, _, err) = curl_proxy(
        proxy,
        &[
            "--cacert",
            &ca_arg,
            &format!("https://blocked.test:{port}/"),
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("502"), "{err}");
    let hole = [
        ("destination_service", "blocked.test"),
        ("destination_service_name", "BlackHoleCluster"),
        ("response_flags", "UH"),
    ];
    let text = metric_reaches(&g, "istio_tcp_connections_closed_total", &hole, 1.0).await;
    assert_eq!(
        metric_sum(&text, "istio_tcp_connections_opened_total", &hole),
        1.0
    );
    let lines = log_lines(&log, 2).await;
    let refused = line_with(&lines, "blocked.test");
    assert_line(
        refused,
        &format!(
            "* \"CONNECT - HTTP/1.1\" 502 - direct_response - \"-\" 0 0 * - \"127.0.0.1\" * * \"blocked.test:{port}\" \"-\" - - {proxy} * - -"
        ),
    );
}

/// A DNS server on 127.0.0.1 that answers every query NXDOMAIN, and the names it was asked:
/// the gateway's resolver is pointed at it with `--dns-server`, so no query leaves the
/// machine.
async fn nxdomain_server() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let Some((name, end)) = dns_question(&buf[..n]) else {
                continue;
            };
            seen.lock().unwrap().push(name);
            // The header and the question, without the client's additional records (EDNS).
            let mut reply = buf[..end].to_vec();
            // QR, the query's opcode and RD; RA, RCODE 3 (NXDOMAIN).
            reply[2] = 0x80 | (buf[2] & 0x79);
            reply[3] = 0x80 | 3;
            // One question; no answer, authority or additional record.
            reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    (addr, asked)
}

/// The name of a DNS query's (first) question, and where the question ends.
fn dns_question(msg: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).into_owned());
        at += len;
    }
    // QTYPE and QCLASS.
    let end = at + 4;
    (end <= msg.len()).then(|| (labels.join("."), end))
}

/// A destination whose name does not resolve: with resolution DYNAMIC_DNS or NONE (the name
/// is resolved when the request is sent, as Envoy's dynamic forward proxy does) the request is
/// answered 503 with flag `DF`, for HTTP through the forward proxy and for a CONNECT; logged
/// and counted with `response_flags="DF"`. With resolution DNS the cluster simply has no
/// endpoint (Envoy's STRICT_DNS cluster): 503 `UH`. The names are asked of a local DNS server
/// that answers NXDOMAIN.
#[tokio::test]
async fn unresolvable_names_are_answered_503_with_flag_df() {
    let (dns, asked) = nxdomain_server().await;
    let dns_arg = dns.to_string();
    let (g, _logs, log) = start_logging_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            (
                "dyn.yaml",
                external_service("dyn", "*.dyn.test", 80, "HTTP", "DYNAMIC_DNS"),
            ),
            (
                "none.yaml",
                external_service("none", "tls.none.test", 443, "TLS", "NONE"),
            ),
            (
                "dns.yaml",
                external_service("dns", "api.dns.test", 80, "HTTP", "DNS"),
            ),
        ],
        "REGISTRY_ONLY",
        &["--dns-server", &dns_arg],
    )
    .await;
    let proxy = g.addr(3128).await;

    let r = get_via(proxy, "http://api.dyn.test/get").await;
    assert_eq!(r.status, 503, "{}\n{}", r.body, g.log());
    assert_eq!(r.body, "DNS resolution failure");
    let (status, _s) = raw_connect(proxy, "tls.none.test:443").await;
    assert_eq!(status, 503, "{}", g.log());
    let r = get_via(proxy, "http://api.dns.test/get").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body, "no healthy upstream");

    let names = asked.lock().unwrap().clone();
    for name in ["api.dyn.test", "tls.none.test", "api.dns.test"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let lines = log_lines(&log, 3).await;
    assert_line(
        line_with(&lines, "api.dyn.test"),
        "* \"GET /get HTTP/1.1\" 503 DF dns_resolution_failure - \"-\" 0 22 * - \"127.0.0.1\" * * \"api.dyn.test\" \"-\" outbound|80||*.dyn.test - * * - *",
    );
    assert_line(
        line_with(&lines, "tls.none.test"),
        "* \"CONNECT - HTTP/1.1\" 503 DF dns_resolution_failure - \"-\" 0 22 * - \"127.0.0.1\" \"tunnel-test\" * \"tls.none.test:443\" \"-\" outbound|443||tls.none.test - * * - -",
    );
    assert_line(
        line_with(&lines, "api.dns.test"),
        "* \"GET /get HTTP/1.1\" 503 UH no_healthy_upstream - \"-\" 0 19 * - \"127.0.0.1\" * * \"api.dns.test\" \"-\" outbound|80||api.dns.test - * * - *",
    );
    let text = g.prometheus().await;
    let df = [
        ("destination_service", "*.dyn.test"),
        ("response_code", "503"),
        ("response_flags", "DF"),
    ];
    assert_eq!(
        metric_sum(&text, "istio_requests_total", &df),
        1.0,
        "{text}"
    );
    let df_connect = [
        ("destination_service", "tls.none.test"),
        ("response_code", "503"),
        ("response_flags", "DF"),
    ];
    assert_eq!(metric_sum(&text, "istio_requests_total", &df_connect), 1.0);
    let df_tcp = [
        ("destination_service", "tls.none.test"),
        ("response_flags", "DF"),
    ];
    assert_eq!(
        metric_sum(&text, "istio_tcp_connections_opened_total", &df_tcp),
        1.0
    );
    let uh = [
        ("destination_service", "api.dns.test"),
        ("response_code", "503"),
        ("response_flags", "UH"),
    ];
    assert_eq!(metric_sum(&text, "istio_requests_total", &uh), 1.0);
}

/// HTTP through the egress gateway names the external host: in Istio's egress-gateway pattern
/// (Host `edition.cnn.com` on the Gateway's port 80) and through the forward proxy
/// (absolute-form requests) for a ServiceEntry's host and for a host passed through, the access
/// log has the host as authority and Istio's cluster of the host as upstream cluster, and the
/// metrics have it as `destination_service`.
#[tokio::test]
async fn http_through_the_egress_gateway_names_the_external_host() {
    let cnn = backend("cnn").await;
    let api = backend("api").await;
    let web = backend("web").await;
    let task = edit(
        &manifest("egress-gateway-http"),
        "    name: http-port\n    protocol: HTTP\n",
        &format!(
            "    name: http-port\n    protocol: HTTP\n    targetPort: {}\n",
            cnn.port()
        ),
    );
    let (g, _logs, log) = start_logging_egress(
        &[
            ("task.yaml", task),
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            (
                "api.yaml",
                external_service("api", "api.external.test", api.port(), "HTTP", "DNS"),
            ),
        ],
        "ALLOW_ANY",
        &[
            "--resolve",
            "edition.cnn.com:127.0.0.1",
            "--resolve",
            "api.external.test:127.0.0.1",
            "--resolve",
            "www.anywhere.test:127.0.0.1",
        ],
    )
    .await;
    let r = get(&g.url(80, "/politics").await, "edition.cnn.com", &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log());
    let proxy = g.addr(3128).await;
    let api_url = format!("http://api.external.test:{}/get", api.port());
    let r = get_via(proxy, &api_url).await;
    assert_eq!(r.backend(), Some("api"), "{}", g.log());
    let web_url = format!("http://www.anywhere.test:{}/page", web.port());
    let r = get_via(proxy, &web_url).await;
    assert_eq!(r.backend(), Some("web"), "{}", g.log());

    let lines = log_lines(&log, 3).await;
    let http = g.addr(80).await;
    let cases = [
        (
            "\"GET /politics HTTP/1.1\"",
            "edition.cnn.com".to_string(),
            cnn,
            "outbound|80||edition.cnn.com".to_string(),
            http,
        ),
        (
            "\"GET /get HTTP/1.1\"",
            format!("api.external.test:{}", api.port()),
            api,
            format!("outbound|{}||api.external.test", api.port()),
            proxy,
        ),
        (
            "\"GET /page HTTP/1.1\"",
            format!("www.anywhere.test:{}", web.port()),
            web,
            "PassthroughCluster".to_string(),
            proxy,
        ),
    ];
    for (request, authority, upstream, cluster, local) in cases {
        let line = line_with(&lines, request);
        let (method, path_proto) = request.split_once(' ').unwrap();
        assert_line(
            line,
            &format!(
                "* {method} {path_proto} 200 - via_upstream - \"-\" 0 * * * \"127.0.0.1\" * * \"{authority}\" \"{upstream}\" {cluster} * {local} * - *"
            ),
        );
    }
    let text = g.prometheus().await;
    for (service, name) in [
        ("edition.cnn.com", "edition.cnn.com"),
        ("api.external.test", "api.external.test"),
        ("www.anywhere.test", "PassthroughCluster"),
    ] {
        let labels = [
            ("destination_service", service),
            ("destination_service_name", name),
            ("response_code", "200"),
        ];
        assert_eq!(
            metric_sum(&text, "istio_requests_total", &labels),
            1.0,
            "{service}\n{text}"
        );
    }
}

// === Mesh VirtualService rules in CONNECT tunnels ===

/// Over a CONNECT tunnel already answered 200 (`tunnel`), a TLS handshake with `sni` (trusting
/// `ca`) and one HTTP/1.1 request: the JSON the HTTPS backend answers.
async fn https_through_tunnel(
    tunnel: tokio::net::TcpStream,
    ca: &Pki,
    sni: &str,
) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let exchange = async {
        let mut tls = connector.connect(name, tunnel).await.unwrap();
        let request = format!("GET /tunnel HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        out
    };
    let out = tokio::time::timeout(WAIT, exchange).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// A sidecar applies mesh VirtualServices' `tls` rules to outbound TLS; so does a CONNECT
/// tunnel: a tunnel to `a.external.test` whose ClientHello names `a.external.test` goes where
/// the rule says (`b.external.test`'s ServiceEntry), and is counted and logged with that
/// destination. A ClientHello with another name matches no rule: the tunnel goes to the
/// CONNECT's own ServiceEntry, as without the VirtualService.
#[tokio::test]
async fn mesh_tls_rules_route_connect_tunnels_by_the_sni_inside() {
    let ca = Pki::new("external");
    let leaf = ca.server(&["a.external.test", "b.external.test"]);
    let a = https_backend("a-server", &leaf, None).await;
    let b = https_backend("b-server", &leaf, None).await;
    let (pa, pb) = (a.port(), b.port());
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: a-to-b, namespace: default}}\nspec:\n  hosts: [a.external.test]\n  tls:\n  - match: [{{port: {pa}, sniHosts: [a.external.test]}}]\n    route: [{{destination: {{host: b.external.test, port: {{number: {pb}}}}}}}]\n"
    );
    let (g, _logs, log) = start_logging_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            (
                "a.yaml",
                external_service("a", "a.external.test", pa, "TLS", "DNS"),
            ),
            (
                "b.yaml",
                external_service("b", "b.external.test", pb, "TLS", "DNS"),
            ),
            ("vs.yaml", vs),
        ],
        "REGISTRY_ONLY",
        &[
            "--resolve",
            "a.external.test:127.0.0.1",
            "--resolve",
            "b.external.test:127.0.0.1",
        ],
    )
    .await;
    let proxy = g.addr(3128).await;
    let target = format!("a.external.test:{pa}");

    let (status, tunnel) = raw_connect(proxy, &target).await;
    assert_eq!(status, 200, "{}", g.log());
    let body = https_through_tunnel(tunnel, &ca, "a.external.test").await;
    assert_eq!(body["backend"], "b-server", "{}", g.log());
    assert_eq!(body["sni"], "a.external.test");
    let to_b = [
        ("destination_service", "b.external.test"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
    ];
    metric_reaches(&g, "istio_tcp_connections_closed_total", &to_b, 1.0).await;
    let lines = log_lines(&log, 1).await;
    assert_line(
        &lines[0],
        &format!(
            "* \"CONNECT - HTTP/1.1\" 200 - via_upstream - \"-\" * * * - \"127.0.0.1\" \"tunnel-test\" * \"{target}\" \"{b}\" outbound|{pb}||b.external.test * {proxy} * - -"
        ),
    );

    // Another name in the ClientHello: no rule; the CONNECT's own ServiceEntry.
    let (status, tunnel) = raw_connect(proxy, &target).await;
    assert_eq!(status, 200);
    let body = https_through_tunnel(tunnel, &ca, "b.external.test").await;
    assert_eq!(body["backend"], "a-server");
    let to_a = [
        ("destination_service", "a.external.test"),
        ("request_protocol", "tcp"),
    ];
    metric_reaches(&g, "istio_tcp_connections_closed_total", &to_a, 1.0).await;
    let lines = log_lines(&log, 2).await;
    assert_line(
        &lines[1],
        &format!(
            "* \"CONNECT - HTTP/1.1\" 200 - via_upstream - \"-\" * * * - \"127.0.0.1\" \"tunnel-test\" * \"{target}\" \"{a}\" outbound|{pa}||a.external.test * {proxy} * - -"
        ),
    );
}

/// A mesh VirtualService's `tcp` rule for port 9000 of `echo.test` takes CONNECT tunnels to
/// that port to its destination (another echo server, a ServiceEntry's), counted with it; a
/// tunnel to another port of the host matches no rule and passes through (ALLOW_ANY) to the
/// host, as before.
#[tokio::test]
async fn mesh_tcp_rules_route_connect_tunnels_by_port() {
    let v1 = tcp_echo_backend("tcp-v1").await;
    let v2 = tcp_echo_backend("tcp-v2").await;
    let p2 = v2.port();
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: default}}\nspec:\n  hosts: [echo.test]\n  tcp:\n  - match: [{{port: 9000}}]\n    route: [{{destination: {{host: v2.external.test, port: {{number: {p2}}}}}}}]\n"
    );
    let g = start_egress(
        &[
            ("proxy.yaml", FORWARD_PROXY.to_string()),
            (
                "v2.yaml",
                external_service("v2", "v2.external.test", p2, "TCP", "DNS"),
            ),
            ("vs.yaml", vs),
        ],
        "ALLOW_ANY",
        &[
            "--resolve",
            "echo.test:127.0.0.1",
            "--resolve",
            "v2.external.test:127.0.0.1",
        ],
    )
    .await;
    let proxy = g.addr(3128).await;

    let (status, mut s) = raw_connect(proxy, "echo.test:9000").await;
    assert_eq!(status, 200, "{}", g.log());
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v2\n");
    assert_eq!(
        send_and_read_to_end(&mut s, b"hi").await.unwrap(),
        "hi<eof>"
    );
    let to_v2 = [
        ("destination_service", "v2.external.test"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
    ];
    metric_reaches(&g, "istio_tcp_connections_closed_total", &to_v2, 1.0).await;

    let (status, mut s) = raw_connect(proxy, &format!("echo.test:{}", v1.port())).await;
    assert_eq!(status, 200);
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v1\n");
    let passthrough = [
        ("destination_service", "echo.test"),
        ("destination_service_name", "PassthroughCluster"),
        ("request_protocol", "tcp"),
    ];
    drop(s);
    metric_reaches(&g, "istio_tcp_connections_closed_total", &passthrough, 1.0).await;
}
