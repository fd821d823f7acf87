//! TLS origination to upstreams (DestinationRule `trafficPolicy.tls`), end to end: a TLS
//! backend of our own behind a ServiceEntry, reached through the gateway's port 80.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the TLS backend saw: the SNI of each completed handshake, and whether a client
/// certificate came.
#[derive(Default)]
struct Saw {
    snis: Vec<Option<String>>,
    client_certs: Vec<bool>,
}

/// An HTTP/1.1 server over TLS with `leaf`; requires a client certificate from `client_ca`
/// when given. Answers every request `200 tls-ok`.
async fn tls_http_backend(leaf: &Leaf, client_ca: Option<&Pki>) -> (SocketAddr, Arc<Mutex<Saw>>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(vec![leaf.der()], leaf.key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let saw = Arc::new(Mutex::new(Saw::default()));
    let seen = saw.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                {
                    let (_, conn) = tls.get_ref();
                    let mut s = seen.lock().unwrap();
                    s.snis.push(conn.server_name().map(str::to_string));
                    s.client_certs.push(conn.peer_certificates().is_some());
                }
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\ntls-ok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, saw)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Gateway, ServiceEntry `secure.internal` at `addr`, a route to it, and a DestinationRule
/// with `tls` (YAML flow mapping).
async fn start(addr: SocketAddr, tls: &str) -> Gateway {
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.internal\n  trafficPolicy:\n    tls: {tls}\n"
    );
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("secure", "secure.internal", &[(addr, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "secure",
                "default",
                &["*"],
                &["gw"],
                &http_routes(&[("", "secure.internal")]),
            ),
        ),
        ("dr.yaml".to_string(), dr),
    ];
    start_files(&files).await
}

#[tokio::test]
async fn simple_with_ca_file_verifies_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let (addr, saw) = tls_http_backend(&ca.server(&["app.example.com"]), None).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let g = start(
        addr,
        &format!("{{mode: SIMPLE, caCertificates: '{ca_file}'}}"),
    )
    .await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(r.body, "tls-ok");
    // SNI defaults to the request's Host without its port.
    assert_eq!(
        saw.lock().unwrap().snis,
        vec![Some("app.example.com".to_string())]
    );
}

#[tokio::test]
async fn a_backend_certificate_from_another_ca_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let other = Pki::new("other");
    let (addr, _) = tls_http_backend(&ca.server(&["app.example.com"]), None).await;
    let ca_file = write(dir.path(), "ca.pem", &other.ca_pem);
    let g = start(
        addr,
        &format!("{{mode: SIMPLE, caCertificates: '{ca_file}'}}"),
    )
    .await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let ca = Pki::new("upstream");
    let (addr, _) = tls_http_backend(&ca.server(&["app.example.com"]), None).await;
    let g = start(addr, "{mode: SIMPLE, insecureSkipVerify: true}").await;
    let r = get(&g.url(80, "/").await, "whatever.example", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(r.body, "tls-ok");
}

#[tokio::test]
async fn sni_and_subject_alt_names_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let (addr, saw) = tls_http_backend(&ca.server(&["backend.internal"]), None).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let g = start(
        addr,
        &format!(
            "{{mode: SIMPLE, caCertificates: '{ca_file}', sni: sni.example.com, subjectAltNames: [backend.internal]}}"
        ),
    )
    .await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(
        saw.lock().unwrap().snis,
        vec![Some("sni.example.com".to_string())]
    );
}

#[tokio::test]
async fn mutual_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let clients = Pki::new("clients");
    let (addr, saw) = tls_http_backend(&ca.server(&["app.example.com"]), Some(&clients)).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let client = clients.client("gateway.example.com");
    let cert = write(dir.path(), "client.pem", &client.cert_pem);
    let key = write(dir.path(), "client.key", &client.key_pem);
    let g = start(
        addr,
        &format!(
            "{{mode: MUTUAL, caCertificates: '{ca_file}', clientCertificate: '{cert}', privateKey: '{key}'}}"
        ),
    )
    .await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(saw.lock().unwrap().client_certs, vec![true]);

    // SIMPLE to the same backend: no client certificate, the backend refuses.
    let g2 = start(
        addr,
        &format!("{{mode: SIMPLE, caCertificates: '{ca_file}'}}"),
    )
    .await;
    let r = get(&g2.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

#[tokio::test]
async fn disable_sends_plaintext() {
    let addr = backend("plain").await;
    let g = start(addr, "{mode: DISABLE}").await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("plain"));
}

