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

    /// Writes (or replaces) a config file and, unless its text is what it already was (which
    /// the gateway does not reload for), waits until the gateway applied a newer generation.
    pub async fn write(&self, name: &str, text: &str) {
        let unchanged = std::fs::read_to_string(self.path(name)).is_ok_and(|t| t == text);
        let before = self.generation().await;
        write_atomic(&self.path(name), text);
        if !unchanged {
            self.wait_generation_after(before).await;
        }
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
/// A gateway on port 80 routing every request for `host` to the one backend at `addr`
/// (service `name`), with extra command-line arguments.
pub async fn start_one_backend(
    host: &str,
    name: &str,
    addr: SocketAddr,
    extra: &[&str],
) -> Gateway {
    start_one_backend_speaking(host, name, addr, "HTTP", extra).await
}

/// [`start_one_backend`] with the service port's `protocol` (`HTTP2`: the gateway speaks
/// HTTP/2 to the backend).
pub async fn start_one_backend_speaking(
    host: &str,
    name: &str,
    addr: SocketAddr,
    protocol: &str,
    extra: &[&str],
) -> Gateway {
    let service_host = format!("{name}.internal");
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "b.yaml".to_string(),
            service(name, &service_host, &[(addr, "v1")])
                .replace("protocol: HTTP}", &format!("protocol: {protocol}}}")),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &[host],
                &["gw"],
                &http_routes(&[("", &service_host)]),
            ),
        ),
    ];
    start_files_with(&files, extra).await
}

pub async fn start_files(files: &[(String, String)]) -> Gateway {
    start_files_with(files, &[]).await
}

/// [`start_files`] with extra command-line arguments.
pub async fn start_files_with(files: &[(String, String)], extra: &[&str]) -> Gateway {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    Gateway::start_with(&refs, extra).await
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
    /// The status line's version, `HTTP/1.1` say.
    pub version: String,
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
    let status_line = lines.next().unwrap_or_default();
    let version = status_line
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let status = Some(status_line)
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
        version,
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
    let out = run_isthmus(&["validate".as_ref(), dir.path().as_os_str()]);
    ValidateOutput {
        code: out.code,
        lines: out.stdout.lines().map(str::to_string).collect(),
        stderr: out.stderr,
        dir,
    }
}

/// What a finished `isthmus` command printed and returned.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `isthmus ARGS...` to completion (bounded by [`WAIT`]).
pub fn run_isthmus<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> CliOutput {
    let child = Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("ISTHMUS_CONFIG")
        .env_remove("ISTHMUS_LABELS")
        .env_remove("ISTHMUS_NAMESPACE")
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
            panic!("isthmus did not finish within {WAIT:?}");
        }
    };
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `isthmus explain --config DIR ARGS...`.
pub fn explain_in(dir: &Path, args: &[&str]) -> CliOutput {
    let mut all: Vec<std::ffi::OsString> = vec!["explain".into(), "--config".into(), dir.into()];
    all.extend(args.iter().map(Into::into));
    run_isthmus(&all)
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

// === TLS and TCP helpers (appended for tls.rs) ===

/// A test certificate authority (ECDSA P-256), generated at run time: no PEM file is committed.
pub struct Pki {
    pub ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Leaf {
        use rcgen::{CertificateParams, DnType};
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        self.sign(params, usage)
    }

    /// A client certificate with exactly these SANs and subject attributes (in this order,
    /// one RDN each).
    pub fn client_with(
        &self,
        sans: Vec<rcgen::SanType>,
        subject: &[(rcgen::DnType, &str)],
    ) -> Leaf {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        self.sign(params, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(
        &self,
        mut params: rcgen::CertificateParams,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Leaf {
        use rcgen::{KeyPair, KeyUsagePurpose};
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params.extended_key_usages.push(usage);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `names` (DNS names, wildcards allowed, or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with `name` as its DNS SAN.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }

    pub fn reqwest_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

impl Leaf {
    pub fn der(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }

    pub fn key(&self) -> rustls::pki_types::PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    /// The hex SHA-256 of the DER certificate (a `verifyCertificateHash` pin).
    pub fn sha256_hex(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der());
        d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The base64 SHA-256 of the SubjectPublicKeyInfo (a `verifyCertificateSpki` pin).
    pub fn spki_sha256_base64(&self) -> String {
        use base64::Engine;
        use rcgen::PublicKeyData;
        let spki = rcgen::KeyPair::from_pem(&self.key_pem)
            .unwrap()
            .subject_public_key_info();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    }

    /// The certificate and key as a reqwest client identity.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .unwrap()
    }
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A `kubernetes.io/tls` Secret `istio-system/NAME` (the gateway's default namespace) with
/// base64 `data`, as `kubectl create secret tls` writes it, plus `ca.crt` when `ca` is given.
pub fn tls_secret(name: &str, leaf: &Leaf, ca: Option<&str>) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&leaf.cert_pem),
        b64(&leaf.key_pem)
    );
    if let Some(ca) = ca {
        s.push_str(&format!("  ca.crt: {}\n", b64(ca)));
    }
    s
}

/// A generic Secret `istio-system/NAME` holding only `ca.crt` (the `<name>-cacert` form).
pub fn ca_secret(name: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: Opaque\ndata:\n  ca.crt: {}\n",
        b64(ca_pem)
    )
}

/// One item of a Gateway's `servers:`; `tls` is a YAML flow mapping (or empty for none).
pub fn server(port: u16, name: &str, protocol: &str, hosts: &[&str], tls: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("'{h}'")).collect();
    let mut s = format!(
        "  - port: {{number: {port}, name: {name}, protocol: {protocol}}}\n    hosts: [{}]\n",
        hosts.join(", ")
    );
    if !tls.is_empty() {
        s.push_str(&format!("    tls: {tls}\n"));
    }
    s
}

/// Gateway `default/gw` selecting the default instance, with the given [`server`] items.
pub fn gateway_servers(servers: &[String]) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n",
    );
    for item in servers {
        s.push_str(item);
    }
    s
}

