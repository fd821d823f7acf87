//! Test harness: runs the real `isthmus` binary against real backends on 127.0.0.1.
//!
//! Every wait is bounded and driven by a readiness signal (the admin server's readiness and
//! configuration generation), never by a fixed sleep.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

/// Upper bound of every wait in the tests: generous for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_isthmus")
}

/// Starts an httpbin-like backend (see `isthmus::demo::spawn_backend`) on a free port.
pub async fn backend(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    isthmus::demo::spawn_backend(name, listener);
    addr
}

/// A running gateway process with its own config folder.
pub struct Gateway {
    child: Child,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Writes `files` into a fresh folder and runs `isthmus run --config DIR` with Gateway
    /// ports 80, 81 and 82 bound on ephemeral ports of 127.0.0.1.
    pub async fn start(files: &[(&str, &str)]) -> Gateway {
        Self::start_with(files, &[]).await
    }

    pub async fn start_with(files: &[(&str, &str)], extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let g = Self::spawn(dir, extra);
        g.wait_ready().await;
        g
    }

    /// Starts without waiting for readiness.
    pub fn spawn(dir: tempfile::TempDir, extra: &[&str]) -> Gateway {
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--config")
            .arg(dir.path())
            .args(["--admin", "127.0.0.1:0"])
            .args([
                "--bind",
                "80=127.0.0.1:0",
                "--bind",
                "81=127.0.0.1:0",
                "--bind",
                "82=127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("admin listening on ").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(addr.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let admin = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => panic!(
                "gateway did not start; log:\n{}",
                log.lock().unwrap().join("\n")
            ),
        };
        Gateway {
            child,
            admin,
            dir,
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`, ...) without needing a `kill` binary.
    pub fn signal(&self, sig: &str) {
        let signal: nix::sys::signal::Signal = format!("SIG{sig}").parse().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill -s {sig} failed: {e}"));
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    pub async fn config_dump(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin_get("/config_dump").await.1).unwrap()
    }

    pub async fn generation(&self) -> u64 {
        self.config_dump().await["generation"].as_u64().unwrap_or(0)
    }

    pub async fn wait_ready(&self) {
        eventually("gateway ready", || async {
            self.admin_get("/healthz/ready").await.0 == 200
        })
        .await;
    }

    /// The address Gateway port `port` is bound on.
    pub async fn addr(&self, port: u16) -> SocketAddr {
        let (_, body) = self.admin_get("/listeners").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        match v[port.to_string()].as_str() {
            Some(a) => a.parse().unwrap(),
            None => panic!("port {port} is not bound: {body}\n{}", self.log()),
        }
    }

    pub async fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}{path}", self.addr(port).await)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes (or replaces) a config file and waits until the gateway applied a newer generation.
    pub async fn write(&self, name: &str, text: &str) {
        let before = self.generation().await;
        write_atomic(&self.path(name), text);
        self.wait_generation_after(before).await;
    }

    pub async fn remove(&self, name: &str) {
        let before = self.generation().await;
        std::fs::remove_file(self.path(name)).unwrap();
        self.wait_generation_after(before).await;
    }

    pub async fn wait_generation_after(&self, before: u64) {
        eventually("configuration reloaded", || async {
            self.generation().await > before
        })
        .await;
    }

    /// Diagnostics of the current configuration, as printed lines.
    pub async fn diagnostics(&self) -> Vec<String> {
        let dump = self.config_dump().await;
        dump["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect()
    }
}

/// Replaces a file in one rename, as editors and Kubernetes volumes do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` until it holds, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    let mut delay = Duration::from_millis(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}");
}

/// An HTTP/1.1 client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// An h2c (HTTP/2 prior knowledge) client.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// A GET with a Host header; returns status, `x-backend` and the JSON echo (or Null).
pub async fn get(url: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(url).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().await.unwrap()).await
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The backend that answered, from the demo backend's `x-backend` header.
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

// === YAML builders ===

/// A Gateway `gw` in `default` selecting the default instance, with one HTTP server per
/// `(port, hosts)`.
pub fn gateway(servers: &[(u16, &[&str])]) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n",
    );
    for (port, hosts) in servers {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("'{h}'")).collect();
        s.push_str(&format!(
            "  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [{}]\n",
            hosts.join(", ")
        ));
    }
    s
}

