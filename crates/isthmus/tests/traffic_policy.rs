//! DestinationRule traffic policy end to end: balancers, consistent hashing, circuit
//! breakers, outlier detection, active health checks and locality failover, with backends
//! that can be made to fail, stall or go away.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A backend whose answer status can be switched, and which can be stopped (connections
/// refused, open ones closed) and started again on the same port.
struct Switchable {
    name: String,
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    task: Option<JoinHandle<()>>,
}

impl Switchable {
    async fn new(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = Switchable {
            name: name.to_string(),
            addr,
            status: Arc::new(AtomicU16::new(200)),
            task: None,
        };
        s.serve(listener);
        s
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, status) = (self.name.clone(), self.status.clone());
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, status) = (name.clone(), status.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let name = name.clone();
                        let code = status.load(Ordering::Relaxed);
                        async move {
                            if let Some(s) = req.uri().path().strip_prefix("/delay/") {
                                let secs: f64 = s.parse().unwrap_or(0.0);
                                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                            }
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(name.clone()),
                            ));
                            *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            resp.headers_mut()
                                .insert("x-backend", http::HeaderValue::from_str(&name).unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        }));
    }

    fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }

    /// Stops listening and closes every open connection.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) {
        let listener = loop {
            // The aborted task drops its listener asynchronously; bounded retry.
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        self.serve(listener);
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A ServiceEntry `svc.internal` with `(addr, weight, locality)` endpoints.
fn service_entry(endpoints: &[(SocketAddr, u32, &str)]) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: default}\nspec:\n  hosts: [svc.internal]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints:\n",
    );
    for (addr, weight, locality) in endpoints {
        s.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, weight: {weight}",
            addr.ip(),
            addr.port()
        ));
        if !locality.is_empty() {
            s.push_str(&format!(", locality: {locality}"));
        }
        s.push_str("}\n");
    }
    s
}

/// A DestinationRule for `svc.internal` with `policy` as the trafficPolicy (YAML flow map),
/// and extra metadata lines (annotations).
fn rule(policy: &str, annotations: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc\n  namespace: default\n{annotations}spec:\n  host: svc.internal\n  trafficPolicy: {policy}\n"
    )
}

async fn start(endpoints: &[(SocketAddr, u32, &str)], policy: &str, extra: &[&str]) -> Gateway {
    start_annotated(endpoints, policy, "", extra).await
}

async fn start_annotated(
    endpoints: &[(SocketAddr, u32, &str)],
    policy: &str,
    annotations: &str,
    extra: &[&str],
) -> Gateway {
    let gw = gateway(&[(80, &["*"])]);
    let se = service_entry(endpoints);
    let vs = virtual_service(
        "vs",
        "default",
        &["*"],
        &["gw"],
        &http_routes(&[("", "svc.internal")]),
    );
    let dr = rule(policy, annotations);
    Gateway::start_with(
        &[
            ("gw.yaml", &gw),
            ("se.yaml", &se),
            ("vs.yaml", &vs),
            ("dr.yaml", &dr),
        ],
        extra,
    )
    .await
}

