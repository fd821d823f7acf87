//! Status written back through the real kube-rs client to the fake API server: conditions
//! computed by the control plane land on the objects, and of two writers only the Lease holder
//! writes, until it stops and the other takes over.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use isthmus_config::{Instance, LastGood, build};
use isthmus_k8s::fake::FakeApi;
use isthmus_k8s::{KubeSource, LeaseSettings, StatusUpdate, StatusWriter};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const GW: &str = "gateway.networking.k8s.io/v1";

fn client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(api.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Short durations, so that takeover after expiry is quick.
fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "isthmus-system".into(),
        name: "isthmus-status".into(),
        identity: identity.into(),
        duration: Duration::from_secs(1),
        renew: Duration::from_millis(100),
    }
}

/// Polls `check` until it gives a value, or panics at the deadline.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cluster(api: &FakeApi) {
    api.apply(json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "isthmus", "generation": 1},
                     "spec": {"controllerName": "isthmus.io/gateway-controller"}}));
    api.apply(json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "gw", "namespace": "shop", "generation": 4},
                     "spec": {"gatewayClassName": "isthmus", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                     "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    for (name, backend) in [("good", "web"), ("broken", "missing")] {
        api.apply(json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "shop", "generation": 2},
                         "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [format!("{name}.example.com")],
                                  "rules": [{"backendRefs": [{"name": backend, "port": 80}]}]}}));
    }
}

/// The status the gateway would compute from what the source sees.
fn computed(source: &KubeSource) -> Vec<StatusUpdate> {
    let snap = source.snapshot();
    let b = build(
        &snap.resources,
        &snap.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    b.snapshot
        .gateway_status
        .objects()
        .into_iter()
        .map(|o| StatusUpdate {
            group: o.group.into(),
            kind: o.kind.into(),
            namespace: o.namespace,
            name: o.name,
            status: o.status,
        })
        .collect()
}

fn condition<'a>(list: &'a Value, kind: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn gateway_and_routes_get_their_conditions() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    let (source, _changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced()).await.unwrap();
    let writer = StatusWriter::start(client(&api), settings("only"));
    writer.update(computed(&source));

    let gw = until("the Gateway status", || {
        let o = api.object(GW, "Gateway", "shop", "gw")?;
        o.get("status").is_some().then_some(o)
    })
    .await;
    let status = &gw["status"];
    for kind in ["Accepted", "Programmed"] {
        let c = condition(&status["conditions"], kind);
        assert_eq!(c["status"], "True", "{kind}: {status}");
        assert_eq!(c["observedGeneration"], 4);
        assert!(c["lastTransitionTime"].is_string());
    }
    assert_eq!(status["listeners"][0]["name"], "http");
    assert_eq!(status["listeners"][0]["attachedRoutes"], 2);

    let class = until("the GatewayClass status", || {
        api.object(GW, "GatewayClass", "", "isthmus")?
            .get("status")
            .cloned()
    })
    .await;
    assert_eq!(
        condition(&class["conditions"], "Accepted")["status"],
        "True"
    );

    let good = until("the good route's status", || {
        api.object(GW, "HTTPRoute", "shop", "good")?
            .get("status")
            .cloned()
    })
    .await;
    let parent = &good["parents"][0];
    assert_eq!(parent["parentRef"]["name"], "gw");
    assert_eq!(parent["controllerName"], "isthmus.io/gateway-controller");
    assert_eq!(
        condition(&parent["conditions"], "Accepted")["status"],
        "True"
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs")["status"],
        "True"
    );

    let broken = until("the broken route's status", || {
        api.object(GW, "HTTPRoute", "shop", "broken")?
            .get("status")
            .cloned()
    })
    .await;
    let refs = condition(&broken["parents"][0]["conditions"], "ResolvedRefs");
    assert_eq!(refs["status"], "False");
    assert_eq!(refs["reason"], "BackendNotFound");
    assert_eq!(
        condition(&broken["parents"][0]["conditions"], "Accepted")["status"],
        "True"
    );

    // Nothing changed: nothing is written again.
    let patches = api.status_patches();
    writer.update(computed(&source));
    let lease_after = |api: &FakeApi| {
        api.lease("isthmus-system", "isthmus-status")
            .and_then(|l| l.pointer("/spec/renewTime").cloned())
    };
    let first = lease_after(&api);
    // Two renewals later the writer has surely seen the unchanged update.
    until("two lease renewals", || {
        (lease_after(&api) != first).then_some(())
    })
    .await;
    let second = lease_after(&api);
    until("another lease renewal", || {
        (lease_after(&api) != second).then_some(())
    })
    .await;
    assert_eq!(api.status_patches(), patches);
}

