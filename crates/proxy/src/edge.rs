//! Edge protections and client-address rules that apply before routing: Host validation,
//! headers with underscores, trusted proxy hops for `X-Forwarded-For`, and the listener
//! limits the accept loops enforce.

use std::net::IpAddr;

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
}

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
