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