/// A keep-alive HTTP server over TLS offering `h2` and `http/1.1` by ALPN. Every response
/// body is `<version> <sni>`; `handshakes` counts completed handshakes, i.e. connections.
async fn keepalive_tls_backend(leaf: &Leaf) -> (SocketAddr, Arc<Mutex<Saw>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der()], leaf.key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let saw = Arc::new(Mutex::new(Saw::default()));
    let seen = saw.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                seen.lock().unwrap().snis.push(sni.clone());
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let body = format!("{:?} {}", req.version(), sni.as_deref().unwrap_or("-"));
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, saw)
}

#[tokio::test]
async fn connections_to_a_tls_upstream_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let (addr, saw) =
        keepalive_tls_backend(&ca.server(&["app.example.com", "other.example.com"])).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let g = start(
        addr,
        &format!("{{mode: SIMPLE, caCertificates: '{ca_file}'}}"),
    )
    .await;
    let url = g.url(80, "/").await;
    for _ in 0..5 {
        let r = get(&url, "app.example.com", &[]).await;
        assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
        assert_eq!(r.body, "HTTP/1.1 app.example.com");
    }
    // One handshake: the other four requests reused the pooled connection.
    assert_eq!(saw.lock().unwrap().snis.len(), 1);
    // Another SNI is another connection: pooled connections are per SNI.
    let r = get(&url, "other.example.com", &[]).await;
    assert_eq!(r.body, "HTTP/1.1 other.example.com");
    let r = get(&url, "app.example.com", &[]).await;
    assert_eq!(r.body, "HTTP/1.1 app.example.com");
    assert_eq!(saw.lock().unwrap().snis.len(), 2);
}

#[tokio::test]
async fn http2_over_tls_to_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let (addr, saw) = keepalive_tls_backend(&ca.server(&["app.example.com"])).await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.internal\n  trafficPolicy:\n    connectionPool: {{http: {{h2UpgradePolicy: UPGRADE}}}}\n    tls: {{mode: SIMPLE, caCertificates: '{ca_file}'}}\n"
    );
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("secure", "secure.internal", &[(addr, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "secure",
                "default",
                &["*"],
                &["gw"],
                &http_routes(&[("", "secure.internal")]),
            ),
        ),
        ("dr.yaml".to_string(), dr),
    ];
    let g = start_files(&files).await;
    let url = g.url(80, "/").await;
    let replies =
        futures_util::future::join_all((0..6).map(|_| get(&url, "app.example.com", &[]))).await;
    for r in replies {
        assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
        assert_eq!(r.body, "HTTP/2.0 app.example.com");
    }
    // Concurrent requests share one multiplexed connection.
    assert_eq!(saw.lock().unwrap().snis.len(), 1);
}

