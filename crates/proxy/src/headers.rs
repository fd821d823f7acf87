//! Header handling on the way through: hop-by-hop removal (RFC 9110 §7.6.1), the headers an
//! Istio gateway adds, and VirtualService header edits with Envoy's command operators.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use isthmus_config::actions::{HeaderOps, Template, TemplatePart};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_EXTERNAL_ADDRESS: HeaderName = HeaderName::from_static("x-envoy-external-address");
pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_UPSTREAM_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
pub static X_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub static X_EXPECTED_TIMEOUT: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static X_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
// gRPC's: static, so a lookup does not parse and check the name first.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Hop-by-hop headers besides `Connection` (and what it lists) and `TE`.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Hop-by-hop headers are for one connection only (RFC 9110 §7.6.1): `Connection`, what it
/// lists, the usual ones, and `TE` unless it is `trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are there: removing each blindly costs a hash and
    // a probe per name, twice per request, mostly for nothing.
    let (mut connection, mut te, mut found) = (false, false, [false; HOP_BY_HOP.len()]);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TE {
            te = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name)
            && let Some(f) = found.get_mut(i)
        {
            *f = true;
        }
    }
    if connection {
        remove_connection(headers);
    }
    for (name, found) in HOP_BY_HOP.iter().zip(found) {
        if found {
            headers.remove(name);
        }
    }
    if te && headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Removes `Connection` and the headers it lists.
fn remove_connection(headers: &mut HeaderMap) {
    // Nearly always one `Connection` header (an upstream's `keep-alive`): taken out whole,
    // its tokens name what to remove with no copy of them. Any further ones are kept aside
    // first (none: no allocation).
    let further: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .skip(1)
        .cloned()
        .collect();
    if let Some(first) = headers.remove(header::CONNECTION) {
        for value in std::iter::once(&first).chain(&further) {
            let tokens = value.to_str().ok().into_iter().flat_map(|v| v.split(','));
            for name in tokens.map(str::trim) {
                remove_listed(headers, name);
            }
        }
    }
}

/// Removes a header that `Connection` lists, unless the gateway itself tells it to the
/// upstream: a client must not be able to remove those. The name is looked up as it is
/// (case-insensitively, nothing copied); one that is not a valid header name is no header.
fn remove_listed(headers: &mut HeaderMap, name: &str) {
    // `keep-alive` is hop-by-hop anyway, removed after this if present: most upstreams
    // send `Connection: keep-alive`, and a lookup that finds nothing is not free.
    if name.eq_ignore_ascii_case("keep-alive") {
        return;
    }
    let kept = [
        &header::HOST,
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_REQUEST_ID,
    ];
    if !kept.iter().any(|k| k.as_str().eq_ignore_ascii_case(name)) {
        headers.remove(name);
    }
}

/// A number as a header value: the one-digit ones (most attempt counts and upstream times)
/// are static, the others one allocation (`HeaderValue::from(u64)` makes two).
pub fn number(n: u64) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    if let Some(d) = usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        return HeaderValue::from_static(d);
    }
    let mut buf = [0u8; 20];
    let mut rest = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut rest, format_args!("{n}"));
    let len = 20 - rest.len();
    HeaderValue::from_bytes(buf.get(..len).unwrap_or_default())
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `x-envoy-*` headers steer Envoy (retries, timeouts); a client at the edge must not set them.
/// Nor `x-forwarded-client-cert`: backends trust it to name the client certificate, and an
/// Istio gateway (SANITIZE_SET) never forwards the client's own.
pub fn strip_envoy_headers(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-") || *k == X_FORWARDED_CLIENT_CERT)
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// What header templates can refer to.
pub struct TemplateContext<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub protocol: &'static str,
    pub start: SystemTime,
    /// The request's headers, for `%REQ(...)%`; `None` when editing the request itself (its
    /// own current headers are used then).
    pub request: Option<&'a HeaderMap>,
    pub upstream: Option<SocketAddr>,
}

fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

