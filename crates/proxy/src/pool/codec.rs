//! HTTP/1.1 as the gateway speaks it to upstreams, as bytes: the request head it writes, the
//! response head it reads (with httparse, the parser hyper uses) and how each body is framed
//! (RFC 9112 §6). Pure functions; the connection that uses them is [`super::exchange`].

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::headers::number;

/// The largest response head (and trailer section) read: Envoy's `max_response_headers_kb`
/// default is 60 KiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a response head may have (Envoy's `max_headers_count`).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// What a body is known to be when its message's head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyShape {
    /// No body at all (or one that has already ended).
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// A stream of unknown length.
    Unknown,
}

impl BodyShape {
    /// What `body` says of itself.
    pub fn of<B: http_body::Body>(body: &B) -> Self {
        if body.is_end_stream() {
            BodyShape::Empty
        } else {
            body.size_hint()
                .exact()
                .map_or(BodyShape::Unknown, BodyShape::Exact)
        }
    }
}

/// How a request body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes are written.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A request head as it goes upstream: the client's fields, with `set` replacing any of the
/// same name (they are the gateway's, per attempt), so the client's map is never copied.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Origin form: the path and query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub set: &'a [(&'a HeaderName, HeaderValue)],
    /// Fields already rendered as `name: value\r\n` (the trace context's), written last.
    /// Their names are in neither `headers` nor `set`.
    pub rendered: &'a [u8],
}

/// Writes the request line and header fields. The framing is hyper's client's: a body of
/// unknown length is chunked, except on GET, HEAD and CONNECT (which carry none); a known
/// length is declared unless a valid `Content-Length` already is.
pub fn write_request_head(out: &mut BytesMut, head: &RequestHead<'_>, body: BodyShape) -> Framing {
    let RequestHead {
        method,
        path,
        headers,
        set,
        rendered,
    } = *head;
    // A request with no body (most) keeps its fields as they are: no lookups needed.
    let empty = body == BodyShape::Empty;
    let declared = if empty { None } else { content_length(headers) };
    let chunked_te = !empty && headers.contains_key(header::TRANSFER_ENCODING);
    let framing = match (body, declared) {
        (BodyShape::Empty, _) => Framing::None,
        _ if chunked_te => Framing::Chunked,
        (_, Some(n)) => Framing::Length(n),
        (BodyShape::Unknown, None)
            if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) =>
        {
            Framing::None
        }
        (BodyShape::Unknown, None) => Framing::Chunked,
        (BodyShape::Exact(n), None) => Framing::Length(n),
    };
    // Sized once: growing the buffer field by field would copy it each time it doubles.
    let fields: usize = headers
        .iter()
        .chain(set.iter().map(|(n, v)| (*n, v)))
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + path.len() + fields + rendered.len() + 64);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    // The framing headers are the gateway's own: what the client sent is replaced.
    let keep_length = framing == Framing::None || (declared.is_some() && !chunked_te);
    for (name, value) in headers {
        let framing_field =
            *name == header::TRANSFER_ENCODING || (*name == header::CONTENT_LENGTH && !keep_length);
        if framing_field || set.iter().any(|(n, _)| *n == name) {
            continue;
        }
        put_field(out, name, value);
    }
    for (name, value) in set {
        put_field(out, name, value);
    }
    out.put_slice(rendered);
    match framing {
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) if declared.is_none() => {
            put_field(out, &header::CONTENT_LENGTH, &number(n));
        }
        Framing::Length(_) | Framing::None => {}
    }
    out.put_slice(b"\r\n");
    framing
}

pub(crate) fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Frames one chunk of a chunked body: its size line, the data is written after it.
pub fn put_chunk_size(out: &mut BytesMut, len: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 16];
    let mut at = hex.len();
    let mut v = len;
    loop {
        at -= 1;
        if let (Some(h), Some(d)) = (hex.get_mut(at), DIGITS.get(v & 0xf)) {
            *h = *d;
        }
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.put_slice(hex.get(at..).unwrap_or(b"0"));
    out.put_slice(b"\r\n");
}

/// One chunk of a chunked body: its size line, the data and its end.
pub fn put_chunk(out: &mut BytesMut, data: &[u8]) {
    put_chunk_size(out, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The end of a chunked body, with the trailer fields given (those that may be trailers).
pub fn put_last_chunk<'a>(
    out: &mut BytesMut,
    trailers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers {
        if may_be_trailer(name) {
            put_field(out, name, value);
        }
    }
    out.put_slice(b"\r\n");
}

/// Fields that frame, route or authenticate a message cannot come after it (RFC 9110 §6.5.1).
fn may_be_trailer(name: &HeaderName) -> bool {
    ![
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::HOST,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::EXPECT,
    ]
    .contains(name)
}

/// The value every `Content-Length` field agrees on (a list of equal values counts as one),
/// or `None` if there is none or they are invalid or differ.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = decimal(part.trim_ascii())?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// A `Content-Length` value: 1 to 19 digits.
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Why an upstream's response could not be read: each is Envoy's upstream protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("invalid response head: {0}")]
    Invalid(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("invalid chunked body")]
    Chunked,
}

