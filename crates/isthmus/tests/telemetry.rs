//! Telemetry end to end, through a running gateway with real clients and backends: Istio's
//! standard metrics with their exact labels and buckets, the gateway's health series, the
//! access log (Istio's TEXT format and its JSON keys) for HTTP requests and TCP connections,
//! and trace context propagation (W3C and B3) as the backend sees it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use support::*;

const HOST: &str = "shop.example.com";

/// Istio's default buckets, as Prometheus prints them (`le`).
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

// === Fixtures ===

/// A ServiceEntry with no endpoint.
fn empty_service(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: empty, namespace: default}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: []\n"
    )
}

/// Routes of [`HOST`]: `/ok` (a named route to the demo backend), a fault abort, a fault
/// delay, a service without endpoints and one whose endpoint refuses connections.
const ROUTES: &str = "  - name: ok-route
    match: [{uri: {prefix: /ok}}]
    route: [{destination: {host: httpbin.local}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: httpbin.local}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 1ms, percentage: {value: 100}}}
    route: [{destination: {host: httpbin.local}}]
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: empty.local}}]
  - match: [{uri: {prefix: /dead}}]
    retries: {attempts: 0}
    route: [{destination: {host: dead.local}}]
";

/// The HTTP fixture: port 80 with [`ROUTES`]; the demo backend's endpoint carries `app` and
/// `version` labels.
struct Http {
    files: Vec<(String, String)>,
    backend: SocketAddr,
    /// Must live as long as the test.
    _refusing: RefusingPort,
}

async fn http_fixture() -> Http {
    let b = backend("v1").await;
    let refusing = refusing_port();
    let files = vec![
        ("gw.yaml".into(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".into(),
            service("httpbin", "httpbin.local", &[(b, "v1")]).replace(
                "labels: {version: v1}",
                "labels: {version: v1, app: httpbin}",
            ),
        ),
        (
            "dead.yaml".into(),
            service("dead", "dead.local", &[(refusing.addr, "v1")]),
        ),
        ("empty.yaml".into(), empty_service("empty.local")),
        (
            "vs.yaml".into(),
            virtual_service("vs", "default", &[HOST], &["gw"], ROUTES),
        ),
    ];
    Http {
        files,
        backend: b,
        _refusing: refusing,
    }
}

// === Prometheus text ===

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of a Prometheus/OpenMetrics text page.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let (labels, rest) = parse_labels(&line[i + 1..]);
                    (&line[..i], labels, rest)
                }
                None => {
                    let (name, rest) = line.split_once(' ').unwrap();
                    (name, BTreeMap::new(), rest)
                }
            };
            let value = rest.split_whitespace().next().unwrap();
            Sample {
                name: name.to_string(),
                labels,
                value: value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line}")),
            }
        })
        .collect()
}

/// `k="v",...}` and what follows the closing brace.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (key, after) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().unwrap() {
                (_, '\\') => match chars.next().unwrap().1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The samples of `name` whose labels include all of `want`.
fn matching<'a>(all: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn sum(all: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    matching(all, name, want).iter().map(|s| s.value).sum()
}

