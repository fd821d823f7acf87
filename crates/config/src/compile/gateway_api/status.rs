//! The Gateway API status of one compilation, from the decisions the other steps made: the
//! served listeners, the attachments and refusals of `attach`, and the backends `backends`
//! could not resolve.

use std::collections::BTreeSet;

use isthmus_api::Resource;

use super::attach::{Attachment, ParentOutcome, route_kind};
use super::listeners::{GwListener, ListenerFault, RefusedListener};
use super::{Context, SelectedGateway};
use crate::gateway_status::{
    AcceptedReason, ClassStatus, Condition, GatewayApiStatus, GatewayStatus, ListenerStatus,
    ParentStatus, RefsReason, RouteStatus,
};
use crate::instance::GATEWAY_CONTROLLER;

pub struct Decisions<'a, 'b> {
    pub gateways: &'b [SelectedGateway<'a>],
    pub listeners: &'b [GwListener<'a>],
    pub refused: &'b [RefusedListener<'a>],
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
    let listeners: Vec<ListenerStatus> = (0..gw.spec.listeners.len())
        .map(|i| listener(d, gw, i))
        .collect();
    let served = listeners.iter().filter(|l| is_served(l)).count();
    let accepted = if served == listeners.len() {
        Condition::new("Accepted", true, "Accepted", "Accepted")
    } else {
        // True while at least one listener is served: the Gateway as a whole still is.
        let why = format!(
            "{} of {} listeners are not valid",
            listeners.len() - served,
            listeners.len()
        );
        Condition::new("Accepted", served > 0, "ListenersNotValid", &why)
    };
    let programmed = if served > 0 {
        Condition::new("Programmed", true, "Programmed", "Programmed")
    } else {
        Condition::new("Programmed", false, "Invalid", "no listener is served")
    };
    GatewayStatus {
        namespace: gw.namespace.clone(),
        name: gw.name.clone(),
        generation: gw.meta.generation,
        conditions: vec![accepted, programmed],
        listeners,
    }
}

fn is_served(l: &ListenerStatus) -> bool {
    l.conditions
        .iter()
        .any(|c| c.kind == "Programmed" && c.status)
}

/// The status of listener `i` of a Gateway: served (its attached routes counted), or refused
/// with the condition its fault names.
fn listener(
    d: &Decisions<'_, '_>,
    gw: &isthmus_api::Object<isthmus_api::gateway_api::gateway::GatewaySpec>,
    i: usize,
) -> ListenerStatus {
    let name = gw
        .spec
        .listeners
        .get(i)
        .and_then(|l| l.name.clone())
        .unwrap_or_default();
    let same = |ns: &str, gateway: &str, index: usize| {
        ns == gw.namespace && gateway == gw.name && index == i
    };
    if let Some((li, l)) = d
        .listeners
        .iter()
        .enumerate()
        .find(|(_, l)| same(l.namespace, l.gateway, l.index))
    {
        let routes: BTreeSet<usize> = d
            .attached
            .iter()
            .filter(|a| a.listener == li)
            .map(|a| a.route)
            .collect();
        return ListenerStatus {
            name,
            attached_routes: routes.len(),
            supported_kinds: l.kinds.iter().map(|k| k.name()).collect(),
            conditions: listener_conditions(None, l.invalid_kinds.as_deref()),
        };
    }
    let refused = d
        .refused
        .iter()
        .find(|r| same(r.namespace, r.gateway, r.index));
    ListenerStatus {
        name,
        attached_routes: 0,
        supported_kinds: refused
            .map(|r| r.kinds.iter().map(|k| k.name()).collect())
            .unwrap_or_default(),
        conditions: match refused {
            Some(r) => listener_conditions(Some(&r.fault), r.invalid_kinds.as_deref()),
            None => listener_conditions(
                Some(&ListenerFault::NotAccepted {
                    reason: "Invalid",
                    message: "not served; see the diagnostics of isthmus validate".into(),
                }),
                None,
            ),
        },
    }
}

/// The four listener conditions of the specification, from what kept the listener from being
/// served (if anything) and the route kinds it could not admit.
fn listener_conditions(
    fault: Option<&ListenerFault>,
    invalid_kinds: Option<&str>,
) -> Vec<Condition> {
    let mut accepted = Condition::new("Accepted", true, "Accepted", "Accepted");
    let mut refs = match invalid_kinds {
        Some(why) => Condition::new("ResolvedRefs", false, "InvalidRouteKinds", why),
        None => Condition::new("ResolvedRefs", true, "ResolvedRefs", "Resolved"),
    };
    let mut conflicted = Condition::new("Conflicted", false, "NoConflicts", "No conflicts");
    let programmed = match fault {
        None => Condition::new("Programmed", true, "Programmed", "Programmed"),
        Some(_) => Condition::new("Programmed", false, "Invalid", "the listener is not served"),
    };
    match fault {
        None => {}
        Some(ListenerFault::NotAccepted { reason, message }) => {
            accepted = Condition::new("Accepted", false, reason, message);
        }
        Some(ListenerFault::Unresolved { reason, message }) => {
            refs = Condition::new("ResolvedRefs", false, reason, message);
        }
        Some(ListenerFault::Conflicted { reason, message }) => {
            accepted = Condition::new("Accepted", false, reason, message);
            conflicted = Condition::new("Conflicted", true, reason, message);
        }
    }
    vec![accepted, programmed, refs, conflicted]
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
