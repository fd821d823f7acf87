//! HTTP protocol features end to end, through real sockets and real clients: WebSocket
//! upgrades (spliced, and alive across reloads), HTTP/2 upstreams (from the service port's
//! protocol and the DestinationRule's `h2UpgradePolicy` / `useClientProtocol`), trailers, gRPC
//! calls (unary and server streaming) and the gateway's own errors as gRPC statuses.
//! Istio's semantics, and Envoy's where Istio hands the decision to it, are the reference.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::SinkExt;
use hyper::body::Frame;

use support::*;

// === Fixtures ===

/// A STATIC ServiceEntry for `host` on port 80 with `protocol` (HTTP, HTTP2, GRPC, ...).
fn service_as(name: &str, host: &str, addrs: &[SocketAddr], protocol: &str) -> String {
    let endpoints: Vec<(SocketAddr, &str)> = addrs.iter().map(|a| (*a, "v1")).collect();
    let text = service(name, host, &endpoints);
    assert!(text.contains("protocol: HTTP}"));
    text.replacen("protocol: HTTP}", &format!("protocol: {protocol}}}"), 1)
}

/// A VirtualService `name` for `host` on Gateway `gw` with the YAML routes `http`.
fn vs(name: &str, host: &str, http: &str) -> String {
    virtual_service(name, "default", &[host], &["gw"], http)
}

/// A VirtualService `name` sending every request for `host` to `dest`.
fn vs_to(name: &str, host: &str, dest: &str) -> String {
    vs(name, host, &http_routes(&[("", dest)]))
}

/// Starts a gateway with Gateway `gw` (every host on port 80) and `files`; fails on any error
/// diagnostic, so that a typo in a test's YAML cannot pass for gateway behaviour.
async fn start(files: Vec<(String, String)>) -> Gateway {
    let mut all = vec![("gw.yaml".to_string(), gateway(&[(80, &["*"])]))];
    all.extend(files);
    let g = start_files(&all).await;
    let errors: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains(": error:"))
        .collect();
    assert!(errors.is_empty(), "configuration errors: {errors:#?}");
    g
}

