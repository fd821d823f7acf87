//! Status written back to the API server: Gateway API conditions computed by the control
//! plane, patched onto each object's `status` subresource by one replica at a time.
//!
//! Leadership is a `coordination.k8s.io/v1` Lease: a replica takes it when it is absent or
//! expired, and renews it every [`LeaseSettings::renew`]. Every write of the Lease carries the
//! `resourceVersion` it read, so of two replicas racing for it the API server lets one win and
//! answers the other 409 Conflict. Expiry is judged as client-go judges it: from when this
//! replica last saw the holder's record change, by its own clock, so replicas need not agree
//! on the time.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use isthmus_api::gateway_api::{GATEWAY_CONTROLLER, GROUP};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::kinds::WATCHED;

/// The prefix of the Lease that elects the status writer; the workload's name follows it.
pub const LEASE_NAME: &str = "isthmus-status";

/// One object's desired `status` (conditions without `lastTransitionTime`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub group: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The namespace of the Lease (the instance's).
    pub namespace: String,
    pub name: String,
    /// Who holds the Lease: unique per replica.
    pub identity: String,
    /// How long a Lease not renewed stays its holder's.
    pub duration: Duration,
    /// How often the holder renews (and others check for expiry).
    pub renew: Duration,
}

impl LeaseSettings {
    /// The Lease of the replicas of `workload` (`istio-ingressgateway`, ...): an ingress and
    /// an egress release in one namespace serve different Gateways, so each elects its own
    /// writer.
    pub fn new(namespace: &str, workload: &str) -> Self {
        LeaseSettings {
            namespace: namespace.to_string(),
            name: lease_name(workload),
            identity: identity(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(2),
        }
    }
}

/// `isthmus-status-<workload>`, made a valid object name (lowercase letters, digits and `-`,
/// at most 253 characters).
pub fn lease_name(workload: &str) -> String {
    let clean: String = workload
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        return LEASE_NAME.to_string();
    }
    let mut name = format!("{LEASE_NAME}-{clean}");
    name.truncate(253);
    name.trim_end_matches('-').to_string()
}

/// `POD_NAME` (or the hostname) with a random suffix: two processes in one pod, or a pod
/// restarted with the same name before its old Lease expired, are still different holders.
pub fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "isthmus".to_string());
    // RandomState is seeded from the OS's randomness: enough for a suffix that only needs to
    // differ between processes.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{base}-{:08x}", h.finish() as u32)
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{group}/{kind} is not a kind the source knows")]
    UnknownKind { group: String, kind: String },
    #[error("the object kept changing while its status was written ({0} attempts)")]
    Conflicts(usize),
}

/// The running writer; it stops (without releasing the Lease) when dropped, and
/// [`StatusWriter::release`] stops it and gives the Lease up.
pub struct StatusWriter {
    desired: watch::Sender<Vec<StatusUpdate>>,
    leader: watch::Receiver<bool>,
    identity: String,
    task: tokio::task::JoinHandle<()>,
    client: kube::Client,
    settings: LeaseSettings,
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusWriter {
    pub fn start(client: kube::Client, settings: LeaseSettings) -> StatusWriter {
        let (desired, desired_rx) = watch::channel(Vec::new());
        let (leader_tx, leader) = watch::channel(false);
        let identity = settings.identity.clone();
        let task = tokio::spawn(run(client.clone(), settings.clone(), desired_rx, leader_tx));
        StatusWriter {
            desired,
            leader,
            identity,
            task,
            client,
            settings,
        }
    }

    /// Stops writing and, if this replica holds the Lease, gives it up (as client-go's
    /// `ReleaseOnCancel`): the holder is cleared, so another replica takes over at its next
    /// renewal instead of after the Lease expires. Bounded by `within`, so that a shutdown
    /// never waits on an unreachable API server; the Lease then simply expires.
    pub async fn release(mut self, within: Duration) {
        self.task.abort();
        // Until the task has stopped, a renewal of its own could race the release.
        let _ = (&mut self.task).await;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        match tokio::time::timeout(within, release(&leases, &self.settings)).await {
            Ok(Ok(true)) => tracing::info!(identity = %self.identity, "status Lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot release the status Lease; it expires instead")
            }
            Err(_) => tracing::warn!("releasing the status Lease timed out; it expires instead"),
        }
    }

