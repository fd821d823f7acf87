//! The admin server end to end against a running gateway: every endpoint in its formats,
//! `/clusters` through an outlier ejection and with requests in flight, `/logging` changing
//! what the log shows, `POST /drain` and the process exit, `/config_dump`'s resource versions
//! and diagnostics, and `/stats/summary` while traffic flows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// `POST path` on the admin server with `body`, and an `Origin` header if given.
async fn admin_post(g: &Gateway, path: &str, body: &str, origin: Option<&str>) -> (u16, String) {
    let mut req = client()
        .post(format!("http://{}{path}", g.admin))
        .body(body.to_string());
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn admin_json(g: &Gateway, path: &str) -> Value {
    let (status, body) = g.admin_get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

/// Gateway, ServiceEntry `svc.internal` with `endpoints`, a VirtualService sending every host
/// to it, and a DestinationRule with `policy` (a YAML flow map) when it is not empty.
async fn start_service(endpoints: &[SocketAddr], policy: &str) -> Gateway {
    let with_versions: Vec<(SocketAddr, &str)> = endpoints.iter().map(|a| (*a, "v1")).collect();
    let mut files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("svc", "svc.internal", &with_versions),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &["svc.example.com"],
                &["gw"],
                &http_routes(&[("", "svc.internal")]),
            ),
        ),
    ];
    if !policy.is_empty() {
        files.push((
            "dr.yaml".to_string(),
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc, namespace: default}}\nspec:\n  host: svc.internal\n  trafficPolicy: {policy}\n"
            ),
        ));
    }
    start_files(&files).await
}

/// The `/clusters` entry of `svc.internal`.
async fn svc_cluster(g: &Gateway) -> Value {
    let all = admin_json(g, "/clusters").await;
    all["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "svc.internal")
        .cloned()
        .unwrap_or_else(|| panic!("no svc.internal cluster: {all}"))
}

fn endpoint(cluster: &Value, addr: SocketAddr) -> &Value {
    cluster["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no endpoint {addr}: {cluster}"))
}

#[tokio::test]
async fn clusters_show_limits_health_and_an_outlier_ejection() {
    let good = backend("good").await;
    let bad = recording_backend("bad", |_| Answer::status(503)).await;
    let g = start_service(
        &[good, bad.addr],
        "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http1MaxPendingRequests: 3, http2MaxRequests: 50, maxRetries: 2}}, outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}",
    )
    .await;

    let c = svc_cluster(&g).await;
    assert_eq!(c["load_balancer"], "round_robin", "{c}");
    assert_eq!(c["outlier_detection"], true);
    assert_eq!(c["health_checks"], false);
    let cb = &c["circuit_breakers"];
    assert_eq!(
        (
            &cb["max_connections"],
            &cb["max_pending_requests"],
            &cb["max_requests"],
            &cb["max_retries"]
        ),
        (&7.into(), &3.into(), &50.into(), &2.into()),
        "{c}"
    );
    for addr in [good, bad.addr] {
        let e = endpoint(&c, addr);
        assert_eq!(e["health"], "healthy", "{e}");
        assert_eq!(
            (&e["weight"], &e["priority"]),
            (&1.into(), &0.into()),
            "{e}"
        );
        assert_eq!(e["active_requests"], 0);
        assert_eq!(e["ejected_for_ms"], 0);
    }

    // Round robin alternates: the bad endpoint's two 503s come within four requests.
    let url = g.url(80, "/get").await;
    let mut failures = 0;
    for _ in 0..8 {
        if get(&url, "svc.example.com", &[]).await.status == 503 {
            failures += 1;
        }
        if failures == 2 {
            break;
        }
    }
    assert_eq!(failures, 2, "{}", g.log());

    let c = svc_cluster(&g).await;
    let ejected = endpoint(&c, bad.addr);
    assert_eq!(ejected["health"], "ejected", "{c}");
    let left = ejected["ejected_for_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 30_000, "{ejected}");
    assert_eq!(ejected["ejections"], 1);
    assert_eq!(endpoint(&c, good)["health"], "healthy");

    let (status, text) = g.admin_get("/clusters?format=text").await;
    assert_eq!(status, 200);
    let line = text
        .lines()
        .find(|l| l.contains(&bad.addr.to_string()))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("ejected for "), "{text}");
    assert!(text.contains("lb round_robin"), "{text}");
    // Connections stay open in the pool; requests and retries are over.
    assert!(
        text.contains("/7  pending 0/3  requests 0/50  retries 0/2"),
        "{text}"
    );
    let good_line = text
        .lines()
        .find(|l| l.contains(&good.to_string()))
        .unwrap();
    assert!(
        good_line.contains("weight 1  priority 0  healthy  active 0"),
        "{text}"
    );
}