fn file(name: &str, text: String) -> (String, String) {
    (name.to_string(), text)
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

// === WebSocket ===

const WS_HOST: &str = "ws.example.com";

#[tokio::test]
async fn websocket_messages_round_trip_through_the_gateway() {
    let backend = ws_echo_backend("ws-a").await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("ws-a", "ws-a.internal", &[backend.addr], "HTTP"),
        ),
        file("vs.yaml", vs_to("vs", WS_HOST, "ws-a.internal")),
    ])
    .await;
    let (mut ws, resp) = ws_connect(g.addr(80).await, WS_HOST, "/chat?room=1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(header(resp.headers(), "server"), Some("istio-envoy"));
    assert_eq!(header(resp.headers(), "upgrade"), Some("websocket"));

    assert_eq!(ws_echo(&mut ws, "hello").await, "ws-a: hello");
    assert_eq!(ws_echo(&mut ws, "again").await, "ws-a: again");
    // A binary message larger than any socket buffer, so both directions must keep flowing.
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(WsMessage::binary(big.clone())).await.unwrap();
    match ws_next(&mut ws).await {
        Some(WsMessage::Binary(b)) => assert!(b == big, "binary message changed on the way"),
        other => panic!("expected the binary message back, got {other:?}"),
    }
    // The close handshake goes through too.
    ws.close(None).await.unwrap();
    assert!(ws_next(&mut ws).await.is_none());

    // The backend saw the upgrade, with the gateway's usual request headers.
    let shakes = backend.handshakes();
    assert_eq!(shakes.len(), 1, "{shakes:?}");
    let (path, h) = &shakes[0];
    assert_eq!(path, "/chat?room=1");
    assert_eq!(header(h, "upgrade"), Some("websocket"));
    assert!(
        header(h, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{h:?}"
    );
    assert!(h.contains_key("sec-websocket-key"), "{h:?}");
    assert_eq!(header(h, "sec-websocket-version"), Some("13"));
    assert_eq!(header(h, "host"), Some(WS_HOST));
    assert_eq!(header(h, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(h, "x-forwarded-for"), Some("127.0.0.1"));
    assert!(h.contains_key("x-request-id"), "{h:?}");
}

#[tokio::test]
async fn an_upgraded_connection_survives_configuration_reloads() {
    let a = ws_echo_backend("ws-a").await;
    let b = ws_echo_backend("ws-b").await;
    let g = start(vec![
        file(
            "svc-a.yaml",
            service_as("ws-a", "ws-a.internal", &[a.addr], "HTTP"),
        ),
        file(
            "svc-b.yaml",
            service_as("ws-b", "ws-b.internal", &[b.addr], "HTTP"),
        ),
        file("vs.yaml", vs_to("vs", WS_HOST, "ws-a.internal")),
    ])
    .await;
    let addr = g.addr(80).await;
    let (mut old, _) = ws_connect(addr, WS_HOST, "/").await.unwrap();
    assert_eq!(ws_echo(&mut old, "1").await, "ws-a: 1");

    // The route moves to ws-b: new connections follow, the upgraded one stays where it is.
    g.write("vs.yaml", &vs_to("vs", WS_HOST, "ws-b.internal"))
        .await;
    assert_eq!(ws_echo(&mut old, "2").await, "ws-a: 2");
    let (mut new, _) = ws_connect(addr, WS_HOST, "/").await.unwrap();
    assert_eq!(ws_echo(&mut new, "x").await, "ws-b: x");

    // Its service and cluster disappear altogether: still nothing happens to it.
    g.remove("svc-a.yaml").await;
    assert_eq!(ws_echo(&mut old, "3").await, "ws-a: 3");
    assert_eq!(ws_echo(&mut new, "y").await, "ws-b: y");
    assert_eq!(a.handshakes().len(), 1);
    assert_eq!(b.handshakes().len(), 1);
}

#[tokio::test]
async fn a_backend_refusing_the_upgrade_answers_the_client() {
    let backend = recording_backend("plain", |_| Answer::status(400)).await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("plain", "plain.internal", &[backend.addr], "HTTP"),
        ),
        file("vs.yaml", vs_to("vs", WS_HOST, "plain.internal")),
    ])
    .await;
    let Err(err) = ws_connect(g.addr(80).await, WS_HOST, "/").await else {
        panic!("the upgrade must fail");
    };
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 400);
            assert_eq!(header(resp.headers(), "x-backend"), Some("plain"));
        }
        other => panic!("expected the backend's HTTP answer, got {other:?}"),
    }
    // The upgrade request itself was forwarded as such.
    let seen = backend.next().await;
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(
        seen.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn other_upgrades_are_refused_and_upgrade_headers_are_otherwise_hop_by_hop() {
    let backend = recording_backend("plain", |_| Answer::ok()).await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("plain", "plain.internal", &[backend.addr], "HTTP"),
        ),
        file("vs.yaml", vs_to("vs", WS_HOST, "plain.internal")),
    ])
    .await;
    let addr = g.addr(80).await;

    // Istio allows WebSocket only: Envoy answers 403 and closes the connection.
    let r = raw_http(
        addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: {WS_HOST}\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("server"), Some("istio-envoy"));
    assert_eq!(backend.count(), 0);

    // No route: still 404, as route lookup comes first.
    let r = raw_http(
        addr,
        "GET / HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: Upgrade, close\r\nUpgrade: foo/1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");

    // An h2c upgrade is ignored: the request is served over HTTP/1.1, without the headers.
    let r = raw_http(
        addr,
        &format!(
            "GET /h2c HTTP/1.1\r\nHost: {WS_HOST}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = backend.next().await;
    assert_eq!(seen.path, "/h2c");
    for h in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(h), None, "{h} reached the backend: {seen:?}");
    }

    // `Upgrade` without `Connection: upgrade` is no upgrade, and hop-by-hop all the same.
    let r = raw_http(
        addr,
        &format!("GET /plain HTTP/1.1\r\nHost: {WS_HOST}\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = backend.next().await;
    assert_eq!(seen.path, "/plain");
    assert_eq!(seen.header("upgrade"), None, "{seen:?}");
}

// === HTTP/2 upstreams ===

/// GETs `path` for `host` with `client`; the echo backend's JSON.
async fn echo_get(client: &reqwest::Client, url: &str, host: &str) -> serde_json::Value {
    let resp = client.get(url).header("host", host).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn http2_and_grpc_service_ports_are_reached_over_http2() {
    let backend = echo_backend("echo").await;
    let mut files = Vec::new();
    let hosts = [
        ("h1", "HTTP", "HTTP/1.1"),
        ("h2", "HTTP2", "HTTP/2.0"),
        ("grpc", "GRPC", "HTTP/2.0"),
        ("grpcweb", "GRPC-WEB", "HTTP/2.0"),
        ("lower", "http2", "HTTP/2.0"),
    ];
    for (name, protocol, _) in hosts {
        let host = format!("{name}.example.com");
        files.push(file(
            &format!("svc-{name}.yaml"),
            service_as(name, &format!("{name}.internal"), &[backend], protocol),
        ));
        files.push(file(
            &format!("vs-{name}.yaml"),
            vs_to(name, &host, &format!("{name}.internal")),
        ));
    }
    let g = start(files).await;
    let url = g.url(80, "/where").await;
    for (name, _, version) in hosts {
        let host = format!("{name}.example.com");
        let echo = echo_get(&client(), &url, &host).await;
        assert_eq!(echo["version"], version, "{name}: {echo}");
        assert_eq!(echo["path"], "/where");
        if version == "HTTP/2.0" {
            // Envoy's HTTP/2 codec sends the Host as :authority.
            assert_eq!(echo["authority"], host.as_str(), "{name}: {echo}");
            assert!(echo["headers"]["host"].is_null(), "{name}: {echo}");
        } else {
            assert_eq!(echo["headers"]["host"], host.as_str(), "{name}: {echo}");
        }
        assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
        // The trace context goes over either protocol, its ids agreeing.
        let traceparent = echo["headers"]["traceparent"].as_str().unwrap_or_default();
        let trace_id = echo["headers"]["x-b3-traceid"].as_str().unwrap_or("none");
        let span_id = echo["headers"]["x-b3-spanid"].as_str().unwrap_or("none");
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-{span_id}-")),
            "{name}: {echo}"
        );
    }
    // The compiled clusters say so.
    let dump = g.config_dump().await;
    let clusters = dump["snapshot"]["clusters"].as_array().unwrap();
    let protocol = |host: &str| {
        clusters
            .iter()
            .find(|c| c["service"] == host)
            .map(|c| c["protocol"].clone())
    };
    assert_eq!(protocol("h2.internal"), Some("http2".into()));
    assert_eq!(protocol("h1.internal"), Some(serde_json::Value::Null));
}

#[tokio::test]
async fn destination_rules_choose_http2_or_the_clients_protocol() {
    let backend = echo_backend("echo").await;
    let dr = |name: &str, host: &str, policy: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  host: {host}\n  trafficPolicy:\n{policy}"
        )
    };
    let upgrade = "    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n";
    let client_protocol = "    connectionPool:\n      http: {useClientProtocol: true}\n";
    // The port's own settings replace the top level's (Istio does not merge them).
    let port_level = "    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n    portLevelSettings:\n    - port: {number: 80}\n      connectionPool:\n        http: {h2UpgradePolicy: DO_NOT_UPGRADE}\n";
    let mut files = Vec::new();
    for (name, policy) in [
        ("up", Some(upgrade)),
        ("same", Some(client_protocol)),
        ("port", Some(port_level)),
        ("none", None),
    ] {
        let internal = format!("{name}.internal");
        files.push(file(
            &format!("svc-{name}.yaml"),
            service_as(name, &internal, &[backend], "HTTP"),
        ));
        files.push(file(
            &format!("vs-{name}.yaml"),
            vs_to(name, &format!("{name}.example.com"), &internal),
        ));
        if let Some(p) = policy {
            files.push(file(&format!("dr-{name}.yaml"), dr(name, &internal, p)));
        }
    }
    let g = start(files).await;
    let unsupported: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains("not acted on"))
        .collect();
    assert!(unsupported.is_empty(), "{unsupported:#?}");

    let addr = g.addr(80).await;
    let url = |host: &str| format!("http://{host}:{}/", addr.port());
    let cases = [
        ("up", "HTTP/2.0", "HTTP/2.0"),
        ("same", "HTTP/1.1", "HTTP/2.0"),
        ("port", "HTTP/1.1", "HTTP/1.1"),
        ("none", "HTTP/1.1", "HTTP/1.1"),
    ];
    for (name, via_h1, via_h2) in cases {
        let host = format!("{name}.example.com");
        let h1 = echo_get(&client(), &url(&host).replace(&host, "127.0.0.1"), &host).await;
        assert_eq!(h1["version"], via_h1, "{name} from HTTP/1.1: {h1}");
        let h2 = echo_get(&h2c_client_for(&host, addr), &url(&host), &host).await;
        assert_eq!(h2["version"], via_h2, "{name} from HTTP/2: {h2}");
    }
}

