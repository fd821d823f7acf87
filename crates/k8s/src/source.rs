//! The Kubernetes source: one watcher per watched collection keeps a store of the cluster's
//! objects, which [`KubeSource::snapshot`] turns into resources exactly as the file source
//! turns files into them.
//!
//! kube's watcher lists, then watches from the list's version; after a disconnect it watches
//! again from the last version it saw, and after `410 Gone` it lists again. While the API
//! server cannot be reached the store keeps what it had, so the last configuration keeps
//! serving. A collection the server does not serve (a CRD that is not installed) counts as
//! synced and empty, and is retried in the background.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use isthmus_api::load::{LoadedFile, load_str};
use isthmus_api::{Diagnostic, Resource, ResourceKey};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::convert::{Topology, key_of, service_entry, slice_service, strip_node, strip_pod};
use crate::kinds::{Role, WATCHED, Watched};

/// Quiet time after the last change before a reload, as for files: a burst of events (an
/// initial list, `kubectl apply` of many objects) becomes one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// What the cluster holds now, as resources.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub resources: Vec<std::sync::Arc<Resource>>,
    pub rejected: Vec<ResourceKey>,
    pub diagnostics: Vec<Diagnostic>,
}

type Key = (String, String);

#[derive(Default)]
struct Store {
    /// Configuration objects by collection, loaded as the file source would load them.
    config: BTreeMap<usize, BTreeMap<Key, LoadedFile>>,
    /// Each configuration object as last loaded, without what the API server changes on its
    /// own (status, resourceVersion): a change of nothing else needs no reload. Without this,
    /// every status the gateway writes back would come back as a change and cost a reload.
    compared: BTreeMap<(usize, Key), Value>,
    services: BTreeMap<Key, Value>,
    slices: BTreeMap<Key, Value>,
    /// Pods and Nodes, reduced to what endpoints need from them.
    topology: Topology,
    /// The Secrets the configuration refers to, as loaded, and (compared) as last seen.
    secrets: BTreeMap<Key, LoadedFile>,
    secrets_compared: BTreeMap<Key, Value>,
    /// Wanted Secrets whose first list has not answered yet.
    secrets_pending: std::collections::BTreeSet<Key>,
    synced: Vec<bool>,
    /// Collections whose last attempt failed (logged once per failure streak).
    failing: Vec<bool>,
    /// Collections the API server does not serve (retried quietly).
    absent: Vec<bool>,
}

struct Shared {
    /// Counts changes, so a reader can tell whether anything changed since it last looked.
    version: std::sync::atomic::AtomicU64,
    store: Mutex<Store>,
    synced: watch::Sender<bool>,
    changed: mpsc::UnboundedSender<()>,
    domain: String,
}

/// The running source; its watchers stop when it is dropped.
pub struct KubeSource {
    shared: Arc<Shared>,
    synced: watch::Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    client: kube::Client,
    /// One watch per wanted Secret.
    secret_watches: Mutex<BTreeMap<Key, tokio::task::JoinHandle<()>>>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let watches = self
            .secret_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for t in watches.values() {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<Store>) -> MutexGuard<'_, Store> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KubeSource {
    /// Starts watching. Each burst of changes sends one `()` on the returned channel.
    /// `domain` is the cluster's DNS suffix (Services are `NAME.NAMESPACE.svc.DOMAIN`).
    pub fn start(client: kube::Client, domain: &str) -> (KubeSource, mpsc::Receiver<()>) {
        let (changed, raw) = mpsc::unbounded_channel();
        let (synced_tx, synced) = watch::channel(false);
        let shared = Arc::new(Shared {
            version: std::sync::atomic::AtomicU64::new(0),
            store: Mutex::new(Store {
                synced: vec![false; WATCHED.len()],
                failing: vec![false; WATCHED.len()],
                absent: vec![false; WATCHED.len()],
                ..Store::default()
            }),
            synced: synced_tx,
            changed,
            domain: domain.to_string(),
        });
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        for (i, w) in WATCHED.iter().enumerate() {
            if w.role == Role::Secret {
                // Watched one by one as the configuration asks for them.
                shared.mark_synced(&mut lock(&shared.store), i);
                continue;
            }
            tasks.push(tokio::spawn(watch_collection(
                shared.clone(),
                client.clone(),
                i,
                *w,
            )));
        }
        let (tx, rx) = mpsc::channel(1);
        tasks.push(tokio::spawn(debounce(raw, tx)));
        (
            KubeSource {
                shared,
                synced,
                tasks,
                client,
                secret_watches: Mutex::new(BTreeMap::new()),
            },
            rx,
        )
    }