#[tokio::test]
async fn clusters_count_requests_in_flight() {
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(2))).await;
    let g = start_service(
        &[slow.addr],
        "{connectionPool: {http: {http2MaxRequests: 10}}}",
    )
    .await;
    let url = g.url(80, "/slow").await;
    let pending = tokio::spawn(async move { get(&url, "svc.example.com", &[]).await.status });
    slow.next().await;
    let c = svc_cluster(&g).await;
    assert_eq!(endpoint(&c, slow.addr)["active_requests"], 1, "{c}");
    assert_eq!(c["circuit_breakers"]["requests"], 1, "{c}");
    assert_eq!(c["load_balancer"], "least_request", "Istio's default");
    assert_eq!(pending.await.unwrap(), 200);
    eventually("the request is no longer counted", || async {
        let c = svc_cluster(&g).await;
        endpoint(&c, slow.addr)["active_requests"] == 0 && c["circuit_breakers"]["requests"] == 0
    })
    .await;
}

#[tokio::test]
async fn logging_shows_and_changes_the_filter() {
    let dead = refusing_port();
    let g = start_service(&[dead.addr], "").await;
    let (status, body) = g.admin_get("/logging").await;
    assert_eq!((status, body.as_str()), (200, "info\n"));
    let url = g.url(80, "/").await;
    assert_eq!(get(&url, "svc.example.com", &[]).await.status, 503);
    assert!(
        !g.log().contains("upstream connect failed"),
        "debug lines are off at info"
    );

    let (status, body) = admin_post(&g, "/logging?level=info,isthmus_proxy=debug", "", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "isthmus_proxy=debug,info\n");
    assert_eq!(g.admin_get("/logging").await.1, body);
    assert_eq!(get(&url, "svc.example.com", &[]).await.status, 503);
    eventually("a debug line of the proxy in the log", || async {
        g.log()
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("upstream connect failed"))
    })
    .await;

    // Refused filters leave the current one in place.
    for (query, body, why) in [
        ("?level=debgu", "", "not a level"),
        ("", "isthmus_proxy=loud", "invalid log filter"),
        ("", "", "give the filter"),
    ] {
        let (status, answer) = admin_post(&g, &format!("/logging{query}"), body, None).await;
        assert_eq!(status, 400, "{query} {body}: {answer}");
        assert!(answer.contains(why), "{answer}");
    }
    assert_eq!(
        g.admin_get("/logging").await.1,
        "isthmus_proxy=debug,info\n"
    );

    // Lowered to warn (sent in the body this time), info lines stop.
    let (status, body) = admin_post(&g, "/logging", "warn", None).await;
    assert_eq!((status, body.as_str()), (200, "warn\n"));
    let applied = |log: String| log.matches("configuration applied").count();
    let before = applied(g.log());
    g.write(
        "extra.yaml",
        &gateway(&[(81, &["*"])]).replace("name: gw", "name: gw2"),
    )
    .await;
    assert_eq!(applied(g.log()), before, "{}", g.log());
}

#[tokio::test]
async fn post_drain_fails_readiness_finishes_requests_and_exits_zero() {
    // Long enough for the checks below to finish while it is in flight, on a loaded machine.
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(3))).await;
    let mut g = start_service(&[slow.addr], "").await;
    let addr = g.addr(80).await;
    let url = g.url(80, "/slow").await;
    let in_flight = tokio::spawn(async move { get(&url, "svc.example.com", &[]).await.status });
    slow.next().await;

    let (status, body) = admin_post(&g, "/drain", "", None).await;
    assert_eq!((status, body.as_str()), (202, "draining\n"));
    let (status, body) = g.admin_get("/healthz/ready").await;
    assert_eq!((status, body.as_str()), (503, "DRAINING\n"));
    assert_eq!(
        admin_post(&g, "/drain", "", None).await,
        (202, "already draining\n".into())
    );
    eventually("the listener stops accepting", || refused(addr)).await;
    assert!(g.is_running(), "it waits for the request in flight");

    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the request in flight finishes"
    );
    assert_eq!(g.exit_code_within(WAIT).await, Some(0), "{}", g.log());
    assert!(g.log().contains("drain requested through the admin server"));
}

