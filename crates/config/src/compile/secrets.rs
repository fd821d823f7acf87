//! Kubernetes Secrets that `credentialName` fields name: server certificates of Gateway
//! servers and client certificates and CAs of DestinationRule TLS origination. Istio looks
//! them up in the gateway's own namespace.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use isthmus_api::Resource;

use crate::instance::Instance;
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

/// A Secret by `(namespace, name)`.
pub type SecretKey = (String, String);

/// The Secrets the configuration refers to and may read, where compilation looks them up:
/// Istio Gateway servers' `credentialName`/`credentialNames`/`caCertCredentialName` (with the
/// `<name>-cacert` companion) and DestinationRule TLS `credentialName`, in the instance's
/// namespace; Gateway API `certificateRefs` in the Gateway's namespace, or another one a
/// ReferenceGrant opens; Ingress `secretName` in the Ingress's namespace or the instance's.
/// A source that fetches Secrets one by one (Kubernetes) fetches exactly these.
pub fn referenced(resources: &[&Resource], instance: &Instance) -> BTreeSet<SecretKey> {
    let own = |name: &str| (instance.namespace.clone(), name.to_string());
    let mut out = BTreeSet::new();
    for r in resources {
        match r {
            Resource::Gateway(g) => {
                for t in g.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
                    let names = t.credential_name.iter().chain(&t.credential_names);
                    for n in names {
                        out.insert(own(n));
                        out.insert(own(&format!("{n}-cacert")));
                    }
                    if let Some(n) = &t.ca_cert_credential_name {
                        out.insert(own(n));
                    }
                }
            }
            Resource::DestinationRule(d) => {
                let policies = d.spec.traffic_policy.iter().chain(
                    d.spec
                        .subsets
                        .iter()
                        .filter_map(|s| s.traffic_policy.as_ref()),
                );
                for p in policies {
                    let tls = p
                        .tls
                        .iter()
                        .chain(p.port_level_settings.iter().filter_map(|l| l.tls.as_ref()));
                    for n in tls.filter_map(|t| t.credential_name.as_deref()) {
                        out.insert(own(n));
                        out.insert(own(&format!("{n}-cacert")));
                    }
                }
            }
            Resource::Ingress(i) => {
                for n in i.spec.tls.iter().filter_map(|t| t.secret_name.as_deref()) {
                    out.insert((i.namespace.clone(), n.to_string()));
                    out.insert(own(n));
                }
            }
            _ => {}
        }
    }
    out.extend(super::gateway_api::referenced_secrets(resources, instance));
    out
}

#[cfg(test)]
mod referenced_tests {
    use super::*;
    use isthmus_api::load::load_str;

    #[test]
    fn only_the_secrets_the_configuration_may_use_are_referenced() {
        let text = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: web-cert, credentialNames: [alt-cert], caCertCredentialName: client-ca}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upstream, namespace: shop}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL, credentialName: client-cert}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing, namespace: shop}
spec:
  tls: [{secretName: ing-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: isthmus}
spec: {controllerName: isthmus.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: isthmus
  listeners:
  - name: own
    port: 443
    protocol: HTTPS
    hostname: a.example.com
    tls: {certificateRefs: [{name: own-cert}]}
  - name: granted
    port: 443
    protocol: HTTPS
    hostname: b.example.com
    tls: {certificateRefs: [{name: shared-cert, namespace: certs}]}
  - name: not-granted
    port: 443
    protocol: HTTPS
    hostname: c.example.com
    tls: {certificateRefs: [{name: private-cert, namespace: vault}, {group: example.com, kind: Cert, name: x}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]
  to: [{group: '', kind: Secret}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: shop}
spec:
  gatewayClassName: someone-else
  listeners: [{name: x, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: foreign-cert}]}}]
";
        let loaded = load_str("t.yaml", text).unwrap();
        let resources: Vec<&Resource> = loaded.resources.iter().map(|r| &**r).collect();
        let instance = Instance {
            namespace: "istio-system".into(),
            ..Instance::default()
        };
        let got: Vec<String> = referenced(&resources, &instance)
            .into_iter()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect();
        assert_eq!(
            got,
            [
                "certs/shared-cert",
                "istio-system/alt-cert",
                "istio-system/alt-cert-cacert",
                "istio-system/client-ca",
                "istio-system/client-cert",
                "istio-system/client-cert-cacert",
                "istio-system/ing-cert",
                "istio-system/web-cert",
                "istio-system/web-cert-cacert",
                "shop/ing-cert",
                "shop/own-cert",
            ]
        );
    }
}
