//! The request heads the gateway's own HTTP/1.1 server takes: plain requests, with no upgrade
//! and no expectation, and no body or a `Content-Length` one read whole with the head (most
//! API calls: a small body the client wrote with its head). Everything else goes to hyper,
//! which parses the same bytes again and answers as it always has (streamed and chunked
//! bodies, upgrades, CONNECT, HTTP/1.0, and every malformed or oversized head with its 400 or
//! 431).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::HeaderMap;
use http::{Method, Request, Uri, Version};

use crate::pool::codec::{decimal, field, field_spans};
use crate::serve::{MAX_HEADER_BYTES, MAX_HEADERS};

/// What the front of a connection's read buffer holds.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once: a box would cost an allocation"
)]
pub enum Head {
    /// A whole plain request, taken from the buffer.
    Plain(Plain),
    /// The start of a head that may still be plain: more bytes are needed.
    Partial,
    /// Anything else: hyper serves it from these bytes on.
    Other,
}

/// The largest body a plain request carries: a larger one is streamed, by hyper.
pub const MAX_WHOLE_BODY: usize = 64 * 1024;

/// A plain request and what its head says about the connection.
#[derive(Debug)]
pub struct Plain {
    pub request: Request<()>,
    /// Its body, whole (empty if it has none).
    pub body: Bytes,
    /// `Connection: close`: the response is the connection's last.
    pub close: bool,
    /// `TE: trailers`: the client takes trailer fields in a chunked response.
    pub trailers: bool,
}

/// Room a connection keeps from one request head to the next, so that parsing one allocates
/// nothing but the head's own buffer.
#[derive(Debug, Default)]
pub struct Scratch {
    spans: Vec<[usize; 4]>,
    /// An emptied header map (the last response's) for the next request.
    pub headers: Option<HeaderMap>,
}

/// Reads the request head at the front of `buf`, taking its bytes if it is plain.
pub fn parse(buf: &mut BytesMut, scratch: &mut Scratch) -> Head {
    // Empty lines before a request are allowed (RFC 9112 §2.2); hyper skips them.
    if matches!(buf.first(), Some(b'\r' | b'\n')) {
        return Head::Other;
    }
    // Left uninitialised: zeroing a hundred fields costs more than parsing the few a head has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEADER_BYTES => len,
        // hyper answers a head that does not fit with 431.
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEADER_BYTES => return Head::Partial,
        Ok(_) | Err(_) => return Head::Other,
    };
    if req.version != Some(1) {
        return Head::Other;
    }
    let Some(method) = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Head::Other;
    };
    if method == Method::CONNECT {
        return Head::Other;
    }
    // What the fields say is read before the head is taken from the buffer: a request hyper
    // must serve (a body, an upgrade) is left as it is, not taken and put back.
    let Some(Says {
        close,
        trailers,
        length,
    }) = says(req.headers)
    else {
        return Head::Other;
    };
    // A body not all read yet is hyper's to stream: the own server never waits for one.
    let Some(body_len) = usize::try_from(length)
        .ok()
        .filter(|&n| n <= MAX_WHOLE_BODY && n <= buf.len().saturating_sub(len))
    else {
        return Head::Other;
    };
    let base = buf.as_ptr() as usize;
    let path = req.path.map(|p| {
        let start = (p.as_ptr() as usize).wrapping_sub(base);
        start..start + p.len()
    });
    let spans = &mut scratch.spans;
    field_spans(buf, req.headers, spans);
    let head = buf.split_to(len).freeze();
    let body = buf.split_to(body_len).freeze();
    let Some(uri) = path
        .and_then(|p| head.get(p.clone()).map(|_| head.slice(p)))
        .and_then(|p| Uri::from_maybe_shared(p).ok())
    else {
        // Taken from the buffer already: hyper must see it again (and answers 400).
        return other(buf, &head, &body);
    };
    let mut headers = scratch.headers.take().unwrap_or_default();
    // With room for what the gateway adds (X-Forwarded-For, the trace headers, ...).
    headers.reserve(spans.len() + 8);
    for &span in spans.iter() {
        let Some((name, value)) = field(&head, span) else {
            return other(buf, &head, &body);
        };
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Head::Plain(Plain {
        request,
        body,
        close,
        trailers,
    })
}

/// What a plain request's fields say about its connection and its body.
struct Says {
    close: bool,
    trailers: bool,
    /// `Content-Length`, 0 when absent.
    length: u64,
}

