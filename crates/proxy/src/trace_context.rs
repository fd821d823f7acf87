//! Trace context propagation, as Envoy does for a traced request: the incoming context (W3C
//! `traceparent`, else B3 single `b3`, else B3 multi `x-b3-*`) is continued with a new span
//! for the gateway's hop, or a new trace is started; its sampling decision is kept, and only
//! when it has none does `--trace-sampling` decide.
//!
//! The upstream request carries the gateway's span as the current one: `traceparent` keeps
//! the trace id and flags with the gateway's span id as parent-id; `x-b3-spanid` is the
//! gateway's span and `x-b3-parentspanid` the caller's. Both header families are written so
//! that a backend reading either sees one trace; a `b3` header is rewritten when it came in.
//! Nothing is exported yet: [`Span`] holds what an OTLP exporter would need.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub static B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The gateway's span of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's span, if the request carried one.
    pub parent_id: Option<u64>,
    pub sampled: bool,
}

/// Which header the incoming context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    TraceParent,
    B3Single,
    B3Multi,
}

/// The context a request arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Incoming {
    source: Source,
    trace_id: u128,
    /// A 64-bit B3 trace id, written back at that width.
    short_id: bool,
    span_id: Option<u64>,
    sampled: Option<bool>,
    /// B3 debug (`x-b3-flags: 1`, or `d`): always sampled.
    debug: bool,
    /// `traceparent` trace-flags, kept as they came (bit 0 is the sampling decision).
    flags: u8,
}

/// Continues or starts the trace of a request. The trace headers it came with are taken out
/// of `headers`, and the ones for the upstream are returned rendered, to be written after the
/// others (see [`TraceFields`]). `sampling` is the percentage of new traces that are sampled.
pub fn propagate(headers: &mut HeaderMap, sampling: f64) -> (Span, TraceFields) {
    // Most requests come with no trace header: one look over the names spares the lookups
    // that would find none, and the removals of absent ones (a hash of a long name each).
    let carried = headers.keys().any(is_trace_header);
    let incoming = if carried { extract(headers) } else { None };
    let sampled = match incoming.and_then(|i| i.sampled) {
        Some(s) => s,
        None => sampling >= 100.0 || fastrand::f64() * 100.0 < sampling,
    };
    let span = Span {
        trace_id: incoming
            .map(|i| i.trace_id)
            .unwrap_or_else(|| fastrand::u128(1..)),
        span_id: fastrand::u64(1..),
        parent_id: incoming.and_then(|i| i.span_id),
        sampled,
    };
    if carried {
        remove_replaced(headers, incoming);
    }
    (span, render(&span, incoming))
}

fn is_trace_header(name: &HeaderName) -> bool {
    // Every request's every header name passes here: its first bytes turn most away before
    // the eight comparisons.
    let s = name.as_str();
    if !(s.starts_with("trace") || s.starts_with("x-b3-") || s == "b3") {
        return false;
    }
    [
        &TRACEPARENT,
        &TRACESTATE,
        &B3,
        &B3_TRACE_ID,
        &B3_SPAN_ID,
        &B3_PARENT_SPAN_ID,
        &B3_SAMPLED,
        &B3_FLAGS,
    ]
    .contains(&name)
}

fn extract(headers: &HeaderMap) -> Option<Incoming> {
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(tp) = get(&TRACEPARENT).and_then(parse_traceparent) {
        return Some(tp);
    }
    if let Some(b3) = get(&B3).and_then(parse_b3_single) {
        return Some(b3);
    }
    let trace = get(&B3_TRACE_ID)?;
    let (trace_id, short_id) = parse_b3_trace_id(trace)?;
    let debug = get(&B3_FLAGS) == Some("1");
    let sampled = match get(&B3_SAMPLED) {
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => None,
    };
    Some(Incoming {
        source: Source::B3Multi,
        trace_id,
        short_id,
        span_id: get(&B3_SPAN_ID).and_then(parse_span_id),
        sampled: if debug { Some(true) } else { sampled },
        debug,
        flags: 0,
    })
}

