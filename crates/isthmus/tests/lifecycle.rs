//! The gateway's life cycle end to end: readiness, hot reload under traffic, Gateway ports
//! appearing and disappearing, broken files and invalid resources, SIGHUP, `isthmus validate`,
//! draining on SIGTERM, DNS endpoints and request metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use support::*;

const HOST: &str = "httpbin.example.com";

// === Configuration builders ===

/// A VirtualService `name` bound to Gateway `gw`, sending `host` to the service `dest`.
fn simple_vs(name: &str, host: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  gateways: [gw]
  http:
  - route: [{{destination: {{host: {dest}}}}}]
"
    )
}

/// Like [`simple_vs`] with a URI regex match (`regex` is written as a YAML string).
fn regex_vs(name: &str, host: &str, dest: &str, regex: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  gateways: [gw]
  http:
  - match: [{{uri: {{regex: '{regex}'}}}}]
    route: [{{destination: {{host: {dest}}}}}]
"
    )
}

/// Gateway `gw` on port 80 for every host, service `httpbin.local` on `backend`, and the
/// VirtualService `vs` sending `httpbin.example.com` to it.
fn base_files(backend: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("gw.yaml", gateway(&[(80, &["*"])])),
        (
            "svc.yaml",
            service("httpbin", "httpbin.local", &[(backend, "v1")]),
        ),
        ("vs.yaml", simple_vs("vs", HOST, "httpbin.local")),
    ]
}