    /// Waits until every collection was listed once (or found not served).
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Watches exactly the Secrets in `wanted` (`(namespace, name)`): those the configuration
    /// refers to and may read. New ones are fetched (and a change is signalled once they
    /// arrive); the others are dropped, with their data.
    pub fn want_secrets(&self, wanted: &std::collections::BTreeSet<(String, String)>) {
        let mut watches = self
            .secret_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut store = lock(&self.shared.store);
        watches.retain(|key, task| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
                store.secrets.remove(key);
                store.secrets_compared.remove(key);
                store.secrets_pending.remove(key);
            }
            keep
        });
        for key in wanted {
            if watches.contains_key(key) {
                continue;
            }
            store.secrets_pending.insert(key.clone());
            let task = tokio::spawn(watch_secret(
                self.shared.clone(),
                self.client.clone(),
                key.clone(),
            ));
            watches.insert(key.clone(), task);
        }
    }

    /// The addresses clients reach Service `namespace/name` at: its load balancer's
    /// (`status.loadBalancer.ingress`, IPs and host names), else its `spec.externalIPs`; none
    /// when it is unknown or has neither (a ClusterIP Service).
    pub fn service_addresses(&self, namespace: &str, name: &str) -> Vec<String> {
        let store = lock(&self.shared.store);
        store
            .services
            .get(&(namespace.to_string(), name.to_string()))
            .map(crate::convert::load_balancer_addresses)
            .unwrap_or_default()
    }

    /// A number that changes whenever what the source holds changes.
    pub fn version(&self) -> u64 {
        self.shared
            .version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether every wanted Secret has been fetched once (found or not).
    pub fn secrets_settled(&self) -> bool {
        lock(&self.shared.store).secrets_pending.is_empty()
    }

    /// The collections (URL paths) whose last list or watch failed and are being retried.
    pub fn failing(&self) -> Vec<String> {
        let store = lock(&self.shared.store);
        WATCHED
            .iter()
            .zip(&store.failing)
            .filter(|(_, f)| **f)
            .map(|(w, _)| w.path())
            .collect()
    }

    /// The cluster's objects as resources, with their load diagnostics; Services with their
    /// EndpointSlices as ServiceEntries.
    pub fn snapshot(&self) -> Snapshot {
        let store = lock(&self.shared.store);
        let mut out = Snapshot::default();
        let mut add = |f: &LoadedFile| {
            out.resources.extend(f.resources.iter().cloned());
            out.rejected.extend(f.rejected.iter().cloned());
            out.diagnostics.extend(f.diagnostics.iter().cloned());
        };
        for files in store.config.values() {
            files.values().for_each(&mut add);
        }
        store.secrets.values().for_each(&mut add);
        let mut slices: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
        for s in store.slices.values() {
            if let Some(svc) = slice_service(s) {
                slices.entry(svc).or_default().push(s);
            }
        }
        for (key, svc) in &store.services {
            let own = slices.get(key).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(se) = service_entry(svc, own, &store.topology, &self.shared.domain) {
                add(&load(
                    &format!("kubernetes:Service/{}/{}", key.0, key.1),
                    &se,
                ));
            }
        }
        out
    }
}

/// Loads one object as the file source loads a file holding it.
fn load(origin: &str, object: &Value) -> LoadedFile {
    match load_str(origin, &object.to_string()) {
        Ok(f) => f,
        Err(e) => LoadedFile {
            diagnostics: vec![e.0],
            ..LoadedFile::default()
        },
    }
}

/// Forwards one `()` per burst of changes.
async fn debounce(mut raw: mpsc::UnboundedReceiver<()>, tx: mpsc::Sender<()>) {
    while raw.recv().await.is_some() {
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw.recv()).await {}
        if tx.send(()).await.is_err() {
            return;
        }
    }
}

