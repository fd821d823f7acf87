//! Edge protections and client-address rules that apply before routing: Host validation,
//! headers with underscores, trusted proxy hops for `X-Forwarded-For`, and the listener
//! limits the accept loops enforce.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, header};

use crate::local_reply::LocalReply;

/// What Envoy's `headers_with_underscores_action` does with a header whose name has `_`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Underscores {
    /// Envoy's default: forwarded as is.
    #[default]
    Allow,
    /// The header is dropped.
    Drop,
    /// The request is refused with 400 (Istio's EDGE profile).
    Reject,
}

impl Underscores {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().replace('-', "_").as_str() {
            "allow" => Underscores::Allow,
            "drop" | "drop_header" => Underscores::Drop,
            "reject" | "reject_request" => Underscores::Reject,
            _ => return None,
        })
    }
}

/// Settings of the edge, from the command line.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Proxies in front of the gateway whose `X-Forwarded-For` entries are trusted (Istio's
    /// `gatewayTopology.numTrustedProxies`).
    pub num_trusted_proxies: usize,
    /// Every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Connections per listener at most; more are closed at once.
    pub max_connections: usize,
    pub underscores: Underscores,
    /// Streams a client may open at once on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// The HTTP/2 flow-control windows the gateway grants a client: how much it may send on
    /// one stream, and on the whole connection, before the gateway has passed it on.
    pub h2_initial_stream_window: u32,
    pub h2_initial_connection_window: u32,
    /// A request head must be complete this long after its first byte (the first request of
    /// a connection: after the connection opened). `None`: no limit.
    pub request_headers_timeout: Option<Duration>,
    /// A connection without a request in flight for this long is closed. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// An HTTP/1 connection quiet this long between requests is parked: hyper's connection
    /// state and buffers (about 20 kB) are freed until its next request. `None`: never.
    pub park_after: Option<Duration>,
    /// Request bodies up to this size are kept so that retries and mirrors can send them
    /// again; larger ones stream once (no retry, no mirror copy), as Envoy gives up
    /// buffering beyond its buffer limit.
    pub max_request_buffer: usize,
    /// Request bodies larger than this are refused with 413: at once when their
    /// `Content-Length` says so, when they pass it otherwise. `u64::MAX`: no limit (Envoy
    /// and Istio set none).
    pub max_request_body: u64,
}

impl EdgeSettings {
    pub fn timeouts(&self) -> crate::activity::Timeouts {
        crate::activity::Timeouts {
            request_headers: self.request_headers_timeout,
            idle: self.idle_timeout,
            park: self.park_after,
        }
    }
}

/// Envoy's edge best practice for HTTP/2 windows: 64 KiB per stream (Envoy's own default is
/// 256 MiB, which lets one client make the gateway buffer that much per stream when the
/// upstream is slow), 1 MiB per connection.
pub const DEFAULT_H2_STREAM_WINDOW: u32 = 64 * 1024;
pub const DEFAULT_H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Envoy's `request_headers_timeout` is off by default; 10 s after the first byte is ample
/// for any real client and bounds what a slowloris can hold.
pub const DEFAULT_REQUEST_HEADERS_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's default `common_http_protocol_options.idle_timeout` (Istio keeps it).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Long enough that a client sending request after request keeps its connection as it is
/// (parking and waking again cost about 11 µs of CPU, measured: `bench/README.md`), short
/// enough that thousands of idle keep-alive connections hold kilobytes each, not tens.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(1);
/// Envoy's default `per_connection_buffer_limit_bytes`, which bounds what its router buffers
/// for retries and shadows (Istio keeps it).
pub const DEFAULT_MAX_REQUEST_BUFFER: usize = 1024 * 1024;

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            num_trusted_proxies: 0,
            proxy_protocol: false,
            max_connections: 100_000,
            underscores: Underscores::Allow,
            // Envoy's edge best practice (Istio's EDGE profile): a client cannot make the
            // gateway hold thousands of streams on one connection.
            h2_max_concurrent_streams: 100,
            h2_initial_stream_window: DEFAULT_H2_STREAM_WINDOW,
            h2_initial_connection_window: DEFAULT_H2_CONNECTION_WINDOW,
            request_headers_timeout: Some(DEFAULT_REQUEST_HEADERS_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            park_after: Some(DEFAULT_PARK_AFTER),
            max_request_buffer: DEFAULT_MAX_REQUEST_BUFFER,
            max_request_body: u64::MAX,
        }
    }
}

/// Refuses requests no route should see: several or invalid `Host` values, and header names
/// with underscores under `Reject`.
pub fn check_request(parts: &http::request::Parts, edge: &EdgeSettings) -> Result<(), LocalReply> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(LocalReply::BadRequest);
    }
    if let Some(h) = first
        && !valid_authority(h.as_bytes())
    {
        return Err(LocalReply::BadRequest);
    }
    if edge.underscores == Underscores::Reject
        && parts.headers.keys().any(|k| k.as_str().contains('_'))
    {
        return Err(LocalReply::BadRequest);
    }
    Ok(())
}

/// Drops header names with underscores under `Drop`.
pub fn apply_header_policy(headers: &mut HeaderMap, edge: &EdgeSettings) {
    if edge.underscores != Underscores::Drop {
        return;
    }
    let names: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// An authority as RFC 3986 allows it (host and optional port, IPv6 in brackets), non-empty.
fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%@".contains(b))
        && http::uri::Authority::try_from(v).is_ok()
}

/// The trusted client address: with `n` trusted proxies in front, the `n`th address from the
/// right of the incoming `X-Forwarded-For` (Envoy's `xff_num_trusted_hops`); the peer when
/// there are none or the header is too short.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, n: usize) -> IpAddr {
    if n == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(crate::headers::X_FORWARDED_FOR.clone())
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(n)
        .and_then(|i| entries.get(i))
        .and_then(|e| e.parse().ok())
        .unwrap_or(peer)
}

/// Whether Envoy counts an address as internal (RFC 1918, loopback, link-local, ULA): only
/// external clients get `x-envoy-external-address`.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments().first().is_some_and(|s| s & 0xfe00 == 0xfc00))
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_private() || v4.is_loopback() || v4.is_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_hops_pick_the_client() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "192.0.2.10, 203.0.113.1".parse().unwrap(),
        );
        // Envoy's documented example: one trusted hop.
        assert_eq!(
            client_address(&h, peer, 1),
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_address(&h, peer, 2),
            "192.0.2.10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_address(&h, peer, 3), peer);
        assert_eq!(client_address(&h, peer, 0), peer);
        h.insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_address(&h, peer, 1), peer);
    }

    #[test]
    fn authorities() {
        for ok in ["example.com", "example.com:8080", "[::1]:80", "127.0.0.1"] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a b", "exa\"mple", "host/path", "a\\b"] {
            assert!(!valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in ["10.1.2.3", "192.168.1.1", "127.0.0.1", "::1", "fd00::1"] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:db8::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