/// A STATIC ServiceEntry for `host` on port 80 with endpoints `(addr, version label)`.
pub fn service(name: &str, host: &str, endpoints: &[(SocketAddr, &str)]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n"
    );
    for (addr, version) in endpoints {
        s.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, labels: {{version: {version}}}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    s
}

// === Added for routing.rs: more builders, raw HTTP/1 and h2c helpers ===

/// A Gateway `namespace/name` selecting the default instance, with one HTTP server per
/// `(port, hosts)`; hosts may carry a `namespace/` prefix.
pub fn gateway_named(namespace: &str, name: &str, servers: &[(u16, &[&str])]) -> String {
    gateway(servers).replacen(
        "metadata: {name: gw, namespace: default}",
        &format!("metadata: {{name: {name}, namespace: {namespace}}}"),
        1,
    )
}

/// A VirtualService; `gateways` is omitted when empty, and `http` is the YAML list of HTTP
/// routes, each item starting with `  - ` (see [`http_routes`]).
pub fn virtual_service(
    name: &str,
    namespace: &str,
    hosts: &[&str],
    gateways: &[&str],
    http: &str,
) -> String {
    let quote = |v: &[&str]| {
        v.iter()
            .map(|h| format!("'{h}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  hosts: [{}]\n",
        quote(hosts)
    );
    if !gateways.is_empty() {
        s.push_str(&format!("  gateways: [{}]\n", quote(gateways)));
    }
    s.push_str("  http:\n");
    s.push_str(http);
    s
}

/// HTTP routes from `(match, destination host)` pairs: `match` is a YAML flow list such as
/// `[{uri: {prefix: /a}}]`, or empty for a route without match.
pub fn http_routes(rules: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (m, host) in rules {
        if m.is_empty() {
            s.push_str("  - route:\n");
        } else {
            s.push_str(&format!("  - match: {m}\n    route:\n"));
        }
        s.push_str(&format!("    - destination: {{host: {host}}}\n"));
    }
    s
}

/// A DestinationRule for `host` with one subset per version: subset `v1` selects the
/// endpoints labelled `version: v1`.
pub fn destination_rule(name: &str, host: &str, versions: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  host: {host}\n  subsets:\n"
    );
    for v in versions {
        s.push_str(&format!("  - {{name: {v}, labels: {{version: {v}}}}}\n"));
    }
    s
}

/// Starts a gateway from owned `(file name, text)` pairs.
pub async fn start_files(files: &[(String, String)]) -> Gateway {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    Gateway::start(&refs).await
}

/// A port of 127.0.0.1 that refuses connections for as long as this value lives: the port is
/// bound but never listened on, so no other socket can take it meanwhile.
pub struct RefusingPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    RefusingPort {
        addr: socket.local_addr().unwrap(),
        _socket: socket,
    }
}

/// An h2c client that sends requests for `host` to `addr`, so that `:authority` is
/// `host:PORT` (use URLs `http://HOST:PORT/...` with `addr`'s port).
pub fn h2c_client_for(host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(host, addr)
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends `request` as bytes, exactly as written (no client normalises the path), and reads
/// one response until the server closes the connection: the request must end the connection
/// (`Connection: close`, or HTTP/1.0).
pub async fn raw_http(addr: SocketAddr, request: &str) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        buf
    })
    .await
    .expect("raw HTTP exchange timed out");
    parse_raw_response(&bytes)
}