pub fn render(t: &Template, ctx: &TemplateContext<'_>, request: &HeaderMap) -> Option<HeaderValue> {
    if let Some(lit) = t.as_literal() {
        return HeaderValue::from_str(lit).ok();
    }
    let mut out = String::new();
    for part in &t.parts {
        match part {
            TemplatePart::Literal(s) => out.push_str(s),
            TemplatePart::DownstreamRemoteAddress => out.push_str(&ctx.peer.to_string()),
            TemplatePart::DownstreamRemoteAddressWithoutPort => {
                out.push_str(&ctx.peer.ip().to_string())
            }
            TemplatePart::DownstreamLocalAddress => out.push_str(&ctx.local.to_string()),
            TemplatePart::DownstreamLocalAddressWithoutPort => {
                out.push_str(&ctx.local.ip().to_string())
            }
            TemplatePart::DownstreamLocalPort => out.push_str(&ctx.local.port().to_string()),
            TemplatePart::RequestHeader(name) => {
                if let Some(v) = request.get(name).and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
            }
            TemplatePart::Hostname => out.push_str(hostname()),
            TemplatePart::Protocol => out.push_str(ctx.protocol),
            TemplatePart::StartTime => out.push_str(&rfc3339(ctx.start)),
            TemplatePart::UpstreamRemoteAddress => {
                if let Some(a) = ctx.upstream {
                    out.push_str(&a.to_string());
                }
            }
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// Applies one level of edits: remove, then set (replacing), then add (appending), as Envoy.
/// Values are rendered before any edit, so `%REQ(...)%` sees the headers as they arrived at
/// this level. A value that renders empty is not added, as Envoy skips empty values.
pub fn apply(ops: &HeaderOps, headers: &mut HeaderMap, ctx: &TemplateContext<'_>) {
    if ops.is_empty() {
        return;
    }
    let rendered =
        |list: &[(HeaderName, Template)], headers: &HeaderMap| -> Vec<(HeaderName, HeaderValue)> {
            let request = ctx.request.unwrap_or(headers);
            list.iter()
                .filter_map(|(n, t)| {
                    Some((
                        n.clone(),
                        render(t, ctx, request).filter(|v| !v.is_empty())?,
                    ))
                })
                .collect()
        };
    let set = rendered(&ops.set, headers);
    let add = rendered(&ops.add, headers);
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, v) in set {
        headers.insert(name, v);
    }
    for (name, v) in add {
        headers.append(name, v);
    }
}

/// `2026-11-22T03:14:10.123Z`, the format of Envoy's `%START_TIME%`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Envoy's shadow host: `-shadow` appended to the host, before any port.
pub fn shadow_host(authority: &str) -> String {
    if let Some((h, p)) = authority.rsplit_once(':')
        && !h.is_empty()
        && !h.contains(':')
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
    {
        return format!("{h}-shadow:{p}");
    }
    format!("{authority}-shadow")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);
    }

    #[test]
    fn connection_lists_headers_to_remove_in_any_case_and_in_every_connection_header() {
        // (Connection values, headers left besides x-kept and the gateway's own, which
        // always stay)
        let cases: [(&[&str], &[&str]); 6] = [
            (&["X-Secret"], &["x-other"]),
            (&["close", "x-secret, X-OTHER"], &[]),
            (&["keep-alive", "x-secret"], &["x-other"]),
            (
                &["host, X-Forwarded-For, x-forwarded-proto, X-Request-Id"],
                &["x-other", "x-secret"],
            ),
            (&[", ,bad name,x=1, x-other"], &["x-secret"]),
            (&[], &["x-other", "x-secret"]),
        ];
        let gateway = [
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-request-id",
        ];
        for (connection, left) in cases {
            let mut h = HeaderMap::new();
            for v in connection {
                h.append(header::CONNECTION, HeaderValue::from_str(v).unwrap());
            }
            for name in gateway.iter().chain(&["x-secret", "x-other", "x-kept"]) {
                h.insert(*name, HeaderValue::from_static("1"));
            }
            strip_hop_by_hop(&mut h);
            let mut got: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            got.sort_unstable();
            let mut want: Vec<&str> = left.iter().chain(&gateway).copied().collect();
            want.push("x-kept");
            want.sort_unstable();
            assert_eq!(got, want, "Connection: {connection:?}");
        }
    }

    #[test]
    fn the_usual_hop_by_hop_headers_go_without_connection_naming_them() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ] {
            h.insert(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn numbers_become_header_values() {
        for n in [0, 1, 9, 10, 250, 1_000_000, u64::MAX] {
            assert_eq!(number(n), n.to_string().as_str(), "{n}");
        }
    }

    #[test]
    fn templates_render_from_the_request() {
        let mut req = HeaderMap::new();
        req.insert("x-user", HeaderValue::from_static("jason"));
        let ctx = TemplateContext {
            peer: "10.1.2.3:5555".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            protocol: "HTTP/1.1",
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_763_781_250_123),
            request: None,
            upstream: None,
        };
        let cases = [
            ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.1.2.3:5555"),
            ("ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "ip=10.1.2.3"),
            ("%DOWNSTREAM_LOCAL_PORT%", "8080"),
            ("%REQ(X-User)%-%PROTOCOL%", "jason-HTTP/1.1"),
            ("%START_TIME%", "2025-11-22T03:14:10.123Z"),
            ("100%%", "100%"),
        ];
        for (text, want) in cases {
            let t = Template::parse(text).unwrap();
            assert_eq!(render(&t, &ctx, &req).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn shadow_hosts() {
        assert_eq!(shadow_host("httpbin"), "httpbin-shadow");
        assert_eq!(shadow_host("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_host("a.example.com"), "a.example.com-shadow");
    }
}
