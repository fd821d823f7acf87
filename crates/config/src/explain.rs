//! `isthmus explain`: which listener, Gateway server, virtual host and route would take a
//! request, why the routes before it did not match, and where the request would go, without
//! sending anything.
//!
//! Everything is read from the compiled [`Snapshot`] with the lookups the data plane itself
//! uses (virtual host lookup, [`crate::matching::RequestMatch::first_failure`], SNI chain
//! choice, TLS/TCP route choice, redirect locations), so the explanation cannot disagree with
//! what the gateway does.

mod action;
mod http;
mod l4;
mod request;
mod text;

use serde::Serialize;

pub use action::{
    AbortStep, DestinationStep, Endpoints, ForwardStep, MirrorStep, Outcome, RetryStep,
    StaticEndpoint, TunnelMode, brief, brief_forward, round,
};
pub use request::{Request, RequestError, RequestSpec, Scheme};

use crate::matching::Mismatch;
use crate::snapshot::{HostMatch, ListenerProtocol, ServerInfo, Snapshot, Source};

/// The whole explanation. Serialized as the JSON of `isthmus explain --format json`; printed
/// by [`Explanation::to_text`].
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub request: RequestSummary,
    /// The listener of the request's port; `None` when no Gateway server declares it.
    pub listener: Option<ListenerStep>,
    /// The ports that have listeners, when the request's port has none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_ports: Vec<PortSummary>,
    /// The filter chain chosen by SNI, on a TLS port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_host: Option<VirtualHostStep>,
    /// The domains of the route table, when no virtual host matches the host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Every HTTP route evaluated, in order, up to the one that matched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteStep>,
    /// Routes after the matched one (never evaluated).
    pub routes_not_evaluated: usize,
    /// Match blocks of the virtual host's VirtualServices that are not in its table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ExcludedStep>,
    /// TLS (by SNI) or TCP routes evaluated, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4RouteStep>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub outcome: Outcome,
    /// The answer in one line.
    pub result: String,
    /// Whether a route takes the request; `false` when the gateway itself answers with an
    /// error (404 `NR`, 503 `NC`...) or drops the connection.
    pub routed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    pub method: String,
    pub url: String,
    /// The Host header (or `:authority`) sent.
    pub authority: String,
    /// The host routing uses: the authority without port, lower-case.
    pub host: String,
    pub port: u16,
    /// The path routes match: the path sent, normalised.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The headers sent besides Host, as `name: value`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortSummary {
    pub port: u16,
    pub protocol: ListenerProtocol,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerStep {
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub servers: Vec<ServerStep>,
}

/// A Gateway server and where it is written.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStep {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// Its index in `spec.servers`.
    pub index: usize,
    pub protocol: String,
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    pub source: Source,
}

