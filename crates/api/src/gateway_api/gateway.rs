//! Gateway API `Gateway`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::LabelSelector;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    pub gateway_class_name: Option<String>,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    /// Not acted on: labels and annotations for generated infrastructure.
    pub infrastructure: Option<serde_json::Value>,
    /// Not acted on: ListenerSets.
    pub allowed_listeners: Option<serde_json::Value>,
    /// Not acted on: frontend client-certificate validation and backend client certificates.
    pub tls: Option<serde_json::Value>,
    /// Not acted on (experimental).
    pub default_scope: Option<String>,
    /// Not acted on (experimental, older name of `tls.backend`).
    #[serde(rename = "backendTLS")]
    pub backend_tls: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub address_type: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u32>,
    pub protocol: Option<String>,
    pub tls: Option<ListenerTls>,
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListenerTls {
    /// `Terminate` (the default) or `Passthrough`.
    pub mode: Option<String>,
    pub certificate_refs: Vec<SecretObjectReference>,
    pub options: BTreeMap<String, String>,
    /// Not acted on (experimental in older releases; now `Gateway.spec.tls`).
    pub frontend_validation: Option<serde_json::Value>,
}

/// A reference to a Secret (or another kind holding a certificate).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretObjectReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    pub from: Option<String>,
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: Option<String>,
}