/// The object as the API would have served it alone: with its `apiVersion` and `kind` (list
/// items may lack them) and without `managedFields`.
fn object_value(o: DynamicObject, w: &Watched) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(w.api_version()));
        map.insert("kind".into(), Value::String(w.kind.to_string()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    v
}

/// Watches one Secret (cluster-wide, selected by namespace and name, so the RBAC and the
/// collection are those of every other watch) and keeps the store's copy of it.
async fn watch_secret(shared: Arc<Shared>, client: kube::Client, key: Key) {
    let Some(w) = WATCHED.iter().find(|w| w.role == Role::Secret).copied() else {
        return;
    };
    let resource = ApiResource {
        group: w.group.to_string(),
        version: w.version.to_string(),
        api_version: w.api_version(),
        kind: w.kind.to_string(),
        plural: w.plural.to_string(),
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let config = watcher::Config::default().fields(&format!(
        "metadata.namespace={},metadata.name={}",
        key.0, key.1
    ));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Value> = None;
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = None,
            Ok(Event::InitApply(o)) => listing = Some(object_value(o, &w)),
            Ok(Event::InitDone) => shared.secret(&key, &w, listing.take(), true),
            Ok(Event::Apply(o)) => shared.secret(&key, &w, Some(object_value(o, &w)), false),
            Ok(Event::Delete(_)) => shared.secret(&key, &w, None, false),
            Err(e) => {
                if !failing {
                    tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "cannot watch a referenced Secret; retrying");
                }
                failing = true;
                // Readiness does not wait for a Secret that cannot be read.
                lock(&shared.store).secrets_pending.remove(&key);
                continue;
            }
        }
        failing = false;
    }
}

async fn watch_collection(shared: Arc<Shared>, client: kube::Client, index: usize, w: Watched) {
    let resource = ApiResource {
        group: w.group.to_string(),
        version: w.version.to_string(),
        api_version: w.api_version(),
        kind: w.kind.to_string(),
        plural: w.plural.to_string(),
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut config = watcher::Config::default();
    if let Some(f) = w.field_selector {
        config = config.fields(f);
    }
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<Value>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Vec::new()),
            Ok(Event::InitApply(o)) => listing
                .get_or_insert_with(Vec::new)
                .push(object_value(o, &w)),
            Ok(Event::InitDone) => shared.replace(index, &w, listing.take().unwrap_or_default()),
            Ok(Event::Apply(o)) => shared.apply(index, &w, object_value(o, &w)),
            Ok(Event::Delete(o)) => shared.delete(index, &w, &object_value(o, &w)),
            Err(e) => shared.failed(index, &w, &e),
        }
    }
}

impl Shared {
    fn notify(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _ = self.changed.send(());
    }

    fn mark_synced(&self, store: &mut Store, index: usize) {
        if let Some(s) = store.synced.get_mut(index) {
            *s = true;
        }
        if store.synced.iter().all(|s| *s) {
            self.synced.send_replace(true);
        }
    }

    /// The Secret `key` as listed or changed (`None`: there is none); a reload is signalled
    /// when what the configuration reads of it changed, or when its first list answered.
    fn secret(&self, key: &Key, w: &Watched, object: Option<Value>, listed: bool) {
        let mut store = lock(&self.store);
        let first = store.secrets_pending.remove(key);
        let compared = object.as_ref().map(comparable);
        let changed = store.secrets_compared.get(key) != compared.as_ref();
        match (object, compared) {
            (Some(o), Some(c)) => {
                store.secrets.insert(key.clone(), load(&origin(w, &o), &o));
                store.secrets_compared.insert(key.clone(), c);
            }
            _ => {
                store.secrets.remove(key);
                store.secrets_compared.remove(key);
            }
        }
        drop(store);
        if changed || (listed && first) {
            self.notify();
        }
    }

    /// A complete listing replaces what the store had of the collection.
    fn replace(&self, index: usize, w: &Watched, objects: Vec<Value>) {
        let mut store = lock(&self.store);
        match w.role {
            Role::Config => {
                let files = objects
                    .iter()
                    .map(|o| (key_of(o), load(&origin(w, o), o)))
                    .collect();
                store.config.insert(index, files);
                store.compared.retain(|(i, _), _| *i != index);
                for o in &objects {
                    store.compared.insert((index, key_of(o)), comparable(o));
                }
            }
            Role::Service => {
                store.services = objects.into_iter().map(|o| (key_of(&o), o)).collect()
            }
            Role::Endpoints => {
                store.slices = objects.into_iter().map(|o| (key_of(&o), o)).collect()
            }
            Role::Pod => {
                store.topology.pods = objects.iter().map(|o| (key_of(o), strip_pod(o))).collect()
            }
            // Watched one by one (`watch_secret`), never as a collection.
            Role::Secret => {}
            Role::Node => {
                store.topology.nodes = objects
                    .iter()
                    .map(|o| (key_of(o).1, strip_node(o)))
                    .collect()
            }
        }
        self.mark_synced(&mut store, index);
        recovered(&mut store, index);
        drop(store);
        self.notify();
    }