/// A VirtualService bound to `gw` whose body (`  tls:` or `  tcp:` rules) is given as is.
pub fn l4_virtual_service(name: &str, hosts: &[&str], body: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("'{h}'")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{}]\n  gateways: [gw]\n{body}",
        hosts.join(", ")
    )
}

/// A STATIC ServiceEntry for `host` with one port of `protocol` (TCP, TLS) numbered 9000.
pub fn l4_service(name: &str, host: &str, protocol: &str, endpoints: &[SocketAddr]) -> String {
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 9000, name: l4, protocol: {protocol}}}]\n  resolution: STATIC\n  endpoints:\n"
    );
    for addr in endpoints {
        s.push_str(&format!(
            "  - {{address: {}, ports: {{l4: {}}}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    s
}

/// The echo protocol of [`tcp_echo_backend`] and [`tls_echo_backend`].
async fn echo_session<S>(name: Arc<str>, mut s: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() || s.flush().await.is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    // The peer shut its side down: answer after that, then close ours.
    let _ = s.write_all(b"<eof>").await;
    let _ = s.shutdown().await;
}

/// A TCP backend: greets every connection with `NAME\n`, echoes what it reads, and once the
/// client has shut down its sending side writes `<eof>` and closes.
pub async fn tcp_echo_backend(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(echo_session(name.clone(), stream));
        }
    });
    addr
}

/// Like [`tcp_echo_backend`], inside TLS terminated with `leaf` (the backend's own
/// certificate), as a passthrough destination.
pub async fn tls_echo_backend(name: &str, leaf: &Leaf) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der()], leaf.key())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (name, acceptor) = (name.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(Ok(tls)) = tokio::time::timeout(WAIT, acceptor.accept(stream)).await {
                    echo_session(name, tls).await;
                }
            });
        }
    });
    addr
}