/// Which backend answered each of `n` sequential requests, with `headers`.
async fn tally(url: &str, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = get(url, "svc.example.com", headers).await;
        let who = r.header("x-backend").unwrap_or("-").to_string();
        *out.entry(format!("{}:{who}", r.status)).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn round_robin_follows_the_endpoint_weights_exactly() {
    let (a, b, c) = (
        Switchable::new("a").await,
        Switchable::new("b").await,
        Switchable::new("c").await,
    );
    let g = start(
        &[(a.addr, 1, ""), (b.addr, 1, ""), (c.addr, 2, "")],
        "{loadBalancer: {simple: ROUND_ROBIN}}",
        &[],
    )
    .await;
    let counts = tally(&g.url(80, "/").await, 40, &[]).await;
    assert_eq!(
        counts,
        BTreeMap::from([
            ("200:a".into(), 10),
            ("200:b".into(), 10),
            ("200:c".into(), 20)
        ]),
        "{}",
        g.log()
    );
}

#[tokio::test]
async fn least_request_and_random_spread_over_every_endpoint() {
    let (a, b) = (Switchable::new("a").await, Switchable::new("b").await);
    for policy in [
        "{loadBalancer: {simple: LEAST_REQUEST}}",
        "{loadBalancer: {simple: RANDOM}}",
    ] {
        let g = start(&[(a.addr, 1, ""), (b.addr, 1, "")], policy, &[]).await;
        let counts = tally(&g.url(80, "/").await, 200, &[]).await;
        // Each endpoint's share of 200 draws is 100 ± 5σ (σ ≈ 7).
        for who in ["200:a", "200:b"] {
            let n = counts.get(who).copied().unwrap_or(0);
            assert!((65..=135).contains(&n), "{policy}: {counts:?}");
        }
    }
}

#[tokio::test]
async fn least_request_avoids_an_endpoint_busy_with_slow_requests() {
    let (a, b) = (Switchable::new("a").await, Switchable::new("b").await);
    let g = start(
        &[(a.addr, 1, ""), (b.addr, 1, "")],
        "{loadBalancer: {simple: LEAST_REQUEST}}",
        &[],
    )
    .await;
    let url = g.url(80, "/").await;
    // Eight slow requests in flight spread over both; then quick ones go where fewer are.
    let slow_url = g.url(80, "/delay/2").await;
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let u = slow_url.clone();
            tokio::spawn(async move { get(&u, "svc.example.com", &[]).await })
        })
        .collect();
    // Whatever the split of the slow ones, quick requests must all succeed.
    let counts = tally(&url, 20, &[]).await;
    assert_eq!(counts.values().sum::<usize>(), 20);
    assert!(counts.keys().all(|k| k.starts_with("200:")), "{counts:?}");
    for s in slow {
        let r = s.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}\n{}", g.log());
    }
}