/// A fresh configuration folder holding `files`.
fn config_dir(files: &[(&'static str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

async fn start(files: &[(&'static str, String)], extra: &[&str]) -> Gateway {
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Gateway::start_with(&files, extra).await
}

// === Small assertions ===

/// Status and answering backend of `GET path` with `host` on Gateway port `port`.
async fn probe(g: &Gateway, port: u16, host: &str, path: &str) -> (u16, Option<String>) {
    let r = get(&g.url(port, path).await, host, &[]).await;
    (r.status, r.backend().map(str::to_string))
}

/// Waits until `GET /get` for `host` on port 80 answers `status` (from `backend` if given).
/// Used after a file change: a reload may be triggered before the change is complete.
async fn wait_answer(g: &Gateway, host: &str, status: u16, backend: Option<&str>) {
    let what = format!("{host} answers {status} from {backend:?}");
    eventually(&what, || async {
        let (s, b) = probe(g, 80, host, "/get").await;
        s == status && (backend.is_none() || b.as_deref() == backend)
    })
    .await;
}

async fn wait_diagnostic(g: &Gateway, what: &str, check: impl Fn(&str) -> bool) {
    eventually(what, || async {
        g.diagnostics().await.iter().any(|d| check(d))
    })
    .await;
}

/// Waits until the gateway's log (read in the background) contains `needle`.
async fn wait_log(g: &Gateway, needle: &str) {
    eventually(&format!("log line {needle:?}"), || async {
        g.log().contains(needle)
    })
    .await;
}

async fn ready_status(g: &Gateway) -> u16 {
    g.admin_get("/healthz/ready").await.0
}

/// Gateway ports currently bound, from `/listeners`.
async fn bound_ports(g: &Gateway) -> Vec<u16> {
    let v: serde_json::Value = serde_json::from_str(&g.admin_get("/listeners").await.1).unwrap();
    let mut ports: Vec<u16> = v
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    ports.sort_unstable();
    ports
}

// === One HTTP/1.1 connection, kept across reloads ===

/// Opens one HTTP/1.1 connection; every request sent on the result uses that connection.
async fn open_connection(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `GET path` on the connection; the status, or an error if the connection is gone.
async fn send_on(
    conn: &mut SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<u16, String> {
    let exchange = async {
        conn.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get(path)
            .header("host", host)
            .body(Empty::new())
            .unwrap();
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

// === A client that keeps requesting in the background ===

struct Traffic {
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Upper bounds of the background client, whatever happens in the test.
const TRAFFIC_MAX_REQUESTS: usize = 50_000;
const TRAFFIC_MAX_TIME: Duration = Duration::from_secs(60);

/// Sends `GET url` with `host` in a loop until stopped: mostly on one pooled client (kept-alive
/// connections), every tenth on a fresh client (a new connection). Any error or non-200
/// answer is a failure.
fn keep_requesting(url: String, host: &'static str) -> Traffic {
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok2, failures2, stop2) = (ok.clone(), failures.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let pooled = client();
        let started = Instant::now();
        for i in 0..TRAFFIC_MAX_REQUESTS {
            if stop2.load(Ordering::SeqCst) || started.elapsed() > TRAFFIC_MAX_TIME {
                return;
            }
            let c = if i % 10 == 0 {
                client()
            } else {
                pooled.clone()
            };
            match request_ok(&c, &url, host).await {
                Ok(()) => {
                    ok2.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => failures2.lock().unwrap().push(e),
            }
        }
    });
    Traffic {
        ok,
        failures,
        stop,
        task,
    }
}

/// One `GET url` with `host`: Ok if it was answered 200 with a complete body.
async fn request_ok(c: &reqwest::Client, url: &str, host: &str) -> Result<(), String> {
    let r = c
        .get(url)
        .header("host", host)
        .send()
        .await
        .map_err(|e| format!("error: {e:?}"))?;
    let status = r.status();
    r.bytes().await.map_err(|e| format!("body: {e}"))?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

impl Traffic {
    /// Waits until `n` more requests succeeded, so the client is known to be running.
    async fn wait_progress(&self, n: usize) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        eventually("background requests progress", || async {
            self.ok.load(Ordering::SeqCst) >= target
        })
        .await;
    }

    /// Stops the client; the number of successes and the failures.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(WAIT * 2, self.task)
            .await
            .expect("background client did not stop")
            .unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

// === A backend that holds requests until released ===

struct HeldBackend {
    addr: SocketAddr,
    /// One message per request that reached the backend.
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

/// A request is never held longer than this, even if the test forgets to release it.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// A backend that reports the arrival of each request for `/slow...`, then answers it 200
/// only once released; other requests are answered at once.
async fn held_backend() -> HeldBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived_tx, released) = (arrived_tx.clone(), released.clone());
            let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let held = req.uri().path().starts_with("/slow");
                if held {
                    let _ = arrived_tx.send(());
                }
                let mut released = released.clone();
                async move {
                    if held {
                        let _ = tokio::time::timeout(HOLD_LIMIT, released.wait_for(|r| *r)).await;
                    }
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"released\n",
                    ))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    HeldBackend {
        addr,
        arrived,
        release,
    }
}

impl HeldBackend {
    async fn wait_arrival(&mut self) {
        tokio::time::timeout(WAIT, self.arrived.recv())
            .await
            .expect("the request did not reach the backend")
            .unwrap();
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// An h2c client that sends requests for `host` to `addr` (so `:authority` names `host`).
fn h2c_client_resolving(host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(host, addr)
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// Starts `GET /slow` with `HOST` in the background; its status or error.
fn spawn_request(url: String) -> tokio::task::JoinHandle<Result<u16, String>> {
    tokio::spawn(async move {
        let resp = client()
            .get(url)
            .header("host", HOST)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.bytes().await.map_err(|e| e.to_string())?;
        Ok(status)
    })
}

// === isthmus validate ===

struct Validation {
    code: Option<i32>,
    lines: Vec<String>,
    stderr: String,
}

fn validate(paths: &[&Path]) -> Validation {
    let out = std::process::Command::new(bin())
        .arg("validate")
        .args(paths)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    Validation {
        code: out.status.code(),
        lines: String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn acceptance_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/acceptance-data/istio");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.unwrap().path().join("config.yaml"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

// === Readiness ===

#[tokio::test]
async fn ready_once_the_configuration_is_applied_and_listeners_are_bound() {
    let b = backend("v1").await;
    let g = start(&base_files(b), &[]).await;
    assert_eq!(ready_status(&g).await, 200);
    let dump = g.config_dump().await;
    assert_eq!(dump["ready"], true);
    assert!(dump["generation"].as_u64().unwrap() >= 1, "{dump}");
    assert_eq!(bound_ports(&g).await, [80]);
    assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("v1".into())));
}

#[tokio::test]
async fn not_ready_while_a_gateway_port_cannot_be_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let b = backend("v1").await;
    let bind = format!("80={addr}");
    let g = Gateway::spawn(config_dir(&base_files(b)), &["--bind", &bind]);
    g.wait_generation_after(0).await;
    assert_eq!(ready_status(&g).await, 503);
    assert!(!bound_ports(&g).await.contains(&80));
    let wanted = format!(": error: -: -: cannot bind Gateway port 80 on {addr}: ");
    let diags = g.diagnostics().await;
    assert!(
        diags.iter().any(|d| d.contains(&wanted)),
        "no diagnostic {wanted:?} in {diags:#?}"
    );

    // Once the address is free, the next reload binds it and the gateway becomes ready.
    drop(taken);
    let before = g.generation().await;
    g.signal("HUP");
    g.wait_generation_after(before).await;
    assert_eq!(ready_status(&g).await, 200);
    assert_eq!(g.addr(80).await, addr);
    assert_eq!(probe(&g, 80, HOST, "/get").await.0, 200);
}

// === Reloads ===

#[tokio::test]
async fn routes_are_added_and_removed_while_traffic_keeps_flowing() {
    let b = backend("v1").await;
    let g = start(&base_files(b), &[]).await;
    let traffic = keep_requesting(g.url(80, "/get").await, HOST);
    traffic.wait_progress(20).await;

    g.write(
        "new.yaml",
        &simple_vs("new", "new.example.com", "httpbin.local"),
    )
    .await;
    wait_answer(&g, "new.example.com", 200, Some("v1")).await;
    traffic.wait_progress(20).await;

    g.remove("new.yaml").await;
    wait_answer(&g, "new.example.com", 404, None).await;
    traffic.wait_progress(20).await;

    let (ok, failures) = traffic.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed on the untouched route: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok >= 60, "only {ok} requests");
}

/// A DestinationRule whose subset `stable` selects the endpoints labelled `version`.
fn stable_subset(version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin, namespace: default}}
spec:
  host: httpbin.local
  subsets: [{{name: stable, labels: {{version: {version}}}}}]
"
    )
}

#[tokio::test]
async fn routes_kept_across_reloads_follow_what_their_destinations_now_resolve_to() {
    // A reload keeps the compiled routes of every VirtualService it did not change. These
    // edits touch everything but the VirtualService, and each must still show in its answers.
    let (v1, v2) = (backend("v1").await, backend("v2").await);
    let stable_vs = simple_vs("vs", HOST, "httpbin.local").replace(
        "{host: httpbin.local}",
        "{host: httpbin.local, subset: stable}",
    );
    let files = vec![
        ("gw.yaml", gateway(&[(80, &["*"])])),
        (
            "svc.yaml",
            service("httpbin", "httpbin.local", &[(v1, "v1"), (v2, "v2")]),
        ),
        ("dr.yaml", stable_subset("v1")),
        ("vs.yaml", stable_vs),
        (
            "other.yaml",
            simple_vs("other", "other.example.com", "httpbin.local"),
        ),
    ];
    let g = start(&files, &[]).await;
    wait_answer(&g, HOST, 200, Some("v1")).await;

    // The subset now selects other endpoints.
    g.write("dr.yaml", &stable_subset("v2")).await;
    wait_answer(&g, HOST, 200, Some("v2")).await;

    // Another VirtualService changes: this one keeps answering.
    g.write(
        "other.yaml",
        &simple_vs("other", "renamed.example.com", "httpbin.local"),
    )
    .await;
    wait_answer(&g, "renamed.example.com", 200, None).await;
    assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("v2".into())));

    // The subset is gone: Istio answers 503 for a route to an undefined subset.
    g.remove("dr.yaml").await;
    wait_answer(&g, HOST, 503, None).await;
    wait_diagnostic(&g, "the undefined subset is reported", |d| {
        d.contains("subset \"stable\" is not defined")
    })
    .await;

    // Back, and the service loses its v2 endpoint: the subset is empty (503, no healthy
    // upstream), though the route itself did not change.
    g.write("dr.yaml", &stable_subset("v2")).await;
    wait_answer(&g, HOST, 200, Some("v2")).await;
    g.write(
        "svc.yaml",
        &service("httpbin", "httpbin.local", &[(v1, "v1")]),
    )
    .await;
    wait_answer(&g, HOST, 503, None).await;
}

#[tokio::test]
async fn gateway_ports_are_bound_and_closed_without_touching_the_others() {
    let b = backend("v1").await;
    let g = start(&base_files(b), &[]).await;
    assert_eq!(bound_ports(&g).await, [80]);
    let addr80 = g.addr(80).await;
    let mut kept = open_connection(addr80).await;
    assert_eq!(send_on(&mut kept, HOST, "/get").await, Ok(200));

    // Adding a server on port 81 binds it; the connection on port 80 stays usable.
    g.write("gw.yaml", &gateway(&[(80, &["*"]), (81, &["*"])]))
        .await;
    eventually("port 81 bound", || async {
        bound_ports(&g).await == [80, 81]
    })
    .await;
    let addr81 = g.addr(81).await;
    assert_eq!(probe(&g, 81, HOST, "/get").await, (200, Some("v1".into())));
    assert_eq!(send_on(&mut kept, HOST, "/get").await, Ok(200));
    assert_eq!(g.addr(80).await, addr80);
    let mut kept81 = open_connection(addr81).await;
    assert_eq!(send_on(&mut kept81, HOST, "/get").await, Ok(200));

    // Removing it closes that listener only, and its idle keep-alive connections.
    g.write("gw.yaml", &gateway(&[(80, &["*"])])).await;
    eventually("port 81 unbound", || async {
        bound_ports(&g).await == [80]
    })
    .await;
    eventually("connections to port 81 refused", || refused(addr81)).await;
    eventually("the keep-alive connection on port 81 closed", || {
        let closed = kept81.is_closed();
        async move { closed }
    })
    .await;
    assert_eq!(send_on(&mut kept, HOST, "/get").await, Ok(200));
    assert_eq!(probe(&g, 80, HOST, "/get").await.0, 200);
    assert_eq!(g.addr(80).await, addr80);
}

#[tokio::test]
async fn a_broken_file_or_an_invalid_resource_keeps_the_last_good_version() {
    let (b1, b2) = (backend("v1").await, backend("v2").await);
    let mut files = base_files(b1);
    files.push((
        "svc2.yaml",
        service("httpbin2", "httpbin2.local", &[(b2, "v2")]),
    ));
    let g = start(&files, &[]).await;
    let vs = g.path("vs.yaml").display().to_string();
    assert_eq!(probe(&g, 80, HOST, "/get").await.1.as_deref(), Some("v1"));

    // A YAML syntax error: the file's previous resources keep serving.
    let broken = simple_vs("vs", HOST, "httpbin2.local").replace("hosts: [", "hosts: [[");
    g.write("vs.yaml", &broken).await;
    // FILE:LINE: error: -: -: YAML syntax error: ...
    wait_diagnostic(&g, "a YAML syntax error", |d| {
        d.strip_prefix(&format!("{vs}:"))
            .and_then(|rest| rest.split_once(": error: -: -: YAML syntax error: "))
            .is_some_and(|(line, _)| line.parse::<usize>().is_ok_and(|n| n >= 1))
    })
    .await;
    let kept = "the file does not parse; its previous 1 resource(s) keep serving";
    assert!(g.diagnostics().await.iter().any(|d| d.contains(kept)));
    assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("v1".into())));

    // Fixing the file applies the fix.
    g.write("vs.yaml", &simple_vs("vs", HOST, "httpbin2.local"))
        .await;
    wait_answer(&g, HOST, 200, Some("v2")).await;
    eventually("no error diagnostics", || async {
        !g.diagnostics()
            .await
            .iter()
            .any(|d| d.contains(": error: "))
    })
    .await;

    // A resource that became invalid keeps its last good version, across later reloads too.
    g.write(
        "vs.yaml",
        &regex_vs("vs", HOST, "httpbin.local", "(unclosed"),
    )
    .await;
    let field =
        ": error: VirtualService default/vs: spec.http[0].match[0].uri.regex: invalid regex";
    let regex_error = format!("{vs}:8{field}");
    wait_diagnostic(&g, "the invalid regex", |d| d.starts_with(&regex_error)).await;
    assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("v2".into())));
    g.write(
        "other.yaml",
        &simple_vs("other", "other.example.com", "httpbin.local"),
    )
    .await;
    wait_answer(&g, "other.example.com", 200, Some("v1")).await;
    assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("v2".into())));
    assert!(
        g.diagnostics()
            .await
            .iter()
            .any(|d| d.starts_with(&regex_error))
    );
}

