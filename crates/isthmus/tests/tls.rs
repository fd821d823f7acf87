//! TLS and TCP ports end to end, through real sockets: SIMPLE, MUTUAL and OPTIONAL_MUTUAL
//! termination with certificates from Secrets and files, SNI filter chains, ALPN, protocol
//! versions and cipher suites, certificate rotation, httpsRedirect, SNI passthrough to TLS
//! backends, TCP routes (weights, half-close), and hostile bytes on a TLS port. Istio's
//! ServerTLSSettings semantics are the reference.
//!
//! Certificates are generated at run time with rcgen (a CA per test, ECDSA P-256).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::CipherSuite;
use support::*;
use tokio::time::Instant;

/// Gateway port 443 bound on an ephemeral port too.
const BIND_443: &[&str] = &["--bind", "443=127.0.0.1:0"];

async fn start_tls(files: &[(String, String)]) -> Gateway {
    start_files_with(files, BIND_443).await
}

/// A demo backend `name` behind ServiceEntry `NAME.internal`, and VirtualService `NAME`
/// sending `hosts` on Gateway `gw` to it.
async fn http_app(name: &str, hosts: &[&str]) -> Vec<(String, String)> {
    let addr = backend(name).await;
    let host = format!("{name}.internal");
    vec![
        (
            format!("svc-{name}.yaml"),
            service(name, &host, &[(addr, "v1")]),
        ),
        (
            format!("vs-{name}.yaml"),
            virtual_service(
                name,
                "default",
                hosts,
                &["gw"],
                &http_routes(&[("", &host)]),
            ),
        ),
    ]
}

/// An x-forwarded-client-cert a client makes up.
const FORGED_XFCC: &str = "By=spiffe://forged;Hash=00;URI=spiffe://cluster.local/ns/admin/sa/admin";

fn simple(credential: &str) -> String {
    format!("{{mode: SIMPLE, credentialName: {credential}}}")
}

/// The last diagnostic line containing `needle`, if any.
async fn diagnostic_with(g: &Gateway, needle: &str) -> Option<String> {
    g.diagnostics()
        .await
        .into_iter()
        .rev()
        .find(|d| d.contains(needle))
}

// === SIMPLE termination ===

#[tokio::test]
async fn simple_tls_from_a_secret_serves_https_with_h2_and_http11_by_alpn() {
    let ca = Pki::new("simple");
    let leaf = ca.server(&["app.example.com"]);
    let mut files = http_app("app", &["app.example.com"]).await;
    files.push(("secret.yaml".into(), tls_secret("app-cred", &leaf, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &["app.example.com"],
            &simple("app-cred"),
        )]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let url = format!("https://app.example.com:{}/hello?x=1", addr.port());

    // The client offers h2 and http/1.1 (and verifies the certificate against the test CA
    // only): h2 is chosen.
    let client = https_client(&ca, &[("app.example.com", addr)])
        .build()
        .unwrap();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(response_certificate(&resp), leaf.der().to_vec());
    let r = Reply::from(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("app"));
    let echo = r.json();
    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");

    // A client cannot forge the client certificate details the backend may trust: Istio's
    // gateways sanitize x-forwarded-client-cert (SANITIZE_SET), dropping it without mTLS.
    let resp = client
        .get(&url)
        .header("x-forwarded-client-cert", FORGED_XFCC)
        .send()
        .await
        .unwrap();
    let r = Reply::from(resp).await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["headers"]["x-forwarded-client-cert"].is_null(),
        "forwarded: {}",
        r.json()["headers"]
    );

    // A client offering only http/1.1 gets HTTP/1.1.
    let h1 = https_client(&ca, &[("app.example.com", addr)])
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let r = Reply::from(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");

    // What ALPN negotiates, offer by offer; without ALPN the connection speaks HTTP/1.1.
    /// Protocols offered, and the one the server must choose.
    type Offer = (&'static [&'static [u8]], Option<&'static [u8]>);
    let offers: [Offer; 4] = [
        (&[b"h2", b"http/1.1"], Some(b"h2")),
        (&[b"http/1.1"], Some(b"http/1.1")),
        (&[b"h2"], Some(b"h2")),
        (&[], None),
    ];
    for (offer, want) in offers {
        let mut cfg = tls_client(&ca, None);
        cfg.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
        let s = tls_connect(addr, "app.example.com", &cfg).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), want, "offer {offer:?}");
    }
    // The server's cipher suite order wins over the client's, as Envoy's
    // (SSL_OP_CIPHER_SERVER_PREFERENCE): AES-256-GCM first.
    let preference = [
        (
            &rustls::version::TLS12,
            vec![
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            &rustls::version::TLS13,
            vec![
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
            ],
            CipherSuite::TLS13_AES_256_GCM_SHA384,
        ),
    ];
    for (version, offer, want) in preference {
        let cfg = tls_client_config(&ca, None, &[version], Some(&offer));
        let s = tls_connect(addr, "app.example.com", &cfg).await.unwrap();
        assert_eq!(
            s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
            Some(want),
            "client order {offer:?}"
        );
    }
    let r = tls_get(
        addr,
        "app.example.com",
        &tls_client(&ca, None),
        "app.example.com",
        "/no-alpn",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/no-alpn");

    // curl, verifying against the CA file, over HTTP/1.1 and HTTP/2.
    let ca_file = g.path("ca.pem.txt");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (ok, out, err) = curl(vec![
            flag.into(),
            "--resolve".into(),
            format!("app.example.com:{}:127.0.0.1", addr.port()),
            "--cacert".into(),
            ca_file.display().to_string(),
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
            url.clone(),
        ])
        .await;
        assert!(ok, "curl {flag} failed: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"), "curl {flag}: {out}");
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    }
    // curl with a CA that did not sign the certificate refuses it.
    let other = Pki::new("other");
    std::fs::write(&ca_file, &other.ca_pem).unwrap();
    let (ok, _, err) = curl(vec![
        "--resolve".into(),
        format!("app.example.com:{}:127.0.0.1", addr.port()),
        "--cacert".into(),
        ca_file.display().to_string(),
        url.clone(),
    ])
    .await;
    assert!(!ok, "curl accepted a certificate from an untrusted CA");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn simple_tls_from_certificate_files() {
    let ca = Pki::new("files");
    let leaf = ca.server(&["files.example.com"]);
    // Certificates live outside the configuration folder, as mounted Secrets do.
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let mut files = http_app("files", &["files.example.com"]).await;
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &["files.example.com"],
            &format!(
                "{{mode: SIMPLE, serverCertificate: '{}', privateKey: '{}'}}",
                cert.display(),
                key.display()
            ),
        )]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let client = https_client(&ca, &[("files.example.com", addr)])
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://files.example.com:{}/f", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response_certificate(&resp), leaf.der().to_vec());
    let r = Reply::from(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), Some("files"));
    assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
}

