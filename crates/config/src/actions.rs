//! What a route does besides choosing a destination, compiled once: rewrites, redirects,
//! direct responses, header edits, retries, timeouts, faults, mirrors and CORS.
//!
//! The data plane executes these; nothing here is evaluated per request except through the
//! small pure helpers (path rewriting, redirect locations) that are tested with tables.

use std::time::Duration;

use http::HeaderName;
use regex::Regex;
use serde::{Serialize, Serializer};

use crate::matching::StrMatcher;

fn ser_regex<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn ser_names<S: Serializer>(n: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(n.iter().map(HeaderName::as_str))
}

fn ser_named<S: Serializer>(n: &[(HeaderName, Template)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(n.iter().map(|(k, v)| (k.as_str(), v)))
}

// === Header edits ===

/// A header value that may contain Envoy command operators such as
/// `%DOWNSTREAM_REMOTE_ADDRESS%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<TemplatePart>,
    /// The original text, for `/config_dump`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    DownstreamLocalPort,
    RequestHeader(HeaderName),
    Hostname,
    Protocol,
    StartTime,
    UpstreamRemoteAddress,
}

/// The operators a header value may use.
pub const TEMPLATE_OPERATORS: &[&str] = &[
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "REQ(name)",
    "HOSTNAME",
    "PROTOCOL",
    "START_TIME",
    "UPSTREAM_REMOTE_ADDRESS",
];

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl Template {
    /// Parses `text`; `%%` is a literal `%`. An unknown operator is an error naming it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('%') {
            literal.push_str(rest.get(..i).unwrap_or(""));
            let after = rest.get(i + 1..).unwrap_or("");
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
                continue;
            }
            let end = after
                .find('%')
                .ok_or_else(|| format!("unterminated operator in {text:?}"))?;
            let op = after.get(..end).unwrap_or("");
            let part = operator(op).ok_or_else(|| {
                format!(
                    "unknown operator %{op}% in {text:?}; supported: {}",
                    TEMPLATE_OPERATORS
                        .iter()
                        .map(|o| format!("%{o}%"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if !literal.is_empty() {
                parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = after.get(end + 1..).unwrap_or("");
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Template {
            parts,
            text: text.to_string(),
        })
    }

    /// A value taken as is, without operators (Gateway API header values are literal).
    pub fn literal(text: &str) -> Template {
        let parts = if text.is_empty() {
            Vec::new()
        } else {
            vec![TemplatePart::Literal(text.to_string())]
        };
        Template {
            parts,
            text: text.to_string(),
        }
    }

    /// The value when it has no operator.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [TemplatePart::Literal(s)] => Some(s),
            _ => None,
        }
    }
}

fn operator(op: &str) -> Option<TemplatePart> {
    Some(match op {
        "DOWNSTREAM_REMOTE_ADDRESS" => TemplatePart::DownstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            TemplatePart::DownstreamRemoteAddressWithoutPort
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => TemplatePart::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => TemplatePart::DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_LOCAL_PORT" => TemplatePart::DownstreamLocalPort,
        "HOSTNAME" => TemplatePart::Hostname,
        "PROTOCOL" => TemplatePart::Protocol,
        "START_TIME" => TemplatePart::StartTime,
        "UPSTREAM_REMOTE_ADDRESS" => TemplatePart::UpstreamRemoteAddress,
        _ => {
            let name = op.strip_prefix("REQ(")?.strip_suffix(')')?;
            TemplatePart::RequestHeader(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?,
            )
        }
    })
}

/// `set`, `add` and `remove` for one direction. Envoy removes first, then appends and sets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOps {
    #[serde(serialize_with = "ser_names", skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<HeaderName>,
    #[serde(serialize_with = "ser_named", skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(HeaderName, Template)>,
    #[serde(serialize_with = "ser_named", skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Request and response edits at one level (route or destination).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderEdits {
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

// === Path rewriting ===

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the matched prefix (`rewrite.uri` after a prefix match, `redirect.prefixRewrite`).
    Prefix {
        matched: String,
        replacement: String,
    },
    /// Replace the whole path (`rewrite.uri` after an exact or regex match, `redirect.uri`).
    Full(String),
    /// `uriRegexRewrite`: RE2 substitution over the whole path, `\1` for groups.
    Regex {
        #[serde(serialize_with = "ser_regex")]
        pattern: Regex,
        replacement: String,
    },
    /// Gateway API `ReplacePrefixMatch`: the matched path prefix is replaced by whole segments
    /// (`/foo` to `/xyz` turns `/foo/bar` into `/xyz/bar`; to `` turns it into `/bar`).
    SegmentPrefix {
        matched: String,
        replacement: String,
    },
}

