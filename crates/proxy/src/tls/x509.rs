//! The parts of a client certificate the gateway checks or reports: the subject alternative
//! names, the SubjectPublicKeyInfo, and the subject printed as RFC 2253 the way BoringSSL
//! prints it for Envoy (`X509_NAME_print_ex` with `XN_FLAG_RFC2253`).
//!
//! Certificates reach this reader only after rustls-webpki verified them, so it reads just the
//! few fields it needs. It still checks every length and tag, and fails rather than guess:
//! nothing here may panic on a hostile certificate.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    #[error("truncated DER")]
    Truncated,
    #[error("unsupported DER length")]
    BadLength,
    #[error("expected {expected}, found DER tag {found:#04x}")]
    UnexpectedTag { expected: &'static str, found: u8 },
    #[error("malformed object identifier")]
    BadOid,
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: its first tag byte, its contents, and the whole encoding.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

/// Reads DER elements one after another.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.rest;
        let tag = *input.first().ok_or(DerError::Truncated)?;
        let mut pos = 1;
        // High tag numbers (31 and up) continue over bytes with the top bit set.
        if tag & 0x1f == 0x1f {
            while input.get(pos).ok_or(DerError::Truncated)? & 0x80 != 0 {
                pos += 1;
            }
            pos += 1;
        }
        let first = *input.get(pos).ok_or(DerError::Truncated)?;
        pos += 1;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form; 0x80 (indefinite) is BER, not DER. Four bytes is far beyond any
            // certificate.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DerError::BadLength);
            }
            let bytes = input.get(pos..pos + n).ok_or(DerError::Truncated)?;
            pos += n;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let end = pos.checked_add(len).ok_or(DerError::BadLength)?;
        let whole = input.get(..end).ok_or(DerError::Truncated)?;
        let contents = input.get(pos..end).ok_or(DerError::Truncated)?;
        self.rest = input.get(end..).ok_or(DerError::Truncated)?;
        Ok(Tlv {
            tag,
            contents,
            whole,
        })
    }

    fn expect(&mut self, tag: u8, expected: &'static str) -> Result<Tlv<'a>, DerError> {
        let tlv = self.next()?;
        if tlv.tag == tag {
            Ok(tlv)
        } else {
            Err(DerError::UnexpectedTag {
                expected,
                found: tlv.tag,
            })
        }
    }

    /// The next element if it has this tag (an OPTIONAL or DEFAULT field), else nothing.
    fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.rest.first() == Some(&tag) {
            self.next().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A subject alternative name of a type Envoy matches and reports. Text is kept as the
/// certificate has it (IA5String, so ASCII in a conforming certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Dns(String),
    Uri(String),
    Email(String),
    Ip(IpAddr),
}

impl San {
    /// Whether this SAN satisfies a configured `subjectAltNames` entry, as Envoy's exact
    /// matchers do: URIs and emails compare exactly, IPs by their text (`10.0.0.1`, `::1`),
    /// and DNS names with DNS rules (case-insensitive; a `*.` SAN covers one label).
    pub fn matches(&self, configured: &str) -> bool {
        match self {
            San::Dns(pattern) => dns_name_match(configured, pattern),
            San::Uri(v) | San::Email(v) => v == configured,
            San::Ip(ip) => ip.to_string() == configured,
        }
    }
}

/// Envoy's `Utility::dnsNameMatch(dns_name, pattern)`: `pattern` is the certificate's SAN,
/// whose left-most label may hold one `*` (not in an `xn--` label).
pub fn dns_name_match(name: &str, pattern: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    if name == pattern {
        return true;
    }
    let (Some((p_label, p_rest)), Some((n_label, n_rest))) =
        (pattern.split_once('.'), name.split_once('.'))
    else {
        return false;
    };
    p_label.contains('*')
        && !p_rest.contains('*')
        && !p_label.starts_with("xn--")
        && n_rest == p_rest
        && label_wildcard_match(n_label, p_label)
}

fn label_wildcard_match(label: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once('*') {
        Some((prefix, suffix)) if !suffix.contains('*') => {
            pattern.len() <= label.len() + 1 && label.starts_with(prefix) && label.ends_with(suffix)
        }
        _ => false,
    }
}

/// What is read from a certificate.
#[derive(Debug)]
pub struct Certificate<'a> {
    /// The subject Name, tag and length included.
    pub subject: &'a [u8],
    /// The SubjectPublicKeyInfo, tag and length included: what SPKI pins are a digest of.
    pub spki: &'a [u8],
    /// DNS, URI, email and IP SANs, in certificate order.
    pub sans: Vec<San>,
}

