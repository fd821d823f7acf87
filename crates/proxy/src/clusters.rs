//! Run-time state of clusters, which outlives snapshots: the endpoints (fixed, or refreshed
//! from DNS) with their connections, and the round-robin position. State is keyed by cluster
//! name, so a reload that keeps a cluster keeps its state, and by endpoint address within it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use http::uri::Authority;
use isthmus_config::snapshot::{Cluster, EndpointSource, UpstreamProtocol};
use tokio::task::JoinHandle;

use crate::dns;
use crate::metrics::{DestinationLabels, DestinationStats, IstioMetrics};
use crate::pool::{EndpointPool, PoolSettings};
use crate::tls::client_config::UpstreamTlsConfig;

/// An endpoint of a cluster: its address, the URI authority to send to, and its connections.
/// It lives as long as some snapshot's cluster lists its address, so its connections survive
/// reloads and DNS refreshes that keep it.
pub struct Endpoint {
    pub address: SocketAddr,
    pub authority: Authority,
    pub pool: EndpointPool,
}

impl Endpoint {
    pub fn new(address: SocketAddr) -> Option<Arc<Self>> {
        let authority = Authority::try_from(address.to_string()).ok()?;
        Some(Arc::new(Endpoint {
            address,
            authority,
            pool: EndpointPool::default(),
        }))
    }
}

/// The parts of a cluster's configuration a reload may change without dropping its state.
pub struct ClusterSettings {
    pub protocol: UpstreamProtocol,
    /// TLS originated to the endpoints, if the DestinationRule asks for it.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    pub pool: PoolSettings,
}

pub struct ClusterState {
    pub name: String,
    pub labels: DestinationLabels,
    /// Its Istio metrics, looked up once here so that requests never hash a label set.
    pub stats: Arc<DestinationStats>,
    settings: ArcSwap<ClusterSettings>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
}

impl ClusterState {
    fn new(c: &Cluster, labels: DestinationLabels, istio: &IstioMetrics) -> Self {
        ClusterState {
            name: c.name.clone(),
            stats: istio.destination(&labels),
            labels,
            settings: ArcSwap::from_pointee(settings(c, None)),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    pub fn settings(&self) -> Arc<ClusterSettings> {
        self.settings.load_full()
    }

    /// Sets the endpoint addresses, keeping the state of endpoints that stay.
    pub fn set_endpoints(&self, addresses: impl IntoIterator<Item = SocketAddr>) {
        let current = self.endpoints.load();
        let next: Vec<Arc<Endpoint>> = addresses
            .into_iter()
            .filter_map(|a| match current.iter().find(|e| e.address == a) {
                Some(e) => Some(e.clone()),
                None => Endpoint::new(a),
            })
            .collect();
        self.endpoints.store(Arc::new(next));
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Round robin, skipping the endpoints in `avoid` (tried already) while others remain.
    pub fn pick(&self, endpoints: &[Arc<Endpoint>], avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
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

/// The settings of `c`, reusing `previous`'s TLS configuration where nothing changed.
fn settings(c: &Cluster, previous: Option<&ClusterSettings>) -> ClusterSettings {
    ClusterSettings {
        protocol: c.protocol,
        tls: c
            .tls
            .as_ref()
            .map(|t| UpstreamTlsConfig::refresh(t, previous.and_then(|p| p.tls.as_ref()), &c.name)),
        pool: PoolSettings::default(),
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
pub struct ClusterRegistry {
    entries: HashMap<String, Entry>,
    istio: Arc<IstioMetrics>,
}

impl ClusterRegistry {
    pub fn new(istio: Arc<IstioMetrics>) -> Self {
        ClusterRegistry {
            entries: HashMap::new(),
            istio,
        }
    }

    /// States for the clusters of a new snapshot, index for index. A cluster that stays keeps
    /// its state (endpoints and their connections); its settings are updated, and its endpoint
    /// source is restarted only if it changed. State of vanished clusters is dropped.
    pub fn apply(&mut self, clusters: &[Cluster]) -> Vec<Arc<ClusterState>> {
        let mut next: HashMap<String, Entry> = HashMap::new();
        let states = clusters
            .iter()
            .map(|c| {
                let labels = DestinationLabels::of_cluster(c);
                let entry = match self.entries.remove(&c.name) {
                    Some(e) if e.state.labels == labels => Self::update(e, c),
                    _ => Self::start(Arc::new(ClusterState::new(c, labels, &self.istio)), c),
                };
                let state = entry.state.clone();
                next.insert(c.name.clone(), entry);
                state
            })
            .collect();
        self.entries = next;
        states
    }

    fn update(mut entry: Entry, c: &Cluster) -> Entry {
        let previous = entry.state.settings();
        entry
            .state
            .settings
            .store(Arc::new(settings(c, Some(&previous))));
        if entry.source == c.endpoints {
            return entry;
        }
        // The old resolver stops before the new source sets endpoints.
        if let Some(task) = entry.resolver.take() {
            task.abort();
        }
        let state = entry.state.clone();
        Self::start(state, c)
    }

    /// Starts the endpoint source of `c` for `state`: static endpoints are set now, DNS names
    /// are resolved by a task (the current endpoints stay until it answers).
    fn start(state: Arc<ClusterState>, c: &Cluster) -> Entry {
        let resolver = match &c.endpoints {
            EndpointSource::Static(eps) => {
                state.set_endpoints(eps.iter().map(|e| e.address));
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
