//! `isthmus run --kubernetes` against an in-process fake API server speaking the real
//! Kubernetes HTTP API (list, watch streams, 410 Gone): the real binary and its kube-rs client
//! take Gateway API resources, Services and EndpointSlices from the API server into live
//! routing, follow changes and deletions, survive disconnects and compaction, and become ready
//! only once synced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;

use isthmus_k8s::fake::FakeApi;
use serde_json::{Value, json};
use support::*;

const GW: &str = "gateway.networking.k8s.io/v1";

fn gateway_api_gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "shop"},
        "spec": {"gatewayClassName": "isthmus", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
    })
}

fn route(name: &str, path: &str, service: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                       "backendRefs": [{"name": service, "port": 80}]}]
        }
    })
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "shop"},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

/// The EndpointSlice of Service `service` with one ready endpoint, `addr`.
fn slice(service: &str, addr: SocketAddr) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-1"), "namespace": "shop",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": addr.port()}],
           "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}]})
}

/// Starts the gateway on `api` (and an empty configuration folder).
fn spawn(api: &FakeApi, kubeconfig_dir: &tempfile::TempDir) -> Gateway {
    spawn_with(api, kubeconfig_dir, &[])
}

fn spawn_with(api: &FakeApi, kubeconfig_dir: &tempfile::TempDir, extra: &[&str]) -> Gateway {
    let path = kubeconfig_dir.path().join("kubeconfig");
    std::fs::write(&path, api.kubeconfig()).unwrap();
    let path = path.display().to_string();
    let mut args = vec!["--kubernetes", "--kubeconfig", &path];
    args.extend_from_slice(extra);
    Gateway::spawn(tempfile::tempdir().unwrap(), &args)
}

