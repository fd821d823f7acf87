//! Request matchers, compiled once per configuration and evaluated per request.
//!
//! The semantics are Envoy's as Istio configures it: `exact` and `prefix` are
//! case-sensitive (unless `ignoreUriCase` for the path), regexes must match the whole value,
//! `{}` for a header means "present", and `withoutHeaders` negates.

use std::borrow::Cow;
use std::fmt;

use http::HeaderMap;
use regex::Regex;
use serde::{Serialize, Serializer};

/// Largest compiled program a configuration regex may produce (Envoy caps RE2 program size
/// for the same reason: a regex is evaluated on every request).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a regex that must match the whole value (Envoy `safe_regex` semantics).
pub fn full_match_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Compiles a regex used for substitution (`uriRegexRewrite`): it replaces every match, as
/// Envoy's `regex_rewrite` does, so it is not anchored.
pub fn substitution_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

#[derive(Debug, Clone)]
pub enum StrMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    /// Header present, whatever its value (`{}` in Istio).
    Present,
    /// Gateway API `PathPrefix` (and Ingress `Prefix`): whole path segments, so `/abc` matches
    /// `/abc`, `/abc/` and `/abc/d` but not `/abcd`; a trailing `/` of the prefix is ignored.
    PathPrefix(String),
}

/// Whether `prefix` covers `path` segment by segment (see [`StrMatcher::PathPrefix`]).
pub fn path_prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl StrMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => value == s,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
            StrMatcher::Present => true,
            StrMatcher::PathPrefix(p) => path_prefix_matches(p, value),
        }
    }

    /// Case-insensitive `exact`/`prefix` (the pattern is stored lower-cased); regexes are
    /// unaffected, as in Envoy.
    fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => value.eq_ignore_ascii_case(s),
            StrMatcher::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            other => other.matches(value),
        }
    }
}

/// As written in a VirtualService: `exact "/a"`, `prefix "/a"`, `regex "/a/.*"`, `present`.
impl fmt::Display for StrMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrMatcher::Exact(v) => write!(f, "exact {v:?}"),
            StrMatcher::Prefix(v) => write!(f, "prefix {v:?}"),
            StrMatcher::Regex(r) => write!(f, "regex {:?}", pattern_of(r)),
            StrMatcher::Present => f.write_str("present"),
            StrMatcher::PathPrefix(v) => write!(f, "path prefix {v:?}"),
        }
    }
}

/// The pattern as configured, without the anchors [`full_match_regex`] adds.
fn pattern_of(r: &Regex) -> &str {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or(s)
}

impl Serialize for StrMatcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            StrMatcher::Exact(v) => m.serialize_entry("exact", v)?,
            StrMatcher::Prefix(v) => m.serialize_entry("prefix", v)?,
            StrMatcher::Regex(r) => m.serialize_entry("regex", r.as_str())?,
            StrMatcher::Present => m.serialize_entry("present", &true)?,
            StrMatcher::PathPrefix(v) => m.serialize_entry("path_prefix", v)?,
        }
        m.end()
    }
}

