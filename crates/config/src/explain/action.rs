//! What a matched route (or TLS/TCP route) does, in terms a user can check: destinations with
//! their clusters and endpoints, rewrites, the redirect's Location, retries, timeout, fault
//! and mirrors. Also the one-line summaries of the admin `/routes` table.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::actions::{AbortWith, HeaderEdits, HeaderOps, RedirectInput, RetryPolicy, retry_on};
use crate::snapshot::{
    ActionKind, Cluster, EndpointSource, Forward, RouteAction, Snapshot, UpstreamProtocol,
    WeightedDestination,
};

/// One weighted destination and the endpoint set behind it.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationStep {
    /// Istio's cluster name, `outbound|port|subset|host`.
    pub cluster: String,
    pub weight: u32,
    /// Share of requests, 0 to 100.
    pub percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// TLS originated to the endpoints (DestinationRule `tls`), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The Host sent upstream when this destination rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// The path sent upstream when this destination alone rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_rewrite: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    pub endpoints: Endpoints,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoints {
    /// Addresses known from the configuration (`resolution: STATIC`).
    Static { addresses: Vec<StaticEndpoint> },
    /// `name:port` resolved by DNS at run time.
    Dns { names: Vec<String> },
    /// The request's own host, resolved when it is sent (`resolution: NONE`, `DYNAMIC_DNS`,
    /// `PassthroughCluster`), on `port` or the request's port.
    OriginalDestination { port: Option<u16> },
    /// No cluster: the service, its port or the subset is unknown (503, `NC`).
    Unknown { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct StaticEndpoint {
    pub address: SocketAddr,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

impl DestinationStep {
    /// Whether requests sent here can reach an endpoint (DNS names are assumed to resolve).
    pub fn reachable(&self) -> bool {
        match &self.endpoints {
            Endpoints::Static { addresses } => !addresses.is_empty(),
            Endpoints::Dns { names } => !names.is_empty(),
            Endpoints::OriginalDestination { .. } => true,
            Endpoints::Unknown { .. } => false,
        }
    }
}

/// The destinations of a forward, with the endpoints of their clusters.
pub fn destinations(snapshot: &Snapshot, f: &Forward) -> Vec<DestinationStep> {
    let total = f.total_weight().max(1);
    f.destinations
        .iter()
        .map(|d| destination(snapshot, d, total))
        .collect()
}

fn destination(snapshot: &Snapshot, d: &WeightedDestination, total: u32) -> DestinationStep {
    let cluster = d.cluster.and_then(|i| snapshot.clusters.get(i));
    let mut step = DestinationStep {
        cluster: d.cluster_name.clone(),
        weight: d.weight,
        percent: f64::from(d.weight) * 100.0 / f64::from(total),
        service: None,
        port: None,
        subset: None,
        protocol: None,
        tls: None,
        host_rewrite: d.authority.clone(),
        path_rewrite: None,
        headers: header_edits(&d.headers),
        endpoints: Endpoints::Unknown {
            reason: "no ServiceEntry defines this service, port or subset (see the diagnostics)"
                .into(),
        },
    };
    if let Some(c) = cluster {
        step.service = Some(c.service.clone());
        step.port = Some(c.port);
        step.subset = c.subset.clone();
        step.protocol = Some(c.protocol);
        step.tls = c.tls.as_ref().map(upstream_tls);
        step.endpoints = endpoints(c);
    }
    step
}

fn endpoints(c: &Cluster) -> Endpoints {
    match &c.endpoints {
        EndpointSource::Static(list) => Endpoints::Static {
            addresses: list
                .iter()
                .map(|e| StaticEndpoint {
                    address: e.address,
                    labels: e.labels.clone(),
                    weight: e.weight,
                })
                .collect(),
        },
        EndpointSource::Dns(targets) => Endpoints::Dns {
            names: targets
                .iter()
                .map(|t| format!("{}:{}", t.hostname, t.port))
                .collect(),
        },
        EndpointSource::OriginalDestination { port } => {
            Endpoints::OriginalDestination { port: *port }
        }
    }
}

fn upstream_tls(t: &crate::snapshot::UpstreamTls) -> String {
    let mode = if t.client_certificate.is_some() {
        "MUTUAL"
    } else {
        "SIMPLE"
    };
    let sni = t.sni.as_deref().unwrap_or("the request's host");
    let verify = if t.insecure_skip_verify {
        ", certificate not verified"
    } else if t.ca.is_none() {
        ", no CA: the handshake fails"
    } else {
        ""
    };
    format!("{mode}, SNI {sni}{verify}")
}

/// A forward in detail.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardStep {
    pub destinations: Vec<DestinationStep>,
    /// The path sent upstream, when a rewrite changes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    /// The Host sent upstream, when the route rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    /// The whole-request timeout, retries included; `None`: no timeout.
    pub timeout: Option<String>,
    pub retries: RetryStep,
    /// Fault injection in words (delay, abort).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fault: Vec<String>,
    /// The fault abort, which answers before any upstream is contacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStep>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorStep>,
    /// Route-level header edits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<String>,
    /// The status a destination without a cluster answers when it is not Envoy's 503 (500
    /// for Gateway API routes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_backend_status: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryStep {
    pub attempts: u32,
    pub retry_on: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbortStep {
    /// `HTTP 503` or `gRPC status 14`.
    pub with: String,
    /// Share of requests aborted, 0 to 100.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorStep {
    pub cluster: String,
    pub percent: f64,
}

/// What the gateway does with the request once the route is chosen.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Forward(Box<ForwardStep>),
    Redirect {
        status: u16,
        location: String,
    },
    /// `httpsRedirect` of the Gateway server.
    HttpsRedirect {
        status: u16,
        location: String,
    },
    DirectResponse {
        status: u16,
        content_type: &'static str,
        body_bytes: usize,
    },
    /// A TLS or TCP connection spliced to a destination.
    Tunnel {
        mode: TunnelMode,
        destinations: Vec<DestinationStep>,
    },
    /// The gateway answers (or closes the connection) itself.
    Refused {
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        flag: Option<&'static str>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelMode {
    /// The encrypted bytes, routed by SNI.
    TlsPassthrough,
    /// TLS terminated, the plaintext forwarded as TCP.
    TlsTerminatedTcp,
    Tcp,
}

/// The outcome of a matched HTTP route.
pub fn http_outcome(
    snapshot: &Snapshot,
    action: &RouteAction,
    redirect_input: &RedirectInput<'_>,
) -> Outcome {
    match &action.kind {
        ActionKind::Redirect(r) => Outcome::Redirect {
            status: r.code,
            location: r.location(redirect_input),
        },
        ActionKind::DirectResponse(d) => Outcome::DirectResponse {
            status: d.status,
            content_type: d.content_type,
            body_bytes: d.body.len(),
        },
        ActionKind::Forward(f) => {
            Outcome::Forward(Box::new(forward(snapshot, action, f, redirect_input.path)))
        }
    }
}

fn forward(snapshot: &Snapshot, action: &RouteAction, f: &Forward, path: &str) -> ForwardStep {
    let upstream_path = f
        .rewrite
        .as_ref()
        .and_then(|r| r.path.as_ref())
        .map(|p| p.apply(path))
        .filter(|p| p != path);
    let mut steps = destinations(snapshot, f);
    // A destination's own path rewrite applies when the route has none.
    if f.rewrite.as_ref().and_then(|r| r.path.as_ref()).is_none() {
        for (step, d) in steps.iter_mut().zip(&f.destinations) {
            step.path_rewrite = d.path.as_ref().map(|p| p.apply(path)).filter(|p| p != path);
        }
    }
    ForwardStep {
        invalid_backend_status: f.invalid_backend_status,
        destinations: steps,
        upstream_path,
        upstream_host: f.rewrite.as_ref().and_then(|r| r.authority.clone()),
        timeout: f.timeout_ms.map(|ms| format!("{ms}ms")),
        retries: retries(&f.retry),
        fault: fault(action),
        abort: action
            .fault
            .as_ref()
            .and_then(|f| f.abort.as_ref())
            .map(|a| AbortStep {
                with: abort_with(a.with),
                percent: a.percent,
            }),
        mirrors: f
            .mirrors
            .iter()
            .map(|m| MirrorStep {
                cluster: m.cluster_name.clone(),
                percent: m.percent,
            })
            .collect(),
        headers: header_edits(&action.headers),
        cors: action.cors.as_ref().map(|c| {
            let origins: Vec<String> = c.allow_origins.iter().map(ToString::to_string).collect();
            format!(
                "allowed origins: {}; preflights from them are answered by the gateway",
                if origins.is_empty() {
                    "none".to_string()
                } else {
                    origins.join(", ")
                }
            )
        }),
    }
}

fn retries(r: &RetryPolicy) -> RetryStep {
    let on: Vec<&str> = retry_on::NAMES
        .iter()
        .filter(|(_, bit)| r.retries_on(*bit))
        .map(|(n, _)| *n)
        .collect();
    let mut retry_on = on.join(",");
    if !r.status_codes.is_empty() {
        let codes: Vec<String> = r.status_codes.iter().map(ToString::to_string).collect();
        retry_on.push_str(&format!(" (status codes {})", codes.join(",")));
    }
    RetryStep {
        attempts: r.attempts,
        retry_on,
        per_try_timeout: r.per_try_timeout.map(|d| format!("{}ms", d.as_millis())),
    }
}

fn fault(action: &RouteAction) -> Vec<String> {
    let Some(f) = &action.fault else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(d) = &f.delay {
        out.push(format!(
            "delay {}ms for {}% of requests",
            d.delay.as_millis(),
            d.percent
        ));
    }
    if let Some(a) = &f.abort {
        out.push(format!(
            "abort with {} for {}% of requests (FI), before any upstream is contacted",
            abort_with(a.with),
            a.percent
        ));
    }
    out
}

fn abort_with(with: AbortWith) -> String {
    match with {
        AbortWith::Http(code) => format!("HTTP {code}"),
        AbortWith::Grpc(code) => format!("gRPC status {code}"),
    }
}

/// Header edits in words: `request set x-a: v`, `response remove x-b`.
pub fn header_edits(h: &HeaderEdits) -> Vec<String> {
    let mut out = ops("request", &h.request);
    out.extend(ops("response", &h.response));
    out
}

fn ops(direction: &str, o: &HeaderOps) -> Vec<String> {
    let mut out: Vec<String> = o
        .remove
        .iter()
        .map(|n| format!("{direction} remove {n}"))
        .collect();
    out.extend(
        o.set
            .iter()
            .map(|(n, v)| format!("{direction} set {n}: {}", v.text)),
    );
    out.extend(
        o.add
            .iter()
            .map(|(n, v)| format!("{direction} add {n}: {}", v.text)),
    );
    out
}

/// One line for the `/routes` table: `forward outbound|80||a.svc 80%, outbound|80||b.svc 20%`.
pub fn brief(action: &RouteAction) -> String {
    match &action.kind {
        ActionKind::Forward(f) => format!("forward {}", brief_forward(f)),
        ActionKind::Redirect(r) => {
            let mut s = format!("redirect {}", r.code);
            if let Some(scheme) = &r.scheme {
                s.push_str(&format!(" scheme {scheme}"));
            }
            if let Some(a) = &r.authority {
                s.push_str(&format!(" authority {a}"));
            }
            s
        }
        ActionKind::DirectResponse(d) => format!("direct response {}", d.status),
    }
}

/// `outbound|80||a.svc 80%, outbound|80||b.svc 20%` (no percentage for a lone destination).
pub fn brief_forward(f: &Forward) -> String {
    if let [only] = f.destinations.as_slice() {
        return only.cluster_name.clone();
    }
    let total = f64::from(f.total_weight().max(1));
    f.destinations
        .iter()
        .map(|d| {
            format!(
                "{} {}%",
                d.cluster_name,
                round(f64::from(d.weight) * 100.0 / total)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percentages print with at most one decimal.
pub fn round(p: f64) -> f64 {
    (p * 10.0).round() / 10.0
}