#[tokio::test]
async fn trailers_pass_through_http2_both_ways() {
    let backend = echo_backend("echo").await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("h2", "h2.internal", &[backend], "HTTP2"),
        ),
        file("vs.yaml", vs_to("vs", "h2.example.com", "h2.internal")),
    ])
    .await;
    let addr = g.addr(80).await;
    // A small body (buffered for retries) and a large one (streamed): trailers follow both.
    for size in [3usize, 200 * 1024] {
        let body = FrameBody::of(vec![
            Frame::data(Bytes::from(vec![b'a'; size])),
            Frame::trailers(trailers(&[("x-client-trailer", "c1")])),
        ]);
        let req = http::Request::post("http://h2.example.com/upload")
            .body(body)
            .unwrap();
        let r = h2c_send(addr, req).await;
        assert_eq!(r.status, 200, "{r:?}");
        let echo = r.json();
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["body_bytes"], size, "{echo}");
        assert_eq!(echo["trailers"]["x-client-trailer"], "c1", "{size}: {echo}");
        assert_eq!(r.trailer("x-echo-trailer"), Some("echo"), "{r:?}");
        assert_eq!(r.trailer("x-seen-x-client-trailer"), Some("c1"), "{r:?}");
    }
}

/// An HTTP/2-only backend answering `conn N` (the connection's number, from 0); with
/// `close_each`, each connection is closed (GOAWAY) after its first request. Also returns the
/// number of connections accepted so far.
async fn h2_counting_backend(
    close_each: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let n = counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
                let svc = hyper::service::service_fn(move |_req| {
                    let _ = done_tx.send(());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(format!("conn {n}"))),
                        ))
                    }
                });
                let conn =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::pin!(conn);
                if close_each {
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = done_rx.recv() => conn.as_mut().graceful_shutdown(),
                    }
                }
                let _ = conn.await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn concurrent_requests_share_one_http2_upstream_connection() {
    use std::sync::atomic::Ordering;
    let (addr, connections) = h2_counting_backend(false).await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("h2", "h2.internal", &[addr], "HTTP2"),
        ),
        file("vs.yaml", vs_to("vs", "h2.example.com", "h2.internal")),
    ])
    .await;
    let url = g.url(80, "/").await;
    // Separate downstream connections, all at once.
    let calls = (0..8).map(|_| {
        let url = url.clone();
        async move { get(&url, "h2.example.com", &[]).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!((r.status, r.body.as_str()), (200, "conn 0"), "{r:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn closed_http2_upstream_connections_are_replaced() {
    use std::sync::atomic::Ordering;
    let (addr, connections) = h2_counting_backend(true).await;
    // Istio's default retry policy retries refused streams; a connection the backend closed
    // under a request in flight is a reset, which this route retries as well.
    let routes = "  - route:\n    - destination: {host: h2.internal}\n    retries: {attempts: 3, retryOn: 'reset,refused-stream'}\n";
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("h2", "h2.internal", &[addr], "HTTP2"),
        ),
        file("vs.yaml", vs("vs", "h2.example.com", routes)),
    ])
    .await;
    let url = g.url(80, "/").await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let r = get(&url, "h2.example.com", &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        answers.push(r.body);
    }
    // Every request found a live connection although the backend closes each one after its
    // answer. When the close lands before the next request, a new connection is used; when it
    // races with it, the refused stream is retried on a new one. Either way connections were
    // replaced (how many times depends on that timing, so only replacement is asserted).
    let mut distinct = answers.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 2, "{answers:?}");
    assert!(connections.load(Ordering::SeqCst) >= 2);
}

