//! The outbound side of a forward-proxy port: the service registry by host and port, and what
//! the outbound traffic policy does with a host it does not declare.
//!
//! A workload without a sidecar that sends its requests to a forward-proxy port gets what its
//! sidecar would have given it: VirtualService routes first (they are in the port's route
//! table), then the ServiceEntry that declares the host and port, then Istio's
//! `outboundTrafficPolicy`: `ALLOW_ANY` passes the request through to the host it names
//! (`PassthroughCluster`), `REGISTRY_ONLY` refuses it (`BlackHoleCluster`: 502 for HTTP, a closed
//! connection for tunnels).

use std::collections::HashMap;

use serde::Serialize;

use crate::instance::OutboundPolicy;
use crate::snapshot::Route;
use crate::tls::{TcpRoute, TlsRoute};

/// The Gateway annotation that makes servers forward proxies.
pub const FORWARD_PROXY_ANNOTATION: &str = "isthmus.io/forward-proxy";

/// Istio's cluster for traffic to hosts outside the registry under `ALLOW_ANY`.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster (and route `block_all`) for such traffic under `REGISTRY_ONLY`.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's route names for the two, which its telemetry keys on.
pub const ALLOW_ANY_ROUTE: &str = "allow_any";
pub const BLOCK_ALL_ROUTE: &str = "block_all";

/// Which servers of a Gateway the annotation marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardProxyPorts {
    /// `"true"`: every plaintext HTTP server of the Gateway.
    All,
    /// `"false"`: none.
    None,
    /// Port numbers or port names, comma-separated.
    Listed(Vec<String>),
}

impl ForwardProxyPorts {
    /// Parses the annotation's value; an empty list or an empty item is an error.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => return Ok(ForwardProxyPorts::All),
            "false" => return Ok(ForwardProxyPorts::None),
            _ => {}
        }
        let items: Vec<String> = value.split(',').map(|p| p.trim().to_string()).collect();
        if items.iter().any(String::is_empty) {
            return Err(format!(
                "{value:?} is not \"true\", \"false\" or a comma-separated list of server port numbers or names"
            ));
        }
        Ok(ForwardProxyPorts::Listed(items))
    }

    /// Whether the server with this port number and name is marked.
    pub fn covers(&self, number: u32, name: Option<&str>) -> bool {
        match self {
            ForwardProxyPorts::All => true,
            ForwardProxyPorts::None => false,
            ForwardProxyPorts::Listed(items) => items
                .iter()
                .any(|i| *i == number.to_string() || Some(i.as_str()) == name),
        }
    }
}

/// A registered (ServiceEntry) host and port, and the route a request for it takes when no
/// VirtualService route does.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundService {
    /// The ServiceEntry host: exact, or `*.suffix`.
    pub host: String,
    pub port: u16,
    pub cluster_name: String,
    #[serde(skip)]
    pub route: Route,
}

/// What a request that no virtual host takes does on a forward-proxy port.
#[derive(Debug, Clone, Serialize)]
pub struct Outbound {
    pub policy: OutboundPolicy,
    pub services: Vec<OutboundService>,
    /// `allow_any`: to `PassthroughCluster`, for unregistered hosts under `ALLOW_ANY`.
    #[serde(skip)]
    pub allow_any: Route,
    #[serde(skip)]
    by_port: HashMap<u16, PortTable>,
    /// Mesh VirtualServices' `tls` and `tcp` rules for CONNECT tunnels, one entry per host
    /// pattern, the most specific pattern first.
    #[serde(skip)]
    tunnels: Vec<TunnelRules>,
}

/// The `tls` and `tcp` rules of a mesh VirtualService for the CONNECT targets one of its hosts
/// covers, as a sidecar applies them to outbound connections.
#[derive(Debug, Clone, Default)]
pub struct TunnelRules {
    /// The host pattern (exact, `*.suffix` or `*`), lower case.
    pub host: String,
    /// In rule order; a rule's matches on different ports give one entry per port.
    pub tls: Vec<PortScoped<TlsRoute>>,
    pub tcp: Vec<PortScoped<TcpRoute>>,
}

/// A rule that applies on one port of the CONNECT target, or on any (`None`).
#[derive(Debug, Clone)]
pub struct PortScoped<T> {
    pub port: Option<u16>,
    pub route: T,
}

impl<T> PortScoped<T> {
    fn on(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }
}

/// How specific a host pattern is: exact names first, then longer wildcards.
fn specificity(pattern: &str) -> usize {
    if pattern.starts_with('*') {
        pattern.len()
    } else {
        usize::MAX
    }
}

/// The registered hosts of one port: exact names, then `*.suffix` longest first.
#[derive(Debug, Clone, Default)]
struct PortTable {
    exact: HashMap<String, usize>,
    /// `(".suffix", index)`, longest first.
    suffixes: Vec<(String, usize)>,
}

