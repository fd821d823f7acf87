//! HTTP/1.1 to upstreams as the gateway speaks it itself: response framing (chunked with
//! extensions and trailers, close-delimited, HEAD, interim 1xx responses), connection reuse
//! and when a connection must not be reused, malformed and truncated responses, how request
//! bodies are framed, and bytes that follow a 101. The backend is scripted on a raw socket:
//! it writes exactly the bytes each test gives it and records the bytes it receives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const HOST: &str = "h1.example.com";

/// What the scripted backend does after reading a request.
struct Answer {
    bytes: Vec<u8>,
    /// Close the connection once written (without saying so in the response).
    close: bool,
}

fn keep(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

fn then_close(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: true,
    }
}

struct Scripted {
    addr: SocketAddr,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Each request as received, head and body.
    requests: mpsc::UnboundedReceiver<String>,
    /// Signalled each time the backend has closed a connection.
    closed: mpsc::UnboundedReceiver<()>,
}

impl Scripted {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn request(&mut self) -> String {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("the backend received no request")
            .unwrap()
    }

    async fn wait_closed(&mut self) {
        tokio::time::timeout(WAIT, self.closed.recv())
            .await
            .expect("the backend did not close")
            .unwrap();
    }
}

/// A backend answering the requests it reads, on whichever connection, with `answers` in
/// order.
async fn scripted(answers: Vec<Answer>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (req_tx, requests) = mpsc::unbounded_channel();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, req_tx, closed_tx) = (answers.clone(), req_tx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut s, &mut buf).await {
                    let _ = req_tx.send(req);
                    let Some(a) = answers.lock().unwrap().pop_front() else {
                        break;
                    };
                    if s.write_all(&a.bytes).await.is_err() || a.close {
                        break;
                    }
                }
                drop(s);
                let _ = closed_tx.send(());
            });
        }
    });
    Scripted {
        addr,
        accepted,
        requests,
        closed,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request off the connection: its head, then a body by Content-Length or up to the
/// last chunk.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body = &buf[end + 4..];
            let len = if head.contains("transfer-encoding: chunked") {
                chunked_len(body)
            } else {
                let declared = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                });
                Some(declared.unwrap_or(0)).filter(|&n| body.len() >= n)
            };
            if let Some(n) = len {
                let req: Vec<u8> = buf.drain(..end + 4 + n).collect();
                return Some(String::from_utf8_lossy(&req).to_string());
            }
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of a whole chunked body at the front of `body`, through its trailer section;
/// `None` until it is all there. (The tests' chunk data never holds a line "0".)
fn chunked_len(body: &[u8]) -> Option<usize> {
    let last = if body.starts_with(b"0\r\n") {
        0
    } else {
        find(body, b"\r\n0\r\n")? + 2
    };
    let trailers = last + 3;
    if body[trailers..].starts_with(b"\r\n") {
        return Some(trailers + 2);
    }
    find(&body[trailers..], b"\r\n\r\n").map(|i| trailers + i + 4)
}

/// A gateway routing every request for `HOST` to `addr`, with extra arguments.
async fn start(addr: SocketAddr, extra: &[&str]) -> (Gateway, String) {
    let g = start_one_backend(HOST, "up", addr, extra).await;
    let url = g.url(80, "/").await;
    (g, url)
}

async fn call(method: reqwest::Method, url: &str) -> Reply {
    let resp = client()
        .request(method, url)
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    Reply::from(resp).await
}

#[tokio::test]
async fn chunked_responses_are_decoded_and_their_connection_reused() {
    let mut up = scripted(vec![
        keep(concat!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n"
        )),
        keep("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello world"));
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "again"));
    up.request().await;
    assert!(up.request().await.starts_with("GET / HTTP/1.1\r\n"));
    assert_eq!(up.accepted(), 1, "both requests on one upstream connection");
}

