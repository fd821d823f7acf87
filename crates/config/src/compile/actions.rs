//! Compiling the actions of an HTTP route (everything but its destinations' clusters).
//! Validation has already rejected malformed values; these functions skip what they cannot
//! use rather than fail.

use std::time::Duration;

use base64::Engine;
use http::HeaderName;
use isthmus_api::istio::virtual_service::{
    CorsPolicy, Headers, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect,
    HttpRetry, HttpRewrite, StringMatch,
};

use crate::actions::{
    AbortWith, Cors, DirectResponse, Fault, FaultAbort, FaultDelay, HeaderEdits, HeaderOps,
    MAX_DIRECT_BODY, PathRewrite, Redirect, RedirectPort, RetryPolicy, Template, regex_replacement,
    retry_on,
};
use crate::matching::{StrMatcher, full_match_regex, substitution_regex};
use crate::snapshot::Rewrite;

/// Header edits, with a request `set` (else `add`) of `:authority`/`host` split out as a host
/// rewrite, as Istio does at route and destination level; `remove` of them is ignored.
pub fn header_edits(h: Option<&Headers>) -> (HeaderEdits, Option<String>) {
    let Some(h) = h else {
        return (HeaderEdits::default(), None);
    };
    let mut authority = None;
    let request = h.request.as_ref().map(|ops| {
        let mut ops = ops.clone();
        let is_authority = |k: &str| k == ":authority" || k.eq_ignore_ascii_case("host");
        let keys = |m: &std::collections::BTreeMap<String, String>| -> Vec<String> {
            m.keys().filter(|k| is_authority(k)).cloned().collect()
        };
        // `set` wins over `add`, as in Istio.
        for key in keys(&ops.add) {
            authority = ops.add.remove(&key);
        }
        for key in keys(&ops.set) {
            authority = ops.set.remove(&key);
        }
        ops.remove.retain(|k| !is_authority(k));
        header_ops(&ops)
    });
    let response = h.response.as_ref().map(header_ops);
    (
        HeaderEdits {
            request: request.unwrap_or_default(),
            response: response.unwrap_or_default(),
        },
        authority,
    )
}

fn header_ops(ops: &isthmus_api::istio::virtual_service::HeaderOperations) -> HeaderOps {
    let named = |m: &std::collections::BTreeMap<String, String>| -> Vec<(HeaderName, Template)> {
        m.iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                    Template::parse(v).ok()?,
                ))
            })
            .collect()
    };
    HeaderOps {
        remove: ops
            .remove
            .iter()
            .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
            .collect(),
        set: named(&ops.set),
        add: named(&ops.add),
    }
}

/// The path rewrite of `rewrite.uri` after `uri` matched: the matched prefix for a prefix match,
/// the whole path otherwise. `header_authority` is the route-level `:authority`/`host` edit,
/// which `rewrite.authority` overrides.
pub fn rewrite(
    r: Option<&HttpRewrite>,
    uri: Option<&StringMatch>,
    header_authority: Option<String>,
) -> Option<Rewrite> {
    let Some(r) = r else {
        return header_authority.map(|a| Rewrite {
            path: None,
            authority: Some(a),
        });
    };
    let path = if let Some(re) = &r.uri_regex_rewrite {
        let pattern = substitution_regex(re.pattern.as_deref()?).ok()?;
        Some(PathRewrite::Regex {
            pattern,
            replacement: regex_replacement(re.rewrite.as_deref().unwrap_or("")),
        })
    } else {
        r.uri.as_ref().map(|new| path_for(uri, new))
    };
    Some(Rewrite {
        path,
        authority: r.authority.clone().or(header_authority),
    })
}

fn path_for(uri: Option<&StringMatch>, new: &str) -> PathRewrite {
    match uri.and_then(|u| u.prefix.as_ref()) {
        Some(prefix) => PathRewrite::Prefix {
            matched: prefix.clone(),
            replacement: new.to_string(),
        },
        // Without a uri match Istio matches the prefix `/`, and Envoy replaces that.
        None if uri.is_none() => PathRewrite::Prefix {
            matched: "/".to_string(),
            replacement: new.to_string(),
        },
        None => PathRewrite::Full(new.to_string()),
    }
}

pub fn redirect(r: &HttpRedirect, uri: Option<&StringMatch>) -> Redirect {
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(p), _) => u16::try_from(p).map_or(RedirectPort::Keep, RedirectPort::Explicit),
        (None, Some("FROM_REQUEST_PORT")) => RedirectPort::RequestPort,
        (None, Some("FROM_PROTOCOL_DEFAULT")) => RedirectPort::ProtocolDefault,
        _ => RedirectPort::Keep,
    };
    let path = match (&r.uri, &r.prefix_rewrite) {
        (Some(u), _) => Some(PathRewrite::Full(u.clone())),
        (None, Some(p)) => Some(path_for(uri, p)),
        (None, None) => None,
    };
    Redirect {
        code: r
            .redirect_code
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(301),
        scheme: r.scheme.clone(),
        authority: r.authority.clone(),
        port,
        path,
        drop_request_port: false,
    }
}