#[tokio::test]
async fn sighup_reloads() {
    let b = backend("v1").await;
    // extra.yaml is a symlink to a file outside the watched folder: edits to that file raise
    // no watcher event, so only SIGHUP makes them live. The symlink exists from the start, so
    // nothing in the folder changes during the test.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("extra.yaml");
    std::fs::write(&target, "").unwrap();
    let dir = config_dir(&base_files(b));
    std::os::unix::fs::symlink(&target, dir.path().join("extra.yaml")).unwrap();
    let g = Gateway::spawn(dir, &[]);
    g.wait_ready().await;

    let before = g.generation().await;
    g.signal("HUP");
    g.wait_generation_after(before).await;
    wait_log(&g, "SIGHUP: reloading").await;

    std::fs::write(
        &target,
        simple_vs("extra", "extra.example.com", "httpbin.local"),
    )
    .unwrap();
    let before = g.generation().await;
    g.signal("HUP");
    g.wait_generation_after(before).await;
    assert_eq!(
        probe(&g, 80, "extra.example.com", "/get").await,
        (200, Some("v1".into()))
    );
}

#[tokio::test]
async fn signals_are_handled_as_soon_as_the_admin_address_is_announced() {
    let b = backend("v1").await;
    // `spawn` returns once the admin address is logged, before the first configuration is
    // applied: a SIGHUP right then must reload, not kill the process.
    let mut g = Gateway::spawn(config_dir(&base_files(b)), &[]);
    g.signal("HUP");
    g.wait_ready().await;
    wait_log(&g, "SIGHUP: reloading").await;
    eventually("the SIGHUP reload", || async { g.generation().await >= 2 }).await;
    assert!(g.is_running());
    assert_eq!(probe(&g, 80, HOST, "/get").await.0, 200);

    // Likewise SIGTERM right after start drains and exits 0.
    let mut g2 = Gateway::spawn(config_dir(&base_files(b)), &[]);
    g2.signal("TERM");
    assert_eq!(g2.exit_code_within(WAIT).await, Some(0), "{}", g2.log());
    drop(g);
}

