//! Istio's standard request and TCP metrics and the gateway's own health series, in one
//! registry that the admin server encodes.

mod histogram;
pub mod istio;
pub mod labels;
mod series;
pub mod upstream;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use histogram::ISTIO_BUCKETS;
pub use istio::{DestinationStats, IstioMetrics, Protocol, RequestKey, TcpSeries};
pub use labels::{DestinationLabels, Identity, SourceLabels};
pub use upstream::UpstreamGauges;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: &'static str,
}

pub struct Metrics {
    /// `istio_*` series, per destination.
    pub istio: Arc<IstioMetrics>,
    /// Endpoints and pooled connections per cluster.
    pub upstreams: Arc<UpstreamGauges>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub generation: Gauge,
    pub diagnostics: Family<SeverityLabels, Gauge>,
    pub active_connections: Gauge,
    /// Of those, HTTP/1 connections parked between requests ([`crate::parking`]).
    pub parked_connections: Gauge,
    pub mirrors_dropped: Counter,
    pub access_log_dropped: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&Identity::default())
    }
}

impl Metrics {
    pub fn new(identity: &Identity) -> Self {
        let mut registry = Registry::default();
        let istio = Arc::new(IstioMetrics::new(SourceLabels::new(identity)));
        registry.register_collector(Box::new(istio.clone()));
        let upstreams = Arc::new(UpstreamGauges::default());
        registry.register_collector(Box::new(upstreams.clone()));
        registry.register(
            "isthmus_build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            istio,
            upstreams,
            reloads: register(
                &mut registry,
                "isthmus_config_reloads",
                "Configuration reloads by result",
            ),
            generation: register(
                &mut registry,
                "isthmus_config_generation",
                "Generation of the configuration being served",
            ),
            diagnostics: register(
                &mut registry,
                "isthmus_config_diagnostics",
                "Diagnostics of the current configuration by severity",
            ),
            active_connections: register(
                &mut registry,
                "isthmus_downstream_connections_active",
                "Open downstream HTTP connections",
            ),
            parked_connections: register(
                &mut registry,
                "isthmus_downstream_connections_parked",
                "Open downstream HTTP/1 connections parked between requests (holding no HTTP state)",
            ),
            mirrors_dropped: register(
                &mut registry,
                "isthmus_mirror_dropped",
                "Mirror copies not sent (too many in flight, or a body too large to copy)",
            ),
            access_log_dropped: register(
                &mut registry,
                "isthmus_access_log_dropped",
                "Access log lines dropped because the writer could not keep up",
            ),
            registry,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Registers a new metric of type `M` and returns a handle to it (handles share the value).
fn register<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}
