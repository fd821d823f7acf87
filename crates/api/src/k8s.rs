//! Kubernetes core resources Isthmus reads from files: `Secret`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A `v1` Secret. `data` values are base64, `stringData` values are plain text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretBody {
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    pub data: BTreeMap<String, String>,
    pub string_data: BTreeMap<String, String>,
    pub immutable: Option<bool>,
}
