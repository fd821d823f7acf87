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
    /// Accepted client certificate SANs (MUTUAL); empty accepts any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
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
}