// === SNI ===

#[tokio::test]
async fn sni_chooses_the_server_and_its_certificate() {
    let ca = Pki::new("sni");
    let a = ca.server(&["a.example.com"]);
    let b = ca.server(&["b.example.com"]);
    let wild = ca.server(&["*.example.com"]);
    let mut files = Vec::new();
    files.extend(http_app("a", &["a.example.com"]).await);
    files.extend(http_app("b", &["b.example.com"]).await);
    files.extend(http_app("wild", &["*.example.com"]).await);
    files.push(("secret-a.yaml".into(), tls_secret("a-cred", &a, None)));
    files.push(("secret-b.yaml".into(), tls_secret("b-cred", &b, None)));
    files.push(("secret-w.yaml".into(), tls_secret("wild-cred", &wild, None)));
    // As Istio's secure-ingress-multiple-hosts task: one port, one server per host.
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-a",
                "HTTPS",
                &["a.example.com"],
                &simple("a-cred"),
            ),
            server(
                443,
                "https-b",
                "HTTPS",
                &["b.example.com"],
                &simple("b-cred"),
            ),
            server(
                443,
                "https-wild",
                "HTTPS",
                &["*.example.com"],
                &simple("wild-cred"),
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let names = [
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
    ];
    let resolve: Vec<(&str, SocketAddr)> = names.iter().map(|n| (*n, addr)).collect();
    let client = https_client(&ca, &resolve).build().unwrap();
    // (SNI and host, certificate, backend): exact names first, then the wildcard.
    let cases = [
        ("a.example.com", &a, "a"),
        ("b.example.com", &b, "b"),
        ("c.example.com", &wild, "wild"),
        ("d.example.com", &wild, "wild"),
    ];
    for (name, cert, backend) in cases {
        let resp = client
            .get(format!("https://{name}:{}/", addr.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(
            response_certificate(&resp) == cert.der().to_vec(),
            "{name}: wrong certificate"
        );
        let r = Reply::from(resp).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.backend(), Some(backend), "{name}");
    }

    // Each server has its own route table: SNI a.example.com with Host b.example.com finds
    // no virtual host (404, as Envoy's per-server RDS).
    let r = tls_get(
        addr,
        "a.example.com",
        &tls_client(&ca, None),
        "b.example.com",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);

    // A name no server covers: no filter chain, the connection is closed.
    let other = tls_connect(addr, "other.test", &tls_client(&ca, None)).await;
    assert!(other.is_err(), "a handshake for an unknown SNI completed");
    // No SNI, and no `*` server: no filter chain either.
    let mut no_sni = tls_client(&ca, None);
    no_sni.enable_sni = false;
    let r = tls_connect(addr, "a.example.com", &no_sni).await;
    assert!(r.is_err(), "a handshake without SNI completed");

    // The gateway still serves.
    let r = Reply::from(
        client
            .get(format!("https://a.example.com:{}/", addr.port()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_star_server_takes_clients_without_sni_and_unknown_names() {
    let ca = Pki::new("star");
    let any = ca.server(&["default.example.com"]);
    let a = ca.server(&["a.example.com"]);
    let mut files = Vec::new();
    files.extend(http_app("any", &["*"]).await);
    files.extend(http_app("a", &["a.example.com"]).await);
    files.push(("secret-any.yaml".into(), tls_secret("any-cred", &any, None)));
    files.push(("secret-a.yaml".into(), tls_secret("a-cred", &a, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(443, "https-any", "HTTPS", &["*"], &simple("any-cred")),
            server(
                443,
                "https-a",
                "HTTPS",
                &["a.example.com"],
                &simple("a-cred"),
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;

    // No SNI: the `*` server's certificate (verified here for its own name).
    let mut no_sni = tls_client(&ca, None);
    no_sni.enable_sni = false;
    let s = tls_connect(addr, "default.example.com", &no_sni)
        .await
        .unwrap();
    assert!(
        peer_certificate(&s) == any.der(),
        "no SNI: wrong certificate"
    );
    let r = tls_get(addr, "default.example.com", &no_sni, "whatever.test", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-backend"), Some("any"));

    // An SNI that only `*` covers, and an exact one.
    let s = tls_connect(addr, "default.example.com", &tls_client(&ca, None))
        .await
        .unwrap();
    assert!(peer_certificate(&s) == any.der());
    let s = tls_connect(addr, "a.example.com", &tls_client(&ca, None))
        .await
        .unwrap();
    assert!(peer_certificate(&s) == a.der());
    let r = tls_get(
        addr,
        "a.example.com",
        &tls_client(&ca, None),
        "a.example.com",
        "/",
    )
    .await
    .unwrap();
    assert_eq!(r.header("x-backend"), Some("a"));
}

// === MUTUAL and OPTIONAL_MUTUAL ===

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let rogue = Pki::new("rogue");
    let good = clients.client("alice.example.com");
    let bad = rogue.client("mallory.example.com");
    let m1 = ca.server(&["m1.example.com"]);
    let m2 = ca.server(&["m2.example.com"]);
    let mut files = Vec::new();
    files.extend(http_app("m", &["m1.example.com", "m2.example.com"]).await);
    // m1: the client CA is `ca.crt` in the credential's own Secret.
    files.push((
        "secret-m1.yaml".into(),
        tls_secret("m1-cred", &m1, Some(&clients.ca_pem)),
    ));
    // m2: the client CA is in a separate `<name>-cacert` Secret.
    files.push(("secret-m2.yaml".into(), tls_secret("m2-cred", &m2, None)));
    files.push((
        "secret-m2-ca.yaml".into(),
        ca_secret("m2-cred-cacert", &clients.ca_pem),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-m1",
                "HTTPS",
                &["m1.example.com"],
                "{mode: MUTUAL, credentialName: m1-cred}",
            ),
            server(
                443,
                "https-m2",
                "HTTPS",
                &["m2.example.com"],
                "{mode: MUTUAL, credentialName: m2-cred}",
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    for host in ["m1.example.com", "m2.example.com"] {
        let r = tls_get(addr, host, &tls_client(&ca, Some(&good)), host, "/mtls")
            .await
            .unwrap_or_else(|e| panic!("{host}: a good client certificate was refused: {e}"));
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert_eq!(r.json()["headers"]["x-forwarded-proto"], "https");
        let none = tls_get(addr, host, &tls_client(&ca, None), host, "/mtls").await;
        assert!(none.is_err(), "{host}: served without a client certificate");
        let other = tls_get(addr, host, &tls_client(&ca, Some(&bad)), host, "/mtls").await;
        assert!(
            other.is_err(),
            "{host}: served a client certificate of another CA"
        );
    }

    // reqwest with a client identity, and curl with --cert/--key.
    let client = https_client(&ca, &[("m1.example.com", addr)])
        .identity(good.identity())
        .build()
        .unwrap();
    let r = Reply::from(
        client
            .get(format!("https://m1.example.com:{}/id", addr.port()))
            .header("x-forwarded-client-cert", FORGED_XFCC)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Whatever the gateway tells the backend about the client certificate, it is not what
    // the client wrote.
    let xfcc = r.json()["headers"]["x-forwarded-client-cert"].clone();
    assert!(
        !xfcc.to_string().contains("forged"),
        "a forged x-forwarded-client-cert reached the backend: {xfcc}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(path("ca.pem"), &ca.ca_pem).unwrap();
    std::fs::write(path("client.pem"), &good.cert_pem).unwrap();
    std::fs::write(path("client.key"), &good.key_pem).unwrap();
    let base = vec![
        "--resolve".to_string(),
        format!("m2.example.com:{}:127.0.0.1", addr.port()),
        "--cacert".into(),
        path("ca.pem"),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        format!("https://m2.example.com:{}/curl", addr.port()),
    ];
    let mut with_cert = base.clone();
    with_cert.extend(["--cert".into(), path("client.pem")]);
    with_cert.extend(["--key".into(), path("client.key")]);
    let (ok, out, err) = curl(with_cert).await;
    assert!(
        ok && out == "200",
        "curl with a client certificate: {out} {err}"
    );
    let (ok, out, _) = curl(base).await;
    assert!(
        !ok && out != "200",
        "curl without a client certificate: {out}"
    );
}

#[tokio::test]
async fn optional_mutual_accepts_no_certificate_but_not_a_bad_one() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let rogue = Pki::new("rogue");
    let leaf = ca.server(&["opt.example.com"]);
    let mut files = http_app("opt", &["opt.example.com"]).await;
    files.push((
        "secret.yaml".into(),
        tls_secret("opt-cred", &leaf, Some(&clients.ca_pem)),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &["opt.example.com"],
            "{mode: OPTIONAL_MUTUAL, credentialName: opt-cred}",
        )]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let host = "opt.example.com";
    let good = clients.client("alice.example.com");
    let r = tls_get(addr, host, &tls_client(&ca, Some(&good)), host, "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = tls_get(addr, host, &tls_client(&ca, None), host, "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let bad = rogue.client("mallory.example.com");
    let r = tls_get(addr, host, &tls_client(&ca, Some(&bad)), host, "/").await;
    assert!(r.is_err(), "served a client certificate of another CA");
}

// === Rotation ===

/// What one handshake of [`Connector`] saw.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// The server certificate, or why the connection failed.
    outcome: Result<Vec<u8>, String>,
}

/// A client that keeps connecting (a new TLS connection and one request each time) until
/// stopped, recording what it saw.
struct Connector {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Connector {
    fn start(addr: SocketAddr, host: &'static str, ca: &Pki) -> Connector {
        let cfg = tls_client(ca, None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let outcome: Result<Vec<u8>, String> = async {
                    let stream = tls_connect(addr, host, &cfg)
                        .await
                        .map_err(|e| e.to_string())?;
                    let cert = peer_certificate(&stream).to_vec();
                    let r = h1_conn(stream).await.get(host, "/poll").await?;
                    if r.status == 200 {
                        Ok(cert)
                    } else {
                        Err(format!("status {}", r.status))
                    }
                }
                .await;
                s.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    outcome,
                });
            }
        });
        Connector { seen, stop, task }
    }

    fn saw(&self, cert: &[u8]) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.outcome.as_deref() == Ok(cert))
    }

    async fn wait_for(&self, cert: &[u8]) {
        eventually("the new certificate is served", || async { self.saw(cert) }).await;
    }

    async fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the connecting client did not stop")
            .unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Checks a rotation from `old` to `new` started at `t0`: no connection failed, the new
/// certificate was served within 1 s, and never the old one after it.
fn check_rotation(seen: &[Seen], old: &[u8], new: &[u8], t0: Instant) {
    let failures: Vec<_> = seen.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(failures.is_empty(), "connections failed: {failures:?}");
    let first_new = seen
        .iter()
        .position(|s| s.outcome.as_deref() == Ok(new))
        .expect("the new certificate was never served");
    let after = seen[first_new].at.duration_since(t0);
    assert!(
        after <= Duration::from_secs(1),
        "the new certificate came {after:?} after the change"
    );
    assert!(
        seen[first_new..]
            .iter()
            .all(|s| s.outcome.as_deref() != Ok(old)),
        "the old certificate came back after the new one"
    );
    assert!(
        seen[..first_new]
            .iter()
            .all(|s| s.outcome.as_deref() == Ok(old)),
        "a third certificate was served"
    );
}

#[tokio::test]
async fn rotating_a_secret_serves_the_new_certificate_and_keeps_connections() {
    let ca = Pki::new("rotation");
    let host = "rot.example.com";
    let old = ca.server(&[host]);
    let new = ca.server(&[host]);
    let mut files = http_app("rot", &[host]).await;
    files.push(("secret.yaml".into(), tls_secret("rot-cred", &old, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "https", "HTTPS", &[host], &simple("rot-cred"))]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;

    // An established keep-alive connection.
    let stream = tls_connect(addr, host, &tls_client(&ca, None))
        .await
        .unwrap();
    assert!(peer_certificate(&stream) == old.der());
    let mut kept = h1_conn(stream).await;
    assert_eq!(kept.get(host, "/before").await.unwrap().status, 200);

    let connector = Connector::start(addr, host, &ca);
    eventually("the connecting client is served", || async {
        connector.saw(&old.der())
    })
    .await;
    let t0 = Instant::now();
    g.write("secret.yaml", &tls_secret("rot-cred", &new, None))
        .await;
    connector.wait_for(&new.der()).await;
    let seen = connector.stop().await;
    check_rotation(&seen, &old.der(), &new.der(), t0);

    // The connection opened before the rotation still works, on its old session.
    let r = kept.get(host, "/after").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/after");
}

async fn parked(g: &Gateway) -> f64 {
    metric_sum(
        &g.prometheus().await,
        "isthmus_downstream_connections_parked",
        &[],
    )
}

#[tokio::test]
async fn quiet_https_connections_are_parked_keep_their_session_and_serve_again() {
    let ca = Pki::new("park");
    let host = "park.example.com";
    let mut files = http_app("park", &[host]).await;
    files.push((
        "secret.yaml".into(),
        tls_secret("park-cred", &ca.server(&[host]), None),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "https", "HTTPS", &[host], &simple("park-cred"))]),
    ));
    let args = [BIND_443, &["--park-idle-after", "50ms"]].concat();
    let g = start_files_with(&files, &args).await;
    let addr = g.addr(443).await;
    let mut conns = Vec::new();
    for i in 0..5 {
        let stream = tls_connect(addr, host, &tls_client(&ca, None))
            .await
            .unwrap();
        let mut conn = h1_conn(stream).await;
        let r = conn.get(host, &format!("/first/{i}")).await.unwrap();
        assert_eq!(r.status, 200);
        conns.push(conn);
    }
    eventually("every quiet connection parked", || async {
        parked(&g).await == 5.0
    })
    .await;
    // Each is answered on the same TLS session: rustls' state waited with the socket.
    for (i, conn) in conns.iter_mut().enumerate() {
        let path = format!("/again/{i}");
        let r = conn.get(host, &path).await.unwrap();
        assert_eq!(
            (r.status, r.json()["path"].as_str()),
            (200, Some(path.as_str()))
        );
    }
    eventually("the connections parked again", || async {
        parked(&g).await == 5.0
    })
    .await;
    // A client closing its parked connection takes it out of the lot.
    conns.truncate(3);
    eventually("the closed connections left the lot", || async {
        parked(&g).await == 3.0
    })
    .await;
}

#[tokio::test]
async fn rotating_certificate_files_in_place_serves_the_new_certificate() {
    let ca = Pki::new("rotation-files");
    let host = "rotf.example.com";
    let old = ca.server(&[host]);
    let new = ca.server(&[host]);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, &old.cert_pem).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    let mut files = http_app("rotf", &[host]).await;
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &[host],
            &format!(
                "{{mode: SIMPLE, serverCertificate: '{}', privateKey: '{}'}}",
                cert.display(),
                key.display()
            ),
        )]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let stream = tls_connect(addr, host, &tls_client(&ca, None))
        .await
        .unwrap();
    let mut kept = h1_conn(stream).await;
    assert_eq!(kept.get(host, "/before").await.unwrap().status, 200);

    let connector = Connector::start(addr, host, &ca);
    eventually("the connecting client is served", || async {
        connector.saw(&old.der())
    })
    .await;
    let before = g.generation().await;
    let t0 = Instant::now();
    // Rewritten in place (truncated and written), certificate first: a reload in between
    // sees a key that does not match and keeps the old pair.
    std::fs::write(&cert, &new.cert_pem).unwrap();
    std::fs::write(&key, &new.key_pem).unwrap();
    g.wait_generation_after(before).await;
    connector.wait_for(&new.der()).await;
    let seen = connector.stop().await;
    check_rotation(&seen, &old.der(), &new.der(), t0);
    assert_eq!(kept.get(host, "/after").await.unwrap().status, 200);
    // Once both files are consistent, no TLS error remains.
    eventually("no TLS diagnostic", || async {
        diagnostic_with(&g, "TLS for server").await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_broken_new_certificate_keeps_the_previous_one_serving() {
    let ca = Pki::new("broken");
    let (hs, hf) = ("sec.example.com", "file.example.com");
    let sec_old = ca.server(&[hs]);
    let file_old = ca.server(&[hf]);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, &file_old.cert_pem).unwrap();
    std::fs::write(&key, &file_old.key_pem).unwrap();
    let mut files = http_app("app", &[hs, hf]).await;
    files.push(("secret.yaml".into(), tls_secret("sec-cred", &sec_old, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(443, "https-sec", "HTTPS", &[hs], &simple("sec-cred")),
            server(
                443,
                "https-file",
                "HTTPS",
                &[hf],
                &format!(
                    "{{mode: SIMPLE, serverCertificate: '{}', privateKey: '{}'}}",
                    cert.display(),
                    key.display()
                ),
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let cfg = tls_client(&ca, None);
    let served = |name: &'static str| {
        let cfg = cfg.clone();
        async move {
            let s = tls_connect(addr, name, &cfg).await.unwrap();
            peer_certificate(&s).to_vec()
        }
    };

    // A Secret whose new certificate does not match its key.
    let other = ca.server(&[hs]);
    let mismatched = Leaf {
        cert_pem: ca.server(&[hs]).cert_pem,
        key_pem: other.key_pem,
    };
    g.write("secret.yaml", &tls_secret("sec-cred", &mismatched, None))
        .await;
    let Some(d) = diagnostic_with(&g, "TLS for server default/gw/0").await else {
        panic!("no diagnostic: {:?}", g.diagnostics().await);
    };
    assert!(d.contains(": error: "), "{d}");
    assert!(d.contains("do not match"), "{d}");
    assert!(d.contains("the previous certificate keeps serving"), "{d}");
    assert!(served(hs).await == sec_old.der().to_vec());
    let r = tls_get(addr, hs, &cfg, hs, "/").await.unwrap();
    assert_eq!(r.status, 200);

    // A certificate file overwritten with garbage.
    let before = g.generation().await;
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    g.wait_generation_after(before).await;
    let Some(d) = diagnostic_with(&g, "TLS for server default/gw/1").await else {
        panic!("no diagnostic: {:?}", g.diagnostics().await);
    };
    assert!(d.contains(": error: "), "{d}");
    assert!(d.contains(&cert.display().to_string()), "{d}");
    assert!(d.contains("the previous certificate keeps serving"), "{d}");
    assert!(served(hf).await == file_old.der().to_vec());
    // And the broken Secret is still reported, its old certificate still served.
    assert!(
        diagnostic_with(&g, "TLS for server default/gw/0")
            .await
            .is_some()
    );
    assert!(served(hs).await == sec_old.der().to_vec());

    // Repairs take effect.
    let sec_new = ca.server(&[hs]);
    g.write("secret.yaml", &tls_secret("sec-cred", &sec_new, None))
        .await;
    assert!(served(hs).await == sec_new.der().to_vec());
    let file_new = ca.server(&[hf]);
    let before = g.generation().await;
    std::fs::write(&key, &file_new.key_pem).unwrap();
    std::fs::write(&cert, &file_new.cert_pem).unwrap();
    g.wait_generation_after(before).await;
    eventually("the repaired file certificate is served", || async {
        served(hf).await == file_new.der().to_vec()
    })
    .await;
    eventually("no TLS diagnostic", || async {
        diagnostic_with(&g, "TLS for server").await.is_none()
    })
    .await;
}

// === Versions and cipher suites ===

#[tokio::test]
async fn min_protocol_version_and_cipher_suites() {
    let ca = Pki::new("versions");
    let (h13, hsuite) = ("v13.example.com", "suite.example.com");
    let mut files = http_app("v", &[h13, hsuite]).await;
    files.push((
        "secret-13.yaml".into(),
        tls_secret("v13-cred", &ca.server(&[h13]), None),
    ));
    files.push((
        "secret-suite.yaml".into(),
        tls_secret("suite-cred", &ca.server(&[hsuite]), None),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-13",
                "HTTPS",
                &[h13],
                "{mode: SIMPLE, credentialName: v13-cred, minProtocolVersion: TLSV1_3}",
            ),
            server(
                443,
                "https-suite",
                "HTTPS",
                &[hsuite],
                "{mode: SIMPLE, credentialName: suite-cred, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]}",
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let tls12 = [&rustls::version::TLS12];
    let tls13 = [&rustls::version::TLS13];

    // minProtocolVersion TLSV1_3: a TLS 1.2-only client fails, TLS 1.3 works.
    let r = tls_get(
        addr,
        h13,
        &tls_client_config(&ca, None, &tls12, None),
        h13,
        "/",
    )
    .await;
    assert!(r.is_err(), "a TLS 1.2 client was served: {r:?}");
    let s = tls_connect(addr, h13, &tls_client_config(&ca, None, &tls13, None))
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // reqwest capped at TLS 1.2 fails too.
    let capped = https_client(&ca, &[(h13, addr)])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(
        capped
            .get(format!("https://{h13}:{}/", addr.port()))
            .send()
            .await
            .is_err()
    );

    // cipherSuites restrict TLS 1.2: a client offering only another suite fails, the listed
    // one is negotiated, and TLS 1.3 keeps its own suites.
    let aes128 = CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let aes256 = CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
    let chacha = CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    let r = tls_get(
        addr,
        hsuite,
        &tls_client_config(&ca, None, &tls12, Some(&[aes128, chacha][..])),
        hsuite,
        "/",
    )
    .await;
    assert!(r.is_err(), "a client without the listed suite was served");
    for offer in [vec![aes256], vec![aes128, chacha, aes256]] {
        let cfg = tls_client_config(&ca, None, &tls12, Some(offer.as_slice()));
        let s = tls_connect(addr, hsuite, &cfg).await.unwrap();
        assert_eq!(
            s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
            Some(aes256),
            "offer {offer:?}"
        );
        let r = tls_get(addr, hsuite, &cfg, hsuite, "/").await.unwrap();
        assert_eq!(r.status, 200);
    }
    let s = tls_connect(addr, hsuite, &tls_client_config(&ca, None, &tls13, None))
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // The other server on the port keeps every default suite.
    let s = tls_connect(
        addr,
        h13,
        &tls_client_config(
            &ca,
            None,
            &tls13,
            Some(&[CipherSuite::TLS13_CHACHA20_POLY1305_SHA256][..]),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite()),
        Some(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
}

// === httpsRedirect ===

#[tokio::test]
async fn https_redirect_answers_301_to_the_https_url() {
    let ca = Pki::new("redirect");
    let host = "r.example.com";
    let leaf = ca.server(&[host]);
    let mut files = http_app("r", &[host]).await;
    files.push(("secret.yaml".into(), tls_secret("r-cred", &leaf, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(80, "http", "HTTP", &[host], "{httpsRedirect: true}"),
            server(443, "https", "HTTPS", &[host], &simple("r-cred")),
        ]),
    ));
    let g = start_tls(&files).await;
    let plain = g.addr(80).await;
    let addr = g.addr(443).await;
    for (path, location) in [
        (
            "/path?query=1&b=2",
            "https://r.example.com/path?query=1&b=2",
        ),
        ("/", "https://r.example.com/"),
        ("/a/b", "https://r.example.com/a/b"),
    ] {
        let resp = client_no_redirects()
            .get(format!("http://{plain}{path}"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        let r = Reply::from(resp).await;
        assert_eq!(r.status, 301, "{path}");
        assert_eq!(r.header("location"), Some(location), "{path}");
        assert_eq!(r.backend(), None, "{path}: the backend answered");
    }
    // POST too: every request of the plaintext server is redirected.
    let r = Reply::from(
        client_no_redirects()
            .post(format!("http://{plain}/form"))
            .header("host", host)
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 301);
    // The HTTPS server serves the same host.
    let client = https_client(&ca, &[(host, addr)]).build().unwrap();
    let r = Reply::from(
        client
            .get(format!("https://{host}:{}/path?query=1", addr.port()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("r"));
}

// === Passthrough ===

/// Two TLS echo backends with their own CA (unknown to the gateway); ServiceEntries
/// `pass-a.internal` and `pass-b.internal`.
struct TlsBackends {
    ca: Pki,
    a: Leaf,
    b: Leaf,
    files: Vec<(String, String)>,
}

async fn tls_backends(names: &[&str]) -> TlsBackends {
    let ca = Pki::new("backends");
    let a = ca.server(names);
    let b = ca.server(names);
    let addr_a = tls_echo_backend("pass-a", &a).await;
    let addr_b = tls_echo_backend("pass-b", &b).await;
    let files = vec![
        (
            "svc-pass-a.yaml".into(),
            l4_service("pass-a", "pass-a.internal", "TLS", &[addr_a]),
        ),
        (
            "svc-pass-b.yaml".into(),
            l4_service("pass-b", "pass-b.internal", "TLS", &[addr_b]),
        ),
    ];
    TlsBackends { ca, a, b, files }
}

/// A TLS connection through the gateway: the backend's greeting, and the certificate seen.
async fn tls_greeting(
    addr: SocketAddr,
    sni: &str,
    cfg: &rustls::ClientConfig,
) -> std::io::Result<(String, Vec<u8>)> {
    let mut s = tls_connect(addr, sni, cfg).await?;
    let cert = peer_certificate(&s).to_vec();
    let line = read_line(&mut s).await?;
    Ok((line, cert))
}

#[tokio::test]
async fn passthrough_routes_by_sni_to_tls_backends() {
    let (ha, hb) = ("a.pass.example.com", "b.pass.example.com");
    let tb = tls_backends(&[ha, hb]).await;
    let mut files = tb.files.clone();
    // A terminating server shares the port: each chain does its own thing.
    let gw_ca = Pki::new("gateway");
    let term = gw_ca.server(&["term.example.com"]);
    files.extend(http_app("term", &["term.example.com"]).await);
    files.push(("secret.yaml".into(), tls_secret("term-cred", &term, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-pass",
                "HTTPS",
                &["*.pass.example.com"],
                "{mode: PASSTHROUGH}",
            ),
            server(
                443,
                "https-term",
                "HTTPS",
                &["term.example.com"],
                &simple("term-cred"),
            ),
        ]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "pass",
            &[ha, hb],
            "  tls:\n  - match: [{port: 443, sniHosts: [a.pass.example.com]}]\n    route:\n    - destination: {host: pass-a.internal}\n  - match: [{sniHosts: [b.pass.example.com]}]\n    route:\n    - destination: {host: pass-b.internal}\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    // The client trusts only the backends' CA: a handshake that completes was made with the
    // backend (the gateway has no certificate at all here).
    let cfg = tls_client(&tb.ca, None);
    for (sni, name, leaf) in [(ha, "pass-a", &tb.a), (hb, "pass-b", &tb.b)] {
        let mut s = tls_connect(addr, sni, &cfg)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(
            peer_certificate(&s) == leaf.der(),
            "{sni}: wrong certificate"
        );
        assert_eq!(read_line(&mut s).await.unwrap(), format!("{name}\n"));
        let rest = send_and_read_to_end(&mut s, b"ping").await.unwrap();
        assert_eq!(rest, "ping<eof>", "{sni}");
    }
    // ALPN goes through to the backend untouched (it offers none, so none is chosen).
    let mut h2 = tls_client(&tb.ca, None);
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let s = tls_connect(addr, ha, &h2).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    // A name of the server without a tls route, and one outside the server: closed.
    for sni in ["c.pass.example.com", "other.test"] {
        assert!(
            tls_connect(addr, sni, &cfg).await.is_err(),
            "{sni}: a handshake completed"
        );
    }
    // The terminating server next to them.
    let term_cfg = tls_client(&gw_ca, None);
    let s = tls_connect(addr, "term.example.com", &term_cfg)
        .await
        .unwrap();
    assert!(peer_certificate(&s) == term.der());
    let r = tls_get(
        addr,
        "term.example.com",
        &term_cfg,
        "term.example.com",
        "/t",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend"), Some("term"));
}

#[tokio::test]
async fn passthrough_weighted_tls_routes() {
    let host = "w.pass.example.com";
    let tb = tls_backends(&[host]).await;
    let mut files = tb.files.clone();
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "tls-pass",
            "TLS",
            &[host],
            "{mode: PASSTHROUGH}",
        )]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "pass",
            &[host],
            "  tls:\n  - match: [{sniHosts: [w.pass.example.com]}]\n    route:\n    - destination: {host: pass-a.internal}\n      weight: 75\n    - destination: {host: pass-b.internal}\n      weight: 25\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let cfg = tls_client(&tb.ca, None);
    const N: usize = 200;
    let (mut a, mut b) = (0, 0);
    for _ in 0..N {
        let (line, cert) = tls_greeting(addr, host, &cfg).await.unwrap();
        match line.as_str() {
            "pass-a\n" => {
                assert!(cert == tb.a.der().to_vec());
                a += 1;
            }
            "pass-b\n" => {
                assert!(cert == tb.b.der().to_vec());
                b += 1;
            }
            other => panic!("unexpected greeting {other:?}"),
        }
    }
    // B ~ Binomial(200, 0.25): mean 50, standard deviation 6.1; ±5 sd is [19, 81].
    assert_eq!(a + b, N);
    assert!((19..=81).contains(&b), "25% weight got {b} of {N}");
}

#[tokio::test]
async fn a_tls_block_without_mode_passes_through() {
    let host = "nomode.example.com";
    let tb = tls_backends(&[host]).await;
    let mut files = tb.files.clone();
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "https", "HTTPS", &[host], "{}")]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "pass",
            &[host],
            "  tls:\n  - match: [{sniHosts: [nomode.example.com]}]\n    route:\n    - destination: {host: pass-b.internal}\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let (line, cert) = tls_greeting(addr, host, &tls_client(&tb.ca, None))
        .await
        .unwrap();
    assert_eq!(line, "pass-b\n");
    assert!(cert == tb.b.der().to_vec());
}

// === TCP ===

/// TCP echo backends `tcp-v1` and `tcp-v2` behind `tcp-v1.internal` and `tcp-v2.internal`.
async fn tcp_backends() -> Vec<(String, String)> {
    let v1 = tcp_echo_backend("tcp-v1").await;
    let v2 = tcp_echo_backend("tcp-v2").await;
    vec![
        (
            "svc-tcp-v1.yaml".into(),
            l4_service("tcp-v1", "tcp-v1.internal", "TCP", &[v1]),
        ),
        (
            "svc-tcp-v2.yaml".into(),
            l4_service("tcp-v2", "tcp-v2.internal", "TCP", &[v2]),
        ),
    ]
}

#[tokio::test]
async fn tcp_routes_split_connections_by_weight() {
    let mut files = tcp_backends().await;
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(81, "tcp", "TCP", &["*"], "")]),
    ));
    // As Istio's tcp-traffic-shifting task.
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "tcp",
            &["*"],
            "  tcp:\n  - match: [{port: 81}]\n    route:\n    - destination: {host: tcp-v1.internal}\n      weight: 80\n    - destination: {host: tcp-v2.internal}\n      weight: 20\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(81).await;
    const N: usize = 400;
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..N {
        let mut s = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        match read_line(&mut s).await.unwrap().as_str() {
            "tcp-v1\n" => v1 += 1,
            "tcp-v2\n" => v2 += 1,
            other => panic!("unexpected greeting {other:?}"),
        }
    }
    // v2 ~ Binomial(400, 0.2): mean 80, standard deviation 8; ±5 sd is [40, 120].
    assert_eq!(v1 + v2, N);
    assert!((40..=120).contains(&v2), "20% weight got {v2} of {N}");
}

#[tokio::test]
async fn tcp_passes_half_close_and_large_transfers() {
    let mut files = tcp_backends().await;
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(81, "tcp", "TCP", &["*"], "")]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "tcp",
            &["*"],
            "  tcp:\n  - route:\n    - destination: {host: tcp-v1.internal}\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(81).await;

    // The client shuts down its sending side; the backend sees the end of input, answers
    // after it, and the client still reads that answer.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v1\n");
    let rest = send_and_read_to_end(&mut s, b"hello").await.unwrap();
    assert_eq!(rest, "hello<eof>");

    // 4 MiB each way, written while reading (so no side waits on a full buffer).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, rd.read_to_end(&mut got))
        .await
        .expect("large transfer timed out")
        .unwrap();
    writer.await.unwrap();
    let mut want = b"tcp-v1\n".to_vec();
    want.extend_from_slice(&payload);
    want.extend_from_slice(b"<eof>");
    assert!(
        got == want,
        "{} bytes back, {} expected",
        got.len(),
        want.len()
    );
}

#[tokio::test]
async fn a_simple_tls_server_with_tcp_routes_sends_plaintext_to_the_backend() {
    let ca = Pki::new("tls-tcp");
    let host = "tcp.example.com";
    let leaf = ca.server(&[host]);
    let mut files = tcp_backends().await;
    files.push(("secret.yaml".into(), tls_secret("tcp-cred", &leaf, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "tls", "TLS", &[host], &simple("tcp-cred"))]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "tcp",
            &[host],
            "  tcp:\n  - route:\n    - destination: {host: tcp-v2.internal}\n",
        ),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    // The gateway's certificate (from the test CA), and the backend's plaintext echo: had
    // the bytes reached it encrypted, it would echo TLS records the client cannot read.
    let mut s = tls_connect(addr, host, &tls_client(&ca, None))
        .await
        .unwrap();
    assert!(peer_certificate(&s) == leaf.der());
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v2\n");
    let rest = send_and_read_to_end(&mut s, b"plaintext").await.unwrap();
    assert_eq!(rest, "plaintext<eof>");
}

// === Hostile input ===

#[tokio::test]
async fn hostile_bytes_on_a_tls_port_are_closed_and_the_gateway_keeps_serving() {
    let ca = Pki::new("hostile");
    let host = "safe.example.com";
    let leaf = ca.server(&[host]);
    let mut files = http_app("safe", &[host]).await;
    files.push(("secret.yaml".into(), tls_secret("safe-cred", &leaf, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "https", "HTTPS", &[host], &simple("safe-cred"))]),
    ));
    let mut g = start_tls(&files).await;
    let addr = g.addr(443).await;

    // A deterministic xorshift stream of bytes.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: safe.example.com\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        Vec::new(),
        // A handshake record announcing more than it carries, then the end of input.
        vec![
            0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03,
        ],
        // A record too long for TLS, and a handshake that is not a ClientHello.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
        vec![0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
    ];
    for len in [1, 5, 64, 700, 5000, 70_000] {
        inputs.push(random(len));
        // Random bytes behind a plausible record header.
        let mut tls_like = vec![0x16, 0x03, 0x01];
        tls_like.extend(random(len));
        inputs.push(tls_like);
    }
    for (i, input) in inputs.iter().enumerate() {
        assert!(
            closed_without_answer(addr, input).await,
            "input {i} ({} bytes) was answered or left open",
            input.len()
        );
    }
    // The same, 40 at once, while a real client is served.
    let hostile: Vec<_> = inputs
        .iter()
        .cycle()
        .take(40)
        .cloned()
        .map(|input| tokio::spawn(async move { closed_without_answer(addr, &input).await }))
        .collect();
    let r = tls_get(addr, host, &tls_client(&ca, None), host, "/ok")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    for h in hostile {
        assert!(h.await.unwrap());
    }
    // A real ClientHello followed by garbage instead of the rest of the handshake.
    let mut s = tls_connect(addr, host, &tls_client(&ca, None))
        .await
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let tcp = s.get_mut().0;
        let _ = tcp.write_all(&random(300)).await;
    }
    let mut buf = Vec::new();
    let end = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf))
        .await
        .expect("a connection sending garbage records was left open");
    assert!(
        end.is_err() || buf.is_empty(),
        "garbage records were answered"
    );

    assert!(g.is_running(), "the gateway exited:\n{}", g.log());
    let r = tls_get(addr, host, &tls_client(&ca, None), host, "/still")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/still");
}

#[tokio::test]
async fn a_server_made_mutual_with_a_broken_ca_refuses_anonymous_clients() {
    let ca = Pki::new("server");
    let host = "tighten.example.com";
    let leaf = ca.server(&[host]);
    let mut files = http_app("t", &[host]).await;
    files.push(("secret.yaml".into(), tls_secret("t-cred", &leaf, None)));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(443, "https", "HTTPS", &[host], &simple("t-cred"))]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let anonymous = tls_client(&ca, None);
    assert_eq!(
        tls_get(addr, host, &anonymous, host, "/")
            .await
            .unwrap()
            .status,
        200
    );
    // The operator requires client certificates, but the CA Secret is broken.
    g.write(
        "secret-ca.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: t-cred-cacert, namespace: istio-system}\nstringData:\n  ca.crt: \"-----BEGIN CERTIFICATE-----\\nbroken\\n-----END CERTIFICATE-----\\n\"\n",
    )
    .await;
    g.write(
        "gw.yaml",
        &gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &[host],
            "{mode: MUTUAL, credentialName: t-cred}",
        )]),
    )
    .await;
    let Some(d) = diagnostic_with(&g, "TLS for server default/gw/0").await else {
        panic!("no diagnostic: {:?}", g.diagnostics().await);
    };
    assert!(d.contains(": error: "), "{d}");
    assert!(d.contains("the server refuses TLS connections"), "{d}");
    let r = tls_get(addr, host, &anonymous, host, "/").await;
    assert!(
        r.is_err(),
        "a server configured MUTUAL still serves clients without a certificate: {d}"
    );

    // Once the CA is repaired, MUTUAL is enforced.
    let clients = Pki::new("clients");
    g.write(
        "secret-ca.yaml",
        &ca_secret("t-cred-cacert", &clients.ca_pem),
    )
    .await;
    let good = clients.client("alice.example.com");
    let r = tls_get(addr, host, &tls_client(&ca, Some(&good)), host, "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(tls_get(addr, host, &anonymous, host, "/").await.is_err());
    assert!(diagnostic_with(&g, "TLS for server").await.is_none());
}
