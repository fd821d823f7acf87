//! Run-time state of clusters, which outlives snapshots: the endpoints (fixed, or refreshed
//! from DNS) and the round-robin position. State is keyed by cluster name, so a reload that
//! keeps a cluster keeps its state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use http::uri::Authority;
use isthmus_config::snapshot::{Cluster, EndpointSource};
use tokio::task::JoinHandle;

use crate::dns;
use crate::metrics::DestinationLabels;

/// An endpoint ready for the hot path: its address and the URI authority to send to.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    pub authority: Authority,
}

impl Target {
    pub fn new(address: SocketAddr) -> Option<Self> {
        let authority = Authority::try_from(address.to_string()).ok()?;
        Some(Target { address, authority })
    }
}

pub struct ClusterState {
    pub name: String,
    pub labels: DestinationLabels,
    endpoints: ArcSwap<Vec<Target>>,
    next: AtomicUsize,
    /// TLS originated to the endpoints, if the DestinationRule asks for it.
    pub tls: Option<crate::tls::client_config::UpstreamTlsConfig>,
}

impl ClusterState {
    fn new(c: &Cluster) -> Self {
        ClusterState {
            name: c.name.clone(),
            labels: DestinationLabels::new(&c.service, &c.service_namespace),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            tls: c
                .tls
                .as_ref()
                .map(|t| crate::tls::client_config::UpstreamTlsConfig::new(t, &c.name)),
        }
    }

    pub fn set_endpoints(&self, targets: Vec<Target>) {
        self.endpoints.store(Arc::new(targets));
    }

    pub fn endpoints(&self) -> Arc<Vec<Target>> {
        self.endpoints.load_full()
    }

    /// Round robin, skipping the endpoints in `avoid` (tried already) while others remain.
    pub fn pick(&self, endpoints: &[Target], avoid: &[SocketAddr]) -> Option<Target> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|k| endpoints.get((start + k) % n))
            .find(|t| !avoid.contains(&t.address))
            .or_else(|| endpoints.get(start % n))
            .cloned()
    }
}

struct Entry {
    state: Arc<ClusterState>,
    source: EndpointSource,
    resolver: Option<JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = self.resolver.take() {
            task.abort();
        }
    }
}

/// Owner of every cluster's state; used by the reload path only, never per request.
#[derive(Default)]
pub struct ClusterRegistry {
    entries: HashMap<String, Entry>,
}

impl ClusterRegistry {
    /// States for the clusters of a new snapshot, index for index. Existing state is reused,
    /// DNS resolvers are started for new DNS clusters, and state of vanished clusters is dropped.
    pub fn apply(&mut self, clusters: &[Cluster]) -> Vec<Arc<ClusterState>> {
        let mut next: HashMap<String, Entry> = HashMap::new();
        let states = clusters
            .iter()
            .map(|c| {
                let entry = match self.entries.remove(&c.name) {
                    Some(e) if e.source == c.endpoints => e,
                    _ => Self::start(c),
                };
                let state = entry.state.clone();
                next.insert(c.name.clone(), entry);
                state
            })
            .collect();
        self.entries = next;
        states
    }

    fn start(c: &Cluster) -> Entry {
        let state = Arc::new(ClusterState::new(c));
        let resolver = match &c.endpoints {
            EndpointSource::Static(eps) => {
                state.set_endpoints(eps.iter().filter_map(|e| Target::new(e.address)).collect());
                None
            }
            EndpointSource::Dns(targets) => Some(dns::spawn(state.clone(), targets.clone())),
        };
        Entry {
            state,
            source: c.endpoints.clone(),
            resolver,
        }
    }
}
