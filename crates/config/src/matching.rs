//! Request matchers, compiled once per configuration and evaluated per request.
//!
//! The semantics are Envoy's as Istio configures it: `exact` and `prefix` are
//! case-sensitive (unless `ignoreUriCase` for the path), regexes must match the whole value,
//! `{}` for a header means "present", and `withoutHeaders` negates.

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
}

impl StrMatcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => value == s,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
            StrMatcher::Present => true,
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

impl Serialize for StrMatcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            StrMatcher::Exact(v) => m.serialize_entry("exact", v)?,
            StrMatcher::Prefix(v) => m.serialize_entry("prefix", v)?,
            StrMatcher::Regex(r) => m.serialize_entry("regex", r.as_str())?,
            StrMatcher::Present => m.serialize_entry("present", &true)?,
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
            Some(StrMatcher::Prefix(p)) => p == "/",
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
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.uri {
            let ok = if self.ignore_uri_case {
                m.matches_ignore_case(req.path)
            } else {
                m.matches(req.path)
            };
            if !ok {
                return false;
            }
        }
        let pseudo = [
            (&self.scheme, req.scheme),
            (&self.method, req.method),
            (&self.authority, req.authority),
        ];
        if pseudo
            .iter()
            .any(|(m, v)| m.as_ref().is_some_and(|m| !m.matches(v)))
        {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, m)| header_matches(req.headers, name, m))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| header_matches(req.headers, name, m))
            && self
                .query_params
                .iter()
                .all(|(name, m)| query_matches(req.query, name, m))
    }
}

/// Envoy matches a header that appears several times against its values joined by `,`.
fn header_matches(headers: &HeaderMap, name: &str, m: &StrMatcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Ok(first) = first.to_str() else {
        return false;
    };
    let rest: Vec<&str> = values.filter_map(|v| v.to_str().ok()).collect();
    if rest.is_empty() {
        return m.matches(first);
    }
    let mut joined = String::from(first);
    for v in rest {
        joined.push(',');
        joined.push_str(v);
    }
    m.matches(&joined)
}

/// The first occurrence of the parameter decides, as in Envoy; `?key` has the empty value.
fn query_matches(query: Option<&str>, name: &str, m: &StrMatcher) -> bool {
    let Some(query) = query else { return false };
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .is_some_and(|(_, v)| m.matches(v))
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
