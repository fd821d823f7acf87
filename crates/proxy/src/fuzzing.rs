//! Entry points for the fuzz targets under `fuzz/` and their regression tests: each takes
//! arbitrary bytes and must return without panicking (or hanging).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use isthmus_config::{Instance, LastGood, build};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::drain::DrainTrigger;
use crate::handler::ConnInfo;
use crate::parking::Lot;
use crate::serve::FromListener;
use crate::{Active, ClusterRegistry, Gateway, Identity, serve};

/// Loads, validates and compiles `data` as one configuration file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = isthmus_api::load::load_str("fuzz.yaml", text) else {
        return;
    };
    let _ = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
}

pub fn client_hello(data: &[u8]) {
    let _ = crate::tls::client_hello::parse(data);
}

pub fn proxy_protocol(data: &[u8]) {
    if let Ok(Some(h)) = crate::proxy_protocol::parse(data) {
        assert!(
            h.len <= data.len(),
            "a header cannot be longer than the bytes read"
        );
    }
}

/// Any bytes as what an upstream answers on an HTTP/1.1 connection: the response head, its
/// body's framing, and a chunked body decoded as it would arrive. The body must decode to the
/// same data and trailers, and end or fail alike, whether its bytes come all at once or in
/// pieces of the size the input's first byte picks.
pub fn upstream_response(data: &[u8]) {
    use crate::pool::codec::{BodyKind, keeps_alive, parse_response_head, response_body};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut buf = bytes::BytesMut::from(rest);
    let Ok(Some(head)) = parse_response_head(&mut buf) else {
        return;
    };
    let _ = keeps_alive(&head);
    let is_head = first & 0x80 != 0;
    if response_body(is_head, &head) != Ok(BodyKind::Chunked) {
        return;
    }
    let whole = decode_chunked(&buf, buf.len().max(1));
    let piece = usize::from(first & 0x7f).max(1);
    assert_eq!(
        whole,
        decode_chunked(&buf, piece),
        "a chunked body decodes the same in pieces of {piece} bytes"
    );
}

/// What a chunked body decodes to (its data, its trailers, whether it ended, whether it was
/// refused) when its bytes arrive `piece` at a time.
fn decode_chunked(body: &[u8], piece: usize) -> (Vec<u8>, Option<http::HeaderMap>, bool, bool) {
    use crate::pool::codec::{Chunk, ChunkedDecoder};
    let mut decoder = ChunkedDecoder::default();
    let (mut data, mut buf) = (Vec::new(), bytes::BytesMut::new());
    let mut pieces = body.chunks(piece);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Chunk::Data(d)) => {
                assert!(!d.is_empty(), "an empty data chunk");
                data.extend_from_slice(&d);
            }
            Ok(Chunk::End(trailers)) => return (data, trailers, true, false),
            Ok(Chunk::More) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (data, None, false, false),
            },
            Err(_) => return (data, None, false, true),
        }
    }
}

/// The configuration requests are routed by: matches of every kind, a rewrite, a redirect, a
/// direct response, a fault, CORS, and a destination whose endpoint refuses connections.
const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
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
metadata: {name: down, namespace: default}
spec:
  hosts: [down.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - match: [{uri: {regex: '/re/[a-z]+/(\d+)'}, headers: {x-a: {prefix: b}}}]
    rewrite: {uriRegexRewrite: {match: '/re/([a-z]+)/(\d+)', rewrite: '/\2/\1'}}
    route: [{destination: {host: down.internal}}]
    retries: {attempts: 0}
  - match: [{uri: {prefix: /redirect}, queryParams: {q: {exact: '1'}}}]
    redirect: {uri: /elsewhere, redirectCode: 308}
  - match: [{uri: {prefix: /fault}, method: {exact: POST}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: down.internal}}]
  - match: [{uri: {prefix: /api}}]
    corsPolicy: {allowOrigins: [{exact: 'https://a.example'}], allowMethods: [GET]}
    rewrite: {uri: /v2}
    route: [{destination: {host: down.internal}}]
    retries: {attempts: 0}
  - directResponse: {status: 200, body: {string: ok}}
"#;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    gateway: Arc<Gateway>,
    builder: Arc<serve::Protocols>,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| Fixture::new(runtime()?, ROUTES))
        .as_ref()
}

/// The fixtures' runtime: one thread, as the gateway runs with one worker.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}