/// Scrapes until `ready` holds for the samples (metrics are recorded as responses end),
/// for at most [`WAIT`].
async fn scrape_until(g: &Gateway, what: &str, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = samples(&g.prometheus().await);
        if ready(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The labels every request series of this gateway shares, for destination `service`
/// (an Istio gateway reports as the source; workload labels of the destination come from
/// its endpoints).
fn istio_labels(dest: &[(&'static str, &'static str)]) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "istio-system"),
        ("source_principal", "unknown"),
        ("source_app", "istio-ingressgateway"),
        ("source_version", "unknown"),
        ("source_cluster", "unknown"),
        ("source_canonical_service", "istio-ingressgateway"),
        ("source_canonical_revision", "latest"),
        ("destination_workload", "unknown"),
        ("destination_workload_namespace", "unknown"),
        ("destination_principal", "unknown"),
        ("destination_cluster", "unknown"),
        ("connection_security_policy", "unknown"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in dest {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

const HTTPBIN: &[(&str, &str)] = &[
    ("destination_app", "httpbin"),
    ("destination_version", "v1"),
    ("destination_service", "httpbin.local"),
    ("destination_service_name", "httpbin.local"),
    ("destination_service_namespace", "default"),
    ("destination_canonical_service", "httpbin"),
    ("destination_canonical_revision", "v1"),
];

// === Metrics ===

#[tokio::test]
async fn http_requests_are_counted_with_istios_labels_and_flags() {
    let fx = http_fixture().await;
    let g = start_files_with(&fx.files, &[]).await;
    let addr = g.addr(80).await;
    let call = |path: &'static str, host: &'static str| {
        let u = format!("http://{addr}{path}");
        async move { get(&u, host, &[]).await.status }
    };
    for _ in 0..3 {
        assert_eq!(call("/ok", HOST).await, 200);
    }
    assert_eq!(call("/", "nowhere.example.com").await, 404);
    assert_eq!(call("/", "nowhere.example.com").await, 404);
    assert_eq!(call("/abort", HOST).await, 418);
    assert_eq!(call("/delay", HOST).await, 200);
    assert_eq!(call("/empty", HOST).await, 503);
    assert_eq!(call("/dead", HOST).await, 503);

    let all = scrape_until(&g, "every request counted", |s| {
        sum(s, "istio_requests_total", &[]) == 9.0
    })
    .await;
    // The whole label set of the plain 200s.
    let ok = matching(
        &all,
        "istio_requests_total",
        &[("response_code", "200"), ("response_flags", "-")],
    );
    assert_eq!(ok.len(), 1, "{ok:#?}");
    let mut want = istio_labels(HTTPBIN);
    for (k, v) in [
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
    ] {
        want.insert(k.into(), v.into());
    }
    assert_eq!(ok[0].labels, want);
    assert_eq!(ok[0].value, 3.0);

    // Each failure with its code, flags and destination.
    let unknown = "unknown";
    let cases = [
        ("404", "NR", unknown, 2.0),
        ("418", "FI", "httpbin.local", 1.0),
        ("200", "DI", "httpbin.local", 1.0),
        ("503", "UH", "empty.local", 1.0),
        ("503", "UF", "dead.local", 1.0),
    ];
    for (code, flags, dest, n) in cases {
        let labels = [
            ("response_code", code),
            ("response_flags", flags),
            ("destination_service", dest),
            ("request_protocol", "http"),
            ("reporter", "source"),
        ];
        assert_eq!(
            sum(&all, "istio_requests_total", &labels),
            n,
            "{labels:?} in {all:#?}"
        );
    }
    // No route: nothing is known of the destination; Istio's canonical revision default.
    let nr = matching(&all, "istio_requests_total", &[("response_flags", "NR")]);
    assert_eq!(nr[0].labels["destination_service_name"], "unknown");
    assert_eq!(nr[0].labels["destination_version"], "unknown");
    assert_eq!(nr[0].labels["destination_canonical_revision"], "latest");
}

#[tokio::test]
async fn request_histograms_have_istios_buckets() {
    let fx = http_fixture().await;
    let g = start_files_with(&fx.files, &[]).await;
    let url = format!("{}/ok", g.url(80, "").await);
    let mut body_bytes = 0;
    for _ in 0..3 {
        let r = get(&url, HOST, &[]).await;
        assert_eq!(r.status, 200);
        body_bytes += r.body.len();
    }
    let ok = [
        ("response_code", "200"),
        ("destination_service", "httpbin.local"),
    ];
    let all = scrape_until(&g, "three requests", |s| {
        sum(s, "istio_requests_total", &ok) == 3.0
    })
    .await;
    for name in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let buckets = matching(&all, &format!("{name}_bucket"), &ok);
        let les: Vec<f64> = buckets
            .iter()
            .map(|s| s.labels["le"].replace("+Inf", "inf").parse().unwrap())
            .collect();
        let mut want = BUCKETS.to_vec();
        want.push(f64::INFINITY);
        assert_eq!(les, want, "{name}");
        // Cumulative, ending with every request.
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{name}"
        );
        assert_eq!(buckets.last().unwrap().value, 3.0, "{name}");
        assert_eq!(sum(&all, &format!("{name}_count"), &ok), 3.0, "{name}");
        // Every series label is there too.
        let labels = &buckets[0].labels;
        for (k, v) in HTTPBIN {
            assert_eq!(labels.get(*k).map(String::as_str), Some(*v), "{name} {k}");
        }
    }
    // Sizes count headers and body: more than the bodies alone.
    let response_bytes = sum(&all, "istio_response_bytes_sum", &ok);
    assert!(response_bytes > body_bytes as f64, "{response_bytes}");
    assert!(sum(&all, "istio_request_bytes_sum", &ok) > 3.0 * 40.0);
    // A local request is fast: its duration sits in the first buckets, and the sum is small.
    assert!(sum(&all, "istio_request_duration_milliseconds_sum", &ok) < 3.0 * 10_000.0);
}

#[tokio::test]
async fn grpc_calls_report_their_grpc_status() {
    let backend = grpc_backend("g1").await;
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("grpc", "grpc.local", &[(backend.addr, "v1")])
                .replace("protocol: HTTP}", "protocol: GRPC}"),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &["grpc.example.com"],
                &["gw"],
                &http_routes(&[("", "grpc.local")]),
            ),
        ),
    ];
    let g = start_files_with(&files, &[]).await;
    let addr = g.addr(80).await;
    let mut ok = grpc_call(addr, "grpc.example.com", "/test.Echo/Unary", b"x", &[]).await;
    assert_eq!(ok.rest().await, ["g1: x"]);
    let fail = grpc_call(addr, "grpc.example.com", "/test.Echo/Fail", b"", &[]).await;
    assert_eq!(fail.status_field("grpc-status"), Some("5"));
    // No route: the gateway's own answer, a trailers-only UNIMPLEMENTED.
    let nr = grpc_call(addr, "nowhere.example.com", "/test.Echo/Unary", b"", &[]).await;
    assert_eq!(nr.status_field("grpc-status"), Some("12"));

    let grpc = [("request_protocol", "grpc"), ("response_code", "200")];
    let all = scrape_until(&g, "three calls", |s| {
        sum(s, "istio_requests_total", &grpc) == 3.0
    })
    .await;
    let count = |status: &str, dest: &str, flags: &str| {
        sum(
            &all,
            "istio_requests_total",
            &[
                ("request_protocol", "grpc"),
                ("grpc_response_status", status),
                ("destination_service", dest),
                ("response_flags", flags),
            ],
        )
    };
    assert_eq!(count("0", "grpc.local", "-"), 1.0, "{all:#?}");
    assert_eq!(count("5", "grpc.local", "-"), 1.0, "{all:#?}");
    assert_eq!(count("12", "unknown", "NR"), 1.0, "{all:#?}");
}

