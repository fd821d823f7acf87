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
}

/// Istio's root configuration namespace, searched last for DestinationRules.
pub const ROOT_NAMESPACE: &str = "istio-system";

impl Default for Instance {
    fn default() -> Self {
        Instance {
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            namespace: "istio-system".into(),
            domain_suffix: "cluster.local".into(),
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
