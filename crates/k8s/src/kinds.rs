//! The kinds the Kubernetes source watches, with the API coordinates of each.

/// One watched collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// The API group (`""` for the core group).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name in URLs.
    pub plural: &'static str,
    /// A field selector the list and watch carry (TLS Secrets only).
    pub field_selector: Option<&'static str>,
    pub role: Role,
}

/// What the source does with a collection's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read as configuration, as a file holding the object would be.
    Config,
    /// A Service: with its EndpointSlices, the registry entry of `NAME.NAMESPACE.svc`.
    Service,
    /// An EndpointSlice of a Service.
    Endpoints,
    /// A Pod: the labels of an endpoint (DestinationRule subsets) and its node.
    Pod,
    /// A Node: the locality (region, zone, subzone) of the endpoints on it.
    Node,
    /// A Secret: watched one by one, only those the configuration refers to
    /// ([`crate::KubeSource::want_secrets`]), never the whole collection.
    Secret,
}

impl Watched {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL path of the cluster-wide collection.
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }
}

const fn config(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Watched {
    Watched {
        group,
        version,
        kind,
        plural,
        field_selector: None,
        role: Role::Config,
    }
}

const ISTIO: &str = "networking.istio.io";
const GATEWAY_API: &str = "gateway.networking.k8s.io";
const NETWORKING: &str = "networking.k8s.io";

/// Everything the source watches. Versions are those every supported release serves (the
/// newest the Gateway API's standard channel has for each kind, or the experimental one).
pub const WATCHED: &[Watched] = &[
    config(ISTIO, "v1", "Gateway", "gateways"),
    config(ISTIO, "v1", "VirtualService", "virtualservices"),
    config(ISTIO, "v1", "DestinationRule", "destinationrules"),
    config(ISTIO, "v1", "ServiceEntry", "serviceentries"),
    config(GATEWAY_API, "v1", "GatewayClass", "gatewayclasses"),
    config(GATEWAY_API, "v1", "Gateway", "gateways"),
    config(GATEWAY_API, "v1", "HTTPRoute", "httproutes"),
    config(GATEWAY_API, "v1", "GRPCRoute", "grpcroutes"),
    config(GATEWAY_API, "v1alpha2", "TLSRoute", "tlsroutes"),
    config(GATEWAY_API, "v1alpha2", "TCPRoute", "tcproutes"),
    config(GATEWAY_API, "v1beta1", "ReferenceGrant", "referencegrants"),
    config(NETWORKING, "v1", "Ingress", "ingresses"),
    config(NETWORKING, "v1", "IngressClass", "ingressclasses"),
    config("", "v1", "Namespace", "namespaces"),
    Watched {
        role: Role::Secret,
        ..config("", "v1", "Secret", "secrets")
    },
    Watched {
        role: Role::Service,
        ..config("", "v1", "Service", "services")
    },
    Watched {
        role: Role::Endpoints,
        ..config("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
    },
    Watched {
        // Running pods only: the others have no ready endpoints.
        field_selector: Some("status.phase=Running"),
        role: Role::Pod,
        ..config("", "v1", "Pod", "pods")
    },
    Watched {
        role: Role::Node,
        ..config("", "v1", "Node", "nodes")
    },
];
