//! The Kubernetes Gateway API compiled into the same listeners, virtual hosts, routes and
//! clusters as Istio's resources, so the data plane serves both alike.
//!
//! The steps follow the specification: choose the Gateways of this instance's GatewayClass,
//! turn their listeners into ports (HTTP, HTTPS and TLS chains chosen by SNI, TCP), attach the
//! routes whose `parentRefs` a listener accepts (`allowedRoutes`, hostname intersection), and
//! build each listener's route table in the specification's precedence order. Backends are
//! Services, looked up as `NAME.NAMESPACE.svc.DOMAIN` in the service registry.

mod attach;
mod backends;
mod filters;
mod http;
mod l4;
mod listeners;
mod status;
mod tables;

use std::cell::RefCell;
use std::collections::BTreeMap;

use isthmus_api::gateway_api::ReferenceGrantSpec;
use isthmus_api::gateway_api::gateway::GatewaySpec;
use isthmus_api::k8s::NAMESPACE_NAME_LABEL;
use isthmus_api::{Diagnostic, Object, Resource, ResourceKey};

use super::services::Registry;
use crate::diag::subject;
use crate::gateway_status::{GatewayApiStatus, RefsReason};
use crate::instance::{GATEWAY_CONTROLLER, Instance};
use crate::snapshot::Listener;

/// Compiles the Gateway API resources among `resources` (in creation order) into listeners by
/// port; their clusters go into `registry`. Also the status the objects should report.
pub fn compile(
    resources: &[&Resource],
    instance: &Instance,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> (BTreeMap<u16, Listener>, GatewayApiStatus) {
    let ctx = Context::new(resources, instance);
    let gateways = select_gateways(resources, instance, diags);
    let collected = listeners::collect(&ctx, &gateways, diags);
    let listeners = &collected.served;
    let routes: Vec<&Resource> = resources
        .iter()
        .copied()
        .filter(|r| attach::route_kind(r).is_some())
        .collect();
    let (attached, outcomes) = attach::attach(&ctx, listeners, &routes, diags);
    let built = tables::build(&ctx, listeners, &routes, &attached, registry, diags);
    // After the tables: building them is what resolves the backends.
    let status = status::compute(
        &ctx,
        &status::Decisions {
            gateways: &gateways,
            listeners,
            refused: &collected.refused,
            routes: &routes,
            attached: &attached,
            outcomes: &outcomes,
        },
    );
    (built, status)
}

/// The Secrets the `certificateRefs` of Gateways of the instance's class name and are
/// permitted to use (their own namespace, or one whose ReferenceGrant allows it).
pub fn referenced_secrets(resources: &[&Resource], instance: &Instance) -> Vec<(String, String)> {
    let ctx = Context::new(resources, instance);
    let mut out = Vec::new();
    for g in select_gateways(resources, instance, &mut Vec::new()) {
        let gw = g.gateway;
        let from = Referrer {
            kind: "Gateway",
            namespace: &gw.namespace,
        };
        let refs = gw
            .spec
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| &t.certificate_refs);
        for r in refs {
            let core_secret = r.group.as_deref().unwrap_or("").is_empty()
                && r.kind.as_deref().unwrap_or("Secret") == "Secret";
            let name = r.name.as_deref().unwrap_or("");
            let ns = r.namespace.as_deref().unwrap_or(&gw.namespace);
            if core_secret && !name.is_empty() && ctx.permitted(from, "Secret", ns, name) {
                out.push((ns.to_string(), name.to_string()));
            }
        }
    }
    out
}

/// What every step needs to look up: namespaces (for selectors) and ReferenceGrants.
pub struct Context<'a> {
    pub resources: &'a [&'a Resource],
    pub instance: &'a Instance,
    namespaces: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    grants: Vec<&'a Object<ReferenceGrantSpec>>,
    /// The first backend reference of each route that did not resolve, with why. A cell,
    /// because resolution happens deep in table building, which only reads the context.
    unresolved: RefCell<BTreeMap<ResourceKey, (RefsReason, String)>>,
}

/// The kind and namespace of an object that refers to another, for ReferenceGrant checks.
#[derive(Debug, Clone, Copy)]
pub struct Referrer<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
}