/// Backend per user for `users` hashed by the `x-user` header.
async fn placement(url: &str, users: usize) -> Vec<String> {
    let mut out = Vec::new();
    for u in 0..users {
        let user = format!("user-{u}");
        let r = get(url, "svc.example.com", &[("x-user", user.as_str())]).await;
        assert_eq!(r.status, 200);
        out.push(r.header("x-backend").unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn consistent_hash_keeps_keys_and_moves_few_when_an_endpoint_joins() {
    for hash in [
        "ringHash: {minimumRingSize: 1024}",
        "maglev: {tableSize: 65537}",
    ] {
        let backends = [
            Switchable::new("a").await,
            Switchable::new("b").await,
            Switchable::new("c").await,
            Switchable::new("d").await,
        ];
        let policy =
            format!("{{loadBalancer: {{consistentHash: {{httpHeaderName: x-user, {hash}}}}}}}");
        let three: Vec<_> = backends[..3].iter().map(|b| (b.addr, 1, "")).collect();
        let g = start(&three, &policy, &[]).await;
        let url = g.url(80, "/").await;
        let first = placement(&url, 120).await;
        assert_eq!(placement(&url, 120).await, first, "{hash}: keys stick");
        let used: std::collections::BTreeSet<_> = first.iter().collect();
        assert_eq!(used.len(), 3, "{hash}: every endpoint gets keys");

        let four: Vec<_> = backends.iter().map(|b| (b.addr, 1, "")).collect();
        let before = g.generation().await;
        g.write("se.yaml", &service_entry(&four)).await;
        g.wait_generation_after(before).await;
        let after = placement(&url, 120).await;
        let moved = first.iter().zip(&after).filter(|(x, y)| x != y).count();
        // Ideally a quarter move (30 of 120); every moved key goes to the new endpoint.
        assert!(
            (10..=55).contains(&moved),
            "{hash}: {moved} of 120 keys moved"
        );
        // Ring hash moves keys only to the new endpoint; Maglev nearly so (its table is
        // refilled, so a few keys change between old endpoints).
        let elsewhere = first
            .iter()
            .zip(&after)
            .filter(|(x, y)| x != y && y.as_str() != "d")
            .count();
        let allowed = if hash.starts_with("ring") { 0 } else { 8 };
        assert!(
            elsewhere <= allowed,
            "{hash}: {elsewhere} keys moved between old endpoints"
        );
    }
}

#[tokio::test]
async fn a_hash_cookie_is_generated_and_then_sticks() {
    let backends = [
        Switchable::new("a").await,
        Switchable::new("b").await,
        Switchable::new("c").await,
    ];
    let eps: Vec<_> = backends.iter().map(|b| (b.addr, 1, "")).collect();
    let g = start(
        &eps,
        "{loadBalancer: {consistentHash: {httpCookie: {name: affinity, path: /, ttl: 60s}}}}",
        &[],
    )
    .await;
    let url = g.url(80, "/").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let first = get(&url, "svc.example.com", &[]).await;
        let cookie = first
            .header("set-cookie")
            .expect("a generated cookie")
            .to_string();
        assert!(cookie.starts_with("affinity=\""), "{cookie}");
        assert!(
            cookie.contains("Max-Age=60")
                && cookie.contains("Path=/")
                && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().unwrap().to_string();
        let who = first.header("x-backend").unwrap().to_string();
        for _ in 0..5 {
            let r = get(&url, "svc.example.com", &[("cookie", pair.as_str())]).await;
            assert_eq!(r.header("x-backend"), Some(who.as_str()), "{pair}");
            assert!(r.header("set-cookie").is_none());
        }
        seen.insert(who);
    }
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn circuit_breaker_overflow_answers_503_with_x_envoy_overloaded() {
    // Istio's circuit-breaking task: one connection, one pending request.
    let a = Switchable::new("a").await;
    let g = start(
        &[(a.addr, 1, "")],
        "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}}",
        &[],
    )
    .await;
    let url = g.url(80, "/delay/1").await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let u = url.clone();
            tokio::spawn(async move { get(&u, "svc.example.com", &[]).await })
        })
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{r:?}");
                assert!(r.body.contains("overflow"), "{r:?}");
                overflow += 1;
            }
            s => panic!("unexpected {s}: {r:?}"),
        }
    }
    assert!(
        ok >= 2,
        "one connection and one pending request get through: {ok} ok"
    );
    assert!(overflow >= 1, "{ok} ok, {overflow} overflowed\n{}", g.log());
    let metrics = g.prometheus().await;
    assert!(
        metric_sum(
            &metrics,
            "istio_requests_total",
            &[("response_code", "503"), ("response_flags", "UO")]
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_and_takes_it_back() {
    let (a, b) = (Switchable::new("a").await, Switchable::new("b").await);
    let g = start(
        &[(a.addr, 1, ""), (b.addr, 1, "")],
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 4s, maxEjectionPercent: 100}}",
        &[],
    )
    .await;
    let url = g.url(80, "/").await;
    b.set_status(503);
    let started = Instant::now();
    let mut failed = 0;
    // Round robin alternates, so b's two failures come within four requests; then b is out.
    for _ in 0..4 {
        if get(&url, "svc.example.com", &[]).await.status == 503 {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 2,
        "exactly consecutive5xxErrors failures before the ejection"
    );
    let ejected_after = started.elapsed();
    let counts = tally(&url, 10, &[]).await;
    assert_eq!(
        counts,
        BTreeMap::from([("200:a".into(), 10)]),
        "{}",
        g.log()
    );
    eprintln!("outlier detection: {failed} failed requests, ejected after {ejected_after:?}");
    // Healthy again, it returns when its ejection time is over.
    b.set_status(200);
    eventually("the ejected endpoint takes traffic again", || async {
        get(&url, "svc.example.com", &[]).await.header("x-backend") == Some("b")
    })
    .await;
}

#[tokio::test]
async fn health_checks_take_a_dead_endpoint_out_and_back_in() {
    let a = Switchable::new("a").await;
    let mut b = Switchable::new("b").await;
    let annotations = "  annotations:\n    isthmus.io/health-check: |\n      http: {path: /healthz, expectedStatuses: [200]}\n      interval: 100ms\n      timeout: 500ms\n      unhealthyThreshold: 2\n      healthyThreshold: 1\n";
    let g = start_annotated(
        &[(a.addr, 1, ""), (b.addr, 1, "")],
        "{loadBalancer: {simple: ROUND_ROBIN}}",
        annotations,
        &[],
    )
    .await;
    let url = g.url(80, "/").await;
    eventually("both endpoints pass their first check", || async {
        let c = tally(&url, 4, &[]).await;
        c.get("200:a") == Some(&2) && c.get("200:b") == Some(&2)
    })
    .await;
    b.stop();
    let started = Instant::now();
    let mut failed = 0;
    loop {
        let c = tally(&url, 2, &[]).await;
        failed += c
            .iter()
            .filter(|(k, _)| !k.starts_with("200:"))
            .map(|(_, n)| n)
            .sum::<usize>();
        if c.get("200:a") == Some(&2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{c:?}\n{}",
            g.log()
        );
    }
    eprintln!(
        "health checks: {failed} failed requests, out after {:?}",
        started.elapsed()
    );
    assert_eq!(
        tally(&url, 10, &[]).await,
        BTreeMap::from([("200:a".into(), 10)])
    );
    b.restart().await;
    eventually("the endpoint passes again and takes traffic", || async {
        get(&url, "svc.example.com", &[]).await.header("x-backend") == Some("b")
    })
    .await;
}

#[tokio::test]
async fn tcp_health_checks_and_an_annotation_error_names_its_line() {
    let a = Switchable::new("a").await;
    let annotations = "  annotations:\n    isthmus.io/health-check: '{tcp: {}, interval: 1s, unhealthyThreshold: 0}'\n";
    let g = start_annotated(
        &[(a.addr, 1, "")],
        "{loadBalancer: {simple: RANDOM}}",
        annotations,
        &[],
    )
    .await;
    let diags = g.diagnostics().await;
    assert!(
        diags.iter().any(|d| d.contains("dr.yaml:")
            && d.contains("isthmus.io/health-check")
            && d.contains("unhealthyThreshold must be at least 1")),
        "{diags:?}"
    );
}

#[tokio::test]
async fn locality_failover_serves_locally_then_from_the_failover_region_then_locally_again() {
    let east = Switchable::new("east").await;
    let west = Switchable::new("west").await;
    let eu = Switchable::new("eu").await;
    let g = start(
        &[(east.addr, 1, "us-east/a"), (west.addr, 1, "us-west/b"), (eu.addr, 1, "eu/c")],
        "{loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: eu}]}}, outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 100}}",
        &["--locality", "us-east/a/x"],
    )
    .await;
    let url = g.url(80, "/").await;
    assert_eq!(
        tally(&url, 20, &[]).await,
        BTreeMap::from([("200:east".into(), 20)])
    );
    east.set_status(503);
    let started = Instant::now();
    let first = get(&url, "svc.example.com", &[]).await;
    assert_eq!(
        first.status, 503,
        "the first failure ejects the local endpoint"
    );
    let r = get(&url, "svc.example.com", &[]).await;
    eprintln!(
        "locality failover: 1 failed request, served elsewhere after {:?}",
        started.elapsed()
    );
    assert_eq!(
        r.header("x-backend"),
        Some("eu"),
        "failover goes to the configured region"
    );
    assert_eq!(
        tally(&url, 20, &[]).await,
        BTreeMap::from([("200:eu".into(), 20)])
    );
    east.set_status(200);
    eventually("traffic returns to the local region", || async {
        get(&url, "svc.example.com", &[]).await.header("x-backend") == Some("east")
    })
    .await;
    assert_eq!(
        tally(&url, 10, &[]).await,
        BTreeMap::from([("200:east".into(), 10)])
    );
}

#[tokio::test]
async fn without_outlier_detection_locality_does_not_split_traffic() {
    // Istio applies locality failover only with outlier detection: all endpoints share.
    let east = Switchable::new("east").await;
    let eu = Switchable::new("eu").await;
    let g = start(
        &[(east.addr, 1, "us-east/a"), (eu.addr, 1, "eu/c")],
        "{loadBalancer: {simple: ROUND_ROBIN}}",
        &["--locality", "us-east/a"],
    )
    .await;
    let counts = tally(&g.url(80, "/").await, 10, &[]).await;
    assert_eq!(
        counts,
        BTreeMap::from([("200:east".into(), 5), ("200:eu".into(), 5)])
    );
}

#[tokio::test]
async fn distribute_sends_shares_by_locality() {
    let east = Switchable::new("east").await;
    let west = Switchable::new("west").await;
    let g = start(
        &[(east.addr, 1, "us-east/a"), (west.addr, 1, "us-west/b")],
        "{loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {distribute: [{from: 'us-east/*', to: {'us-east/*': 80, 'us-west/*': 20}}]}}}",
        &["--locality", "us-east/a"],
    )
    .await;
    let counts = tally(&g.url(80, "/").await, 50, &[]).await;
    assert_eq!(
        counts,
        BTreeMap::from([("200:east".into(), 40), ("200:west".into(), 10)])
    );
}

#[tokio::test]
async fn endpoint_state_survives_a_reload_that_keeps_the_endpoint() {
    let (a, b) = (Switchable::new("a").await, Switchable::new("b").await);
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 60s, maxEjectionPercent: 100}}";
    let g = start(&[(a.addr, 1, ""), (b.addr, 1, "")], policy, &[]).await;
    let url = g.url(80, "/").await;
    b.set_status(503);
    let _ = tally(&url, 2, &[]).await;
    assert_eq!(
        tally(&url, 6, &[]).await,
        BTreeMap::from([("200:a".into(), 6)])
    );
    // A reload that changes something else keeps b ejected.
    let before = g.generation().await;
    g.write(
        "vs2.yaml",
        &virtual_service(
            "other",
            "default",
            &["other.example.com"],
            &["gw"],
            &http_routes(&[("", "svc.internal")]),
        ),
    )
    .await;
    g.wait_generation_after(before).await;
    assert_eq!(
        tally(&url, 6, &[]).await,
        BTreeMap::from([("200:a".into(), 6)])
    );
}

