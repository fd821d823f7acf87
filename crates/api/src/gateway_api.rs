//! Kubernetes Gateway API resources (`gateway.networking.k8s.io` `v1`, `v1beta1`, `v1alpha2`;
//! the versions share one schema for the fields Isthmus reads).
//!
//! Every field of the standard and experimental channels is here, so a field Isthmus does not
//! act on is still recognised (and reported as such) while a misspelt field is reported as
//! unknown. Parts that are not acted on at all are kept as untyped JSON.

pub mod gateway;
pub mod route;

use std::collections::BTreeMap;

use serde::Deserialize;

/// The API group of the Gateway API.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The controller name of Isthmus's GatewayClasses, which it also writes into the route
/// status entries it owns.
pub const GATEWAY_CONTROLLER: &str = "isthmus.io/gateway-controller";

/// `GatewayClass` (cluster-scoped).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayClassSpec {
    pub controller_name: Option<String>,
    pub parameters_ref: Option<ParametersReference>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParametersReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// `ReferenceGrant`: lets objects of `from` refer to objects of `to` in the grant's namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantSpec {
    pub from: Vec<ReferenceGrantFrom>,
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantFrom {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceGrantTo {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

/// A Kubernetes `LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (Kubernetes semantics: every term must hold; an
    /// empty selector selects everything). An unknown operator selects nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let by_labels = self
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        by_labels && self.match_expressions.iter().all(|e| e.matches(labels))
    }
}

impl LabelSelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = self.key.as_ref().and_then(|k| labels.get(k));
        match self.operator.as_deref() {
            Some("In") => value.is_some_and(|v| self.values.contains(v)),
            Some("NotIn") => value.is_none_or(|v| !self.values.contains(v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let req = |op: &str, values: &[&str]| LabelSelectorRequirement {
            key: Some("a".into()),
            operator: Some(op.into()),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let sel = |e: LabelSelectorRequirement| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![e],
        };
        let cases = [
            (sel(req("In", &["1", "2"])), true),
            (sel(req("In", &["2"])), false),
            (sel(req("NotIn", &["2"])), true),
            (sel(req("Exists", &[])), true),
            (sel(req("DoesNotExist", &[])), false),
            (sel(req("Bogus", &[])), false),
            (LabelSelector::default(), true),
        ];
        for (s, want) in cases {
            assert_eq!(s.matches(&labels), want, "{s:?}");
        }
    }
}