// === gRPC ===

const GRPC_HOST: &str = "grpc.example.com";

async fn start_grpc(backend: &GrpcBackend) -> Gateway {
    start(vec![
        file(
            "svc.yaml",
            service_as("grpc", "grpc.internal", &[backend.addr], "GRPC"),
        ),
        file("vs.yaml", vs_to("vs", GRPC_HOST, "grpc.internal")),
    ])
    .await
}

#[tokio::test]
async fn grpc_unary_call() {
    let backend = grpc_backend("g1").await;
    let g = start_grpc(&backend).await;
    let mut call = grpc_call(
        g.addr(80).await,
        GRPC_HOST,
        "/test.Echo/Unary",
        b"world",
        &[],
    )
    .await;
    assert_eq!(call.status, 200);
    assert_eq!(
        header(&call.headers, "content-type"),
        Some("application/grpc")
    );
    assert_eq!(header(&call.headers, "server"), Some("istio-envoy"));
    assert_eq!(call.rest().await, ["g1: world"]);
    let t = call.trailers.as_ref().expect("no trailers");
    assert_eq!(header(t, "grpc-status"), Some("0"));
    assert_eq!(header(t, "x-echo-trailer"), Some("g1"));

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/test.Echo/Unary");
    assert_eq!(s.authority.as_deref(), Some(GRPC_HOST));
    assert_eq!(s.messages, [Bytes::from_static(b"world")]);
    assert_eq!(header(&s.headers, "te"), Some("trailers"));
    assert_eq!(header(&s.headers, "content-type"), Some("application/grpc"));
    assert_eq!(header(&s.headers, "x-envoy-attempt-count"), Some("1"));
}