/// One `match` block of an HTTP route: every condition must hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StrMatcher>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StrMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StrMatcher>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<StrMatcher>,
    /// Lower-case header names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, StrMatcher)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<(String, StrMatcher)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, StrMatcher)>,
    /// The port the request is for (its authority's, or the scheme's default): the `port` of a
    /// mesh rule on a forward-proxy port, where one listener serves every destination port.
    /// Gateway rules compare `port` with the listener when they are compiled instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// What a request offers to matching; built once per request by the data plane.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// The Host/:authority as sent, port included.
    pub authority: &'a str,
    /// The normalised path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl RequestMatch {
    /// Istio's catch-all: a `/` prefix (or `*` regex) and no other condition. Catch-all routes
    /// are moved behind the others when VirtualServices are merged.
    pub fn is_catch_all(&self) -> bool {
        let uri_all = match &self.uri {
            None => true,
            Some(StrMatcher::Prefix(p) | StrMatcher::PathPrefix(p)) => p == "/",
            Some(StrMatcher::Regex(r)) => matches!(r.as_str(), "^(?:*)$" | "^(?:.*)$"),
            Some(_) => false,
        };
        uri_all
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
            && self.port.is_none()
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.first_failure(req).is_none()
    }

    /// The first condition the request fails, in evaluation order, or `None` when the request
    /// matches. [`RequestMatch::matches`] is this, so the data plane and `isthmus explain`
    /// cannot disagree; it allocates nothing.
    pub fn first_failure(&self, req: &RequestView<'_>) -> Option<Condition> {
        if let Some(p) = self.port
            && p != crate::egress::destination_port(req.authority, req.scheme)
        {
            return Some(Condition::Port);
        }
        if let Some(m) = &self.uri
            && !self.uri_matches(m, req.path)
        {
            return Some(Condition::Uri);
        }
        let pseudo = [
            (Condition::Scheme, &self.scheme, req.scheme),
            (Condition::Method, &self.method, req.method),
            (Condition::Authority, &self.authority, req.authority),
        ];
        if let Some((c, _, _)) = pseudo
            .iter()
            .find(|(_, m, v)| m.as_ref().is_some_and(|m| !m.matches(v)))
        {
            return Some(*c);
        }
        if let Some(i) = self
            .headers
            .iter()
            .position(|(name, m)| !header_value(req.headers, name).matches(m))
        {
            return Some(Condition::Header(i));
        }
        if let Some(i) = self
            .without_headers
            .iter()
            .position(|(name, m)| header_value(req.headers, name).matches(m))
        {
            return Some(Condition::WithoutHeader(i));
        }
        self.query_params
            .iter()
            .position(|(name, m)| !query_value(req.query, name).is_some_and(|v| m.matches(v)))
            .map(Condition::QueryParam)
    }

    fn uri_matches(&self, m: &StrMatcher, path: &str) -> bool {
        if self.ignore_uri_case {
            m.matches_ignore_case(path)
        } else {
            m.matches(path)
        }
    }

    /// Why the request does not match, in words, or `None` when it matches.
    pub fn why_not(&self, req: &RequestView<'_>) -> Option<Mismatch> {
        let failed = self.first_failure(req)?;
        let (condition, value, negated) = match failed {
            Condition::Port => (
                format!("port {}", self.port?),
                Value::Text(
                    crate::egress::destination_port(req.authority, req.scheme)
                        .to_string()
                        .into(),
                ),
                false,
            ),
            Condition::Uri => (self.uri_condition()?, Value::Text(req.path.into()), false),
            Condition::Scheme => (
                pseudo_condition("scheme", &self.scheme)?,
                Value::Text(req.scheme.into()),
                false,
            ),
            Condition::Method => (
                pseudo_condition("method", &self.method)?,
                Value::Text(req.method.into()),
                false,
            ),
            Condition::Authority => (
                pseudo_condition("authority", &self.authority)?,
                Value::Text(req.authority.into()),
                false,
            ),
            Condition::Header(i) => {
                let (name, m) = self.headers.get(i)?;
                (
                    format!("header {name:?} {m}"),
                    header_value(req.headers, name),
                    false,
                )
            }
            Condition::WithoutHeader(i) => {
                let (name, m) = self.without_headers.get(i)?;
                (
                    format!("withoutHeaders {name:?} {m}"),
                    header_value(req.headers, name),
                    true,
                )
            }
            Condition::QueryParam(i) => {
                let (name, m) = self.query_params.get(i)?;
                let value = match query_value(req.query, name) {
                    Some(v) => Value::Text(v.into()),
                    None => Value::Absent,
                };
                (format!("query param {name:?} {m}"), value, false)
            }
        };
        Some(Mismatch::new(condition, failed, value, negated))
    }

    fn uri_condition(&self) -> Option<String> {
        let m = self.uri.as_ref()?;
        Some(if self.ignore_uri_case {
            format!("uri {m} (ignoring case)")
        } else {
            format!("uri {m}")
        })
    }

    /// The whole match block in words: `uri prefix "/api" and header "end-user" exact "jason"`,
    /// or `any request`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.port.map(|p| format!("port {p}")));
        parts.extend(self.uri_condition());
        for (field, m) in [
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            parts.extend(pseudo_condition(field, m));
        }
        parts.extend(
            self.headers
                .iter()
                .map(|(n, m)| format!("header {n:?} {m}")),
        );
        parts.extend(
            self.without_headers
                .iter()
                .map(|(n, m)| format!("withoutHeaders {n:?} {m}")),
        );
        parts.extend(
            self.query_params
                .iter()
                .map(|(n, m)| format!("query param {n:?} {m}")),
        );
        if parts.is_empty() {
            "any request".into()
        } else {
            parts.join(" and ")
        }
    }
}