impl Fixture {
    /// A gateway serving `routes`, in `runtime`.
    fn new(runtime: tokio::runtime::Runtime, routes: &str) -> Option<Fixture> {
        let loaded = isthmus_api::load::load_str("routes.yaml", routes).ok()?;
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &Instance::default(),
        );
        let identity = Identity {
            workload: "fuzz".into(),
            namespace: "fuzz".into(),
            labels: Default::default(),
        };
        let gateway = Gateway::new(&identity, &crate::Telemetry::default()).ok()?;
        let clusters = runtime.block_on(async {
            let mut registry = ClusterRegistry::new(gateway.metrics.istio.clone());
            // The registry owns DNS tasks; static clusters need none, so it may go.
            registry.apply(&b.snapshot.clusters)
        });
        gateway.active.store(Arc::new(Active {
            generation: 1,
            snapshot: Arc::new(b.snapshot),
            clusters,
            tls: Default::default(),
        }));
        let builder = Arc::new(serve::protocols(&gateway.edge).with_half_close());
        Some(Fixture {
            runtime,
            gateway,
            builder,
        })
    }

    /// Writes `data` as everything a client sends on one connection, closes its side, and
    /// returns what it read back (up to 1 MiB); fails if that takes 10 s.
    fn client_connection(&self, data: &[u8]) -> Vec<u8> {
        self.runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let peer = SocketAddr::from(([203, 0, 113, 1], 40000));
            let local = SocketAddr::from(([127, 0, 0, 1], 80));
            let (a, b) = (DrainTrigger::new(), DrainTrigger::new());
            let lot = Lot::new(self.gateway.metrics.parked_connections.clone());
            // Ends when the triggers are dropped, with this input.
            tokio::spawn(lot.clone().run([a.watcher(), b.watcher()]));
            let from = FromListener {
                drain: [a.watcher(), b.watcher()],
                lot,
                slot: None,
            };
            let serve = serve::connection(
                self.gateway.clone(),
                self.builder.clone(),
                server,
                ConnInfo::plain(80, peer, local),
                from,
            );
            let talk = async {
                let _ = client.write_all(data).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = (&mut client).take(1 << 20).read_to_end(&mut out).await;
                out
            };
            let done = tokio::time::timeout(Duration::from_secs(10), async {
                tokio::join!(serve, talk).1
            })
            .await;
            done.unwrap_or_else(|_| panic!("a connection hung for 10 s"))
        })
    }
}

/// Sends `data` as everything a client writes on one connection, then reads the answer.
pub fn http_request(data: &[u8]) {
    if let Some(f) = fixture() {
        f.client_connection(data);
    }
}

/// Routes for the upstream fixture: everything to one HTTP/1.1 endpoint on `port`. No
/// retries: most inputs are 502s, and each retry would wait Envoy's 25 ms back-off (the
/// end-to-end tests drive retries).
fn upstream_routes(port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: up, namespace: default}}
spec:
  hosts: [up.internal]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: ['*']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: up.internal}}}}]
    retries: {{attempts: 0}}
"#
    )
}

/// A gateway whose one upstream answers every request with the bytes of the current input,
/// then closes its connection.
struct UpstreamFixture {
    gateway: Fixture,
    answer: Arc<std::sync::Mutex<Vec<u8>>>,
}

fn upstream_fixture() -> Option<&'static UpstreamFixture> {
    static FIXTURE: OnceLock<Option<UpstreamFixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let runtime = runtime()?;
            let answer = Arc::new(std::sync::Mutex::new(Vec::new()));
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
                .ok()?;
            let port = listener.local_addr().ok()?.port();
            runtime.spawn(answer_all(listener, answer.clone()));
            let gateway = Fixture::new(runtime, &upstream_routes(port))?;
            Some(UpstreamFixture { gateway, answer })
        })
        .as_ref()
}

/// The scripted upstream: reads a request head (and whatever body came with it), writes the
/// current answer and closes.
async fn answer_all(listener: tokio::net::TcpListener, answer: Arc<std::sync::Mutex<Vec<u8>>>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let answer = answer.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head = async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    }
                }
                true
            };
            if tokio::time::timeout(Duration::from_secs(5), head).await != Ok(true) {
                return;
            }
            let bytes = answer.lock().map(|a| a.clone()).unwrap_or_default();
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
        });
    }
}

/// Any bytes as what the upstream answers, to a GET, a HEAD or a POST with a body (the first
/// byte chooses), through the gateway's own HTTP/1.1 exchange: the client must get an answer
/// or a close, in bounded time, and the gateway must not panic.
pub fn upstream_exchange(data: &[u8]) {
    let _ = upstream_exchange_answer(data);
}

/// What the client read in [`upstream_exchange`].
fn upstream_exchange_answer(data: &[u8]) -> Option<Vec<u8>> {
    let f = upstream_fixture()?;
    let (&first, answer) = data.split_first()?;
    if let Ok(mut a) = f.answer.lock() {
        *a = answer.to_vec();
    }
    let request: &[u8] = match first % 3 {
        0 => b"GET /x HTTP/1.1\r\nHost: up.internal\r\n\r\n",
        1 => b"HEAD /x HTTP/1.1\r\nHost: up.internal\r\n\r\n",
        _ => b"POST /x HTTP/1.1\r\nHost: up.internal\r\nContent-Length: 5\r\n\r\nhello",
    };
    Some(f.gateway.client_connection(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness is not vacuous: the upstream's answer reaches the client through the
    /// gateway, and a malformed one becomes a 502.
    #[test]
    fn the_upstream_fixture_relays_the_answer() {
        let answer = |input: &[u8]| {
            let out = upstream_exchange_answer(input).expect("the fixture starts");
            String::from_utf8_lossy(&out).to_string()
        };
        let ok = answer(b"\x00HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-up: 1\r\n\r\nhello");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("x-up: 1\r\n") && ok.ends_with("hello"), "{ok}");
        let bad = answer(b"\x02HTTP/1.1 2OO OK\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 502 "), "{bad}");
    }

    /// The client-bytes harness gets answers too, though the client closes its side at once.
    #[test]
    fn the_request_fixture_answers() {
        let f = fixture().expect("the fixture starts");
        let out = f.client_connection(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("ok"),
            "{out}"
        );
        // Routed to the destination that refuses connections, after a rewrite.
        let out = f.client_connection(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    }
}