    /// The status every object should have now; written if this replica leads.
    pub fn update(&self, statuses: Vec<StatusUpdate>) {
        self.desired.send_replace(statuses);
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }
}

type Key = (String, String, String, String);

/// What was last written to an object: the desired status, and it with transition times.
struct Written {
    desired: Value,
    sent: Value,
}

async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    mut desired: watch::Receiver<Vec<StatusUpdate>>,
    leader: watch::Sender<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let mut elector = Elector {
        settings: settings.clone(),
        observed: None,
    };
    let mut written: HashMap<Key, Written> = HashMap::new();
    let mut tick = tokio::time::interval(settings.renew);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    // Whether the routes were swept for entries a previous leader left since taking the Lease.
    let mut swept = true;
    loop {
        let renew = tokio::select! {
            _ = tick.tick() => true,
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        if renew {
            let now = match elector.step(&leases).await {
                Ok(l) => l,
                Err(e) => {
                    // Without a renewed Lease this replica cannot know it still leads.
                    tracing::warn!(error = %e, "cannot read or renew the status Lease");
                    false
                }
            };
            if now != leading {
                tracing::info!(identity = %settings.identity, leading = now, "status writer leadership changed");
                // A new leader writes everything once: another replica may have written since.
                written.clear();
                leader.send_replace(now);
                leading = now;
                if now {
                    swept = false;
                }
            }
        }
        let want = desired.borrow_and_update().clone();
        if leading {
            write_all(&client, &want, &mut written).await;
            // Once the configuration is known (a first non-empty update, or any change).
            if !swept && (!want.is_empty() || !renew) {
                sweep(&client, &want).await;
                swept = true;
            }
        }
    }
}

async fn write_all(
    client: &kube::Client,
    want: &[StatusUpdate],
    written: &mut HashMap<Key, Written>,
) {
    let served = served(want);
    for u in want {
        let key = key_of(u);
        let previous = written.get(&key);
        if previous.is_some_and(|w| w.desired == u.status) {
            continue;
        }
        let result = match dynamic_api(client, &u.group, &u.kind, &u.namespace) {
            Ok(api) => write_one(&api, u, previous.map(|w| &w.sent), &served).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(Some(sent)) => {
                written.insert(
                    key,
                    Written {
                        desired: u.status.clone(),
                        sent,
                    },
                );
            }
            // Deleted since the configuration was compiled: nothing to report on.
            Ok(None) => {
                written.remove(&key);
            }
            Err(e) => {
                tracing::warn!(kind = %u.kind, namespace = %u.namespace, name = %u.name, error = %e, "cannot write status; retrying at the next change or renewal");
                written.remove(&key);
            }
        }
    }
    // What was written to objects that are no longer this instance's to report on.
    let wanted: HashSet<Key> = want.iter().map(key_of).collect();
    let stale: Vec<Key> = written
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for key in stale {
        if let Some(w) = written.remove(&key) {
            clear(client, &key, Some(&w.sent), &served).await;
        }
    }
}

fn key_of(u: &StatusUpdate) -> Key {
    (
        u.group.clone(),
        u.kind.clone(),
        u.namespace.clone(),
        u.name.clone(),
    )
}

/// Route kinds, whose `status.parents` is shared with other implementations.
fn is_route(group: &str, kind: &str) -> bool {
    group == GROUP && ROUTE_KINDS.contains(&kind)
}

const ROUTE_KINDS: [&str; 4] = ["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"];

/// How many times a write that lost a race (409) is read and tried again.
const CONFLICT_RETRIES: usize = 3;

