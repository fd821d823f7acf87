//! rustls server configurations for the TLS filter chains of a snapshot, built when the
//! configuration is applied (certificates read, keys parsed, verifiers made), never per
//! handshake.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use isthmus_config::Snapshot;
use isthmus_config::tls::{
    ChainRoutes, ChainTls, ClientAuth, PemSource, TlsTermination, TlsVersion,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::client_auth::CheckedClientVerifier;

/// Server configurations by filter chain key, and the errors of chains that cannot be served.
#[derive(Default)]
pub struct Built {
    pub configs: HashMap<String, Arc<ServerConfig>>,
    pub errors: Vec<(String, String)>,
}

pub fn build_all(snapshot: &Snapshot) -> Built {
    let mut out = Built::default();
    for listener in snapshot.listeners.values() {
        for chain in &listener.chains {
            let ChainTls::Terminate(t) = &chain.tls else {
                continue;
            };
            let alpn_http = matches!(chain.routes, ChainRoutes::Http(_));
            match build(t, alpn_http) {
                Ok(c) => {
                    out.configs.insert(chain.key.clone(), c);
                }
                Err(e) => out.errors.push((chain.key.clone(), e)),
            }
        }
    }
    out
}

/// Every certificate file the snapshot refers to, for rotation checks.
pub fn files(snapshot: &Snapshot) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for chain in snapshot.listeners.values().flat_map(|l| &l.chains) {
        let ChainTls::Terminate(t) = &chain.tls else {
            continue;
        };
        let sources = t
            .certificates
            .iter()
            .flat_map(|c| [&c.certificate, &c.private_key])
            .chain(t.client_ca.as_ref());
        for s in sources {
            if let PemSource::File(p) = s {
                out.push(p.clone());
            }
        }
    }
    // Upstream TLS certificates rotate the same way.
    for t in snapshot.clusters.iter().filter_map(|c| c.tls.as_ref()) {
        let client = t
            .client_certificate
            .iter()
            .flat_map(|c| [&c.certificate, &c.private_key]);
        for s in t.ca.iter().chain(client) {
            if let PemSource::File(p) = s {
                out.push(p.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn read(source: &PemSource) -> Result<Vec<u8>, String> {
    match source {
        PemSource::Inline { pem, .. } => Ok(pem.clone()),
        PemSource::File(p) => {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
    }
}

pub(crate) fn describe(source: &PemSource) -> String {
    match source {
        PemSource::Inline { origin, .. } => origin.clone(),
        PemSource::File(p) => p.display().to_string(),
    }
}

pub(crate) fn certificates(source: &PemSource) -> Result<Vec<CertificateDer<'static>>, String> {
    certificates_from(source, &read(source)?)
}

/// The certificates in `pem`, read from `source`.
pub(crate) fn certificates_from(
    source: &PemSource,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", describe(source)))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", describe(source)));
    }
    Ok(certs)
}

fn build(t: &TlsTermination, alpn_http: bool) -> Result<Arc<ServerConfig>, String> {
    let mut provider = (*provider()).clone();
    if !t.cipher_suites.is_empty() {
        // Cipher suites restrict TLS 1.2 only, as in Istio; TLS 1.3 suites always stay.
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13
                || s.suite()
                    .as_str()
                    .is_some_and(|n| t.cipher_suites.iter().any(|c| c == n))
        });
    }
    let provider = Arc::new(provider);
    let mut keys = Vec::new();
    for c in &t.certificates {
        let chain = certificates(&c.certificate)?;
        let key_pem = read(&c.private_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("{}: not a PEM private key: {e}", describe(&c.private_key)))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: unusable private key: {e}", describe(&c.private_key)))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            format!(
                "{} and {} do not match: {e}",
                describe(&c.certificate),
                describe(&c.private_key)
            )
        })?;
        keys.push(Arc::new(certified));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::V12, &rustls::version::TLS12),
        (TlsVersion::V13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= t.min_version && *v <= t.max_version)
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (t.client_auth, &t.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: bad CA certificate: {e}", describe(ca)))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
            builder
                .with_client_cert_verifier(CheckedClientVerifier::wrap(verifier, &t.client_checks))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByScheme(keys)));
    // The server's cipher suite order wins, as Envoy's (SSL_OP_CIPHER_SERVER_PREFERENCE).
    config.ignore_client_order = true;
    if alpn_http {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// Several certificates on one server (RSA and ECDSA): the first one whose key can sign with
/// a scheme the client offers.
#[derive(Debug)]
struct ByScheme(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for ByScheme {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}
