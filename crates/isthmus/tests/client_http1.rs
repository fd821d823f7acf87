//! HTTP/1.1 from clients as the gateway serves it itself (plain requests: no body, no
//! upgrade) and as it hands a connection to hyper at the first other request: pipelining,
//! heads in pieces, the framing of answers without a body, `Connection: close`, requests
//! with bodies between plain ones, and a client leaving before its answer. Raw sockets on
//! the client side, so every byte is the gateway's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "h1.example.com";

/// Reads responses off `s` until `n` are whole (by Content-Length or chunked), each as
/// `(head, body)`; anything after them stays unread.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            if let Some((resp, used)) = one_response(&buf) {
                out.push(resp);
                buf.drain(..used);
                continue;
            }
            let mut chunk = [0u8; 16384];
            let got = s.read(&mut chunk).await.unwrap();
            assert!(got > 0, "closed after {} responses: {buf:?}", out.len());
            buf.extend_from_slice(&chunk[..got]);
        }
    })
    .await
    .expect("responses did not arrive in time");
    out
}

/// The response at the front of `buf`, if whole, and its length; HEAD answers must not be
/// passed here (their length says nothing of their body).
fn one_response(buf: &[u8]) -> Option<((String, String), usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let lower = head.to_ascii_lowercase();
    let rest = &buf[end..];
    if lower.contains("transfer-encoding: chunked") {
        let text = String::from_utf8_lossy(rest);
        let last = text.find("0\r\n\r\n")?;
        let body = dechunked(&text[..last]);
        return Some(((head, body), end + last + 5));
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let body = rest.get(..len)?;
    Some(((head, String::from_utf8_lossy(body).to_string()), end + len))
}

fn dechunked(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = text.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        out.push_str(&after[..size]);
        text = &after[size + 2..];
    }
    out
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn gateway() -> (Gateway, std::net::SocketAddr) {
    let up = backend("plain").await;
    let g = start_one_backend(HOST, "plain", up, &[]).await;
    let addr = g.addr(80).await;
    (g, addr)
}

#[tokio::test]
async fn pipelined_requests_and_heads_in_pieces_are_answered_in_order() {
    let (_g, addr) = gateway().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let three: String = ["/one", "/two?x=1", "/three"]
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .collect();
    s.write_all(three.as_bytes()).await.unwrap();
    let got = responses(&mut s, 3).await;
    let paths: Vec<_> = got
        .iter()
        .map(|(head, body)| {
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            json(body)["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(paths, ["/one", "/two", "/three"]);

    // A head a few bytes at a time, on the same connection.
    let head = format!("GET /dribbled HTTP/1.1\r\nHost: {HOST}\r\nX-Piece: a\r\n\r\n");
    for piece in head.as_bytes().chunks(5) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (_, body) = responses(&mut s, 1).await.remove(0);
    let echo = json(&body);
    assert_eq!(echo["path"], "/dribbled");
    assert_eq!(echo["headers"]["x-piece"], "a");
}

#[tokio::test]
async fn requests_with_bodies_between_plain_ones_are_served_on_the_same_connection() {
    let (_g, addr) = gateway().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mixed = format!(
        "GET /a HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         POST /b HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello\
         GET /c HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n\
         PUT /d HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    s.write_all(mixed.as_bytes()).await.unwrap();
    let got = responses(&mut s, 4).await;
    let seen: Vec<(String, String, u64)> = got
        .iter()
        .map(|(_, body)| {
            let e = json(body);
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["body_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("GET", "/a", 0),
        ("POST", "/b", 5),
        ("GET", "/c", 0),
        ("PUT", "/d", 3),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(m, p, n)| (m.to_string(), p.to_string(), *n))
        .collect();
    assert_eq!(seen, want);

    // After hyper served the bodies, plain requests go on being answered.
    s.write_all(format!("GET /e HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (_, body) = responses(&mut s, 1).await.remove(0);
    assert_eq!(json(&body)["path"], "/e");
}

#[tokio::test]
async fn answers_without_a_body_and_connection_close_are_framed_as_http_says() {
    let (_g, addr) = gateway().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // HEAD: the length of the body a GET would get, and no body; then 204, then a GET.
    let req = format!(
        "HEAD /h HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         GET /status/204 HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
         GET /last HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .expect("the connection did not close after Connection: close")
        .unwrap();
    let text = String::from_utf8_lossy(&all).to_string();
    let heads: Vec<&str> = text.matches("HTTP/1.1 ").collect();
    assert_eq!(heads.len(), 3, "{text}");
    let (head_resp, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head_resp.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let declared: usize = head_resp
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(declared > 0, "{head_resp}");
    // The HEAD answer has no body: the next response starts right after its head.
    assert!(rest.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
    let (no_content, rest) = rest.split_once("\r\n\r\n").unwrap();
    assert!(
        !no_content.to_ascii_lowercase().contains("content-length"),
        "{no_content}"
    );
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let (last_head, last_body) = rest.split_once("\r\n\r\n").unwrap();
    assert!(last_head.contains("\r\nconnection: close"), "{last_head}");
    assert!(last_head.contains("\r\ndate: "), "{last_head}");
    assert_eq!(json(last_body)["path"], "/last");
}

#[tokio::test]
async fn a_client_leaving_before_its_answer_cancels_the_upstream_request() {
    // A backend that reads the request, never answers, and tells when the gateway closes
    // the upstream connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tx.send("request");
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                let _ = tx.send("closed");
            });
        }
    });
    let g = start_one_backend(HOST, "silent", up, &[]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    s.write_all(format!("GET /wait HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let arrived = tokio::time::timeout(WAIT, rx.recv()).await;
    assert_eq!(arrived.ok().flatten(), Some("request"));
    drop(s);
    let closed = tokio::time::timeout(WAIT, rx.recv()).await;
    assert_eq!(closed.ok().flatten(), Some("closed"));
}
