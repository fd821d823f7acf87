//! The Kubernetes source against an in-process fake API server speaking the real HTTP API:
//! the real kube-rs client lists, watches, resumes after disconnects and lists again after
//! 410 Gone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use isthmus_k8s::KubeSource;
use isthmus_k8s::fake::FakeApi;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(api.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn route(name: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
    })
}

/// The `Kind namespace/name` of every resource of the source, sorted.
fn keys(source: &KubeSource) -> Vec<String> {
    let mut k: Vec<String> = source
        .snapshot()
        .resources
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    k.sort();
    k
}

/// Waits for change notifications until `check` holds.
async fn until(
    source: &KubeSource,
    changes: &mut mpsc::Receiver<()>,
    check: impl Fn(&[String]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&keys(source)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, changes.recv()).await {
            Ok(Some(())) => {}
            _ => panic!("timed out; the source has {:?}", keys(source)),
        }
    }
}

#[tokio::test]
async fn lists_watches_and_turns_services_into_registry_entries() {
    // A cluster without Istio's CRDs: those collections answer 404 and still count as synced.
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    api.apply(route("a"));
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "x"}}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert", "namespace": "shop"},
                     "type": "kubernetes.io/tls", "data": {"tls.crt": "Qw==", "tls.key": "Sw=="}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "password", "namespace": "shop"},
                     "type": "Opaque", "data": {"p": "cA=="}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                     "spec": {"ports": [{"name": "http", "port": 80}]}}));
    api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                     "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                     "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": true}}]}));
    let (source, mut changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("initial sync");
    // Secrets are fetched only once the configuration names them, and only those.
    assert_eq!(
        keys(&source),
        [
            "HTTPRoute shop/a",
            "Namespace shop",
            "ServiceEntry shop/web"
        ]
    );
    assert!(source.secrets_settled());
    let wanted = [("shop".to_string(), "cert".to_string())].into();
    source.want_secrets(&wanted);
    until(&source, &mut changes, |k| {
        k.contains(&"Secret shop/cert".to_string())
    })
    .await;
    assert!(source.secrets_settled());
    assert_eq!(
        keys(&source),
        [
            "HTTPRoute shop/a",
            "Namespace shop",
            "Secret shop/cert",
            "ServiceEntry shop/web",
        ]
    );
    // No longer named: dropped, with its data.
    source.want_secrets(&std::collections::BTreeSet::new());
    assert!(!keys(&source).contains(&"Secret shop/cert".to_string()));
    let snapshot = source.snapshot();
    assert!(
        snapshot.diagnostics.is_empty(),
        "{:?}",
        snapshot.diagnostics
    );
    let se = snapshot
        .resources
        .iter()
        .find_map(|r| match &**r {
            isthmus_api::Resource::ServiceEntry(se) => Some(se),
            _ => None,
        })
        .unwrap();
    assert_eq!(se.spec.hosts, ["web.shop.svc.cluster.local"]);
    assert_eq!(se.spec.endpoints[0].address.as_deref(), Some("10.1.2.3"));
    assert_eq!(se.spec.endpoints[0].ports.get("http"), Some(&8080));

    // Changes arrive by the watch.
    api.apply(route("b"));
    until(&source, &mut changes, |k| {
        k.contains(&"HTTPRoute shop/b".to_string())
    })
    .await;
    api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "a");
    until(&source, &mut changes, |k| {
        !k.contains(&"HTTPRoute shop/a".to_string())
    })
    .await;
    api.delete("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-abc");
    until(&source, &mut changes, |_| {
        source.snapshot().resources.iter().any(|r| {
            matches!(&**r, isthmus_api::Resource::ServiceEntry(se) if se.spec.endpoints.is_empty())
        })
    })
    .await;
}

#[tokio::test]
async fn resumes_after_disconnects_and_lists_again_after_410_gone() {
    let api = FakeApi::start(&[]).await.unwrap();
    api.apply(route("a"));
    let (source, mut changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("initial sync");
    let lists = api.lists();
    let watches = api.watches();

    // A dropped connection: the watch resumes from the last version, without a new list.
    api.disconnect();
    api.apply(route("b"));
    until(&source, &mut changes, |k| {
        k.contains(&"HTTPRoute shop/b".to_string())
    })
    .await;
    assert!(api.watches() > watches);
    assert_eq!(api.lists(), lists, "a resumed watch needs no list");

    // The history is compacted: watching from the old version gets 410 and the watcher lists
    // again, and nothing is lost or kept that should not be.
    api.compact();
    api.apply(route("c"));
    api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "a");
    until(&source, &mut changes, |k| {
        k == [
            "HTTPRoute shop/b".to_string(),
            "HTTPRoute shop/c".to_string(),
        ]
    })
    .await;
    assert!(api.lists() > lists, "410 Gone makes the watcher list again");
}

#[tokio::test]
async fn keeps_serving_what_it_had_while_the_api_server_is_gone() {
    let api = FakeApi::start(&[]).await.unwrap();
    api.apply(route("a"));
    let (source, _changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("initial sync");
    // Every watch ends and no connection is accepted any more.
    api.disconnect();
    drop(api);
    let deadline = tokio::time::Instant::now() + WAIT;
    while source.failing().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch noticed the API server is gone"
        );
        tokio::task::yield_now().await;
        tokio::time::timeout(Duration::from_millis(20), std::future::pending::<()>())
            .await
            .ok();
    }
    assert_eq!(keys(&source), ["HTTPRoute shop/a"]);
}