#[tokio::test]
async fn grpc_server_streaming_call_streams() {
    let backend = grpc_backend("g1").await;
    let g = start_grpc(&backend).await;
    let mut call = grpc_call(g.addr(80).await, GRPC_HOST, "/test.Echo/Stream", b"4", &[]).await;
    assert_eq!(call.status, 200);
    // The first message arrives while the backend still holds the others back: the gateway
    // passes the stream on as it comes, without waiting for its end.
    assert_eq!(call.next_message().await, Some(Bytes::from_static(b"0")));
    assert!(call.trailers.is_none());
    backend.release();
    assert_eq!(call.rest().await, ["1", "2", "3"]);
    assert_eq!(call.status_field("grpc-status"), Some("0"));
    assert_eq!(call.status_field("x-echo-trailer"), Some("g1"));
}

#[tokio::test]
async fn grpc_errors_from_the_backend_pass_through() {
    let backend = grpc_backend("g1").await;
    let g = start_grpc(&backend).await;
    let mut call = grpc_call(g.addr(80).await, GRPC_HOST, "/test.Echo/Missing", b"", &[]).await;
    assert_eq!(call.status, 200);
    assert!(call.rest().await.is_empty());
    // Trailers-only: the status is in the headers.
    assert_eq!(header(&call.headers, "grpc-status"), Some("5"));
    assert_eq!(header(&call.headers, "grpc-message"), Some("no such thing"));
}

