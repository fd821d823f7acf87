//! Run-time state of clusters, which outlives snapshots: the endpoints (fixed, or refreshed
//! from DNS) with their connections, and the round-robin position. State is keyed by cluster
//! name, so a reload that keeps a cluster keeps its state, and by endpoint address within it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::Authority;
use isthmus_config::policy::{ClusterPolicy, HealthCheck, Limits};
use isthmus_config::snapshot::{Cluster, EndpointSource, UpstreamProtocol};
use tokio::task::JoinHandle;

use crate::balance::health::{self, EndpointHealth};
use crate::balance::limits::Counters;
use crate::balance::{HostSet, health_check, outlier};
use crate::dns::{self, LookupError};
use crate::egress::original_dst::{OriginalDst, Target};
use crate::metrics::{DestinationLabels, DestinationStats, IstioMetrics};
use crate::pool::{EndpointPool, PoolSettings};
use crate::tls::client_config::UpstreamTlsConfig;

/// An endpoint of a cluster: its address, the URI authority to send to, its connections and
/// its health. It lives as long as some snapshot's cluster lists its address, so its
/// connections, ejection and health survive reloads and DNS refreshes that keep it.
pub struct Endpoint {
    pub address: SocketAddr,
    pub authority: Authority,
    pub pool: EndpointPool,
    pub health: EndpointHealth,
    weight: AtomicU32,
    priority: AtomicU32,
    /// When it joined (`health::now_ms`), and whether it slow-starts: endpoints of a
    /// cluster's first endpoint set take full traffic at once.
    added_at: u64,
    slow_start: bool,
}

impl Endpoint {
    pub(crate) fn new(
        spec: &EndpointSpec,
        health_checked: bool,
        slow_start: bool,
    ) -> Option<Arc<Self>> {
        let authority = Authority::try_from(spec.address.to_string()).ok()?;
        Some(Arc::new(Endpoint {
            address: spec.address,
            authority,
            pool: EndpointPool::default(),
            health: EndpointHealth::new(health_checked),
            weight: AtomicU32::new(spec.weight),
            priority: AtomicU32::new(spec.priority),
            added_at: health::now_ms(),
            slow_start,
        }))
    }

    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.added_at)
    }

    /// Still within its slow-start window of `duration_ms`.
    pub fn warming(&self, now: u64, duration_ms: u64) -> bool {
        self.slow_start && self.age(now) < duration_ms
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }
}

/// An endpoint address with its balancing weight and priority level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    pub weight: u32,
    pub priority: u32,
}

/// The parts of a cluster's configuration a reload may change without dropping its state.
pub struct ClusterSettings {
    pub protocol: UpstreamProtocol,
    /// TLS originated to the endpoints, if the DestinationRule asks for it.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    pub pool: PoolSettings,
    pub policy: ClusterPolicy,
    /// Whether any circuit breaker limit is below Istio's "unlimited" default.
    pub limited: bool,
}

pub struct ClusterState {
    pub name: String,
    pub labels: DestinationLabels,
    service: String,
    /// Its Istio metrics, looked up once here so that requests never hash a label set.
    pub stats: Arc<DestinationStats>,
    settings: ArcSwap<ClusterSettings>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    hosts: ArcSwap<HostSet>,
    /// Bumped on every change of endpoints or their health; the host set follows.
    epoch: AtomicU64,
    rebuilding: Mutex<()>,
    next: AtomicUsize,
    pub counters: Arc<Counters>,
    /// Endpoints were set once: later ones slow-start.
    populated: AtomicBool,
    /// Set for original-destination clusters: their endpoints come from each request.
    original: ArcSwapOption<OriginalDst>,
}

impl ClusterState {
    fn new(c: &Cluster, labels: DestinationLabels, istio: &IstioMetrics) -> Self {
        ClusterState {
            name: c.name.clone(),
            service: c.service.clone(),
            stats: istio.destination(&labels),
            labels,
            settings: ArcSwap::from_pointee(settings(c, None)),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            hosts: ArcSwap::from_pointee(HostSet::empty()),
            epoch: AtomicU64::new(1),
            rebuilding: Mutex::new(()),
            next: AtomicUsize::new(0),
            counters: Arc::default(),
            populated: AtomicBool::new(false),
            original: ArcSwapOption::empty(),
        }
    }