/// Writes one object's status: read, merge with what is not ours (other controllers' route
/// parents), and patch with the version read as a precondition, so that a concurrent write
/// makes us read again instead of overwriting it. The status sent (with transition times);
/// `None` if the object is gone.
async fn write_one(
    api: &Api<DynamicObject>,
    u: &StatusUpdate,
    previous: Option<&Value>,
    served: &Served,
) -> Result<Option<Value>, StatusError> {
    for _ in 0..CONFLICT_RETRIES {
        let Some(object) = api.get_opt(&u.name).await? else {
            return Ok(None);
        };
        let server = object.data.get("status");
        let mut sent = u.status.clone();
        // Nothing written by this replica since it took the Lease: what the server holds
        // (from a previous leader) is the last status, whose transition times carry over.
        transition_times(&mut sent, previous.or(server), &now());
        let status = if is_route(&u.group, &u.kind) {
            with_other_parents(&sent, server, served)
        } else {
            sent.clone()
        };
        if server == Some(&status) {
            return Ok(Some(sent));
        }
        match patch(api, &u.name, &status, object.metadata.resource_version).await {
            Ok(()) => return Ok(Some(sent)),
            Err(StatusError::Kube(kube::Error::Api(e))) if e.code == 409 => continue,
            Err(StatusError::Kube(kube::Error::Api(e))) if e.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(StatusError::Conflicts(CONFLICT_RETRIES))
}

/// `ours` (a route status with our parent entries) with the entries of other controllers
/// that `server` holds kept before ours, as the Gateway API asks: each implementation owns
/// only the entries carrying its `controllerName`.
fn with_other_parents(ours: &Value, server: Option<&Value>, served: &Served) -> Value {
    let mut parents: Vec<Value> = others(server, served);
    if let Some(list) = ours.get("parents").and_then(Value::as_array) {
        parents.extend(list.iter().cloned());
    }
    let mut status = ours.clone();
    if let Some(map) = status.as_object_mut() {
        map.insert("parents".into(), Value::Array(parents));
    }
    status
}

/// The route parent entries of `status` that another controller wrote.
fn others(status: Option<&Value>, served: &Served) -> Vec<Value> {
    status
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|p| !is_ours(p, served))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Gateways (`namespace`, `name`) this instance serves: those whose status it writes. Other
/// instances (the egress release, a `--gateway` deployment) write entries under the same
/// controller name for their own Gateways, which are theirs to keep.
type Served = HashSet<(String, String)>;

fn served(want: &[StatusUpdate]) -> Served {
    want.iter()
        .filter(|u| u.group == GROUP && u.kind == "Gateway")
        .map(|u| (u.namespace.clone(), u.name.clone()))
        .collect()
}

/// An entry this instance owns: our controller name, for a Gateway this instance serves.
fn is_ours(parent: &Value, served: &Served) -> bool {
    let text = |pointer: &str| {
        parent
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    text("/controllerName") == GATEWAY_CONTROLLER
        && served.contains(&(
            text("/parentRef/namespace").to_string(),
            text("/parentRef/name").to_string(),
        ))
}

/// Removes what this instance wrote to an object that is no longer its to report on: its
/// route parent entries (leaving other controllers'), or an Ingress's load-balancer status
/// when it still is what was `sent` (else another controller has written it since). A Gateway
/// or GatewayClass that moved to another controller is that controller's to rewrite.
async fn clear(client: &kube::Client, key: &Key, sent: Option<&Value>, served: &Served) {
    let (group, kind, namespace, name) = key;
    let api = match dynamic_api(client, group, kind, namespace) {
        Ok(api) => api,
        Err(e) => {
            tracing::warn!(error = %e, "cannot clear status");
            return;
        }
    };
    let result = if is_route(group, kind) {
        clear_parents(&api, name, served).await
    } else if group == "networking.k8s.io" && kind == "Ingress" {
        clear_load_balancer(&api, name, sent).await
    } else {
        Ok(())
    };
    match result {
        Ok(()) => tracing::debug!(%kind, %namespace, %name, "stale status cleared"),
        Err(StatusError::Kube(kube::Error::Api(e))) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(%kind, %namespace, %name, error = %e, "cannot clear stale status")
        }
    }
}

async fn clear_parents(
    api: &Api<DynamicObject>,
    name: &str,
    served: &Served,
) -> Result<(), StatusError> {
    for _ in 0..CONFLICT_RETRIES {
        let Some(object) = api.get_opt(name).await? else {
            return Ok(());
        };
        let server = object.data.get("status");
        let kept = others(server, served);
        let had = server
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if kept.len() == had {
            return Ok(());
        }
        let status = json!({"parents": kept});
        match patch(api, name, &status, object.metadata.resource_version).await {
            Err(StatusError::Kube(kube::Error::Api(e))) if e.code == 409 => continue,
            other => return other,
        }
    }
    Err(StatusError::Conflicts(CONFLICT_RETRIES))
}

async fn clear_load_balancer(
    api: &Api<DynamicObject>,
    name: &str,
    sent: Option<&Value>,
) -> Result<(), StatusError> {
    let Some(object) = api.get_opt(name).await? else {
        return Ok(());
    };
    let server = object
        .data
        .get("status")
        .and_then(|s| s.get("loadBalancer"));
    let ours = sent.and_then(|s| s.get("loadBalancer"));
    if server.is_none() || server != ours {
        return Ok(());
    }
    // `null` removes the field in a merge patch.
    let status = json!({"loadBalancer": {"ingress": null}});
    patch(api, name, &status, object.metadata.resource_version).await
}

/// On taking the Lease: a previous leader may have left entries of ours on routes that are
/// no longer attached to this instance's Gateways; they are cleared.
async fn sweep(client: &kube::Client, want: &[StatusUpdate]) {
    let wanted: HashSet<Key> = want.iter().map(key_of).collect();
    let served = served(want);
    for kind in ROUTE_KINDS {
        let api = match dynamic_api(client, GROUP, kind, "") {
            Ok(api) => api,
            Err(_) => continue,
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            // A kind the cluster does not serve has nothing to clear.
            Err(_) => continue,
        };
        for o in list {
            let has_ours = o
                .data
                .get("status")
                .and_then(|s| s.get("parents"))
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| is_ours(p, &served)));
            let key = (
                GROUP.to_string(),
                kind.to_string(),
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            );
            if has_ours && !wanted.contains(&key) {
                clear(client, &key, None, &served).await;
            }
        }
    }
}

