//! Resilience end to end, through real sockets: route timeouts, retries (conditions, attempt
//! counts, per-try timeouts, endpoint choice, body replay), `grpc-timeout`, fault injection and
//! mirroring. Istio's semantics (and Envoy's, where Istio hands the decision to it) are the
//! reference.
//!
//! Most tests use recording backends (see `support::recording_backend`): they count requests,
//! record `x-envoy-attempt-count`, Host and body sizes, and answer as a script says (503 for the
//! first N requests, slow, closing without an answer, ...).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use support::*;

/// The host every test requests.
const HOST: &str = "r.example.com";

// === Fixtures ===

/// Starts a gateway: Gateway `gw` for every host on port 80, one ServiceEntry per
/// `(host, endpoints)`, and VirtualService `vs` for [`HOST`] with the routes `http` (YAML list
/// items, each starting with `  - `). Fails on any error diagnostic, so that a typo in a test's
/// YAML cannot pass for gateway behaviour.
async fn start(services: &[(&str, Vec<SocketAddr>)], http: &str) -> Gateway {
    let mut files = vec![("gw.yaml".to_string(), gateway(&[(80, &["*"])]))];
    for (i, (host, addrs)) in services.iter().enumerate() {
        let endpoints: Vec<(SocketAddr, &str)> = addrs.iter().map(|a| (*a, "v1")).collect();
        files.push((
            format!("svc-{i}.yaml"),
            service(&format!("svc-{i}"), host, &endpoints),
        ));
        // Round robin, so that which endpoint a first try takes is deterministic (Istio's
        // default, LEAST_REQUEST, draws at random).
        files.push((
            format!("dr-{i}.yaml"),
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr-{i}, namespace: default}}\nspec:\n  host: {host}\n  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}\n"
            ),
        ));
    }
    files.push((
        "vs.yaml".into(),
        virtual_service("vs", "default", &[HOST], &["gw"], http),
    ));
    let g = start_files(&files).await;
    let errors: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains(": error:"))
        .collect();
    assert!(errors.is_empty(), "configuration errors: {errors:#?}");
    g
}

/// A reply and how long it took.
#[derive(Debug)]
struct Timed {
    reply: Reply,
    took: Duration,
}

/// Sends requests for [`HOST`] to Gateway port 80 on one pooled client.
struct Caller {
    client: reqwest::Client,
    base: String,
}

impl Caller {
    async fn new(g: &Gateway) -> Caller {
        Caller {
            client: client(),
            base: g.url(80, "").await,
        }
    }

