//! Client certificates beyond the CA, end to end through real sockets: a Gateway server's
//! `subjectAltNames`, `verifyCertificateSpki` and `verifyCertificateHash` (Envoy's semantics:
//! one listed SAN required, then either pin list), and the `x-forwarded-client-cert` header an
//! Istio gateway sets for a verified client certificate (SANITIZE_SET).
//!
//! Certificates are generated at run time with rcgen (a CA per test, ECDSA P-256).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use rcgen::{DnType, SanType};
use support::*;

/// Gateway port 443 bound on an ephemeral port too.
const BIND_443: &[&str] = &["--bind", "443=127.0.0.1:0"];

const CLIENT_URI: &str = "spiffe://cluster.local/ns/default/sa/client";

async fn start_tls(files: &[(String, String)]) -> Gateway {
    start_files_with(files, BIND_443).await
}

/// A demo backend `name` (it echoes the request headers as JSON) behind ServiceEntry
/// `NAME.internal`, and a VirtualService sending `hosts` on Gateway `gw` to it.
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

/// A client whose certificate carries the workload's SPIFFE URI and a DNS name.
fn workload(clients: &Pki) -> Leaf {
    clients.client_with(
        vec![
            SanType::URI(CLIENT_URI.try_into().unwrap()),
            SanType::DnsName("client.example.com".try_into().unwrap()),
        ],
        &[
            (DnType::CountryName, "US"),
            (DnType::OrganizationName, "Example, Inc."),
            (DnType::CommonName, "client"),
        ],
    )
}

/// `AB:CD:...`: the upper-case, colon-separated form of a hex digest (`openssl x509
/// -fingerprint -sha256` prints it so).
fn fingerprint(hex: &str) -> String {
    hex.to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Asserts that a request over a fresh TLS connection with `client`'s certificate is served
/// (or that the handshake is refused with an alert).
async fn expect(addr: std::net::SocketAddr, host: &str, ca: &Pki, client: &Leaf, served: bool) {
    let r = tls_get(addr, host, &tls_client(ca, Some(client)), host, "/pinned").await;
    match (served, r) {
        (true, Ok(r)) => assert_eq!(r.status, 200, "{host}: {}", r.body),
        (true, Err(e)) => panic!("{host}: an accepted client certificate was refused: {e}"),
        // With TLS 1.3 the client learns of the refusal from the server's alert when it reads.
        (false, Err(e)) => assert!(e.contains("alert"), "{host}: refused without an alert: {e}"),
        (false, Ok(r)) => panic!("{host}: a client certificate it should refuse was served: {r:?}"),
    }
}

#[tokio::test]
async fn subject_alt_names_and_pins_choose_the_client_certificates_served() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let spiffe = workload(&clients);
    let alice = clients.client("alice.example.com");
    let bob = clients.client("bob.example.com");
    let carol = clients.client("carol.example.com");
    let names = ["san.example.com", "spki.example.com", "hash.example.com"];
    let mut files = http_app("pinned", &names).await;
    files.push((
        "secret.yaml".into(),
        tls_secret("pin-cred", &ca.server(&names), Some(&clients.ca_pem)),
    ));
    let mutual = |extra: &str| format!("{{mode: MUTUAL, credentialName: pin-cred, {extra}}}");
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-san",
                "HTTPS",
                &["san.example.com"],
                &mutual(&format!(
                    "subjectAltNames: ['{CLIENT_URI}', carol.example.com]"
                )),
            ),
            server(
                443,
                "https-spki",
                "HTTPS",
                &["spki.example.com"],
                &mutual(&format!(
                    "verifyCertificateSpki: ['{}']",
                    alice.spki_sha256_base64()
                )),
            ),
            // Both pin lists: either one admits the certificate.
            server(
                443,
                "https-hash",
                "HTTPS",
                &["hash.example.com"],
                &mutual(&format!(
                    "verifyCertificateHash: ['{}'], verifyCertificateSpki: ['{}']",
                    fingerprint(&bob.sha256_hex()),
                    alice.spki_sha256_base64()
                )),
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    assert!(
        !g.diagnostics()
            .await
            .iter()
            .any(|d| d.contains("not acted on")),
        "{:?}",
        g.diagnostics().await
    );
    let addr = g.addr(443).await;

    // subjectAltNames: the URI SAN or the DNS SAN listed; a certificate of the same CA
    // without them is refused.
    expect(addr, "san.example.com", &ca, &spiffe, true).await;
    expect(addr, "san.example.com", &ca, &carol, true).await;
    expect(addr, "san.example.com", &ca, &alice, false).await;

    // verifyCertificateSpki: the pinned key only.
    expect(addr, "spki.example.com", &ca, &alice, true).await;
    expect(addr, "spki.example.com", &ca, &bob, false).await;

    // verifyCertificateHash written as an upper-case fingerprint, with an SPKI pin beside it.
    expect(addr, "hash.example.com", &ca, &bob, true).await;
    expect(addr, "hash.example.com", &ca, &alice, true).await;
    expect(addr, "hash.example.com", &ca, &carol, false).await;

    // The same with curl (OpenSSL) as the client.
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(path("ca.pem"), &ca.ca_pem).unwrap();
    for (name, leaf, want_ok) in [("bob", &bob, true), ("carol", &carol, false)] {
        std::fs::write(path(&format!("{name}.pem")), &leaf.cert_pem).unwrap();
        std::fs::write(path(&format!("{name}.key")), &leaf.key_pem).unwrap();
        let (ok, out, err) = curl(vec![
            "--resolve".into(),
            format!("hash.example.com:{}:127.0.0.1", addr.port()),
            "--cacert".into(),
            path("ca.pem"),
            "--cert".into(),
            path(&format!("{name}.pem")),
            "--key".into(),
            path(&format!("{name}.key")),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            format!("https://hash.example.com:{}/curl", addr.port()),
        ])
        .await;
        assert_eq!(ok && out == "200", want_ok, "curl as {name}: {out} {err}");
    }
}

