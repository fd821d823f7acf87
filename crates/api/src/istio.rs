//! `networking.istio.io` resources (`v1alpha3`, `v1beta1` and `v1` share one schema).
//!
//! Every field of the protos is here, so a field that Isthmus does not act on yet is still
//! recognised (and reported as such), while a misspelt field is reported as unknown.

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod virtual_service;

use serde::Deserialize;

/// `Percent{value}`: a share of traffic between 0 and 100.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Percent {
    pub value: f64,
}

/// `PortSelector{number}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortSelector {
    pub number: Option<u32>,
}