/// The body of a direct response; `None` if it is invalid (validation reported it).
/// The content of a direct response's `body.filename`, at most [`MAX_DIRECT_BODY`] bytes.
/// Relative names are relative to `base` (the folder of the YAML file that names it).
pub fn read_body_file(base: &std::path::Path, name: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let path = base.join(name);
    let file =
        std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut body = Vec::new();
    file.take(MAX_DIRECT_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if body.len() > MAX_DIRECT_BODY {
        return Err(format!(
            "{} is larger than the limit of 1 MiB",
            path.display()
        ));
    }
    Ok(body)
}

pub fn direct_response(d: &HttpDirectResponse, base: &std::path::Path) -> Option<DirectResponse> {
    let status = u16::try_from(d.status?).ok()?;
    let (body, content_type) = match &d.body {
        None => (bytes::Bytes::new(), "text/plain"),
        Some(b) if b.filename.is_some() => (
            bytes::Bytes::from(read_body_file(base, b.filename.as_deref()?).ok()?),
            "text/plain",
        ),
        Some(b) => match (&b.string, &b.bytes) {
            (Some(s), _) => (bytes::Bytes::from(s.clone()), "text/plain"),
            (None, Some(b64)) => (
                bytes::Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .ok()?,
                ),
                "application/octet-stream",
            ),
            (None, None) => (bytes::Bytes::new(), "text/plain"),
        },
    };
    if body.len() > MAX_DIRECT_BODY {
        return None;
    }
    Some(DirectResponse {
        status,
        body,
        content_type,
    })
}

/// Parses `retryOn`; bare numbers are status codes (Istio then adds retriable-status-codes).
pub fn parse_retry_on(text: &str) -> Result<(u32, Vec<u16>), String> {
    let mut bits = 0;
    let mut codes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(code) = item.parse::<u16>() {
            if !(100..=599).contains(&code) {
                return Err(format!("status code {code} is not in 100..599"));
            }
            codes.push(code);
            bits |= retry_on::RETRIABLE_STATUS_CODES;
        } else if let Some((_, bit)) = retry_on::NAMES.iter().find(|(n, _)| *n == item) {
            bits |= bit;
        } else {
            return Err(format!(
                "unknown retry condition {item:?}; expected status codes or {}",
                retry_on::NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok((bits, codes))
}

pub fn retry(r: Option<&HttpRetry>) -> RetryPolicy {
    let Some(r) = r else {
        return RetryPolicy::default();
    };
    let default = RetryPolicy::default();
    let (on, status_codes) = match &r.retry_on {
        Some(text) => parse_retry_on(text).unwrap_or((default.on, Vec::new())),
        None => (default.on, Vec::new()),
    };
    RetryPolicy {
        attempts: u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0),
        per_try_timeout: r.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        on,
        status_codes,
        backoff: r
            .backoff
            .map_or(default.backoff, |d| d.0.max(Duration::from_millis(1))),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
        remote_localities: r.retry_remote_localities.unwrap_or(false),
    }
}

/// gRPC status names, in code order.
pub const GRPC_CODES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub fn grpc_code(name: &str) -> Option<u32> {
    GRPC_CODES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// Percentages: unset means none for faults (Istio), a `Percent` value otherwise.
fn percent(p: Option<&isthmus_api::istio::Percent>, legacy: Option<i32>) -> f64 {
    p.map(|p| p.value)
        .or(legacy.map(f64::from))
        .unwrap_or(0.0)
        .clamp(0.0, 100.0)
}

pub fn fault(f: Option<&HttpFaultInjection>) -> Option<Fault> {
    let f = f?;
    let delay = f.delay.as_ref().and_then(|d| {
        Some(FaultDelay {
            delay: d.fixed_delay?.0,
            percent: percent(d.percentage.as_ref(), d.percent),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let with = match (a.http_status, a.grpc_status.as_deref()) {
            (Some(code), _) => AbortWith::Http(u16::try_from(code).ok()?),
            (None, Some(name)) => AbortWith::Grpc(grpc_code(name)?),
            _ => return None,
        };
        Some(FaultAbort {
            with,
            percent: percent(a.percentage.as_ref(), None),
        })
    });
    (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
}

pub fn cors(c: Option<&CorsPolicy>) -> Option<Cors> {
    let c = c?;
    let join = |v: &[String]| (!v.is_empty()).then(|| v.join(","));
    let mut allow_origins: Vec<StrMatcher> =
        c.allow_origin.iter().map(|o| exact_or_any(o)).collect();
    allow_origins.extend(c.allow_origins.iter().filter_map(|m| {
        if let Some(e) = &m.exact {
            Some(exact_or_any(e))
        } else if let Some(p) = &m.prefix {
            Some(StrMatcher::Prefix(p.clone()))
        } else {
            m.regex
                .as_deref()
                .and_then(|r| full_match_regex(r).ok())
                .map(StrMatcher::Regex)
        }
    }));
    Some(Cors {
        allow_origins,
        allow_methods: join(&c.allow_methods),
        allow_headers: join(&c.allow_headers),
        expose_headers: join(&c.expose_headers),
        max_age: c.max_age.map(|d| d.0.as_secs().to_string()),
        allow_credentials: c.allow_credentials,
        forward_unmatched_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
        expose_on_preflight: false,
    })
}

fn exact_or_any(origin: &str) -> StrMatcher {
    if origin == "*" {
        StrMatcher::Present
    } else {
        StrMatcher::Exact(origin.to_string())
    }
}

/// The uri matcher of a match block, if any (rewrites depend on it).
pub fn uri_of(m: Option<&HttpMatchRequest>) -> Option<&StringMatch> {
    m.and_then(|m| m.uri.as_ref())
}