fn parse_raw_response(bytes: &[u8]) -> RawReply {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    RawReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size in {rest:?}"));
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

// === Process, metrics and socket helpers (appended for lifecycle.rs) ===

impl Gateway {
    /// Waits up to `limit` for the process to exit without blocking the async runtime;
    /// its exit code (`None` if it is still running or was killed by a signal).
    pub async fn exit_code_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The admin server's Prometheus text.
    pub async fn prometheus(&self) -> String {
        let (status, body) = self.admin_get("/stats/prometheus").await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Sum of the samples of `metric` (as printed, e.g. `istio_requests_total`) whose labels
/// include every `name="value"` of `labels`.
pub fn metric_sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Whether a new TCP connection to `addr` is refused.
pub async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

// === Route actions helpers (appended for actions.rs) ===

/// An HTTP/1.1 client that never follows redirects, to look at the gateway's own 3xx answers.
pub fn client_no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .unwrap()
}

impl Reply {
    /// Every value of a response header, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// Names of the response headers starting with `prefix` (such as `access-control-`).
    pub fn names_starting(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .filter(|k| k.starts_with(prefix))
            .collect();
        names.dedup();
        names
    }
}

/// Like [`backend`], but the echo keeps repeated request headers: their values are joined with
/// `, ` in arrival order (as httpbin shows them), so appended values can be checked. As httpbin's
/// `/response-headers?NAME=VALUE&...`, that path also answers with each `NAME: VALUE` header.
pub async fn backend_joined(name: &str) -> SocketAddr {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        async move {
                            let mut headers = serde_json::Map::new();
                            for key in req.headers().keys() {
                                let joined: Vec<String> = req
                                    .headers()
                                    .get_all(key)
                                    .iter()
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                    .collect();
                                headers.insert(key.as_str().to_string(), joined.join(", ").into());
                            }
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or("").to_string();
                            let body_bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().len())
                                .unwrap_or(0);
                            let body = serde_json::json!({
                                "backend": &*name,
                                "method": method,
                                "path": path,
                                "query": query,
                                "headers": headers,
                                "body_bytes": body_bytes,
                            });
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.to_string()),
                            ));
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            if let Ok(v) = http::HeaderValue::from_str(&name) {
                                resp.headers_mut().insert("x-backend", v);
                            }
                            if path == "/response-headers" {
                                for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                                    if let (Ok(k), Ok(v)) = (
                                        http::HeaderName::from_bytes(k.as_bytes()),
                                        http::HeaderValue::from_str(v),
                                    ) {
                                        resp.headers_mut().append(k, v);
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    addr
}

/// [`raw_http`] that also returns the client's own address (what the gateway sees as the
/// downstream remote address).
pub async fn raw_http_from(addr: SocketAddr, request: &str) -> (SocketAddr, RawReply) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (local, bytes) = tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        (local, buf)
    })
    .await
    .expect("raw HTTP exchange timed out");
    (local, parse_raw_response(&bytes))
}

/// What `isthmus validate` printed and returned.
#[derive(Debug)]
pub struct ValidateOutput {
    pub code: Option<i32>,
    /// Diagnostics, one per line, as printed on stdout.
    pub lines: Vec<String>,
    pub stderr: String,
    /// The folder the files were written to (file names in diagnostics start with it).
    pub dir: tempfile::TempDir,
}

impl ValidateOutput {
    /// The path of `name` as diagnostics print it.
    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Whether some line starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.lines.iter().any(|l| l.starts_with(prefix))
    }
}

/// Writes `files` into a fresh folder and runs `isthmus validate` on it (bounded by [`WAIT`]).
pub fn validate_files(files: &[(&str, &str)]) -> ValidateOutput {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let child = Command::new(bin())
        .arg("validate")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    // `wait_with_output` reads stdout and stderr together, so neither pipe can fill up.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("isthmus validate did not finish within {WAIT:?}");
        }
    };
    let code = out.status.code();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ValidateOutput {
        code,
        lines: stdout.lines().map(str::to_string).collect(),
        stderr,
        dir,
    }
}