impl Certificate<'_> {
    pub fn parse(der: &[u8]) -> Result<Certificate<'_>, DerError> {
        let cert = Reader::new(der).expect(SEQUENCE, "Certificate")?;
        let tbs = Reader::new(cert.contents).expect(SEQUENCE, "TBSCertificate")?;
        let mut tbs = Reader::new(tbs.contents);
        tbs.optional(0xa0)?; // [0] version
        tbs.expect(INTEGER, "serialNumber")?;
        tbs.expect(SEQUENCE, "signature")?;
        tbs.expect(SEQUENCE, "issuer")?;
        tbs.expect(SEQUENCE, "validity")?;
        let subject = tbs.expect(SEQUENCE, "subject")?.whole;
        let spki = tbs.expect(SEQUENCE, "subjectPublicKeyInfo")?.whole;
        tbs.optional(0x81)?; // [1] issuerUniqueID
        tbs.optional(0x82)?; // [2] subjectUniqueID
        let sans = match tbs.optional(0xa3)? {
            Some(extensions) => subject_alt_names(extensions.contents)?,
            None => Vec::new(),
        };
        Ok(Certificate {
            subject,
            spki,
            sans,
        })
    }

    /// The subject as Envoy reports it in `Subject=` (see [`rfc2253`]).
    pub fn subject_rfc2253(&self) -> Result<String, DerError> {
        rfc2253(self.subject)
    }
}

/// The names of the subjectAltName extension, if the certificate has one.
fn subject_alt_names(explicit: &[u8]) -> Result<Vec<San>, DerError> {
    let list = Reader::new(explicit).expect(SEQUENCE, "Extensions")?;
    let mut extensions = Reader::new(list.contents);
    while !extensions.is_empty() {
        let extension = extensions.expect(SEQUENCE, "Extension")?;
        let mut fields = Reader::new(extension.contents);
        let id = fields.expect(OID, "extnID")?;
        fields.optional(BOOLEAN)?; // critical
        let value = fields.expect(OCTET_STRING, "extnValue")?;
        if id.contents == SUBJECT_ALT_NAME {
            return general_names(value.contents);
        }
    }
    Ok(Vec::new())
}

fn general_names(der: &[u8]) -> Result<Vec<San>, DerError> {
    let list = Reader::new(der).expect(SEQUENCE, "GeneralNames")?;
    let mut names = Reader::new(list.contents);
    let mut out = Vec::new();
    while !names.is_empty() {
        let name = names.next()?;
        let text = || String::from_utf8_lossy(name.contents).into_owned();
        // Context-specific, implicitly tagged; other kinds (otherName, directoryName, ...)
        // are neither matched nor reported by Envoy's exact SAN matchers.
        match name.tag {
            0x81 => out.push(San::Email(text())),
            0x82 => out.push(San::Dns(text())),
            0x86 => out.push(San::Uri(text())),
            0x87 => out.extend(ip_address(name.contents).map(San::Ip)),
            _ => {}
        }
    }
    Ok(out)
}