/// A response head read whole. Its hop-by-hop fields (RFC 9110 §7.6.1) are read into `hop`
/// as it is parsed and left out of `headers`, which holds what goes on to the client: the
/// upstream connection's business is settled here, and the rest of the gateway needs no
/// pass over the map to take them out.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub hop: HopByHop,
}

/// What a response's hop-by-hop fields said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopByHop {
    /// `Connection` listed `close`.
    pub close: bool,
    /// `Connection` listed `keep-alive`.
    pub keep_alive: bool,
    /// `Transfer-Encoding` was sent: whether its last coding is `chunked`.
    pub chunked: Option<bool>,
}

/// Reads a response head from the front of `buf`, taking its bytes: `None` until it is whole.
/// Header values share the read buffer's memory rather than being copied.
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, HeadError> {
    // Left uninitialised: zeroing a hundred fields for every response costs more than parsing
    // the few a response has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Invalid(e)),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Invalid(httparse::Error::Status))?;
    let version = match resp.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut at = Vec::new();
    field_spans(buf, resp.headers, &mut at);
    let head = buf.split_to(len).freeze();
    // With room for what the gateway adds (x-envoy-upstream-service-time at least): a map
    // filled to capacity grows, and rehashes, at the first insert. hyper then keeps the map,
    // emptied, for the client's next request, which gains more.
    let mut headers = HeaderMap::with_capacity(at.len() + 4);
    let mut hop = HopByHop::default();
    // Names `Connection` lists besides its own options, removed once the map is whole.
    let mut listed = None;
    let invalid = HeadError::Invalid(httparse::Error::HeaderValue);
    for &span in &at {
        let (name, value) = field(&head, span).ok_or(invalid)?;
        match Hop::of(&name) {
            Hop::No => {
                headers.append(name, value);
            }
            Hop::Connection => {
                let mut lists = false;
                for token in value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                {
                    if token.eq_ignore_ascii_case(b"close") {
                        hop.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        hop.keep_alive = true;
                    } else if !token.eq_ignore_ascii_case(b"upgrade") && !token.is_empty() {
                        lists = true;
                    }
                }
                if lists {
                    listed.get_or_insert_with(Vec::new).push(value);
                }
            }
            Hop::TransferEncoding => {
                let last = value.as_bytes().rsplit(|&b| b == b',').next();
                hop.chunked =
                    Some(last.is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked")));
            }
            // A switch of protocols says what it switched to.
            Hop::Upgrade if status == StatusCode::SWITCHING_PROTOCOLS => {
                headers.append(name, value);
            }
            Hop::Te
                if value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"trailers") =>
            {
                headers.append(name, value);
            }
            Hop::Upgrade | Hop::Te | Hop::Other => {}
        }
    }
    for value in listed.iter().flatten() {
        remove_listed(&mut headers, value);
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        hop,
    }))
}

/// Which hop-by-hop field a name is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    No,
    Connection,
    TransferEncoding,
    Upgrade,
    Te,
    /// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`.
    Other,
}

impl Hop {
    fn of(name: &HeaderName) -> Hop {
        // Standard names compare as small integers; the two others are not standard, and
        // their lengths turn most names away before any bytes are compared.
        if name == header::CONNECTION {
            Hop::Connection
        } else if name == header::TRANSFER_ENCODING {
            Hop::TransferEncoding
        } else if name == header::UPGRADE {
            Hop::Upgrade
        } else if name == header::TE {
            Hop::Te
        } else if name == header::PROXY_AUTHENTICATE
            || name == header::PROXY_AUTHORIZATION
            || matches!(name.as_str(), "keep-alive" | "proxy-connection")
        {
            Hop::Other
        } else {
            Hop::No
        }
    }
}

/// Removes the fields a `Connection` value lists, but for its own options and the framing:
/// a response's length is not the upstream's to take away from the client.
fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
    {
        let Ok(name) = HeaderName::from_bytes(token) else {
            continue;
        };
        if name != header::CONTENT_LENGTH && name != header::UPGRADE {
            headers.remove(name);
        }
    }
}

/// Where each field httparse found sits in `buf`, the buffer it parsed: the spans of its name
/// and its value, so that the values can be cut from the buffer once it is frozen (httparse's
/// fields borrow it, and taking the head out of it needs it mutable).
pub(crate) fn field_spans(
    buf: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut Vec<[usize; 4]>,
) {
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(fields.iter().map(|f| {
        let name = (f.name.as_ptr() as usize).wrapping_sub(base);
        let value = (f.value.as_ptr() as usize).wrapping_sub(base);
        [name, name + f.name.len(), value, value + f.value.len()]
    }));
}

