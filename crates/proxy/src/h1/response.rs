//! The response to a plain request, as bytes: its head, with the framing hyper's server would
//! give it (so clients see the same answers whichever server took the request), and its body
//! in that framing.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::request::has_token;
use crate::pool::codec::{BodyShape, content_length, put_chunk, put_field, put_last_chunk};

/// How the body follows the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes more; a body that has more is cut there, one that has fewer ends the
    /// connection. `Length(0)`: no body (HEAD, 204, 304).
    Length(u64),
    /// Chunked, with the trailer fields the response declared (`Trailer`) that may be sent:
    /// none unless the client said it takes them (`TE: trailers`).
    Chunked(Vec<HeaderName>),
}

/// What the head says besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// The connection closes after this response.
    pub last: bool,
}

/// The request a response answers, as far as its framing goes.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub method: &'a Method,
    /// The connection stays open after the response (the client did not say close, and the
    /// gateway is not draining).
    pub keep_alive: bool,
    /// The client takes trailer fields (`TE: trailers`).
    pub trailers: bool,
}

/// The response head cannot be written as given (conflicting `Content-Length` values, or one
/// that is not a number for a body of unknown length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid Content-Length in the response")]
pub struct InvalidHead;

/// Writes the status line and header fields of a response to `asked` (hyper's
/// `Server::encode`, for an HTTP/1.1 client). The answer is HTTP/1.1 whatever the version the
/// response came with (an upstream's HTTP/1.0, an HTTP/2 upstream's), as Envoy answers: the
/// client speaks HTTP/1.1 (HTTP/1.0 clients are hyper's).
pub fn write_head(
    out: &mut BytesMut,
    asked: Asked<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    body: BodyShape,
) -> Result<Encoded, InvalidHead> {
    let method = asked.method;
    let mut last = !asked.keep_alive;
    out.reserve(64 + headers.len() * 48);
    if status == StatusCode::OK {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    }
    let chunkable = can_have_body(method, status);
    let mut framing = None;
    let mut declared = Vec::new();
    let mut wrote_date = false;
    let mut saw_connection = false;
    // One pass over the fields (a lookup per name would cost a hash each); the few that
    // frame the message are taken whole at their first value.
    let mut prev: Option<&HeaderName> = None;
    for (name, value) in headers {
        let repeat = prev == Some(name);
        prev = Some(name);
        match *name {
            header::CONTENT_LENGTH if !repeat => {
                if let Some(f) = content_length_field(out, method, value, headers, body)? {
                    framing = Some(f);
                }
            }
            header::CONTENT_LENGTH
            | header::TRANSFER_ENCODING
            | header::CONNECTION
            | header::TRAILER
                if repeat => {}
            header::TRANSFER_ENCODING if chunkable => {
                let values = headers.get_all(name);
                framing = Some(Framing::Chunked(Vec::new()));
                // `chunked` must be the last coding, or it is added.
                let chunked = values
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
                put_joined(out, name, values.iter(), (!chunked).then_some("chunked"));
            }
            header::CONNECTION => {
                saw_connection = true;
                let values = headers.get_all(name);
                let says_close = values.iter().any(has_close);
                last |= says_close;
                let add_close = !asked.keep_alive && !says_close;
                put_joined(out, name, values.iter(), add_close.then_some("close"));
            }
            header::TRAILER if chunkable => {
                let values = headers.get_all(name);
                declared.extend(
                    values
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(','))
                        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                );
                put_joined(out, name, values.iter(), None);
            }
            // Framing fields of a response that cannot have a chunked body are dropped.
            header::TRANSFER_ENCODING | header::TRAILER => {}
            _ => {
                wrote_date |= *name == header::DATE;
                put_field(out, name, value);
            }
        }
    }
    if !asked.keep_alive && !saw_connection {
        out.put_slice(b"connection: close\r\n");
    }
    let mut framing = framing.unwrap_or_else(|| implied_framing(out, method, status, body));
    if !can_have_body(method, status) {
        framing = Framing::Length(0);
    }
    if let Framing::Chunked(allowed) = &mut framing
        && asked.trailers
    {
        *allowed = declared;
    }
    if !wrote_date {
        out.put_slice(b"date: ");
        put_date(out);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(Encoded { framing, last })
}

