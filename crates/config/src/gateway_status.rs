//! The `status` the Gateway API asks an implementation to write back, computed from the same
//! decisions that compiled the configuration (which listeners were served, which routes
//! attached where and why not, which backends resolved), so status never disagrees with
//! what the data plane does.
//!
//! This is a pure model: [`GatewayApiStatus::objects`] renders each object's `status` as the
//! API's JSON, without `lastTransitionTime` (the writer keeps those, since only it knows when a
//! condition last changed on the server).

use serde_json::{Map, Value, json};

use crate::instance::GATEWAY_CONTROLLER;

/// The Gateway API group.
pub const GROUP: &str = isthmus_api::gateway_api::GROUP;

/// One condition; `lastTransitionTime` is the writer's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn new(kind: &'static str, status: bool, reason: &'static str, message: &str) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.to_string(),
        }
    }

    fn json(&self, generation: Option<i64>) -> Value {
        let mut c = json!({
            "type": self.kind,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let (Some(g), Some(map)) = (generation, c.as_object_mut()) {
            map.insert("observedGeneration".into(), json!(g));
        }
        c
    }
}

/// Why a route's parent reference accepted it or not (route condition `Accepted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedReason {
    Accepted,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
    NoMatchingParent,
}

impl AcceptedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AcceptedReason::Accepted => "Accepted",
            AcceptedReason::NotAllowedByListeners => "NotAllowedByListeners",
            AcceptedReason::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            AcceptedReason::NoMatchingParent => "NoMatchingParent",
        }
    }
}

/// Whether a route's references resolved (route condition `ResolvedRefs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefsReason {
    ResolvedRefs,
    BackendNotFound,
    RefNotPermitted,
    InvalidKind,
}

impl RefsReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefsReason::ResolvedRefs => "ResolvedRefs",
            RefsReason::BackendNotFound => "BackendNotFound",
            RefsReason::RefNotPermitted => "RefNotPermitted",
            RefsReason::InvalidKind => "InvalidKind",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStatus {
    pub name: String,
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: usize,
    /// Route kinds of the Gateway API group.
    pub supported_kinds: Vec<&'static str>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

/// A parent reference as the route status repeats it (defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRef {
    pub namespace: String,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentStatus {
    pub parent_ref: ParentRef,
    pub accepted: AcceptedReason,
    pub accepted_message: String,
    pub refs: RefsReason,
    pub refs_message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// `HTTPRoute`, `GRPCRoute`, `TLSRoute` or `TCPRoute`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parents: Vec<ParentStatus>,
}

/// The status of every Gateway API object this instance is responsible for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayApiStatus {
    pub classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
}

/// One object's `status`, as the API's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStatus {
    pub group: &'static str,
    pub kind: &'static str,
    /// Empty for cluster-scoped objects (GatewayClass).
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

fn conditions(list: &[Condition], generation: Option<i64>) -> Value {
    Value::Array(list.iter().map(|c| c.json(generation)).collect())
}

impl GatewayApiStatus {
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&GatewayStatus> {
        self.gateways
            .iter()
            .find(|g| g.namespace == namespace && g.name == name)
    }

    pub fn route(&self, kind: &str, namespace: &str, name: &str) -> Option<&RouteStatus> {
        self.routes
            .iter()
            .find(|r| r.kind == kind && r.namespace == namespace && r.name == name)
    }

    /// Every object's `status` as the API's JSON.
    pub fn objects(&self) -> Vec<ObjectStatus> {
        let mut out = Vec::new();
        for c in &self.classes {
            out.push(ObjectStatus {
                group: GROUP,
                kind: "GatewayClass",
                namespace: String::new(),
                name: c.name.clone(),
                status: json!({"conditions": conditions(&c.conditions, c.generation)}),
            });
        }
        for g in &self.gateways {
            let listeners: Vec<Value> = g
                .listeners
                .iter()
                .map(|l| {
                    json!({
                        "name": l.name,
                        "attachedRoutes": l.attached_routes,
                        "supportedKinds": l.supported_kinds.iter()
                            .map(|k| json!({"group": GROUP, "kind": k}))
                            .collect::<Vec<_>>(),
                        "conditions": conditions(&l.conditions, g.generation),
                    })
                })
                .collect();
            out.push(ObjectStatus {
                group: GROUP,
                kind: "Gateway",
                namespace: g.namespace.clone(),
                name: g.name.clone(),
                status: json!({
                    "conditions": conditions(&g.conditions, g.generation),
                    "listeners": listeners,
                }),
            });
        }
        for r in &self.routes {
            let parents: Vec<Value> = r
                .parents
                .iter()
                .map(|p| {
                    let mut parent = Map::new();
                    parent.insert("group".into(), json!(GROUP));
                    parent.insert("kind".into(), json!("Gateway"));
                    parent.insert("namespace".into(), json!(p.parent_ref.namespace));
                    parent.insert("name".into(), json!(p.parent_ref.name));
                    if let Some(s) = &p.parent_ref.section_name {
                        parent.insert("sectionName".into(), json!(s));
                    }
                    if let Some(port) = p.parent_ref.port {
                        parent.insert("port".into(), json!(port));
                    }
                    let accepted = Condition::new(
                        "Accepted",
                        p.accepted == AcceptedReason::Accepted,
                        p.accepted.as_str(),
                        &p.accepted_message,
                    );
                    let refs = Condition::new(
                        "ResolvedRefs",
                        p.refs == RefsReason::ResolvedRefs,
                        p.refs.as_str(),
                        &p.refs_message,
                    );
                    json!({
                        "parentRef": parent,
                        "controllerName": GATEWAY_CONTROLLER,
                        "conditions": conditions(&[accepted, refs], r.generation),
                    })
                })
                .collect();
            out.push(ObjectStatus {
                group: GROUP,
                kind: r.kind,
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                status: json!({"parents": parents}),
            });
        }
        out
    }
}
