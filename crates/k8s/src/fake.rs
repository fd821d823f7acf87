//! An in-process fake of the Kubernetes API server, speaking the real HTTP API for what the
//! source uses: cluster-wide list (with `resourceVersion` and `fieldSelector`) and watch
//! (newline-delimited `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` events from a resource version,
//! `ERROR` 410 Gone once that version is compacted away), GET of one object, merge-PATCH of an
//! object's `status` subresource (stored, and seen by watchers as `MODIFIED`), and Leases
//! (`coordination.k8s.io/v1`: GET, POST, and PUT that fails with 409 Conflict on a stale
//! `resourceVersion`, as the real server's optimistic concurrency does). Tests add and delete
//! objects, drop every watch connection, or compact the history, and count list and watch
//! requests.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use crate::kinds::{WATCHED, Watched};

type Body = BoxBody<Bytes, Infallible>;

/// One change of an object, in resource-version order.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Clone)]
enum Broadcast {
    Change(Change),
    /// Every watch connection ends.
    Disconnect,
}

#[derive(Default)]
struct State {
    /// While set, requests wait (an API server that does not answer yet).
    held: bool,
    rv: u64,
    /// Changes at or below this version are gone: a watch from before it gets 410.
    compacted: u64,
    /// Collection path -> (namespace, name) -> object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    history: Vec<Change>,
    served: BTreeSet<String>,
    lists: usize,
    watches: usize,
    /// Leases by (namespace, name).
    leases: BTreeMap<(String, String), Value>,
    status_patches: usize,
    /// Status patches still to be refused with 409, as if another writer had just changed
    /// the object (to test that writers read again and retry).
    status_conflicts: usize,
    /// Every collection request (list or watch): its path and decoded field selector.
    collection_requests: Vec<(String, String)>,
}

/// A running fake API server; it stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Broadcast>,
    released: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
    /// Every connection's task, so that dropping the server closes them all (clients keep
    /// idle connections for reuse, which would otherwise outlive it).
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
        let conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.iter() {
            c.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watched collection of an `apiVersion` and `kind`.
fn watched(api_version: &str, kind: &str) -> Option<&'static Watched> {
    WATCHED
        .iter()
        .find(|w| w.api_version() == api_version && w.kind == kind)
}

impl FakeApi {
    /// Serves every watched collection except those of the given API groups (as a cluster
    /// without, say, Istio's CRDs installed answers 404 for them).
    pub async fn start(without_groups: &[&str]) -> std::io::Result<FakeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut s = lock(&state);
            for w in WATCHED
                .iter()
                .filter(|w| !without_groups.contains(&w.group))
            {
                s.served.insert(w.path());
            }
        }
        let (events, _) = broadcast::channel(1024);
        let released = Arc::new(tokio::sync::Notify::new());
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (st, ev, rel, conns) = (
            state.clone(),
            events.clone(),
            released.clone(),
            connections.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, ev, rel) = (st.clone(), ev.clone(), rel.clone());
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, ev, rel) = (st.clone(), ev.clone(), rel.clone());
                        async move {
                            // Registered before the check, so a release in between is seen.
                            let wait = rel.notified();
                            if lock(&st).held {
                                wait.await;
                            }
                            Ok::<_, Infallible>(answer(&st, &ev, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
                conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(conn.abort_handle());
            }
        });
        Ok(FakeApi {
            addr,
            state,
            events,
            released,
            task,
            connections,
        })
    }

    /// Requests wait unanswered until [`FakeApi::release`].
    pub fn hold(&self) {
        lock(&self.state).held = true;
    }

    /// Answers the waiting requests, and the next ones at once.
    pub fn release(&self) {
        lock(&self.state).held = false;
        self.released.notify_waiters();
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that points at this server without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: '{}'}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake, namespace: default}}\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Adds or replaces an object (it must have `apiVersion`, `kind` and `metadata.name`);
    /// watchers get `ADDED` or `MODIFIED`.
    pub fn apply(&self, mut object: Value) {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let Some(w) = watched(&text("/apiVersion"), &text("/kind")) else {
            return;
        };
        let key = (text("/metadata/namespace"), text("/metadata/name"));
        let mut s = lock(&self.state);
        s.rv += 1;
        let rv = s.rv;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!(format!("2024-01-01T00:00:{:02}Z", rv % 60)));
        }
        let collection = w.path();
        let existed = s
            .objects
            .entry(collection.clone())
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let kind = if existed { "MODIFIED" } else { "ADDED" };
        self.record(&mut s, collection, kind, object);
    }

    /// Deletes an object; watchers get `DELETED`.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let Some(w) = watched(api_version, kind) else {
            return;
        };
        let mut s = lock(&self.state);
        let removed = s
            .objects
            .get_mut(&w.path())
            .and_then(|m| m.remove(&(namespace.to_string(), name.to_string())));
        if let Some(mut object) = removed {
            s.rv += 1;
            let rv = s.rv;
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
            }
            self.record(&mut s, w.path(), "DELETED", object);
        }
    }

    fn record(&self, s: &mut State, collection: String, kind: &'static str, object: Value) {
        let change = Change {
            rv: s.rv,
            collection,
            kind,
            object,
        };
        s.history.push(change.clone());
        let _ = self.events.send(Broadcast::Change(change));
    }

    /// Ends every watch connection: clients reconnect from the version they had.
    pub fn disconnect(&self) {
        let _ = self.events.send(Broadcast::Disconnect);
    }

    /// Forgets the history up to now and ends every watch: a client that watches again from
    /// an older version gets `410 Gone` and must list again.
    pub fn compact(&self) {
        let mut s = lock(&self.state);
        // A new version marks the compaction, so that a list made after it can be watched from.
        s.rv += 1;
        s.compacted = s.rv;
        s.history.clear();
        drop(s);
        self.disconnect();
    }

    /// How many list requests were answered.
    pub fn lists(&self) -> usize {
        lock(&self.state).lists
    }

    /// How many watch requests were answered.
    pub fn watches(&self) -> usize {
        lock(&self.state).watches
    }

    /// How many status PATCH requests succeeded.
    /// The path and field selector of every list and watch so far.
    pub fn collection_requests(&self) -> Vec<(String, String)> {
        lock(&self.state).collection_requests.clone()
    }

    /// Refuses the next `n` status patches with 409 Conflict.
    pub fn conflict_next_status_patches(&self, n: usize) {
        lock(&self.state).status_conflicts = n;
    }

    pub fn status_patches(&self) -> usize {
        lock(&self.state).status_patches
    }

    /// An object as the server holds it now (with any status written to it).
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let w = watched(api_version, kind)?;
        lock(&self.state)
            .objects
            .get(&w.path())?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// A Lease as the server holds it now.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// The query parameters of a request.
fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect()
}

/// Percent-decoding of a query value (the field selector is `type%3Dkubernetes.io%2Ftls`).
fn decode(v: &str) -> String {
    let mut out = Vec::with_capacity(v.len());
    let bytes = v.as_bytes();
    let mut i = 0;
    while let Some(b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(h)) => {
                out.push(h);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(*b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an object passes a `field=value` selector (only `type` is used: TLS Secrets).
/// Whether `object` matches a field selector: comma-separated `path.to.field=value` terms,
/// all of which must hold (what the API server supports for the fields the source selects on).
fn selected(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let Some((field, value)) = term.split_once('=') else {
            return false;
        };
        let pointer = format!("/{}", field.replace('.', "/"));
        object.pointer(&pointer).and_then(Value::as_str) == Some(value)
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn not_found() -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

async fn answer(
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<Broadcast>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = query(&req);
    let Some(w) = WATCHED.iter().find(|w| w.path() == path) else {
        let method = req.method().clone();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return match parse_object_path(&path) {
            Some(p) if p.plural == "leases" && p.prefix == "/apis/coordination.k8s.io/v1" => {
                lease(state, &method, &p, body)
            }
            Some(p) => object(state, events, &method, &p, &body),
            None => not_found(),
        };
    };
    let selector = q.get("fieldSelector").cloned().unwrap_or_default();
    lock(state)
        .collection_requests
        .push((path.clone(), selector));
    if !lock(state).served.contains(&path) {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    if q.get("watch").is_some_and(|v| v == "true" || v == "1") {
        watch(state, events, w, &q)
    } else {
        list(state, w, &q)
    }
}

fn list(state: &Arc<Mutex<State>>, w: &Watched, q: &BTreeMap<String, String>) -> Response<Body> {
    let mut s = lock(state);
    s.lists += 1;
    let items: Vec<Value> = s
        .objects
        .get(&w.path())
        .map(|m| {
            m.values()
                .filter(|o| selected(o, q.get("fieldSelector")))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let body = json!({
        "apiVersion": w.api_version(),
        "kind": format!("{}List", w.kind),
        "metadata": {"resourceVersion": s.rv.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A watch stream: the changes after the requested version, a bookmark, then live changes
/// until the client goes or the server disconnects everyone.
fn watch(
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<Broadcast>,
    w: &Watched,
    q: &BTreeMap<String, String>,
) -> Response<Body> {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let selector = q.get("fieldSelector").cloned();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let mut live = events.subscribe();
    let replayed;
    {
        let mut s = lock(state);
        s.watches += 1;
        if from < s.compacted {
            let _ = tx.send(event_line(
                "ERROR",
                &status(410, "Expired", "too old resource version"),
            ));
            drop(tx);
            return stream_response(rx);
        }
        for c in s
            .history
            .iter()
            .filter(|c| c.rv > from && c.collection == w.path())
        {
            if selected(&c.object, selector.as_ref()) {
                let _ = tx.send(event_line(c.kind, &c.object));
            }
        }
        let bookmark = json!({"apiVersion": w.api_version(), "kind": w.kind,
                              "metadata": {"resourceVersion": s.rv.to_string()}});
        let _ = tx.send(event_line("BOOKMARK", &bookmark));
        replayed = s.rv.max(from);
    }
    let collection = w.path();
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                // Changes up to `replayed` were sent from the history already.
                Ok(Broadcast::Change(c)) if c.collection == collection && c.rv > replayed => {
                    if selected(&c.object, selector.as_ref())
                        && tx.send(event_line(c.kind, &c.object)).is_err()
                    {
                        return;
                    }
                }
                Ok(Broadcast::Change(_)) => {}
                Ok(Broadcast::Disconnect) | Err(_) => return,
            }
        }
    });
    stream_response(rx)
}

fn stream_response(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The parts of a URL that names one object, or a namespaced collection (`name` unset).
struct ObjectPath {
    /// `/api/v1` or `/apis/GROUP/VERSION`.
    prefix: String,
    namespace: String,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_object_path(path: &str) -> Option<ObjectPath> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let prefix_len = match *segs.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    let prefix = format!("/{}", segs.get(..prefix_len)?.join("/"));
    let rest = segs.get(prefix_len..)?;
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (ns.to_string(), tail),
        _ => (String::new(), rest),
    };
    Some(ObjectPath {
        prefix,
        namespace,
        plural: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

/// JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// GET of one object of a watched collection, and merge-PATCH of its `status`.
fn object(
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<Broadcast>,
    method: &http::Method,
    p: &ObjectPath,
    body: &Value,
) -> Response<Body> {
    let collection = format!("{}/{}", p.prefix, p.plural);
    if !WATCHED.iter().any(|w| w.path() == collection) {
        return not_found();
    }
    let Some(name) = &p.name else {
        return not_found();
    };
    let key = (p.namespace.clone(), name.clone());
    let mut s = lock(state);
    if !s.served.contains(&collection) {
        return not_found();
    }
    let Some(current) = s
        .objects
        .get(&collection)
        .and_then(|m| m.get(&key))
        .cloned()
    else {
        return not_found();
    };
    match (method, p.subresource.as_deref()) {
        (&http::Method::GET, None | Some("status")) => json_response(StatusCode::OK, &current),
        (&http::Method::PATCH, Some("status")) => {
            // A patch naming a resourceVersion applies to that version only, as on the real
            // server (optimistic concurrency).
            let version = body.pointer("/metadata/resourceVersion");
            let stale =
                version.is_some_and(|v| current.pointer("/metadata/resourceVersion") != Some(v));
            if stale || s.status_conflicts > 0 {
                s.status_conflicts = s.status_conflicts.saturating_sub(1);
                return json_response(
                    StatusCode::CONFLICT,
                    &status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            let mut updated = current;
            // The status subresource changes nothing but `status`.
            if let Some(st) = body.get("status")
                && let Some(map) = updated.as_object_mut()
            {
                merge_patch(map.entry("status").or_insert(Value::Null), st);
            }
            s.rv += 1;
            let rv = s.rv;
            if let Some(meta) = updated.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
            }
            s.objects
                .entry(collection.clone())
                .or_default()
                .insert(key, updated.clone());
            s.status_patches += 1;
            let change = Change {
                rv,
                collection,
                kind: "MODIFIED",
                object: updated.clone(),
            };
            s.history.push(change.clone());
            let _ = events.send(Broadcast::Change(change));
            json_response(StatusCode::OK, &updated)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(
                405,
                "MethodNotAllowed",
                "not supported by the fake API server",
            ),
        ),
    }
}

/// Leases: GET, POST (409 if it exists) and PUT (409 on a stale `resourceVersion`).
fn lease(
    state: &Arc<Mutex<State>>,
    method: &http::Method,
    p: &ObjectPath,
    mut body: Value,
) -> Response<Body> {
    let mut s = lock(state);
    let conflict =
        |message: &str| json_response(StatusCode::CONFLICT, &status(409, "Conflict", message));
    let body_name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(name) = p.name.clone().or(body_name) else {
        return not_found();
    };
    let key = (p.namespace.clone(), name.clone());
    let stored_rv = s
        .leases
        .get(&key)
        .and_then(|l| l.pointer("/metadata/resourceVersion"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match method {
        &http::Method::GET => match s.leases.get(&key) {
            Some(l) => json_response(StatusCode::OK, l),
            None => not_found(),
        },
        &http::Method::POST | &http::Method::PUT => {
            let creating = method == http::Method::POST;
            if creating && stored_rv.is_some() {
                return conflict("leases already exists");
            }
            if !creating {
                let sent = body
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str);
                if stored_rv.is_none() {
                    return not_found();
                }
                if sent != stored_rv.as_deref() {
                    return conflict(
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
            }
            s.rv += 1;
            let rv = s.rv;
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(rv.to_string()));
                meta.insert("namespace".into(), json!(p.namespace));
                meta.insert("name".into(), json!(name));
            }
            s.leases.insert(key, body.clone());
            let code = if creating {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(code, &body)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(
                405,
                "MethodNotAllowed",
                "not supported by the fake API server",
            ),
        ),
    }
}