    fn apply(&self, index: usize, w: &Watched, o: Value) {
        let mut store = lock(&self.store);
        recovered(&mut store, index);
        let key = key_of(&o);
        match w.role {
            Role::Config => {
                let compared = comparable(&o);
                let slot = (index, key.clone());
                if store.compared.get(&slot) == Some(&compared) {
                    return;
                }
                store.compared.insert(slot, compared);
                let file = load(&origin(w, &o), &o);
                store.config.entry(index).or_default().insert(key, file);
            }
            Role::Service => {
                store.services.insert(key, o);
            }
            Role::Endpoints => {
                store.slices.insert(key, o);
            }
            // Pods and Nodes change all the time (status, heartbeats); only a change of what
            // endpoints use from them is a change.
            Role::Pod => {
                let pod = strip_pod(&o);
                if store.topology.pods.get(&key) == Some(&pod) {
                    return;
                }
                store.topology.pods.insert(key, pod);
            }
            // Watched one by one (`watch_secret`), never as a collection.
            Role::Secret => {}
            Role::Node => {
                let node = strip_node(&o);
                if store.topology.nodes.get(&key.1) == Some(&node) {
                    return;
                }
                store.topology.nodes.insert(key.1, node);
            }
        }
        drop(store);
        self.notify();
    }

    fn delete(&self, index: usize, w: &Watched, o: &Value) {
        let mut store = lock(&self.store);
        let key = key_of(o);
        match w.role {
            Role::Config => {
                store.compared.remove(&(index, key.clone()));
                if let Some(files) = store.config.get_mut(&index) {
                    files.remove(&key);
                }
            }
            Role::Service => {
                store.services.remove(&key);
            }
            Role::Endpoints => {
                store.slices.remove(&key);
            }
            Role::Pod => {
                store.topology.pods.remove(&key);
            }
            // Watched one by one (`watch_secret`), never as a collection.
            Role::Secret => {}
            Role::Node => {
                store.topology.nodes.remove(&key.1);
            }
        }
        drop(store);
        self.notify();
    }

    /// A failed list or watch. The store keeps its objects (the last configuration keeps
    /// serving); a collection the server does not serve counts as synced and empty.
    fn failed(&self, index: usize, w: &Watched, e: &watcher::Error) {
        let not_served = matches!(
            e,
            watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404
        );
        let mut store = lock(&self.store);
        if not_served {
            if !store.absent.get(index).copied().unwrap_or(false) {
                tracing::info!(collection = %w.path(), "not served by the API server (CRD not installed?); retrying in the background");
            }
            set(&mut store.absent, index, true);
            set(&mut store.failing, index, false);
            store.config.remove(&index);
            store.compared.retain(|(i, _), _| *i != index);
            self.mark_synced(&mut store, index);
            return;
        }
        if !store.failing.get(index).copied().unwrap_or(false) {
            tracing::warn!(collection = %w.path(), error = %e, "watch failed; retrying with backoff, the last configuration keeps serving");
        }
        set(&mut store.failing, index, true);
    }
}

fn set(flags: &mut [bool], index: usize, value: bool) {
    if let Some(f) = flags.get_mut(index) {
        *f = value;
    }
}

/// A collection answered again: its failure streak is over.
fn recovered(store: &mut Store, index: usize) {
    if store.failing.get(index).copied().unwrap_or(false) {
        tracing::info!(collection = %WATCHED.get(index).map(Watched::path).unwrap_or_default(), "watch recovered");
    }
    set(&mut store.failing, index, false);
    set(&mut store.absent, index, false);
}

/// An object without the fields the API server changes by itself (`status`,
/// `metadata.resourceVersion`): configuration never depends on them.
fn comparable(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
    }
    v
}

/// The name diagnostics give an object: `kubernetes:KIND/NAMESPACE/NAME`.
fn origin(w: &Watched, o: &Value) -> String {
    let (ns, name) = key_of(o);
    if ns.is_empty() {
        format!("kubernetes:{}/{name}", w.kind)
    } else {
        format!("kubernetes:{}/{ns}/{name}", w.kind)
    }
}