/// A rustls client configuration trusting `ca`, offering `versions` (and only `suites`, in
/// that order of preference, when given), presenting `identity` when given. No ALPN unless
/// the caller sets it.
pub fn tls_client_config(
    ca: &Pki,
    identity: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<&[rustls::CipherSuite]>,
) -> rustls::ClientConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suites) = suites {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = suites
            .iter()
            .map(|want| {
                *all.iter()
                    .find(|s| s.suite() == *want)
                    .unwrap_or_else(|| panic!("{want:?} is not a rustls suite"))
            })
            .collect();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// [`tls_client_config`] with TLS 1.2 and 1.3.
pub fn tls_client(ca: &Pki, identity: Option<&Leaf>) -> rustls::ClientConfig {
    tls_client_config(
        ca,
        identity,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        None,
    )
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects to `addr` and completes the client's side of a TLS handshake for `server_name`
/// (the name verified, and sent as SNI unless the config disables SNI), within [`WAIT`].
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: &rustls::ClientConfig,
) -> std::io::Result<TlsStream> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
    match tokio::time::timeout(WAIT, async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The certificate the server presented on `stream`.
pub fn peer_certificate(stream: &TlsStream) -> rustls::pki_types::CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented no certificate")
        .clone()
        .into_owned()
}

/// One `GET path` over a fresh TLS connection (`Connection: close`), read until the server
/// closes. `Err` when the handshake or the exchange fails: with TLS 1.3 a refused client
/// certificate only shows after the client's side of the handshake completed.
pub async fn tls_get(
    addr: SocketAddr,
    server_name: &str,
    config: &rustls::ClientConfig,
    host: &str,
    path: &str,
) -> Result<RawReply, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls_connect(addr, server_name, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        s.write_all(request.as_bytes()).await?;
        s.flush().await?;
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf).await {
            Ok(_) => Ok(buf),
            // A peer that closes without close_notify after a complete answer.
            Err(_) if buf.windows(4).any(|w| w == b"\r\n\r\n") => Ok(buf),
            Err(e) => Err(e),
        }
    };
    let bytes = match tokio::time::timeout(WAIT, exchange).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("exchange: {e}")),
        Err(_) => return Err("exchange timed out".into()),
    };
    if bytes.is_empty() {
        return Err("the server closed the connection without answering".into());
    }
    Ok(parse_raw_response(&bytes))
}

/// An HTTP/1.1 keep-alive client connection over any stream (such as a [`TlsStream`]).
pub struct H1Conn {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

pub async fn h1_conn<S>(io: S) -> H1Conn
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = tokio::time::timeout(
        WAIT,
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)),
    )
    .await
    .expect("HTTP/1 client handshake timed out")
    .unwrap();
    tokio::spawn(conn);
    H1Conn { send }
}

impl H1Conn {
    /// A GET on this connection (never a new one); `Err` if the connection is gone.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<RawReply, String> {
        use http_body_util::BodyExt;
        let req = http::Request::get(path)
            .header("host", host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let exchange = async {
            self.send.ready().await.map_err(|e| e.to_string())?;
            let resp = self
                .send
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let version = format!("{:?}", resp.version());
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(RawReply {
                version,
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| Err("request timed out".into()))
    }
}

/// A reqwest HTTPS client trusting only `ca`, resolving each `(name, addr)` to `addr` (URLs
/// must carry `addr`'s port), exposing the peer certificate in the `TlsInfo` extension.
pub fn https_client(ca: &Pki, resolve: &[(&str, SocketAddr)]) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .tls_info(true)
        .tls_certs_only([ca.reqwest_certificate()]);
    for (name, addr) in resolve {
        b = b.resolve(name, *addr);
    }
    b
}

/// The DER certificate the server presented for `resp` (requires `tls_info(true)`).
pub fn response_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("no TLS info on the response")
        .to_vec()
}

/// Reads up to and including the first `\n` (the echo backends' greeting), within [`WAIT`].
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        loop {
            if s.read(&mut byte).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("closed after {:?}", String::from_utf8_lossy(&out)),
                ));
            }
            out.push(byte[0]);
            if byte[0] == b'\n' {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("read timed out")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes `data` on `s`, shuts down the sending side, and reads until the peer closes.
pub async fn send_and_read_to_end<S>(s: &mut S, data: &[u8]) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        s.write_all(data).await?;
        s.shutdown().await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("exchange timed out")))
}

/// Whether the server closes a connection on which `bytes` (then the end of input) were sent,
/// without answering anything, within [`WAIT`].
pub async fn closed_without_answer(addr: SocketAddr, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may close before reading everything.
        let _ = s.write_all(bytes).await;
        // Then the end of input: a server waiting for the rest of a ClientHello sees it.
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        // A reset is a close too.
        let _ = s.read_to_end(&mut buf).await;
        buf.is_empty()
    };
    tokio::time::timeout(WAIT, exchange).await.unwrap_or(false)
}