// === isthmus validate ===

const GATEWAY_AND_SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9999}, labels: {version: v1}}
";

const INVALID: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw2, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: eighty, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  htttp:
  - route: [{destination: {host: httpbin.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: regex, namespace: default}
spec:
  hosts: [b.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {regex: '(unclosed'}}]
    route: [{destination: {host: httpbin.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subset, namespace: default}
spec:
  hosts: [c.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: httpbin.local, subset: v9}}]
";

#[test]
fn validate_accepts_a_valid_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), GATEWAY_AND_SERVICE).unwrap();
    std::fs::write(
        dir.path().join("vs.yaml"),
        simple_vs("vs", HOST, "httpbin.local"),
    )
    .unwrap();
    let v = validate(&[dir.path()]);
    assert_eq!(v.code, Some(0), "{:#?}\n{}", v.lines, v.stderr);
    assert!(
        !v.lines.iter().any(|l| l.contains(": error: ")),
        "{:#?}",
        v.lines
    );
    assert!(
        v.stderr.contains("3 resource(s) checked: 0 error(s)"),
        "{}",
        v.stderr
    );
}

#[test]
fn validate_reports_file_line_resource_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), GATEWAY_AND_SERVICE).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, INVALID).unwrap();
    let v = validate(&[dir.path()]);
    assert_eq!(v.code, Some(1), "{:#?}\n{}", v.lines, v.stderr);
    let f = bad.display();
    for want in [
        format!(
            "{f}:7: error: Gateway default/gw2: spec.servers[0].port.number: invalid type: string \"eighty\", expected u32; object rejected"
        ),
        format!(
            "{f}:16: warning: VirtualService default/typo: spec.htttp: unknown field `htttp` (ignored; check the spelling)"
        ),
        format!(
            "{f}:26: error: VirtualService default/regex: spec.http[0].match[0].uri.regex: invalid regex \"(unclosed\": error: unclosed group"
        ),
        format!(
            "{f}:36: error: VirtualService default/subset: spec.http[0].route[0].destination.subset: subset \"v9\" is not defined by any DestinationRule for host httpbin.local; requests to it answer 503"
        ),
    ] {
        assert!(
            v.lines.contains(&want),
            "missing\n  {want}\nin\n{:#?}",
            v.lines
        );
    }
    // Every line has the documented shape.
    for line in &v.lines {
        let parts: Vec<&str> = line.splitn(5, ": ").collect();
        assert_eq!(parts.len(), 5, "{line}");
        let (file, number) = parts[0].rsplit_once(':').unwrap();
        assert!(
            file.ends_with(".yaml") && number.parse::<usize>().is_ok(),
            "{line}"
        );
        assert!(["error", "warning", "note"].contains(&parts[1]), "{line}");
        let (kind, name) = parts[2].split_once(' ').unwrap();
        assert!(["Gateway", "VirtualService"].contains(&kind), "{line}");
        assert!(name.starts_with("default/"), "{line}");
        assert!(parts[3].starts_with("spec."), "{line}");
    }
    assert!(v.stderr.contains("3 error(s)"), "{}", v.stderr);

    // Files can be named one by one as well.
    let base = dir.path().join("base.yaml");
    let v2 = validate(&[&bad, &base]);
    assert_eq!((v2.code, v2.lines), (v.code, v.lines));
}