#[tokio::test]
async fn pins_apply_to_optional_mutual_only_when_a_certificate_is_presented() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let alice = clients.client("alice.example.com");
    let bob = clients.client("bob.example.com");
    let mut files = http_app("opt", &["opt.example.com"]).await;
    files.push((
        "secret.yaml".into(),
        tls_secret(
            "opt-cred",
            &ca.server(&["opt.example.com"]),
            Some(&clients.ca_pem),
        ),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &["opt.example.com"],
            &format!(
                "{{mode: OPTIONAL_MUTUAL, credentialName: opt-cred, verifyCertificateHash: ['{}']}}",
                alice.sha256_hex()
            ),
        )]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let host = "opt.example.com";
    expect(addr, host, &ca, &alice, true).await;
    expect(addr, host, &ca, &bob, false).await;
    let anonymous = tls_get(addr, host, &tls_client(&ca, None), host, "/")
        .await
        .unwrap();
    assert_eq!(anonymous.status, 200);
}

#[tokio::test]
async fn a_bad_pin_rejects_the_gateway_and_its_last_good_version_keeps_serving() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let alice = clients.client("alice.example.com");
    let bob = clients.client("bob.example.com");
    let mut files = http_app("p", &["p.example.com"]).await;
    files.push((
        "secret.yaml".into(),
        tls_secret(
            "p-cred",
            &ca.server(&["p.example.com"]),
            Some(&clients.ca_pem),
        ),
    ));
    let gw = |pin: &str| {
        gateway_servers(&[server(
            443,
            "https",
            "HTTPS",
            &["p.example.com"],
            &format!("{{mode: MUTUAL, credentialName: p-cred, verifyCertificateHash: ['{pin}']}}"),
        )])
    };
    files.push(("gw.yaml".into(), gw(&alice.sha256_hex())));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let host = "p.example.com";
    expect(addr, host, &ca, &alice, true).await;

    // A typo in the pin: the error names the file, line and field, and the previous pin
    // keeps being enforced.
    g.write("gw.yaml", &gw("not-a-digest")).await;
    let diags = g.diagnostics().await;
    assert!(
        diags.iter().any(|d| d.contains(
            "gw.yaml:9: error: Gateway default/gw: spec.servers[0].tls.verifyCertificateHash[0]: \"not-a-digest\" is not hex"
        )),
        "{diags:?}"
    );
    expect(addr, host, &ca, &alice, true).await;
    expect(addr, host, &ca, &bob, false).await;

    // A new valid pin applies to new connections.
    g.write("gw.yaml", &gw(&bob.sha256_hex())).await;
    expect(addr, host, &ca, &bob, true).await;
    expect(addr, host, &ca, &alice, false).await;
}