impl PathRewrite {
    /// The new path for `path` (without the query).
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Prefix {
                matched,
                replacement,
            } => {
                let rest = path.get(matched.len()..).unwrap_or("");
                format!("{replacement}{rest}")
            }
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Regex {
                pattern,
                replacement,
            } => pattern.replace_all(path, replacement.as_str()).into_owned(),
            PathRewrite::SegmentPrefix {
                matched,
                replacement,
            } => replace_segment_prefix(path, matched, replacement),
        }
    }
}

/// The Gateway API's table for `ReplacePrefixMatch`: trailing slashes of the prefix and of the
/// replacement do not count, what follows the prefix is kept, and the result is never empty.
fn replace_segment_prefix(path: &str, matched: &str, replacement: &str) -> String {
    let matched = matched.trim_end_matches('/');
    let rest = path.get(matched.len()..).unwrap_or("");
    let mut out = replacement.trim_end_matches('/').to_string();
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Converts RE2/Envoy `\1` group references to the regex crate's `${1}`.
pub fn regex_replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

// === Redirect and direct response ===

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedirectPort {
    /// No port set: Envoy keeps the port of the request's Host, unless the scheme changes and
    /// that port is the old scheme's default.
    Keep,
    Explicit(u16),
    /// `FROM_PROTOCOL_DEFAULT`: Istio sets no port, so this behaves as [`RedirectPort::Keep`].
    ProtocolDefault,
    /// The port the request arrived on (the Gateway port).
    RequestPort,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    pub port: RedirectPort,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// Gateway API semantics: the port of the request's Host never carries over; the Location
    /// has `port` (left out when it is the scheme's default) or none.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drop_request_port: bool,
}

/// What the redirect needs to know about the request.
pub struct RedirectInput<'a> {
    pub scheme: &'a str,
    /// Host header or :authority, port included if sent.
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub listener_port: u16,
}

impl Redirect {
    /// The `Location` for a request, as Envoy builds it from the route Istio generates.
    pub fn location(&self, req: &RedirectInput<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        // Istio sets Envoy's port_redirect for an explicit port and for FROM_REQUEST_PORT (the
        // listener's), leaving out :80 for http and :443 for https.
        let port = match self.port {
            RedirectPort::Explicit(p) => Some(p),
            RedirectPort::RequestPort => Some(req.listener_port),
            RedirectPort::Keep | RedirectPort::ProtocolDefault => None,
        }
        .filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
        let host = match (self.authority.as_deref(), port) {
            // A port of the new authority yields to an explicit port.
            (Some(a), Some(_)) => split_port(a).0,
            (Some(a), None) => a,
            (None, _) if self.drop_request_port => split_port(req.authority).0,
            // Envoy's processRequestHost: the request's port goes when a port is set, or when
            // the scheme changes and it is the old scheme's default port; else it stays.
            (None, port) => {
                let (host, orig_port) = split_port(req.authority);
                let old_default = match req.scheme {
                    "http" => Some(80),
                    "https" => Some(443),
                    _ => None,
                };
                let drop = orig_port.is_some()
                    && (port.is_some() || (scheme != req.scheme && orig_port == old_default));
                if drop { host } else { req.authority }
            }
        };
        let new_path = self.path.as_ref().map(|p| p.apply(req.path));
        let (path, query) = match &new_path {
            // A path with its own query replaces the request's query.
            Some(p) if p.contains('?') => (p.as_str(), None),
            Some(p) => (p.as_str(), req.query),
            None => (req.path, req.query),
        };
        let mut loc = format!("{scheme}://{host}");
        if let Some(p) = port {
            loc.push_str(&format!(":{p}"));
        }
        loc.push_str(path);
        if let Some(q) = query {
            loc.push('?');
            loc.push_str(q);
        }
        loc
    }
}

/// The `Location` of `httpsRedirect` (Envoy's `require_tls`): `https://` + the Host as sent,
/// port included, + the path and query as sent.
pub fn https_redirect_location(authority: &str, path_and_query: &str) -> String {
    format!("https://{authority}{path_and_query}")
}