/// What the fields of a plain request say; `None` if the request is not plain: its body is
/// chunked (`Transfer-Encoding`) or its length unclear (more than one `Content-Length`, or an
/// invalid one: hyper answers 400), it asks for an upgrade, or it expects something.
fn says(fields: &[httparse::Header<'_>]) -> Option<Says> {
    let (mut says, mut length) = (
        Says {
            close: false,
            trailers: false,
            length: 0,
        },
        false,
    );
    for f in fields {
        // By length first: most names (Host, User-Agent, Accept, ...) are none of these.
        let is = |name: &str| f.name.eq_ignore_ascii_case(name);
        match f.name.len() {
            14 if is("content-length") => {
                if length {
                    return None;
                }
                says.length = decimal(f.value)?;
                length = true;
            }
            17 if is("transfer-encoding") => return None,
            7 if is("upgrade") => return None,
            6 if is("expect") => return None,
            10 if is("connection") => {
                if has_token(f.value, "upgrade") {
                    return None;
                }
                says.close |= has_token(f.value, "close");
            }
            2 if is("te") => says.trailers |= has_token(f.value, "trailers"),
            _ => {}
        }
    }
    Some(says)
}

/// Puts a head and body taken from `buf` back in front of what follows them, for hyper.
fn other(buf: &mut BytesMut, head: &[u8], body: &[u8]) -> Head {
    let mut whole = BytesMut::with_capacity(head.len() + body.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(body);
    whole.extend_from_slice(buf);
    *buf = whole;
    Head::Other
}

/// Whether a comma-separated list has `token`, in any case (as hyper reads `Connection` and
/// `TE`).
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> (Head, Vec<u8>) {
        let mut buf = BytesMut::from(bytes);
        let head = parse(&mut buf, &mut Scratch::default());
        (head, buf.to_vec())
    }

    #[test]
    fn plain_requests_are_taken_and_what_follows_stays() {
        let cases: [(&[u8], &str, bool, bool); 6] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "/", false, false),
            (
                b"HEAD /x?y=1 HTTP/1.1\r\nhost: a\r\n\r\nGET",
                "/x?y=1",
                false,
                false,
            ),
            (
                b"DELETE /d HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "/d",
                false,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n",
                "/",
                true,
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nTE: gzip, Trailers\r\n\r\n",
                "/",
                false,
                true,
            ),
            (
                b"GET http://e.example/p HTTP/1.1\r\n\r\n",
                "http://e.example/p",
                false,
                false,
            ),
        ];
        for (bytes, uri, close, trailers) in cases {
            let (head, rest) = parsed(bytes);
            let Head::Plain(p) = head else {
                panic!("{bytes:?}: {head:?}");
            };
            assert_eq!(p.request.uri(), uri, "{bytes:?}");
            assert_eq!(p.request.version(), Version::HTTP_11);
            assert_eq!((p.close, p.trailers), (close, trailers), "{bytes:?}");
            let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
            assert_eq!(rest, bytes.get(end..).unwrap_or_default(), "{bytes:?}");
        }
        let (head, _) = parsed(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let Head::Plain(p) = head else {
            panic!("{head:?}")
        };
        let values: Vec<_> = p.request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn a_body_read_whole_with_its_head_comes_with_it() {
        let (head, rest) = parsed(b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET");
        let Head::Plain(p) = head else {
            panic!("{head:?}")
        };
        assert_eq!(
            (p.request.method(), &p.body[..]),
            (&Method::POST, &b"abc"[..])
        );
        assert_eq!(p.request.headers()["content-length"], "3");
        assert_eq!(rest, b"GET");
        let at_most = format!(
            "PUT / HTTP/1.1\r\ncontent-length: {MAX_WHOLE_BODY}\r\n\r\n{}",
            "x".repeat(MAX_WHOLE_BODY)
        );
        let (head, rest) = parsed(at_most.as_bytes());
        assert!(
            matches!(&head, Head::Plain(p) if p.body.len() == MAX_WHOLE_BODY),
            "{head:?}"
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn anything_else_is_left_whole_for_hyper() {
        let larger = format!(
            "POST / HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{}",
            "x".repeat(MAX_WHOLE_BODY + 1),
            n = MAX_WHOLE_BODY + 1
        );
        let cases: [&[u8]; 21] = [
            // Not all there yet, or too large to hold: streamed.
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc",
            larger.as_bytes(),
            b"POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ];
        for bytes in cases {
            let (head, rest) = parsed(bytes);
            assert!(matches!(head, Head::Other), "{bytes:?}: {head:?}");
            assert_eq!(rest, bytes, "{bytes:?}");
        }
    }

    #[test]
    fn heads_in_pieces_wait_until_they_cannot_fit() {
        assert!(matches!(parsed(b"GET / HTTP/1.1\r\nHost").0, Head::Partial));
        assert!(matches!(parsed(b"").0, Head::Partial));
        let long = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_HEADER_BYTES],
        ]
        .concat();
        let (head, rest) = parsed(&long);
        assert!(matches!(head, Head::Other), "{head:?}");
        assert_eq!(rest, long);
        let many: Vec<u8> = (0..=MAX_HEADERS)
            .flat_map(|i| format!("x-{i}: 1\r\n").into_bytes())
            .collect();
        let too_many = [b"GET / HTTP/1.1\r\n".as_slice(), &many, b"\r\n"].concat();
        assert!(matches!(parsed(&too_many).0, Head::Other));
    }
}
