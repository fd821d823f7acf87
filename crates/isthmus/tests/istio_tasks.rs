//! Istio's traffic-management tasks replayed end to end: request routing, traffic shifting,
//! fault injection, request timeouts and mirroring.
//!
//! Each test loads the task's manifests from the shared acceptance data (Istio's own YAML,
//! bound to the Gateway `acceptance-gateway`) and keeps their VirtualServices and
//! DestinationRules exactly as written. Only the services are added: ServiceEntries for the
//! Bookinfo and httpbin hosts (`reviews.default.svc.cluster.local`, ...) whose endpoints are
//! local backends labelled with their version. Clients call through the gateway with the
//! service's host, as a sidecar would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use support::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
const HTTPBIN: &str = "httpbin.default.svc.cluster.local";

// === Fixtures ===

/// The manifest of an Istio task from the acceptance data, verbatim.
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

/// A ServiceEntry file for `host` with one endpoint per `(address, version)`.
fn service_entry(host: &str, endpoints: &[(SocketAddr, &str)]) -> (String, String) {
    let name = host.split('.').next().unwrap();
    (
        format!("se-{name}.yaml"),
        service(&format!("{name}-local"), host, endpoints),
    )
}

/// Starts a gateway on the task's manifest (as `task.yaml`) and the ServiceEntries; fails on
/// any error diagnostic.
async fn start_task(task_yaml: String, services: Vec<(String, String)>) -> Gateway {
    let mut files = services;
    files.push(("task.yaml".into(), task_yaml));
    let g = start_files(&files).await;
    assert_clean(&g).await;
    g
}

async fn assert_clean(g: &Gateway) {
    let errors: Vec<String> = g
        .diagnostics()
        .await
        .into_iter()
        .filter(|d| d.contains(": error:"))
        .collect();
    assert!(errors.is_empty(), "configuration errors: {errors:#?}");
}

/// Replaces the task manifest (the next step of a task) and waits until it is applied.
async fn apply(g: &Gateway, task_yaml: &str) {
    g.write("task.yaml", task_yaml).await;
    assert_clean(g).await;
}

/// Bookinfo's `reviews` with demo backends `reviews-v1`, `reviews-v2` and `reviews-v3`.
async fn reviews_service() -> (String, String) {
    let v1 = backend("reviews-v1").await;
    let v2 = backend("reviews-v2").await;
    let v3 = backend("reviews-v3").await;
    service_entry(REVIEWS, &[(v1, "v1"), (v2, "v2"), (v3, "v3")])
}

/// A request to the service `host` through Gateway port 80.
struct Call<'a> {
    client: &'a reqwest::Client,
    base: String,
    host: &'static str,
}

impl<'a> Call<'a> {
    async fn new(g: &Gateway, client: &'a reqwest::Client, host: &'static str) -> Call<'a> {
        Call {
            client,
            base: g.url(80, "").await,
            host,
        }
    }

    /// `GET path` as `user` (the `end-user` header Bookinfo's productpage sets), if any.
    async fn get(&self, path: &str, user: Option<&str>) -> reqwest::Result<Reply> {
        let mut rb = self
            .client
            .get(format!("{}{path}", self.base))
            .header("host", self.host);
        if let Some(u) = user {
            rb = rb.header("end-user", u);
        }
        Ok(Reply::from(rb.send().await?).await)
    }

    /// The answering backend of `n` GETs (or the status when none answered), counted.
    async fn tally(&self, n: usize, user: Option<&str>) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let r = self.get("/reviews/0", user).await.unwrap();
            let key = match (r.status, r.backend()) {
                (200, Some(b)) => b.to_string(),
                (s, _) => s.to_string(),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }
}

fn only(backend: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(backend.to_string(), n)])
}

/// Share of `key` in `counts`, which must hold nothing but `keys`.
fn share(counts: &BTreeMap<String, usize>, key: &str, keys: &[&str]) -> f64 {
    assert!(
        counts.keys().all(|k| keys.contains(&k.as_str())),
        "unexpected answers: {counts:?}"
    );
    let total: usize = counts.values().sum();
    counts.get(key).copied().unwrap_or(0) as f64 / total as f64
}

// === Request routing ===

#[tokio::test]
async fn request_routing_sends_jason_to_reviews_v2() {
    // Step 1: every version of every service to v1.
    let g = start_task(
        manifest("request-routing-all-v1"),
        vec![reviews_service().await],
    )
    .await;
    let client = client();
    let reviews = Call::new(&g, &client, REVIEWS).await;
    assert_eq!(reviews.tally(20, None).await, only("reviews-v1", 20));
    assert_eq!(
        reviews.tally(10, Some("jason")).await,
        only("reviews-v1", 10)
    );

    // Step 2: the user jason to v2, everybody else still to v1.
    apply(&g, &manifest("request-routing-header-end-user")).await;
    assert_eq!(
        reviews.tally(20, Some("jason")).await,
        only("reviews-v2", 20)
    );
    assert_eq!(reviews.tally(10, None).await, only("reviews-v1", 10));
    for other in ["alice", "Jason", "jason2", ""] {
        assert_eq!(
            reviews.tally(5, Some(other)).await,
            only("reviews-v1", 5),
            "end-user {other:?}"
        );
    }
}