fn split_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(end) = authority.rfind(']') {
        let (h, rest) = authority.split_at(end + 1);
        return (h, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(p) => (h, Some(p)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

/// Istio caps direct response bodies at 1 MiB.
pub const MAX_DIRECT_BODY: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(serialize_with = "ser_body")]
    pub body: bytes::Bytes,
    pub content_type: &'static str,
}

fn ser_body<S: Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(b) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.serialize_str(&format!("<{} bytes>", b.len())),
    }
}

// === Retries, timeouts ===

/// Envoy retry conditions, as bits.
pub mod retry_on {
    pub const FIVE_XX: u32 = 1 << 0;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    pub const REFUSED_STREAM: u32 = 1 << 4;
    pub const RETRIABLE_4XX: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const CANCELLED: u32 = 1 << 7;
    pub const DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const INTERNAL: u32 = 1 << 9;
    pub const RESOURCE_EXHAUSTED: u32 = 1 << 10;
    pub const UNAVAILABLE: u32 = 1 << 11;
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 12;
    pub const ENVOY_RATELIMITED: u32 = 1 << 13;
    pub const RETRIABLE_HEADERS: u32 = 1 << 14;
    pub const HTTP3_POST_CONNECT_FAILURE: u32 = 1 << 15;

    pub const NAMES: &[(&str, u32)] = &[
        ("5xx", FIVE_XX),
        ("gateway-error", GATEWAY_ERROR),
        ("reset", RESET),
        ("reset-before-request", RESET_BEFORE_REQUEST),
        ("connect-failure", CONNECT_FAILURE),
        ("envoy-ratelimited", ENVOY_RATELIMITED),
        ("retriable-4xx", RETRIABLE_4XX),
        ("refused-stream", REFUSED_STREAM),
        ("retriable-status-codes", RETRIABLE_STATUS_CODES),
        ("retriable-headers", RETRIABLE_HEADERS),
        ("http3-post-connect-failure", HTTP3_POST_CONNECT_FAILURE),
        ("cancelled", CANCELLED),
        ("deadline-exceeded", DEADLINE_EXCEEDED),
        ("internal", INTERNAL),
        ("resource-exhausted", RESOURCE_EXHAUSTED),
        ("unavailable", UNAVAILABLE),
    ];
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_ms")]
    pub per_try_timeout: Option<Duration>,
    /// `retry_on` bits.
    #[serde(serialize_with = "ser_retry_on")]
    pub on: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    #[serde(with = "ms")]
    pub backoff: Duration,
    pub ignore_previous_hosts: bool,
    pub remote_localities: bool,
}

/// Istio's default when a route has no `retries`.
impl Default for RetryPolicy {
    fn default() -> Self {
        use retry_on::*;
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: CONNECT_FAILURE | REFUSED_STREAM | UNAVAILABLE | CANCELLED | RETRIABLE_STATUS_CODES,
            status_codes: Vec::new(),
            backoff: Duration::from_millis(25),
            ignore_previous_hosts: true,
            remote_localities: false,
        }
    }
}

impl RetryPolicy {
    pub fn retries_on(&self, bit: u32) -> bool {
        self.on & bit != 0
    }

    /// Whether a response with this status (and gRPC status, if any) is retried.
    pub fn retries_status(&self, status: u16, grpc: Option<u32>) -> bool {
        use retry_on::*;
        (self.retries_on(FIVE_XX) && status >= 500)
            || (self.retries_on(GATEWAY_ERROR) && matches!(status, 502..=504))
            || (self.retries_on(RETRIABLE_4XX) && status == 409)
            || (self.retries_on(RETRIABLE_STATUS_CODES) && self.status_codes.contains(&status))
            || grpc.is_some_and(|g| {
                (self.retries_on(CANCELLED) && g == 1)
                    || (self.retries_on(DEADLINE_EXCEEDED) && g == 4)
                    || (self.retries_on(RESOURCE_EXHAUSTED) && g == 8)
                    || (self.retries_on(INTERNAL) && g == 13)
                    || (self.retries_on(UNAVAILABLE) && g == 14)
            })
    }
}

fn ser_retry_on<S: Serializer>(bits: &u32, s: S) -> Result<S::Ok, S::Error> {
    let names: Vec<&str> = retry_on::NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect();
    s.serialize_str(&names.join(","))
}

mod ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

mod opt_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}

