//! Istio's standard request metrics and the gateway's own health series, in one registry that
//! the admin server encodes.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels of `istio_requests_total` as an Istio gateway reports them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
/// Label values are shared `Arc`s prepared when the configuration is applied, so recording a
/// request copies pointers, not strings.
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: Arc<String>,
    pub source_workload_namespace: Arc<String>,
    pub destination_service: Arc<String>,
    pub destination_service_name: Arc<String>,
    pub destination_service_namespace: Arc<String>,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub response_flags: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: &'static str,
}

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub generation: Gauge,
    pub diagnostics: Family<SeverityLabels, Gauge>,
    pub active_connections: Gauge,
    pub mirrors_dropped: Counter,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "istio_requests",
            "Requests handled by the gateway",
            requests.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "isthmus_config_reloads",
            "Configuration reloads by result",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "isthmus_config_generation",
            "Generation of the configuration being served",
            generation.clone(),
        );
        let diagnostics = Family::<SeverityLabels, Gauge>::default();
        registry.register(
            "isthmus_config_diagnostics",
            "Diagnostics of the current configuration by severity",
            diagnostics.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "isthmus_downstream_connections_active",
            "Open downstream connections",
            active_connections.clone(),
        );
        let mirrors_dropped = Counter::default();
        registry.register(
            "isthmus_mirror_dropped",
            "Mirror copies not sent (too many in flight, or a body too large to copy)",
            mirrors_dropped.clone(),
        );
        Metrics {
            mirrors_dropped,
            requests,
            reloads,
            generation,
            diagnostics,
            active_connections,
            registry,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The destination labels of one cluster, or of no cluster (`unknown`, as Istio reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationLabels {
    pub service: Arc<String>,
    pub name: Arc<String>,
    pub namespace: Arc<String>,
}

impl DestinationLabels {
    pub fn new(service: &str, namespace: &str) -> Self {
        DestinationLabels {
            service: Arc::new(service.to_string()),
            name: Arc::new(service.split('.').next().unwrap_or("").to_string()),
            namespace: Arc::new(namespace.to_string()),
        }
    }

    pub fn unknown() -> Self {
        let u = Arc::new("unknown".to_string());
        DestinationLabels {
            service: u.clone(),
            name: u.clone(),
            namespace: u,
        }
    }
}
