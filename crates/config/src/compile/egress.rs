//! The registry and policy of forward-proxy ports: a route per ServiceEntry host and port, and
//! the `allow_any` route to `PassthroughCluster`.

use std::sync::Arc;

use super::actions;
use super::services::Registry;
use crate::egress::{ALLOW_ANY_ROUTE, Outbound, OutboundService};
use crate::instance::Instance;
use crate::snapshot::{ActionKind, Forward, Route, RouteAction, WeightedDestination};

/// Istio's name for the route of a sidecar's virtual host that has no VirtualService.
const DEFAULT_ROUTE: &str = "default";

/// The outbound table of a forward-proxy port. Every ServiceEntry host and port gets a cluster
/// here, so their DNS names are resolved (and kept fresh) before the first request.
pub fn outbound(instance: &Instance, registry: &mut Registry<'_>) -> Outbound {
    let services = registry
        .all_services()
        .into_iter()
        .map(|(host, port, cluster_name, i)| OutboundService {
            route: synthesized(DEFAULT_ROUTE, &cluster_name, i),
            host,
            port,
            cluster_name,
        })
        .collect();
    let (name, i) = registry.passthrough();
    Outbound::new(
        instance.outbound_policy,
        services,
        synthesized(ALLOW_ANY_ROUTE, &name, i),
    )
}

/// A route to one cluster with Istio's defaults: no timeout, the default retry policy.
fn synthesized(name: &str, cluster_name: &str, cluster: usize) -> Route {
    let destination = WeightedDestination {
        cluster_name: cluster_name.to_string(),
        cluster: Some(cluster),
        weight: 1,
        headers: Default::default(),
        authority: None,
        path: None,
    };
    let forward = Forward::with(vec![destination], None, None, actions::retry(None), vec![]);
    Route {
        name: name.to_string(),
        virtual_service: String::new(),
        source: Arc::default(),
        matcher: Default::default(),
        action: Arc::new(RouteAction {
            kind: ActionKind::Forward(forward),
            headers: Default::default(),
            fault: None,
            cors: None,
        }),
    }
}
