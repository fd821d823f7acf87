//! Active health checks (the DestinationRule annotation `isthmus.io/health-check`): every
//! interval, each endpoint of the cluster is probed, by an HTTP GET or a TCP connect; it leaves
//! the rotation after `unhealthyThreshold` failures in a row and comes back after
//! `healthyThreshold` successes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderValue, header};
use isthmus_config::policy::{HealthCheck, HealthCheckKind};
use tokio::task::JoinHandle;

use crate::body::UpstreamBody;
use crate::clusters::{ClusterState, Endpoint};
use crate::pool::{ConnKey, ConnSpec, Outgoing, PoolSettings, RequestHead};

#[derive(Clone, Copy)]
struct Streak {
    successes: u32,
    failures: u32,
    /// Not checked yet: during startup one passing check is enough, as in Envoy.
    fresh: bool,
}

impl Default for Streak {
    fn default() -> Self {
        Streak {
            successes: 0,
            failures: 0,
            fresh: true,
        }
    }
}

pub fn spawn(cluster: Arc<ClusterState>, check: HealthCheck) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
        let interval = Duration::from_millis(check.interval_ms);
        loop {
            let endpoints = cluster.endpoints();
            let probes = endpoints.iter().map(|e| probe(&cluster, e, &check));
            let results = futures_util::future::join_all(probes).await;
            streaks.retain(|a, _| endpoints.iter().any(|e| e.address == *a));
            for (e, ok) in endpoints.iter().zip(results) {
                let s = streaks.entry(e.address).or_default();
                if ok {
                    s.successes += 1;
                    s.failures = 0;
                } else {
                    s.failures += 1;
                    s.successes = 0;
                }
                let was = e.health.checked_healthy.load(Ordering::Relaxed);
                let now = if was {
                    s.failures < check.unhealthy_threshold
                } else {
                    s.successes >= check.healthy_threshold || (s.fresh && ok)
                };
                s.fresh = false;
                if now != was {
                    e.health.checked_healthy.store(now, Ordering::Relaxed);
                    tracing::info!(cluster = %cluster.name, endpoint = %e.address, healthy = now, "health check changed the endpoint's state");
                    cluster.health_changed();
                }
            }
            tokio::time::sleep(interval).await;
        }
    })
}

/// One probe within the timeout.
async fn probe(cluster: &ClusterState, e: &Endpoint, check: &HealthCheck) -> bool {
    let timeout = Duration::from_millis(check.timeout_ms);
    match &check.kind {
        HealthCheckKind::Tcp => matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(e.address)).await,
            Ok(Ok(_))
        ),
        HealthCheckKind::Http {
            path,
            host,
            expected_statuses,
        } => {
            let host = host
                .clone()
                .unwrap_or_else(|| cluster.service().to_string());
            let get = http_get(cluster, e, path, &host, timeout);
            match tokio::time::timeout(timeout, get).await {
                Ok(Some(status)) => expected_statuses
                    .iter()
                    .any(|(lo, hi)| (*lo..=*hi).contains(&status)),
                _ => false,
            }
        }
    }
}

/// The status of a GET on a fresh connection (TLS if the cluster originates it).
async fn http_get(
    cluster: &ClusterState,
    e: &Endpoint,
    path: &str,
    host: &str,
    timeout: Duration,
) -> Option<u16> {
    let settings = cluster.settings();
    let key = match &settings.tls {
        None => ConnKey::plain(),
        Some(tls) => {
            let config = tls.for_version(false)?.clone();
            let sni = tls.sni.clone().unwrap_or_else(|| host.to_string());
            ConnKey::tls(config, rustls_pki_types::ServerName::try_from(sni).ok()?)
        }
    };
    let pool = PoolSettings {
        connect_timeout: timeout,
        ..PoolSettings::default()
    };
    // Health-check connections are not the endpoint's pool: they count in a gauge of their own.
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let spec = ConnSpec {
        key,
        settings: &pool,
        limits: None,
        open: &open,
    };
    // Checked as a request target, so nothing in it can break the request line.
    let path: http::uri::PathAndQuery = path.parse().ok()?;
    let headers = http::HeaderMap::new();
    let set = [
        (&header::HOST, HeaderValue::from_str(host).ok()?),
        // Envoy's health checker identifies itself this way; backends often special-case it.
        (&header::USER_AGENT, HeaderValue::from_static("Envoy/HC")),
        (&header::CONNECTION, HeaderValue::from_static("close")),
    ];
    let head = RequestHead {
        method: &http::Method::GET,
        path: path.as_str(),
        headers: &headers,
        set: &set,
        rendered: &[],
    };
    let req = Outgoing::new(&head, UpstreamBody::empty());
    let status = crate::pool::http1_status(e.address, &spec, req)
        .await
        .ok()?;
    Some(status.as_u16())
}