/// Runs `curl` with `args` (plus `-sS`, no proxy and a time limit); exit success, stdout and
/// stderr.
pub async fn curl(args: Vec<String>) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "10"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("curl is not installed")
    });
    let out = tokio::time::timeout(WAIT + Duration::from_secs(5), out)
        .await
        .expect("curl did not finish")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// === WebSocket, HTTP/2 and gRPC helpers (appended for protocols.rs) ===

/// A WebSocket client connection (over plain TCP).
pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;
pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A WebSocket echo server: text messages come back as `NAME: TEXT`, binary ones unchanged.
/// It records the path and headers of every opening handshake.
pub struct WsBackend {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
}

impl WsBackend {
    /// `(path and query, request headers)` of every handshake so far.
    pub fn handshakes(&self) -> Vec<(String, http::HeaderMap)> {
        self.handshakes.lock().unwrap().clone()
    }
}

pub async fn ws_echo_backend(name: &str) -> WsBackend {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = handshakes.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (seen, name) = (seen.clone(), name.clone());
            tokio::spawn(async move {
                // The error type is the library's, however large.
                #[allow(clippy::result_large_err)]
                let record = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                              resp| {
                    let path = req.uri().path_and_query().map_or("", |p| p.as_str());
                    seen.lock()
                        .unwrap()
                        .push((path.to_string(), req.headers().clone()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        WsMessage::Text(t) => WsMessage::text(format!("{name}: {}", t.as_str())),
                        WsMessage::Binary(b) => WsMessage::Binary(b),
                        // Pings are answered by the library; a close is answered on the next read.
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    WsBackend { addr, handshakes }
}

/// Opens a WebSocket to `ws://HOST/PATH` through `addr` (the gateway), within [`WAIT`].
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let url = format!("ws://{host}{path}");
    tokio::time::timeout(WAIT, async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio_tungstenite::client_async(url, stream).await
    })
    .await
    .expect("WebSocket handshake timed out")
}

/// The next data message (text or binary) on `ws`, within [`WAIT`]; `None` once it closed.
pub async fn ws_next(ws: &mut Ws) -> Option<WsMessage> {
    use futures_util::StreamExt;
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => return Some(m),
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("no WebSocket message within the wait")
}

/// Sends `text` and returns the text message that comes back.
pub async fn ws_echo(ws: &mut Ws, text: &str) -> String {
    use futures_util::SinkExt;
    ws.send(WsMessage::text(text)).await.unwrap();
    match ws_next(ws).await {
        Some(WsMessage::Text(t)) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// A body made of frames sent through a channel: data, then trailers if any. Dropping the
/// sender ends it.
pub struct FrameBody {
    rx: tokio::sync::mpsc::UnboundedReceiver<hyper::body::Frame<bytes::Bytes>>,
    /// Known to be empty: sent as an HTTP/2 HEADERS frame with END_STREAM.
    empty: bool,
}

impl FrameBody {
    pub fn channel() -> (
        tokio::sync::mpsc::UnboundedSender<hyper::body::Frame<bytes::Bytes>>,
        FrameBody,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (tx, FrameBody { rx, empty: false })
    }

    /// A body of these frames.
    pub fn of(frames: Vec<hyper::body::Frame<bytes::Bytes>>) -> FrameBody {
        let (tx, body) = Self::channel();
        for f in frames {
            tx.send(f).unwrap();
        }
        body
    }

    /// A body that is empty and says so.
    pub fn empty() -> FrameBody {
        let (_, rx) = tokio::sync::mpsc::unbounded_channel();
        FrameBody { rx, empty: true }
    }
}

impl hyper::body::Body for FrameBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.empty {
            return std::task::Poll::Ready(None);
        }
        self.rx.poll_recv(cx).map(|f| f.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.empty
    }
}

/// Trailers from `(name, value)` pairs.
pub fn trailers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// A backend speaking HTTP/1.1 and h2c on one port that answers every request with a JSON
/// echo: `backend`, `version` (`HTTP/1.1` or `HTTP/2.0`), `authority` (of the URI: HTTP/2's
/// `:authority`), `path`, `headers`, `body_bytes` and the request's `trailers`. The response
/// ends with trailers `x-echo-trailer: NAME` and, for each request trailer `N: V`,
/// `x-seen-N: V` (HTTP/1.1 clients get no trailers).
pub async fn echo_backend(name: &str) -> SocketAddr {
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
                let svc = hyper::service::service_fn(move |req| echo(name.clone(), req));
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

async fn echo(
    name: Arc<str>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<FrameBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0;
    let mut request_trailers = http::HeaderMap::new();
    while let Some(Ok(frame)) = body.frame().await {
        match frame.into_data() {
            Ok(d) => body_bytes += d.len(),
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    request_trailers.extend(t);
                }
            }
        }
    }
    let map = |h: &http::HeaderMap| -> serde_json::Map<String, serde_json::Value> {
        h.iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                )
            })
            .collect()
    };
    let json = serde_json::json!({
        "backend": &*name,
        "version": format!("{:?}", parts.version),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "path": parts.uri.path(),
        "headers": map(&parts.headers),
        "body_bytes": body_bytes,
        "trailers": map(&request_trailers),
    });
    let mut out = trailers(&[("x-echo-trailer", &name)]);
    for (k, v) in &request_trailers {
        out.append(
            http::HeaderName::from_bytes(format!("x-seen-{k}").as_bytes()).unwrap(),
            v.clone(),
        );
    }
    let body = FrameBody::of(vec![
        hyper::body::Frame::data(bytes::Bytes::from(json.to_string())),
        hyper::body::Frame::trailers(out),
    ]);
    let mut resp = http::Response::new(body);
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(resp)
}

