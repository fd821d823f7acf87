//! TLS and layer-4 parts of the snapshot: filter chains chosen by SNI on TLS ports, what they
//! do with the connection (terminate, or pass it through), and TCP/TLS routes.

use std::path::PathBuf;

use serde::Serialize;

use std::sync::Arc;

use crate::snapshot::{Forward, Source, VirtualHosts};

/// One Gateway server on a TLS port (protocol HTTPS or TLS), chosen by the SNI of the
/// ClientHello: an exact name, then the longest `*.suffix`, then `*`.
#[derive(Debug, Clone, Serialize)]
pub struct FilterChain {
    /// Stable across reloads: `namespace/gateway/serverIndex`, so a connection finds its chain
    /// again in a newer snapshot.
    pub key: String,
    /// SNI patterns: the server's hosts without their namespace part.
    pub server_names: Vec<String>,
    pub tls: ChainTls,
    pub routes: ChainRoutes,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainTls {
    Terminate(TlsTermination),
    Passthrough,
}

impl ChainTls {
    /// The Gateway's `tls.mode`: `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL` or `PASSTHROUGH`.
    pub fn mode_name(&self) -> &'static str {
        match self {
            ChainTls::Passthrough => "PASSTHROUGH",
            ChainTls::Terminate(t) => match t.client_auth {
                ClientAuth::None => "SIMPLE",
                ClientAuth::Required => "MUTUAL",
                ClientAuth::Optional => "OPTIONAL_MUTUAL",
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// SIMPLE: no client certificate is requested.
    None,
    /// MUTUAL: a valid client certificate is required.
    Required,
    /// OPTIONAL_MUTUAL: requested, verified if presented.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSV1_2")]
    V12,
    #[serde(rename = "TLSV1_3")]
    V13,
}

/// Where PEM data comes from. Secrets are inlined at compile time; files are read (and watched
/// for rotation) by the data plane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PemSource {
    /// From a Secret: `namespace/name key`, and the bytes.
    Inline {
        origin: String,
        #[serde(skip)]
        pem: Vec<u8>,
    },
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CertificateSource {
    pub certificate: PemSource,
    pub private_key: PemSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsTermination {
    pub client_auth: ClientAuth,
    /// One or two certificates (RSA and ECDSA), chosen by what the client supports.
    pub certificates: Vec<CertificateSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PemSource>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// rustls suite names, already mapped from the Envoy names written in the Gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
    /// Checks of a client certificate beyond its chain to the CA (MUTUAL, OPTIONAL_MUTUAL).
    #[serde(skip_serializing_if = "ClientCertChecks::is_empty")]
    pub client_checks: ClientCertChecks,
}

/// What a client certificate must also satisfy once it chains to the CA: Envoy's
/// `CertificateValidationContext` as Istio fills it from the server's `subjectAltNames`,
/// `verifyCertificateSpki` and `verifyCertificateHash`. The SAN check and the pin check are
/// both required when configured; within the pins, matching either list is enough.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientCertChecks {
    /// One of these must be a SAN of the certificate (DNS, URI, email or IP, exact; a DNS
    /// SAN may be a `*.` wildcard covering the name). Empty accepts any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SHA-256 digests of the certificate's SubjectPublicKeyInfo.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spki_sha256: Vec<Sha256>,
    /// SHA-256 digests of the whole DER certificate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cert_sha256: Vec<Sha256>,
}

impl ClientCertChecks {
    pub fn is_empty(&self) -> bool {
        self.subject_alt_names.is_empty()
            && self.spki_sha256.is_empty()
            && self.cert_sha256.is_empty()
    }

    /// Whether certificate pins are configured (then one of them must match).
    pub fn has_pins(&self) -> bool {
        !self.spki_sha256.is_empty() || !self.cert_sha256.is_empty()
    }
}

/// A SHA-256 digest; shown (and serialised) as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a certificate pin cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("{0:?} is not hex (64 hex digits, or 32 colon-separated bytes)")]
    NotHex(String),
    #[error("{0:?} is not base64")]
    NotBase64(String),
    #[error("{text:?} holds {len} bytes; a SHA-256 digest has 32")]
    WrongLength { text: String, len: usize },
}

/// A `verifyCertificateHash` entry: the hex SHA-256 of the DER certificate, upper or lower
/// case. As in Envoy, colons are removed only from the 95-character fingerprint form
/// (`AB:CD:...`), where they separate all 32 bytes.
pub fn parse_certificate_hash(text: &str) -> Result<Sha256, PinError> {
    let digits: String = if text.len() == 95 {
        text.chars().filter(|c| *c != ':').collect()
    } else {
        text.to_string()
    };
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PinError::NotHex(text.to_string()));
    }
    let bytes: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| u8::from_str_radix(pair, 16).ok())
        .collect();
    digest(text, bytes)
}