/// Where a request for a host and port goes.
#[derive(Debug, Clone, Copy)]
pub enum OutboundDecision<'a> {
    /// A ServiceEntry declares the host and port.
    Registered(&'a OutboundService),
    /// `ALLOW_ANY`: to the host itself.
    Passthrough(&'a Route),
    /// `REGISTRY_ONLY`: refused.
    Blocked,
}

impl Outbound {
    pub fn new(policy: OutboundPolicy, services: Vec<OutboundService>, allow_any: Route) -> Self {
        let mut by_port: HashMap<u16, PortTable> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let table = by_port.entry(s.port).or_default();
            match s.host.strip_prefix('*') {
                Some(suffix) => table.suffixes.push((suffix.to_string(), i)),
                None => {
                    table.exact.entry(s.host.clone()).or_insert(i);
                }
            }
        }
        for table in by_port.values_mut() {
            table
                .suffixes
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        Outbound {
            policy,
            services,
            allow_any,
            by_port,
            tunnels: Vec::new(),
        }
    }

    /// With the mesh VirtualServices' rules for tunnels (in creation order); they are kept
    /// most specific host first, creation order among equals.
    pub fn with_tunnels(mut self, mut tunnels: Vec<TunnelRules>) -> Self {
        tunnels.retain(|t| !t.tls.is_empty() || !t.tcp.is_empty());
        tunnels.sort_by_key(|t| std::cmp::Reverse(specificity(&t.host)));
        self.tunnels = tunnels;
        self
    }

    /// The rule sets whose host covers the CONNECT target `host` (lower case, no port).
    fn tunnel_rules<'a, 'h>(
        &'a self,
        host: &'h str,
    ) -> impl Iterator<Item = &'a TunnelRules> + use<'a, 'h> {
        self.tunnels
            .iter()
            .filter(move |t| crate::hosts::covers(&t.host, host))
    }

    /// Whether a `tls` rule could take a tunnel to `host` and `port`: then the tunnel's
    /// ClientHello decides.
    pub fn tunnel_has_tls(&self, host: &str, port: u16) -> bool {
        self.tunnel_rules(host)
            .any(|t| t.tls.iter().any(|r| r.on(port)))
    }

    /// The first `tls` rule for a tunnel to `host` and `port` whose `sniHosts` cover `sni`.
    pub fn tunnel_tls(&self, host: &str, port: u16, sni: &str) -> Option<&TlsRoute> {
        self.tunnel_rules(host)
            .flat_map(|t| t.tls.iter())
            .find(|r| r.on(port) && r.route.matches(sni))
            .map(|r| &r.route)
    }

    /// The first `tcp` rule for a tunnel to `host` and `port`.
    pub fn tunnel_tcp(&self, host: &str, port: u16) -> Option<&TcpRoute> {
        self.tunnel_rules(host)
            .flat_map(|t| t.tcp.iter())
            .find(|r| r.on(port))
            .map(|r| &r.route)
    }

    /// The ServiceEntry host and port that covers `host` (lower case, no port) on `port`:
    /// the exact name, else the longest wildcard, as a sidecar's virtual hosts of that port.
    pub fn lookup(&self, host: &str, port: u16) -> Option<&OutboundService> {
        let table = self.by_port.get(&port)?;
        let i = match table.exact.get(host) {
            Some(i) => *i,
            None => {
                table
                    .suffixes
                    .iter()
                    .find(|(suffix, _)| {
                        host.len() > suffix.len() && host.ends_with(suffix.as_str())
                    })?
                    .1
            }
        };
        self.services.get(i)
    }

    /// The registry first, then the policy.
    pub fn decide(&self, host: &str, port: u16) -> OutboundDecision<'_> {
        match self.lookup(host, port) {
            Some(s) => OutboundDecision::Registered(s),
            None => match self.policy {
                OutboundPolicy::AllowAny => OutboundDecision::Passthrough(&self.allow_any),
                OutboundPolicy::RegistryOnly => OutboundDecision::Blocked,
            },
        }
    }
}