// === x-forwarded-client-cert ===

/// An x-forwarded-client-cert a client makes up.
const FORGED_XFCC: &str =
    "Hash=00;Subject=\"CN=admin\";URI=spiffe://cluster.local/ns/admin/sa/admin";

/// What an Istio gateway sends for `leaf` (issued by [`workload`]): the hex SHA-256 of the
/// DER, the PEM as OpenSSL writes it, URL-encoded as Envoy does, the subject in RFC 2253
/// form (last attribute first, the comma escaped), the URI SAN and the DNS SAN.
fn expected_xfcc(leaf: &Leaf) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(leaf.der());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let cert: String = pem
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"*-._".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "Hash={};Cert=\"{cert}\";Subject=\"CN=client,O=Example\\, Inc.,C=US\";URI={CLIENT_URI};DNS=client.example.com",
        leaf.sha256_hex()
    )
}

#[tokio::test]
async fn x_forwarded_client_cert_describes_the_verified_client_certificate() {
    let ca = Pki::new("server");
    let clients = Pki::new("clients");
    let spiffe = workload(&clients);
    let hosts = ["m.example.com", "opt.example.com"];
    let mut files = http_app("xfcc", &hosts).await;
    files.push((
        "secret.yaml".into(),
        tls_secret("x-cred", &ca.server(&hosts), Some(&clients.ca_pem)),
    ));
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[
            server(
                443,
                "https-m",
                "HTTPS",
                &["m.example.com"],
                "{mode: MUTUAL, credentialName: x-cred}",
            ),
            server(
                443,
                "https-opt",
                "HTTPS",
                &["opt.example.com"],
                "{mode: OPTIONAL_MUTUAL, credentialName: x-cred}",
            ),
        ]),
    ));
    let g = start_tls(&files).await;
    let addr = g.addr(443).await;
    let want = expected_xfcc(&spiffe);

    // reqwest (HTTP/2 by ALPN): every request of the connection carries the details of its
    // certificate, and the value the client sent is replaced.
    let client = https_client(&ca, &[("m.example.com", addr), ("opt.example.com", addr)])
        .identity(spiffe.identity())
        .build()
        .unwrap();
    for path in ["/first", "/second"] {
        let resp = client
            .get(format!("https://m.example.com:{}{path}", addr.port()))
            .header("x-forwarded-client-cert", FORGED_XFCC)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let r = Reply::from(resp).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json()["headers"]["x-forwarded-client-cert"],
            want.as_str()
        );
    }

    // HTTP/1.1 over rustls, on the OPTIONAL_MUTUAL server: the same with a certificate ...
    let host = "opt.example.com";
    let r = tls_get(addr, host, &tls_client(&ca, Some(&spiffe)), host, "/h1")
        .await
        .unwrap();
    assert_eq!(
        r.json()["headers"]["x-forwarded-client-cert"],
        want.as_str()
    );

    // ... and nothing without one, whatever the client sends.
    let anonymous = https_client(&ca, &[("opt.example.com", addr)])
        .build()
        .unwrap();
    let r = Reply::from(
        anonymous
            .get(format!("https://opt.example.com:{}/anonymous", addr.port()))
            .header("x-forwarded-client-cert", FORGED_XFCC)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.json()["headers"]["x-forwarded-client-cert"].is_null(),
        "{}",
        r.json()["headers"]
    );
}