/// What an HTTP/2 exchange gave back, trailers included.
#[derive(Debug)]
pub struct H2Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    pub trailers: Option<http::HeaderMap>,
}

impl H2Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref()?.get(name)?.to_str().ok()
    }
}

/// A new h2c (prior knowledge) connection to `addr`.
pub async fn h2c_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<FrameBody> {
    let stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends `req` (whose URI carries the `:authority`) over a new h2c connection to `addr` and
/// reads the whole answer, trailers included, within [`WAIT`].
pub async fn h2c_send(addr: SocketAddr, req: http::Request<FrameBody>) -> H2Reply {
    use http_body_util::BodyExt;
    tokio::time::timeout(WAIT, async move {
        let mut sender = h2c_connect(addr).await;
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        H2Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    })
    .await
    .expect("HTTP/2 exchange timed out")
}

/// A gRPC message with its 5-byte prefix (uncompressed).
pub fn grpc_frame(message: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// Takes the first complete length-prefixed message off `buf`, if there is one.
fn take_grpc_message(buf: &mut Vec<u8>) -> Option<bytes::Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let message = bytes::Bytes::copy_from_slice(&buf[5..5 + len]);
    buf.drain(..5 + len);
    Some(message)
}

/// A request as a [`GrpcBackend`] saw it.
#[derive(Debug, Clone)]
pub struct GrpcSeen {
    pub path: String,
    pub authority: Option<String>,
    pub headers: http::HeaderMap,
    pub messages: Vec<bytes::Bytes>,
}

/// A gRPC server over HTTP/2 with prior knowledge only (built on hyper, no gRPC library):
///
/// * `/test.Echo/Unary`: answers one message `NAME: REQUEST`, then trailers `grpc-status: 0`
///   and `x-echo-trailer: NAME`.
/// * `/test.Echo/Stream`: the request message is a count N; answers message `0`, then waits for
///   [`GrpcBackend::release`] (at most [`WAIT`]) and answers `1` .. `N-1`, then `grpc-status: 0`.
/// * `/test.Echo/Fail`: a trailers-only answer, `grpc-status: 5` and `grpc-message: no such
///   thing`.
/// * `/test.Echo/Hang`: no answer within [`WAIT`].
pub struct GrpcBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<GrpcSeen>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl GrpcBackend {
    pub fn seen(&self) -> Vec<GrpcSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets one waiting `/test.Echo/Stream` call go on.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

pub async fn grpc_backend(name: &str) -> GrpcBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (name, shared_seen, shared_gate): (Arc<str>, _, _) =
        (Arc::from(name), seen.clone(), gate.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (name, seen, gate) = (name.clone(), shared_seen.clone(), shared_gate.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    grpc_answer(name.clone(), seen.clone(), gate.clone(), req)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    GrpcBackend { addr, seen, gate }
}

async fn grpc_answer(
    name: Arc<str>,
    seen: Arc<Mutex<Vec<GrpcSeen>>>,
    gate: Arc<tokio::sync::Semaphore>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<FrameBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    let (parts, body) = req.into_parts();
    let mut buf = body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    let mut messages = Vec::new();
    while let Some(m) = take_grpc_message(&mut buf) {
        messages.push(m);
    }
    let first = messages.first().cloned().unwrap_or_default();
    seen.lock().unwrap().push(GrpcSeen {
        path: parts.uri.path().to_string(),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts.headers,
        messages,
    });
    let trailer_name = name.clone();
    let ok = move || trailers(&[("grpc-status", "0"), ("x-echo-trailer", &trailer_name)]);
    let (tx, body) = FrameBody::channel();
    let body = match parts.uri.path() {
        "/test.Echo/Unary" => {
            let text = format!("{name}: {}", String::from_utf8_lossy(&first));
            tx.send(Frame::data(grpc_frame(text.as_bytes()))).unwrap();
            tx.send(Frame::trailers(ok())).unwrap();
            body
        }
        "/test.Echo/Stream" => {
            let n: usize = String::from_utf8_lossy(&first).parse().unwrap_or(1);
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(grpc_frame(b"0")));
                let permit = tokio::time::timeout(WAIT, gate.acquire()).await;
                if let Ok(Ok(p)) = permit {
                    p.forget();
                }
                for i in 1..n {
                    let _ = tx.send(Frame::data(grpc_frame(i.to_string().as_bytes())));
                }
                let _ = tx.send(Frame::trailers(ok()));
            });
            body
        }
        "/test.Echo/Hang" => {
            let _ = tokio::time::timeout(WAIT, std::future::pending::<()>()).await;
            tx.send(Frame::trailers(ok())).unwrap();
            body
        }
        _ => {
            let mut resp = http::Response::new(FrameBody::empty());
            let h = resp.headers_mut();
            h.insert("content-type", "application/grpc".parse().unwrap());
            h.insert("grpc-status", "5".parse().unwrap());
            h.insert("grpc-message", "no such thing".parse().unwrap());
            return Ok(resp);
        }
    };
    let mut resp = http::Response::new(body);
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(resp)
}