// === Faults, mirrors, CORS ===

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortWith {
    Http(u16),
    /// A gRPC status code (answered as HTTP 200 with `grpc-status`).
    Grpc(u32),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Fault {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultDelay {
    #[serde(with = "ms")]
    pub delay: Duration,
    /// Share of requests delayed, 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct FaultAbort {
    pub with: AbortWith,
    /// Share of requests aborted, 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mirror {
    pub cluster_name: String,
    pub cluster: Option<usize>,
    /// 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<StrMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// `unmatchedPreflights: FORWARD` (the default) or `IGNORE`.
    pub forward_unmatched_preflights: bool,
    /// Preflight answers carry `access-control-expose-headers` too (the Gateway API's CORS
    /// filter; Envoy's filter as Istio configures it sends them on actual responses only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expose_on_preflight: bool,
}

impl Cors {
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| m.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("client=%DOWNSTREAM_REMOTE_ADDRESS% 100%% %REQ(X-User)%").unwrap();
        assert_eq!(
            t.parts,
            vec![
                TemplatePart::Literal("client=".into()),
                TemplatePart::DownstreamRemoteAddress,
                TemplatePart::Literal(" 100% ".into()),
                TemplatePart::RequestHeader(HeaderName::from_static("x-user")),
            ]
        );
        assert_eq!(
            Template::parse("plain").unwrap().as_literal(),
            Some("plain")
        );
        assert!(
            Template::parse("%NOPE%")
                .unwrap_err()
                .contains("unknown operator %NOPE%")
        );
        assert!(Template::parse("%DOWNSTREAM").is_err());
    }

    #[test]
    fn path_rewrites() {
        let re = |p: &str, r: &str| PathRewrite::Regex {
            pattern: crate::matching::substitution_regex(p).unwrap(),
            replacement: regex_replacement(r),
        };
        let cases = [
            (
                PathRewrite::Prefix {
                    matched: "/v1".into(),
                    replacement: "/api/v2".into(),
                },
                "/v1/users",
                "/api/v2/users",
            ),
            (
                PathRewrite::Prefix {
                    matched: "/foo".into(),
                    replacement: "/".into(),
                },
                "/foo/baz",
                "//baz",
            ),
            (PathRewrite::Full("/new".into()), "/old/x", "/new"),
            (
                re("^/service/([^/]+)(/.*)$", "/customprefix/\\2/\\1"),
                "/service/foo/v1/api",
                "/customprefix//v1/api/foo",
            ),
            (re("/a/(.*)", "/b/\\1$"), "/a/x", "/b/x$"),
            (re("o", "0"), "/foo/boo", "/f00/b00"),
        ];
        for (rw, path, want) in cases {
            assert_eq!(rw.apply(path), want, "{rw:?}");
        }
        // The Gateway API's ReplacePrefixMatch table (HTTPPathModifier).
        let seg = |m: &str, r: &str| PathRewrite::SegmentPrefix {
            matched: m.into(),
            replacement: r.into(),
        };
        let cases = [
            (seg("/foo", "/xyz"), "/foo/bar", "/xyz/bar"),
            (seg("/foo", "/xyz/"), "/foo/bar", "/xyz/bar"),
            (seg("/foo/", "/xyz"), "/foo/bar", "/xyz/bar"),
            (seg("/foo/", "/xyz/"), "/foo/bar", "/xyz/bar"),
            (seg("/foo", "/xyz"), "/foo", "/xyz"),
            (seg("/foo", "/xyz"), "/foo/", "/xyz/"),
            (seg("/foo", ""), "/foo/bar", "/bar"),
            (seg("/foo", ""), "/foo/", "/"),
            (seg("/foo", ""), "/foo", "/"),
            (seg("/foo", "/"), "/foo/", "/"),
            (seg("/foo", "/"), "/foo", "/"),
            (seg("/", "/xyz"), "/foo/bar", "/xyz/foo/bar"),
        ];
        for (rw, path, want) in cases {
            assert_eq!(rw.apply(path), want, "{rw:?}");
        }
    }

    #[test]
    fn redirect_locations() {
        let input = |authority, query| RedirectInput {
            scheme: "http",
            authority,
            path: "/old/x",
            query,
            listener_port: 8080,
        };
        let r = |scheme: Option<&str>, authority: Option<&str>, port, path: Option<PathRewrite>| {
            Redirect {
                code: 301,
                scheme: scheme.map(str::to_string),
                authority: authority.map(str::to_string),
                port,
                path,
                drop_request_port: false,
            }
        };
        let cases = [
            (
                r(
                    None,
                    None,
                    RedirectPort::Keep,
                    Some(PathRewrite::Full("/new".into())),
                ),
                input("a.com", Some("q=1")),
                "http://a.com/new?q=1",
            ),
            (
                r(
                    None,
                    None,
                    RedirectPort::Keep,
                    Some(PathRewrite::Full("/new?x=2".into())),
                ),
                input("a.com", Some("q=1")),
                "http://a.com/new?x=2",
            ),
            // A scheme change drops only the old scheme's default port (Envoy).
            (
                r(Some("https"), None, RedirectPort::Keep, None),
                input("a.com:8080", None),
                "https://a.com:8080/old/x",
            ),
            (
                r(Some("https"), None, RedirectPort::Keep, None),
                input("a.com:80", None),
                "https://a.com/old/x",
            ),
            (
                r(None, None, RedirectPort::Keep, None),
                input("a.com:80", None),
                "http://a.com:80/old/x",
            ),
            (
                r(None, Some("b.com:9000"), RedirectPort::Keep, None),
                input("a.com:8080", None),
                "http://b.com:9000/old/x",
            ),
            (
                r(None, Some("b.com:9000"), RedirectPort::Explicit(8443), None),
                input("a.com", None),
                "http://b.com:8443/old/x",
            ),
            // Istio leaves an explicit :80 unset, and then the Host's port stays.
            (
                r(None, None, RedirectPort::Explicit(80), None),
                input("a.com:8080", None),
                "http://a.com:8080/old/x",
            ),
            (
                r(None, Some("b.com"), RedirectPort::Keep, None),
                input("a.com:8080", None),
                "http://b.com/old/x",
            ),
            (
                r(None, None, RedirectPort::Explicit(9000), None),
                input("a.com", None),
                "http://a.com:9000/old/x",
            ),
            (
                r(None, None, RedirectPort::RequestPort, None),
                input("a.com", None),
                "http://a.com:8080/old/x",
            ),
            // FROM_PROTOCOL_DEFAULT sets no port (Envoy's default behaviour).
            (
                r(None, None, RedirectPort::ProtocolDefault, None),
                input("a.com:8080", None),
                "http://a.com:8080/old/x",
            ),
            (
                r(Some("https"), None, RedirectPort::ProtocolDefault, None),
                input("a.com:80", None),
                "https://a.com/old/x",
            ),
            (
                r(Some("https"), None, RedirectPort::Explicit(443), None),
                input("a.com", None),
                "https://a.com/old/x",
            ),
            (
                r(None, None, RedirectPort::Keep, None),
                input("a.com:8080", None),
                "http://a.com:8080/old/x",
            ),
            (
                r(
                    None,
                    None,
                    RedirectPort::Keep,
                    Some(PathRewrite::Prefix {
                        matched: "/old".into(),
                        replacement: "/new".into(),
                    }),
                ),
                input("a.com", None),
                "http://a.com/new/x",
            ),
        ];
        for (redirect, req, want) in cases {
            assert_eq!(redirect.location(&req), want, "{redirect:?}");
        }
        // Gateway API: the Host's port never stays; the listener's (or the scheme's) is used.
        let gw = |scheme: Option<&str>, authority: Option<&str>, port| Redirect {
            drop_request_port: true,
            ..r(scheme, authority, port, None)
        };
        let cases = [
            (
                gw(None, None, RedirectPort::RequestPort),
                input("a.com:8080", None),
                "http://a.com:8080/old/x",
            ),
            (
                gw(None, None, RedirectPort::Explicit(80)),
                input("a.com:8080", None),
                "http://a.com/old/x",
            ),
            (
                gw(Some("https"), None, RedirectPort::Explicit(443)),
                input("a.com:8080", Some("q=1")),
                "https://a.com/old/x?q=1",
            ),
            (
                gw(None, Some("example.org"), RedirectPort::Explicit(8083)),
                input("a.com:80", None),
                "http://example.org:8083/old/x",
            ),
        ];
        for (redirect, req, want) in cases {
            assert_eq!(redirect.location(&req), want, "{redirect:?}");
        }
    }

    #[test]
    fn retry_conditions() {
        let p = RetryPolicy {
            on: retry_on::GATEWAY_ERROR | retry_on::RETRIABLE_STATUS_CODES,
            status_codes: vec![418],
            ..RetryPolicy::default()
        };
        assert!(p.retries_status(503, None));
        assert!(!p.retries_status(500, None));
        assert!(p.retries_status(418, None));
        let d = RetryPolicy::default();
        assert!(!d.retries_status(503, None));
        assert!(d.retries_status(200, Some(14)));
        assert!(d.retries_on(retry_on::CONNECT_FAILURE));
    }
}