#[test]
fn validate_reports_a_yaml_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.yaml");
    std::fs::write(&file, "kind: VirtualService\nspec: [\n  hosts: : x\n").unwrap();
    let v = validate(&[&file]);
    assert_eq!(v.code, Some(1), "{:#?}\n{}", v.lines, v.stderr);
    let prefix = format!("{}:", file.display());
    assert!(
        v.lines
            .iter()
            .any(|l| l.starts_with(&prefix) && l.contains(": error: -: -: YAML syntax error")),
        "{:#?}",
        v.lines
    );
}

#[test]
fn validate_accepts_every_acceptance_example() {
    let configs = acceptance_configs();
    assert!(configs.len() >= 10, "found only {configs:?}");
    for config in configs {
        let v = validate(&[&config]);
        assert_eq!(
            v.code,
            Some(0),
            "{}:\n{}\n{}",
            config.display(),
            v.lines.join("\n"),
            v.stderr
        );
    }
}

// === Draining ===

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut held = held_backend().await;
    // A drain timeout far above the test's waits: exiting early shows the drain completed.
    let mut g = start(&base_files(held.addr), &["--drain-timeout", "20s"]).await;
    let addr = g.addr(80).await;
    // Idle keep-alive connections, HTTP/1.1 and h2c, must not hold the drain up.
    let mut idle_h1 = open_connection(addr).await;
    assert_eq!(send_on(&mut idle_h1, HOST, "/fast").await, Ok(200));
    let idle_h2 = h2c_client_resolving(HOST, addr);
    let r = idle_h2
        .get(format!("http://{HOST}:{}/fast", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    let slow = spawn_request(g.url(80, "/slow").await);
    held.wait_arrival().await;

    g.signal("TERM");
    eventually("new connections refused", || refused(addr)).await;
    assert!(g.is_running(), "exited with a request in flight");
    // While draining, nothing is listening: the gateway is not ready.
    assert_eq!(ready_status(&g).await, 503);
    assert!(bound_ports(&g).await.is_empty());

    held.release();
    let status = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert_eq!(status, Ok(200));
    assert_eq!(g.exit_code_within(WAIT).await, Some(0), "{}", g.log());
    wait_log(&g, "drained; exiting").await;
}

#[tokio::test]
async fn the_drain_timeout_bounds_the_shutdown() {
    let mut held = held_backend().await;
    let mut g = start(&base_files(held.addr), &["--drain-timeout", "1s"]).await;
    let slow = spawn_request(g.url(80, "/slow").await);
    held.wait_arrival().await;

    let signalled = Instant::now();
    g.signal("TERM");
    assert_eq!(g.exit_code_within(WAIT).await, Some(0), "{}", g.log());
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(1), "exited after {took:?}");
    assert!(took < Duration::from_secs(6), "exited after {took:?}");
    wait_log(&g, "drain timeout reached").await;
    // The request never finished: the client sees the connection close.
    let result = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert!(result.is_err(), "{result:?}");
    held.release();
}

