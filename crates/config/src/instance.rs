//! The identity of this gateway instance: which Gateways apply to it and from which
//! namespace it sees the world.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance's labels, matched against `Gateway.spec.selector`.
    pub labels: BTreeMap<String, String>,
    /// The namespace the instance runs in: exportTo and DestinationRule lookup use it.
    pub namespace: String,
    /// The cluster DNS suffix used to complete short host names.
    pub domain_suffix: String,
    /// Where the instance runs, `region/zone/subzone` (any part may be empty): locality load
    /// balancing prefers endpoints near it.
    pub locality: Locality,
    /// The Gateway API GatewayClass this instance serves (`--gateway-class`).
    pub gateway_class: String,
    /// `(namespace, name)` of the only Gateway API Gateway this instance serves
    /// (`--gateway`); `None` serves every Gateway of the class.
    pub gateway: Option<(String, String)>,
    /// The Ingress class this instance serves (`--ingress-class`).
    pub ingress_class: String,
    /// How request paths are normalised before matching (MeshConfig `pathNormalization`).
    pub path_normalization: crate::path::PathNormalization,
    /// What forward-proxy ports do with a host no ServiceEntry declares (Istio's mesh-wide
    /// `outboundTrafficPolicy.mode`).
    pub outbound_policy: OutboundPolicy,
}

/// Istio's `outboundTrafficPolicy.mode`: whether traffic for a host that no ServiceEntry
/// declares passes through to that host (`PassthroughCluster`) or is refused
/// (`BlackHoleCluster`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    /// Istio's default.
    #[default]
    AllowAny,
    RegistryOnly,
}

impl std::str::FromStr for OutboundPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "ALLOW_ANY" => Ok(OutboundPolicy::AllowAny),
            "REGISTRY_ONLY" => Ok(OutboundPolicy::RegistryOnly),
            _ => Err(format!(
                "{s:?} is not an outbound traffic policy (ALLOW_ANY or REGISTRY_ONLY)"
            )),
        }
    }
}

/// The controller name of Isthmus's GatewayClasses.
pub use isthmus_api::gateway_api::GATEWAY_CONTROLLER;

/// The controller name of Isthmus's IngressClasses.
pub const INGRESS_CONTROLLER: &str = "isthmus.io/ingress-controller";

/// The default GatewayClass and Ingress class name.
pub const DEFAULT_CLASS: &str = "isthmus";

/// A `region/zone/subzone` locality, as ServiceEntry endpoints and `--locality` write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    pub fn parse(text: &str) -> Self {
        let mut parts = text.splitn(3, '/').map(str::to_string);
        Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Whether `pattern` (`region`, `region/zone`, `region/zone/subzone`, each part possibly
    /// `*`) covers this locality, as `localityLbSetting` matches.
    pub fn matches(&self, pattern: &str) -> bool {
        let parts = [&self.region, &self.zone, &self.subzone];
        pattern
            .split('/')
            .zip(parts)
            .all(|(p, mine)| p == "*" || p == mine.as_str())
    }
}

/// Istio's root configuration namespace, searched last for DestinationRules.
pub const ROOT_NAMESPACE: &str = "istio-system";

impl Default for Instance {
    fn default() -> Self {
        Instance {
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            namespace: "istio-system".into(),
            domain_suffix: "cluster.local".into(),
            locality: Locality::default(),
            path_normalization: crate::path::PathNormalization::Base,
            outbound_policy: OutboundPolicy::default(),
            gateway_class: DEFAULT_CLASS.into(),
            gateway: None,
            ingress_class: DEFAULT_CLASS.into(),
        }
    }
}

impl Instance {
    /// Whether a Gateway with this selector applies here. A missing selector applies to every
    /// instance, as in Istio.
    pub fn selected_by(&self, selector: Option<&BTreeMap<String, String>>) -> bool {
        selector.is_none_or(|s| s.iter().all(|(k, v)| self.labels.get(k) == Some(v)))
    }

    /// Whether an object with this `exportTo` (in namespace `ns`) is visible here.
    pub fn sees(&self, ns: &str, export_to: &[String]) -> bool {
        if export_to.is_empty() {
            return true;
        }
        export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => ns == self.namespace,
            "~" => false,
            other => other == self.namespace,
        })
    }
}
