//! TLSRoute and TCPRoute: weighted backends of a connection. Invalid backends keep their
//! weight without a cluster, so connections of their share are closed (the specification's
//! "reject the connection" in proportion to weight).

use isthmus_api::gateway_api::route::L4RouteSpec;
use isthmus_api::{Diagnostic, Object, Resource};

use super::Context;
use super::backends::{self, Target};
use crate::compile::services::Registry;
use crate::diag::subject;
use crate::snapshot::{Forward, WeightedDestination};

/// The forward of a TLSRoute or TCPRoute: its first rule (a rule has no match, so a later one
/// could never be chosen).
pub fn forward(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    r: &Resource,
    o: &Object<L4RouteSpec>,
    diags: &mut Vec<Diagnostic>,
) -> Forward {
    if o.spec.rules.len() > 1 {
        diags.push(subject(r).warning(
            "spec.rules[1]",
            "rules of a TLSRoute or TCPRoute have no match, so only the first is served",
        ));
    }
    let Some(rule) = o.spec.rules.first() else {
        return Forward::new(Vec::new());
    };
    let dests = rule
        .backend_refs
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let field = format!("spec.rules[0].backendRefs[{k}]");
            let target = Target {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: b.name.as_deref(),
                namespace: b.namespace.as_deref(),
                port: b.port,
            };
            let (cluster_name, cluster) = backends::resolve(
                ctx,
                registry,
                r,
                &field,
                &target,
                "connections of its share are closed",
                diags,
            );
            WeightedDestination {
                cluster_name,
                cluster,
                weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
                headers: Default::default(),
                authority: None,
                path: None,
            }
        })
        .collect();
    let f = Forward::new(dests);
    // Weight 0 everywhere sends nothing anywhere: no destination, so connections are closed.
    if f.total_weight() == 0 {
        return Forward::new(Vec::new());
    }
    f
}
