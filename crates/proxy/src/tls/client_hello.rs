//! Reading a TLS ClientHello from the start of a connection, keeping every byte read, so the
//! connection can then be terminated here or passed through unchanged by SNI.
//!
//! Only what routing needs is parsed: the server name and the ALPN protocols. Every length is
//! checked; anything malformed is "not a ClientHello" and the connection is closed.

use tokio::io::{AsyncRead, AsyncReadExt};

/// A ClientHello larger than this is refused (real ones, post-quantum key shares included,
/// are a few KiB).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, lower-cased.
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete(ClientHello),
    /// The bytes so far are a valid prefix; read more.
    NeedMore,
    /// Not a TLS ClientHello.
    Invalid,
}

/// Reads from `stream` into `buf` until a whole ClientHello is there. `None` if the peer sent
/// something else, too much, or closed first.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<ClientHello>> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse(buf) {
            Parsed::Complete(h) => return Ok(Some(h)),
            Parsed::Invalid => return Ok(None),
            Parsed::NeedMore if buf.len() >= MAX_HELLO_BYTES => return Ok(None),
            Parsed::NeedMore => {}
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
}

/// Parses the handshake carried by the TLS records at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // Reassemble the handshake message from consecutive handshake records.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        if rest.len() < 5 {
            return if first_byte_ok(buf) {
                Parsed::NeedMore
            } else {
                Parsed::Invalid
            };
        }
        let (header, body) = rest.split_at(5);
        let &[content_type, major, _minor, hi, lo] = header else {
            return Parsed::Invalid;
        };
        if content_type != 0x16 || major != 3 {
            return Parsed::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return Parsed::Invalid;
        }
        let Some(fragment) = body.get(..len) else {
            return Parsed::NeedMore;
        };
        handshake.extend_from_slice(fragment);
        rest = body.get(len..).unwrap_or(&[]);
        if let Some(&[kind, a, b, c]) = handshake.get(..4) {
            if kind != 1 {
                return Parsed::Invalid;
            }
            let msg_len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
            if msg_len > MAX_HELLO_BYTES {
                return Parsed::Invalid;
            }
            if let Some(msg) = handshake.get(4..4 + msg_len) {
                return match client_hello(msg) {
                    Some(h) => Parsed::Complete(h),
                    None => Parsed::Invalid,
                };
            }
        }
    }
}

fn first_byte_ok(buf: &[u8]) -> bool {
    buf.first().is_none_or(|b| *b == 0x16)
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        match self.take(1)? {
            &[b] => Some(usize::from(b)),
            _ => None,
        }
    }
    fn u16(&mut self) -> Option<usize> {
        match self.take(2)? {
            &[a, b] => Some(usize::from(u16::from_be_bytes([a, b]))),
            _ => None,
        }
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello(msg: &[u8]) -> Option<ClientHello> {
    let mut c = Cursor(msg);
    c.take(2)?; // legacy_version
    c.take(32)?; // random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if c.0.is_empty() {
        return Some(hello);
    }
    let mut exts = Cursor(c.vec16()?);
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        match ty {
            0 => hello.sni = server_name(data),
            16 => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Some(hello)
}

fn server_name(data: &[u8]) -> Option<String> {
    let mut list = Cursor(Cursor(data).vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            return Some(name.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    None
}

fn alpn(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut list = Cursor(Cursor(data).vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        out.push(list.vec8()?.to_vec());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given SNI and ALPN, split into records of `record` bytes.
    fn hello(sni: Option<&str>, alpn: &[&str], record: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend((name.len() as u16).to_be_bytes());
            entry.extend(name.as_bytes());
            let mut list = (entry.len() as u16).to_be_bytes().to_vec();
            list.extend(entry);
            exts.extend(0u16.to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
        if !alpn.is_empty() {
            let mut protos = Vec::new();
            for p in alpn {
                protos.push(p.len() as u8);
                protos.extend(p.as_bytes());
            }
            let mut list = (protos.len() as u16).to_be_bytes().to_vec();
            list.extend(protos);
            exts.extend(16u16.to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0);
        body.extend([0, 2, 0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut msg = vec![1];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut out = Vec::new();
        for chunk in msg.chunks(record) {
            out.extend([0x16, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn parses_sni_and_alpn_across_records() {
        for record in [16_384, 20, 7] {
            let bytes = hello(Some("Foo.Example.com"), &["h2", "http/1.1"], record);
            let want = ClientHello {
                sni: Some("foo.example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            };
            assert_eq!(
                parse(&bytes),
                Parsed::Complete(want),
                "record size {record}"
            );
            for cut in [0, 1, 4, 5, bytes.len() / 2, bytes.len() - 1] {
                assert_eq!(parse(&bytes[..cut]), Parsed::NeedMore, "cut at {cut}");
            }
        }
        assert_eq!(
            parse(&hello(None, &[], 100)),
            Parsed::Complete(ClientHello::default())
        );
    }

    #[test]
    fn rejects_what_is_not_a_client_hello() {
        let cases: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            vec![0x16, 3, 1, 0, 0],
            vec![0x17, 3, 3, 0, 5, 1, 2, 3, 4, 5],
            vec![0x16, 3, 1, 0, 4, 2, 0, 0, 0],
            // A ClientHello whose session id claims more bytes than there are.
            vec![
                0x16, 3, 1, 0, 40, 1, 0, 0, 36, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 1,
            ],
        ];
        for c in cases {
            assert_eq!(parse(&c), Parsed::Invalid, "{c:?}");
        }
    }

    #[test]
    fn truncated_extensions_are_invalid_not_a_panic() {
        let bytes = hello(Some("a.example.com"), &["h2"], 16_384);
        // Corrupt the extensions length to exceed the message.
        for i in 5..bytes.len() {
            let mut b = bytes.clone();
            b[i] = 0xff;
            let _ = parse(&b);
        }
    }
}