/// `version-traceid-parentid-flags`, all lower-case hex (W3C Trace Context level 1). Later
/// versions may append fields, which are ignored.
fn parse_traceparent(v: &str) -> Option<Incoming> {
    let mut parts = v.split('-');
    let version = parts.next().filter(|p| p.len() == 2 && is_hex(p))?;
    let trace = parts.next().filter(|p| p.len() == 32 && is_hex(p))?;
    let parent = parts.next().filter(|p| p.len() == 16 && is_hex(p))?;
    let flags = parts.next().filter(|p| p.len() == 2 && is_hex(p))?;
    if version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
    let span_id = u64::from_str_radix(parent, 16).ok().filter(|&s| s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        source: Source::TraceParent,
        trace_id,
        short_id: false,
        span_id: Some(span_id),
        sampled: Some(flags & 1 == 1),
        debug: false,
        flags,
    })
}

/// `traceid-spanid[-sampled[-parentspanid]]`. A lone sampling state (`0`, `1`, `d`) carries
/// no context and is not read here.
fn parse_b3_single(v: &str) -> Option<Incoming> {
    let mut parts = v.split('-');
    let (trace_id, short_id) = parse_b3_trace_id(parts.next()?)?;
    let span_id = parse_span_id(parts.next()?)?;
    let (sampled, debug) = match parts.next() {
        None => (None, false),
        Some("1") => (Some(true), false),
        Some("0") => (Some(false), false),
        Some("d") => (Some(true), true),
        Some(_) => return None,
    };
    Some(Incoming {
        source: Source::B3Single,
        trace_id,
        short_id,
        span_id: Some(span_id),
        sampled,
        debug,
        flags: 0,
    })
}

/// A B3 trace id: 16 or 32 hex digits, not all zero.
fn parse_b3_trace_id(v: &str) -> Option<(u128, bool)> {
    if !(v.len() == 16 || v.len() == 32) || !is_hex_any_case(v) {
        return None;
    }
    let id = u128::from_str_radix(v, 16).ok().filter(|&t| t != 0)?;
    Some((id, v.len() == 16))
}

