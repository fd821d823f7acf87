//! The Grafana dashboard in deploy/grafana: valid JSON with a sound layout, and every metric
//! and label it queries is one the gateway exposes (read from a running gateway's
//! `/stats/prometheus`), or one of Istio's standard metrics that the gateway reports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::*;

/// Istio's standard metric names (as Prometheus stores them) that the dashboard may query
/// even where this build does not expose them yet.
const ISTIO_STANDARD: &[&str] = &[
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_duration_milliseconds_sum",
    "istio_request_duration_milliseconds_count",
    "istio_request_bytes_bucket",
    "istio_request_bytes_sum",
    "istio_request_bytes_count",
    "istio_response_bytes_bucket",
    "istio_response_bytes_sum",
    "istio_response_bytes_count",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
];

/// Labels the queries may use: Istio's standard labels, the gateway's own, the histogram
/// bucket bound and the scrape's target.
const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
    "result",
    "severity",
    "le",
    "instance",
];

/// The metrics the dashboard must show.
const REQUIRED: &[&str] = &[
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_bytes_bucket",
    "istio_response_bytes_bucket",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
    "isthmus_config_reloads_total",
    "isthmus_config_generation",
    "isthmus_config_diagnostics",
    "isthmus_downstream_connections_active",
];

fn dashboard() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/isthmus-gateway.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every PromQL expression: panel targets and query variables.
fn expressions(d: &Value) -> Vec<String> {
    let mut out: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

/// Identifiers of `expr` that name a metric (`istio_*`, `isthmus_*`).
fn metrics_in(expr: &str) -> BTreeSet<String> {
    identifiers(expr)
        .into_iter()
        .filter(|w| w.starts_with("istio_") || w.starts_with("isthmus_"))
        .collect()
}

fn identifiers(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Label names in `by (...)` clauses and `{label op "value"}` selectors.
fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        let list = part.split(')').next().unwrap();
        out.extend(list.split(',').map(|l| l.trim().to_string()));
    }
    for part in expr.split('{').skip(1) {
        let selector = part.split('}').next().unwrap();
        for matcher in selector.split(',') {
            let name = matcher.split(['=', '!']).next().unwrap().trim();
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    // `{{destination_service}}` in legends is not PromQL; exprs have none.
    out
}

/// The sample names a Prometheus scrape of `text` stores, including those of metrics
/// declared with no series yet (`# TYPE x counter` is stored as `x_total`).
fn exposed(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut it = decl.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            out.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

#[test]
fn dashboard_json_is_sound() {
    let d = dashboard();
    assert_eq!(d["uid"], "isthmus-gateway");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id at {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && g["h"].as_u64().unwrap() > 0,
            "{title} is off the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{title}: duplicate refId");
    }
    let all: BTreeSet<String> = expressions(&d).iter().flat_map(|e| metrics_in(e)).collect();
    for m in REQUIRED {
        assert!(all.contains(*m), "the dashboard does not show {m}");
    }
}

#[tokio::test]
async fn dashboard_queries_only_what_the_gateway_exposes() {
    let b = backend("b").await;
    let g = Gateway::start(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        ("svc.yaml", &service("svc", "svc.internal", &[(b, "v1")])),
        (
            "vs.yaml",
            &virtual_service(
                "vs",
                "default",
                &["*"],
                &["gw"],
                &http_routes(&[("", "svc.internal")]),
            ),
        ),
    ])
    .await;
    // A request, so that the request series exist, not only their declarations.
    assert_eq!(
        get(&g.url(80, "/get").await, "a.example.com", &[])
            .await
            .status,
        200
    );
    let text = g.prometheus().await;
    let mut known = exposed(&text);
    known.extend(ISTIO_STANDARD.iter().map(|s| s.to_string()));
    let d = dashboard();
    for expr in expressions(&d) {
        for m in metrics_in(&expr) {
            assert!(
                known.contains(&m),
                "{m} (in {expr}) is neither exposed nor an Istio standard metric; exposed:\n{text}"
            );
        }
        for l in labels_in(&expr) {
            assert!(
                LABELS.contains(&l.as_str()),
                "unknown label {l:?} in {expr}"
            );
        }
    }
    for l in [
        "reporter",
        "source_workload",
        "destination_service",
        "response_code",
        "response_flags",
    ] {
        assert!(
            text.contains(&format!("{l}=\"")),
            "the gateway does not label with {l}"
        );
    }
}

#[test]
fn helpers_read_promql_and_exposition() {
    let e = r#"sum by (destination_service, le) (rate(istio_request_duration_milliseconds_bucket{reporter="source", response_code!~"5.."}[$__rate_interval]))"#;
    assert_eq!(
        metrics_in(e).into_iter().collect::<Vec<_>>(),
        ["istio_request_duration_milliseconds_bucket"]
    );
    assert_eq!(
        labels_in(e).into_iter().collect::<Vec<_>>(),
        ["destination_service", "le", "reporter", "response_code"]
    );
    let x = exposed("# TYPE a counter\n# TYPE h histogram\ng 1\nc_total{x=\"1\"} 2\n");
    assert!(
        ["a_total", "h_bucket", "h_count", "g", "c_total"]
            .iter()
            .all(|n| x.contains(*n))
    );
}
