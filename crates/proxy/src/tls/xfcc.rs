//! The `x-forwarded-client-cert` value an Istio gateway sets when the client presented a
//! verified certificate. Istio configures its gateways with `forward_client_cert_details:
//! SANITIZE_SET` and `set_current_client_cert_details {subject, cert, uri, dns}`, so Envoy
//! replaces whatever the client sent with one element:
//!
//! `Hash=<hex SHA-256 of the DER>;Cert="<URL-encoded PEM>";Subject="<RFC 2253>";URI=<each URI
//! SAN, or empty>;DNS=<each DNS SAN>`
//!
//! It is computed once per connection, after the handshake, and set on every request.

use std::borrow::Cow;

use base64::Engine;
use http::HeaderValue;

use super::x509::{self, Certificate, DerError, San};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    #[error("client certificate cannot be read: {0}")]
    Certificate(#[from] DerError),
    #[error("client certificate details are not a valid header value")]
    NotAHeaderValue,
}

/// What the header says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details<'a> {
    /// Lower-case hex.
    pub hash: String,
    /// The PEM, URL-encoded.
    pub cert: String,
    pub subject: String,
    pub uris: Vec<&'a str>,
    pub dns: Vec<&'a str>,
}

impl<'a> Details<'a> {
    pub fn of(der: &[u8], cert: &'a Certificate<'_>) -> Result<Self, XfccError> {
        let names = |want: fn(&'a San) -> Option<&'a str>| cert.sans.iter().filter_map(want);
        Ok(Details {
            hash: x509::hex_lower(x509::sha256(der).as_ref()),
            cert: url_encode(&pem(der)),
            subject: cert.subject_rfc2253()?,
            uris: names(|s| match s {
                San::Uri(u) => Some(u.as_str()),
                _ => None,
            })
            .collect(),
            dns: names(|s| match s {
                San::Dns(d) => Some(d.as_str()),
                _ => None,
            })
            .collect(),
        })
    }

    /// The element in Envoy's key order. Envoy's `By=` (the gateway's own URI SANs) is left
    /// out: ingress certificates rarely have one, and rustls does not tell which of a server's
    /// certificates a handshake used.
    pub fn format(&self) -> String {
        let mut parts = vec![
            format!("Hash={}", self.hash),
            format!("Cert=\"{}\"", self.cert),
            // The RFC 2253 form already escapes `"` and `\`.
            format!("Subject=\"{}\"", self.subject),
        ];
        if self.uris.is_empty() {
            // Envoy keeps the key when there is no URI SAN.
            parts.push("URI=".into());
        }
        parts.extend(self.uris.iter().map(|u| format!("URI={}", quoted(u))));
        parts.extend(self.dns.iter().map(|d| format!("DNS={}", quoted(d))));
        parts.join(";")
    }
}

/// The header value for the client certificate `der` (already verified by the handshake).
pub fn header_value(der: &[u8]) -> Result<HeaderValue, XfccError> {
    let cert = Certificate::parse(der)?;
    let text = Details::of(der, &cert)?.format();
    HeaderValue::from_str(&text).map_err(|_| XfccError::NotAHeaderValue)
}

/// A value as the XFCC grammar wants it: double-quoted (with `"` escaped) when it holds `,`,
/// `;`, `=` or `"`, which would otherwise end it. Envoy writes SAN values bare even then;
/// for every other value the two agree.
pub fn quoted(value: &str) -> Cow<'_, str> {
    if value.contains([',', ';', '=', '"']) {
        Cow::Owned(format!("\"{}\"", value.replace('"', "\\\"")))
    } else {
        Cow::Borrowed(value)
    }
}

/// PEM as OpenSSL's `PEM_write_bio_X509` writes it: 64-character lines, each ending in `\n`.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Envoy's `PercentEncoding::urlEncode`: everything but ASCII letters, digits and `*-._`
/// becomes `%XX` (upper-case hex).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 5 / 4);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_in_envoy_order() {
        let d = |uris: Vec<&'static str>, dns: Vec<&'static str>| Details {
            hash: "ab12".into(),
            cert: "PEM".into(),
            subject: r"CN=client,O=Example\, Inc.".into(),
            uris,
            dns,
        };
        let cases = [
            (
                d(
                    vec!["spiffe://cluster.local/ns/default/sa/client"],
                    vec!["client.example.com"],
                ),
                r#"Hash=ab12;Cert="PEM";Subject="CN=client,O=Example\, Inc.";URI=spiffe://cluster.local/ns/default/sa/client;DNS=client.example.com"#,
            ),
            // Without a URI SAN the key stays; every DNS SAN gets its own key.
            (
                d(vec![], vec!["a.example.com", "*.b.example.com"]),
                r#"Hash=ab12;Cert="PEM";Subject="CN=client,O=Example\, Inc.";URI=;DNS=a.example.com;DNS=*.b.example.com"#,
            ),
            (
                d(vec!["spiffe://a", "spiffe://b"], vec![]),
                r#"Hash=ab12;Cert="PEM";Subject="CN=client,O=Example\, Inc.";URI=spiffe://a;URI=spiffe://b"#,
            ),
        ];
        for (details, want) in cases {
            assert_eq!(details.format(), want);
        }
    }

    #[test]
    fn values_that_would_end_early_are_quoted() {
        let cases = [
            (
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/a/sa/b",
            ),
            ("https://x.example/?a=b", r#""https://x.example/?a=b""#),
            ("urn:a;b", r#""urn:a;b""#),
            ("urn:a,b", r#""urn:a,b""#),
            (r#"urn:"q""#, r#""urn:\"q\"""#),
            ("", ""),
        ];
        for (value, want) in cases {
            assert_eq!(quoted(value), want, "{value}");
        }
    }

    #[test]
    fn pem_is_url_encoded_as_envoy() {
        assert_eq!(
            url_encode("-----BEGIN CERTIFICATE-----\nMIIB+a/z=\n"),
            "-----BEGIN%20CERTIFICATE-----%0AMIIB%2Ba%2Fz%3D%0A"
        );
        assert_eq!(url_encode("a*b.c_d~e\"f"), "a*b.c_d%7Ee%22f");
        let der: Vec<u8> = (0..=255).collect();
        let text = pem(&der);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(lines.len(), 2 + 6);
        assert!(lines[1..6].iter().all(|l| l.len() == 64));
        assert!(text.ends_with("-----\n"));
    }
}