/// Port 80 sends `ws.example.com` to a WebSocket echo backend, port 81 (TCP) to a TCP echo
/// backend.
async fn tunnel_files() -> Vec<(&'static str, String)> {
    let ws = ws_echo_backend("ws").await;
    let echo = tcp_echo_backend("tcp").await;
    vec![
        (
            "gw.yaml",
            gateway_servers(&[
                server(80, "http", "HTTP", &["*"], ""),
                server(81, "tcp", "TCP", &["*"], ""),
            ]),
        ),
        ("ws.yaml", service("ws", "ws.local", &[(ws.addr, "v1")])),
        ("wsvs.yaml", simple_vs("wsvs", WS_HOST, "ws.local")),
        ("tcp.yaml", l4_service("echo", "echo.local", "TCP", &[echo])),
        (
            "tcpvs.yaml",
            l4_virtual_service(
                "tcp",
                &["*"],
                "  tcp:\n  - match: [{port: 81}]\n    route: [{destination: {host: echo.local}}]\n",
            ),
        ),
    ]
}

const WS_HOST: &str = "ws.example.com";

/// One echo through the TCP route: what comes back.
async fn tcp_echo(s: &mut tokio::net::TcpStream, text: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(text.as_bytes()).await?;
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no echo within the wait"))??;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Opens a TCP tunnel (past the backend's greeting) and a WebSocket through the gateway.
async fn open_tunnels(g: &Gateway) -> (tokio::net::TcpStream, Ws) {
    let mut tcp = tokio::net::TcpStream::connect(g.addr(81).await)
        .await
        .unwrap();
    assert_eq!(read_line(&mut tcp).await.unwrap(), "tcp\n");
    let (mut ws, _) = ws_connect(g.addr(80).await, WS_HOST, "/chat")
        .await
        .unwrap();
    assert_eq!(ws_echo(&mut ws, "before").await, "ws: before");
    (tcp, ws)
}

#[tokio::test]
async fn sigterm_lets_tcp_and_websocket_tunnels_run_until_the_drain_timeout() {
    let mut g = start(&tunnel_files().await, &["--drain-timeout", "3s"]).await;
    let (http, tcp_addr) = (g.addr(80).await, g.addr(81).await);
    let (mut tcp, mut ws) = open_tunnels(&g).await;

    let signalled = Instant::now();
    g.signal("TERM");
    eventually("new HTTP connections refused", || refused(http)).await;
    eventually("new TCP connections refused", || refused(tcp_addr)).await;
    // The tunnels opened before go on carrying bytes while the gateway drains.
    assert_eq!(tcp_echo(&mut tcp, "during").await.unwrap(), "during");
    assert_eq!(ws_echo(&mut ws, "during").await, "ws: during");
    assert!(g.is_running(), "exited with tunnels open");

    // At the drain timeout the process exits and the tunnels are closed.
    assert_eq!(g.exit_code_within(WAIT).await, Some(0), "{}", g.log());
    let took = signalled.elapsed();
    assert!(took >= Duration::from_secs(3), "exited after {took:?}");
    wait_log(&g, "drain timeout reached").await;
    let mut rest = Vec::new();
    let end = tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the TCP tunnel stayed open");
    assert!(
        ws_next(&mut ws).await.is_none(),
        "the WebSocket stayed open"
    );
}

#[tokio::test]
async fn post_drain_finishes_as_soon_as_the_tunnels_close() {
    // A drain timeout far above the test's waits: exiting shows the drain completed.
    let mut g = start(&tunnel_files().await, &["--drain-timeout", "60s"]).await;
    let http = g.addr(80).await;
    let (mut tcp, mut ws) = open_tunnels(&g).await;
    let resp = client()
        .post(format!("http://{}/drain", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    eventually("new connections refused", || refused(http)).await;
    assert_eq!(tcp_echo(&mut tcp, "draining").await.unwrap(), "draining");
    assert_eq!(ws_echo(&mut ws, "draining").await, "ws: draining");
    assert!(g.is_running(), "exited with tunnels open");

    // The clients close their tunnels: nothing is left in flight, the gateway exits.
    ws.close(None).await.unwrap();
    assert!(ws_next(&mut ws).await.is_none());
    drop(ws);
    drop(tcp);
    assert_eq!(g.exit_code_within(WAIT).await, Some(0), "{}", g.log());
    wait_log(&g, "drained; exiting").await;
}

// === Endpoints and metrics ===

#[tokio::test]
async fn dns_endpoints_resolve_through_the_hosts_file() {
    let b = backend("dns").await;
    let se = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: by-name, namespace: default}}
spec:
  hosts: [byname.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: DNS
  endpoints:
  - {{address: localhost, ports: {{http: {}}}}}
",
        b.port()
    );
    let files = vec![
        ("gw.yaml", gateway(&[(80, &["*"])])),
        ("se.yaml", se),
        ("vs.yaml", simple_vs("vs", HOST, "byname.local")),
    ];
    let g = start(&files, &[]).await;
    // Resolution runs in the background after the configuration is applied.
    wait_answer(&g, HOST, 200, Some("dns")).await;
    for _ in 0..5 {
        assert_eq!(probe(&g, 80, HOST, "/get").await, (200, Some("dns".into())));
    }
}

#[tokio::test]
async fn prometheus_counts_requests_by_response_code() {
    let b = backend("v1").await;
    let g = start(&base_files(b), &[]).await;
    for _ in 0..3 {
        assert_eq!(probe(&g, 80, HOST, "/get").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(probe(&g, 80, "nowhere.example.com", "/").await.0, 404);
    }
    let text = g.prometheus().await;
    let count = |labels: &[(&str, &str)]| metric_sum(&text, "istio_requests_total", labels);
    assert_eq!(count(&[("response_code", "200")]), 3.0, "{text}");
    assert_eq!(
        count(&[
            ("response_code", "200"),
            ("destination_service", "httpbin.local"),
            ("response_flags", "-"),
            ("reporter", "source"),
        ]),
        3.0,
        "{text}"
    );
    assert_eq!(count(&[("response_code", "404")]), 2.0, "{text}");
    assert_eq!(
        count(&[("response_code", "404"), ("response_flags", "NR")]),
        2.0,
        "{text}"
    );
    assert!(
        metric_sum(&text, "isthmus_config_generation", &[]) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn twenty_reloads_under_load_lose_no_request_on_http1_or_http2() {
    let b1 = backend("v1").await;
    let b2 = backend("v1").await;
    let g = start(&base_files(b1), &[]).await;
    let url = g.url(80, "/get").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    // 8 HTTP/1.1 workers on pooled keep-alive connections and 8 HTTP/2 workers multiplexed
    // on one connection, each keeping a request in flight all the time.
    let mut workers = Vec::new();
    let h1 = client();
    let addr = g.addr(80).await;
    // HTTP/2 carries the host in :authority: the URL names the host, resolved to the gateway.
    let h2 = h2c_client_for(HOST, addr);
    let h2_url = format!("http://{HOST}:{}/get", addr.port());
    for i in 0..16 {
        let (c, url) = if i % 2 == 0 {
            (h1.clone(), url.clone())
        } else {
            (h2.clone(), h2_url.clone())
        };
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < TRAFFIC_MAX_TIME {
                match request_ok(&c, &url, HOST).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    let progress = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::SeqCst) + n;
            eventually("traffic progresses", || async {
                ok.load(Ordering::SeqCst) >= target
            })
            .await;
        }
    };
    progress(50).await;
    for round in 0..20 {
        let before = g.generation().await;
        // The route in use changes (a response header), and its service gains and loses an
        // endpoint: every kind of change a deploy makes.
        let vs = if round % 2 == 0 {
            simple_vs("vs", HOST, "httpbin.local").replace(
                "  - route:",
                &format!("  - headers: {{response: {{set: {{x-round: '{round}'}}}}}}\n    route:"),
            )
        } else {
            simple_vs("vs", HOST, "httpbin.local")
        };
        g.write("vs.yaml", &vs).await;
        let endpoints: Vec<(SocketAddr, &str)> = if round % 4 < 2 {
            vec![(b1, "v1"), (b2, "v1")]
        } else {
            vec![(b1, "v1")]
        };
        g.write("svc.yaml", &service("httpbin", "httpbin.local", &endpoints))
            .await;
        g.wait_generation_after(before).await;
        progress(10).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(WAIT * 2, w)
            .await
            .expect("worker stops")
            .unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across 20 reloads: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok >= 250, "only {ok} requests");
}