#[tokio::test]
async fn a_new_endpoint_warms_up_before_taking_its_full_share() {
    let (a, b, c) = (
        Switchable::new("a").await,
        Switchable::new("b").await,
        Switchable::new("c").await,
    );
    let policy =
        "{loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 4s, minimumPercent: 10}}}";
    let g = start(&[(a.addr, 10, ""), (b.addr, 10, "")], policy, &[]).await;
    let url = g.url(80, "/").await;
    // The first endpoints take full traffic at once.
    let counts = tally(&url, 20, &[]).await;
    assert_eq!(
        counts,
        BTreeMap::from([("200:a".into(), 10), ("200:b".into(), 10)])
    );
    let before = g.generation().await;
    let three = [(a.addr, 10, ""), (b.addr, 10, ""), (c.addr, 10, "")];
    g.write("se.yaml", &service_entry(&three)).await;
    g.wait_generation_after(before).await;
    let early = tally(&url, 42, &[]).await;
    let c_early = early.get("200:c").copied().unwrap_or(0);
    // At full weight c would take a third (14 of 42); early in its warmup far less.
    assert!(c_early <= 9, "{early:?}");
    eventually("the new endpoint reaches its full share", || async {
        let c = tally(&url, 30, &[]).await;
        c.get("200:c") == Some(&10)
    })
    .await;
}