impl<'a> Context<'a> {
    pub fn new(resources: &'a [&'a Resource], instance: &'a Instance) -> Self {
        let mut namespaces = BTreeMap::new();
        let mut grants = Vec::new();
        for r in resources {
            match r {
                Resource::Namespace(ns) => {
                    namespaces.insert(ns.name.as_str(), &ns.meta.labels);
                }
                Resource::ReferenceGrant(g) => grants.push(g),
                _ => {}
            }
        }
        Context {
            resources,
            instance,
            namespaces,
            grants,
            unresolved: RefCell::default(),
        }
    }

    /// Records that a backend reference of `route` did not resolve (the first one wins).
    pub fn unresolved(&self, route: &Resource, reason: RefsReason, message: &str) {
        self.unresolved
            .borrow_mut()
            .entry(route.key())
            .or_insert_with(|| (reason, message.to_string()));
    }

    /// Why a backend reference of `route` did not resolve, if one did not.
    pub fn unresolved_ref(&self, route: &Resource) -> Option<(RefsReason, String)> {
        self.unresolved.borrow().get(&route.key()).cloned()
    }

    /// The labels of namespace `ns`: those of its loaded Namespace object, and always the
    /// `kubernetes.io/metadata.name` label Kubernetes gives every namespace.
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(ns)
            .map(|l| (*l).clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
        labels
    }

    /// Whether `from` may refer to the `to_kind` (`Service` or `Secret`, of the core group)
    /// named `to_name` in namespace `to_ns`: always within a namespace, and across namespaces
    /// when a ReferenceGrant in `to_ns` allows it.
    pub fn permitted(&self, from: Referrer<'_>, to_kind: &str, to_ns: &str, to_name: &str) -> bool {
        if from.namespace == to_ns {
            return true;
        }
        self.grants
            .iter()
            .filter(|g| g.namespace == to_ns)
            .any(|g| {
                let from_ok = g.spec.from.iter().any(|f| {
                    f.group.as_deref() == Some(isthmus_api::gateway_api::GROUP)
                        && f.kind.as_deref() == Some(from.kind)
                        && f.namespace.as_deref() == Some(from.namespace)
                });
                let to_ok = g.spec.to.iter().any(|t| {
                    t.group.as_deref().unwrap_or("").is_empty()
                        && t.kind.as_deref() == Some(to_kind)
                        && t.name
                            .as_deref()
                            .is_none_or(|n| n.is_empty() || n == to_name)
                });
                from_ok && to_ok
            })
    }
}

/// A Gateway this instance serves.
pub struct SelectedGateway<'a> {
    pub resource: &'a Resource,
    pub gateway: &'a Object<GatewaySpec>,
}

/// The Gateways of this instance's class (and only the `--gateway` one, if given). A loaded
/// GatewayClass of that name must name Isthmus's controller; without one, the class is taken
/// to be Isthmus's, since files often carry no GatewayClass.
fn select_gateways<'a>(
    resources: &[&'a Resource],
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> Vec<SelectedGateway<'a>> {
    if !class_is_ours(resources, instance, diags) {
        return Vec::new();
    }
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::KubeGateway(g) => Some(SelectedGateway {
                resource: r,
                gateway: g,
            }),
            _ => None,
        })
        .filter(|g| {
            let class = g.gateway.spec.gateway_class_name.as_deref().unwrap_or("");
            let ours = class == instance.gateway_class;
            if !ours {
                diags.push(subject(g.resource).note(
                    "spec.gatewayClassName",
                    format!(
                        "class {class:?} is not this instance's GatewayClass {:?} (--gateway-class); not served here",
                        instance.gateway_class
                    ),
                ));
            }
            ours
        })
        .filter(|g| {
            instance
                .gateway
                .as_ref()
                .is_none_or(|(ns, name)| *ns == g.gateway.namespace && *name == g.gateway.name)
        })
        .collect()
}

/// Whether the GatewayClass this instance serves belongs to Isthmus.
fn class_is_ours(
    resources: &[&Resource],
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    let class = resources.iter().find_map(|r| match r {
        Resource::GatewayClass(c) if c.name == instance.gateway_class => Some((*r, c)),
        _ => None,
    });
    let Some((r, c)) = class else { return true };
    let controller = c.spec.controller_name.as_deref().unwrap_or("");
    if controller == GATEWAY_CONTROLLER {
        return true;
    }
    diags.push(subject(r).warning(
        "spec.controllerName",
        format!(
            "GatewayClass {} names controller {controller:?}, not {GATEWAY_CONTROLLER:?}; its Gateways are not served here",
            c.name
        ),
    ));
    false
}

#[cfg(test)]
#[path = "gateway_api_tests.rs"]
mod tests;