#[tokio::test]
async fn config_dump_lists_resource_versions_and_diagnostics() {
    let b = backend("b").await;
    let vs = virtual_service(
        "vs",
        "default",
        &["svc.example.com"],
        &["gw"],
        &http_routes(&[("", "svc.internal")]),
    )
    .replace("  http:\n", "  bogusField: 1\n  http:\n");
    let g = Gateway::start(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        ("svc.yaml", &service("svc", "svc.internal", &[(b, "v1")])),
        ("vs.yaml", &vs),
    ])
    .await;
    let dump = g.config_dump().await;
    assert!(dump["snapshot"]["listeners"].is_object(), "{dump}");
    let resources = dump["resources"].as_array().unwrap().clone();
    let find = |list: &[Value], kind: &str| -> Value {
        list.iter()
            .find(|r| r["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {list:?}"))
    };
    assert_eq!(resources.len(), 3, "{resources:?}");
    let gw = find(&resources, "Gateway");
    assert_eq!(
        (&gw["namespace"], &gw["name"]),
        (&"default".into(), &"gw".into())
    );
    assert!(gw["file"].as_str().unwrap().ends_with("gw.yaml"), "{gw}");
    assert_eq!(gw["line"], 1);
    assert_eq!(gw["version"].as_str().unwrap().len(), 16, "{gw}");
    let generation = dump["generation"].as_u64().unwrap();
    assert_eq!(gw["generation"], generation);

    let details = dump["diagnostic_details"].as_array().unwrap();
    let unknown = details
        .iter()
        .find(|d| d["message"].as_str().unwrap().contains("bogusField"))
        .unwrap_or_else(|| panic!("{details:?}"));
    assert_eq!(unknown["severity"], "warning");
    assert!(unknown["file"].as_str().unwrap().ends_with("vs.yaml"));
    assert_eq!(unknown["line"], line_of(&vs, "bogusField"));
    assert_eq!(
        dump["diagnostics"].as_array().unwrap().len(),
        details.len(),
        "the printed list and the detailed list agree"
    );

    // An edit changes that resource's version and generation, and no other's.
    let old_vs = find(&resources, "VirtualService");
    g.write(
        "vs.yaml",
        &vs.replace("svc.example.com'", "svc.example.com', 'other.example.com'"),
    )
    .await;
    let dump = g.config_dump().await;
    let resources = dump["resources"].as_array().unwrap().clone();
    let new_vs = find(&resources, "VirtualService");
    assert_ne!(new_vs["version"], old_vs["version"]);
    assert_eq!(new_vs["generation"], dump["generation"]);
    assert_eq!(
        find(&resources, "Gateway"),
        gw,
        "an untouched resource keeps its version"
    );
}

#[tokio::test]
async fn stats_summary_follows_traffic() {
    let b = backend("b").await;
    let g = start_service(&[b], "").await;
    let ok = g.url(80, "/get").await;
    let fail = g.url(80, "/status/503").await;
    let traffic = tokio::spawn(async move {
        loop {
            for url in [&ok, &ok, &ok, &fail] {
                get(url, "svc.example.com", &[]).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + WAIT;
    let point = loop {
        assert!(tokio::time::Instant::now() < deadline, "no rate in {last}");
        last = admin_json(&g, "/stats/summary").await;
        let svc = last["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["destination"] == "svc.internal")
            .cloned();
        let latest = svc.and_then(|s| s["points"].as_array()?.last().cloned());
        if let Some(p) = latest.filter(|p| p["rps"].as_f64().unwrap_or(0.0) > 0.0) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    traffic.abort();
    assert_eq!(last["series"][0]["destination"], "all", "{last}");
    assert_eq!(last["ready"], true);
    let errors = point["error_rate"].as_f64().unwrap();
    assert!(
        errors > 0.0 && errors < 1.0,
        "about a quarter fail: {point}"
    );
    assert!(
        point["t"].as_u64().unwrap() > 1_600_000_000_000,
        "wall clock ms"
    );
    if last["latency_histogram"] == true {
        assert!(point["p50"].as_f64().is_some(), "{point}");
        assert!(point["p99"].as_f64() >= point["p50"].as_f64(), "{point}");
    } else {
        assert!(point["p50"].is_null(), "{point}");
    }
}

#[tokio::test]
async fn every_endpoint_answers_in_its_formats() {
    let b = backend("b").await;
    let g = start_service(&[b], "").await;
    let json = [
        "/config_dump",
        "/routes",
        "/clusters",
        "/listeners",
        "/stats/summary",
    ];
    for path in json {
        admin_json(&g, path).await;
    }
    for (path, needle) in [
        ("/routes?format=text", "svc.example.com"),
        ("/clusters?format=text", "svc.internal"),
        ("/stats/prometheus", "isthmus_config_generation"),
        ("/healthz/ready", "LIVE"),
        ("/logging", "info"),
        ("/help", "POST /drain"),
    ] {
        let (status, body) = g.admin_get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    let page = client()
        .get(format!("http://{}/", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().await.unwrap().contains("dashboard.js"));
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let r = client()
            .get(format!("http://{}{path}", g.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
    }
    assert_eq!(g.admin_get("/nope").await.0, 404);
    assert_eq!(g.admin_get("/drain").await.0, 405, "draining takes a POST");
    assert_eq!(admin_post(&g, "/nope", "", None).await.0, 404);
    let put = client()
        .put(format!("http://{}/logging", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    // A page elsewhere cannot make a browser drain the gateway or change its logging.
    for path in ["/drain", "/logging?level=debug"] {
        let (status, _) = admin_post(&g, path, "", Some("http://evil.example")).await;
        assert_eq!(status, 403, "{path}");
    }
    assert_eq!(g.admin_get("/healthz/ready").await.0, 200);
    assert_eq!(g.admin_get("/logging").await.1, "info\n");
}