#[tokio::test]
async fn gateway_errors_for_grpc_requests_are_grpc_statuses() {
    let backend = grpc_backend("g1").await;
    let refusing = refusing_port();
    let empty = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: empty, namespace: default}\nspec:\n  hosts: [empty.internal]\n  ports: [{number: 80, name: grpc, protocol: GRPC}]\n  resolution: STATIC\n  endpoints: []\n";
    let routes = |extra: &str, host: &str| {
        format!("  - route:\n    - destination: {{host: {host}}}\n{extra}")
    };
    let g = start(vec![
        file("svc.yaml", service_as("grpc", "grpc.internal", &[backend.addr], "GRPC")),
        file("svc-empty.yaml", empty.to_string()),
        file(
            "svc-refusing.yaml",
            service_as("refusing", "refusing.internal", &[refusing.addr], "GRPC"),
        ),
        file("vs-empty.yaml", vs_to("empty", "empty.example.com", "empty.internal")),
        file(
            "vs-refusing.yaml",
            vs_to("refusing", "refusing.example.com", "refusing.internal"),
        ),
        file("vs-slow.yaml", vs_to("slow", "slow.example.com", "grpc.internal")),
        file(
            "vs-fault.yaml",
            vs(
                "fault",
                "fault.example.com",
                &routes(
                    "    fault: {abort: {httpStatus: 403, percentage: {value: 100}}}\n",
                    "grpc.internal",
                ),
            ),
        ),
        file(
            "vs-grpc-fault.yaml",
            vs(
                "grpc-fault",
                "grpc-fault.example.com",
                &routes(
                    "    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 100}}}\n",
                    "grpc.internal",
                ),
            ),
        ),
        file(
            "vs-direct.yaml",
            vs(
                "direct",
                "direct.example.com",
                "  - directResponse: {status: 429, body: {string: slow down}}\n",
            ),
        ),
        file(
            "vs-redirect.yaml",
            vs(
                "redirect",
                "redirect.example.com",
                "  - redirect: {authority: elsewhere.example.com}\n",
            ),
        ),
    ])
    .await;
    let addr = g.addr(80).await;
    let connect_failure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
    // (host, path, extra headers, grpc-status, grpc-message)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case<'_>; 8] = [
        ("nowhere.example.com", "/test.Echo/Unary", &[], "12", None),
        (
            "empty.example.com",
            "/test.Echo/Unary",
            &[],
            "14",
            Some("no healthy upstream"),
        ),
        (
            "refusing.example.com",
            "/test.Echo/Unary",
            &[],
            "14",
            Some(connect_failure),
        ),
        (
            "slow.example.com",
            "/test.Echo/Hang",
            &[("grpc-timeout", "100m")],
            "14",
            Some("upstream request timeout"),
        ),
        (
            "fault.example.com",
            "/test.Echo/Unary",
            &[],
            "7",
            Some("fault filter abort"),
        ),
        (
            "grpc-fault.example.com",
            "/test.Echo/Unary",
            &[],
            "8",
            Some("fault filter abort"),
        ),
        (
            "direct.example.com",
            "/test.Echo/Unary",
            &[],
            "14",
            Some("slow down"),
        ),
        ("redirect.example.com", "/test.Echo/Unary", &[], "2", None),
    ];
    for (host, path, headers, status, message) in cases {
        let mut call = grpc_call(addr, host, path, b"x", headers).await;
        assert_eq!(call.status, 200, "{host}: {:?}", call.headers);
        let h = &call.headers;
        assert_eq!(
            header(h, "content-type"),
            Some("application/grpc"),
            "{host}"
        );
        assert_eq!(header(h, "grpc-status"), Some(status), "{host}: {h:?}");
        assert_eq!(header(h, "grpc-message"), message, "{host}: {h:?}");
        assert_eq!(header(h, "server"), Some("istio-envoy"), "{host}");
        assert!(!h.contains_key("content-length"), "{host}: {h:?}");
        // Trailers-only: no message, no trailers.
        assert!(call.rest().await.is_empty(), "{host}");
        assert!(call.trailers.is_none(), "{host}");
    }
    // The redirect keeps its Location, as Envoy's local reply keeps its headers.
    let call = grpc_call(addr, "redirect.example.com", "/x", b"", &[]).await;
    assert_eq!(
        header(&call.headers, "location"),
        Some("http://elsewhere.example.com/x")
    );

    // The same failures for other requests keep their HTTP statuses and bodies.
    let base = g.url(80, "/").await;
    let r = get(&base, "empty.example.com", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    let r = get(
        &base,
        "nowhere.example.com",
        &[("content-type", "application/grpc-web")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("grpc-status"), None);
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_backend() {
    let backend = ws_echo_backend("ws-a").await;
    let g = start(vec![
        file(
            "svc.yaml",
            service_as("ws-a", "ws-a.internal", &[backend.addr], "HTTP"),
        ),
        file("vs.yaml", vs_to("vs", WS_HOST, "ws-a.internal")),
    ])
    .await;
    let tcp = tokio::net::TcpStream::connect(g.addr(80).await)
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // A first exchange, so that the gateway's SETTINGS have arrived.
    let probe = http::Request::builder()
        .uri(format!("http://{WS_HOST}/"))
        .body(())
        .unwrap();
    let (probe, _) = client.send_request(probe, true).unwrap();
    probe.await.unwrap();
    let mut client = client.ready().await.unwrap();
    assert!(
        client.is_extended_connect_protocol_enabled(),
        "the gateway announces SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{WS_HOST}/chat"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(resp.headers().get("upgrade").is_none());
    let mut recv = resp.into_body();
    // One masked text frame, as a WebSocket client sends it.
    let payload = b"hello";
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    send.send_data(bytes::Bytes::from(frame), false).unwrap();
    let mut got = Vec::new();
    let want = b"ws-a: hello";
    while got.len() < 2 + want.len() {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), recv.data())
            .await
            .expect("an echo within 10 s")
            .expect("the stream stays open")
            .unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    // An unmasked text frame back from the server.
    assert_eq!(got[0], 0x81);
    assert_eq!(got[1] as usize, want.len());
    assert_eq!(&got[2..2 + want.len()], want);
}