// === Traffic shifting ===

#[tokio::test]
async fn traffic_shifting_moves_reviews_from_v1_to_v3_in_halves() {
    let g = start_task(
        manifest("request-routing-all-v1"),
        vec![reviews_service().await],
    )
    .await;
    let client = client();
    let reviews = Call::new(&g, &client, REVIEWS).await;
    assert_eq!(reviews.tally(20, None).await, only("reviews-v1", 20));

    // 50% to v3: Binomial(400, 0.5) has a standard deviation of 2.5 points, so 40..60% is ±4.
    apply(&g, &manifest("traffic-shifting-reviews-50-v3")).await;
    let counts = reviews.tally(400, None).await;
    let v1 = share(&counts, "reviews-v1", &["reviews-v1", "reviews-v3"]);
    assert!((0.40..=0.60).contains(&v1), "v1 share {v1}: {counts:?}");

    // Then everything to v3.
    apply(&g, &manifest("traffic-shifting-reviews-v3")).await;
    assert_eq!(reviews.tally(20, None).await, only("reviews-v3", 20));
}

#[tokio::test]
async fn traffic_shifting_80_20_between_v1_and_v2() {
    let g = start_task(
        manifest("traffic-shifting-reviews-80-20"),
        vec![reviews_service().await],
    )
    .await;
    let client = client();
    let reviews = Call::new(&g, &client, REVIEWS).await;
    // Binomial(1000, 0.8): standard deviation 1.26 points; 74..86% is over ±4.7.
    let counts = reviews.tally(1000, None).await;
    let v1 = share(&counts, "reviews-v1", &["reviews-v1", "reviews-v2"]);
    assert!((0.74..=0.86).contains(&v1), "v1 share {v1}: {counts:?}");
}

// === Fault injection ===

#[tokio::test]
async fn fault_injection_delays_ratings_for_jason() {
    // The task delays jason's calls to ratings by 7s, longer than productpage's 6s budget for
    // reviews (3s + one retry). Scaled down to 1s against a client budget of 6/7 of it.
    const DELAY: Duration = Duration::from_secs(1);
    const BUDGET: Duration = Duration::from_millis(857);
    let task = edit(
        &manifest("fault-injection-delay-header"),
        "fixedDelay: 7s",
        "fixedDelay: 1s",
    );
    let v1 = backend("ratings-v1").await;
    let v2 = backend("ratings-v2").await;
    let g = start_task(
        task,
        vec![service_entry(RATINGS, &[(v1, "v1"), (v2, "v2")])],
    )
    .await;
    let patient = client();
    let ratings = Call::new(&g, &patient, RATINGS).await;

    let start = Instant::now();
    let r = ratings.get("/ratings/0", Some("jason")).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("ratings-v1"));
    assert!(
        took >= DELAY && took < DELAY * 3,
        "jason waited {took:?}, want the 1s delay"
    );
    for user in [None, Some("alice")] {
        let start = Instant::now();
        let r = ratings.get("/ratings/0", user).await.unwrap();
        assert_eq!(r.backend(), Some("ratings-v1"), "{user:?}: {r:?}");
        assert!(start.elapsed() < BUDGET, "{user:?} was delayed");
    }

    // Like productpage, a caller with a shorter budget fails for jason only.
    let hurried = reqwest::Client::builder()
        .no_proxy()
        .timeout(BUDGET)
        .build()
        .unwrap();
    let ratings = Call::new(&g, &hurried, RATINGS).await;
    let err = ratings.get("/ratings/0", Some("jason")).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let r = ratings.get("/ratings/0", Some("alice")).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn fault_injection_aborts_ratings_for_jason() {
    let v1 = recording_backend("ratings-v1", |_| Answer::ok()).await;
    let v2 = recording_backend("ratings-v2", |_| Answer::ok()).await;
    let g = start_task(
        manifest("fault-injection-abort-header"),
        vec![service_entry(RATINGS, &[(v1.addr, "v1"), (v2.addr, "v2")])],
    )
    .await;
    let client = client();
    let ratings = Call::new(&g, &client, RATINGS).await;
    for _ in 0..10 {
        let r = ratings.get("/ratings/0", Some("jason")).await.unwrap();
        assert_eq!(r.status, 500, "{r:?}");
        assert_eq!(r.body, "fault filter abort");
    }
    for user in [None, Some("alice"), Some("Jason")] {
        let r = ratings.get("/ratings/0", user).await.unwrap();
        assert_eq!(r.status, 200, "{user:?}: {r:?}");
        assert_eq!(r.backend(), Some("ratings-v1"));
    }
    // jason's requests never reached ratings; the others went to subset v1 only.
    let users: Vec<Option<String>> = v1
        .seen()
        .iter()
        .map(|s| s.header("end-user").map(str::to_string))
        .collect();
    assert_eq!(users, [None, Some("alice".into()), Some("Jason".into())]);
    assert_eq!(v2.count(), 0);
}

