//! Host names as Istio treats them: completion of short names, wildcard coverage and the
//! intersection of Gateway and VirtualService hosts.

use std::borrow::Cow;

/// Completes a short name with the namespace and cluster suffix, as Istio does:
/// `reviews` in `default` is `reviews.default.svc.cluster.local`. Names with a dot, `*`
/// and wildcards are left alone.
pub fn complete(host: &str, namespace: &str, suffix: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host.contains('*') || host.is_empty() {
        host
    } else {
        format!("{host}.{namespace}.svc.{suffix}")
    }
}

/// Whether `pattern` (exact, `*.suffix` or `*`) covers `host`, which may itself be a
/// wildcard: `*.foo.com` covers `a.foo.com`, `x.y.foo.com` and `*.a.foo.com`, not `foo.com`.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

/// The virtual host that a Gateway server host and a VirtualService host give together, if
/// they intersect: the more specific of the two.
pub fn intersect(server: &str, vs: &str) -> Option<String> {
    if covers(server, vs) {
        Some(vs.to_string())
    } else if covers(vs, server) {
        Some(server.to_string())
    } else {
        None
    }
}

/// A Gateway server host split into the namespaces it admits and the DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHost {
    /// `None` admits every namespace.
    pub namespace: Option<String>,
    pub host: String,
}

/// Parses `[namespace/]host`; `.` means the Gateway's own namespace, `*` any namespace.
pub fn parse_server_host(text: &str, gateway_ns: &str) -> ServerHost {
    let (ns, host) = match text.split_once('/') {
        Some((ns, host)) => (ns, host),
        None => ("*", text),
    };
    let namespace = match ns {
        "*" => None,
        "." => Some(gateway_ns.to_string()),
        other => Some(other.to_string()),
    };
    ServerHost {
        namespace,
        host: host.to_ascii_lowercase(),
    }
}

/// The host a request is routed by: its Host (or `:authority`) without the port, since
/// gateways ignore the port when matching hosts, without a trailing dot, in lower case. The
/// data plane and `isthmus explain` both use it.
pub fn request_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Checks a DNS name with an optional leading `*.` label (or exactly `*`).
pub fn check_dns_name(host: &str) -> Result<(), String> {
    if host == "*" {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "invalid host {host:?}: empty or longer than 253 characters"
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "invalid host {host:?}: label {label:?} is not a DNS label (a wildcard is only allowed as the whole first label, as in *.example.com)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion() {
        let cases = [
            ("reviews", "default", "reviews.default.svc.cluster.local"),
            ("Reviews.prod", "default", "reviews.prod"),
            ("*.example.com", "default", "*.example.com"),
            ("*", "default", "*"),
        ];
        for (host, ns, want) in cases {
            assert_eq!(complete(host, ns, "cluster.local"), want);
        }
    }

    #[test]
    fn coverage_and_intersection() {
        let cases = [
            ("*", "a.com", Some("a.com")),
            ("a.com", "*", Some("a.com")),
            ("*.foo.com", "a.foo.com", Some("a.foo.com")),
            ("*.foo.com", "x.y.foo.com", Some("x.y.foo.com")),
            ("*.foo.com", "foo.com", None),
            ("a.foo.com", "*.foo.com", Some("a.foo.com")),
            ("*.foo.com", "*.a.foo.com", Some("*.a.foo.com")),
            ("*", "*.foo.com", Some("*.foo.com")),
            ("a.com", "b.com", None),
            ("*.a.com", "*.b.com", None),
        ];
        for (server, vs, want) in cases {
            assert_eq!(intersect(server, vs).as_deref(), want, "{server} ∩ {vs}");
        }
    }

    #[test]
    fn request_hosts_lose_their_port_and_case() {
        let cases = [
            ("a.example.com", "a.example.com"),
            ("A.Example.com:8080", "a.example.com"),
            ("[::1]:80", "[::1]"),
            ("example.com.", "example.com"),
            ("", ""),
        ];
        for (authority, want) in cases {
            assert_eq!(request_host(authority), want);
        }
    }

    #[test]
    fn server_hosts() {
        let h = parse_server_host("prod/*.Example.com", "gw");
        assert_eq!(h.namespace.as_deref(), Some("prod"));
        assert_eq!(h.host, "*.example.com");
        assert_eq!(
            parse_server_host("./a.com", "gw").namespace.as_deref(),
            Some("gw")
        );
        assert_eq!(parse_server_host("*/a.com", "gw").namespace, None);
        assert_eq!(parse_server_host("a.com", "gw").namespace, None);
    }

    #[test]
    fn dns_names() {
        for ok in ["*", "a.com", "*.a.com", "a-b.c0m", "localhost"] {
            assert!(check_dns_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a..com", "*a.com", "a.*.com", "-a.com", "a_b.com", "a.com*",
        ] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }
}
