//! TLS the gateway originates to upstream endpoints (DestinationRule `tls` SIMPLE and MUTUAL).

use std::sync::{Arc, OnceLock};

use isthmus_config::snapshot::UpstreamTls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::server_config::{certificates_from, describe, provider, read};

/// A cluster's client TLS: rustls configurations offering HTTP/1.1 and HTTP/2 by ALPN, and
/// the SNI to send if configured. Connections in the pools are tied to the configuration
/// they were opened with, so a configuration is replaced only when its settings or
/// certificates change.
#[derive(Debug)]
pub struct UpstreamTlsConfig {
    /// `None` when the certificates could not be loaded: connections fail.
    pub h1: Option<Arc<ClientConfig>>,
    pub h2: Option<Arc<ClientConfig>>,
    pub sni: Option<String>,
    material: Option<Material>,
}

/// What a configuration is built from: the settings and the PEM bytes they name.
#[derive(Debug, PartialEq, Eq)]
struct Material {
    settings: UpstreamTls,
    pem: Vec<Vec<u8>>,
}

impl Material {
    fn read(t: &UpstreamTls) -> Result<Self, String> {
        let mut sources = Vec::new();
        sources.extend(t.ca.as_ref());
        if let Some(c) = &t.client_certificate {
            sources.push(&c.certificate);
            sources.push(&c.private_key);
        }
        let pem = sources.into_iter().map(read).collect::<Result<_, _>>()?;
        Ok(Material {
            settings: t.clone(),
            pem,
        })
    }
}

impl UpstreamTlsConfig {
    /// The configuration for `t`: `previous` again if nothing changed, or if the new
    /// certificates cannot be loaded but the settings are the same (a bad rotation does not
    /// take a working configuration down); otherwise a new one, unusable if it cannot be built.
    pub fn refresh(
        t: &UpstreamTls,
        previous: Option<&Arc<UpstreamTlsConfig>>,
        cluster: &str,
    ) -> Arc<Self> {
        let unusable = |e: &str| {
            tracing::warn!(cluster, "upstream TLS not usable, requests answer 503: {e}");
            Arc::new(UpstreamTlsConfig {
                h1: None,
                h2: None,
                sni: t.sni.clone(),
                material: None,
            })
        };
        if let Some(reason) = &t.unavailable {
            return unusable(reason);
        }
        let material = Material::read(t);
        if let (Ok(m), Some(p)) = (&material, previous)
            && p.material.as_ref() == Some(m)
        {
            return p.clone();
        }
        match material.and_then(|m| build(&m).map(|b| (m, b))) {
            Ok((m, (h1, h2))) => Arc::new(UpstreamTlsConfig {
                h1: Some(h1),
                h2: Some(h2),
                sni: t.sni.clone(),
                material: Some(m),
            }),
            Err(e) => match previous {
                Some(p) if p.material.as_ref().is_some_and(|m| m.settings == *t) => {
                    tracing::warn!(
                        cluster,
                        "upstream TLS certificates not reloaded, the previous ones stay in use: {e}"
                    );
                    p.clone()
                }
                _ => unusable(&e),
            },
        }
    }

    /// The configuration whose ALPN offers `h2` or `http/1.1`.
    pub fn for_version(&self, h2: bool) -> Option<&Arc<ClientConfig>> {
        if h2 {
            self.h2.as_ref()
        } else {
            self.h1.as_ref()
        }
    }
}

/// The operating system's trust store, read once: the roots for `SIMPLE` and `MUTUAL`
/// without `caCertificates`, as Istio uses them.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system trust store: {e}");
            }
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "unusable certificates in the system trust store");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The HTTP/1.1 and HTTP/2 configurations for `m`.
fn build(m: &Material) -> Result<(Arc<ClientConfig>, Arc<ClientConfig>), String> {
    let t = &m.settings;
    let mut pem = m.pem.iter();
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if t.insecure_skip_verify {
        Arc::new(Insecure(provider.clone()))
    } else {
        let ca_pem = if t.ca.is_some() { pem.next() } else { None };
        let roots = match (&t.ca, ca_pem) {
            (Some(ca), Some(bytes)) => {
                let mut roots = RootCertStore::empty();
                for c in certificates_from(ca, bytes)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("{}: unusable CA certificate: {e}", describe(ca)))?;
                }
                Arc::new(roots)
            }
            _ => system_roots(),
        };
        let inner = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            )
        };
        Arc::new(Verifier {
            inner,
            provider: provider.clone(),
            names: t
                .subject_alt_names
                .iter()
                .filter_map(|n| ServerName::try_from(n.clone()).ok())
                .collect(),
        })
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&t.client_certificate, pem.next(), pem.next()) {
        (Some(c), Some(cert_pem), Some(key_pem)) => {
            let chain = certificates_from(&c.certificate, cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("{}: not a PEM private key: {e}", describe(&c.private_key)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", describe(&c.certificate)))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut h1 = config.clone();
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut h2 = config;
    h2.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(h1), Arc::new(h2)))
}

/// Verifies against the configured roots, accepting any of `names` (or the SNI if none).
#[derive(Debug)]
struct Verifier {
    /// `None` with no roots: every certificate is refused.
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    names: Vec<ServerName<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        if self.names.is_empty() {
            return inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            );
        }
        let mut last = None;
        for name in &self.names {
            match inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no subject alt name".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `insecureSkipVerify`: any certificate is accepted; signatures are still checked.
#[derive(Debug)]
struct Insecure(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Insecure {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
