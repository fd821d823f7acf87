#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
//! The Kubernetes source of Isthmus: watches the API server (kube-rs, rustls with aws-lc-rs)
//! for Istio networking resources, the Gateway API, Ingresses, Namespaces, TLS Secrets, and
//! Services with their EndpointSlices, and gives them to the control plane as the resources the
//! file source would give. Nothing here interprets a resource.

pub mod convert;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod kinds;
pub mod source;
pub mod status;

pub use source::{KubeSource, Snapshot};
pub use status::{LeaseSettings, StatusUpdate, StatusWriter};

/// A client of the API server: from the kubeconfig file `path` if given, else as kubectl
/// finds it (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service account).
pub async fn client(path: Option<&std::path::Path>) -> Result<kube::Client, kube::Error> {
    let config = match path {
        Some(p) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(p).map_err(kube::Error::InferKubeconfig)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?
        }
        None => kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    kube::Client::try_from(config)
}