/// A `Content-Length` field of the response, written as hyper writes it: trusted when the
/// body's length is known, checked when it is not, dropped when there is no body (except in
/// the answer to HEAD): `None` then, and the framing is implied.
fn content_length_field(
    out: &mut BytesMut,
    method: &Method,
    first: &HeaderValue,
    headers: &HeaderMap,
    body: BodyShape,
) -> Result<Option<Framing>, InvalidHead> {
    Ok(Some(match body {
        // The body's own length is trusted, as hyper trusts it.
        BodyShape::Exact(n) => {
            put_field(out, &header::CONTENT_LENGTH, first);
            Framing::Length(n)
        }
        BodyShape::Unknown => {
            let n = content_length(headers).ok_or(InvalidHead)?;
            put_field(out, &header::CONTENT_LENGTH, first);
            Framing::Length(n)
        }
        BodyShape::Empty if *method == Method::HEAD => {
            for v in headers.get_all(header::CONTENT_LENGTH) {
                put_field(out, &header::CONTENT_LENGTH, v);
            }
            Framing::Length(0)
        }
        BodyShape::Empty => return Ok(None),
    }))
}

/// The framing of a response that declared none.
fn implied_framing(
    out: &mut BytesMut,
    method: &Method,
    status: StatusCode,
    body: BodyShape,
) -> Framing {
    match body {
        BodyShape::Unknown if !can_have_body(method, status) => Framing::Length(0),
        BodyShape::Unknown => {
            out.put_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked(Vec::new())
        }
        BodyShape::Empty | BodyShape::Exact(0) => {
            if can_have_length(status) && *method != Method::HEAD {
                out.put_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        BodyShape::Exact(n) if can_have_length(status) => {
            put_field(out, &header::CONTENT_LENGTH, &HeaderValue::from(n));
            Framing::Length(n)
        }
        BodyShape::Exact(_) => Framing::Length(0),
    }
}

/// Whether the response has a body: not to HEAD, and not 204 or 304 (1xx and answers to
/// CONNECT never come here).
fn can_have_body(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD && can_have_length(status)
}

fn can_have_length(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        && !status.is_informational()
}

fn has_close(value: &HeaderValue) -> bool {
    has_token(value.as_bytes(), "close")
}

/// One field line with every value of `name`, comma-joined, and `extra` last.
fn put_joined<'a>(
    out: &mut BytesMut,
    name: &HeaderName,
    values: impl Iterator<Item = &'a HeaderValue>,
    extra: Option<&'a str>,
) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    let mut first = true;
    for v in values
        .map(HeaderValue::as_bytes)
        .chain(extra.map(str::as_bytes))
    {
        if !first {
            out.put_slice(b", ");
        }
        out.put_slice(v);
        first = false;
    }
    out.put_slice(b"\r\n");
}

/// Writes one body chunk in `framing`; `false` once a sized body has all its bytes (the rest
/// of `data`, if any, is not written).
pub fn put_data(out: &mut BytesMut, framing: &mut Framing, data: &Bytes) -> bool {
    if data.is_empty() {
        return !matches!(framing, Framing::Length(0));
    }
    match framing {
        Framing::Length(left) => {
            let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
            out.put_slice(data.get(..take).unwrap_or(data));
            *left -= take as u64;
            *left > 0
        }
        Framing::Chunked(_) => {
            put_chunk(out, data);
            true
        }
    }
}

