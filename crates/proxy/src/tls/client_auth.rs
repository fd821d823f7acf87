//! Client certificate checks beyond the CA, as Envoy's default certificate validator makes them
//! for a Gateway server's `subjectAltNames`, `verifyCertificateSpki` and
//! `verifyCertificateHash`: the certificate must first chain to the CA (rustls-webpki), then
//! carry one of the listed SANs, then match one of the pins (either list). A failure fails the
//! handshake with a TLS alert, as in Envoy.

use std::sync::Arc;

use isthmus_config::tls::ClientCertChecks;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::x509::{self, Certificate, DerError};

/// Why a client certificate that chains to the CA is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("client certificate cannot be read: {0}")]
    Unreadable(#[from] DerError),
    #[error("client certificate has none of the subject alt names the server accepts")]
    SubjectAltName,
    #[error("client certificate matches no verifyCertificateHash or verifyCertificateSpki pin")]
    Pin,
}

/// Checks `der` against `checks`, in Envoy's order: SANs, then pins.
pub fn check(checks: &ClientCertChecks, der: &[u8]) -> Result<(), Refused> {
    if !checks.subject_alt_names.is_empty() {
        let cert = Certificate::parse(der)?;
        let accepted = checks
            .subject_alt_names
            .iter()
            .any(|want| cert.sans.iter().any(|san| san.matches(want)));
        if !accepted {
            return Err(Refused::SubjectAltName);
        }
    }
    if checks.has_pins() && !pinned(checks, der)? {
        return Err(Refused::Pin);
    }
    Ok(())
}

fn pinned(checks: &ClientCertChecks, der: &[u8]) -> Result<bool, Refused> {
    let hash = x509::sha256(der);
    if checks.cert_sha256.iter().any(|p| p.0 == hash.as_ref()) {
        return Ok(true);
    }
    if checks.spki_sha256.is_empty() {
        return Ok(false);
    }
    let spki = x509::sha256(Certificate::parse(der)?.spki);
    Ok(checks.spki_sha256.iter().any(|p| p.0 == spki.as_ref()))
}

/// rustls' WebPKI client verifier followed by [`check`].
#[derive(Debug)]
pub struct CheckedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    checks: ClientCertChecks,
}

impl CheckedClientVerifier {
    /// `inner` itself when there is nothing more to check.
    pub fn wrap(
        inner: Arc<dyn ClientCertVerifier>,
        checks: &ClientCertChecks,
    ) -> Arc<dyn ClientCertVerifier> {
        if checks.is_empty() {
            return inner;
        }
        Arc::new(CheckedClientVerifier {
            inner,
            checks: checks.clone(),
        })
    }
}

impl ClientCertVerifier for CheckedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check(&self.checks, end_entity).map_err(|e| {
            // Envoy answers certificate_unknown to a SAN mismatch; an unreadable certificate
            // is a bad_certificate. (Envoy's bad_certificate_hash_value for a pin mismatch is
            // not an alert rustls can send: certificate_unknown is the closest.)
            let error = match e {
                Refused::Unreadable(_) => CertificateError::BadEncoding,
                other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
            };
            rustls::Error::InvalidCertificate(error)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_config::tls::Sha256;

    /// A self-signed certificate with a URI and a DNS SAN, and the digests of it and its SPKI.
    fn certificate() -> (Vec<u8>, Sha256, Sha256) {
        use rcgen::{CertificateParams, KeyPair, PublicKeyData, SanType};
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI(
                "spiffe://cluster.local/ns/default/sa/client"
                    .try_into()
                    .unwrap(),
            ),
            SanType::DnsName("client.example.com".try_into().unwrap()),
        ];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let digest = |b: &[u8]| Sha256(x509::sha256(b).as_ref().try_into().unwrap());
        (
            der.clone(),
            digest(&der),
            digest(&key.subject_public_key_info()),
        )
    }

    #[test]
    fn sans_then_pins() {
        let (der, hash, spki) = certificate();
        let other = Sha256([7; 32]);
        let checks = |sans: &[&str], spkis: &[Sha256], hashes: &[Sha256]| ClientCertChecks {
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            spki_sha256: spkis.to_vec(),
            cert_sha256: hashes.to_vec(),
        };
        let uri = "spiffe://cluster.local/ns/default/sa/client";
        let cases = [
            (checks(&[], &[], &[]), Ok(())),
            (checks(&[uri], &[], &[]), Ok(())),
            (
                checks(&["other.example.com", "CLIENT.example.com"], &[], &[]),
                Ok(()),
            ),
            (
                checks(&["spiffe://cluster.local/ns/default/sa/other"], &[], &[]),
                Err(Refused::SubjectAltName),
            ),
            (checks(&[], &[spki], &[]), Ok(())),
            (checks(&[], &[], &[other, hash]), Ok(())),
            (checks(&[], &[other], &[other]), Err(Refused::Pin)),
            // Either pin list is enough.
            (checks(&[], &[other], &[hash]), Ok(())),
            (checks(&[], &[spki], &[other]), Ok(())),
            // The SAN check is required as well as the pins.
            (
                checks(&["nobody.example.com"], &[spki], &[hash]),
                Err(Refused::SubjectAltName),
            ),
            (checks(&[uri], &[other], &[]), Err(Refused::Pin)),
        ];
        for (c, want) in cases {
            assert_eq!(check(&c, &der), want, "{c:?}");
        }
        assert!(matches!(
            check(&checks(&[uri], &[], &[]), b"not a certificate"),
            Err(Refused::Unreadable(_))
        ));
    }
}