/// The port a request is for: the one in its authority, else the scheme's default.
pub fn destination_port(authority: &str, scheme: &str) -> u16 {
    let explicit = if authority.starts_with('[') {
        authority.rsplit_once("]:").map(|(_, p)| p)
    } else {
        authority.rsplit_once(':').map(|(_, p)| p)
    };
    match explicit.and_then(|p| p.parse::<u16>().ok()) {
        Some(p) => p,
        None if scheme.eq_ignore_ascii_case("https") => 443,
        None => 80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ActionKind, Forward, RouteAction};
    use std::sync::Arc;

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            virtual_service: String::new(),
            source: Arc::default(),
            matcher: Default::default(),
            action: Arc::new(RouteAction {
                kind: ActionKind::Forward(Forward::new(vec![])),
                headers: Default::default(),
                fault: None,
                cors: None,
            }),
        }
    }

    fn service(host: &str, port: u16) -> OutboundService {
        OutboundService {
            host: host.into(),
            port,
            cluster_name: format!("outbound|{port}||{host}"),
            route: route("default"),
        }
    }

    fn table(policy: OutboundPolicy) -> Outbound {
        Outbound::new(
            policy,
            vec![
                service("*.wikipedia.org", 443),
                service("*.en.wikipedia.org", 443),
                service("api.example.com", 80),
                service("api.example.com", 443),
            ],
            route(ALLOW_ANY_ROUTE),
        )
    }

    #[test]
    fn registry_by_host_and_port() {
        let t = table(OutboundPolicy::RegistryOnly);
        let cases = [
            ("api.example.com", 80, Some("outbound|80||api.example.com")),
            (
                "api.example.com",
                443,
                Some("outbound|443||api.example.com"),
            ),
            ("api.example.com", 8080, None),
            (
                "de.wikipedia.org",
                443,
                Some("outbound|443||*.wikipedia.org"),
            ),
            (
                "x.en.wikipedia.org",
                443,
                Some("outbound|443||*.en.wikipedia.org"),
            ),
            ("wikipedia.org", 443, None),
            ("de.wikipedia.org", 80, None),
            ("other.org", 443, None),
        ];
        for (host, port, want) in cases {
            assert_eq!(
                t.lookup(host, port).map(|s| s.cluster_name.as_str()),
                want,
                "{host}:{port}"
            );
        }
    }

    #[test]
    fn policy_decides_unregistered_hosts() {
        let allow = table(OutboundPolicy::AllowAny);
        assert!(matches!(
            allow.decide("other.org", 80),
            OutboundDecision::Passthrough(r) if r.name == ALLOW_ANY_ROUTE
        ));
        assert!(matches!(
            allow.decide("api.example.com", 80),
            OutboundDecision::Registered(_)
        ));
        let only = table(OutboundPolicy::RegistryOnly);
        assert!(matches!(
            only.decide("other.org", 80),
            OutboundDecision::Blocked
        ));
    }

    #[test]
    fn tunnel_rules_by_host_port_and_sni() {
        let forward = Forward::new(vec![]);
        let tls = |vs: &str, port, sni: &[&str]| PortScoped {
            port,
            route: TlsRoute {
                virtual_service: vs.into(),
                source: Arc::default(),
                sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
                forward: forward.clone(),
            },
        };
        let tcp = |vs: &str, port| PortScoped {
            port,
            route: TcpRoute {
                virtual_service: vs.into(),
                source: Arc::default(),
                forward: forward.clone(),
            },
        };
        let t = table(OutboundPolicy::AllowAny).with_tunnels(vec![
            TunnelRules {
                host: "*.example.com".into(),
                tls: vec![tls("wild", None, &["*.example.com"])],
                tcp: vec![tcp("wild", None)],
            },
            TunnelRules {
                host: "api.example.com".into(),
                tls: vec![tls("exact", Some(443), &["api.example.com"])],
                tcp: vec![tcp("exact", Some(9000))],
            },
            TunnelRules {
                host: "empty.example.com".into(),
                tls: vec![],
                tcp: vec![],
            },
        ]);
        let vs = |r: Option<&TlsRoute>| r.map(|r| r.virtual_service.clone());
        // The exact host first, on its port; the wildcard for the rest.
        assert_eq!(
            vs(t.tunnel_tls("api.example.com", 443, "api.example.com")),
            Some("exact".into())
        );
        assert_eq!(
            vs(t.tunnel_tls("api.example.com", 8443, "api.example.com")),
            Some("wild".into())
        );
        assert_eq!(vs(t.tunnel_tls("api.example.com", 443, "other.org")), None);
        assert!(t.tunnel_has_tls("x.example.com", 1));
        assert!(!t.tunnel_has_tls("example.com", 443));
        assert_eq!(
            t.tunnel_tcp("api.example.com", 9000)
                .map(|r| r.virtual_service.as_str()),
            Some("exact")
        );
        assert_eq!(
            t.tunnel_tcp("api.example.com", 80)
                .map(|r| r.virtual_service.as_str()),
            Some("wild")
        );
        assert!(t.tunnel_tcp("other.org", 80).is_none());
    }

    #[test]
    fn annotation_values() {
        assert_eq!(ForwardProxyPorts::parse("true"), Ok(ForwardProxyPorts::All));
        assert_eq!(
            ForwardProxyPorts::parse(" False "),
            Ok(ForwardProxyPorts::None)
        );
        let listed = ForwardProxyPorts::parse("3128, http-proxy").unwrap();
        assert!(listed.covers(3128, None));
        assert!(listed.covers(8080, Some("http-proxy")));
        assert!(!listed.covers(80, Some("http")));
        assert!(ForwardProxyPorts::parse("3128,").is_err());
        assert!(ForwardProxyPorts::parse("").is_err());
    }

    #[test]
    fn destination_ports() {
        let cases = [
            ("a.com", "http", 80),
            ("a.com", "https", 443),
            ("a.com:8080", "http", 8080),
            ("[::1]:9000", "http", 9000),
            ("[::1]", "https", 443),
            ("a.com:x", "http", 80),
        ];
        for (authority, scheme, want) in cases {
            assert_eq!(destination_port(authority, scheme), want, "{authority}");
        }
    }
}
