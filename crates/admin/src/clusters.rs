//! `/clusters`: every upstream cluster of the active snapshot with its balancer, circuit
//! breakers (limits and current counts) and endpoints (weight, priority, health, requests in
//! flight). Read from the cluster state's atomics when asked; nothing is kept.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use isthmus_config::policy::{HashKey, LoadBalancer};
use isthmus_config::snapshot::Cluster;
use isthmus_proxy::balance::health::now_ms;
use isthmus_proxy::clusters::Endpoint;
use isthmus_proxy::{Active, ClusterState};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Clusters {
    pub generation: u64,
    pub clusters: Vec<ClusterView>,
}

#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub service: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    pub load_balancer: String,
    pub outlier_detection: bool,
    pub health_checks: bool,
    pub circuit_breakers: Breakers,
    pub endpoints: Vec<EndpointView>,
}

/// Envoy's circuit breakers: each limit (4294967295 is Istio's "unlimited") with its count.
#[derive(Debug, Serialize)]
pub struct Breakers {
    pub max_connections: u32,
    pub connections: u32,
    pub max_pending_requests: u32,
    pub pending: u32,
    pub max_requests: u32,
    pub requests: u32,
    pub max_retries: u32,
    pub retries: u32,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub address: SocketAddr,
    pub weight: u32,
    pub priority: u32,
    pub health: Health,
    /// Time left of an outlier ejection (0 when not ejected).
    pub ejected_for_ms: u64,
    /// Times ejected, decayed while healthy (the multiplier of the next ejection time).
    pub ejections: u32,
    /// Active health checks say it is down (always false without checks).
    pub failing_health_check: bool,
    pub active_requests: u32,
}

/// An ejection shows first: it is what keeps the endpoint out right now, and it ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Ejected,
    Unhealthy,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Ejected => "ejected",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl Clusters {
    pub fn of(active: &Active) -> Self {
        let now = now_ms();
        let clusters = active
            .snapshot
            .clusters
            .iter()
            .zip(&active.clusters)
            .map(|(c, state)| cluster(c, state, now))
            .collect();
        Clusters {
            generation: active.generation,
            clusters,
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("generation {}\n", self.generation);
        for c in &self.clusters {
            cluster_text(&mut out, c);
        }
        if self.clusters.is_empty() {
            out.push_str("no clusters\n");
        }
        out
    }
}

fn cluster(c: &Cluster, state: &ClusterState, now: u64) -> ClusterView {
    let settings = state.settings();
    let policy = &settings.policy;
    let limits = &policy.limits;
    let counters = &state.counters;
    let count = |a: &std::sync::atomic::AtomicU32| a.load(Ordering::Relaxed);
    ClusterView {
        name: c.name.clone(),
        service: state.service().to_string(),
        port: c.port,
        subset: c.subset.clone(),
        load_balancer: balancer(&policy.load_balancer),
        outlier_detection: policy.outlier.is_some(),
        health_checks: policy.health_check.is_some(),
        circuit_breakers: Breakers {
            max_connections: limits.max_connections,
            connections: count(&counters.connections),
            max_pending_requests: limits.max_pending_requests,
            pending: count(&counters.pending),
            max_requests: limits.max_requests,
            requests: count(&counters.requests),
            max_retries: limits.max_retries,
            retries: count(&counters.retries),
        },
        endpoints: state.endpoints().iter().map(|e| endpoint(e, now)).collect(),
    }
}

fn endpoint(e: &Endpoint, now: u64) -> EndpointView {
    let h = &e.health;
    let ejected_for_ms = h.ejected_until.load(Ordering::Relaxed).saturating_sub(now);
    let failing = !h.checked_healthy.load(Ordering::Relaxed);
    let health = if ejected_for_ms > 0 {
        Health::Ejected
    } else if failing {
        Health::Unhealthy
    } else {
        Health::Healthy
    };
    EndpointView {
        address: e.address,
        weight: e.weight(),
        priority: e.priority(),
        health,
        ejected_for_ms,
        ejections: h.ejections.load(Ordering::Relaxed),
        failing_health_check: failing,
        active_requests: h.active.load(Ordering::Relaxed),
    }
}

/// The balancer in words: `round_robin`, `ring_hash(header x-user)`.
fn balancer(lb: &LoadBalancer) -> String {
    let key = |k: &HashKey| match k {
        HashKey::Header(h) => format!("header {h}"),
        HashKey::Cookie { name, .. } => format!("cookie {name}"),
        HashKey::SourceIp => "source ip".to_string(),
        HashKey::QueryParameter(q) => format!("query parameter {q}"),
    };
    match lb {
        LoadBalancer::LeastRequest => "least_request".into(),
        LoadBalancer::RoundRobin => "round_robin".into(),
        LoadBalancer::Random => "random".into(),
        LoadBalancer::Passthrough => "passthrough".into(),
        LoadBalancer::RingHash { key: k, .. } => format!("ring_hash({})", key(k)),
        LoadBalancer::Maglev { key: k, .. } => format!("maglev({})", key(k)),
    }
}

fn cluster_text(out: &mut String, c: &ClusterView) {
    let _ = writeln!(
        out,
        "{}  service {}:{}  lb {}{}{}",
        c.name,
        c.service,
        c.port,
        c.load_balancer,
        if c.outlier_detection {
            "  outlier-detection"
        } else {
            ""
        },
        if c.health_checks {
            "  health-checks"
        } else {
            ""
        },
    );
    let b = &c.circuit_breakers;
    let _ = writeln!(
        out,
        "  circuit breakers  connections {}/{}  pending {}/{}  requests {}/{}  retries {}/{}",
        b.connections,
        limit(b.max_connections),
        b.pending,
        limit(b.max_pending_requests),
        b.requests,
        limit(b.max_requests),
        b.retries,
        limit(b.max_retries),
    );
    for e in &c.endpoints {
        let health = match e.health {
            Health::Ejected => format!("ejected for {} ms", e.ejected_for_ms),
            h => h.as_str().to_string(),
        };
        let _ = writeln!(
            out,
            "  {}  weight {}  priority {}  {}  active {}",
            e.address, e.weight, e.priority, health, e.active_requests
        );
    }
    if c.endpoints.is_empty() {
        out.push_str("  no endpoints\n");
    }
}

fn limit(max: u32) -> String {
    if max == u32::MAX {
        "unlimited".into()
    } else {
        max.to_string()
    }
}
