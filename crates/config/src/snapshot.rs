//! The compiled configuration: everything the data plane needs, precomputed, immutable.
//!
//! A snapshot is swapped in whole. Requests in flight keep the snapshot they started with.
//! Indexes (`cluster`) point into the snapshot's own vectors, so the hot path never hashes a
//! cluster name.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::actions::{
    Cors, DirectResponse, Fault, HeaderEdits, Mirror, PathRewrite, Redirect, RetryPolicy,
};
use crate::matching::RequestMatch;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Listeners by the Gateway port number users see.
    pub listeners: BTreeMap<u16, Listener>,
    pub clusters: Vec<Cluster>,
    /// How request paths are normalised before matching.
    #[serde(skip_serializing_if = "crate::path::PathNormalization::is_base")]
    pub path_normalization: crate::path::PathNormalization,
    /// What the Gateway API objects' `status` should say about this configuration; written
    /// back by the Kubernetes source, not part of what the data plane serves.
    #[serde(skip)]
    pub gateway_status: crate::gateway_status::GatewayApiStatus,
    /// `(namespace, name)` of the Ingresses this instance serves, whose load-balancer status
    /// the Kubernetes source writes.
    #[serde(skip)]
    pub served_ingresses: Vec<(String, String)>,
}

/// The application protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ListenerProtocol {
    /// Plaintext HTTP/1.1 and HTTP/2 with prior knowledge on one port (HTTP, HTTP2, GRPC).
    Http,
    /// TLS (HTTPS and TLS servers): filter chains chosen by SNI.
    Tls,
    /// Opaque TCP (TCP and MONGO servers).
    Tcp,
}

impl ListenerProtocol {
    /// As serialized: `HTTP`, `TLS`, `TCP`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "HTTP",
            ListenerProtocol::Tls => "TLS",
            ListenerProtocol::Tcp => "TCP",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// The Gateway servers that make up this listener (serialized as `namespace/gateway
    /// (server name)`).
    pub servers: Vec<ServerInfo>,
    /// The route table of a plaintext HTTP port.
    pub virtual_hosts: VirtualHosts,
    /// The filter chains of a TLS port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<crate::tls::FilterChain>,
    /// The routes of a TCP port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<crate::tls::TcpRoute>,
    /// A forward-proxy port (Gateway annotation `isthmus.io/forward-proxy`): what a request
    /// that no virtual host takes does, by the service registry and the outbound policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<crate::egress::Outbound>,
}

impl Listener {
    /// The HTTP route table for a connection: the port's own (plaintext), or that of the TLS
    /// chain the connection was terminated by.
    pub fn http_routes(&self, chain: Option<&str>) -> Option<&VirtualHosts> {
        match chain {
            None => Some(&self.virtual_hosts),
            Some(key) => self
                .chains
                .iter()
                .find(|c| c.key == key)
                .and_then(|c| match &c.routes {
                    crate::tls::ChainRoutes::Http(vh) => Some(vh),
                    _ => None,
                }),
        }
    }
}

impl Listener {
    /// The route of a TCP port: the first `tcp` rule takes every connection (Isthmus does not
    /// match destination subnets), for the data plane and `isthmus explain` alike.
    pub fn tcp_route(&self) -> Option<&crate::tls::TcpRoute> {
        crate::tls::first_tcp_route(&self.tcp)
    }
}

/// One Gateway server of a listener, with where it is written.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `namespace/gateway (port name)`, as `/config_dump` shows it.
    pub label: String,
    /// `namespace/gateway/index`: the key of its filter chain on a TLS port.
    pub key: String,
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Its index in `spec.servers`.
    pub index: usize,
    /// The upper-case protocol it declares.
    pub protocol: String,
    pub hosts: Vec<crate::hosts::ServerHost>,
    pub https_redirect: bool,
    pub source: Source,
}