fn pseudo_condition(field: &str, m: &Option<StrMatcher>) -> Option<String> {
    m.as_ref().map(|m| format!("{field} {m}"))
}

/// A condition of a match block, by its place in [`RequestMatch`] (indexes into its lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The destination port (mesh rules on forward-proxy ports).
    Port,
    Uri,
    Scheme,
    Method,
    Authority,
    Header(usize),
    WithoutHeader(usize),
    QueryParam(usize),
}

/// What a request offers for one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value<'a> {
    Absent,
    /// A header value that is not visible ASCII text: no matcher accepts it.
    NotText,
    Text(Cow<'a, str>),
}

impl Value<'_> {
    fn matches(&self, m: &StrMatcher) -> bool {
        match self {
            Value::Text(v) => m.matches(v),
            Value::Absent | Value::NotText => false,
        }
    }
}

/// Why a request fails a match block: the first failing condition and what the request had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub condition: Condition,
    /// The condition as configured: `uri prefix "/api"`.
    pub expected: String,
    /// The request's value, `None` when it has none.
    pub actual: Option<String>,
    /// The whole reason in words.
    pub reason: String,
}

impl Mismatch {
    fn new(expected: String, condition: Condition, value: Value<'_>, negated: bool) -> Self {
        let reason = match (&value, negated) {
            (Value::Text(v), true) => format!("{expected}: the request has it ({v:?})"),
            (Value::Text(v), false) => format!("{expected} does not match {v:?}"),
            (Value::Absent, _) => match condition {
                Condition::QueryParam(_) => format!("{expected}: parameter absent"),
                _ => format!("{expected}: header absent"),
            },
            (Value::NotText, _) => format!("{expected}: the value is not text"),
        };
        let actual = match value {
            Value::Text(v) => Some(v.into_owned()),
            Value::Absent | Value::NotText => None,
        };
        Mismatch {
            condition,
            expected,
            actual,
            reason,
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A header's value as Envoy matches it: several occurrences are joined by `,`.
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Value<'a> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Value::Absent;
    };
    let Ok(first) = first.to_str() else {
        return Value::NotText;
    };
    let rest: Vec<&str> = values.filter_map(|v| v.to_str().ok()).collect();
    if rest.is_empty() {
        return Value::Text(Cow::Borrowed(first));
    }
    let mut joined = String::from(first);
    for v in rest {
        joined.push(',');
        joined.push_str(v);
    }
    Value::Text(Cow::Owned(joined))
}

/// The first occurrence of the parameter decides, as in Envoy; `?key` has the empty value.
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: "GET",
            scheme: "http",
            authority: "a.example.com:8080",
            path,
            query,
            headers,
        }
    }

    #[test]
    fn string_matchers() {
        let re = |p: &str| StrMatcher::Regex(full_match_regex(p).unwrap());
        let cases = [
            (StrMatcher::Exact("/a".into()), "/a", true),
            (StrMatcher::Exact("/a".into()), "/a/", false),
            (StrMatcher::Prefix("/a".into()), "/abc", true),
            (StrMatcher::Prefix("/a".into()), "/b", false),
            (re("/a/[0-9]+"), "/a/12", true),
            (re("/a/[0-9]+"), "/a/12/x", false),
            (re("/a/[0-9]+"), "x/a/12", false),
            (re("a|b"), "ab", false),
            (re("(?i)/ABC"), "/abc", true),
            (StrMatcher::Present, "", true),
            (StrMatcher::PathPrefix("/abc".into()), "/abc", true),
            (StrMatcher::PathPrefix("/abc".into()), "/abc/", true),
            (StrMatcher::PathPrefix("/abc".into()), "/abc/d", true),
            (StrMatcher::PathPrefix("/abc".into()), "/abcd", false),
            (StrMatcher::PathPrefix("/abc/".into()), "/abc", true),
            (StrMatcher::PathPrefix("/abc/".into()), "/abcd", false),
            (StrMatcher::PathPrefix("/".into()), "/anything", true),
            (StrMatcher::PathPrefix("/".into()), "/", true),
            (StrMatcher::PathPrefix("/v2".into()), "/v2example", false),
        ];
        for (m, v, want) in cases {
            assert_eq!(m.matches(v), want, "{m:?} on {v}");
        }
    }

    #[test]
    fn request_matches() {
        let mut headers = HeaderMap::new();
        headers.insert("end-user", HeaderValue::from_static("jason"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let uri = |m: StrMatcher| RequestMatch {
            uri: Some(m),
            ..Default::default()
        };
        let header = |n: &str, m: StrMatcher| RequestMatch {
            headers: vec![(n.into(), m)],
            ..Default::default()
        };
        let cases: Vec<(RequestMatch, &str, Option<&str>, bool)> = vec![
            (RequestMatch::default(), "/", None, true),
            (
                uri(StrMatcher::Prefix("/API".into())),
                "/api/x",
                None,
                false,
            ),
            (
                RequestMatch {
                    ignore_uri_case: true,
                    ..uri(StrMatcher::Prefix("/api".into()))
                },
                "/API/x",
                None,
                true,
            ),
            (
                header("end-user", StrMatcher::Exact("jason".into())),
                "/",
                None,
                true,
            ),
            (
                header("end-user", StrMatcher::Exact("Jason".into())),
                "/",
                None,
                false,
            ),
            (header("missing", StrMatcher::Present), "/", None, false),
            (
                header("x-multi", StrMatcher::Exact("a,b".into())),
                "/",
                None,
                true,
            ),
            (
                RequestMatch {
                    without_headers: vec![("end-user".into(), StrMatcher::Present)],
                    ..Default::default()
                },
                "/",
                None,
                false,
            ),
            (
                RequestMatch {
                    query_params: vec![("v".into(), StrMatcher::Exact("1".into()))],
                    ..Default::default()
                },
                "/",
                Some("a=2&v=1&v=2"),
                true,
            ),
            (
                RequestMatch {
                    query_params: vec![("flag".into(), StrMatcher::Exact(String::new()))],
                    ..Default::default()
                },
                "/",
                Some("flag"),
                true,
            ),
            (
                RequestMatch {
                    query_params: vec![("v".into(), StrMatcher::Exact("1".into()))],
                    ..Default::default()
                },
                "/",
                None,
                false,
            ),
            (
                RequestMatch {
                    authority: Some(StrMatcher::Prefix("a.example.com".into())),
                    method: Some(StrMatcher::Exact("GET".into())),
                    scheme: Some(StrMatcher::Exact("http".into())),
                    ..Default::default()
                },
                "/",
                None,
                true,
            ),
            (
                RequestMatch {
                    method: Some(StrMatcher::Exact("POST".into())),
                    ..Default::default()
                },
                "/",
                None,
                false,
            ),
        ];
        for (i, (m, path, query, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                m.matches(&view(path, query, &headers)),
                want,
                "case {i}: {m:?}"
            );
        }
    }

    #[test]
    fn why_not_names_the_first_failing_condition() {
        let mut headers = HeaderMap::new();
        headers.insert("end-user", HeaderValue::from_static("bob"));
        headers.insert("x-bin", HeaderValue::from_bytes(b"\xff").unwrap());
        let re = |p: &str| StrMatcher::Regex(full_match_regex(p).unwrap());
        let cases: Vec<(RequestMatch, &str, Option<&str>, Option<&str>)> = vec![
            (RequestMatch::default(), "/", None, None),
            (
                RequestMatch {
                    uri: Some(StrMatcher::Prefix("/api".into())),
                    method: Some(StrMatcher::Exact("POST".into())),
                    ..Default::default()
                },
                "/v1/x",
                None,
                Some(r#"uri prefix "/api" does not match "/v1/x""#),
            ),
            (
                RequestMatch {
                    uri: Some(StrMatcher::Prefix("/api".into())),
                    ignore_uri_case: true,
                    ..Default::default()
                },
                "/v1",
                None,
                Some(r#"uri prefix "/api" (ignoring case) does not match "/v1""#),
            ),
            (
                RequestMatch {
                    uri: Some(re("/a/[0-9]+")),
                    ..Default::default()
                },
                "/a/b",
                None,
                Some(r#"uri regex "/a/[0-9]+" does not match "/a/b""#),
            ),
            (
                RequestMatch {
                    method: Some(StrMatcher::Exact("POST".into())),
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"method exact "POST" does not match "GET""#),
            ),
            (
                RequestMatch {
                    scheme: Some(StrMatcher::Exact("https".into())),
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"scheme exact "https" does not match "http""#),
            ),
            (
                RequestMatch {
                    authority: Some(StrMatcher::Exact("b.example.com".into())),
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"authority exact "b.example.com" does not match "a.example.com:8080""#),
            ),
            (
                RequestMatch {
                    headers: vec![("x-user".into(), StrMatcher::Exact("jason".into()))],
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"header "x-user" exact "jason": header absent"#),
            ),
            (
                RequestMatch {
                    headers: vec![("end-user".into(), StrMatcher::Exact("jason".into()))],
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"header "end-user" exact "jason" does not match "bob""#),
            ),
            (
                RequestMatch {
                    headers: vec![("x-bin".into(), StrMatcher::Present)],
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"header "x-bin" present: the value is not text"#),
            ),
            (
                RequestMatch {
                    without_headers: vec![("end-user".into(), StrMatcher::Present)],
                    ..Default::default()
                },
                "/",
                None,
                Some(r#"withoutHeaders "end-user" present: the request has it ("bob")"#),
            ),
            (
                RequestMatch {
                    query_params: vec![("v".into(), StrMatcher::Exact("1".into()))],
                    ..Default::default()
                },
                "/",
                Some("a=1"),
                Some(r#"query param "v" exact "1": parameter absent"#),
            ),
            (
                RequestMatch {
                    query_params: vec![("v".into(), StrMatcher::Exact("1".into()))],
                    ..Default::default()
                },
                "/",
                Some("v=2&v=1"),
                Some(r#"query param "v" exact "1" does not match "2""#),
            ),
        ];
        for (i, (m, path, query, want)) in cases.into_iter().enumerate() {
            let req = view(path, query, &headers);
            let got = m.why_not(&req);
            assert_eq!(got.as_ref().map(|w| w.reason.as_str()), want, "case {i}");
            assert_eq!(
                m.matches(&req),
                got.is_none(),
                "case {i}: matches and why_not agree"
            );
        }
    }

    #[test]
    fn descriptions() {
        let m = RequestMatch {
            uri: Some(StrMatcher::Prefix("/api".into())),
            headers: vec![("end-user".into(), StrMatcher::Exact("jason".into()))],
            query_params: vec![("v".into(), StrMatcher::Present)],
            ..Default::default()
        };
        assert_eq!(
            m.describe(),
            r#"uri prefix "/api" and header "end-user" exact "jason" and query param "v" present"#
        );
        assert_eq!(RequestMatch::default().describe(), "any request");
    }

    #[test]
    fn catch_all() {
        let prefix = |p: &str| RequestMatch {
            uri: Some(StrMatcher::Prefix(p.into())),
            ..Default::default()
        };
        assert!(prefix("/").is_catch_all());
        assert!(RequestMatch::default().is_catch_all());
        assert!(!prefix("/a").is_catch_all());
        let mut with_header = prefix("/");
        with_header.headers.push(("a".into(), StrMatcher::Present));
        assert!(!with_header.is_catch_all());
    }
}
