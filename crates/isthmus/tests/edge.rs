//! The gateway facing the internet: malformed and smuggling requests, header limits, path
//! normalisation against route bypasses, client addresses behind trusted proxies and the
//! PROXY protocol, and the per-listener connection limit. Hostile bytes are written on raw
//! sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "edge.example.com";

/// A gateway routing `/admin` to backend `admin` and everything else to `public`, with extra
/// command-line arguments.
async fn start(extra: &[&str]) -> (Gateway, Recorder, Recorder) {
    let admin = recording_backend("admin", |_| Answer::ok()).await;
    let public = recording_backend("public", |_| Answer::ok()).await;
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "a.yaml".to_string(),
            service("admin", "admin.internal", &[(admin.addr, "v1")]),
        ),
        (
            "p.yaml".to_string(),
            service("public", "public.internal", &[(public.addr, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &[HOST],
                &["gw"],
                &http_routes(&[
                    ("[{uri: {prefix: /admin}}]", "admin.internal"),
                    ("", "public.internal"),
                ]),
            ),
        ),
    ];
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let g = Gateway::start_with(&refs, extra).await;
    (g, admin, public)
}

fn req(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra_headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn malformed_and_smuggling_requests_get_400_and_never_reach_a_backend() {
    let (g, admin, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let cases: &[(&str, String)] = &[
        (
            "two Content-Length values",
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde"
            ),
        ),
        ("obs-fold", req("/", "X-Folded: a\r\n b\r\n")),
        ("space in a header name", req("/", "Bad Name: x\r\n")),
        ("bare CR in a value", req("/", "X-Cr: a\rb\r\n")),
        (
            "two Host headers",
            format!(
                "GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example.com\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an invalid Host",
            "GET / HTTP/1.1\r\nHost: edge example com\r\nConnection: close\r\n\r\n".to_string(),
        ),
        ("an encoded NUL in the path", req("/a%00b", "")),
        (
            "a bad chunk size",
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            ),
        ),
    ];
    for (name, bytes) in cases {
        let r = raw_http(addr, bytes).await;
        assert_eq!(r.status, 400, "{name}: {r:?}");
    }
    assert_eq!(
        admin.count() + public.count(),
        0,
        "nothing reached a backend"
    );
    // The gateway is still fine.
    assert_eq!(raw_http(addr, &req("/x", "")).await.status, 200);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (g, admin, public) = start(&[]).await;
    // The classic CL.TE attack: a front end honouring Content-Length would see one request,
    // one honouring Transfer-Encoding a second one (`GET /admin`) hidden in the body.
    let attack = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let out = exchange(g.addr(80).await, attack.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    // Transfer-Encoding wins and the connection closes after the answer (RFC 9112 §6.3), so
    // the hidden request is never read as one.
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert_eq!(admin.count(), 0, "the smuggled request reached /admin");
    let seen = public.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.get("content-length").is_none(),
        "re-serialised with one framing"
    );
}

#[tokio::test]
async fn oversized_header_blocks_get_431() {
    let (g, _, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let r = raw_http(addr, &req("/", &big)).await;
    assert_eq!(r.status, 431, "{r:?}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_http(addr, &req("/", &many)).await;
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(public.count(), 0);
}

#[tokio::test]
async fn normalised_paths_cannot_bypass_a_route() {
    let (g, admin, public) = start(&[]).await;
    let addr = g.addr(80).await;
    // Each of these is /admin once normalised (BASE): it must take the /admin route, so
    // whatever protects /admin applies.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/./admin",
        "/%61dmin",
    ] {
        let r = raw_http(addr, &req(path, "")).await;
        assert_eq!(r.status, 200, "{path}");
        let seen = admin.next().await;
        assert_eq!(
            seen.path, "/admin",
            "{path} reached the backend as {}",
            seen.path
        );
    }
    // BASE keeps double slashes and encoded slashes: not /admin.
    for path in ["//admin", "/public%2f..%2fadmin"] {
        raw_http(addr, &req(path, "")).await;
        assert_ne!(public.next().await.path, "/admin", "{path}");
    }
    assert_eq!(admin.count(), 4);
}

#[tokio::test]
async fn merge_and_decode_slashes_as_configured() {
    let (g, admin, _) = start(&["--path-normalization", "decode-and-merge-slashes"]).await;
    let addr = g.addr(80).await;
    for path in ["//admin", "/public%2f..%2fadmin", "/x/..//admin"] {
        raw_http(addr, &req(path, "")).await;
        assert_eq!(admin.next().await.path, "/admin", "{path}");
    }
}

#[tokio::test]
async fn headers_with_underscores_rejected_or_dropped_as_configured() {
    let (g, _, public) = start(&["--headers-with-underscores", "reject"]).await;
    let r = raw_http(g.addr(80).await, &req("/", "X_Under: 1\r\n")).await;
    assert_eq!(r.status, 400);
    assert_eq!(public.count(), 0);
    drop(g);
    let (g, _, public) = start(&["--headers-with-underscores", "drop"]).await;
    let r = raw_http(g.addr(80).await, &req("/", "X_Under: 1\r\nX-Fine: 2\r\n")).await;
    assert_eq!(r.status, 200);
    let seen = public.next().await;
    assert!(seen.headers.get("x_under").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers.get("x-fine").unwrap(), "2");
}

#[tokio::test]
async fn trusted_proxies_name_the_client_from_x_forwarded_for() {
    let (g, _, public) = start(&["--num-trusted-proxies", "1"]).await;
    let addr = g.addr(80).await;
    let r = raw_http(
        addr,
        &req("/", "X-Forwarded-For: 192.0.2.10, 203.0.113.1\r\nX-Forwarded-Proto: https\r\nX-Envoy-External-Address: 6.6.6.6\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = public.next().await;
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        h("x-envoy-external-address").as_deref(),
        Some("203.0.113.1")
    );
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("192.0.2.10, 203.0.113.1, 127.0.0.1")
    );
    // The load balancer in front terminated TLS and said so.
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    drop(g);

    // Without trusted proxies the peer is the client: an internal one, so no external
    // address, and the client's claims are not taken.
    let (g, _, public) = start(&[]).await;
    raw_http(
        g.addr(80).await,
        &req("/", "X-Forwarded-For: 203.0.113.1\r\nX-Forwarded-Proto: https\r\nX-Envoy-External-Address: 6.6.6.6\r\n"),
    )
    .await;
    let seen = public.next().await;
    assert!(seen.headers.get("x-envoy-external-address").is_none());
    assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "http");
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .expect("the gateway answers or closes within 10 s")
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_give_the_client_address() {
    let (g, _, public) = start(&["--proxy-protocol"]).await;
    let addr = g.addr(80).await;
    let v1 = [
        b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 80\r\n".as_slice(),
        req("/", "").as_bytes(),
    ]
    .concat();
    let out = exchange(addr, &v1).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let seen = public.next().await;
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "198.51.100.7");
    assert_eq!(
        seen.headers.get("x-envoy-external-address").unwrap(),
        "198.51.100.7"
    );

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 9, 10, 0, 0, 1]);
    v2.extend_from_slice(&40000u16.to_be_bytes());
    v2.extend_from_slice(&80u16.to_be_bytes());
    v2.extend_from_slice(req("/", "").as_bytes());
    let out = exchange(addr, &v2).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        public.next().await.headers.get("x-forwarded-for").unwrap(),
        "203.0.113.9"
    );

    // No header: the connection is closed without an answer, as Envoy's listener filter does.
    let out = exchange(addr, req("/", "").as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(public.count(), 2);
}

/// One keep-alive request on `s`: the start of the answer.
async fn keep(s: &mut TcpStream) -> String {
    let text = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    s.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn connections_over_the_listener_limit_are_shed_and_the_others_go_on() {
    let (g, _, public) = start(&["--max-connections-per-listener", "2"]).await;
    let addr = g.addr(80).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(keep(&mut b).await.starts_with("HTTP/1.1 200"));
    // A third is closed at once, without an answer.
    let out = exchange(addr, req("/", "").as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // The two open connections still serve.
    assert!(keep(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(keep(&mut b).await.starts_with("HTTP/1.1 200"));
    // One closes; a new connection is accepted again.
    drop(a);
    eventually("a slot frees when a connection closes", || async {
        !exchange(addr, req("/", "").as_bytes()).await.is_empty()
    })
    .await;
    assert!(public.count() >= 5);
}