/// A gRPC call in progress: response headers, then messages as they arrive, then trailers.
pub struct GrpcCall {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    pub trailers: Option<http::HeaderMap>,
    _sender: hyper::client::conn::http2::SendRequest<FrameBody>,
}

impl GrpcCall {
    /// The next message, waiting up to [`WAIT`]; `None` once the response ended.
    pub async fn next_message(&mut self) -> Option<bytes::Bytes> {
        use http_body_util::BodyExt;
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(m) = take_grpc_message(&mut self.buf) {
                    return Some(m);
                }
                match self.body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(d) => self.buf.extend_from_slice(&d),
                        Err(f) => self.trailers = f.into_trailers().ok(),
                    },
                    Some(Err(e)) => panic!("gRPC response failed: {e}"),
                    None => return None,
                }
            }
        })
        .await
        .expect("no gRPC message within the wait")
    }

    /// Every remaining message, until the end of the response.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = self.next_message().await {
            out.push(String::from_utf8_lossy(&m).into_owned());
        }
        out
    }

    /// A header of a trailers-only answer, else a trailer (after [`GrpcCall::rest`]).
    pub fn status_field(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .or_else(|| self.trailers.as_ref()?.get(name))?
            .to_str()
            .ok()
    }
}

/// Starts a unary-style gRPC call `path` with one `message` for `authority` over a new h2c
/// connection to `addr`; `headers` are added to the request.
pub async fn grpc_call(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> GrpcCall {
    let mut req = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(FrameBody::of(vec![hyper::body::Frame::data(grpc_frame(
            message,
        ))]))
        .unwrap();
    tokio::time::timeout(WAIT, async move {
        let mut sender = h2c_connect(addr).await;
        let resp = sender.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        GrpcCall {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buf: Vec::new(),
            trailers: None,
            _sender: sender,
        }
    })
    .await
    .expect("gRPC call got no response headers within the wait")
}

/// Reads from `s` until `n` whole responses (`Content-Length` bodies) have arrived.
pub async fn responses(s: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some((head, after)) = rest.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if after.len() < len {
                break;
            }
            out.push(format!("{head}\r\n\r\n{}", &after[..len]));
            rest = &after[len..];
        }
        if out.len() >= n {
            return out;
        }
        let read = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("responses did not arrive")
            .unwrap();
        assert!(read > 0, "closed after {} responses: {text}", out.len());
        buf.extend_from_slice(&chunk[..read]);
    }
}
