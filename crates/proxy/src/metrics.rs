//! Istio's standard request metrics and the gateway's own health series, in one registry that
//! the admin server encodes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The labels of `istio_requests_total` as an Istio gateway reports them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
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
        Metrics {
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
