//! The gateway facing the internet: malformed and smuggling requests, header limits, path
//! normalisation against route bypasses, client addresses behind trusted proxies and the
//! PROXY protocol, and the per-listener connection limit. Hostile bytes are written on raw
//! sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "edge.example.com";

/// A gateway routing `/admin` to backend `admin` and everything else to `public`, with extra
/// command-line arguments.
async fn start(extra: &[&str]) -> (Gateway, Recorder, Recorder) {
    let admin = recording_backend("admin", |_| Answer::ok()).await;
    let public = recording_backend("public", |_| Answer::ok()).await;
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "a.yaml".to_string(),
            service("admin", "admin.internal", &[(admin.addr, "v1")]),
        ),
        (
            "p.yaml".to_string(),
            service("public", "public.internal", &[(public.addr, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &[HOST],
                &["gw"],
                &http_routes(&[
                    ("[{uri: {prefix: /admin}}]", "admin.internal"),
                    ("", "public.internal"),
                ]),
            ),
        ),
    ];
    let g = start_files_with(&files, extra).await;
    (g, admin, public)
}

/// A gateway routing every request for `HOST` to the one backend at `addr`, with extra
/// command-line arguments.
async fn start_one(name: &str, addr: SocketAddr, extra: &[&str]) -> Gateway {
    start_one_backend(HOST, name, addr, extra).await
}

/// What the gateway writes to `s` until it closes it; `what` names the wait if it does not
/// close `s` in time. A reset counts as closing.
async fn read_until_closed(s: &mut TcpStream, what: &str) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect(what)
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for the gateway to close `s`, and checks that it wrote nothing first.
async fn closed_silently(s: &mut TcpStream, what: &str) {
    let out = read_until_closed(s, what).await;
    assert!(out.is_empty(), "{out}");
}