fn dynamic_api(
    client: &kube::Client,
    group: &str,
    kind: &str,
    namespace: &str,
) -> Result<Api<DynamicObject>, StatusError> {
    let w = WATCHED
        .iter()
        .find(|w| w.group == group && w.kind == kind)
        .ok_or_else(|| StatusError::UnknownKind {
            group: group.to_string(),
            kind: kind.to_string(),
        })?;
    let resource = ApiResource {
        group: w.group.to_string(),
        version: w.version.to_string(),
        api_version: w.api_version(),
        kind: w.kind.to_string(),
        plural: w.plural.to_string(),
    };
    Ok(if namespace.is_empty() {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    })
}

/// A merge patch of `status` alone (the rest of the object is the user's), on the version
/// read: the server refuses it with 409 if the object changed since.
async fn patch(
    api: &Api<DynamicObject>,
    name: &str,
    status: &Value,
    version: Option<String>,
) -> Result<(), StatusError> {
    let mut body = json!({"status": status});
    if let (Some(v), Some(map)) = (version, body.as_object_mut()) {
        map.insert("metadata".into(), json!({"resourceVersion": v}));
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(|_| Timestamp::now().to_string(), |t| t.to_string())
}

/// Gives every condition of `status` a `lastTransitionTime`: the one it had in `old` if its
/// status did not change, else `now`. Listeners are matched by name, route parents by their
/// `parentRef`.
pub fn transition_times(status: &mut Value, old: Option<&Value>, now: &str) {
    let Some(map) = status.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(conds)) = map.get_mut("conditions") {
        for c in conds {
            let kind = c.get("type").cloned();
            let before = old
                .and_then(|o| o.get("conditions"))
                .and_then(Value::as_array)
                .and_then(|list| list.iter().find(|p| p.get("type") == kind.as_ref()));
            let time = match before {
                Some(b) if b.get("status") == c.get("status") => b
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or_else(|| json!(now)),
                _ => json!(now),
            };
            if let Some(c) = c.as_object_mut() {
                c.insert("lastTransitionTime".into(), time);
            }
        }
    }
    for (list, id) in [("listeners", "name"), ("parents", "parentRef")] {
        if let Some(Value::Array(items)) = map.get_mut(list) {
            for item in items {
                let before = old
                    .and_then(|o| o.get(list))
                    .and_then(Value::as_array)
                    .and_then(|l| l.iter().find(|p| p.get(id) == item.get(id)));
                transition_times(item, before, now);
            }
        }
    }
}

