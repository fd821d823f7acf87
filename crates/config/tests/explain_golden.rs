//! Golden tests of `isthmus explain` on Istio's Bookinfo request routing by `end-user`
//! (the acceptance manifest, verbatim), as text and as the JSON structure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use isthmus_api::load::load_str;
use isthmus_config::explain::{Request, RequestSpec, explain};
use isthmus_config::{Instance, LastGood, Snapshot, build};

const TASK: &str = "request-routing-header-end-user";

/// Kubernetes would provide the `reviews` Service; a ServiceEntry with one endpoint per version
/// stands in for it, as in the end-to-end replay of the task.
const REVIEWS_SERVICE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-local, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.1.0.1, labels: {version: v1}}
  - {address: 10.1.0.2, labels: {version: v2}}
  - {address: 10.1.0.3, labels: {version: v3}}
";

fn bookinfo() -> Snapshot {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/acceptance-data/istio")
        .join(TASK)
        .join("config.yaml");
    let task = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("acceptance data missing at {}: {e}", path.display()));
    // The file name stays relative so that the golden text does not depend on the machine.
    let text = format!("{task}\n---\n{REVIEWS_SERVICE}");
    let loaded = load_str(&format!("{TASK}/config.yaml"), &text).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    assert!(
        b.diagnostics.iter().all(|d| !d.is_error()),
        "{:#?}",
        b.diagnostics
    );
    b.snapshot
}

fn reviews(user: Option<&str>) -> Request {
    let headers: Vec<String> = user.map(|u| format!("end-user: {u}")).into_iter().collect();
    Request::parse(&RequestSpec {
        url: "http://reviews.default.svc.cluster.local/reviews/0",
        method: None,
        headers: &headers,
        sni: None,
    })
    .unwrap()
}

#[test]
fn jason_goes_to_reviews_v2() {
    let e = explain(&bookinfo(), &reviews(Some("jason")));
    assert!(e.routed);
    insta::assert_snapshot!("end-user-jason", e.to_text());
}

#[test]
fn everyone_else_goes_to_reviews_v1_and_the_text_says_why() {
    let e = explain(&bookinfo(), &reviews(Some("bob")));
    assert!(e.routed);
    insta::assert_snapshot!("end-user-bob", e.to_text());
    let e = explain(&bookinfo(), &reviews(None));
    insta::assert_yaml_snapshot!("end-user-absent-json", e);
}
