//! Building admin responses and reading query strings.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

pub type Reply = Response<Full<Bytes>>;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    respond(status, TEXT, body.into())
}

pub fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Admin answers describe the present moment: a cached copy would mislead.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub fn json<T: Serialize>(value: &T) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, JSON, Bytes::from(body)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n"),
    }
}

/// Whether the query asks for `format=text`.
pub fn wants_text(query: Option<&str>) -> bool {
    param(query, "format").as_deref() == Some("text")
}

/// The percent-decoded value of the first `name=value` pair of `query`.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Percent-decoding of a query component (`+` is a space, as forms send it). Invalid escapes
/// are kept as written; invalid UTF-8 is replaced.
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (b, escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (_, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_decoded() {
        let q = Some("format=text&level=info%2Cisthmus_proxy%3Ddebug&x");
        assert!(wants_text(q));
        assert_eq!(
            param(q, "level").as_deref(),
            Some("info,isthmus_proxy=debug")
        );
        assert_eq!(param(q, "x").as_deref(), Some(""));
        assert_eq!(param(q, "y"), None);
        assert_eq!(param(Some("level=info,a=b"), "level").unwrap(), "info,a=b");
        assert_eq!(decode("a+b%zz%4"), "a b%zz%4");
        assert!(!wants_text(None));
    }
}