    /// Whether the endpoint of a request is the host it names (resolution NONE, DYNAMIC_DNS,
    /// `PassthroughCluster`), so [`ClusterState::pick`] needs its [`Target`].
    pub fn is_original_destination(&self) -> bool {
        self.original.load().is_some()
    }

    /// An endpoint for a request: by the cluster's policy ([`ClusterState::choose`]), or, for
    /// an original-destination cluster, an address of `target` (resolved, or from the answers
    /// kept for their TTL). `Ok(None)` when there is no endpoint (or no target to resolve).
    pub async fn pick(
        &self,
        target: Option<Target<'_>>,
        key: Option<u64>,
        avoid: &[SocketAddr],
    ) -> Result<Option<Arc<Endpoint>>, LookupError> {
        let Some(original) = self.original.load_full() else {
            return Ok(self.choose(key, avoid));
        };
        let Some(target) = target else {
            return Ok(None);
        };
        // Boxed: only original-destination clusters resolve, and the resolver's future would
        // otherwise enlarge every request's future.
        Ok(Box::pin(original.resolve(target)).await?.pick(avoid))
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn settings(&self) -> Arc<ClusterSettings> {
        self.settings.load_full()
    }

    /// Sets the endpoints, keeping the state of those that stay.
    pub fn set_endpoints(&self, specs: impl IntoIterator<Item = EndpointSpec>) {
        let checked = self.settings.load().policy.health_check.is_some();
        let slow_start = self.populated.swap(true, Ordering::AcqRel);
        let current = self.endpoints.load();
        let next: Vec<Arc<Endpoint>> = specs
            .into_iter()
            .filter_map(
                |spec| match current.iter().find(|e| e.address == spec.address) {
                    Some(e) => {
                        e.weight.store(spec.weight, Ordering::Relaxed);
                        e.priority.store(spec.priority, Ordering::Relaxed);
                        Some(e.clone())
                    }
                    None => Endpoint::new(&spec, checked, slow_start),
                },
            )
            .collect();
        self.endpoints.store(Arc::new(next));
        self.health_changed();
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Endpoints or their health changed: the next pick rebuilds the host set.
    pub fn health_changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// An endpoint for a request, by the cluster's policy; `key` is its consistent-hash key.
    /// Endpoints in `avoid` (tried already) are skipped while others remain.
    pub fn choose(&self, key: Option<u64>, avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let now = health::now_ms();
        let mut hosts = self.hosts.load();
        if hosts.epoch != self.epoch.load(Ordering::Acquire) || now >= hosts.expires {
            self.rebuild(now);
            hosts = self.hosts.load();
        }
        let settings = self.settings.load();
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        hosts.pick(&settings.policy.load_balancer, key, counter, avoid)
    }

    /// Rebuilds the host set, unless another request just did.
    fn rebuild(&self, now: u64) {
        // Waiting for another rebuild is brief (the set is small and built without I/O), and
        // using the stale set instead could mean the empty set a new cluster starts with.
        let _guard = self
            .rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let epoch = self.epoch.load(Ordering::Acquire);
        let current = self.hosts.load();
        if current.epoch == epoch && now < current.expires {
            return;
        }
        let settings = self.settings.load();
        let endpoints = self.endpoints.load();
        let set = HostSet::build(&endpoints, &settings.policy, epoch, now);
        self.hosts.store(Arc::new(set));
    }

    /// Outlier detection: the outcome of an attempt on `endpoint`, which may eject it.
    pub fn report(&self, endpoint: &Endpoint, outcome: outlier::Outcome) {
        let settings = self.settings.load();
        let Some(od) = &settings.policy.outlier else {
            return;
        };
        if !outlier::record(&endpoint.health, od, outcome) {
            return;
        }
        let now = health::now_ms();
        let endpoints = self.endpoints.load();
        let ejected = endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now))
            .count();
        // Envoy ejects while the ejected share is below maxEjectionPercent (so at least one
        // endpoint can be ejected when the percentage is above zero).
        if od.max_ejection_percent == 0
            || (ejected as u64) * 100 >= u64::from(od.max_ejection_percent) * endpoints.len() as u64
        {
            return;
        }
        let until = endpoint.health.eject(
            now,
            Duration::from_millis(od.base_ejection_time_ms),
            Duration::from_millis(od.interval_ms),
        );
        tracing::info!(cluster = %self.name, endpoint = %endpoint.address, ejected_for_ms = until - now, "outlier detection ejected the endpoint");
        self.health_changed();
    }
}