fn ingress(name: &str, class: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"ingressClassName": class, "rules": [{"host": format!("{name}.example.com"),
               "http": {"paths": [{"path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
}

/// What a GET of `path` gets: the backend's name, or the status.
async fn outcome(g: &Gateway, path: &str) -> String {
    let r = get(&g.url(80, path).await, "shop.example.com", &[]).await;
    match (r.status, r.backend()) {
        (200, Some(b)) => b.to_string(),
        (s, _) => s.to_string(),
    }
}

/// Waits until a GET of `path` gets `want`.
async fn until(g: &Gateway, path: &str, want: &str) {
    eventually(&format!("GET {path} -> {want}"), || async {
        outcome(g, path).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_flows_from_the_api_server_into_routing() {
    // A cluster without Istio's CRDs: the Gateway API alone.
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    let web = backend("web").await;
    let moved = backend("web-moved").await;
    for o in [
        gateway_api_gateway(),
        route("shop", "/shop", "web"),
        service("web"),
        slice("web", web),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    let g = spawn(&api, &dir);
    g.wait_ready().await;
    assert_eq!(outcome(&g, "/shop/cart").await, "web");
    assert_eq!(outcome(&g, "/other").await, "404");

    // A new route, endpoints that move, a deletion: each becomes live.
    api.apply(route("new", "/new", "web"));
    until(&g, "/new", "web").await;
    api.apply(slice("web", moved));
    until(&g, "/shop", "web-moved").await;
    api.delete("gateway.networking.k8s.io/v1", "HTTPRoute", "shop", "shop");
    until(&g, "/shop", "404").await;

    // Every watch is cut and the history compacted: the source lists again and goes on.
    api.compact();
    api.apply(route("after", "/after", "web"));
    until(&g, "/after", "web-moved").await;
    assert_eq!(outcome(&g, "/new").await, "web-moved");

    // Diagnostics name the object they are about.
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"matches": [{"method": "FETCH"}]}]}
    }));
    eventually("the diagnostic of the bad route", || async {
        g.diagnostics().await.iter().any(|d| {
            d.starts_with("kubernetes:HTTPRoute/shop/bad:1: error: HTTPRoute shop/bad: spec.rules[0].matches[0].method")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_initial_sync_and_survives_the_api_server_going_away() {
    let api = FakeApi::start(&[]).await.unwrap();
    let web = backend("web").await;
    for o in [
        gateway_api_gateway(),
        route("shop", "/", "web"),
        service("web"),
        slice("web", web),
    ] {
        api.apply(o);
    }
    api.hold();
    let dir = tempfile::tempdir().unwrap();
    let g = spawn(&api, &dir);
    // The admin server is up, but no list has been answered: not ready, nothing bound.
    assert_eq!(g.admin_get("/healthz/ready").await.0, 503);
    api.release();
    g.wait_ready().await;
    assert_eq!(outcome(&g, "/").await, "web");
    // The API server goes away: the last configuration keeps serving.
    api.disconnect();
    drop(api);
    eventually("the gateway notices the API server is gone", || async {
        g.log().contains("watch failed")
    })
    .await;
    assert_eq!(outcome(&g, "/").await, "web");
}

/// The condition `kind` of a status condition list.
fn condition(list: &Value, kind: &str) -> Value {
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_writes_gateway_api_status_back() {
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    let web = backend("web").await;
    for o in [
        gateway_api_gateway(),
        route("shop", "/shop", "web"),
        service("web"),
        slice("web", web),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    let g = spawn(&api, &dir);
    g.wait_ready().await;
    const GW: &str = "gateway.networking.k8s.io/v1";
    let gateway = |api: &FakeApi| {
        api.object(GW, "Gateway", "shop", "gw")
            .and_then(|o| o.get("status").cloned())
            .unwrap_or(Value::Null)
    };
    eventually("the Gateway's status", || async {
        let s = gateway(&api);
        condition(&s["conditions"], "Accepted")["status"] == "True"
            && condition(&s["conditions"], "Programmed")["status"] == "True"
            && s["listeners"][0]["attachedRoutes"] == 1
    })
    .await;
    let route_status = |api: &FakeApi, name: &str| {
        api.object(GW, "HTTPRoute", "shop", name)
            .and_then(|o| o.pointer("/status/parents/0/conditions").cloned())
            .unwrap_or(Value::Null)
    };
    eventually("the route's status", || async {
        let c = route_status(&api, "shop");
        condition(&c, "Accepted")["status"] == "True"
            && condition(&c, "ResolvedRefs")["status"] == "True"
    })
    .await;

    // A route to a Service that does not exist: accepted, with its reference unresolved.
    api.apply(route("lost", "/lost", "missing"));
    eventually("the unresolved route's status", || async {
        let c = route_status(&api, "lost");
        condition(&c, "ResolvedRefs")["status"] == "False"
            && condition(&c, "ResolvedRefs")["reason"] == "BackendNotFound"
    })
    .await;
    eventually("two attached routes", || async {
        gateway(&api)["listeners"][0]["attachedRoutes"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_ingresses_get_the_published_load_balancer_addresses() {
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    let web = backend("web").await;
    for o in [
        ingress("shop", "isthmus"),
        ingress("other", "nginx"),
        service("web"),
        slice("web", web),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    // Documentation addresses: status only, no traffic goes there.
    let g = spawn_with(
        &api,
        &dir,
        &["--publish-status-address", "192.0.2.10,lb.example.com"],
    );
    g.wait_ready().await;
    let status = |api: &FakeApi, name: &str| {
        api.object("networking.k8s.io/v1", "Ingress", "shop", name)
            .and_then(|o| o.pointer("/status/loadBalancer/ingress").cloned())
            .unwrap_or(Value::Null)
    };
    eventually("the served Ingress's load-balancer status", || async {
        status(&api, "shop") == json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}])
    })
    .await;
    // The Ingress routes, and the one of another class got no status from us.
    assert_eq!(outcome(&g, "/").await, "web");
    assert_eq!(status(&api, "other"), Value::Null);
}

/// Pod `name` with `version` as its label, running on node-a.
fn pod(name: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web", "version": version}},
           "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web"}]},
           "status": {"phase": "Running"}})
}

/// An EndpointSlice of Service `web` whose one endpoint is pod `pod` at `addr`.
fn pod_slice(pod: &str, addr: SocketAddr) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("web-{pod}"), "namespace": "shop",
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": addr.port()}],
           "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true},
                          "nodeName": "node-a",
                          "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}}]})
}

fn subset_route(subset: &str) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"hosts": ["shop.example.com"], "gateways": ["istio-system/gw"],
                    "http": [{"route": [{"destination": {"host": "web.shop.svc.cluster.local", "subset": subset}}]}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_subsets_select_pods_by_their_labels() {
    let api = FakeApi::start(&[]).await.unwrap();
    let v1 = backend("web-v1").await;
    let v2 = backend("web-v2").await;
    for o in [
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
               "metadata": {"name": "gw", "namespace": "istio-system"},
               "spec": {"selector": {"istio": "ingressgateway"},
                        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"host": "web.shop.svc.cluster.local",
                        "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                    {"name": "v2", "labels": {"version": "v2"}}]}}),
        subset_route("v2"),
        service("web"),
        pod("web-1", "v1"),
        pod("web-2", "v2"),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/region": "eu-west",
                                                         "topology.kubernetes.io/zone": "eu-west-1a"}}}),
        pod_slice("web-1", v1),
        pod_slice("web-2", v2),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    let g = spawn(&api, &dir);
    g.wait_ready().await;
    // Every request goes to the pod labelled v2, never to the other endpoint of the Service.
    for _ in 0..10 {
        assert_eq!(outcome(&g, "/").await, "web-v2");
    }
    api.apply(subset_route("v1"));
    until(&g, "/", "web-v1").await;
    // Relabelled, the pod leaves the subset: no endpoint is left for v1.
    api.apply(pod("web-1", "v3"));
    until(&g, "/", "503").await;
    api.apply(pod("web-1", "v1"));
    until(&g, "/", "web-v1").await;
    // The registry shows each endpoint with its pod's labels and its node's locality.
    let dump = g.config_dump().await;
    assert_eq!(dump["diagnostics"], json!([]), "{dump}");
    let text = dump.to_string();
    assert!(
        text.contains(r#""labels":{"app":"web","version":"v1"},"locality":"eu-west/eu-west-1a""#),
        "{text}"
    );
}

fn tls_secret_object(namespace: &str, name: &str, leaf: &Leaf) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}})
}

fn https_gateway(certificate: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "shop"},
        "spec": {"gatewayClassName": "isthmus", "listeners": [
            {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "shop.example.com",
             "tls": {"certificateRefs": [{"name": certificate}]}},
            // No ReferenceGrant opens namespace vault: its Secret is never fetched.
            {"name": "vault", "port": 443, "protocol": "HTTPS", "hostname": "vault.example.com",
             "tls": {"certificateRefs": [{"name": "private", "namespace": "vault"}]}}
        ]}
    })
}

