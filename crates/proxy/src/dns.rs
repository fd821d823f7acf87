//! DNS resolution of `resolution: DNS` ServiceEntries: every address of every name, refreshed
//! when the answer's TTL runs out.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use isthmus_config::snapshot::DnsTarget;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clusters::{ClusterState, EndpointSpec};

/// Refresh bounds: answers with a zero TTL are not re-asked in a busy loop, and long TTLs still
/// notice changes within minutes.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Retry interval after a failed lookup (Istio waits 60 s; a gateway should recover sooner).
const RETRY: Duration = Duration::from_secs(5);

fn resolver() -> Option<&'static TokioResolver> {
    static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            let mut builder = TokioResolver::builder_tokio().unwrap_or_else(|e| {
                tracing::warn!("cannot read the system DNS configuration ({e}); using defaults");
                TokioResolver::builder_with_config(
                    ResolverConfig::default(),
                    TokioRuntimeProvider::default(),
                )
            });
            builder.options_mut().use_hosts_file = ResolveHosts::Always;
            builder
                .build()
                .map_err(|e| tracing::error!("cannot build a DNS resolver: {e}"))
                .ok()
        })
        .as_ref()
}

pub fn spawn(state: Arc<ClusterState>, targets: Vec<DnsTarget>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (found, refresh) = resolve_all(&targets).await;
            if let Some(found) = found {
                state.set_endpoints(found);
            }
            tokio::time::sleep_until(refresh).await;
        }
    })
}

/// Resolves every target; `None` if any lookup failed (the last good endpoints then stay).
async fn resolve_all(targets: &[DnsTarget]) -> (Option<Vec<EndpointSpec>>, Instant) {
    let now = Instant::now();
    let mut refresh = now + MAX_REFRESH;
    let mut out = Vec::new();
    for t in targets {
        if let Ok(ip) = t.hostname.parse::<IpAddr>() {
            out.push(spec(t, SocketAddr::new(ip, t.port)));
            continue;
        }
        let Some(resolver) = resolver() else {
            return (None, now + RETRY);
        };
        match resolver.lookup_ip(t.hostname.as_str()).await {
            Ok(answer) => {
                let valid = Instant::from_std(answer.valid_until());
                refresh = refresh.min(valid.max(now + MIN_REFRESH));
                out.extend(answer.iter().map(|ip| spec(t, SocketAddr::new(ip, t.port))));
            }
            Err(e) => {
                tracing::warn!(host = %t.hostname, "DNS lookup failed: {e}");
                return (None, now + RETRY);
            }
        }
    }
    (Some(out), refresh)
}

fn spec(t: &DnsTarget, address: SocketAddr) -> EndpointSpec {
    EndpointSpec {
        address,
        weight: t.weight,
        priority: t.priority,
    }
}
