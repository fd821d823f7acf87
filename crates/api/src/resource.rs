//! A loaded resource: its identity, metadata, typed body and origin.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::gateway_api::gateway::GatewaySpec as KubeGatewaySpec;
use crate::gateway_api::route::{GrpcRouteSpec, HttpRouteSpec, L4RouteSpec};
use crate::gateway_api::{GatewayClassSpec, ReferenceGrantSpec};
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::gateway::GatewaySpec;
use crate::istio::service_entry::ServiceEntrySpec;
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::k8s::{IngressClassSpec, IngressSpec, NamespaceSpec, SecretBody};
use crate::position::LineIndex;

/// The kinds Isthmus reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// Istio's `networking.istio.io` Gateway.
    Gateway,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Secret,
    Namespace,
    GatewayClass,
    /// The Gateway API's `gateway.networking.k8s.io` Gateway.
    KubeGateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    TcpRoute,
    ReferenceGrant,
    Ingress,
    IngressClass,
}

impl Kind {
    /// The name users write in `kind`; the Gateway API's Gateway carries its group, as
    /// `kubectl` spells it, so that it is not mistaken for Istio's.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Secret => "Secret",
            Kind::Namespace => "Namespace",
            Kind::GatewayClass => "GatewayClass",
            Kind::KubeGateway => "Gateway.gateway.networking.k8s.io",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
        }
    }

    /// Kinds that are not namespaced: their objects have an empty namespace.
    pub fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Kind::Namespace | Kind::GatewayClass | Kind::IngressClass
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind namespace/name`: what `kubectl apply` would treat as one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The parts of Kubernetes `ObjectMeta` that change behaviour. Other metadata fields
/// (uid, resourceVersion, managedFields...) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub creation_timestamp: Option<String>,
    /// Set by the API server on every spec change; status conditions report the generation
    /// they were computed from (`observedGeneration`).
    pub generation: Option<i64>,
}

/// Where a resource came from: the file, the line of its document, and the lines of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    /// Position of the object in its file, counting documents and `List` items; breaks ties
    /// of creation time the way `kubectl apply` order would.
    pub ordinal: usize,
    lines: Arc<LineIndex>,
    /// `items[3].` for an item of a `List`, empty otherwise.
    prefix: String,
    /// Fields the schema does not know (already reported as unknown).
    unknown: Arc<[String]>,
    /// A hash of the object's body as read (`spec`, or a Secret's data), when it was read
    /// from text: a version of its content that costs nothing to ask for later.
    body_hash: Option<u64>,
}

impl Origin {
    pub fn new(file: Arc<str>, ordinal: usize, lines: Arc<LineIndex>, prefix: String) -> Self {
        Origin {
            file,
            ordinal,
            lines,
            prefix,
            unknown: Arc::from(Vec::new()),
            body_hash: None,
        }
    }

    /// Records the hash of the object's body as read.
    pub fn set_body_hash(&mut self, hash: u64) {
        self.body_hash = Some(hash);
    }

    /// The hash of the object's body as read: equal bodies give equal hashes, whatever their
    /// formatting, comments, key order or position in the file. `None` for objects built in
    /// code.
    pub fn body_hash(&self) -> Option<u64> {
        self.body_hash
    }

    /// Records the fields the schema does not know.
    pub fn set_unknown(&mut self, paths: Vec<String>) {
        self.unknown = Arc::from(paths);
    }

    /// Whether `field` is, or lies under, a field the schema does not know.
    pub fn is_unknown(&self, field: &str) -> bool {
        self.unknown.iter().any(|u| {
            field == u
                || field
                    .strip_prefix(u.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// An origin for resources built in code (tests, defaults): every field is on line 0.
    pub fn synthetic(file: &str) -> Self {
        Origin::new(file.into(), 0, Arc::default(), String::new())
    }

    /// The line of the object itself.
    pub fn line(&self) -> usize {
        if self.prefix.is_empty() {
            self.lines.start
        } else {
            self.lines.line_of(self.prefix.trim_end_matches('.'))
        }
    }

    /// The line of `field` (a path such as `spec.http[0].route`), or of its nearest parent.
    pub fn line_of(&self, field: &str) -> usize {
        if self.prefix.is_empty() {
            self.lines.line_of(field)
        } else {
            self.lines.line_of(&format!("{}{field}", self.prefix))
        }
    }

    /// Calls `f(path, shape)` for every field present in the object, in document order (a
    /// field before the fields under it), with paths relative to the object; see
    /// [`LineIndex::walk`].
    pub fn walk_fields(&self, f: impl FnMut(&str, &str) -> bool) {
        self.lines.walk(self.prefix.trim_end_matches('.'), f);
    }
}

/// A typed resource with its metadata and origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<S> {
    pub api_version: String,
    pub name: String,
    pub namespace: String,
    pub meta: ObjectMeta,
    pub spec: S,
    pub origin: Origin,
}

// Resources live in the control plane only (loaded, validated, compiled once per reload), so
// the size difference between kinds costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Gateway(Object<GatewaySpec>),
    VirtualService(Object<VirtualServiceSpec>),
    DestinationRule(Object<DestinationRuleSpec>),
    ServiceEntry(Object<ServiceEntrySpec>),
    Secret(Object<SecretBody>),
    Namespace(Object<NamespaceSpec>),
    GatewayClass(Object<GatewayClassSpec>),
    KubeGateway(Object<KubeGatewaySpec>),
    HttpRoute(Object<HttpRouteSpec>),
    GrpcRoute(Object<GrpcRouteSpec>),
    TlsRoute(Object<L4RouteSpec>),
    TcpRoute(Object<L4RouteSpec>),
    ReferenceGrant(Object<ReferenceGrantSpec>),
    Ingress(Object<IngressSpec>),
    IngressClass(Object<IngressClassSpec>),
}

/// Applies `$body` to the `Object` of any variant (they differ only in their spec type).
macro_rules! each_object {
    ($r:expr, $o:ident => $body:expr) => {
        match $r {
            Resource::Gateway($o) => $body,
            Resource::VirtualService($o) => $body,
            Resource::DestinationRule($o) => $body,
            Resource::ServiceEntry($o) => $body,
            Resource::Secret($o) => $body,
            Resource::Namespace($o) => $body,
            Resource::GatewayClass($o) => $body,
            Resource::KubeGateway($o) => $body,
            Resource::HttpRoute($o) => $body,
            Resource::GrpcRoute($o) => $body,
            Resource::TlsRoute($o) => $body,
            Resource::TcpRoute($o) => $body,
            Resource::ReferenceGrant($o) => $body,
            Resource::Ingress($o) => $body,
            Resource::IngressClass($o) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Gateway(_) => Kind::Gateway,
            Resource::VirtualService(_) => Kind::VirtualService,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::ServiceEntry(_) => Kind::ServiceEntry,
            Resource::Secret(_) => Kind::Secret,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::GatewayClass(_) => Kind::GatewayClass,
            Resource::KubeGateway(_) => Kind::KubeGateway,
            Resource::HttpRoute(_) => Kind::HttpRoute,
            Resource::GrpcRoute(_) => Kind::GrpcRoute,
            Resource::TlsRoute(_) => Kind::TlsRoute,
            Resource::TcpRoute(_) => Kind::TcpRoute,
            Resource::ReferenceGrant(_) => Kind::ReferenceGrant,
            Resource::Ingress(_) => Kind::Ingress,
            Resource::IngressClass(_) => Kind::IngressClass,
        }
    }

    fn parts(&self) -> (&str, &str, &ObjectMeta, &Origin) {
        each_object!(self, o => (&o.namespace, &o.name, &o.meta, &o.origin))
    }

    pub fn namespace(&self) -> &str {
        self.parts().0
    }

    pub fn name(&self) -> &str {
        self.parts().1
    }

    pub fn key(&self) -> ResourceKey {
        let (namespace, name, ..) = self.parts();
        ResourceKey {
            kind: self.kind(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        self.parts().2
    }

    pub fn origin(&self) -> &Origin {
        self.parts().3
    }

    pub(crate) fn origin_mut(&mut self) -> &mut Origin {
        each_object!(self, o => &mut o.origin)
    }
}