/// Ends a chunked body, with the trailer fields it may send; `Err` if a sized body ends
/// short (the client must see it cut: the connection closes).
pub fn put_end(
    out: &mut BytesMut,
    framing: &Framing,
    trailers: Option<&HeaderMap>,
) -> Result<(), ShortBody> {
    match framing {
        Framing::Length(0) => Ok(()),
        Framing::Length(left) => Err(ShortBody(*left)),
        Framing::Chunked(allowed) => {
            let sent = trailers.into_iter().flatten();
            put_last_chunk(
                out,
                sent.filter(|(name, _)| allowed.contains(name) && may_be_sent(name)),
            );
            Ok(())
        }
    }
}

/// A sized response body ended this many bytes short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the response body ended {0} bytes short of its Content-Length")]
pub struct ShortBody(pub u64);

/// Trailer fields hyper's server never sends, besides those no trailer may be.
fn may_be_sent(name: &HeaderName) -> bool {
    ![
        header::CACHE_CONTROL,
        header::CONTENT_RANGE,
        header::MAX_FORWARDS,
        header::SET_COOKIE,
    ]
    .contains(name)
}

/// The current time as an HTTP date, formatted once a second per thread (as hyper does).
fn put_date(out: &mut BytesMut) {
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if let Ok(bytes) = <[u8; 29]>::try_from(text.as_bytes()) {
                *cached = (secs, bytes);
            }
        }
        out.put_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        method: Method,
        keep_alive: bool,
        status: u16,
        fields: &[(&str, &str)],
        body: BodyShape,
    ) -> (String, Result<Encoded, InvalidHead>) {
        let mut headers = HeaderMap::new();
        for (n, v) in fields {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap_or(header::VIA),
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("?")),
            );
        }
        if !fields.iter().any(|(n, _)| *n == "date") {
            headers.insert(header::DATE, HeaderValue::from_static("D"));
        }
        let mut out = BytesMut::new();
        let asked = Asked {
            method: &method,
            keep_alive,
            trailers: true,
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
        let encoded = write_head(&mut out, asked, status, &headers, body);
        (String::from_utf8_lossy(&out).into_owned(), encoded)
    }

    fn framed(framing: Framing, last: bool) -> Result<Encoded, InvalidHead> {
        Ok(Encoded { framing, last })
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let get = || Method::GET;
        let cases = [
            (
                head(
                    get(),
                    true,
                    200,
                    &[("content-length", "3")],
                    BodyShape::Exact(3),
                ),
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ndate: D\r\n\r\n",
                framed(Framing::Length(3), false),
            ),
            (
                head(get(), true, 200, &[], BodyShape::Exact(5)),
                "HTTP/1.1 200 OK\r\ndate: D\r\ncontent-length: 5\r\n\r\n",
                framed(Framing::Length(5), false),
            ),
            (
                head(get(), true, 404, &[], BodyShape::Empty),
                "HTTP/1.1 404 Not Found\r\ndate: D\r\ncontent-length: 0\r\n\r\n",
                framed(Framing::Length(0), false),
            ),
            (
                head(
                    get(),
                    true,
                    200,
                    &[("content-length", "7")],
                    BodyShape::Empty,
                ),
                "HTTP/1.1 200 OK\r\ndate: D\r\ncontent-length: 0\r\n\r\n",
                framed(Framing::Length(0), false),
            ),
            (
                head(
                    Method::HEAD,
                    true,
                    200,
                    &[("content-length", "7")],
                    BodyShape::Empty,
                ),
                "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: D\r\n\r\n",
                framed(Framing::Length(0), false),
            ),
            (
                head(get(), true, 200, &[], BodyShape::Unknown),
                "HTTP/1.1 200 OK\r\ndate: D\r\ntransfer-encoding: chunked\r\n\r\n",
                framed(Framing::Chunked(Vec::new()), false),
            ),
            (
                head(
                    get(),
                    true,
                    200,
                    &[
                        ("transfer-encoding", "gzip"),
                        ("trailer", "grpc-status, host"),
                    ],
                    BodyShape::Unknown,
                ),
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\
                 trailer: grpc-status, host\r\ndate: D\r\n\r\n",
                framed(
                    Framing::Chunked(vec![HeaderName::from_static("grpc-status"), header::HOST]),
                    false,
                ),
            ),
            (
                head(
                    get(),
                    true,
                    204,
                    &[("content-length", "0")],
                    BodyShape::Empty,
                ),
                "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n",
                framed(Framing::Length(0), false),
            ),
            (
                head(get(), true, 304, &[], BodyShape::Unknown),
                "HTTP/1.1 304 Not Modified\r\ndate: D\r\n\r\n",
                framed(Framing::Length(0), false),
            ),
            (
                head(get(), false, 200, &[], BodyShape::Exact(1)),
                "HTTP/1.1 200 OK\r\ndate: D\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
                framed(Framing::Length(1), true),
            ),
            (
                head(
                    get(),
                    false,
                    200,
                    &[("connection", "x-a")],
                    BodyShape::Exact(1),
                ),
                "HTTP/1.1 200 OK\r\nconnection: x-a, close\r\ndate: D\r\ncontent-length: 1\r\n\r\n",
                framed(Framing::Length(1), true),
            ),
            (
                head(
                    get(),
                    true,
                    200,
                    &[("connection", "close")],
                    BodyShape::Exact(1),
                ),
                "HTTP/1.1 200 OK\r\nconnection: close\r\ndate: D\r\ncontent-length: 1\r\n\r\n",
                framed(Framing::Length(1), true),
            ),
            (
                head(
                    get(),
                    true,
                    200,
                    &[("content-length", "2"), ("content-length", "3")],
                    BodyShape::Unknown,
                ),
                "",
                Err(InvalidHead),
            ),
        ];
        for ((written, encoded), want_text, want) in cases {
            assert_eq!(encoded, want, "{written}");
            if want.is_ok() {
                assert_eq!(written, want_text);
            }
        }
    }

    #[test]
    fn a_missing_date_is_the_current_one() {
        let (written, _) = head(Method::GET, true, 200, &[("date", "")], BodyShape::Empty);
        assert!(written.contains("date: \r\n"), "{written}");
        let mut out = BytesMut::new();
        let asked = Asked {
            method: &Method::GET,
            keep_alive: true,
            trailers: false,
        };
        let encoded = write_head(
            &mut out,
            asked,
            StatusCode::OK,
            &HeaderMap::new(),
            BodyShape::Empty,
        );
        assert!(encoded.is_ok());
        let text = String::from_utf8_lossy(&out);
        let date = text
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .unwrap_or_default();
        let parsed = httpdate::parse_http_date(date);
        let age = parsed
            .ok()
            .and_then(|d| SystemTime::now().duration_since(d).ok());
        assert!(age.is_some_and(|a| a < Duration::from_secs(5)), "{text}");
    }

    #[test]
    fn bodies_are_written_in_their_framing() {
        let data = Bytes::from_static(b"hello");
        let mut out = BytesMut::new();
        let mut sized = Framing::Length(7);
        assert!(put_data(&mut out, &mut sized, &data));
        assert!(!put_data(&mut out, &mut sized, &data));
        assert_eq!(&out[..], b"hellohe");
        assert_eq!(put_end(&mut out, &sized, None), Ok(()));
        assert_eq!(
            put_end(&mut out, &Framing::Length(2), None),
            Err(ShortBody(2))
        );

        let mut out = BytesMut::new();
        let mut chunked = Framing::Chunked(vec![
            HeaderName::from_static("grpc-status"),
            header::SET_COOKIE,
        ]);
        assert!(put_data(
            &mut out,
            &mut chunked,
            &Bytes::from(vec![b'x'; 26])
        ));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-other", HeaderValue::from_static("1"));
        trailers.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        assert_eq!(put_end(&mut out, &chunked, Some(&trailers)), Ok(()));
        let want = [
            b"1a\r\n".as_slice(),
            &[b'x'; 26],
            b"\r\n0\r\ngrpc-status: 0\r\n\r\n",
        ]
        .concat();
        assert_eq!(&out[..], want.as_slice());
    }
}
