//! The Gateway API status of one compilation, from the decisions the other steps made: the
//! served listeners, the attachments and refusals of `attach`, and the backends `backends`
//! could not resolve.

use std::collections::BTreeSet;

use isthmus_api::Resource;

use super::attach::{Attachment, ParentOutcome, route_kind};
use super::listeners::GwListener;
use super::{Context, SelectedGateway};
use crate::gateway_status::{
    AcceptedReason, ClassStatus, Condition, GatewayApiStatus, GatewayStatus, ListenerStatus,
    ParentStatus, RefsReason, RouteStatus,
};
use crate::instance::GATEWAY_CONTROLLER;

pub struct Decisions<'a, 'b> {
    pub gateways: &'b [SelectedGateway<'a>],
    pub listeners: &'b [GwListener<'a>],
    pub routes: &'b [&'a Resource],
    pub attached: &'b [Attachment],
    pub outcomes: &'b [ParentOutcome],
}

pub fn compute(ctx: &Context<'_>, d: &Decisions<'_, '_>) -> GatewayApiStatus {
    GatewayApiStatus {
        classes: classes(ctx),
        gateways: d.gateways.iter().map(|g| gateway(d, g)).collect(),
        routes: routes(ctx, d),
    }
}

/// The instance's GatewayClass, when it is loaded and names Isthmus's controller (a class of
/// another controller is that controller's to report on).
fn classes(ctx: &Context<'_>) -> Vec<ClassStatus> {
    ctx.resources
        .iter()
        .filter_map(|r| match r {
            Resource::GatewayClass(c)
                if c.name == ctx.instance.gateway_class
                    && c.spec.controller_name.as_deref() == Some(GATEWAY_CONTROLLER) =>
            {
                Some(ClassStatus {
                    name: c.name.clone(),
                    generation: c.meta.generation,
                    conditions: vec![Condition::new(
                        "Accepted",
                        true,
                        "Accepted",
                        "Accepted by Isthmus",
                    )],
                })
            }
            _ => None,
        })
        .collect()
}

fn gateway(d: &Decisions<'_, '_>, g: &SelectedGateway<'_>) -> GatewayStatus {
    let gw = g.gateway;
    let served = |i: usize| {
        d.listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.namespace == gw.namespace && l.gateway == gw.name && l.index == i)
    };
    let listeners: Vec<ListenerStatus> = gw
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = spec.name.clone().unwrap_or_default();
            match served(i) {
                Some((li, l)) => {
                    let routes: BTreeSet<usize> = d
                        .attached
                        .iter()
                        .filter(|a| a.listener == li)
                        .map(|a| a.route)
                        .collect();
                    ListenerStatus {
                        name,
                        attached_routes: routes.len(),
                        supported_kinds: l.kinds.iter().map(|k| k.name()).collect(),
                        conditions: vec![
                            Condition::new("Accepted", true, "Accepted", "Accepted"),
                            Condition::new("Programmed", true, "Programmed", "Programmed"),
                            Condition::new("ResolvedRefs", true, "ResolvedRefs", "Resolved"),
                        ],
                    }
                }
                // Why it is not served is in the diagnostics (`isthmus validate`); the
                // condition only says that it is not.
                None => {
                    let why = "not served; see the diagnostics of isthmus validate";
                    ListenerStatus {
                        name,
                        attached_routes: 0,
                        supported_kinds: Vec::new(),
                        conditions: vec![
                            Condition::new("Accepted", false, "Invalid", why),
                            Condition::new("Programmed", false, "Invalid", why),
                            Condition::new("ResolvedRefs", true, "ResolvedRefs", "Resolved"),
                        ],
                    }
                }
            }
        })
        .collect();
    let any = listeners
        .iter()
        .any(|l| l.conditions.iter().all(|c| c.status));
    let programmed = if any {
        Condition::new("Programmed", true, "Programmed", "Programmed")
    } else {
        Condition::new("Programmed", false, "Invalid", "no listener is served")
    };
    GatewayStatus {
        namespace: gw.namespace.clone(),
        name: gw.name.clone(),
        generation: gw.meta.generation,
        conditions: vec![
            Condition::new("Accepted", true, "Accepted", "Accepted"),
            programmed,
        ],
        listeners,
    }
}

/// Parents of each route that are Gateways this instance serves; other parents belong to
/// other implementations (or other instances, with `--gateway`), which report on them.
fn routes(ctx: &Context<'_>, d: &Decisions<'_, '_>) -> Vec<RouteStatus> {
    let ours = |ns: &str, name: &str| {
        d.gateways
            .iter()
            .any(|g| g.gateway.namespace == ns && g.gateway.name == name)
    };
    let mut out = Vec::new();
    for (ri, r) in d.routes.iter().enumerate() {
        let Some(kind) = route_kind(r) else { continue };
        let (refs, refs_message) = ctx
            .unresolved_ref(r)
            .unwrap_or((RefsReason::ResolvedRefs, "Resolved".to_string()));
        let parents: Vec<ParentStatus> = d
            .outcomes
            .iter()
            .filter(|o| o.route == ri && ours(&o.parent_ref.namespace, &o.parent_ref.name))
            .filter_map(|o| {
                let (accepted, accepted_message) = match &o.result {
                    Ok(()) => (AcceptedReason::Accepted, "Accepted".to_string()),
                    Err(Some(why)) => (why.reason?, why.message.clone()),
                    Err(None) => return None,
                };
                Some(ParentStatus {
                    parent_ref: o.parent_ref.clone(),
                    accepted,
                    accepted_message,
                    refs,
                    refs_message: refs_message.clone(),
                })
            })
            .collect();
        if parents.is_empty() {
            continue;
        }
        out.push(RouteStatus {
            kind: kind.name(),
            namespace: r.namespace().to_string(),
            name: r.name().to_string(),
            generation: r.meta().generation,
            parents,
        });
    }
    out
}