fn req(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra_headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn malformed_and_smuggling_requests_get_400_and_never_reach_a_backend() {
    let (g, admin, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let cases: &[(&str, String)] = &[
        (
            "two Content-Length values",
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde"
            ),
        ),
        ("obs-fold", req("/", "X-Folded: a\r\n b\r\n")),
        ("space in a header name", req("/", "Bad Name: x\r\n")),
        ("bare CR in a value", req("/", "X-Cr: a\rb\r\n")),
        (
            "two Host headers",
            format!(
                "GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example.com\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "an invalid Host",
            "GET / HTTP/1.1\r\nHost: edge example com\r\nConnection: close\r\n\r\n".to_string(),
        ),
        ("an encoded NUL in the path", req("/a%00b", "")),
        (
            "a bad chunk size",
            format!(
                "POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            ),
        ),
    ];
    for (name, bytes) in cases {
        let r = raw_http(addr, bytes).await;
        assert_eq!(r.status, 400, "{name}: {r:?}");
    }
    assert_eq!(
        admin.count() + public.count(),
        0,
        "nothing reached a backend"
    );
    // The gateway is still fine.
    assert_eq!(raw_http(addr, &req("/x", "")).await.status, 200);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (g, admin, public) = start(&[]).await;
    // The classic CL.TE attack: a front end honouring Content-Length would see one request,
    // one honouring Transfer-Encoding a second one (`GET /admin`) hidden in the body.
    let attack = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    let out = exchange(g.addr(80).await, attack.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    // Transfer-Encoding wins and the connection closes after the answer (RFC 9112 §6.3), so
    // the hidden request is never read as one.
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert_eq!(admin.count(), 0, "the smuggled request reached /admin");
    let seen = public.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.get("content-length").is_none(),
        "re-serialised with one framing"
    );
}

#[tokio::test]
async fn oversized_header_blocks_get_431() {
    let (g, _, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let big = format!("X-Big: {}\r\n", "a".repeat(70 * 1024));
    let r = raw_http(addr, &req("/", &big)).await;
    assert_eq!(r.status, 431, "{r:?}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw_http(addr, &req("/", &many)).await;
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(public.count(), 0);
}

#[tokio::test]
async fn normalised_paths_cannot_bypass_a_route() {
    let (g, admin, public) = start(&[]).await;
    let addr = g.addr(80).await;
    // Each of these is /admin once normalised (BASE): it must take the /admin route, so
    // whatever protects /admin applies.
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/./admin",
        "/%61dmin",
    ] {
        let r = raw_http(addr, &req(path, "")).await;
        assert_eq!(r.status, 200, "{path}");
        let seen = admin.next().await;
        assert_eq!(
            seen.path, "/admin",
            "{path} reached the backend as {}",
            seen.path
        );
    }
    // BASE keeps double slashes and encoded slashes: not /admin.
    for path in ["//admin", "/public%2f..%2fadmin"] {
        raw_http(addr, &req(path, "")).await;
        assert_ne!(public.next().await.path, "/admin", "{path}");
    }
    assert_eq!(admin.count(), 4);
}

#[tokio::test]
async fn merge_and_decode_slashes_as_configured() {
    let (g, admin, _) = start(&["--path-normalization", "decode-and-merge-slashes"]).await;
    let addr = g.addr(80).await;
    for path in ["//admin", "/public%2f..%2fadmin", "/x/..//admin"] {
        raw_http(addr, &req(path, "")).await;
        assert_eq!(admin.next().await.path, "/admin", "{path}");
    }
}

#[tokio::test]
async fn headers_with_underscores_rejected_or_dropped_as_configured() {
    let (g, _, public) = start(&["--headers-with-underscores", "reject"]).await;
    let r = raw_http(g.addr(80).await, &req("/", "X_Under: 1\r\n")).await;
    assert_eq!(r.status, 400);
    assert_eq!(public.count(), 0);
    drop(g);
    let (g, _, public) = start(&["--headers-with-underscores", "drop"]).await;
    let r = raw_http(g.addr(80).await, &req("/", "X_Under: 1\r\nX-Fine: 2\r\n")).await;
    assert_eq!(r.status, 200);
    let seen = public.next().await;
    assert!(seen.headers.get("x_under").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers.get("x-fine").unwrap(), "2");
}

#[tokio::test]
async fn trusted_proxies_name_the_client_from_x_forwarded_for() {
    let (g, _, public) = start(&["--num-trusted-proxies", "1"]).await;
    let addr = g.addr(80).await;
    let r = raw_http(
        addr,
        &req("/", "X-Forwarded-For: 192.0.2.10, 203.0.113.1\r\nX-Forwarded-Proto: https\r\nX-Envoy-External-Address: 6.6.6.6\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = public.next().await;
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        h("x-envoy-external-address").as_deref(),
        Some("203.0.113.1")
    );
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("192.0.2.10, 203.0.113.1, 127.0.0.1")
    );
    // The load balancer in front terminated TLS and said so.
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    drop(g);

    // Without trusted proxies the peer is the client: an internal one, so no external
    // address, and the client's claims are not taken.
    let (g, _, public) = start(&[]).await;
    raw_http(
        g.addr(80).await,
        &req("/", "X-Forwarded-For: 203.0.113.1\r\nX-Forwarded-Proto: https\r\nX-Envoy-External-Address: 6.6.6.6\r\n"),
    )
    .await;
    let seen = public.next().await;
    assert!(seen.headers.get("x-envoy-external-address").is_none());
    assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "http");
    // The peer is still appended to what the client claimed, as Envoy does.
    assert_eq!(
        seen.headers.get("x-forwarded-for").unwrap(),
        "203.0.113.1, 127.0.0.1"
    );
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .expect("the gateway answers or closes within 10 s")
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_give_the_client_address() {
    let (g, _, public) = start(&["--proxy-protocol"]).await;
    let addr = g.addr(80).await;
    let v1 = [
        b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 80\r\n".as_slice(),
        req("/", "").as_bytes(),
    ]
    .concat();
    let out = exchange(addr, &v1).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let seen = public.next().await;
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "198.51.100.7");
    assert_eq!(
        seen.headers.get("x-envoy-external-address").unwrap(),
        "198.51.100.7"
    );

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0, 12, 203, 0, 113, 9, 10, 0, 0, 1]);
    v2.extend_from_slice(&40000u16.to_be_bytes());
    v2.extend_from_slice(&80u16.to_be_bytes());
    v2.extend_from_slice(req("/", "").as_bytes());
    let out = exchange(addr, &v2).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        public.next().await.headers.get("x-forwarded-for").unwrap(),
        "203.0.113.9"
    );

    // No header: the connection is closed without an answer, as Envoy's listener filter does.
    let out = exchange(addr, req("/", "").as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(public.count(), 2);
}

/// One keep-alive request on `s`: the start of the answer.
async fn keep(s: &mut TcpStream) -> String {
    let text = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    s.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn connections_over_the_listener_limit_are_shed_and_the_others_go_on() {
    let (g, _, public) = start(&["--max-connections-per-listener", "2"]).await;
    let addr = g.addr(80).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(keep(&mut b).await.starts_with("HTTP/1.1 200"));
    // A third is closed at once, without an answer.
    let out = exchange(addr, req("/", "").as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // The two open connections still serve.
    assert!(keep(&mut a).await.starts_with("HTTP/1.1 200"));
    assert!(keep(&mut b).await.starts_with("HTTP/1.1 200"));
    // One closes; a new connection is accepted again.
    drop(a);
    eventually("a slot frees when a connection closes", || async {
        !exchange(addr, req("/", "").as_bytes()).await.is_empty()
    })
    .await;
    assert!(public.count() >= 5);
}

// === HTTP/2 written frame by frame ===

/// The pieces of HTTP/2 a hostile client writes by hand (RFC 9113).
mod h2raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = 0x1;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An HPACK integer with an `n`-bit prefix, `high` holding the bits above it.
    pub fn integer(high: u8, n: u32, mut v: usize) -> Vec<u8> {
        let max = (1usize << n) - 1;
        if v < max {
            return vec![high | v as u8];
        }
        let mut out = vec![high | max as u8];
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
        out
    }

    /// `GET http://HOST/` as an HPACK block (static-table entries and literals, no Huffman).
    pub fn get(host: &str) -> Vec<u8> {
        // :method GET, :scheme http, :path /.
        let mut b = vec![0x82, 0x86, 0x84];
        // :authority (static index 1), a literal value without indexing.
        b.push(0x01);
        b.extend(integer(0, 7, host.len()));
        b.extend_from_slice(host.as_bytes());
        b
    }

    /// The start of a literal header whose value is `len` bytes long: the value itself follows.
    pub fn literal_start(name: &str, len: usize) -> Vec<u8> {
        let mut b = vec![0x00];
        b.extend(integer(0, 7, name.len()));
        b.extend_from_slice(name.as_bytes());
        b.extend(integer(0, 7, len));
        b
    }

    pub struct Frame {
        pub kind: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    /// The next frame, or `None` once the connection is closed or reset.
    pub async fn read(s: &mut TcpStream) -> Option<Frame> {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame {
            kind: head[3],
            stream,
            payload,
        })
    }

    /// The error code of a GOAWAY frame.
    pub fn goaway_code(f: &Frame) -> Option<u32> {
        (f.kind == GOAWAY && f.payload.len() >= 8)
            .then(|| u32::from_be_bytes(f.payload[4..8].try_into().unwrap()))
    }

    /// Connects and sends the preface with empty SETTINGS.
    pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        s.write_all(&hello).await.unwrap();
        s
    }
}

/// The gateway's SETTINGS (id -> value) and the increment of its first connection-level
/// WINDOW_UPDATE.
async fn server_settings(addr: SocketAddr) -> (std::collections::HashMap<u16, u32>, u32) {
    let mut s = h2raw::connect(addr).await;
    tokio::time::timeout(WAIT, async {
        let (mut settings, mut window) = (None, None);
        while settings.is_none() || window.is_none() {
            let f = h2raw::read(&mut s).await.expect("connection closed");
            if f.kind == h2raw::SETTINGS && !f.payload.is_empty() {
                let map = f
                    .payload
                    .chunks(6)
                    .map(|c| {
                        (
                            u16::from_be_bytes([c[0], c[1]]),
                            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                        )
                    })
                    .collect();
                settings = Some(map);
            } else if f.kind == h2raw::WINDOW_UPDATE && f.stream == 0 {
                window = Some(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
            }
        }
        (settings.unwrap(), window.unwrap())
    })
    .await
    .expect("no SETTINGS and WINDOW_UPDATE from the gateway")
}

#[tokio::test]
async fn http2_settings_announce_the_limits_and_windows() {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    const INITIAL_WINDOW_SIZE: u16 = 0x4;
    const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    let (g, _, _) = start(&[]).await;
    let (settings, window) = server_settings(g.addr(80).await).await;
    assert_eq!(settings.get(&MAX_CONCURRENT_STREAMS), Some(&100));
    assert_eq!(settings.get(&INITIAL_WINDOW_SIZE), Some(&65_536));
    assert_eq!(settings.get(&MAX_HEADER_LIST_SIZE), Some(&(60 * 1024)));
    // The connection window starts at 65535 and is raised to 1 MiB.
    assert_eq!(65_535 + window, 1024 * 1024);
    drop(g);

    let (g, _, _) = start(&[
        "--http2-initial-stream-window-size",
        "131072",
        "--http2-initial-connection-window-size",
        "4194304",
    ])
    .await;
    let (settings, window) = server_settings(g.addr(80).await).await;
    assert_eq!(settings.get(&INITIAL_WINDOW_SIZE), Some(&131_072));
    assert_eq!(65_535 + window, 4 * 1024 * 1024);
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_without_growing_memory() {
    let (g, _, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let before = rss_kib(g.pid());
    // Endless CONTINUATION frames after a HEADERS frame without END_HEADERS: many tiny ones
    // (the frame count is the limit), then full ones carrying a 64 MiB header value (the
    // header-list size is).
    for (frame_size, frames) in [(1usize, 200_000usize), (16 * 1024, 4096)] {
        let s = h2raw::connect(addr).await;
        let (mut rd, mut wr) = s.into_split();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            // Collect frames until the gateway closes the connection.
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        });
        let mut block = h2raw::get(HOST);
        block.extend(h2raw::literal_start("x-flood", 64 << 20));
        let mut out = h2raw::frame(h2raw::HEADERS, h2raw::END_STREAM, 1, &block);
        let payload = vec![b'a'; frame_size];
        let mut sent = 0;
        while sent < frames {
            out.extend(h2raw::frame(h2raw::CONTINUATION, 0, 1, &payload));
            sent += 1;
            if out.len() >= 64 * 1024 || sent == frames {
                if wr.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
        }
        let bytes = tokio::time::timeout(WAIT, reader)
            .await
            .expect("the gateway kept the flooding connection open")
            .unwrap();
        // What the gateway said before closing: GOAWAY with ENHANCE_YOUR_CALM (too many
        // CONTINUATION frames, or a header list far over the limit) or another connection
        // error; never a response.
        let mut cursor = bytes.as_slice();
        let mut codes = Vec::new();
        while cursor.len() >= 9 {
            let len = u32::from_be_bytes([0, cursor[0], cursor[1], cursor[2]]) as usize;
            let Some(payload) = cursor.get(9..9 + len) else {
                break;
            };
            assert_ne!(cursor[3], h2raw::HEADERS, "the flood got a response");
            if cursor[3] == h2raw::GOAWAY {
                codes.push(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
            cursor = &cursor[9 + len..];
        }
        assert!(
            codes
                .iter()
                .all(|c| [h2raw::ENHANCE_YOUR_CALM, 0x1, 0x9].contains(c)),
            "frames of {frame_size} bytes: GOAWAY codes {codes:?}"
        );
    }
    let grown = rss_kib(g.pid()).saturating_sub(before);
    assert!(grown < 32 * 1024, "the gateway grew by {grown} KiB");
    assert_eq!(public.count(), 0);
    // Other clients are served.
    assert_eq!(raw_http(addr, &req("/", "")).await.status, 200);
}

#[tokio::test]
async fn http2_header_blocks_over_the_limit_get_431_and_the_connection_goes_on() {
    let (g, _, public) = start(&[]).await;
    let tcp = TcpStream::connect(g.addr(80).await).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let send = |big: bool| {
        let client = client.clone();
        async move {
            let mut b = http::Request::get(format!("http://{HOST}/"));
            if big {
                b = b.header("x-big", "a".repeat(70 * 1024));
            }
            let mut client = client.ready().await.unwrap();
            let (resp, _) = client.send_request(b.body(()).unwrap(), true).unwrap();
            tokio::time::timeout(WAIT, resp)
                .await
                .unwrap()
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send(true).await, 431);
    assert_eq!(send(false).await, 200);
    assert_eq!(public.count(), 1);
}

#[tokio::test]
async fn http2_rapid_reset_closes_the_connection_and_other_clients_are_served() {
    let (g, _, public) = start(&[]).await;
    let addr = g.addr(80).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    const STREAMS: usize = 20_000;
    let flood = async {
        let mut sent = 0;
        while sent < STREAMS {
            let Ok(ready) = client.clone().ready().await else {
                break;
            };
            client = ready;
            let req = http::Request::get(format!("http://{HOST}/"))
                .body(())
                .unwrap();
            let Ok((_, mut stream)) = client.send_request(req, true) else {
                break;
            };
            // Cancelled at once: the CVE-2023-44487 pattern.
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
            if sent % 64 == 0 {
                // Let the connection task write what was queued.
                tokio::task::yield_now().await;
            }
        }
        sent
    };
    // Meanwhile another client, on its own connection, keeps getting answers.
    let other = async {
        let c = h2c_client_for(HOST, addr);
        for i in 0..20 {
            let r = c
                .get(format!("http://{HOST}:{}/other/{i}", addr.port()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i} of the other client failed: {e}"));
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(flood, other)
    })
    .await
    .expect("the flood or the other client did not finish in 30 s");
    let ended = tokio::time::timeout(WAIT, driver)
        .await
        .expect("the flooding connection was not closed")
        .unwrap();
    assert!(sent < STREAMS, "all {sent} streams were accepted");
    if let Err(e) = &ended
        && let Some(reason) = e.reason()
    {
        assert_eq!(reason, h2::Reason::ENHANCE_YOUR_CALM, "{e}");
    }
    // The gateway did a bounded amount of work for the flood.
    let flooded = public
        .seen()
        .iter()
        .filter(|s| !s.path.starts_with("/other"))
        .count();
    assert!(
        flooded < 1000,
        "{flooded} cancelled requests reached the backend"
    );
    eprintln!("rapid reset: {sent} streams sent, {flooded} reached the backend, {ended:?}");
}

// === Slow clients ===

/// Writes `head` and then one more header byte every 100 ms; how long until the gateway
/// closed the connection (without an answer).
async fn dribble(addr: SocketAddr, head: &[u8]) -> Duration {
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if wr.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut out))
        .await
        .expect("the slow client was not cut off");
    writer.abort();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    started.elapsed()
}

#[tokio::test]
async fn slowloris_request_heads_are_cut_off_at_the_headers_timeout() {
    let (g, _, public) = start(&["--request-headers-timeout", "1s"]).await;
    let addr = g.addr(80).await;
    // A head that never ends, one byte at a time.
    let took = dribble(
        addr,
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ").as_bytes(),
    )
    .await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A connection that sends nothing at all.
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    closed_silently(&mut s, "the silent connection was not closed").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // HTTP/2: a HEADERS frame without END_HEADERS, and nothing more.
    let mut s = h2raw::connect(addr).await;
    let block = h2raw::get(HOST);
    s.write_all(&h2raw::frame(h2raw::HEADERS, h2raw::END_STREAM, 1, &block))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(f) = h2raw::read(&mut s).await {
            assert_ne!(f.kind, h2raw::HEADERS, "a response to an incomplete head");
        }
    })
    .await
    .expect("the stalled HTTP/2 connection was not closed");
    // A second request on a keep-alive connection gets the same limit from its first byte.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let text = read_until_closed(&mut s, "the incomplete second head was not cut off").await;
    // Only what was left of the first answer, if anything: no answer to the second head.
    assert!(!text.contains("HTTP/1.1 "), "{text}");
    assert_eq!(public.count(), 1);
    // Complete requests are still served.
    assert_eq!(raw_http(addr, &req("/", "")).await.status, 200);
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let slow = recording_backend("slow", |_| Answer::ok().after(Duration::from_secs(3))).await;
    let g = start_one("slow", slow.addr, &["--idle-timeout", "2s"]).await;
    let addr = g.addr(80).await;
    // A request taking longer than the idle timeout is not cut: it is not idle.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
    // Then the keep-alive connection idles, and is closed after the idle timeout.
    let idle_from = tokio::time::Instant::now();
    let text = read_until_closed(&mut s, "the idle connection stayed open").await;
    assert!(!text.contains("HTTP/1.1 "), "{text}");
    let idled = idle_from.elapsed();
    assert!(
        idled >= Duration::from_millis(1800),
        "closed after {idled:?}"
    );

    // HTTP/2: one request, then GOAWAY (no error) once idle.
    let mut s = h2raw::connect(addr).await;
    let block = h2raw::get(HOST);
    let flags = h2raw::END_STREAM | h2raw::END_HEADERS;
    s.write_all(&h2raw::frame(h2raw::HEADERS, flags, 1, &block))
        .await
        .unwrap();
    let goaway = tokio::time::timeout(WAIT, async {
        while let Some(f) = h2raw::read(&mut s).await {
            if let Some(code) = h2raw::goaway_code(&f) {
                return Some(code);
            }
        }
        None
    })
    .await
    .expect("the idle HTTP/2 connection stayed open");
    assert_eq!(goaway, Some(0));
    assert_eq!(slow.count(), 2);
}

// === Request bodies kept for retries and mirrors ===

#[tokio::test]
async fn bodies_over_the_body_limit_get_413() {
    const TOO_LARGE: &str = "HTTP/1.1 413 Payload Too Large\r\n";
    let (g, _admin, public) = start(&["--max-request-body-bytes", "1000"]).await;
    let addr = g.addr(80).await;
    let post =
        |len: usize| format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len}\r\n\r\n");

    // At the limit: passed on whole.
    let url = g.url(80, "/up").await;
    let r = client()
        .post(&url)
        .header("host", HOST)
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(public.next().await.body_bytes, 1000);

    // A Content-Length over it, the body not sent yet: refused at once, before anything goes
    // upstream, and the connection (whose body was never read) closed.
    let out = exchange(addr, post(5000).as_bytes()).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with(TOO_LARGE), "{out}");
    assert!(out.ends_with("\r\n\r\nPayload Too Large"), "{out}");

    // A body over it that came whole with its head (the gateway's own HTTP/1.1 server): the
    // connection goes on with the next request.
    let pipelined = format!("{}{}{}", post(1500), "x".repeat(1500), req("/next", ""));
    let out = exchange(addr, pipelined.as_bytes()).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with(TOO_LARGE), "{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 1, "{out}");
    assert_eq!(public.next().await.path, "/next");

    // A chunked body passing it on its way upstream: the upstream request ends, and the
    // client gets 413.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    c.write_all(format!("{head}{chunk}").as_bytes())
        .await
        .unwrap();
    c.write_all(chunk.as_bytes()).await.unwrap();
    let out = read_until_closed(&mut c, "the connection stayed open").await;
    assert!(out.starts_with(TOO_LARGE), "{out}");

    // HTTP/2: a content-length over it, and a body of unknown length that passes it; the
    // connection serves the next stream.
    let authority = format!("http://{HOST}/up");
    // The body is never sent: held open, so that only the declared length can tell.
    let (_held, body) = FrameBody::channel();
    let declared = http::Request::post(&authority)
        .header("content-length", "5000")
        .body(body)
        .unwrap();
    let mut sender = h2c_connect(addr).await;
    let r = tokio::time::timeout(WAIT, sender.send_request(declared))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 413);
    let frames = (0..3)
        .map(|_| hyper::body::Frame::data(bytes::Bytes::from(vec![b'x'; 600])))
        .collect();
    let streamed = http::Request::post(&authority)
        .body(FrameBody::of(frames))
        .unwrap();
    let r = tokio::time::timeout(WAIT, sender.send_request(streamed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 413);
    let next = http::Request::get(format!("http://{HOST}/next2"))
        .body(FrameBody::empty())
        .unwrap();
    let r = tokio::time::timeout(WAIT, sender.send_request(next))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("the HTTP/2 request for /next2", || async {
        public.seen().iter().any(|s| s.path == "/next2")
    })
    .await;
    assert!(
        public.seen().iter().all(|s| s.body_bytes <= 1000),
        "{:?}",
        public.seen()
    );
    chunked_body_over_the_limit_to_an_http2_upstream_gets_413().await;
}

/// The same chunked body to an HTTP/2 upstream, which reports the body's failure as a reset
/// of its stream.
async fn chunked_body_over_the_limit_to_an_http2_upstream_gets_413() {
    let h2 = grpc_backend("h2").await;
    let limit = ["--max-request-body-bytes", "1000"];
    let g = start_one_backend_speaking(HOST, "h2", h2.addr, "HTTP2", &limit).await;
    let mut c = TcpStream::connect(g.addr(80).await).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    c.write_all(format!("{head}{chunk}{chunk}").as_bytes())
        .await
        .unwrap();
    let out = read_until_closed(&mut c, "the connection stayed open").await;
    assert!(
        out.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn bodies_over_the_buffer_limit_stream_once_without_retries_or_mirror_copies() {
    let flaky = recording_backend("flaky", |_| Answer::status(503)).await;
    let shadow = recording_backend("shadow", |_| Answer::ok()).await;
    let vs = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: ['{HOST}']
  gateways: [gw]
  http:
  - route: [{{destination: {{host: flaky.internal}}}}]
    retries: {{attempts: 2, retryOn: 5xx}}
    mirror: {{host: shadow.internal}}
"
    );
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "f.yaml".to_string(),
            service("flaky", "flaky.internal", &[(flaky.addr, "v1")]),
        ),
        (
            "s.yaml".to_string(),
            service("shadow", "shadow.internal", &[(shadow.addr, "v1")]),
        ),
        ("vs.yaml".to_string(), vs),
    ];
    let g = start_files_with(&files, &["--max-request-buffer-bytes", "1024"]).await;
    let url = g.url(80, "/upload").await;
    let post = |size: usize| {
        let url = url.clone();
        async move {
            client()
                .post(url)
                .header("host", HOST)
                .body(vec![b'x'; size])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Within the limit: buffered, so retried twice and mirrored, whole each time.
    assert_eq!(post(1000).await, 503);
    flaky.wait_count(3).await;
    assert!(flaky.seen().iter().all(|s| s.body_bytes == 1000));
    assert_eq!(shadow.next().await.body_bytes, 1000);
    // Over the limit: sent once, whole, without retries or a mirror copy (as Envoy gives up
    // retrying and shadowing past its buffer limit).
    assert_eq!(post(5000).await, 503);
    flaky.wait_count(4).await;
    let seen = flaky.seen();
    assert_eq!(seen.len(), 4, "a request over the buffer limit was retried");
    assert_eq!(seen[3].body_bytes, 5000);
    eventually("the mirror copy counted as dropped", || async {
        metric_sum(&g.prometheus().await, "isthmus_mirror_dropped_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(shadow.count(), 1);
}

#[tokio::test]
async fn streams_cancelled_after_the_gateway_took_them_close_the_connection() {
    // Each stream is reset only once its request reached the backend, so h2's guard for
    // streams reset before they are accepted never sees them: Envoy's premature-reset rule
    // (250 streams cancelled within 1 s of opening) closes the connection.
    let held = recording_backend("held", |_| Answer::ok().after(Duration::from_secs(20))).await;
    let g = start_one("held", held.addr, &[]).await;
    let tcp = TcpStream::connect(g.addr(80).await).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let mut driver = tokio::spawn(conn);
    let (mut sent, mut closed) = (0, false);
    while sent < 600 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let req = http::Request::get(format!("http://{HOST}/{sent}"))
            .body(())
            .unwrap();
        let Ok((_, mut stream)) = client.send_request(req, true) else {
            break;
        };
        sent += 1;
        // Wait for the request to arrive; a closed connection never delivers it.
        tokio::select! {
            () = held.wait_count(sent) => stream.send_reset(h2::Reason::CANCEL),
            _ = &mut driver => {
                closed = true;
                break;
            }
        }
    }
    if !closed {
        tokio::time::timeout(WAIT, driver)
            .await
            .expect("the connection of cancelled streams was not closed")
            .unwrap()
            .ok();
    }
    // The stream in flight when the connection closed was not cancelled.
    let cancelled = sent - 1;
    assert!(
        (250..=260).contains(&cancelled),
        "closed after {cancelled} cancelled streams"
    );
}

// === Parking quiet HTTP/1 connections ===

async fn parked(g: &Gateway) -> f64 {
    metric_sum(
        &g.prometheus().await,
        "isthmus_downstream_connections_parked",
        &[],
    )
}

async fn until_parked(g: &Gateway, n: f64, what: &str) {
    eventually(what, || async { parked(g).await == n }).await;
}

/// A keep-alive connection to each of `addrs`, each served one request.
async fn served_once(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for addr in addrs {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
        conns.push(s);
    }
    conns
}

#[tokio::test]
async fn quiet_http1_connections_are_parked_and_serve_their_next_requests() {
    let (mut g, _, public) = start(&["--park-idle-after", "100ms"]).await;
    let addr = g.addr(80).await;
    let mut conns = served_once([addr; 50]).await;
    until_parked(&g, 50.0, "every quiet connection parked").await;

    // The next request arrives in pieces on some connections, pipelined behind another on
    // others, with a body on the rest: each is answered as on a connection never parked.
    for (i, s) in conns.iter_mut().enumerate() {
        let get = |p: &str| format!("GET /{p}/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        match i % 3 {
            0 => {
                let text = get("pieces");
                for piece in [&text[..1], &text[1..5], &text[5..]] {
                    s.write_all(piece.as_bytes()).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
                let r = responses(s, 1).await;
                assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
            }
            1 => {
                let two = format!("{}{}", get("first"), get("second"));
                s.write_all(two.as_bytes()).await.unwrap();
                let r = responses(s, 2).await;
                assert!(r.iter().all(|r| r.starts_with("HTTP/1.1 200")), "{r:?}");
            }
            _ => {
                let post = format!(
                    "POST /body/{i} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello"
                );
                s.write_all(post.as_bytes()).await.unwrap();
                let r = responses(s, 1).await;
                assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
            }
        }
    }
    let seen = public.seen();
    for i in 0..50 {
        let want: &[&str] = match i % 3 {
            0 => &["pieces"],
            1 => &["first", "second"],
            _ => &["body"],
        };
        for p in want {
            let path = format!("/{p}/{i}");
            let s = seen.iter().find(|s| s.path == path);
            let s = s.unwrap_or_else(|| panic!("{path} never reached the backend"));
            assert_eq!(s.body_bytes, if *p == "body" { 5 } else { 0 }, "{path}");
        }
    }

    // They park again, and a drain closes parked connections at once.
    until_parked(&g, 50.0, "the connections parked again").await;
    g.signal("TERM");
    for s in &mut conns {
        closed_silently(s, "a parked connection stayed open through the drain").await;
    }
    assert_eq!(g.exit_code_within(WAIT).await, Some(0));
}

#[tokio::test]
async fn parked_connections_still_close_at_the_idle_timeout() {
    let (g, _, _) = start(&["--park-idle-after", "50ms", "--idle-timeout", "1s"]).await;
    let addr = g.addr(80).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
    let idle_from = tokio::time::Instant::now();
    until_parked(&g, 1.0, "the connection parked").await;
    closed_silently(&mut s, "the parked connection stayed open").await;
    let idled = idle_from.elapsed();
    assert!(
        idled >= Duration::from_millis(900),
        "closed after {idled:?}"
    );
    eventually("no connection parked", || async { parked(&g).await == 0.0 }).await;
}

#[tokio::test]
async fn a_head_dribbled_into_a_parked_connection_is_cut_off_at_the_headers_timeout() {
    let (g, _, public) = start(&[
        "--park-idle-after",
        "50ms",
        "--request-headers-timeout",
        "1s",
    ])
    .await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
    until_parked(&g, 1.0, "the connection parked").await;
    // Woken by its first byte, the next head then comes one byte at a time, never ending.
    let started = tokio::time::Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ");
        for b in head.bytes().chain(std::iter::repeat(b'X')) {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, rd.read_to_end(&mut out))
        .await
        .expect("the slow head was not cut off")
        .ok();
    writer.abort();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(public.count(), 1);
}

#[tokio::test]
async fn a_parked_connection_keeps_its_slot_until_its_client_closes_it() {
    let (g, _, _) = start(&[
        "--park-idle-after",
        "50ms",
        "--max-connections-per-listener",
        "1",
    ])
    .await;
    let addr = g.addr(80).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    assert!(keep(&mut a).await.starts_with("HTTP/1.1 200"));
    until_parked(&g, 1.0, "the connection parked").await;
    // Parked, it still holds the listener's only slot: another connection is shed.
    let out = exchange(addr, req("/", "").as_bytes()).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // Its client closes it while parked: the lot lets it go, and its slot with it.
    drop(a);
    until_parked(&g, 0.0, "the closed connection left the lot").await;
    eventually("the slot is free again", || async {
        !exchange(addr, req("/", "").as_bytes()).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn parked_connections_close_when_their_port_goes_and_the_others_stay() {
    let backend = recording_backend("public", |_| Answer::ok()).await;
    let mut files = vec![
        (
            "gw.yaml".to_string(),
            gateway(&[(80, &["*"]), (81, &["*"])]),
        ),
        (
            "b.yaml".to_string(),
            service("public", "public.internal", &[(backend.addr, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service(
                "vs",
                "default",
                &[HOST],
                &["gw"],
                &http_routes(&[("", "public.internal")]),
            ),
        ),
    ];
    let g = start_files_with(&files, &["--park-idle-after", "50ms"]).await;
    let (gone, kept) = (g.addr(80).await, g.addr(81).await);
    let mut conns = served_once([gone, gone, kept, kept]).await;
    until_parked(&g, 4.0, "every connection parked").await;

    files[0].1 = gateway(&[(81, &["*"])]);
    let before = g.generation().await;
    g.write("gw.yaml", &files[0].1).await;
    g.wait_generation_after(before).await;
    for s in &mut conns[..2] {
        closed_silently(s, "a parked connection outlived its port").await;
    }
    for s in &mut conns[2..] {
        assert!(keep(s).await.starts_with("HTTP/1.1 200"));
    }
    assert!(refused(gone).await, "port 80 still accepts");
}

/// An upstream that answers as soon as it has a request's head, then reads the chunked body
/// to its end and reports it.
async fn early_answering_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 4096];
                let mut answered = false;
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((_, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    if !answered {
                        answered = true;
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                    if body.ends_with("0\r\n\r\n") {
                        let _ = tx.send(body.to_string());
                        buf.clear();
                        answered = false;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_request_body_still_arriving_keeps_its_connection_from_parking() {
    let (up, mut bodies) = early_answering_backend().await;
    let g = start_one("upload", up, &["--park-idle-after", "50ms"]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(format!("{head}5\r\nfirst\r\n").as_bytes())
        .await
        .unwrap();
    let r = responses(&mut s, 1).await;
    assert!(
        r[0].starts_with("HTTP/1.1 200") && r[0].ends_with("early"),
        "{r:?}"
    );
    // The client pauses mid-body, far longer than the parking delay: the upload is not over,
    // so the connection must not be parked (the rest of the body would be read as a request).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(parked(&g).await, 0.0);
    s.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
    let body = tokio::time::timeout(WAIT, bodies.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, "5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n");
    // The connection goes on, and parks once it is quiet.
    until_parked(&g, 1.0, "the quiet connection parked").await;
    s.write_all(format!("{head}0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 200"), "{r:?}");
}

/// The status of the response to stream `id`: HPACK's static-table index of `:status`
/// (0x88 is 200) as the first byte of its HEADERS block.
async fn h2_first_status(s: &mut TcpStream, id: u32) -> Option<u8> {
    tokio::time::timeout(WAIT, async {
        while let Some(f) = h2raw::read(s).await {
            if f.kind == h2raw::HEADERS && f.stream == id {
                return f.payload.first().copied();
            }
            assert!(
                h2raw::goaway_code(&f).is_none(),
                "GOAWAY on a quiet connection"
            );
        }
        None
    })
    .await
    .expect("no answer on the HTTP/2 connection")
}

#[tokio::test]
async fn quiet_http2_connections_are_never_parked_even_with_a_preface_in_pieces() {
    let (g, _, public) = start(&["--park-idle-after", "50ms"]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    // The preface in pieces, apart enough to arrive in separate reads: the first read cannot
    // tell HTTP/2 from its first bytes alone.
    for piece in [
        &h2raw::PREFACE[..3],
        &h2raw::PREFACE[3..10],
        &h2raw::PREFACE[10..],
    ] {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(&h2raw::frame(h2raw::SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let flags = h2raw::END_STREAM | h2raw::END_HEADERS;
    let block = h2raw::get(HOST);
    s.write_all(&h2raw::frame(h2raw::HEADERS, flags, 1, &block))
        .await
        .unwrap();
    assert_eq!(h2_first_status(&mut s, 1).await, Some(0x88));
    // Quiet for many times the parking delay (a non-event: nothing to wait on but time).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(parked(&g).await, 0.0);
    s.write_all(&h2raw::frame(h2raw::HEADERS, flags, 3, &block))
        .await
        .unwrap();
    assert_eq!(h2_first_status(&mut s, 3).await, Some(0x88));
    assert_eq!(public.count(), 2);
}

#[tokio::test]
async fn parking_is_off_with_a_zero_delay() {
    let (g, _, _) = start(&["--park-idle-after", "0"]).await;
    let mut s = TcpStream::connect(g.addr(80).await).await.unwrap();
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
    // Quiet well past any delay a parking would use (a non-event: nothing to wait on).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(parked(&g).await, 0.0);
    assert!(keep(&mut s).await.starts_with("HTTP/1.1 200"));
}