impl ServerStep {
    fn of(s: &ServerInfo) -> Self {
        ServerStep {
            gateway: s.gateway.clone(),
            index: s.index,
            protocol: s.protocol.clone(),
            hosts: s.host_texts(),
            https_redirect: s.https_redirect,
            source: s.source.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainStep {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The server name that chose the chain.
    pub server_name: String,
    pub matched_by: HostMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStep>,
    /// `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL` or `PASSTHROUGH`.
    pub tls_mode: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct VirtualHostStep {
    pub domain: String,
    pub matched_by: HostMatch,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Routes in its table.
    pub routes: usize,
    /// The Gateway servers whose hosts cover the domain.
    pub servers: Vec<ServerStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStep {
    /// Position in the virtual host's table.
    pub index: usize,
    pub virtual_service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub source: Source,
    /// The match block in words.
    pub when: String,
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<Mismatch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExcludedStep {
    pub virtual_service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub source: Source,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct L4RouteStep {
    pub index: usize,
    pub virtual_service: String,
    pub source: Source,
    /// The SNI names of a `tls` route; empty for a `tcp` route.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    pub matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// Explains what the gateway compiled into `snapshot` would do with `req`.
pub fn explain(snapshot: &Snapshot, req: &Request) -> Explanation {
    let mut ex = Explanation::new(req, snapshot.path_normalization);
    if crate::path::normalize_with(&req.path, snapshot.path_normalization).is_none() {
        return ex.refused(
            Some(400),
            Some("DPE"),
            "the path holds an encoded NUL (%00): refused before routing, as Envoy does".into(),
        );
    }
    let Some(listener) = snapshot.listeners.get(&req.port) else {
        ex.gateway_ports = snapshot
            .listeners
            .values()
            .map(|l| PortSummary {
                port: l.port,
                protocol: l.protocol,
            })
            .collect();
        return ex.refused(
            None,
            None,
            format!(
                "no Gateway server of this instance declares port {}: nothing listens there (connection refused)",
                req.port
            ),
        );
    };
    ex.listener = Some(ListenerStep {
        port: listener.port,
        protocol: listener.protocol,
        servers: listener.servers.iter().map(ServerStep::of).collect(),
    });
    match (listener.protocol, req.scheme) {
        (ListenerProtocol::Http, Scheme::Http) => {
            http::walk(
                &mut ex,
                snapshot,
                &listener.virtual_hosts,
                req,
                false,
                &listener.servers,
                listener.outbound.as_ref(),
            );
            ex.finish()
        }
        (ListenerProtocol::Http, Scheme::Https) => ex.refused(
            None,
            None,
            format!("port {} serves plaintext HTTP: a TLS handshake fails there (use http://)", req.port),
        ),
        (ListenerProtocol::Tls, Scheme::Http) => ex.refused(
            None,
            None,
            format!("port {} expects TLS (its servers are HTTPS or TLS): a plaintext request fails the handshake (use https://)", req.port),
        ),
        (ListenerProtocol::Tls, Scheme::Https) => {
            l4::tls(&mut ex, snapshot, listener, req);
            ex.finish()
        }
        (ListenerProtocol::Tcp, _) => {
            l4::tcp(&mut ex, snapshot, listener);
            ex.finish()
        }
    }
}

impl Explanation {
    fn new(req: &Request, mode: crate::path::PathNormalization) -> Self {
        let path = crate::path::normalize_with(&req.path, mode)
            .map_or_else(|| req.path.clone(), |p| p.into_owned());
        let mut notes = Vec::new();
        if path != req.path {
            notes.push(format!(
                "the path {} is normalised to {path} before matching ({mode:?} path normalisation)",
                req.path
            ));
        }
        let headers = req
            .headers
            .iter()
            .filter(|(n, _)| *n != ::http::header::HOST)
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        Explanation {
            request: RequestSummary {
                method: req.method.clone(),
                url: req.url.clone(),
                authority: req.authority.clone(),
                host: crate::hosts::request_host(&req.authority).into_owned(),
                port: req.port,
                path,
                query: req.query.clone(),
                sni: req.sni.clone(),
                headers,
            },
            listener: None,
            gateway_ports: Vec::new(),
            chain: None,
            virtual_host: None,
            domains: Vec::new(),
            routes: Vec::new(),
            routes_not_evaluated: 0,
            excluded: Vec::new(),
            l4_routes: Vec::new(),
            notes,
            outcome: Outcome::Refused {
                status: None,
                flag: None,
                reason: String::new(),
            },
            result: String::new(),
            routed: false,
        }
    }

    /// Ends the explanation with the gateway answering (or dropping the connection) itself.
    fn refused(mut self, status: Option<u16>, flag: Option<&'static str>, reason: String) -> Self {
        self.outcome = Outcome::Refused {
            status,
            flag,
            reason,
        };
        self.finish()
    }

    fn finish(mut self) -> Self {
        let (routed, result) = verdict(&self.outcome);
        self.routed = routed;
        self.result = result;
        self
    }

    /// The explanation as aligned, plain-ASCII text.
    pub fn to_text(&self) -> String {
        text::render(self)
    }
}

/// Whether a route takes the request, and the answer in one line.
fn verdict(outcome: &Outcome) -> (bool, String) {
    match outcome {
        Outcome::Forward(f) => match &f.abort {
            // The fault filter answers before the router: no destination is contacted.
            Some(a) if a.percent >= 100.0 => (
                true,
                format!(
                    "aborted by the route's fault injection with {} (FI)",
                    a.with
                ),
            ),
            Some(a) if a.percent > 0.0 => {
                let (routed, line) = reach(
                    "forwarded to",
                    &f.destinations,
                    Failure::Status(f.invalid_backend_status),
                );
                (
                    routed,
                    format!(
                        "{line}; {}% of requests are aborted with {} (FI)",
                        round(a.percent),
                        a.with
                    ),
                )
            }
            _ => reach(
                "forwarded to",
                &f.destinations,
                Failure::Status(f.invalid_backend_status),
            ),
        },
        Outcome::Tunnel { mode, destinations } => {
            let what = match mode {
                TunnelMode::TlsPassthrough => "TLS passed through to",
                TunnelMode::TlsTerminatedTcp => "TLS terminated, plaintext proxied to",
                TunnelMode::Tcp => "TCP proxied to",
            };
            reach(what, destinations, Failure::Closed)
        }
        Outcome::Redirect { status, location } => {
            (true, format!("{status} redirect to {location}"))
        }
        Outcome::HttpsRedirect { status, location } => (
            true,
            format!("{status} redirect to {location} (httpsRedirect)"),
        ),
        Outcome::DirectResponse { status, .. } => {
            (true, format!("{status} direct response from the route"))
        }
        Outcome::Refused {
            status,
            flag,
            reason,
        } => {
            let head = match (status, flag) {
                (Some(s), Some(f)) => format!("{s} ({f}): "),
                (Some(s), None) => format!("{s}: "),
                _ => String::new(),
            };
            (false, format!("{head}{reason}"))
        }
    }
}

/// What happens to a request or connection whose destination cannot be reached.
enum Failure {
    /// An HTTP status: Envoy's 503, or for a destination without a cluster the route's own
    /// status when it has one (Gateway API routes answer 500).
    Status(Option<u16>),
    /// A TLS or TCP connection is closed.
    Closed,
}

/// Whether a destination can be reached, and the one-line result.
fn reach(what: &str, destinations: &[DestinationStep], failed: Failure) -> (bool, String) {
    let reachable: Vec<&DestinationStep> = destinations.iter().filter(|d| d.reachable()).collect();
    let names = |ds: &[&DestinationStep]| -> String {
        ds.iter()
            .map(|d| {
                if destinations.len() > 1 {
                    format!("{} ({}%)", d.cluster, round(d.percent))
                } else {
                    d.cluster.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if reachable.is_empty() {
        let unknown = destinations
            .iter()
            .all(|d| matches!(d.endpoints, Endpoints::Unknown { .. }));
        let all: Vec<&DestinationStep> = destinations.iter().collect();
        let (status, why) = if unknown {
            (
                "503 (NC)".to_string(),
                "has no cluster (unknown service, port or subset)",
            )
        } else {
            (
                "503 (UH)".to_string(),
                "has no endpoint (no healthy upstream)",
            )
        };
        let head = match failed {
            Failure::Closed => "the connection is closed".to_string(),
            Failure::Status(Some(code)) if unknown => format!("{code} (NC)"),
            Failure::Status(_) => status,
        };
        return (false, format!("{head}: {} {why}", names(&all)));
    }
    let mut line = format!("{what} {}", names(&reachable));
    let lost: f64 = destinations
        .iter()
        .filter(|d| !d.reachable())
        .map(|d| d.percent)
        .sum();
    if lost > 0.0 {
        line.push_str(&format!(
            "; {}% fail (their destination has no cluster or endpoint)",
            round(lost)
        ));
    }
    (true, line)
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