impl ServerInfo {
    /// The hosts as written: `host` or `namespace/host`.
    pub fn host_texts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| match &h.namespace {
                Some(ns) => format!("{ns}/{}", h.host),
                None => h.host.clone(),
            })
            .collect()
    }
}

impl Serialize for ServerInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.label)
    }
}

/// Where a part of the snapshot is written, for `isthmus explain` and the admin `/routes`.
/// The data plane never reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `Kind namespace/name` of the resource; shared by every route of a VirtualService.
    pub resource: Arc<str>,
    /// The field path, such as `spec.http[1].match[0]`.
    pub field: String,
    pub file: Arc<str>,
    pub line: usize,
}

impl Source {
    pub fn of(r: &isthmus_api::Resource, field: &str) -> Self {
        Source::keyed(r.key().to_string().into(), r, field)
    }

    /// [`Source::of`] with the resource's key already rendered: a VirtualService with
    /// thousands of routes renders it once.
    pub fn keyed(resource: Arc<str>, r: &isthmus_api::Resource, field: &str) -> Self {
        let origin = r.origin();
        Source {
            resource,
            field: field.to_string(),
            file: origin.file.clone(),
            line: origin.line_of(field),
        }
    }
}

/// `file:line`.
impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// How a request host found its virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    Exact,
    /// The longest `*.suffix` that covers the host.
    Wildcard,
    /// The `*` virtual host, taken when nothing more specific matches.
    Any,
}

/// The route table of one listener, with Envoy's lookup order: exact domain, then the longest
/// `*.suffix` wildcard, then `*`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VirtualHosts {
    pub hosts: Vec<VirtualHost>,
    #[serde(skip)]
    exact: HashMap<String, usize>,
    /// `(".example.com", index)`, longest suffix first.
    #[serde(skip)]
    suffixes: Vec<(String, usize)>,
    #[serde(skip)]
    any: Option<usize>,
}

impl VirtualHosts {
    pub fn new(hosts: Vec<VirtualHost>) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut any = None;
        for (i, vh) in hosts.iter().enumerate() {
            if vh.domain == "*" {
                any = Some(i);
            } else if let Some(suffix) = vh.domain.strip_prefix('*') {
                suffixes.push((suffix.to_string(), i));
            } else {
                exact.insert(vh.domain.clone(), i);
            }
        }
        suffixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        VirtualHosts {
            hosts,
            exact,
            suffixes,
            any,
        }
    }

    /// Finds the virtual host for a request host, which must already be lower-case and
    /// without its port (see [`crate::hosts::request_host`]).
    pub fn find(&self, host: &str) -> Option<&VirtualHost> {
        self.lookup(host).map(|(vh, _)| vh)
    }

    /// [`VirtualHosts::find`], saying how the host was matched.
    pub fn lookup(&self, host: &str) -> Option<(&VirtualHost, HostMatch)> {
        let (idx, how) = match self.exact.get(host) {
            Some(i) => (*i, HostMatch::Exact),
            None => self
                .suffixes
                .iter()
                .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
                .map(|(_, i)| (*i, HostMatch::Wildcard))
                .or(self.any.map(|i| (i, HostMatch::Any)))?,
        };
        self.hosts.get(idx).map(|vh| (vh, how))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    pub domain: String,
    /// `httpsRedirect`: plaintext requests get a 301 to `https://`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// Evaluated in order; the first match wins. Shared: the next build reuses a host's routes
    /// while the VirtualServices they come from are unchanged.
    pub routes: Arc<Vec<Route>>,
    /// Match blocks of the bound VirtualServices that are not in this table (another port,
    /// another gateway, nothing to do), for `isthmus explain`.
    #[serde(skip)]
    pub excluded: Arc<Vec<Excluded>>,
}