fn parse_span_id(v: &str) -> Option<u64> {
    if v.len() != 16 || !is_hex_any_case(v) {
        return None;
    }
    u64::from_str_radix(v, 16).ok().filter(|&s| s != 0)
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_hex_any_case(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The trace headers of an upstream request, rendered once as they go on the wire
/// (`name: value\r\n` each): an HTTP/1.1 request head takes them whole, and a request that
/// needs them in a header map (HTTP/2, a mirror) gets them with [`TraceFields::insert_into`].
/// Building them into the request's map instead would cost a hash and an insert each, and
/// writing them out a lookup each, on every request.
#[derive(Debug, Clone, Default)]
pub struct TraceFields {
    wire: Bytes,
    /// Each field's name and where its value sits in `wire`.
    fields: [Option<(&'static HeaderName, u16, u16)>; MAX_FIELDS],
}

/// traceparent, x-b3-traceid, x-b3-spanid, x-b3-parentspanid, x-b3-sampled and b3.
const MAX_FIELDS: usize = 6;

impl TraceFields {
    /// The fields as they go in an HTTP/1.1 head.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Adds the fields to `headers`, replacing any of the same names.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        for &(name, start, end) in self.fields.iter().flatten() {
            let value = self.wire.slice(usize::from(start)..usize::from(end));
            if let Ok(v) = HeaderValue::from_maybe_shared(value) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// Takes out the incoming trace headers that the rendered ones replace. tracestate belongs to
/// the traceparent it came with: a trace continued from anything else (or a new one) starts
/// without one. x-b3-flags passes as it came.
fn remove_replaced(headers: &mut HeaderMap, incoming: Option<Incoming>) {
    for name in [
        &TRACEPARENT,
        &B3_TRACE_ID,
        &B3_SPAN_ID,
        &B3_PARENT_SPAN_ID,
        &B3_SAMPLED,
    ] {
        headers.remove(name);
    }
    let source = incoming.map(|i| i.source);
    if source == Some(Source::B3Single) {
        headers.remove(&B3);
    }
    if source != Some(Source::TraceParent) {
        headers.remove(&TRACESTATE);
    }
}

/// Renders the outgoing trace headers: all in one buffer, one allocation.
fn render(span: &Span, incoming: Option<Incoming>) -> TraceFields {
    let mut out = Render {
        buf: BytesMut::with_capacity(320),
        fields: Default::default(),
        n: 0,
    };
    let trace_width = if incoming.is_some_and(|i| i.short_id) {
        16
    } else {
        32
    };
    // trace-flags other than "sampled" pass through as they came.
    let flags = incoming
        .filter(|i| i.source == Source::TraceParent)
        .map_or(0, |i| i.flags & !1)
        | u8::from(span.sampled);
    out.field(&TRACEPARENT, |buf| {
        buf.put_slice(b"00-");
        hex(buf, span.trace_id, 32);
        buf.put_u8(b'-');
        hex(buf, u128::from(span.span_id), 16);
        buf.put_u8(b'-');
        hex(buf, u128::from(flags), 2);
    });
    out.field(&B3_TRACE_ID, |buf| hex(buf, span.trace_id, trace_width));
    out.field(&B3_SPAN_ID, |buf| hex(buf, u128::from(span.span_id), 16));
    if let Some(p) = span.parent_id {
        out.field(&B3_PARENT_SPAN_ID, |buf| hex(buf, u128::from(p), 16));
    }
    out.field(&B3_SAMPLED, |buf| {
        buf.put_u8(if span.sampled { b'1' } else { b'0' });
    });
    if let Some(i) = incoming.filter(|i| i.source == Source::B3Single) {
        out.field(&B3, |buf| {
            hex(buf, span.trace_id, trace_width);
            buf.put_u8(b'-');
            hex(buf, u128::from(span.span_id), 16);
            buf.put_slice(match (i.debug, span.sampled) {
                (true, _) => b"-d",
                (false, true) => b"-1",
                (false, false) => b"-0",
            });
            if let Some(p) = span.parent_id {
                buf.put_u8(b'-');
                hex(buf, u128::from(p), 16);
            }
        });
    }
    TraceFields {
        wire: out.buf.freeze(),
        fields: out.fields,
    }
}

/// A [`TraceFields`] being written.
struct Render {
    buf: BytesMut,
    fields: [Option<(&'static HeaderName, u16, u16)>; MAX_FIELDS],
    n: usize,
}

impl Render {
    /// Writes `name: <value>\r\n`, the value written by `value`, and notes where it is.
    fn field(&mut self, name: &'static HeaderName, value: impl FnOnce(&mut BytesMut)) {
        self.buf.put_slice(name.as_str().as_bytes());
        self.buf.put_slice(b": ");
        let start = self.buf.len();
        value(&mut self.buf);
        let end = self.buf.len();
        self.buf.put_slice(b"\r\n");
        // A few hundred bytes at most: the offsets always fit.
        if let (Some(slot), Ok(start), Ok(end)) = (
            self.fields.get_mut(self.n),
            u16::try_from(start),
            u16::try_from(end),
        ) {
            *slot = Some((name, start, end));
            self.n += 1;
        }
    }
}

/// The low `width` (even, at most 32) lower-case hex digits of `v`, written in one piece: a
/// request writes about a hundred of them, each computed without a branch or a lookup.
fn hex(buf: &mut BytesMut, v: u128, width: usize) {
    let digit = |n: u8| b'0' + n + u8::from(n > 9) * (b'a' - b'0' - 10);
    let bytes = v.to_be_bytes();
    let low = bytes
        .get(bytes.len().saturating_sub(width / 2)..)
        .unwrap_or(&bytes);
    let mut out = [0u8; 32];
    for (pair, &byte) in out.chunks_exact_mut(2).zip(low) {
        pair.copy_from_slice(&[digit(byte >> 4), digit(byte & 0xf)]);
    }
    buf.put_slice(out.get(..low.len() * 2).unwrap_or(&out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    /// Propagates, and puts the rendered fields in the map, after checking that the wire form
    /// says what the fields say.
    fn propagated(h: &mut HeaderMap, sampling: f64) -> Span {
        let (span, fields) = propagate(h, sampling);
        let mut wire = Vec::new();
        for &(name, start, end) in fields.fields.iter().flatten() {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(&fields.wire[usize::from(start)..usize::from(end)]);
            wire.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            String::from_utf8_lossy(&wire),
            String::from_utf8_lossy(fields.wire())
        );
        fields.insert_into(h);
        span
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn traceparent_keeps_trace_and_flags_with_a_new_parent() {
        let mut h = headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]);
        let span = propagated(&mut h, 0.0);
        assert_eq!(span.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(span.parent_id, Some(0xb7ad6b7169203331));
        assert!(span.sampled);
        let tp = get(&h, "traceparent").unwrap();
        assert_eq!(
            tp,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{:016x}-01",
                span.span_id
            )
        );
        assert_ne!(span.span_id, 0xb7ad6b7169203331);
        assert_eq!(get(&h, "tracestate"), Some("congo=t61rcWkgMzE"));
        assert_eq!(
            get(&h, "x-b3-traceid"),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(get(&h, "x-b3-parentspanid"), Some("b7ad6b7169203331"));
        assert_eq!(get(&h, "x-b3-sampled"), Some("1"));
    }

    #[test]
    fn an_unsampled_traceparent_stays_unsampled_even_at_100_percent() {
        let mut h = headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )]);
        let span = propagated(&mut h, 100.0);
        assert!(!span.sampled);
        assert!(get(&h, "traceparent").unwrap().ends_with("-00"));
        assert_eq!(get(&h, "x-b3-sampled"), Some("0"));
    }

    #[test]
    fn b3_multi_gets_the_callers_span_as_parent() {
        let mut h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "0"),
        ]);
        let span = propagated(&mut h, 100.0);
        assert!(!span.sampled);
        assert_eq!(get(&h, "x-b3-traceid"), Some("463ac35c9f6413ad"));
        assert_eq!(get(&h, "x-b3-parentspanid"), Some("a2fb4a1d1a96d312"));
        assert_eq!(
            get(&h, "x-b3-spanid"),
            Some(format!("{:016x}", span.span_id).as_str())
        );
        assert_eq!(get(&h, "x-b3-sampled"), Some("0"));
        // The 64-bit id is padded for W3C.
        assert!(
            get(&h, "traceparent")
                .unwrap()
                .starts_with("00-0000000000000000463ac35c9f6413ad-")
        );
    }

    #[test]
    fn b3_debug_and_single_header() {
        let mut h = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90",
        )]);
        let span = propagated(&mut h, 0.0);
        assert!(span.sampled);
        assert_eq!(span.parent_id, Some(0xe457b5a2e4d86bd1));
        assert_eq!(
            get(&h, "b3").unwrap(),
            format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{:016x}-d-e457b5a2e4d86bd1",
                span.span_id
            )
        );
        let mut h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ]);
        assert!(propagated(&mut h, 0.0).sampled);
        assert_eq!(get(&h, "x-b3-flags"), Some("1"));
    }

    #[test]
    fn no_context_starts_a_trace_sampled_by_percentage() {
        // A caller's span id with no trace id is no context, and is not passed on.
        let mut h = headers(&[
            ("tracestate", "orphan=1"),
            ("x-b3-parentspanid", "a2fb4a1d1a96d312"),
        ]);
        let span = propagated(&mut h, 100.0);
        assert!(span.sampled);
        assert_eq!(span.parent_id, None);
        assert_eq!(
            get(&h, "traceparent").unwrap(),
            format!("00-{:032x}-{:016x}-01", span.trace_id, span.span_id)
        );
        assert_eq!(get(&h, "x-b3-parentspanid"), None);
        assert_eq!(get(&h, "tracestate"), None);
        assert!(!propagated(&mut HeaderMap::new(), 0.0).sampled);
    }

    #[test]
    fn hex_writes_the_low_digits_in_lower_case() {
        let cases: [(u128, usize, &str); 5] = [
            (0, 2, "00"),
            (0xab, 2, "ab"),
            (0x0123_4567_89ab_cdef, 16, "0123456789abcdef"),
            (u128::MAX, 16, "ffffffffffffffff"),
            (
                0xfedc_ba98_7654_3210_0f1e_2d3c_4b5a_6978,
                32,
                "fedcba98765432100f1e2d3c4b5a6978",
            ),
        ];
        for (v, width, want) in cases {
            let mut buf = BytesMut::new();
            hex(&mut buf, v, width);
            assert_eq!(&buf[..], want.as_bytes(), "{v:#x} in {width} digits");
        }
    }

    #[test]
    fn malformed_contexts_are_ignored() {
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
                .is_some()
        );
        assert_eq!(parse_b3_single("1"), None);
        assert_eq!(parse_b3_single("463ac35c9f6413ad-a2fb4a1d1a96d312-x"), None);
    }
}