/// A TCP fixture: port 81 to an echo backend, port 82 to a port that refuses.
async fn tcp_files() -> (Vec<(String, String)>, RefusingPort) {
    let echo = tcp_echo_backend("tcp-v1").await;
    let refusing = refusing_port();
    let files = vec![
        (
            "gw.yaml".into(),
            gateway_servers(&[
                server(81, "tcp", "TCP", &["*"], ""),
                server(82, "tcp-dead", "TCP", &["*"], ""),
            ]),
        ),
        (
            "svc.yaml".into(),
            l4_service("echo", "echo.local", "TCP", &[echo]),
        ),
        (
            "dead.yaml".into(),
            l4_service("dead", "dead.local", "TCP", &[refusing.addr]),
        ),
        (
            "vs.yaml".into(),
            l4_virtual_service(
                "tcp",
                &["*"],
                "  tcp:\n  - match: [{port: 81}]\n    route: [{destination: {host: echo.local}}]\n  - match: [{port: 82}]\n    route: [{destination: {host: dead.local}}]\n",
            ),
        ),
    ];
    (files, refusing)
}

/// One echo exchange on port 81: the greeting `tcp-v1\n`, then `hello` echoed and `<eof>`
/// after our half-close. The client's address and what it read.
async fn echo_exchange(g: &Gateway) -> (SocketAddr, String) {
    let mut s = tokio::net::TcpStream::connect(g.addr(81).await)
        .await
        .unwrap();
    let local = s.local_addr().unwrap();
    assert_eq!(read_line(&mut s).await.unwrap(), "tcp-v1\n");
    let rest = send_and_read_to_end(&mut s, b"hello").await.unwrap();
    assert_eq!(rest, "hello<eof>");
    (local, rest)
}

#[tokio::test]
async fn tcp_connections_and_bytes_are_counted() {
    let (files, _refusing) = tcp_files().await;
    let g = start_files_with(&files, &[]).await;
    echo_exchange(&g).await;
    // The refused one: the gateway closes the client's connection without a byte.
    assert!(closed_without_answer(g.addr(82).await, b"x").await);

    let echo = [
        ("destination_service", "echo.local"),
        ("request_protocol", "tcp"),
    ];
    let all = scrape_until(&g, "both connections closed", |s| {
        sum(s, "istio_tcp_connections_closed_total", &[]) == 2.0
    })
    .await;
    let value = |name: &str| sum(&all, name, &echo);
    assert_eq!(value("istio_tcp_connections_opened_total"), 1.0);
    assert_eq!(value("istio_tcp_connections_closed_total"), 1.0);
    // From the client: "hello". To it: the greeting, the echo and "<eof>".
    assert_eq!(value("istio_tcp_received_bytes_total"), 5.0);
    assert_eq!(value("istio_tcp_sent_bytes_total"), 17.0);
    let opened = matching(&all, "istio_tcp_connections_opened_total", &echo);
    let mut want = istio_labels(&[
        ("destination_app", "unknown"),
        ("destination_version", "unknown"),
        ("destination_service", "echo.local"),
        ("destination_service_name", "echo.local"),
        ("destination_service_namespace", "default"),
        ("destination_canonical_service", "unknown"),
        ("destination_canonical_revision", "latest"),
    ]);
    want.insert("request_protocol".into(), "tcp".into());
    want.insert("response_flags".into(), "-".into());
    assert_eq!(opened[0].labels, want);

    let dead = [
        ("destination_service", "dead.local"),
        ("response_flags", "UF"),
    ];
    assert_eq!(sum(&all, "istio_tcp_connections_opened_total", &dead), 1.0);
    assert_eq!(sum(&all, "istio_tcp_connections_closed_total", &dead), 1.0);
    assert_eq!(sum(&all, "istio_tcp_sent_bytes_total", &dead), 0.0);
}