/// The settings of `c`, reusing `previous`'s TLS configuration where nothing changed.
fn settings(c: &Cluster, previous: Option<&ClusterSettings>) -> ClusterSettings {
    let conn = &c.policy.connection;
    let pool = PoolSettings {
        keepalive: conn.keepalive.as_ref().map(|k| {
            let mut ka = socket2::TcpKeepalive::new();
            if let Some(t) = k.time_secs {
                ka = ka.with_time(Duration::from_secs(t));
            }
            if let Some(i) = k.interval_secs {
                ka = ka.with_interval(Duration::from_secs(i));
            }
            if let Some(p) = k.probes {
                ka = ka.with_retries(p);
            }
            ka
        }),
        connect_timeout: Duration::from_millis(conn.connect_timeout_ms),
        idle_timeout: Duration::from_millis(conn.idle_timeout_ms),
        max_requests_per_connection: conn.max_requests_per_connection,
        max_connection_duration: conn.max_connection_duration_ms.map(Duration::from_millis),
    };
    ClusterSettings {
        protocol: c.protocol,
        tls: c
            .tls
            .as_ref()
            .map(|t| UpstreamTlsConfig::refresh(t, previous.and_then(|p| p.tls.as_ref()), &c.name)),
        pool,
        limited: c.policy.limits != Limits::default(),
        policy: c.policy.clone(),
    }
}

struct Entry {
    state: Arc<ClusterState>,
    source: EndpointSource,
    resolver: Option<JoinHandle<()>>,
    health_check: Option<(HealthCheck, JoinHandle<()>)>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = self.resolver.take() {
            task.abort();
        }
        if let Some((_, task)) = self.health_check.take() {
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
                let mut entry = match self.entries.remove(&c.name) {
                    Some(e) if e.state.labels == labels => Self::update(e, c),
                    _ => Self::start(Arc::new(ClusterState::new(c, labels, &self.istio)), c),
                };
                Self::health_checks(&mut entry, c);
                let state = entry.state.clone();
                next.insert(c.name.clone(), entry);
                state
            })
            .collect();
        self.entries = next;
        states
    }

    /// Starts, restarts or stops the cluster's active health checks as its policy says.
    fn health_checks(entry: &mut Entry, c: &Cluster) {
        let wanted = c.policy.health_check.as_ref();
        if entry.health_check.as_ref().map(|(h, _)| h) == wanted {
            return;
        }
        if let Some((_, task)) = entry.health_check.take() {
            task.abort();
        }
        let Some(check) = wanted else {
            // Without checks every endpoint counts as passing.
            for e in entry.state.endpoints().iter() {
                e.health.checked_healthy.store(true, Ordering::Relaxed);
            }
            entry.state.health_changed();
            return;
        };
        let task = health_check::spawn(entry.state.clone(), check.clone());
        entry.health_check = Some((check.clone(), task));
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
        let checks = entry.health_check.take();
        let mut fresh = Self::start(state, c);
        fresh.health_check = checks;
        fresh
    }

    /// Starts the endpoint source of `c` for `state`: static endpoints are set now, DNS names
    /// are resolved by a task (the current endpoints stay until it answers).
    fn start(state: Arc<ClusterState>, c: &Cluster) -> Entry {
        let resolver = match &c.endpoints {
            EndpointSource::Static(eps) => {
                state.set_endpoints(eps.iter().map(|e| EndpointSpec {
                    address: e.address,
                    weight: e.weight,
                    priority: e.priority,
                }));
                None
            }
            EndpointSource::Dns(targets) => Some(dns::spawn(state.clone(), targets.clone())),
            EndpointSource::OriginalDestination { .. } => {
                state.set_endpoints([]);
                None
            }
        };
        state.original.store(match &c.endpoints {
            EndpointSource::OriginalDestination { port } => Some(Arc::new(OriginalDst::new(*port))),
            _ => None,
        });
        Entry {
            state,
            source: c.endpoints.clone(),
            resolver,
            health_check: None,
        }
    }
}