fn marked(by: &str) -> Vec<StatusUpdate> {
    vec![StatusUpdate {
        group: "gateway.networking.k8s.io".into(),
        kind: "Gateway".into(),
        namespace: "shop".into(),
        name: "gw".into(),
        status: json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": by}]}),
    }]
}

fn written_by(api: &FakeApi) -> Option<String> {
    api.object(GW, "Gateway", "shop", "gw")?
        .pointer("/status/conditions/0/message")?
        .as_str()
        .map(str::to_string)
}

fn holder(api: &FakeApi) -> Option<String> {
    api.lease("isthmus-system", "isthmus-status")?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn one_of_two_writers_leads_and_the_other_takes_over_after_expiry() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    // Each writer wants a status naming itself, so the object shows who wrote it.
    let a = StatusWriter::start(client(&api), settings("replica-a"));
    let b = StatusWriter::start(client(&api), settings("replica-b"));
    a.update(marked("replica-a"));
    b.update(marked("replica-b"));

    let leader = until("a leader", || holder(&api)).await;
    let (leading, other) = if leader == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    until("the leader to know it leads", || {
        leading.is_leader().then_some(())
    })
    .await;
    let by = until("the leader's status", || written_by(&api)).await;
    assert_eq!(by, leader);
    // Over several renewals the Lease stays with the leader, and only its status is written.
    for _ in 0..5 {
        let renewed = api
            .lease("isthmus-system", "isthmus-status")
            .and_then(|l| l.pointer("/metadata/resourceVersion").cloned());
        until("a renewal", || {
            let now = api
                .lease("isthmus-system", "isthmus-status")
                .and_then(|l| l.pointer("/metadata/resourceVersion").cloned());
            (now != renewed).then_some(())
        })
        .await;
        assert_eq!(holder(&api).as_deref(), Some(leader.as_str()));
        assert!(!other.is_leader());
        assert_eq!(written_by(&api).as_deref(), Some(leader.as_str()));
    }

    // The leader stops without releasing the Lease: the other takes it once it expires.
    drop(leading);
    let successor = other.identity().to_string();
    until("the other writer to take over", || {
        (holder(&api).as_deref() == Some(successor.as_str()) && other.is_leader()).then_some(())
    })
    .await;
    until("the successor's status", || {
        (written_by(&api).as_deref() == Some(successor.as_str())).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_new_leader_keeps_what_the_previous_one_wrote_when_nothing_changed() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    let first = StatusWriter::start(client(&api), settings("first"));
    first.update(marked("same"));
    let time = |api: &FakeApi| {
        api.object(GW, "Gateway", "shop", "gw")?
            .pointer("/status/conditions/0/lastTransitionTime")
            .cloned()
    };
    let written = until("the first status", || time(&api)).await;
    let patches = api.status_patches();
    drop(first);

    let second = StatusWriter::start(client(&api), settings("second"));
    second.update(marked("same"));
    until("the second writer to lead", || {
        second.is_leader().then_some(())
    })
    .await;
    // Two renewals as leader: the unchanged status was compared with the server's and kept.
    for _ in 0..2 {
        let before = api
            .lease("isthmus-system", "isthmus-status")
            .and_then(|l| l.pointer("/metadata/resourceVersion").cloned());
        until("a renewal", || {
            let now = api
                .lease("isthmus-system", "isthmus-status")
                .and_then(|l| l.pointer("/metadata/resourceVersion").cloned());
            (now != before).then_some(())
        })
        .await;
    }
    assert_eq!(api.status_patches(), patches);
    assert_eq!(time(&api), Some(written));
}

#[tokio::test]
async fn the_fake_refuses_a_lease_write_from_a_stale_version() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use kube::api::{Api, PostParams};
    let api = FakeApi::start(&[]).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client(&api), "isthmus-system");
    let mut lease = Lease::default();
    lease.metadata.name = Some("l".into());
    lease.spec = Some(LeaseSpec {
        holder_identity: Some("a".into()),
        ..LeaseSpec::default()
    });
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let again = leases.create(&PostParams::default(), &lease).await;
    assert!(matches!(again, Err(kube::Error::Api(e)) if e.code == 409));
    let mut newer = created.clone();
    newer.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("l", &PostParams::default(), &newer)
        .await
        .unwrap();
    // `created` carries the version before that write.
    let stale = leases.replace("l", &PostParams::default(), &created).await;
    assert!(matches!(stale, Err(kube::Error::Api(e)) if e.code == 409));
    let now = leases.get("l").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_leader_that_releases_the_lease_is_succeeded_without_waiting_for_expiry() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    // A Lease that would take a minute to expire: a takeover within WAIT can only come from
    // the release.
    let slow = |identity: &str| LeaseSettings {
        duration: Duration::from_secs(60),
        ..settings(identity)
    };
    let a = StatusWriter::start(client(&api), slow("replica-a"));
    a.update(marked("replica-a"));
    until("replica-a to lead", || a.is_leader().then_some(())).await;
    let b = StatusWriter::start(client(&api), slow("replica-b"));
    b.update(marked("replica-b"));
    until("replica-b to have seen the Lease held", || {
        api.lease("isthmus-system", "isthmus-status")
            .and_then(|l| l.pointer("/spec/holderIdentity").cloned())
            .filter(|h| h == "replica-a")
    })
    .await;
    assert!(!b.is_leader());

    let released = std::time::Instant::now();
    a.release(Duration::from_secs(2)).await;
    until("replica-b to take over", || {
        (holder(&api).as_deref() == Some("replica-b") && b.is_leader()).then_some(())
    })
    .await;
    assert!(released.elapsed() < Duration::from_secs(30));
    until("replica-b's status", || {
        (written_by(&api).as_deref() == Some("replica-b")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn releasing_a_lease_held_by_another_replica_leaves_it_alone() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    let a = StatusWriter::start(client(&api), settings("replica-a"));
    until("replica-a to lead", || a.is_leader().then_some(())).await;
    let b = StatusWriter::start(client(&api), settings("replica-b"));
    b.release(Duration::from_secs(2)).await;
    assert_eq!(holder(&api).as_deref(), Some("replica-a"));
    drop(a);
}

/// Another implementation's GatewayClass and Gateway in the same cluster.
fn other_controller(api: &FakeApi) {
    api.apply(
        json!({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "other"},
                     "spec": {"controllerName": "example.com/other-controller"}}),
    );
    api.apply(json!({"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "other-gw", "namespace": "shop"},
                     "spec": {"gatewayClassName": "other", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}));
}

/// The route status entry the other implementation wrote for its Gateway.
fn other_entry() -> Value {
    json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop", "name": "other-gw"},
           "controllerName": "example.com/other-controller",
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
                           "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1}]})
}

/// A route attached to `parents`, with `status` as the API server holds it.
fn shared_route(name: &str, parents: &[&str], status: Value) -> Value {
    let refs: Vec<Value> = parents.iter().map(|p| json!({"name": p})).collect();
    json!({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "shop", "generation": 1},
           "spec": {"parentRefs": refs, "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
           "status": status})
}

fn parents(api: &FakeApi, route: &str) -> Vec<Value> {
    api.object(GW, "HTTPRoute", "shop", route)
        .and_then(|o| o.pointer("/status/parents").cloned())
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default()
}

fn controllers(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|p| p["controllerName"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits until the source's view of the cluster gives `want` statuses.
async fn computed_when(
    source: &KubeSource,
    what: &str,
    check: impl Fn(&[StatusUpdate]) -> bool,
) -> Vec<StatusUpdate> {
    until(what, || {
        let c = computed(source);
        check(&c).then_some(c)
    })
    .await
}

#[tokio::test]
async fn route_parents_of_other_implementations_are_kept_and_ours_cleared_when_detached() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    other_controller(&api);
    api.apply(shared_route(
        "shared",
        &["gw", "other-gw"],
        json!({"parents": [other_entry()]}),
    ));
    // The first writes race with "another writer": each is read again and retried.
    api.conflict_next_status_patches(2);
    let (source, _changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced()).await.unwrap();
    let writer = StatusWriter::start(client(&api), settings("only"));
    writer.update(computed(&source));

    let both = until("our entry beside theirs", || {
        let p = parents(&api, "shared");
        (p.len() == 2).then_some(p)
    })
    .await;
    assert_eq!(
        controllers(&both),
        [
            "example.com/other-controller",
            "isthmus.io/gateway-controller"
        ]
    );
    assert_eq!(both[0], other_entry(), "their entry is untouched");
    assert_eq!(both[1]["parentRef"]["name"], "gw");

    // Detached from our Gateway (the spec changes, the status stays): our entry goes, theirs
    // stays.
    let mut route = api.object(GW, "HTTPRoute", "shop", "shared").unwrap();
    route["spec"]["parentRefs"] = json!([{"name": "other-gw"}]);
    api.apply(route);
    let now = computed_when(&source, "the route to be detached", |c| {
        !c.iter().any(|u| u.name == "shared")
    })
    .await;
    writer.update(now);
    until("our entry to be cleared", || {
        (parents(&api, "shared") == [other_entry()]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_new_leader_clears_entries_a_previous_leader_left_on_detached_routes() {
    let api = FakeApi::start(&[]).await.unwrap();
    cluster(&api);
    other_controller(&api);
    // Written by a previous leader while the route was attached to gw; it no longer is.
    let left = json!({"parentRef": {"group": GW.split('/').next().unwrap(), "kind": "Gateway", "namespace": "shop", "name": "gw"},
                      "controllerName": "isthmus.io/gateway-controller",
                      "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "old"}]});
    // Written under the same controller name by another instance (the egress release) for a
    // Gateway it serves: not this instance's to clear.
    let egress = json!({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop", "name": "egress-gw"},
                        "controllerName": "isthmus.io/gateway-controller",
                        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "egress"}]});
    api.apply(shared_route(
        "moved",
        &["other-gw"],
        json!({"parents": [other_entry(), left, egress.clone()]}),
    ));
    let (source, _changes) = KubeSource::start(client(&api), "cluster.local");
    tokio::time::timeout(WAIT, source.synced()).await.unwrap();
    let writer = StatusWriter::start(client(&api), settings("successor"));
    writer.update(computed(&source));
    until("the stale entry to be cleared", || {
        (parents(&api, "moved") == [other_entry(), egress.clone()]).then_some(())
    })
    .await;
    // The routes that are still ours keep their entries.
    assert_eq!(
        controllers(&parents(&api, "good")),
        ["isthmus.io/gateway-controller"]
    );
}

fn ingress(load_balancer: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "web", "namespace": "shop"},
           "spec": {"ingressClassName": "isthmus", "rules": [{"host": "web.example.com"}]},
           "status": {"loadBalancer": load_balancer}})
}

fn ingress_update(ip: &str) -> StatusUpdate {
    StatusUpdate {
        group: "networking.k8s.io".into(),
        kind: "Ingress".into(),
        namespace: "shop".into(),
        name: "web".into(),
        status: json!({"loadBalancer": {"ingress": [{"ip": ip}]}}),
    }
}

fn load_balancer(api: &FakeApi) -> Value {
    api.object("networking.k8s.io/v1", "Ingress", "shop", "web")
        .and_then(|o| o.pointer("/status/loadBalancer").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_ingress_no_longer_served_loses_the_address_we_set_but_not_another_controllers() {
    let api = FakeApi::start(&[]).await.unwrap();
    api.apply(ingress(json!({})));
    let writer = StatusWriter::start(client(&api), settings("only"));
    writer.update(vec![ingress_update("192.0.2.10")]);
    until("the published address", || {
        (load_balancer(&api) == json!({"ingress": [{"ip": "192.0.2.10"}]})).then_some(())
    })
    .await;
    // No longer served (say its class changed): the address is removed.
    writer.update(Vec::new());
    until("the address to be removed", || {
        (load_balancer(&api) == json!({})).then_some(())
    })
    .await;

    // Served again, then another controller takes it over and writes its own address
    // before we notice: that one is left alone.
    writer.update(vec![ingress_update("192.0.2.10")]);
    until("the published address again", || {
        (load_balancer(&api) == json!({"ingress": [{"ip": "192.0.2.10"}]})).then_some(())
    })
    .await;
    let theirs = json!({"ingress": [{"ip": "198.51.100.1"}]});
    api.apply(ingress(theirs.clone()));
    let patches = api.status_patches();
    writer.update(Vec::new());
    // The writer has handled the update once the Lease has been renewed twice more.
    let renewed = |api: &FakeApi| {
        api.lease("isthmus-system", "isthmus-status")
            .and_then(|l| l.pointer("/spec/renewTime").cloned())
    };
    for _ in 0..2 {
        let before = renewed(&api);
        until("a renewal", || (renewed(&api) != before).then_some(())).await;
    }
    assert_eq!(load_balancer(&api), theirs);
    assert_eq!(api.status_patches(), patches);
}