fn secret(name: &str, entries: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n"
    );
    for (k, v) in entries {
        out.push_str(&format!("  {k}: |\n"));
        for line in v.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

#[tokio::test]
async fn credential_name_supplies_the_ca_and_the_client_certificate() {
    let ca = Pki::new("upstream");
    let clients = Pki::new("clients");
    let (addr, saw) = tls_http_backend(&ca.server(&["app.example.com"]), Some(&clients)).await;
    let client = clients.client("gateway.example.com");
    let g = start(addr, "{mode: MUTUAL, credentialName: upstream-client}").await;
    // The Secret is not there yet: the destination answers 503, and the diagnostic says why.
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    let diags = g.diagnostics().await;
    assert!(
        diags.iter().any(|d| d.contains("dr.yaml:")
            && d.contains("spec.trafficPolicy.tls.credentialName")
            && d.contains("Secret istio-system/upstream-client is not among the loaded resources")),
        "{diags:?}"
    );
    let before = g.generation().await;
    g.write(
        "secret.yaml",
        &secret(
            "upstream-client",
            &[
                ("tls.crt", &client.cert_pem),
                ("tls.key", &client.key_pem),
                ("ca.crt", &ca.ca_pem),
            ],
        ),
    )
    .await;
    g.wait_generation_after(before).await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(saw.lock().unwrap().client_certs, vec![true]);
}

#[tokio::test]
async fn simple_credential_name_takes_the_ca_from_a_cacert_secret() {
    let ca = Pki::new("upstream");
    let (addr, _) = tls_http_backend(&ca.server(&["app.example.com"]), None).await;
    let mut files = vec![(
        "secret.yaml".to_string(),
        secret("upstream-cacert", &[("ca.crt", &ca.ca_pem)]),
    )];
    files.push((
        "secret2.yaml".to_string(),
        secret("upstream", &[("unrelated", "x")]),
    ));
    let g = start(addr, "{mode: SIMPLE, credentialName: upstream}").await;
    for (name, text) in &files {
        let before = g.generation().await;
        g.write(name, text).await;
        g.wait_generation_after(before).await;
    }
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    assert_eq!(r.body, "tls-ok");
}

#[tokio::test]
async fn a_changed_destination_rule_or_ca_file_applies_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let other = Pki::new("other");
    let (addr, _) = keepalive_tls_backend(&ca.server(&["app.example.com"])).await;
    let wrong = write(dir.path(), "wrong.pem", &other.ca_pem);
    let g = start(
        addr,
        &format!("{{mode: SIMPLE, caCertificates: '{wrong}'}}"),
    )
    .await;
    let url = g.url(80, "/").await;
    assert_eq!(get(&url, "app.example.com", &[]).await.status, 503);

    // The DestinationRule now names the right CA: the cluster's TLS follows on reload.
    let right = write(dir.path(), "right.pem", &ca.ca_pem);
    let before = g.generation().await;
    g.write(
        "dr.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.internal\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: '{right}'}}\n"
        ),
    )
    .await;
    g.wait_generation_after(before).await;
    assert_eq!(get(&url, "app.example.com", &[]).await.status, 200);

    // The CA file itself is replaced by the wrong CA (a rotation): new connections verify
    // against it within a second, so the next new connection fails.
    write_atomic(Path::new(&right), &other.ca_pem);
    eventually("the rotated CA file is used", || async {
        // Pooled connections belong to the old configuration, so this opens a new one.
        get(&url, "app.example.com", &[]).await.status == 503
    })
    .await;
}

#[tokio::test]
async fn mirrors_reach_a_tls_cluster_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::new("upstream");
    let (mirror_addr, saw) = keepalive_tls_backend(&ca.server(&["app.example.com-shadow"])).await;
    let primary = backend("primary").await;
    let ca_file = write(dir.path(), "ca.pem", &ca.ca_pem);
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec:\n  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: primary.internal}\n    mirror: {host: secure.internal}\n";
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: secure, namespace: default}}\nspec:\n  host: secure.internal\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: '{ca_file}'}}\n"
    );
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("secure", "secure.internal", &[(mirror_addr, "v1")]),
        ),
        (
            "primary.yaml".to_string(),
            service("primary", "primary.internal", &[(primary, "v1")]),
        ),
        ("vs.yaml".to_string(), vs.to_string()),
        ("dr.yaml".to_string(), dr),
    ];
    let g = start_files(&files).await;
    let r = get(&g.url(80, "/").await, "app.example.com", &[]).await;
    assert_eq!(r.backend(), Some("primary"), "{r:?}");
    eventually("the mirror copy arrives over TLS", || async {
        saw.lock().unwrap().snis == vec![Some("app.example.com-shadow".to_string())]
    })
    .await;
}
