//! A cluster's traffic policy as the data plane uses it: load balancing, circuit breakers,
//! connection settings, outlier detection and active health checks, compiled from the
//! DestinationRule levels Istio merges (top level, port level, subset) with Istio's defaults.

use serde::Serialize;

/// Everything a DestinationRule `trafficPolicy` sets for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterPolicy {
    pub load_balancer: LoadBalancer,
    pub limits: Limits,
    pub connection: ConnectionSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierDetection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Slow start of endpoints added after the cluster was created (ROUND_ROBIN and
    /// LEAST_REQUEST only, as in Istio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// Below this share of available endpoints (percent), ejections and failed health checks
    /// are ignored and every endpoint is used (Envoy's panic threshold; Istio's
    /// `minHealthPercent`, 0 when outlier detection is configured, else Envoy's 50).
    pub panic_threshold: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Istio's default (`LEAST_REQUEST` since 1.14 is the mesh default for `UNSPECIFIED`).
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
    /// The request goes to the address it was meant for (egress; one endpoint here).
    Passthrough,
    RingHash {
        key: HashKey,
        minimum_ring_size: u64,
    },
    Maglev {
        key: HashKey,
        table_size: u64,
    },
}

/// Envoy's slow start: a new endpoint's weight grows from `min_percent` to full over
/// `duration_ms`, as `(age / duration)^(1 / aggression)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warmup {
    pub duration_ms: u64,
    pub min_percent: f64,
    pub aggression: f64,
}

impl Eq for Warmup {}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(String),
    /// A cookie; when absent and `ttl_secs` is set, the gateway generates one and sets it on
    /// the response, as Envoy does.
    Cookie {
        name: String,
        path: Option<String>,
        ttl_secs: Option<u64>,
    },
    SourceIp,
    QueryParameter(String),
}

/// Envoy's circuit breakers for the default priority: overflow answers 503 with
/// `x-envoy-overloaded: true`. Istio's defaults are all 2^32-1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: u32::MAX,
            max_pending_requests: u32::MAX,
            max_requests: u32::MAX,
            max_retries: u32::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionSettings {
    pub connect_timeout_ms: u64,
    /// Idle time after which an upstream HTTP connection is closed (Istio: 1 h).
    pub idle_timeout_ms: u64,
    /// Idle time after which a proxied TCP connection is closed (Istio: 1 h).
    pub tcp_idle_timeout_ms: u64,
    /// 0 is unlimited.
    pub max_requests_per_connection: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connection_duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<TcpKeepalive>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            connect_timeout_ms: 10_000,
            idle_timeout_ms: 3_600_000,
            tcp_idle_timeout_ms: 3_600_000,
            max_requests_per_connection: 0,
            max_connection_duration_ms: None,
            keepalive: None,
        }
    }
}

/// TCP keep-alive probes; unset fields use the operating system's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcpKeepalive {
    pub time_secs: Option<u64>,
    pub interval_secs: Option<u64>,
    pub probes: Option<u32>,
}

/// Envoy's consecutive-error outlier detection with Istio's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetection {
    /// 0 disables the check.
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub consecutive_local_origin_failures: u32,
    /// Connect failures, resets and timeouts count apart from upstream answers.
    pub split_external_local_origin_errors: bool,
    pub interval_ms: u64,
    pub base_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 0,
            consecutive_local_origin_failures: 5,
            split_external_local_origin_errors: false,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 10,
        }
    }
}

/// Active health checking, from the DestinationRule annotation `isthmus.io/health-check`
/// (Istio's API has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// A GET of `path`; healthy if the status is in one of the inclusive ranges.
    Http {
        path: String,
        host: Option<String>,
        expected_statuses: Vec<(u16, u16)>,
    },
    /// Healthy if a TCP connection opens.
    Tcp,
}
