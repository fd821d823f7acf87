#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
//! Serde types of the resources Isthmus reads (Istio networking, the Kubernetes Gateway API,
//! Ingress and the core kinds they refer to), and the YAML loader that turns files into
//! typed resources while remembering where every field came from.
//!
//! Nothing here interprets a resource: validation and compilation live in `isthmus-config`.

pub mod diagnostic;
pub mod duration;
mod fast;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway_api;
pub mod istio;
pub mod k8s;
pub mod load;
pub mod position;
pub mod resource;

pub use diagnostic::{Diagnostic, Severity};
pub use resource::{Kind, Object, ObjectMeta, Origin, Resource, ResourceKey};