#[tokio::test]
async fn health_series_describe_the_gateway_and_its_upstreams() {
    let fx = http_fixture().await;
    let g = start_files_with(&fx.files, &[]).await;
    let url = format!("{}/ok", g.url(80, "").await);
    assert_eq!(get(&url, HOST, &[]).await.status, 200);
    let cluster = [("cluster_name", "outbound|80||httpbin.local")];
    let all = scrape_until(&g, "an idle upstream connection", |s| {
        sum(s, "isthmus_upstream_connections_idle", &cluster) == 1.0
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sum(&all, "isthmus_build_info", &[("version", version)]),
        1.0
    );
    assert_eq!(sum(&all, "isthmus_upstream_endpoints", &cluster), 1.0);
    assert_eq!(
        sum(
            &all,
            "isthmus_upstream_endpoints",
            &[("cluster_name", "outbound|80||empty.local")]
        ),
        0.0
    );
    assert_eq!(
        sum(&all, "isthmus_upstream_connections_open", &cluster),
        1.0
    );
    assert_eq!(sum(&all, "isthmus_access_log_dropped_total", &[]), 0.0);
    assert!(sum(&all, "isthmus_config_generation", &[]) >= 1.0);
    assert_eq!(
        sum(
            &all,
            "isthmus_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
}

// === Access log ===

/// A gateway writing its access log to a file (outside the watched config folder).
async fn logging_gateway(
    files: &[(String, String)],
    format: &str,
) -> (Gateway, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let args = [
        "--access-log",
        path.to_str().unwrap(),
        "--access-log-format",
        format,
    ];
    let g = start_files_with(files, &args).await;
    (g, dir, path)
}

/// Waits (at most [`WAIT`]) until the log has `n` lines and returns them.
async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
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
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} access log lines: {lines:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Compares a TEXT line with a pattern token by token (split on spaces); `*` matches any
/// token. The start time is checked for Envoy's format.
fn assert_text_line(line: &str, pattern: &str) {
    let got: Vec<&str> = line.split(' ').collect();
    let want: Vec<&str> = pattern.split(' ').collect();
    assert_eq!(got.len(), want.len(), "{line}\nvs\n{pattern}");
    for (g, w) in got.iter().zip(&want) {
        assert!(*w == "*" || g == w, "{g} != {w} in\n{line}\nvs\n{pattern}");
    }
    // [2026-01-02T03:04:05.678Z]
    let t = got[0];
    assert!(
        t.len() == 26 && t.starts_with("[20") && &t[11..12] == "T" && t.ends_with("Z]"),
        "{t}"
    );
}

#[tokio::test]
async fn text_access_log_has_istios_default_format() {
    // HTTP on port 80 and the TCP echo on port 81.
    let fx = http_fixture().await;
    let echo = tcp_echo_backend("tcp-v1").await;
    let mut files: Vec<(String, String)> = fx
        .files
        .iter()
        .filter(|(n, _)| n != "gw.yaml")
        .cloned()
        .collect();
    files.extend([
        (
            "gw.yaml".to_string(),
            gateway_servers(&[
                server(80, "http", "HTTP", &["*"], ""),
                server(81, "tcp", "TCP", &["*"], ""),
            ]),
        ),
        (
            "echo.yaml".to_string(),
            l4_service("echo", "echo.local", "TCP", &[echo]),
        ),
        (
            "vs-tcp.yaml".to_string(),
            l4_virtual_service(
                "tcp",
                &["*"],
                "  tcp:\n  - match: [{port: 81}]\n    route: [{destination: {host: echo.local}}]\n",
            ),
        ),
    ]);
    let (g, _dir, path) = logging_gateway(&files, "text").await;
    let http = g.addr(80).await;
    let (client, reply) = raw_http_from(
        http,
        &format!(
            "GET /ok/item?x=1 HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: telemetry-test/1.0\r\nX-Request-Id: req-1\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let lines = log_lines(&path, 1).await;
    let backend_addr = fx.backend;
    assert_text_line(
        &lines[0],
        &format!(
            "* \"GET /ok/item?x=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 {} * * \"127.0.0.1\" \"telemetry-test/1.0\" \"req-1\" \"{HOST}\" \"{backend_addr}\" outbound|80||httpbin.local * {http} {client} - ok-route",
            reply.body.len()
        ),
    );
    // The gateway's end of its upstream connection.
    let upstream_local: SocketAddr = lines[0].split(' ').nth(19).unwrap().parse().unwrap();
    assert_eq!(upstream_local.ip(), backend_addr.ip());

    // No route: nothing upstream; the gateway made a request id.
    let (client, reply) = raw_http_from(
        http,
        "GET /nothing HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 404);
    let lines = log_lines(&path, 2).await;
    assert_text_line(
        &lines[1],
        &format!(
            "* \"GET /nothing HTTP/1.1\" 404 NR route_not_found - \"-\" 0 0 * - \"127.0.0.1\" \"-\" * \"nowhere.example.com\" \"-\" - - {http} {client} - -"
        ),
    );
    let request_id = lines[1].split('"').nth(9).unwrap();
    assert_eq!(request_id.len(), 36, "{request_id}");

    // A TCP connection: HTTP fields empty, bytes both ways, the upstream's local address.
    let (client, _) = echo_exchange(&g).await;
    let lines = log_lines(&path, 3).await;
    let tcp = g.addr(81).await;
    assert_text_line(
        &lines[2],
        &format!(
            "* \"- - -\" 0 - - - \"-\" 5 17 * - \"-\" \"-\" \"-\" \"-\" * outbound|9000||echo.local * {tcp} {client} - -"
        ),
    );
    let fields: Vec<&str> = lines[2].split(' ').collect();
    assert!(fields[17].starts_with("\"127.0.0.1:"), "{}", lines[2]);
    assert!(fields[19].parse::<SocketAddr>().is_ok(), "{}", lines[2]);
}

#[tokio::test]
async fn json_access_log_uses_istios_keys() {
    let fx = http_fixture().await;
    let (g, _dir, path) = logging_gateway(&fx.files, "json").await;
    let http = g.addr(80).await;
    let (client, reply) = raw_http_from(
        http,
        &format!(
            "GET /ok?x=1 HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: ua\r\nX-Request-Id: req-2\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let (_, reply404) = raw_http_from(
        http,
        "GET / HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply404.status, 404);
    let lines = log_lines(&path, 2).await;
    let ok: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let keys: Vec<&str> = ok.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want_keys = vec![
        "start_time",
        "route_name",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "response_code_details",
        "connection_termination_details",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_service_time",
        "x_forwarded_for",
        "user_agent",
        "request_id",
        "authority",
        "upstream_host",
        "upstream_cluster",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "requested_server_name",
        "upstream_transport_failure_reason",
    ];
    let mut got_keys = keys.clone();
    got_keys.sort_unstable();
    want_keys.sort_unstable();
    assert_eq!(got_keys, want_keys);
    let expect = serde_json::json!({
        "route_name": "ok-route",
        "method": "GET",
        "path": "/ok?x=1",
        "protocol": "HTTP/1.1",
        "response_code": 200,
        "response_flags": "-",
        "response_code_details": "via_upstream",
        "connection_termination_details": null,
        "bytes_received": 0,
        "bytes_sent": reply.body.len(),
        "x_forwarded_for": "127.0.0.1",
        "user_agent": "ua",
        "request_id": "req-2",
        "authority": HOST,
        "upstream_cluster": "outbound|80||httpbin.local",
        "downstream_local_address": http.to_string(),
        "downstream_remote_address": client.to_string(),
        "requested_server_name": null,
        "upstream_transport_failure_reason": null,
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&ok[k], v, "{k} in {ok:#}");
    }
    assert!(ok["duration"].is_u64());
    assert!(ok["upstream_service_time"].is_string());
    assert_eq!(ok["upstream_host"], fx.backend.to_string());
    let upstream_local = ok["upstream_local_address"].as_str().unwrap();
    assert!(
        upstream_local.parse::<SocketAddr>().is_ok(),
        "{upstream_local}"
    );
    assert!(ok["start_time"].as_str().unwrap().ends_with('Z'));

    let nr: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(nr["response_code"], 404);
    assert_eq!(nr["response_flags"], "NR");
    assert_eq!(nr["response_code_details"], "route_not_found");
    assert_eq!(nr["upstream_cluster"], serde_json::Value::Null);
    assert_eq!(nr["route_name"], serde_json::Value::Null);
}

/// A backend that writes `answer` for the first request of each connection (after its head),
/// says so on the channel, and keeps the connection until the gateway closes it (`hold`), or
/// closes it at once.
async fn holding_backend(
    answer: &'static str,
    hold: bool,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = tx.send(());
                if !hold {
                    return;
                }
                // Held until the gateway lets go of it.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A GET of `path` on a connection of its own, returned once the backend has it.
async fn held(
    addr: SocketAddr,
    host: &str,
    path: &str,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
) -> tokio::net::TcpStream {
    let c = get_on_own_connection(addr, host, path).await;
    tokio::time::timeout(WAIT, seen.recv()).await.unwrap();
    c
}

/// A GET of `path` written on a connection of its own.
async fn get_on_own_connection(addr: SocketAddr, host: &str, path: &str) -> tokio::net::TcpStream {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut c, request.as_bytes())
        .await
        .unwrap();
    c
}

/// Reads from `c` until what was read ends with `tail`, and returns it.
async fn read_until(c: &mut tokio::net::TcpStream, tail: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(tail) {
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(c, &mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Reads from `c` until the gateway closes it.
async fn read_to_close(c: &mut tokio::net::TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(c, &mut rest);
    tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
}

/// An HTTP/2 backend that resets each stream (`INTERNAL_ERROR`): at once for `/early`,
/// otherwise after a 200 and `partial`, when `go` is notified.
async fn resetting_h2_backend(go: std::sync::Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if req.uri().path() == "/early" {
                        respond.send_reset(h2::Reason::INTERNAL_ERROR);
                        continue;
                    }
                    let Ok(mut body) = respond.send_response(http::Response::new(()), false) else {
                        continue;
                    };
                    let _ = body.send_data(bytes::Bytes::from_static(b"partial"), false);
                    let go = go.clone();
                    // Reset once the client has the data (a reset sent with it queued would
                    // discard it).
                    tokio::spawn(async move {
                        go.notified().await;
                        body.send_reset(h2::Reason::INTERNAL_ERROR);
                    });
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_failing_mid_response_is_recorded_as_envoy_records_it() {
    const HOST: &str = "late.example.com";
    const PARTIAL: &str = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";
    const BAD_CHUNK: &str =
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\npartial\r\nzz\r\n";
    let (slow, mut slow_seen) = holding_backend(PARTIAL, true).await;
    let (bad, mut bad_seen) = holding_backend(BAD_CHUNK, true).await;
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let h2 = resetting_h2_backend(go.clone()).await;
    let routes = "  - match: [{uri: {prefix: /slow}}]
    timeout: 300ms
    route: [{destination: {host: slow.local}}]
  - match: [{uri: {prefix: /bad}}]
    route: [{destination: {host: bad.local}}]
  - route: [{destination: {host: h2.local}}]
";
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "slow.yaml".to_string(),
            service("slow", "slow.local", &[(slow, "v1")]),
        ),
        (
            "bad.yaml".to_string(),
            service("bad", "bad.local", &[(bad, "v1")]),
        ),
        (
            "h2.yaml".to_string(),
            service("h2", "h2.local", &[(h2, "v1")]).replace("protocol: HTTP}", "protocol: HTTP2}"),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service("vs", "default", &[HOST], &["gw"], routes),
        ),
    ];
    let (g, _dir, path) = logging_gateway(&files, "json").await;
    let addr = g.addr(80).await;
    let check = |n: usize, code: u16, flags: &'static str, details: &'static str| {
        let path = path.clone();
        async move {
            let lines = log_lines(&path, n).await;
            let l: serde_json::Value = serde_json::from_str(&lines[n - 1]).unwrap();
            assert_eq!(
                (&l["response_code"], &l["response_flags"]),
                (&code.into(), &flags.into()),
                "{l:#}"
            );
            assert_eq!(l["response_code_details"], details, "{l:#}");
        }
    };

    // The route timeout expires in the middle of the body: the code stays, `UT`.
    let mut c = held(addr, HOST, "/slow", &mut slow_seen).await;
    read_until(&mut c, b"partial").await;
    read_to_close(&mut c).await;
    check(1, 200, "UT", "response_timeout").await;

    // A chunk size that is not one, read with the chunk before it: a protocol error after
    // the response started. The client still gets what came before it (chunked as well),
    // then the connection ends without the last chunk.
    // The same for a request with a chunked body, which hyper's server takes.
    let chunked = "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for (n, request) in [
        (2, format!("GET /bad HTTP/1.1\r\nHost: {HOST}\r\n\r\n")),
        (
            3,
            format!("POST /bad HTTP/1.1\r\nHost: {HOST}\r\n{chunked}"),
        ),
    ] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut c, request.as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, bad_seen.recv()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got);
        tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{request}: {got}");
        assert!(
            got.ends_with("\r\n\r\n7\r\npartial\r\n"),
            "{request}: {got}"
        );
        let details = "upstream_reset_after_response_started{protocol_error}";
        check(n, 200, "UPE", details).await;
    }
    // An HTTP/2 client sees its stream reset. What came before may not reach it: a reset
    // discards the frames h2 still has queued for the stream.
    let mut h2c = h2c_connect(addr).await;
    let request = http::Request::get(format!("http://{HOST}/bad"))
        .body(FrameBody::empty())
        .unwrap();
    let answer = tokio::time::timeout(WAIT, async {
        let r = h2c.send_request(request).await?;
        assert_eq!(r.status(), 200);
        http_body_util::BodyExt::collect(r.into_body()).await
    })
    .await
    .unwrap();
    assert!(answer.is_err(), "the stream ended normally");
    let details = "upstream_reset_after_response_started{protocol_error}";
    check(4, 200, "UPE", details).await;

    // An HTTP/2 upstream resetting the stream before its headers: Envoy's 503 `UR`.
    let r = client()
        .get(format!("http://{addr}/early"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
    );
    check(
        5,
        503,
        "UR",
        "upstream_reset_before_response_started{remote_reset}",
    )
    .await;

    // ... and after them.
    let mut c = get_on_own_connection(addr, HOST, "/late").await;
    read_until(&mut c, b"partial\r\n").await;
    go.notify_one();
    read_to_close(&mut c).await;
    let details = "upstream_reset_after_response_started{remote_reset}";
    check(6, 200, "UR", details).await;

    let rows = [
        ("200", "UT", "slow.local"),
        ("503", "UR", "h2.local"),
        ("200", "UR", "h2.local"),
    ];
    let all = one_request_each(&g, 6, &rows).await;
    let labels = [
        ("response_flags", "UPE"),
        ("destination_service", "bad.local"),
    ];
    assert_eq!(sum(&all, "istio_requests_total", &labels), 3.0, "{all:#?}");
}

#[tokio::test]
async fn a_client_leaving_is_recorded_as_envoy_records_it() {
    const HOLD: &str = "hold.example.com";
    const PARTIAL: &str = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";
    let (silent, mut silent_seen) = holding_backend("", true).await;
    let (partial, mut partial_seen) = holding_backend(PARTIAL, true).await;
    let (cut, mut cut_seen) = holding_backend(PARTIAL, false).await;
    let routes = "  - name: silent-route
    match: [{uri: {prefix: /silent}}]
    route: [{destination: {host: silent.local}}]
  - name: partial-route
    match: [{uri: {prefix: /partial}}]
    route: [{destination: {host: partial.local}}]
  - match: [{uri: {prefix: /none}}]
    route: [{destination: {host: empty.local}}]
  - name: cut-route
    match: [{uri: {prefix: /cut}}]
    route: [{destination: {host: cut.local}}]
";
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "silent.yaml".to_string(),
            service("silent", "silent.local", &[(silent, "v1")]),
        ),
        (
            "partial.yaml".to_string(),
            service("partial", "partial.local", &[(partial, "v1")]),
        ),
        ("empty.yaml".to_string(), empty_service("empty.local")),
        (
            "cut.yaml".to_string(),
            service("cut", "cut.local", &[(cut, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service("vs", "default", &[HOLD], &["gw"], routes),
        ),
    ];
    let (g, _dir, path) = logging_gateway(&files, "json").await;
    let addr = g.addr(80).await;
    let line = |n: usize| {
        let path = path.clone();
        async move {
            let lines = log_lines(&path, n).await;
            serde_json::from_str::<serde_json::Value>(&lines[n - 1]).unwrap()
        }
    };

    let left = |l: serde_json::Value, fields: &[(&str, serde_json::Value)]| {
        let mut want = vec![
            ("response_flags", "DC".into()),
            (
                "response_code_details",
                "downstream_remote_disconnect".into(),
            ),
        ];
        want.extend(fields.iter().cloned());
        for (k, v) in want {
            assert_eq!(l[k], v, "{k} in {l:#}");
        }
    };

    // Gone before the answer: code 0.
    drop(held(addr, HOLD, "/silent", &mut silent_seen).await);
    left(
        line(1).await,
        &[
            ("response_code", 0.into()),
            ("route_name", "silent-route".into()),
            ("upstream_cluster", "outbound|80||silent.local".into()),
            ("path", "/silent".into()),
            ("bytes_sent", 0.into()),
        ],
    );

    // Gone in the middle of the body: the code stays, the bytes sent are counted.
    let mut c = held(addr, HOLD, "/partial", &mut partial_seen).await;
    read_until(&mut c, b"partial").await;
    drop(c);
    left(
        line(2).await,
        &[
            ("response_code", 200.into()),
            ("route_name", "partial-route".into()),
            ("bytes_sent", 7.into()),
        ],
    );

    // A HEAD request is answered whole, though the body of its answer (the text of a local
    // reply) is never read.
    let r = client()
        .head(format!("http://{addr}/none"))
        .header("host", HOLD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let l = line(3).await;
    assert_eq!(
        (&l["method"], &l["response_flags"]),
        (&"HEAD".into(), &"UH".into()),
        "{l:#}"
    );

    // The upstream, not the client, cutting the body short is no client leaving: Envoy's
    // `UC`, after the response started.
    let mut c = held(addr, HOLD, "/cut", &mut cut_seen).await;
    read_to_close(&mut c).await;
    let l = line(4).await;
    for (k, v) in [
        ("route_name", "cut-route"),
        ("response_flags", "UC"),
        (
            "response_code_details",
            "upstream_reset_after_response_started{connection_termination}",
        ),
    ] {
        assert_eq!(l[k], v, "{k} in {l:#}");
    }

    let rows = [
        ("0", "DC", "silent.local"),
        ("200", "DC", "partial.local"),
        ("503", "UH", "empty.local"),
        ("200", "UC", "cut.local"),
    ];
    one_request_each(&g, 4, &rows).await;
}

/// Waits until `istio_requests_total` counts `total` requests, checks that it counts one for
/// each (response code, response flags, destination service), and returns the scrape.
async fn one_request_each(g: &Gateway, total: u32, rows: &[(&str, &str, &str)]) -> Vec<Sample> {
    let all = scrape_until(g, &format!("{total} requests"), |s| {
        sum(s, "istio_requests_total", &[]) == f64::from(total)
    })
    .await;
    for &(code, flags, dest) in rows {
        let labels = [
            ("response_code", code),
            ("response_flags", flags),
            ("destination_service", dest),
        ];
        assert_eq!(
            sum(&all, "istio_requests_total", &labels),
            1.0,
            "{labels:?} in {all:#?}"
        );
    }
    all
}

#[tokio::test]
async fn an_access_log_inside_the_config_folder_does_not_reload_it() {
    let fx = http_fixture().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &fx.files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("access.log");
    let log = path.to_str().unwrap().to_string();
    let g = Gateway::spawn(dir, &["--access-log", &log]);
    g.wait_ready().await;
    assert_eq!(g.generation().await, 1);
    let url = format!("{}/ok", g.url(80, "").await);
    for _ in 0..5 {
        assert_eq!(get(&url, HOST, &[]).await.status, 200);
    }
    log_lines(&path, 5).await;
    // An absence needs a window: watch the generation for well over the watcher's debounce
    // (150 ms) plus a reload.
    let window = tokio::time::Instant::now() + std::time::Duration::from_millis(600);
    while tokio::time::Instant::now() < window {
        assert_eq!(
            g.generation().await,
            1,
            "the access log reloaded the configuration"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A real change still reloads.
    g.write("extra.yaml", &empty_service("extra.local")).await;
    assert_eq!(g.generation().await, 2);
}

// === Tracing ===

/// The trace headers the backend received for one request with `headers`.
async fn traced(g: &Gateway, headers: &[(&str, &str)]) -> BTreeMap<String, String> {
    let r = get(&format!("{}/ok", g.url(80, "").await), HOST, headers).await;
    assert_eq!(r.status, 200);
    r.json()["headers"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("x-b3") || k.starts_with("trace") || *k == "b3")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// `traceparent` as (trace id, parent id, flags).
fn traceparent(h: &BTreeMap<String, String>) -> (String, String, String) {
    let v: Vec<&str> = h["traceparent"].split('-').collect();
    assert_eq!(v.len(), 4, "{h:?}");
    assert_eq!(v[0], "00");
    assert_eq!((v[1].len(), v[2].len(), v[3].len()), (32, 16, 2), "{h:?}");
    (v[1].into(), v[2].into(), v[3].into())
}

#[tokio::test]
async fn trace_context_is_continued_with_the_gateways_span() {
    let fx = http_fixture().await;
    // Nothing new is sampled: only incoming decisions can say "sampled".
    let g = start_files_with(&fx.files, &["--trace-sampling", "0"]).await;

    // W3C: same trace, the gateway's span as parent-id, flags kept, tracestate passed on.
    let h = traced(
        &g,
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    let (trace, parent, flags) = traceparent(&h);
    assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
    assert_ne!(parent, "b7ad6b7169203331");
    assert_eq!(flags, "01");
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(h["x-b3-traceid"], trace);
    assert_eq!(h["x-b3-spanid"], parent);
    assert_eq!(h["x-b3-parentspanid"], "b7ad6b7169203331");
    assert_eq!(h["x-b3-sampled"], "1");

    // B3: the caller's span becomes the parent, a new span id, the decision kept.
    let h = traced(
        &g,
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(h["x-b3-parentspanid"], "a2fb4a1d1a96d312");
    assert_ne!(h["x-b3-spanid"], "a2fb4a1d1a96d312");
    assert_eq!(h["x-b3-spanid"].len(), 16);
    assert_eq!(h["x-b3-sampled"], "1");
    let (trace, parent, flags) = traceparent(&h);
    assert_eq!(
        (trace.as_str(), parent.as_str(), flags.as_str()),
        (
            "463ac35c9f6413ad48485a3953bb6124",
            h["x-b3-spanid"].as_str(),
            "01"
        )
    );

    // No context: a new trace, not sampled at 0%, without a parent.
    let a = traced(&g, &[]).await;
    let b = traced(&g, &[]).await;
    let (ta, pa, fa) = traceparent(&a);
    assert_eq!(fa, "00");
    assert_eq!(a["x-b3-sampled"], "0");
    assert_eq!(a["x-b3-traceid"], ta);
    assert_eq!(a["x-b3-spanid"], pa);
    assert!(!a.contains_key("x-b3-parentspanid"));
    assert_ne!(traceparent(&b).0, ta);
}

#[tokio::test]
async fn new_traces_follow_the_sampling_percentage() {
    let fx = http_fixture().await;
    let g = start_files_with(&fx.files, &["--trace-sampling", "100"]).await;
    let h = traced(&g, &[]).await;
    assert_eq!(traceparent(&h).2, "01");
    assert_eq!(h["x-b3-sampled"], "1");
    // An incoming "not sampled" stays so, whatever the percentage.
    let h = traced(
        &g,
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )],
    )
    .await;
    assert_eq!(traceparent(&h).2, "00");
    assert_eq!(h["x-b3-sampled"], "0");
}