/// The `(namespace, name)` of every Secret the configuration holds.
async fn secrets_held(g: &Gateway) -> Vec<String> {
    let dump = g.config_dump().await;
    dump["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "Secret")
        .map(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_referenced_secrets_are_fetched_and_a_late_one_brings_its_listener_up() {
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    let web = backend("web").await;
    let pki = Pki::new("k8s-test-ca");
    let leaf = pki.server(&["shop.example.com"]);
    for o in [
        https_gateway("web-cert"),
        route("shop", "/", "web"),
        service("web"),
        slice("web", web),
        tls_secret_object("shop", "unrelated", &leaf),
        tls_secret_object("vault", "private", &leaf),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    let g = spawn(&api, &dir);
    g.wait_ready().await;
    // The certificate is not there yet: the listener waits for it.
    assert!(secrets_held(&g).await.is_empty());
    let (_, listeners) = g.admin_get("/listeners").await;
    assert!(!listeners.contains("443"), "{listeners}");

    // It arrives: the listener comes up with it.
    api.apply(tls_secret_object("shop", "web-cert", &leaf));
    eventually("the HTTPS listener", || async {
        g.admin_get("/listeners").await.1.contains("443")
    })
    .await;
    let addr = g.addr(443).await;
    let client = tls_client(&pki, None);
    let reply = tls_get(addr, "shop.example.com", &client, "shop.example.com", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(secrets_held(&g).await, ["shop/web-cert"]);

    // Every Secret request named the one Secret referenced; no list of all Secrets, and
    // nothing of namespace vault.
    let requests: Vec<String> = api
        .collection_requests()
        .into_iter()
        .filter(|(path, _)| path == "/api/v1/secrets")
        .map(|(_, selector)| selector)
        .collect();
    assert!(!requests.is_empty());
    for selector in &requests {
        assert_eq!(selector, "metadata.namespace=shop,metadata.name=web-cert");
    }

    // The reference moves to another Secret: the old one is dropped, the new one fetched.
    api.apply(tls_secret_object("shop", "web-cert-2", &leaf));
    api.apply(https_gateway("web-cert-2"));
    eventually("the new certificate to replace the old", || async {
        secrets_held(&g).await == ["shop/web-cert-2"]
    })
    .await;
    let reply = tls_get(addr, "shop.example.com", &client, "shop.example.com", "/")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// The gateway's own LoadBalancer Service, with `ingress` as its load-balancer status.
fn own_service(ingress: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "ingressgateway-isthmus", "namespace": "istio-system"},
           "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
           "status": {"loadBalancer": {"ingress": ingress}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_and_gateways_publish_the_addresses_of_the_gateways_own_service() {
    let api = FakeApi::start(&["networking.istio.io"]).await.unwrap();
    let web = backend("web").await;
    for o in [
        ingress("shop", "isthmus"),
        gateway_api_gateway(),
        route("shop", "/shop", "web"),
        service("web"),
        slice("web", web),
        // Documentation addresses: status only, no traffic goes there.
        own_service(json!([{"ip": "192.0.2.10"}])),
    ] {
        api.apply(o);
    }
    let dir = tempfile::tempdir().unwrap();
    let g = spawn_with(
        &api,
        &dir,
        &["--publish-service", "istio-system/ingressgateway-isthmus"],
    );
    g.wait_ready().await;
    let ingress_status = |api: &FakeApi| {
        api.object("networking.k8s.io/v1", "Ingress", "shop", "shop")
            .and_then(|o| o.pointer("/status/loadBalancer/ingress").cloned())
            .unwrap_or(Value::Null)
    };
    let gateway_addresses = |api: &FakeApi| {
        api.object(GW, "Gateway", "shop", "gw")
            .and_then(|o| o.pointer("/status/addresses").cloned())
            .unwrap_or(Value::Null)
    };
    eventually(
        "the Service's address on the Ingress and the Gateway",
        || async {
            ingress_status(&api) == json!([{"ip": "192.0.2.10"}])
                && gateway_addresses(&api) == json!([{"type": "IPAddress", "value": "192.0.2.10"}])
        },
    )
    .await;
    // The cloud's load balancer changes: the statuses follow.
    api.apply(own_service(json!([{"hostname": "lb.example.com"}])));
    eventually("the new address", || async {
        ingress_status(&api) == json!([{"hostname": "lb.example.com"}])
            && gateway_addresses(&api) == json!([{"type": "Hostname", "value": "lb.example.com"}])
    })
    .await;
    assert_eq!(outcome(&g, "/shop").await, "web");
}