/// The field at `span` of `head` (see [`field_spans`]); its value shares the head's memory.
/// `None` if the span is not in the head or the field is invalid (httparse has checked the
/// bytes already: this does not happen).
pub(crate) fn field(head: &Bytes, span: [usize; 4]) -> Option<(HeaderName, HeaderValue)> {
    let [name_start, name_end, start, end] = span;
    let name = HeaderName::from_bytes(head.get(name_start..name_end)?).ok()?;
    if start > end || end > head.len() {
        return None;
    }
    let value = HeaderValue::from_maybe_shared(head.slice(start..end)).ok()?;
    Some((name, value))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection, which then cannot be reused.
    UntilClose,
}

/// The response body's framing, from the request's method and the response's head.
pub fn response_body(method_is_head: bool, head: &ResponseHead) -> Result<BodyKind, HeadError> {
    let status = head.status;
    if method_is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyKind::Empty);
    }
    match head.hop.chunked {
        Some(true) => return Ok(BodyKind::Chunked),
        Some(false) => return Ok(BodyKind::UntilClose),
        None => {}
    }
    if !head.headers.contains_key(header::CONTENT_LENGTH) {
        return Ok(BodyKind::UntilClose);
    }
    match content_length(&head.headers) {
        Some(0) => Ok(BodyKind::Empty),
        Some(n) => Ok(BodyKind::Length(n)),
        None => Err(HeadError::ContentLength),
    }
}

/// Whether the connection may carry another request after this response.
pub fn keeps_alive(head: &ResponseHead) -> bool {
    if head.version == Version::HTTP_10 {
        head.hop.keep_alive && !head.hop.close
    } else {
        !head.hop.close
    }
}

/// What the chunked decoder found next.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Data(Bytes),
    /// The trailer section (possibly empty): the body has ended.
    End(Option<HeaderMap>),
    /// More bytes are needed.
    More,
}

/// Decodes a chunked body as its bytes arrive.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// Data bytes left in the current chunk.
    left: u64,
    /// Bytes of the current size line seen so far.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// Whitespace or an extension after the size, up to the line's CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailers,
    Done,
}

impl ChunkedDecoder {
    /// Whether the body has ended (its trailer section was read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes what it can of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, HeadError> {
        loop {
            if self.state == State::Data {
                if buf.is_empty() {
                    return Ok(Chunk::More);
                }
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.left -= n as u64;
                if self.left == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Chunk::Data(buf.split_to(n).freeze()));
            }
            if self.state == State::Trailers {
                return trailers(buf).map(|t| match t {
                    Some(t) => {
                        self.state = State::Done;
                        Chunk::End(t)
                    }
                    None => Chunk::More,
                });
            }
            if self.state == State::Done {
                return Ok(Chunk::End(None));
            }
            let Some(&b) = buf.first() else {
                return Ok(Chunk::More);
            };
            let _ = buf.split_to(1);
            self.step(b)?;
        }
    }

    /// One byte of a size line or of the CRLF after a chunk's data.
    fn step(&mut self, b: u8) -> Result<(), HeadError> {
        let bad = Err(HeadError::Chunked);
        match self.state {
            State::Size => {
                self.line += 1;
                if let Some(d) = (b as char).to_digit(16) {
                    if self.line > 16 {
                        return bad;
                    }
                    self.left = self.left * 16 + u64::from(d);
                } else if self.line == 1 {
                    return bad;
                } else if b == b'\r' {
                    self.state = State::SizeLf;
                } else if b == b';' || b == b' ' || b == b'\t' {
                    self.state = State::Extension;
                } else {
                    return bad;
                }
            }
            State::Extension => {
                self.line += 1;
                if b == b'\r' {
                    self.state = State::SizeLf;
                } else if self.line > MAX_CHUNK_LINE || b == b'\n' || (b < 0x20 && b != b'\t') {
                    return bad;
                }
            }
            State::SizeLf if b == b'\n' => {
                self.line = 0;
                self.state = if self.left == 0 {
                    State::Trailers
                } else {
                    State::Data
                };
            }
            State::DataCr if b == b'\r' => self.state = State::DataLf,
            State::DataLf if b == b'\n' => self.state = State::Size,
            _ => return bad,
        }
        Ok(())
    }
}

/// The trailer section at the front of `buf`, taken whole: `Some(None)` if it is empty.
fn trailers(buf: &mut BytesMut) -> Result<Option<Option<HeaderMap>>, HeadError> {
    if buf.starts_with(b"\r\n") {
        let _ = buf.split_to(2);
        return Ok(Some(None));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (len, map) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields.iter() {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| HeadError::Invalid(httparse::Error::HeaderName))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| HeadError::Invalid(httparse::Error::HeaderValue))?;
                map.append(name, value);
            }
            (len, map)
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Invalid(e)),
    };
    let _ = buf.split_to(len);
    Ok(Some(Some(map)))
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
