//! Kubernetes Secrets that `credentialName` fields name: server certificates of Gateway
//! servers and client certificates and CAs of DestinationRule TLS origination. Istio looks
//! them up in the gateway's own namespace.

use std::collections::BTreeMap;

use base64::Engine;
use isthmus_api::Resource;

use crate::tls::PemSource;

pub enum SecretError {
    Missing(String),
    Invalid(String),
}

/// Kubernetes Secrets of the instance's namespace, where Istio looks for `credentialName`.
pub struct Secrets<'a> {
    namespace: &'a str,
    by_name: BTreeMap<&'a str, &'a isthmus_api::k8s::SecretBody>,
}

impl<'a> Secrets<'a> {
    pub fn new(resources: &[&'a Resource], namespace: &'a str) -> Self {
        let by_name = resources
            .iter()
            .filter_map(|r| match r {
                Resource::Secret(o) if o.namespace == namespace => Some((o.name.as_str(), &o.spec)),
                _ => None,
            })
            .collect();
        Secrets { namespace, by_name }
    }

    /// The value of the first key present, base64-decoded (`data`) or as is (`stringData`).
    fn value(&self, name: &str, keys: &[&str]) -> Option<(String, Vec<u8>)> {
        let secret = self.by_name.get(name)?;
        keys.iter().find_map(|k| {
            if let Some(v) = secret.string_data.get(*k) {
                return Some((k.to_string(), v.clone().into_bytes()));
            }
            let v = secret.data.get(*k)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()?;
            Some((k.to_string(), bytes))
        })
    }

    pub fn inline(&self, name: &str, keys: &[&str]) -> Option<PemSource> {
        self.value(name, keys).map(|(k, pem)| PemSource::Inline {
            origin: format!("Secret {}/{name} {k}", self.namespace),
            pem,
        })
    }

    /// `Ok` if the Secret is loaded.
    pub fn exists(&self, name: &str) -> Result<(), SecretError> {
        if self.by_name.contains_key(name) {
            return Ok(());
        }
        Err(SecretError::Missing(format!(
            "Secret {}/{name} is not among the loaded resources (credentialName is looked up in the gateway's namespace, --namespace)",
            self.namespace
        )))
    }

    pub fn certificate(
        &self,
        name: &str,
    ) -> Result<(PemSource, PemSource, Option<PemSource>), SecretError> {
        self.certificate_with(
            name,
            " (credentialName is looked up in the gateway's namespace, --namespace)",
        )
    }

    /// [`Secrets::certificate`] for a reference that names the Secret's namespace itself (a
    /// Gateway API `certificateRef`, an Ingress `secretName`).
    pub fn certificate_ref(
        &self,
        name: &str,
    ) -> Result<(PemSource, PemSource, Option<PemSource>), SecretError> {
        self.certificate_with(name, "")
    }

    fn certificate_with(
        &self,
        name: &str,
        hint: &str,
    ) -> Result<(PemSource, PemSource, Option<PemSource>), SecretError> {
        if !self.by_name.contains_key(name) {
            return Err(SecretError::Missing(format!(
                "Secret {}/{name} is not among the loaded resources{hint}",
                self.namespace
            )));
        }
        let invalid = |what: &str| {
            SecretError::Invalid(format!("Secret {}/{name} has no {what}", self.namespace))
        };
        let cert = self
            .inline(name, &["tls.crt", "cert"])
            .ok_or_else(|| invalid("tls.crt (or cert) key"))?;
        let key = self
            .inline(name, &["tls.key", "key"])
            .ok_or_else(|| invalid("tls.key (or key) key"))?;
        let ca = self
            .inline(name, &["ca.crt", "cacert"])
            .or_else(|| self.ca(&format!("{name}-cacert")));
        Ok((cert, key, ca))
    }

    pub fn ca(&self, name: &str) -> Option<PemSource> {
        self.inline(name, &["ca.crt", "cacert", "tls.crt"])
    }
}