#[tokio::test]
async fn a_close_delimited_response_ends_with_its_connection() {
    let mut up = scripted(vec![
        then_close("HTTP/1.1 200 OK\r\n\r\nuntil the end"),
        keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "until the end"));
    up.wait_closed().await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn an_http10_answer_reaches_an_http11_client_as_http11() {
    let mut up = scripted(vec![then_close(
        "HTTP/1.0 200 OK\r\nx-old: 1\r\n\r\nuntil the end",
    )])
    .await;
    let (g, _) = start(up.addr, &[]).await;
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let r = raw_http(g.addr(80).await, &request).await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/1.1", 200), "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
    assert_eq!(r.header("x-old"), Some("1"));
    assert_eq!(r.body, "until the end");
    up.wait_closed().await;
}

#[tokio::test]
async fn hop_by_hop_response_fields_stay_on_the_upstream_connection() {
    let answer = "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\n\
                  x-hop: 1\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nx-kept: 1\r\n\
                  content-length: 2\r\n\r\nok";
    let up = scripted(vec![keep(answer), keep(answer)]).await;
    let (g, _) = start(up.addr, &[]).await;
    for _ in 0..2 {
        let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        let r = raw_http(g.addr(80).await, &request).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
        assert_eq!(r.header("x-kept"), Some("1"), "{r:?}");
        // The client's connection says what the gateway says of it: close, as asked.
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        for gone in ["keep-alive", "x-hop", "proxy-connection", "upgrade"] {
            assert_eq!(r.header(gone), None, "{gone} came through: {r:?}");
        }
    }
    // `keep-alive` was the upstream's word for its own connection: it carried both.
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn pipelined_requests_with_bodies_go_upstream_each_with_its_own() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let mut up = scripted(vec![keep(answer), keep(answer), keep(answer), keep(answer)]).await;
    let (g, _) = start(up.addr, &[]).await;
    let mut c = TcpStream::connect(g.addr(80).await).await.unwrap();
    // Bodies written with their heads, one of them holding what looks like a request.
    let sneaky = format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let pipelined = format!(
        "POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello\
         PUT /b HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\n\r\n{sneaky}\
         GET /c HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
        sneaky.len()
    );
    c.write_all(pipelined.as_bytes()).await.unwrap();
    // And one whose body follows its head later.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ok = b"HTTP/1.1 200 OK";
    while got.windows(ok.len()).filter(|w| w == ok).count() < 3 {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(n, 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    c.write_all(
        format!("POST /d HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    c.write_all(b"late").await.unwrap();
    let seen = [
        up.request().await,
        up.request().await,
        up.request().await,
        up.request().await,
    ];
    let lines: Vec<&str> = seen.iter().map(|r| r.lines().next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "POST /a HTTP/1.1",
            "PUT /b HTTP/1.1",
            "GET /c HTTP/1.1",
            "POST /d HTTP/1.1"
        ]
    );
    assert!(seen[0].ends_with("\r\n\r\nhello"), "{}", seen[0]);
    assert!(
        seen[1].ends_with(&format!("\r\n\r\n{sneaky}")),
        "{}",
        seen[1]
    );
    assert!(seen[2].ends_with("\r\n\r\n"), "{}", seen[2]);
    assert!(seen[3].ends_with("\r\n\r\nlate"), "{}", seen[3]);
    for (r, len) in seen.iter().zip(["5", &sneaky.len().to_string(), "", "4"]) {
        let declared = r
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length: ").map(str::to_string));
        assert_eq!(declared.as_deref().unwrap_or(""), len, "{r}");
    }
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let up = scripted(vec![keep(concat!(
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade"
    ))])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (201, "made"));
}

#[tokio::test]
async fn a_head_response_has_no_body_and_keeps_its_connection() {
    let up = scripted(vec![
        keep("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        keep("HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"),
        keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::HEAD, &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(call(reqwest::Method::GET, &url).await.status, 204);
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    // Each answer keeps the connection alive by HTTP's rules, and the backend closes it
    // anyway right after: the next request must find a new connection, GET or POST.
    let mut up = scripted(vec![
        then_close("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"),
        then_close("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"),
        then_close("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nthree"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "one"));
    up.wait_closed().await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "two"));
    up.wait_closed().await;
    let r = call(reqwest::Method::POST, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "three"));
    assert_eq!(up.accepted(), 3);
}

#[tokio::test]
async fn malformed_responses_are_502_and_the_gateway_goes_on() {
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
        "v".repeat(70 * 1024)
    );
    let bad = [
        "SSH-2.0-OpenSSH_9.2\r\n\r\n".to_string(),
        "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_string(),
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_string(),
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n".to_string(),
        huge,
    ];
    let mut answers: Vec<Answer> = bad.iter().map(|b| then_close(b)).collect();
    answers.push(keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"));
    let up = scripted(answers).await;
    let (_g, url) = start(up.addr, &[]).await;
    for b in &bad {
        let r = call(reqwest::Method::GET, &url).await;
        assert_eq!(r.status, 502, "{:?}", &b[..b.len().min(40)]);
    }
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_truncated_body_is_cut_short_for_the_client() {
    let up = scripted(vec![
        then_close("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"),
        then_close("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    for what in ["content-length", "chunked"] {
        // The client sees the response break off: in its body, or before its head if the
        // gateway had not yet written it when the upstream's end came.
        let sent = client().get(&url).header("host", HOST).send().await;
        if let Ok(resp) = sent {
            assert_eq!(resp.status(), 200, "{what}");
            let body = resp.bytes().await;
            assert!(
                body.is_err(),
                "{what}: the body must not look whole: {body:?}"
            );
        }
    }
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn bytes_after_a_response_keep_its_connection_from_reuse() {
    let up = scripted(vec![
        keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsmuggled"),
        keep("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"),
    ])
    .await;
    let (_g, url) = start(up.addr, &[]).await;
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = call(reqwest::Method::GET, &url).await;
    assert_eq!((r.status, r.body.as_str()), (200, "second"));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream() {
    let ok = || keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let mut up = scripted(vec![ok(), ok(), ok()]).await;
    // Bodies above 16 bytes are streamed rather than buffered.
    let (g, _) = start(up.addr, &["--max-request-buffer-bytes", "16"]).await;
    let addr = g.addr(80).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Declared length: sent as declared.
    let req = format!("POST /a HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello");
    s.write_all(req.as_bytes()).await.unwrap();
    let got = up.request().await;
    assert!(got.contains("content-length: 5\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
    // A body of unknown length streams as it comes (its sender may wait for the answer):
    // chunked again, chunk by chunk.
    let req = format!(
        "POST /b HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let got = up.request().await;
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(!got.contains("content-length"), "{got}");
    assert!(got.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{got}");
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
    // A declared length too large to buffer streams with its length.
    let big = "x".repeat(40);
    let req = format!("POST /c HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 40\r\n\r\n{big}");
    s.write_all(req.as_bytes()).await.unwrap();
    let got = up.request().await;
    assert!(got.contains("content-length: 40\r\n"), "{got}");
    assert!(!got.contains("transfer-encoding"), "{got}");
    assert!(got.ends_with(&format!("\r\n\r\n{big}")), "{got}");
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
}

/// A chunked request's trailers go on to the upstream after its last chunk, but not fields
/// that may not be trailers (RFC 9110 §6.5.1: framing, routing, authentication).
#[tokio::test]
async fn request_trailers_reach_the_upstream() {
    let ok = || keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let mut up = scripted(vec![ok()]).await;
    let (g, _) = start(up.addr, &["--max-request-buffer-bytes", "16"]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    let req = format!(
        "POST /t HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
         3\r\nabc\r\n0\r\nX-Checksum: c0ffee\r\nContent-Length: 99\r\nHost: evil.example\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let got = up.request().await;
    let body = &got[got.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body, "3\r\nabc\r\n0\r\nx-checksum: c0ffee\r\n\r\n", "{got}");
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
}

#[tokio::test]
async fn bytes_after_a_101_reach_the_client() {
    let up = scripted(vec![keep(concat!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n",
        "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "first bytes"
    ))])
    .await;
    let (g, _) = start(up.addr, &[]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"first bytes") {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("no upgraded bytes")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
}