/// The leader election state of one replica.
struct Elector {
    settings: LeaseSettings,
    /// The holder and renew time last seen, and when they were first seen.
    observed: Option<(String, Option<String>, Instant)>,
}

impl Elector {
    /// Takes or renews the Lease; whether this replica holds it now.
    async fn step(&mut self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let seconds = i32::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_loss(api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let seen = match &self.observed {
            Some((h, r, at)) if *h == holder && *r == renewed => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((holder.clone(), renewed, at));
                at
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.duration, Duration::from_secs);
        let expired = holder.is_empty() || seen.elapsed() > duration;
        if holder != me && !expired {
            return Ok(false);
        }
        if holder != me {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(me);
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // The Lease carries the resourceVersion read above: if another replica wrote it since,
        // the server refuses this write and that replica wins.
        conflict_is_loss(
            api.replace(&self.settings.name, &PostParams::default(), &lease)
                .await,
        )
    }
}

/// Clears the holder of the Lease if it is `settings.identity`; whether it did. The write
/// carries the version read, so a Lease taken meanwhile by another replica is left alone.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    conflict_is_loss(
        api.replace(&settings.name, &PostParams::default(), &lease)
            .await,
    )
}

fn conflict_is_loss(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_per_workload_and_valid_object_names() {
        for (workload, want) in [
            (
                "istio-ingressgateway",
                "isthmus-status-istio-ingressgateway",
            ),
            ("istio-egressgateway", "isthmus-status-istio-egressgateway"),
            ("My_Gateway.v2", "isthmus-status-my-gateway-v2"),
            ("", "isthmus-status"),
            ("___", "isthmus-status"),
        ] {
            assert_eq!(lease_name(workload), want, "{workload:?}");
        }
        assert_eq!(lease_name(&"a".repeat(400)).len(), 253);
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let old = json!({"parents": [{"parentRef": {"name": "gw"}, "conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": "t0"},
            {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": "t0"}]}]});
        let mut new = json!({"parents": [{"parentRef": {"name": "gw"}, "conditions": [
            {"type": "Accepted", "status": "True"},
            {"type": "ResolvedRefs", "status": "False"}]}]});
        transition_times(&mut new, Some(&old), "t1");
        let c = &new["parents"][0]["conditions"];
        assert_eq!(c[0]["lastTransitionTime"], "t0");
        assert_eq!(c[1]["lastTransitionTime"], "t1");
        let mut fresh = json!({"conditions": [{"type": "Accepted", "status": "True"}],
                               "listeners": [{"name": "http", "conditions": [{"type": "Programmed", "status": "True"}]}]});
        transition_times(&mut fresh, None, "t2");
        assert_eq!(fresh["conditions"][0]["lastTransitionTime"], "t2");
        assert_eq!(
            fresh["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "t2"
        );
    }
}