// === Request timeouts ===

/// Bookinfo's reviews v2 for the request-timeout task: like the real one it calls ratings
/// (here through the gateway, as through its sidecar) and answers with what ratings said.
/// Each call is signalled on `calls` when it arrives.
async fn reviews_calling_ratings(
    gateway: Arc<OnceLock<SocketAddr>>,
    calls: mpsc::UnboundedSender<()>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = client();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (gateway, calls, client) = (gateway.clone(), calls.clone(), client.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (gateway, calls, client) = (gateway.clone(), calls.clone(), client.clone());
                    async move {
                        let _ = calls.send(());
                        let gw = gateway.get().expect("gateway address not set");
                        let answer = client
                            .get(format!("http://{gw}/ratings/0"))
                            .header("host", RATINGS)
                            .send()
                            .await;
                        let said = match answer {
                            Ok(r) => format!("ratings answered {}", r.status().as_u16()),
                            Err(e) => format!("ratings failed: {e}"),
                        };
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(said)));
                        resp.headers_mut()
                            .insert("x-backend", "reviews-v2".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn request_timeout_cuts_reviews_waiting_for_delayed_ratings() {
    let gateway_addr = Arc::new(OnceLock::new());
    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    let reviews_v2 = reviews_calling_ratings(gateway_addr.clone(), calls_tx).await;
    let reviews_v1 = backend("reviews-v1").await;
    let ratings_v1 = backend("ratings-v1").await;
    let services = vec![
        service_entry(REVIEWS, &[(reviews_v1, "v1"), (reviews_v2, "v2")]),
        service_entry(RATINGS, &[(ratings_v1, "v1")]),
    ];
    let full = manifest("request-timeout-reviews-0.5s");

    // Step 1: ratings delayed by 2s, reviews without a timeout: the page is slow but works.
    let g = start_task(edit(&full, "    timeout: 0.5s\n", ""), services).await;
    gateway_addr.set(g.addr(80).await).unwrap();
    let client = client();
    let reviews = Call::new(&g, &client, REVIEWS).await;
    let start = Instant::now();
    let r = reviews.get("/reviews/0", None).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("reviews-v2"));
    assert_eq!(r.body, "ratings answered 200");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "took {took:?}, want the 2s delay"
    );
    tokio::time::timeout(WAIT, calls.recv()).await.unwrap();

    // Step 2: the 0.5s timeout on reviews answers 504 without waiting for ratings.
    apply(&g, &full).await;
    let start = Instant::now();
    let r = reviews.get("/reviews/0", None).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        took >= Duration::from_millis(480) && took < Duration::from_millis(1500),
        "took {took:?}, want about 0.5s"
    );
    // reviews v2 did get the request and was waiting on ratings.
    tokio::time::timeout(WAIT, calls.recv()).await.unwrap();
}

// === Mirroring ===

#[tokio::test]
async fn mirroring_copies_httpbin_v1_traffic_to_v2() {
    let v1 = recording_backend("httpbin-v1", |_| Answer::ok()).await;
    let v2 = recording_backend("httpbin-v2", |_| Answer::ok()).await;
    let g = start_task(
        manifest("mirroring-httpbin-v2"),
        vec![service_entry(HTTPBIN, &[(v1.addr, "v1"), (v2.addr, "v2")])],
    )
    .await;
    let client = client();
    let httpbin = Call::new(&g, &client, HTTPBIN).await;
    const N: usize = 20;
    for i in 0..N {
        let r = httpbin.get("/headers", None).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.backend(), Some("httpbin-v1"), "request {i}");
    }
    // mirrorPercent: 100, so v2 sees a copy of each request, with the `-shadow` host.
    v2.wait_count(N).await;
    let shadow = format!("{HTTPBIN}-shadow");
    assert!(
        v2.seen()
            .iter()
            .all(|s| s.host() == shadow && s.path == "/headers"),
        "{:?}",
        v2.seen()
    );
    assert_eq!(v1.count(), N);
    assert!(v1.seen().iter().all(|s| s.host() == HTTPBIN));
    // Each copy carries its request's trace context, once: the same traceparent (the
    // gateway's span) and B3 ids.
    let trace = |seen: Vec<Seen>| -> std::collections::BTreeSet<(String, String)> {
        seen.iter()
            .map(|s| {
                for name in ["traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled"] {
                    assert_eq!(s.headers.get_all(name).iter().count(), 1, "{name}: {s:?}");
                }
                let tp = s.header("traceparent").unwrap().to_string();
                (tp, s.header("x-b3-traceid").unwrap().to_string())
            })
            .collect()
    };
    let (main, shadow) = (trace(v1.seen()), trace(v2.seen()));
    assert_eq!(main.len(), N, "one trace per request: {main:?}");
    assert_eq!(main, shadow);
}