/// The 1-based number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        + 1
}

// === Recording backends (appended for resilience.rs and istio_tasks.rs) ===

/// A request as a [`recording_backend`] saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Arrival order at this backend, from 0.
    pub index: usize,
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body_bytes: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn host(&self) -> &str {
        self.header("host").unwrap_or("")
    }

    /// `x-envoy-attempt-count`: which attempt of the gateway this request was.
    pub fn attempt(&self) -> Option<u32> {
        self.header("x-envoy-attempt-count")?.parse().ok()
    }
}

/// What a [`recording_backend`] does with a request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Waits this long before answering (or closing).
    pub delay: Duration,
    pub headers: Vec<(&'static str, String)>,
    /// Closes the connection without answering.
    pub close: bool,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn ok() -> Answer {
        Answer::status(200)
    }

    /// Reads the request, then closes the connection without a response.
    pub fn close() -> Answer {
        Answer {
            close: true,
            ..Answer::ok()
        }
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// A backend that records every request on arrival (before answering), signals it, and answers
/// as its script says. Responses carry `x-backend: NAME` and a JSON echo like the demo
/// backend's (`backend`, `index`, `method`, `path`, `headers`, `body_bytes`).
pub struct Recorder {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    arrivals: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Seen>>,
}

impl Recorder {
    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The `x-envoy-attempt-count` of every request seen so far.
    pub fn attempts(&self) -> Vec<Option<u32>> {
        self.seen().iter().map(Seen::attempt).collect()
    }

    /// The next request not yet taken by `next`, waiting up to [`WAIT`] for it.
    pub async fn next(&self) -> Seen {
        let mut rx = self.arrivals.lock().await;
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(s)) => s,
            _ => panic!("backend {} received no request within {WAIT:?}", self.name),
        }
    }

    /// Waits up to [`WAIT`] until at least `n` requests arrived.
    pub async fn wait_count(&self, n: usize) {
        eventually(
            &format!("{n} requests at backend {}", self.name),
            || async { self.count() >= n },
        )
        .await;
    }
}

/// Starts a [`Recorder`] on a free port of 127.0.0.1; `script` decides the answer to each
/// request (for instance from `seen.index`: 503 for the first two, then 200).
pub async fn recording_backend<F>(name: &str, script: F) -> Recorder
where
    F: Fn(&Seen) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = RecorderShared {
        name: Arc::from(name),
        seen: seen.clone(),
        tx,
        script: Arc::new(script),
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { shared.answer(req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Recorder {
        name: name.to_string(),
        addr,
        seen,
        arrivals: tokio::sync::Mutex::new(rx),
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

#[derive(Clone)]
struct RecorderShared {
    name: Arc<str>,
    seen: Arc<Mutex<Vec<Seen>>>,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
    script: Script,
}

impl RecorderShared {
    async fn answer(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::io::Error> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body_bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        let seen = {
            let mut all = self.seen.lock().unwrap();
            let s = Seen {
                index: all.len(),
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                headers: parts.headers,
                body_bytes,
            };
            all.push(s.clone());
            s
        };
        let _ = self.tx.send(seen.clone());
        let answer = (self.script)(&seen);
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        if answer.close {
            // hyper closes the connection without writing a response.
            return Err(std::io::Error::other("closing without an answer"));
        }
        let headers: serde_json::Map<String, serde_json::Value> = seen
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                )
            })
            .collect();
        let echo = serde_json::json!({
            "backend": &*self.name,
            "index": seen.index,
            "method": seen.method,
            "path": seen.path,
            "headers": headers,
            "body_bytes": seen.body_bytes,
        });
        let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
            echo.to_string(),
        )));
        *resp.status_mut() = http::StatusCode::from_u16(answer.status).unwrap();
        let h = resp.headers_mut();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-backend", self.name.parse().unwrap());
        for (k, v) in answer.headers {
            h.insert(k, v.parse().unwrap());
        }
        Ok(resp)
    }
}