/// A `verifyCertificateSpki` entry: the base64 (standard alphabet, padded) SHA-256 of the
/// certificate's DER SubjectPublicKeyInfo, as `openssl ... | openssl dgst -sha256 -binary |
/// openssl enc -base64` prints it.
pub fn parse_spki_pin(text: &str) -> Result<Sha256, PinError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| PinError::NotBase64(text.to_string()))?;
    digest(text, bytes)
}

fn digest(text: &str, bytes: Vec<u8>) -> Result<Sha256, PinError> {
    let len = bytes.len();
    <[u8; 32]>::try_from(bytes)
        .map(Sha256)
        .map_err(|_| PinError::WrongLength {
            text: text.to_string(),
            len,
        })
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainRoutes {
    /// Terminated HTTPS: HTTP routing with this server's own route table.
    Http(VirtualHosts),
    /// Terminated TLS carrying TCP: the plaintext goes to `tcp` routes.
    Tcp(Vec<TcpRoute>),
    /// Passthrough: the encrypted bytes go where a `tls` route's SNI match says.
    Tls(Vec<TlsRoute>),
}

/// A VirtualService `tcp[]` rule that applies to this listener.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRoute {
    pub virtual_service: String,
    #[serde(skip)]
    pub source: Arc<Source>,
    pub forward: Forward,
}

/// A VirtualService `tls[]` rule: SNI names and where they go.
#[derive(Debug, Clone, Serialize)]
pub struct TlsRoute {
    pub virtual_service: String,
    #[serde(skip)]
    pub source: Arc<Source>,
    pub sni_hosts: Vec<String>,
    pub forward: Forward,
}

/// The route of a TCP port or a terminated TLS server: the first `tcp` rule takes every
/// connection.
pub fn first_tcp_route(routes: &[TcpRoute]) -> Option<&TcpRoute> {
    routes.first()
}

/// The `tls` route of a passthrough connection: the first whose SNI names cover `sni`.
pub fn find_tls_route<'a>(routes: &'a [TlsRoute], sni: &str) -> Option<&'a TlsRoute> {
    routes.iter().find(|r| r.matches(sni))
}

/// Whether an SNI pattern (exact, `*.suffix` or `*`) covers a name.
pub fn sni_covers(pattern: &str, name: &str) -> bool {
    crate::hosts::covers(pattern, name)
}

impl TlsRoute {
    pub fn matches(&self, sni: &str) -> bool {
        self.sni_hosts.iter().any(|p| sni_covers(p, sni))
    }
}

/// Picks the chain for an SNI: exact, then the longest wildcard, then `*`; a ClientHello
/// without SNI takes only a `*` chain. As in Envoy, no match means the connection is closed.
pub fn choose_chain<'a>(chains: &'a [FilterChain], sni: Option<&str>) -> Option<&'a FilterChain> {
    match_chain(chains, sni).map(|(c, _)| c)
}

