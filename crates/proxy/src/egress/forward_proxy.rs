//! Forward-proxy ports: a request that no virtual host takes goes where the service registry
//! and the outbound traffic policy say, as it would from a sidecar: the ServiceEntry that
//! declares its host and port, else `PassthroughCluster` (`ALLOW_ANY`) or a 502 from the
//! `block_all` route (`REGISTRY_ONLY`).

use bytes::Bytes;
use http::{Response, StatusCode};
use isthmus_config::egress::{
    BLACKHOLE_CLUSTER, Outbound, OutboundDecision, PASSTHROUGH_CLUSTER, destination_port,
};
use isthmus_config::snapshot::Route;

use crate::local_reply::{ResponseBody, local_response};
use crate::metrics::DestinationLabels;

/// What a forward-proxy port does with a request that no virtual host takes.
pub enum Fallback<'a> {
    /// Forward by this route. Metrics of a passed-through request name its host as
    /// `destination_service` and `PassthroughCluster` as `destination_service_name`.
    Route(&'a Route, Option<DestinationLabels>),
    /// Refused under `REGISTRY_ONLY`: the 502 to answer.
    Blocked(Box<Response<ResponseBody>>),
}

/// The decision for `host` (lower case, no port) written as `authority` in a request with
/// `scheme`.
pub fn fallback<'a>(
    outbound: &'a Outbound,
    host: &str,
    authority: &str,
    scheme: &str,
) -> Fallback<'a> {
    let port = destination_port(authority, scheme);
    match outbound.decide(host, port) {
        OutboundDecision::Registered(svc) => Fallback::Route(&svc.route, None),
        OutboundDecision::Passthrough(route) => {
            Fallback::Route(route, Some(external(host, PASSTHROUGH_CLUSTER)))
        }
        OutboundDecision::Blocked => Fallback::Blocked(Box::new(blocked(host, port))),
    }
}

/// Istio's `block_all` route: a direct 502 with an empty body (no response flag: a route did
/// answer), logged, and counted with `destination_service_name="BlackHoleCluster"`.
pub fn blocked(host: &str, port: u16) -> Response<ResponseBody> {
    tracing::info!(
        host,
        port,
        "REGISTRY_ONLY: no ServiceEntry declares this host and port; refused (BlackHoleCluster)"
    );
    let mut resp = local_response(StatusCode::BAD_GATEWAY, Bytes::new());
    resp.extensions_mut()
        .insert(external(host, BLACKHOLE_CLUSTER));
    resp
}

/// The destination labels Istio's telemetry gives traffic outside the registry: the
/// requested host as the service, the cluster as its name, namespace unknown.
pub fn external(host: &str, cluster: &'static str) -> DestinationLabels {
    DestinationLabels {
        service: host.to_string(),
        service_name: cluster.to_string(),
        ..DestinationLabels::unknown()
    }
}
