//! Compilation: valid resources in, [`Snapshot`] out. Pure and deterministic.
//!
//! The steps follow Istio's translation for a gateway proxy: select the Gateways whose
//! selector matches this instance, group their servers by port, bind the VirtualServices that
//! name those Gateways, intersect hosts into virtual hosts, merge routes in creation order with
//! catch-alls last, and resolve every destination to a cluster of the service registry
//! (ServiceEntries, with DestinationRule subsets). Gateway API resources and Ingresses compile
//! into the same listeners and clusters (see [`gateway_api`] and [`ingress`]), and share ports
//! with Istio's by [`merge::merge`].

mod actions;
mod delegation;
mod egress;
mod gateway_api;
mod ingress;
mod l4;
mod listeners;
mod memo;
mod merge;
mod policy;

pub use policy::{HEALTH_CHECK_ANNOTATION, health_check as parse_health_check};
mod routes;
mod secrets;
mod services;

pub use actions::{grpc_code, parse_retry_on, read_body_file};
pub use memo::RouteMemo;
pub use secrets::{SecretKey, referenced as referenced_secrets};

use isthmus_api::{Diagnostic, Resource};

use crate::instance::Instance;
use crate::snapshot::Snapshot;

/// Compiles resources that passed validation, in creation order (oldest first).
pub fn compile(resources: &[&Resource], instance: &Instance) -> (Snapshot, Vec<Diagnostic>) {
    compile_with(resources, instance, &mut RouteMemo::default())
}

/// [`compile`], reusing the routes `memo` kept from the previous build where they cannot
/// have changed, and keeping this build's for the next. The resources of the previous build
/// must still be alive (see [`memo`]).
pub(crate) fn compile_with(
    resources: &[&Resource],
    instance: &Instance,
    memo: &mut RouteMemo,
) -> (Snapshot, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut registry = services::Registry::new(resources, instance, &mut diags);
    memo.begin(instance);
    registry.memo = std::mem::take(memo);
    let ports = listeners::collect(resources, instance, &mut diags);
    let mut listeners = routes::bind(resources, instance, &ports, &mut registry, &mut diags);
    let (kube, gateway_status) =
        gateway_api::compile(resources, instance, &mut registry, &mut diags);
    merge::merge(&mut listeners, kube, &mut diags);
    let (ingresses, served_ingresses) =
        ingress::compile(resources, instance, &mut registry, &mut diags);
    merge::merge(&mut listeners, ingresses, &mut diags);
    *memo = std::mem::take(&mut registry.memo);
    memo.end();
    let snapshot = Snapshot {
        listeners,
        clusters: registry.into_clusters(),
        path_normalization: instance.path_normalization,
        gateway_status,
        served_ingresses,
    };
    (snapshot, diags)
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "egress_tests.rs"]
mod egress_tests;

#[cfg(test)]
#[path = "compile/gateway_status_tests.rs"]
mod gateway_status_tests;