/// [`choose_chain`], with the server name that chose it.
pub fn match_chain<'a>(
    chains: &'a [FilterChain],
    sni: Option<&str>,
) -> Option<(&'a FilterChain, &'a str)> {
    let sni = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let score = |pattern: &str| -> Option<usize> {
        match &sni {
            None => (pattern == "*").then_some(0),
            Some(name) if pattern == name => Some(usize::MAX),
            Some(name) if pattern == "*" => Some(0).filter(|_| !name.is_empty()),
            Some(name) => sni_covers(pattern, name).then_some(pattern.len()),
        }
    };
    chains
        .iter()
        .filter_map(|c| {
            c.server_names
                .iter()
                .filter_map(|p| score(p).map(|s| (s, p.as_str())))
                .max_by_key(|(s, _)| *s)
                .map(|(s, p)| (s, c, p))
        })
        .max_by_key(|(s, _, _)| *s)
        .map(|(_, c, p)| (c, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(key: &str, names: &[&str]) -> FilterChain {
        FilterChain {
            key: key.into(),
            server_names: names.iter().map(|s| s.to_string()).collect(),
            tls: ChainTls::Passthrough,
            routes: ChainRoutes::Tls(vec![]),
        }
    }

    #[test]
    fn chains_by_sni() {
        let chains = vec![
            chain("any", &["*"]),
            chain("wild", &["*.example.com"]),
            chain("deep", &["*.a.example.com"]),
            chain("exact", &["a.example.com"]),
        ];
        let cases = [
            (Some("a.example.com"), Some("exact")),
            (Some("A.Example.com."), Some("exact")),
            (Some("x.a.example.com"), Some("deep")),
            (Some("b.example.com"), Some("wild")),
            (Some("other.org"), Some("any")),
            (None, Some("any")),
        ];
        for (sni, want) in cases {
            assert_eq!(
                choose_chain(&chains, sni).map(|c| c.key.as_str()),
                want,
                "{sni:?}"
            );
        }
        let only = vec![chain("only", &["a.example.com"])];
        assert!(choose_chain(&only, None).is_none());
        assert!(choose_chain(&only, Some("b.example.com")).is_none());
    }

    const HASH: &str = "8ab3c1d0e5f64718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn certificate_hashes() {
        let colons: String = HASH
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        let ok = [HASH.to_string(), HASH.to_uppercase(), colons.clone()];
        for text in &ok {
            assert_eq!(
                parse_certificate_hash(text).map(|h| h.to_string()),
                Ok(HASH.to_string()),
                "{text}"
            );
        }
        let short = &HASH[..62];
        let cases = [
            ("zz".repeat(32), PinError::NotHex("zz".repeat(32))),
            (format!("{HASH}0"), PinError::NotHex(format!("{HASH}0"))),
            // Colons are only allowed between all 32 bytes (Envoy's 95-character form).
            (
                colons[..92].to_string(),
                PinError::NotHex(colons[..92].to_string()),
            ),
            (
                short.to_string(),
                PinError::WrongLength {
                    text: short.to_string(),
                    len: 31,
                },
            ),
            (
                String::new(),
                PinError::WrongLength {
                    text: String::new(),
                    len: 0,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_certificate_hash(&text), Err(want), "{text}");
        }
    }

    #[test]
    fn spki_pins() {
        use base64::Engine;
        let bytes: Vec<u8> = (0..32).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(parse_spki_pin(&text).map(|h| h.0.to_vec()), Ok(bytes));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 20]);
        let cases = [
            (
                "not base64!".to_string(),
                PinError::NotBase64("not base64!".into()),
            ),
            // Unpadded: Envoy's decoder wants the padding too.
            (
                text.trim_end_matches('=').to_string(),
                PinError::NotBase64(text.trim_end_matches('=').to_string()),
            ),
            (
                short.clone(),
                PinError::WrongLength {
                    text: short,
                    len: 20,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_spki_pin(&text), Err(want), "{text}");
        }
    }
}