    async fn get(&self, path: &str) -> Timed {
        self.send("GET", path, &[], None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Timed {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("host", HOST);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let start = Instant::now();
        let reply = Reply::from(rb.send().await.unwrap()).await;
        Timed {
            reply,
            took: start.elapsed(),
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// === Timeouts ===

#[tokio::test]
async fn route_timeout_answers_504_at_the_deadline() {
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(2))).await;
    let g = start(
        &[("slow.internal", vec![slow.addr])],
        "  - timeout: 0.5s\n    route: [{destination: {host: slow.internal}}]\n",
    )
    .await;
    let t = Caller::new(&g).await.get("/slow").await;
    assert_eq!(t.reply.status, 504, "{t:?}");
    assert_eq!(t.reply.body, "upstream request timeout");
    assert!(
        t.took >= ms(480) && t.took < ms(1500),
        "answered after {:?}, want about 500ms",
        t.took
    );
    // The upstream was told how long the gateway waits.
    let seen = slow.next().await;
    assert_eq!(
        seen.header("x-envoy-expected-rq-timeout-ms"),
        Some("500"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_zero_timeout_disables_the_route_timeout() {
    let slow = recording_backend("slow", |_| Answer::ok().after(ms(700))).await;
    let g = start(
        &[("slow.internal", vec![slow.addr])],
        "  - timeout: 0s\n    route: [{destination: {host: slow.internal}}]\n",
    )
    .await;
    let t = Caller::new(&g).await.get("/slow").await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert!(t.took >= ms(700));
    assert_eq!(
        slow.next().await.header("x-envoy-expected-rq-timeout-ms"),
        None
    );
}

#[tokio::test]
async fn route_timeout_covers_every_retry() {
    // 5 retries × 400ms per try would take 2.4s: the 1s route timeout ends it first.
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(3))).await;
    let g = start(
        &[("slow.internal", vec![slow.addr])],
        "  - timeout: 1s
    retries: {attempts: 5, perTryTimeout: 0.4s, retryOn: 5xx}
    route: [{destination: {host: slow.internal}}]
",
    )
    .await;
    let t = Caller::new(&g).await.get("/slow").await;
    assert_eq!(t.reply.status, 504, "{t:?}");
    assert_eq!(t.reply.body, "upstream request timeout");
    assert!(
        t.took >= ms(980) && t.took < ms(1800),
        "answered after {:?}, want about 1s",
        t.took
    );
    // Attempts at about 0, 0.4 and 0.8s (plus back-off); none after the deadline.
    let attempts = slow.attempts();
    let n = attempts.len();
    assert!((2..=3).contains(&n), "attempts seen: {attempts:?}");
    let want: Vec<Option<u32>> = (1..=n as u32).map(Some).collect();
    assert_eq!(attempts, want);
}

#[tokio::test]
async fn grpc_timeout_header_bounds_a_grpc_request_without_route_timeout() {
    // Istio sets Envoy's max_grpc_timeout to the route timeout (none here): a gRPC request's
    // `grpc-timeout` becomes its timeout; other requests ignore the header.
    let slow = recording_backend("slow", |_| Answer::ok().after(ms(1000))).await;
    let g = start(
        &[("slow.internal", vec![slow.addr])],
        "  - match: [{uri: {exact: /capped}}]
    timeout: 0.3s
    route: [{destination: {host: slow.internal}}]
  - route: [{destination: {host: slow.internal}}]
",
    )
    .await;
    let c = Caller::new(&g).await;
    let grpc = |timeout: &'static str| {
        [
            ("content-type", "application/grpc"),
            ("grpc-timeout", timeout),
        ]
    };

    // The timeout (504) answers a gRPC request as Envoy does: HTTP 200 with gRPC status 14.
    let t = c.send("POST", "/slow", &grpc("200m"), None).await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.header("grpc-status"), Some("14"), "{t:?}");
    assert_eq!(
        t.reply.header("grpc-message"),
        Some("upstream request timeout")
    );
    assert!(
        t.took >= ms(190) && t.took < ms(900),
        "answered after {:?}, want about 200ms",
        t.took
    );
    // The route timeout caps a longer grpc-timeout.
    let t = c.send("POST", "/capped", &grpc("10S"), None).await;
    assert_eq!(t.reply.header("grpc-status"), Some("14"), "{t:?}");
    assert!(t.took < ms(900), "answered after {:?}", t.took);
    // Not a gRPC request: the header is not a timeout.
    let t = c
        .send("GET", "/slow", &[("grpc-timeout", "200m")], None)
        .await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert!(t.took >= ms(1000), "answered after {:?}", t.took);
}

// === Retries ===

#[tokio::test]
async fn retries_on_5xx_until_success_and_number_the_attempts() {
    let flaky = recording_backend("flaky", |s| {
        if s.index < 2 {
            Answer::status(503)
        } else {
            Answer::ok()
        }
    })
    .await;
    let g = start(
        &[("flaky.internal", vec![flaky.addr])],
        "  - retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: flaky.internal}}]
",
    )
    .await;
    let t = Caller::new(&g).await.get("/get").await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.json()["index"], 2, "the third request answered");
    assert_eq!(flaky.attempts(), [Some(1), Some(2), Some(3)]);
    // Every attempt is the same request.
    let seen = flaky.seen();
    let ids: Vec<Option<&str>> = seen.iter().map(|s| s.header("x-request-id")).collect();
    assert!(
        ids[0].is_some() && ids.iter().all(|i| *i == ids[0]),
        "{ids:?}"
    );
}

#[tokio::test]
async fn exhausted_retries_return_the_last_answer_flagged_urx() {
    let down = recording_backend("down", |_| Answer::status(503)).await;
    let broken = recording_backend("broken", |_| Answer::status(500)).await;
    let dead = [refusing_port(), refusing_port()];
    let g = start(
        &[
            ("down.internal", vec![down.addr]),
            ("broken.internal", vec![broken.addr]),
            ("dead.internal", vec![dead[0].addr, dead[1].addr]),
        ],
        "  - match: [{uri: {exact: /down}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: down.internal}}]
  - match: [{uri: {exact: /broken}}]
    retries: {attempts: 2, retryOn: gateway-error}
    route: [{destination: {host: broken.internal}}]
  - match: [{uri: {exact: /dead}}]
    route: [{destination: {host: dead.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;
    // The upstream's own last answer reaches the client.
    let t = caller.get("/down").await;
    assert_eq!(t.reply.status, 503, "{t:?}");
    assert_eq!(t.reply.backend(), Some("down"));
    assert_eq!(t.reply.json()["index"], 2);
    assert_eq!(down.attempts(), [Some(1), Some(2), Some(3)]);
    // Not a retry condition: answered at once, and not flagged.
    let t = caller.get("/broken").await;
    assert_eq!(t.reply.status, 500, "{t:?}");
    assert_eq!(broken.count(), 1);
    // Istio's default policy: 3 connection attempts, then the gateway's own 503.
    let t = caller.get("/dead").await;
    assert_eq!(t.reply.status, 503, "{t:?}");
    assert!(t.reply.body.ends_with("reset reason: connection failure"));

    let text = g.prometheus().await;
    let count = |code: &str, flags: &str| {
        metric_sum(
            &text,
            "istio_requests_total",
            &[("response_code", code), ("response_flags", flags)],
        )
    };
    assert_eq!(count("503", "URX"), 1.0, "{text}");
    assert_eq!(count("500", "-"), 1.0, "{text}");
    // (metric_sum splits labels on commas: look for the two-flag value in the text.)
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"503\"")
            && l.contains("response_flags=\"UF,URX\"")),
        "{text}"
    );
}

/// One case of [`retry_conditions_follow_envoy`]: the route's `retryOn`, the first answer of
/// the backend (every later answer is a 200 with `grpc-status: 0`), and what the client gets.
struct RetryCase {
    retry_on: &'static str,
    first: Answer,
    status: u16,
    grpc_status: Option<&'static str>,
    requests: usize,
}

fn case(retry_on: &'static str, first: Answer, status: u16, requests: usize) -> RetryCase {
    RetryCase {
        retry_on,
        first,
        status,
        grpc_status: None,
        requests,
    }
}

fn grpc_case(
    retry_on: &'static str,
    first_grpc: &'static str,
    grpc_status: &'static str,
    requests: usize,
) -> RetryCase {
    RetryCase {
        retry_on,
        first: Answer::ok()
            .header("content-type", "application/grpc")
            .header("grpc-status", first_grpc),
        status: 200,
        grpc_status: Some(grpc_status),
        requests,
    }
}

#[tokio::test]
async fn retry_conditions_follow_envoy() {
    let cases = [
        // gateway-error is 502, 503 and 504 only.
        case("gateway-error", Answer::status(500), 500, 1),
        case("gateway-error", Answer::status(502), 200, 2),
        case("gateway-error", Answer::status(503), 200, 2),
        case("gateway-error", Answer::status(504), 200, 2),
        case("5xx", Answer::status(500), 200, 2),
        case("5xx", Answer::status(418), 418, 1),
        // Bare numbers are retriable status codes, with or without the condition's name.
        case("418", Answer::status(418), 200, 2),
        case("retriable-status-codes,418", Answer::status(418), 200, 2),
        case("503,418", Answer::status(418), 200, 2),
        case("retriable-status-codes", Answer::status(418), 418, 1),
        // retriable-4xx is 409 only.
        case("retriable-4xx", Answer::status(409), 200, 2),
        case("retriable-4xx", Answer::status(429), 429, 1),
        case("retriable-4xx", Answer::status(503), 503, 1),
        // Connection conditions do not look at statuses.
        case("connect-failure", Answer::status(503), 503, 1),
        case("reset", Answer::status(503), 503, 1),
        // gRPC conditions read `grpc-status` of an HTTP 200.
        grpc_case("unavailable", "14", "0", 2),
        grpc_case("cancelled", "1", "0", 2),
        grpc_case("deadline-exceeded", "4", "0", 2),
        grpc_case("internal", "13", "0", 2),
        grpc_case("resource-exhausted", "8", "0", 2),
        grpc_case("cancelled", "14", "14", 1),
        grpc_case("5xx", "14", "14", 1),
        grpc_case("unavailable,cancelled", "14", "0", 2),
    ];
    let mut backends = Vec::new();
    let mut http = String::new();
    for (i, c) in cases.iter().enumerate() {
        let first = c.first.clone();
        let b = recording_backend(&format!("c{i}"), move |s| {
            if s.index == 0 {
                first.clone()
            } else {
                Answer::ok().header("grpc-status", "0")
            }
        })
        .await;
        http.push_str(&format!(
            "  - match: [{{uri: {{exact: /c{i}}}}}]
    retries: {{attempts: 2, retryOn: '{}'}}
    route: [{{destination: {{host: c{i}.internal}}}}]
",
            c.retry_on
        ));
        backends.push(b);
    }
    let hosts: Vec<String> = (0..cases.len()).map(|i| format!("c{i}.internal")).collect();
    let services: Vec<(&str, Vec<SocketAddr>)> = hosts
        .iter()
        .zip(&backends)
        .map(|(h, b)| (h.as_str(), vec![b.addr]))
        .collect();
    let g = start(&services, &http).await;
    let caller = Caller::new(&g).await;
    let mut wrong = Vec::new();
    for (i, (c, b)) in cases.iter().zip(&backends).enumerate() {
        let t = caller.get(&format!("/c{i}")).await;
        // Only gRPC cases look at `grpc-status` (every backend's second answer carries one).
        let grpc = c
            .grpc_status
            .and_then(|_| t.reply.header("grpc-status").map(str::to_string));
        let got = (t.reply.status, grpc, b.count());
        let want = (c.status, c.grpc_status.map(str::to_string), c.requests);
        if got != want {
            wrong.push(format!(
                "  retryOn {:?}, first answer {} {:?}: got (status, grpc-status, requests) {got:?}, want {want:?}",
                c.retry_on, c.first.status, c.first.headers
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn resets_are_retried_under_reset_5xx_and_gateway_error() {
    // Envoy counts a connection closed before the response as a 5xx: `reset`, `5xx` and
    // `gateway-error` retry it; `connect-failure` and `retriable-4xx` do not.
    let cases = [
        ("reset", true),
        ("5xx", true),
        ("gateway-error", true),
        ("connect-failure", false),
        ("retriable-4xx", false),
    ];
    let mut backends = Vec::new();
    let mut http = String::new();
    for (i, (retry_on, _)) in cases.iter().enumerate() {
        let b = recording_backend(&format!("r{i}"), |s| {
            if s.index == 0 {
                Answer::close()
            } else {
                Answer::ok()
            }
        })
        .await;
        http.push_str(&format!(
            "  - match: [{{uri: {{exact: /r{i}}}}}]
    retries: {{attempts: 2, retryOn: '{retry_on}'}}
    route: [{{destination: {{host: r{i}.internal}}}}]
"
        ));
        backends.push(b);
    }
    let hosts: Vec<String> = (0..cases.len()).map(|i| format!("r{i}.internal")).collect();
    let services: Vec<(&str, Vec<SocketAddr>)> = hosts
        .iter()
        .zip(&backends)
        .map(|(h, b)| (h.as_str(), vec![b.addr]))
        .collect();
    let g = start(&services, &http).await;
    let caller = Caller::new(&g).await;
    let mut wrong = Vec::new();
    for (i, ((retry_on, retried), b)) in cases.iter().zip(&backends).enumerate() {
        let t = caller.get(&format!("/r{i}")).await;
        let ok = if *retried {
            t.reply.status == 200 && b.attempts() == [Some(1), Some(2)]
        } else {
            t.reply.status == 503
                && t.reply
                    .body
                    .ends_with("reset reason: connection termination")
                && b.count() == 1
        };
        if !ok {
            wrong.push(format!(
                "  retryOn {retry_on}: {} {:?}, attempts seen {:?}",
                t.reply.status,
                t.reply.body,
                b.attempts()
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn connect_failures_are_retried_on_another_endpoint() {
    // Each route leads to a service with one refusing endpoint and one good one. Retried, every
    // request succeeds; not retried, those that picked the refusing endpoint fail.
    let cases: [(&str, Option<&str>, bool); 7] = [
        // Istio's default policy when `retries` is absent: connect-failure, 2 attempts.
        ("default", None, true),
        (
            "connect-failure",
            Some("{attempts: 1, retryOn: connect-failure}"),
            true,
        ),
        ("5xx", Some("{attempts: 1, retryOn: 5xx}"), true),
        (
            "gateway-error",
            Some("{attempts: 1, retryOn: gateway-error}"),
            true,
        ),
        ("reset", Some("{attempts: 1, retryOn: reset}"), true),
        (
            "retriable-4xx",
            Some("{attempts: 1, retryOn: retriable-4xx}"),
            false,
        ),
        ("attempts 0", Some("{attempts: 0}"), false),
    ];
    let refusing: Vec<RefusingPort> = cases.iter().map(|_| refusing_port()).collect();
    let mut goods = Vec::new();
    let mut http = String::new();
    for (i, (_, retries, _)) in cases.iter().enumerate() {
        goods.push(recording_backend(&format!("good{i}"), |_| Answer::ok()).await);
        http.push_str(&format!("  - match: [{{uri: {{exact: /cf{i}}}}}]\n"));
        if let Some(r) = retries {
            http.push_str(&format!("    retries: {r}\n"));
        }
        http.push_str(&format!(
            "    route: [{{destination: {{host: cf{i}.internal}}}}]\n"
        ));
    }
    let hosts: Vec<String> = (0..cases.len())
        .map(|i| format!("cf{i}.internal"))
        .collect();
    let services: Vec<(&str, Vec<SocketAddr>)> = hosts
        .iter()
        .zip(refusing.iter().zip(&goods))
        .map(|(h, (r, good))| (h.as_str(), vec![r.addr, good.addr]))
        .collect();
    let g = start(&services, &http).await;
    let caller = Caller::new(&g).await;
    const N: usize = 20;
    let mut wrong = Vec::new();
    for (i, ((name, _, retried), good)) in cases.iter().zip(&goods).enumerate() {
        let mut failed = 0;
        for _ in 0..N {
            let t = caller.get(&format!("/cf{i}")).await;
            match t.reply.status {
                200 => {}
                503 if t.reply.body.ends_with("reset reason: connection failure") => failed += 1,
                other => wrong.push(format!("  {name}: unexpected {other} {:?}", t.reply.body)),
            }
        }
        // Whether retried or not, the good endpoint answered every request that reached it once.
        let reached = good.count();
        if *retried && (failed != 0 || reached != N) {
            wrong.push(format!(
                "  {name}: {failed} of {N} failed, the good endpoint saw {reached}"
            ));
        }
        // Round robin (or any fair choice) sends some first attempts to the refusing endpoint.
        if !*retried && (failed == 0 || failed + reached != N) {
            wrong.push(format!(
                "  {name}: {failed} of {N} failed (want some, not retried), good saw {reached}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn a_retry_prefers_an_endpoint_not_tried_yet() {
    let bad = recording_backend("bad", |_| Answer::status(503)).await;
    let good = recording_backend("good", |_| Answer::ok()).await;
    let g = start(
        &[("pool.internal", vec![bad.addr, good.addr])],
        "  - retries: {attempts: 1, retryOn: 5xx}
    route: [{destination: {host: pool.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;
    const N: usize = 20;
    for i in 0..N {
        let t = caller.get("/get").await;
        assert_eq!(t.reply.status, 200, "request {i}: {t:?}");
        assert_eq!(t.reply.backend(), Some("good"));
    }
    // Every first attempt that went to the bad endpoint was retried once, on the good one.
    let retried_on_good = good.attempts().iter().filter(|a| **a == Some(2)).count();
    assert!(
        bad.count() >= 1,
        "round robin never picked the bad endpoint"
    );
    assert_eq!(good.count(), N);
    assert_eq!(
        bad.attempts().iter().filter(|a| **a == Some(1)).count(),
        bad.count()
    );
    assert_eq!(retried_on_good, bad.count());
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_another_endpoint() {
    // A slow endpoint and a fast one. With a condition covering timeouts (`5xx`) a first try on
    // the slow one is cut after 250ms and retried on the fast one. Istio's default conditions
    // do not cover timeouts: the same per-try timeout then ends the request with 504.
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(3))).await;
    let fast = recording_backend("fast", |_| Answer::ok()).await;
    let g = start(
        &[("pair.internal", vec![slow.addr, fast.addr])],
        "  - match: [{uri: {exact: /retried}}]
    retries: {attempts: 2, perTryTimeout: 250ms, retryOn: 5xx}
    route: [{destination: {host: pair.internal}}]
  - match: [{uri: {exact: /not-retried}}]
    retries: {attempts: 2, perTryTimeout: 250ms}
    route: [{destination: {host: pair.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;
    const N: usize = 8;
    for i in 0..N {
        let t = caller.get("/retried").await;
        assert_eq!(t.reply.status, 200, "request {i}: {t:?}");
        assert_eq!(t.reply.backend(), Some("fast"));
        assert!(t.took < ms(1500), "request {i} took {:?}", t.took);
    }
    let slow_first = slow.count();
    assert!(slow_first >= 1, "no first try went to the slow endpoint");
    let fast_seconds = fast.attempts().iter().filter(|a| **a == Some(2)).count();
    assert_eq!(fast_seconds, slow_first, "fast saw {:?}", fast.attempts());

    let mut timeouts = 0;
    for i in 0..N {
        let t = caller.get("/not-retried").await;
        match t.reply.status {
            200 => assert_eq!(t.reply.backend(), Some("fast")),
            504 => {
                assert_eq!(t.reply.body, "upstream request timeout");
                assert!(
                    t.took >= ms(240) && t.took < ms(1500),
                    "request {i} took {:?}",
                    t.took
                );
                timeouts += 1;
            }
            _ => panic!("request {i}: {t:?}"),
        }
    }
    assert!(timeouts >= 1, "no first try went to the slow endpoint");
    assert_eq!(slow.count(), slow_first + timeouts, "timeouts were retried");
}

#[tokio::test]
async fn request_bodies_are_replayed_on_retry_up_to_the_buffer_limit() {
    let first_fails = |name: &'static str| {
        recording_backend(name, |s| {
            if s.index == 0 {
                Answer::status(503)
            } else {
                Answer::ok()
            }
        })
    };
    let small = first_fails("small").await;
    let large = first_fails("large").await;
    let g = start(
        &[
            ("small.internal", vec![small.addr]),
            ("large.internal", vec![large.addr]),
        ],
        "  - match: [{uri: {exact: /small}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: small.internal}}]
  - match: [{uri: {exact: /large}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: large.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;

    // Within the default `--max-request-buffer-bytes` (1 MiB, Envoy's buffer limit).
    const SMALL: usize = 100 * 1024;
    let t = caller
        .send("POST", "/small", &[], Some(vec![b's'; SMALL]))
        .await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.json()["body_bytes"], SMALL);
    let sizes: Vec<usize> = small.seen().iter().map(|s| s.body_bytes).collect();
    assert_eq!(
        sizes,
        [SMALL, SMALL],
        "both attempts carried the whole body"
    );

    // Too large to keep for a replay: sent once, and the 503 reaches the client.
    const LARGE: usize = 2 * 1024 * 1024;
    let t = caller
        .send("POST", "/large", &[], Some(vec![b'l'; LARGE]))
        .await;
    assert_eq!(t.reply.status, 503, "{t:?}");
    let sizes: Vec<usize> = large.seen().iter().map(|s| s.body_bytes).collect();
    assert_eq!(sizes, [LARGE]);
}

// === Fault injection ===

#[tokio::test]
async fn fault_delay_and_abort_at_100_percent() {
    let b = recording_backend("b", |_| Answer::ok()).await;
    let g = start(
        &[("b.internal", vec![b.addr])],
        "  - match: [{uri: {exact: /delay}}]
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
    route: [{destination: {host: b.internal}}]
  - match: [{uri: {exact: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: b.internal}}]
  - match: [{uri: {exact: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: b.internal}}]
  - match: [{uri: {exact: /both}}]
    fault:
      delay: {fixedDelay: 200ms, percentage: {value: 100}}
      abort: {httpStatus: 503, percentage: {value: 100}}
    route: [{destination: {host: b.internal}}]
  - route: [{destination: {host: b.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;

    let t = caller.get("/delay").await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.backend(), Some("b"));
    assert!(t.took >= ms(300) && t.took < ms(2000), "took {:?}", t.took);
    assert_eq!(b.next().await.path, "/delay");

    let t = caller.get("/abort").await;
    assert_eq!(t.reply.status, 418, "{t:?}");
    assert_eq!(t.reply.body, "fault filter abort");
    assert!(t.took < ms(1000), "took {:?}", t.took);

    let t = caller.get("/grpc").await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.header("grpc-status"), Some("14"));
    assert_eq!(t.reply.header("content-type"), Some("application/grpc"));

    let t = caller.get("/both").await;
    assert_eq!(t.reply.status, 503, "{t:?}");
    assert_eq!(t.reply.body, "fault filter abort");
    assert!(t.took >= ms(200), "the delay comes first: {:?}", t.took);

    // Aborted requests never reached the backend: the next one it sees is this one.
    let t = caller.get("/control").await;
    assert_eq!(t.reply.status, 200);
    assert_eq!(b.next().await.path, "/control");
    assert_eq!(b.count(), 2, "{:?}", b.seen());
}

#[tokio::test]
async fn fault_percentage_aborts_about_that_share() {
    let b = recording_backend("b", |_| Answer::ok()).await;
    let g = start(
        &[("b.internal", vec![b.addr])],
        "  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
    route: [{destination: {host: b.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;
    const N: usize = 400;
    let mut aborted = 0;
    for _ in 0..N {
        let t = caller.get("/get").await;
        match t.reply.status {
            200 => {}
            503 if t.reply.body == "fault filter abort" => aborted += 1,
            _ => panic!("{t:?}"),
        }
    }
    // Binomial(400, 0.5): standard deviation 10, so 160..=240 is ±4 deviations.
    assert!((160..=240).contains(&aborted), "{aborted} of {N} aborted");
    assert_eq!(
        b.count(),
        N - aborted,
        "every request not aborted was forwarded"
    );
}

#[tokio::test]
async fn fault_for_one_user_only() {
    // Istio's fault-injection task: an abort for `end-user: jason`, nobody else.
    let b = recording_backend("ratings", |_| Answer::ok()).await;
    let g = start(
        &[("ratings.internal", vec![b.addr])],
        "  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    route: [{destination: {host: ratings.internal}}]
  - route: [{destination: {host: ratings.internal}}]
",
    )
    .await;
    let caller = Caller::new(&g).await;
    for (user, status) in [("jason", 500), ("alice", 200), ("", 200), ("Jason", 200)] {
        let headers: &[(&str, &str)] = if user.is_empty() {
            &[]
        } else {
            &[("end-user", user)]
        };
        let t = caller.send("GET", "/ratings", headers, None).await;
        assert_eq!(t.reply.status, status, "end-user {user:?}: {t:?}");
    }
    let users: Vec<Option<String>> = b
        .seen()
        .iter()
        .map(|s| s.header("end-user").map(str::to_string))
        .collect();
    assert_eq!(
        users,
        [Some("alice".to_string()), None, Some("Jason".to_string())]
    );
}

// === Mirroring ===

#[tokio::test]
async fn mirror_sends_a_shadow_copy_and_the_client_gets_the_primary_answer() {
    let primary = recording_backend("primary", |_| Answer::ok()).await;
    let shadow = recording_backend("shadow", |_| Answer::status(500)).await;
    let g = start(
        &[
            ("primary.internal", vec![primary.addr]),
            ("shadow.internal", vec![shadow.addr]),
        ],
        "  - route: [{destination: {host: primary.internal}}]
    mirror: {host: shadow.internal}
    mirrorPercentage: {value: 100}
",
    )
    .await;
    let caller = Caller::new(&g).await;
    let t = caller
        .send(
            "POST",
            "/post?x=1",
            &[("x-request-id", "mirror-1")],
            Some(vec![b'm'; 1000]),
        )
        .await;
    assert_eq!(t.reply.status, 200, "{t:?}");
    assert_eq!(t.reply.backend(), Some("primary"));
    let copy = shadow.next().await;
    assert_eq!(copy.host(), format!("{HOST}-shadow"));
    assert_eq!(copy.method, "POST");
    assert_eq!(copy.path, "/post");
    assert_eq!(copy.body_bytes, 1000);
    assert_eq!(copy.header("x-request-id"), Some("mirror-1"));
    let original = primary.next().await;
    assert_eq!(original.host(), HOST);

    // A port stays after the suffix: `host-shadow:port`.
    let t = Reply::from(
        client()
            .get(g.url(80, "/get").await)
            .header("host", format!("{HOST}:8080"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(t.status, 200);
    assert_eq!(shadow.next().await.host(), format!("{HOST}-shadow:8080"));
}

#[tokio::test]
async fn a_slow_or_refusing_mirror_does_not_affect_the_client() {
    let primary = recording_backend("primary", |_| Answer::ok()).await;
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(5))).await;
    let refusing = refusing_port();
    let g = start(
        &[
            ("primary.internal", vec![primary.addr]),
            ("slow.internal", vec![slow.addr]),
            ("refusing.internal", vec![refusing.addr]),
        ],
        "  - match: [{uri: {exact: /slow}}]
    route: [{destination: {host: primary.internal}}]
    mirror: {host: slow.internal}
  - match: [{uri: {exact: /refusing}}]
    route: [{destination: {host: primary.internal}}]
    mirror: {host: refusing.internal}
",
    )
    .await;
    let caller = Caller::new(&g).await;
    for i in 0..5 {
        let t = caller.get("/slow").await;
        assert_eq!(t.reply.status, 200, "{t:?}");
        assert_eq!(t.reply.backend(), Some("primary"));
        assert!(
            t.took < ms(1500),
            "request {i} waited for the mirror: {:?}",
            t.took
        );
        // The copy did arrive, and is still being answered.
        assert_eq!(slow.next().await.path, "/slow");
    }
    for i in 0..5 {
        let t = caller.get("/refusing").await;
        assert_eq!(t.reply.status, 200, "{t:?}");
        assert_eq!(t.reply.backend(), Some("primary"));
        assert!(t.took < ms(1500), "request {i}: {:?}", t.took);
    }
    assert_eq!(primary.count(), 10);
}

#[tokio::test]
async fn mirrors_each_copy_their_own_percentage() {
    let primary = recording_backend("primary", |_| Answer::ok()).await;
    let m1 = recording_backend("m1", |_| Answer::ok()).await;
    let m2 = recording_backend("m2", |_| Answer::ok()).await;
    let never = recording_backend("never", |_| Answer::ok()).await;
    let g = start(
        &[
            ("primary.internal", vec![primary.addr]),
            ("m1.internal", vec![m1.addr]),
            ("m2.internal", vec![m2.addr]),
            ("never.internal", vec![never.addr]),
        ],
        "  - route: [{destination: {host: primary.internal}}]
    mirrors:
    - {destination: {host: m1.internal}, percentage: {value: 50}}
    - {destination: {host: m2.internal}, percentage: {value: 50}}
    - {destination: {host: never.internal}, percentage: {value: 0}}
",
    )
    .await;
    let caller = Caller::new(&g).await;
    const N: usize = 200;
    for i in 0..N {
        let t = caller
            .send(
                "GET",
                "/get",
                &[("x-request-id", &format!("req-{i}"))],
                None,
            )
            .await;
        assert_eq!(t.reply.backend(), Some("primary"), "{t:?}");
    }
    // Binomial(200, 0.5): standard deviation 7.1; 60..=140 is over ±5.6 deviations. Copies
    // travel on their own: wait for the lower bound, then until the counts settle.
    for m in [&m1, &m2] {
        m.wait_count(60).await;
    }
    let deadline = Instant::now() + WAIT;
    let mut last = (m1.count(), m2.count());
    loop {
        tokio::time::sleep(ms(200)).await;
        let now = (m1.count(), m2.count());
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    for m in [&m1, &m2] {
        let n = m.count();
        assert!((60..=140).contains(&n), "{} copied {n} of {N}", m.name);
        // Only copies of client requests, each at most once, all with the shadow host.
        let seen = m.seen();
        let mut ids: Vec<&str> = seen
            .iter()
            .map(|s| s.header("x-request-id").unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{} got a request twice", m.name);
        assert!(seen.iter().all(|s| s.host() == format!("{HOST}-shadow")));
    }
    assert_eq!(primary.count(), N);
    assert_eq!(never.count(), 0, "a 0% mirror got copies");
}

#[tokio::test]
async fn route_timeout_also_bounds_a_response_body_that_stalls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Headers and a first chunk at once, then nothing: the body never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let g = start(
        &[("stall.internal", vec![addr])],
        "  - timeout: 0.5s\n    route: [{destination: {host: stall.internal}}]\n",
    )
    .await;
    let began = std::time::Instant::now();
    let resp = client()
        .get(g.url(80, "/").await)
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the gateway ends the body");
    assert!(
        body.is_err(),
        "the stalled body is cut, not completed: {body:?}"
    );
    let took = began.elapsed();
    assert!(
        took >= ms(450) && took < ms(3000),
        "cut after {took:?}, want about 500ms"
    );
}