impl VirtualHost {
    /// The first route whose match the request satisfies. `isthmus explain` walks `routes` in
    /// the same order with [`crate::matching::RequestMatch::why_not`], which fails on the same
    /// condition as `matches` (both are `first_failure`).
    pub fn find(&self, req: &crate::matching::RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

/// A match block left out of a route table, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    /// `namespace/name` of the VirtualService bound to the host.
    pub virtual_service: String,
    pub name: String,
    pub source: Arc<Source>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// The route's name for logs and metrics (`route.match` when both are named), or empty.
    pub name: String,
    /// `namespace/name` of the VirtualService the route comes from.
    pub virtual_service: String,
    /// The match block (or the rule, without `match`) it was compiled from.
    #[serde(skip)]
    pub source: Arc<Source>,
    pub matcher: RequestMatch,
    pub action: Arc<RouteAction>,
}

/// What a route does. Built per match block, since a prefix rewrite depends on which prefix
/// matched.
#[derive(Debug, Clone, Serialize)]
pub struct RouteAction {
    pub kind: ActionKind,
    /// Route-level header edits (applied after the destination's, so they win).
    #[serde(skip_serializing_if = "HeaderEdits::is_empty")]
    pub headers: HeaderEdits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Forward(Forward),
    Redirect(Redirect),
    DirectResponse(DirectResponse),
}

/// Forward to one of several weighted destinations.
#[derive(Debug, Clone, Serialize)]
pub struct Forward {
    pub destinations: Vec<WeightedDestination>,
    /// Running sum of weights, for a binary search with one random number.
    #[serde(skip)]
    cumulative: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Whole-request timeout, retries included. `None`: no timeout (Istio's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// The status for a pick of a destination without a cluster. `None` is Envoy's 503 (`NC`)
    /// of Istio routes; Gateway API routes answer 500 for an invalid backend's share, as the
    /// specification requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_backend_status: Option<u16>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rewrite {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

impl Forward {
    pub fn new(destinations: Vec<WeightedDestination>) -> Self {
        Self::with(destinations, None, None, RetryPolicy::default(), Vec::new())
    }

    pub fn with(
        destinations: Vec<WeightedDestination>,
        rewrite: Option<Rewrite>,
        timeout_ms: Option<u64>,
        retry: RetryPolicy,
        mirrors: Vec<Mirror>,
    ) -> Self {
        let mut total = 0u32;
        let cumulative = destinations
            .iter()
            .map(|d| {
                total = total.saturating_add(d.weight);
                total
            })
            .collect();
        Forward {
            destinations,
            cumulative,
            rewrite,
            timeout_ms,
            retry,
            mirrors,
            invalid_backend_status: None,
        }
    }

    pub fn total_weight(&self) -> u32 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Picks the destination that owns `point` in `[0, total_weight)`.
    pub fn pick(&self, point: u32) -> Option<&WeightedDestination> {
        if self.destinations.len() == 1 {
            return self.destinations.first();
        }
        let i = self.cumulative.partition_point(|&c| c <= point);
        self.destinations.get(i)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WeightedDestination {
    /// Istio's cluster name, `outbound|port|subset|host`.
    pub cluster_name: String,
    /// Index into [`Snapshot::clusters`]; `None` when the destination names no known service
    /// or subset (Envoy answers 503 `NC`).
    pub cluster: Option<usize>,
    pub weight: u32,
    /// Header edits applied when this destination is picked.
    #[serde(skip_serializing_if = "HeaderEdits::is_empty")]
    pub headers: HeaderEdits,
    /// A `request.set` of `:authority`/`host` at destination level rewrites the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// A path rewrite of this destination alone (a Gateway API backend's URLRewrite); the
    /// route's own path rewrite, if any, wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<crate::actions::PathRewrite>,
}

/// An upstream service port (optionally one subset of it) and how to find its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// The service's host name, e.g. `httpbin.example.com`.
    pub service: String,
    pub service_namespace: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub endpoints: EndpointSource,
    /// The HTTP version spoken to the endpoints.
    #[serde(skip_serializing_if = "UpstreamProtocol::is_http1")]
    pub protocol: UpstreamProtocol,
    /// TLS origination to the endpoints (DestinationRule `trafficPolicy.tls`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Load balancing, circuit breakers, connection settings, outlier detection and health
    /// checks.
    pub policy: crate::policy::ClusterPolicy,
}

/// TLS the gateway opens to a cluster's endpoints: DestinationRule `tls` with mode SIMPLE or
/// MUTUAL, merged over `trafficPolicy`, `portLevelSettings` and the subset's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// Roots that verify the endpoint's certificate; `None` uses the operating system's trust
    /// store, as Istio does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<crate::tls::PemSource>,
    /// The client certificate for MUTUAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<crate::tls::CertificateSource>,
    /// The SNI to send; `None` sends the request's Host without its port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Names the endpoint's certificate may carry; empty verifies against the SNI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
    /// Why no connection can be made (a `credentialName` Secret that is missing or
    /// incomplete): requests answer 503, as Envoy's cluster without its secret does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The HTTP version a cluster's endpoints are spoken to, as Istio derives it from the service
/// port's protocol and the DestinationRule's `connectionPool.http`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1: HTTP ports, as Istio's mesh default `h2UpgradePolicy` is DO_NOT_UPGRADE.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c): HTTP2, GRPC and GRPC-WEB ports, or
    /// `h2UpgradePolicy: UPGRADE`.
    Http2,
    /// The protocol the client spoke (`useClientProtocol: true`).
    Client,
}

impl UpstreamProtocol {
    pub fn is_http1(&self) -> bool {
        *self == UpstreamProtocol::Http1
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    /// Addresses known at compile time (ServiceEntry `resolution: STATIC`).
    Static(Vec<Endpoint>),
    /// Names resolved and refreshed at run time (`resolution: DNS` and `DNS_ROUND_ROBIN`).
    Dns(Vec<DnsTarget>),
    /// The original destination (`resolution: NONE` and `DYNAMIC_DNS`, and Istio's
    /// `PassthroughCluster`): each request's own host (Host, SNI or CONNECT target) is
    /// resolved when it is sent, on this port, or on the request's port when `None`.
    OriginalDestination { port: Option<u16> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    pub weight: u32,
    /// 0 is the most preferred; higher levels take traffic only as lower ones fail.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsTarget {
    pub hostname: String,
    pub port: u16,
    /// `DNS_ROUND_ROBIN` (Envoy's LOGICAL_DNS): only the first address of an answer is used.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub first_only: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    pub weight: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(domain: &str) -> VirtualHost {
        VirtualHost {
            domain: domain.into(),
            require_tls: false,
            routes: Arc::default(),
            excluded: Arc::default(),
        }
    }

    #[test]
    fn virtual_host_precedence() {
        let t = VirtualHosts::new(vec![
            vh("*"),
            vh("*.example.com"),
            vh("*.a.example.com"),
            vh("a.example.com"),
        ]);
        let cases = [
            ("a.example.com", "a.example.com"),
            ("x.a.example.com", "*.a.example.com"),
            ("b.example.com", "*.example.com"),
            ("example.com", "*"),
            ("other.org", "*"),
        ];
        for (host, want) in cases {
            assert_eq!(
                t.find(host).map(|v| v.domain.as_str()),
                Some(want),
                "{host}"
            );
        }
        assert!(VirtualHosts::new(vec![vh("a.com")]).find("b.com").is_none());
    }

    #[test]
    fn weighted_pick() {
        let d = |w| WeightedDestination {
            cluster_name: format!("c{w}"),
            cluster: None,
            weight: w,
            headers: HeaderEdits::default(),
            authority: None,
            path: None,
        };
        let f = Forward::new(vec![d(80), d(0), d(20)]);
        assert_eq!(f.total_weight(), 100);
        let cases = [(0, "c80"), (79, "c80"), (80, "c20"), (99, "c20")];
        for (point, want) in cases {
            assert_eq!(f.pick(point).unwrap().cluster_name, want, "{point}");
        }
    }
}