fn ip_address(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// A DER Name printed as BoringSSL's `X509_NAME_print_ex(..., XN_FLAG_RFC2253)`: attributes
/// last to first (an RDN with several values reversed too, joined by `+`), separated by `,`
/// without spaces, short names (`CN`, `O`, ...), unknown types as a dotted OID with the
/// value's DER in hex (`1.2.3=#0C0161`), and values escaped as RFC 2253 asks.
pub fn rfc2253(name: &[u8]) -> Result<String, DerError> {
    let sequence = Reader::new(name).expect(SEQUENCE, "Name")?;
    let mut rdns = Reader::new(sequence.contents);
    let mut printed: Vec<Vec<String>> = Vec::new();
    while !rdns.is_empty() {
        let set = rdns.expect(SET, "RelativeDistinguishedName")?;
        let mut values = Reader::new(set.contents);
        let mut rdn = Vec::new();
        while !values.is_empty() {
            let pair = values.expect(SEQUENCE, "AttributeTypeAndValue")?;
            let mut fields = Reader::new(pair.contents);
            let kind = fields.expect(OID, "AttributeType")?;
            let value = fields.next()?;
            rdn.push(attribute(kind.contents, value)?);
        }
        printed.push(rdn);
    }
    let reversed: Vec<String> = printed
        .iter()
        .rev()
        .map(|rdn| {
            let values: Vec<&str> = rdn.iter().rev().map(String::as_str).collect();
            values.join("+")
        })
        .collect();
    Ok(reversed.join(","))
}

fn attribute(oid: &[u8], value: Tlv<'_>) -> Result<String, DerError> {
    let dotted = dotted_oid(oid)?;
    Ok(match short_name(&dotted) {
        Some(name) => format!("{name}={}", attribute_value(value)),
        None => format!("{dotted}=#{}", hex_upper(value.whole)),
    })
}

/// BoringSSL's short names of the attribute types certificates carry.
fn short_name(dotted: &str) -> Option<&'static str> {
    Some(match dotted {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.13" => "description",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.41" => "name",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.45" => "x500UniqueIdentifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "2.5.4.72" => "role",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// A string value as UTF-8 bytes, escaped; any other type as `#` and its DER in hex.
fn attribute_value(value: Tlv<'_>) -> String {
    match string_bytes(value) {
        Some(bytes) => escape_rfc2253(&bytes),
        None => format!("#{}", hex_upper(value.whole)),
    }
}

/// The UTF-8 bytes of a string value. UTF8String is taken byte for byte (as BoringSSL does);
/// the one-byte string types are Latin-1, BMPString UCS-2 and UniversalString UCS-4.
fn string_bytes(value: Tlv<'_>) -> Option<Vec<u8>> {
    let bytes = value.contents;
    match value.tag {
        UTF8_STRING => Some(bytes.to_vec()),
        // Numeric, Printable, T61, IA5, UTCTime, GeneralizedTime, Visible.
        0x12 | 0x13 | 0x14 | 0x16 | 0x17 | 0x18 | 0x1a => Some(
            bytes
                .iter()
                .map(|b| char::from(*b))
                .collect::<String>()
                .into_bytes(),
        ),
        0x1e => wide_to_utf8(bytes, 2),
        0x1c => wide_to_utf8(bytes, 4),
        _ => None,
    }
}

fn wide_to_utf8(bytes: &[u8], width: usize) -> Option<Vec<u8>> {
    if !bytes.len().is_multiple_of(width) {
        return None;
    }
    let text: Option<String> = bytes
        .chunks(width)
        .map(|c| char::from_u32(c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))))
        .collect();
    text.map(String::into_bytes)
}

/// RFC 2253 escaping as BoringSSL applies it with `ASN1_STRFLGS_RFC2253`: bytes above 0x7f
/// and control bytes as `\XX`; `\`, `"`, `,`, `+`, `<`, `>`, `;` with a backslash, and so a
/// leading space or `#` and a trailing space. `=` is left alone.
pub fn escape_rfc2253(bytes: &[u8]) -> String {
    let last = bytes.len().saturating_sub(1);
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0x80.. | 0..=0x1f | 0x7f => {
                let _ = write!(out, "\\{b:02X}");
            }
            b'\\' | b'"' | b',' | b'+' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' | b'#' if i == 0 => {
                out.push('\\');
                out.push(char::from(b));
            }
            b' ' if i == last => out.push_str("\\ "),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// `1.2.840.113549.1.9.1` from the contents of an OBJECT IDENTIFIER.
fn dotted_oid(oid: &[u8]) -> Result<String, DerError> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        if acc > u64::MAX >> 7 {
            return Err(DerError::BadOid);
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    if oid.last().is_none_or(|b| b & 0x80 != 0) {
        return Err(DerError::BadOid);
    }
    let (first, rest) = arcs.split_first().ok_or(DerError::BadOid)?;
    // The first sub-identifier holds two arcs: 40 * X + Y, X at most 2.
    let (x, y) = match *first {
        v @ 0..40 => (0, v),
        v @ 40..80 => (1, v - 40),
        v => (2, v - 80),
    };
    let mut out = format!("{x}.{y}");
    for arc in rest {
        let _ = write!(out, ".{arc}");
    }
    Ok(out)
}

pub fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 with the crypto library rustls already uses.
pub fn sha256(bytes: &[u8]) -> aws_lc_rs::digest::Digest {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element (short or long length form).
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..0x80 => out.push(n as u8),
            n @ 0x80..0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// An AttributeTypeAndValue of type 2.5.4.`n` (or a full OID) and a ready value.
    fn atv(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), value].concat())
    }

    fn name(rdns: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let rdns: Vec<u8> = rdns
            .iter()
            .flat_map(|set| tlv(SET, &set.concat()))
            .collect();
        tlv(SEQUENCE, &rdns)
    }

    const CN: &[u8] = &[0x55, 4, 3];
    const O: &[u8] = &[0x55, 4, 10];
    const OU: &[u8] = &[0x55, 4, 11];
    const C: &[u8] = &[0x55, 4, 6];

    #[test]
    fn names_print_as_boringssl_rfc2253() {
        let utf8 = |s: &str| tlv(UTF8_STRING, s.as_bytes());
        let printable = |s: &str| tlv(0x13, s.as_bytes());
        let cases: Vec<(Vec<Vec<Vec<u8>>>, &str)> = vec![
            // Last to first, no spaces.
            (
                vec![
                    vec![atv(C, printable("US"))],
                    vec![atv(O, utf8("Example, Inc."))],
                    vec![atv(CN, utf8("client"))],
                ],
                r"CN=client,O=Example\, Inc.,C=US",
            ),
            // A multi-valued RDN, reversed too.
            (
                vec![
                    vec![atv(C, printable("GB"))],
                    vec![atv(OU, utf8("Sales")), atv(CN, utf8("J. Smith"))],
                ],
                "CN=J. Smith+OU=Sales,C=GB",
            ),
            // Escapes; `=` and `#` inside are kept.
            (
                vec![vec![atv(CN, utf8(r#" #a=b+c"d\e<f>g;h "#))]],
                r#"CN=\ #a=b\+c\"d\\e\<f\>g\;h\ "#,
            ),
            (vec![vec![atv(CN, utf8("#x"))]], r"CN=\#x"),
            // UTF-8 bytes and control characters as \XX.
            (vec![vec![atv(CN, utf8("é\n"))]], r"CN=\C3\A9\0A"),
            // Latin-1 (T61String) converted to UTF-8 first; BMPString from UCS-2.
            (vec![vec![atv(CN, tlv(0x14, &[0xe9]))]], r"CN=\C3\A9"),
            (
                vec![vec![atv(CN, tlv(0x1e, &[0, b'h', 0, 0xe9]))]],
                r"CN=h\C3\A9",
            ),
            // emailAddress, DC and UID have short names.
            (
                vec![
                    vec![atv(
                        &[9, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 100, 1, 25],
                        tlv(0x16, b"com"),
                    )],
                    vec![atv(
                        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 9, 1],
                        tlv(0x16, b"a@b.c"),
                    )],
                ],
                "emailAddress=a@b.c,DC=com",
            ),
            // Unknown types: dotted OID and the value's DER in hex; a known type with a
            // value that is not a string: its DER in hex.
            (
                vec![vec![atv(&[0x2b, 6, 1, 4, 1, 0x82, 0x37, 1], utf8("a"))]],
                "1.3.6.1.4.1.311.1=#0C0161",
            ),
            (vec![vec![atv(CN, tlv(INTEGER, &[5]))]], "CN=#020105"),
            (vec![], ""),
        ];
        for (rdns, want) in cases {
            assert_eq!(rfc2253(&name(&rdns)).unwrap(), want);
        }
    }

    #[test]
    fn dns_names_match_as_envoy() {
        let cases = [
            ("a.example.com", "a.example.com", true),
            ("A.Example.COM", "a.example.com", true),
            ("a.example.com", "*.example.com", true),
            ("a.b.example.com", "*.example.com", false),
            ("example.com", "*.example.com", false),
            ("foo-a.example.com", "foo-*.example.com", true),
            ("a.example.com", "a*b.example.com", false),
            ("xn--a.example.com", "xn--*.example.com", false),
            ("a.example.com", "*.*.com", false),
            ("a.example.com", "b.example.com", false),
            // The configured name is not a pattern.
            ("*.example.com", "a.example.com", false),
        ];
        for (name, pattern, want) in cases {
            assert_eq!(dns_name_match(name, pattern), want, "{name} vs {pattern}");
        }
    }

    #[test]
    fn sans_of_every_matched_kind() {
        let cases = [
            (
                San::Uri("spiffe://cluster.local/ns/a/sa/b".into()),
                "spiffe://cluster.local/ns/a/sa/b",
                true,
            ),
            (
                San::Uri("spiffe://cluster.local/ns/a/sa/b".into()),
                "spiffe://cluster.local/ns/a/sa/B",
                false,
            ),
            (San::Email("a@example.com".into()), "a@example.com", true),
            (San::Ip("10.1.2.3".parse().unwrap()), "10.1.2.3", true),
            (San::Ip("2001:db8::1".parse().unwrap()), "2001:db8::1", true),
            (San::Ip("10.1.2.3".parse().unwrap()), "10.1.2.4", false),
            (San::Dns("*.example.com".into()), "a.example.com", true),
            (
                San::Dns("a.example.com".into()),
                "spiffe://a.example.com",
                false,
            ),
        ];
        for (san, configured, want) in cases {
            assert_eq!(san.matches(configured), want, "{san:?} vs {configured}");
        }
    }

    fn certificate() -> (Vec<u8>, Vec<u8>) {
        use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI(
                "spiffe://cluster.local/ns/default/sa/client"
                    .try_into()
                    .unwrap(),
            ),
            SanType::DnsName("client.example.com".try_into().unwrap()),
            SanType::Rfc822Name("client@example.com".try_into().unwrap()),
            SanType::IpAddress("10.0.0.7".parse().unwrap()),
            SanType::DnsName("*.client.example.com".try_into().unwrap()),
        ];
        // rcgen's default name holds a CN first: start from an empty one.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        params.distinguished_name.push(DnType::CommonName, "client");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.der().to_vec(), key.subject_public_key_info())
    }

    #[test]
    fn certificates_give_their_subject_sans_and_spki() {
        let (der, spki) = certificate();
        let cert = Certificate::parse(&der).unwrap();
        assert_eq!(
            cert.sans,
            [
                San::Uri("spiffe://cluster.local/ns/default/sa/client".into()),
                San::Dns("client.example.com".into()),
                San::Email("client@example.com".into()),
                San::Ip("10.0.0.7".parse().unwrap()),
                San::Dns("*.client.example.com".into()),
            ]
        );
        assert_eq!(
            cert.subject_rfc2253().unwrap(),
            r"CN=client,O=Example\, Inc.,C=US"
        );
        assert_eq!(cert.spki, spki.as_slice());
    }

    #[test]
    fn broken_certificates_are_errors_not_panics() {
        let (der, _) = certificate();
        for n in 0..der.len() {
            assert!(
                Certificate::parse(&der[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = Certificate::parse(&flipped).map(|c| c.subject_rfc2253());
            flipped[i] ^= 0xff;
        }
        for bad in [
            &[0x30, 0x80][..],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x3f],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(Certificate::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(dotted_oid(&[0x2a, 0x86]), Err(DerError::BadOid));
        assert_eq!(dotted_oid(&[0xff; 12]), Err(DerError::BadOid));
        assert_eq!(dotted_oid(&[]), Err(DerError::BadOid));
    }
}
