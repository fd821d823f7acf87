//! The PROXY protocol (v1 text and v2 binary), which load balancers in front of the gateway
//! use to pass on the client's address. The header is read with `peek` and then consumed
//! exactly, so the bytes after it (a TLS ClientHello, an HTTP request) stay in the socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A v1 header is at most 107 bytes; a v2 header 16 bytes plus its length.
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Envoy's default wait for the header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// v2 headers with TLVs larger than this are refused.
const V2_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    Invalid,
    #[error("no PROXY protocol header within the timeout")]
    Timeout,
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
}

/// A parsed header: its length, and the client address it names (`None` for `UNKNOWN` or a
/// v2 `LOCAL` command: the connection's own peer stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub source: Option<SocketAddr>,
}

/// Parses a header at the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let probe = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..probe) == V2_SIGNATURE.get(..probe) {
        return if buf.len() < 16 {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let probe = buf.len().min(6);
    if buf.get(..probe) != b"PROXY ".get(..probe) {
        return Err(ProxyError::Invalid);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Invalid)
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::Invalid);
    }
    let line = std::str::from_utf8(buf.get(..end).ok_or(ProxyError::Invalid)?)
        .map_err(|_| ProxyError::Invalid)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src.parse().map_err(|_| ProxyError::Invalid)?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Invalid);
            }
            let port: u16 = sport.parse().map_err(|_| ProxyError::Invalid)?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Invalid),
    };
    Ok(Some(Header {
        len: end + 2,
        source,
    }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    let byte = |i: usize| buf.get(i).copied().ok_or(ProxyError::Invalid);
    let ver_cmd = byte(12)?;
    let family = byte(13)?;
    let len = usize::from(u16::from_be_bytes([byte(14)?, byte(15)?]));
    if ver_cmd >> 4 != 2 || len > V2_MAX {
        return Err(ProxyError::Invalid);
    }
    let total = 16 + len;
    let Some(body) = buf.get(16..total) else {
        return Ok(None);
    };
    let source = match ver_cmd & 0x0f {
        // LOCAL: a health check from the balancer itself.
        0 => None,
        1 => address(family, body)?,
        _ => return Err(ProxyError::Invalid),
    };
    Ok(Some(Header { len: total, source }))
}

/// The source address of a v2 PROXY command (TCP or UDP over IPv4 or IPv6).
fn address(family: u8, body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let port = |at: usize| -> Result<u16, ProxyError> {
        let b: [u8; 2] = body
            .get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .ok_or(ProxyError::Invalid)?;
        Ok(u16::from_be_bytes(b))
    };
    match family >> 4 {
        1 => {
            let a: [u8; 4] = body
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyError::Invalid)?;
            Ok(Some(SocketAddr::new(Ipv4Addr::from(a).into(), port(8)?)))
        }
        2 => {
            let a: [u8; 16] = body
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyError::Invalid)?;
            Ok(Some(SocketAddr::new(Ipv6Addr::from(a).into(), port(32)?)))
        }
        // AF_UNSPEC or AF_UNIX: no address to take.
        0 | 3 => Ok(None),
        _ => Err(ProxyError::Invalid),
    }
}

/// Reads the header off `stream`: the client address it names, if any.
pub async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(HEADER_TIMEOUT, async {
        let mut buf = vec![0u8; 16 + V2_MAX];
        loop {
            let n = stream
                .peek(&mut buf)
                .await
                .map_err(|_| ProxyError::Closed)?;
            if n == 0 {
                return Err(ProxyError::Closed);
            }
            let seen = buf.get(..n).ok_or(ProxyError::Invalid)?;
            if let Some(h) = parse(seen)? {
                let mut header = vec![0u8; h.len];
                stream
                    .read_exact(&mut header)
                    .await
                    .map_err(|_| ProxyError::Closed)?;
                return Ok(h.source);
            }
            // Not all there yet: wait for more bytes rather than spin on the same peek.
            stream.readable().await.map_err(|_| ProxyError::Closed)?;
            tokio::task::yield_now().await;
        }
    })
    .await
    .map_err(|_| ProxyError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_and_v2_headers() {
        let v4 = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET /";
        let h = parse(v4.as_bytes()).unwrap().unwrap();
        assert_eq!(h.len, v4.find("GET").unwrap());
        assert_eq!(h.source, Some("203.0.113.7:51000".parse().unwrap()));
        let v6 = "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(v6.as_bytes()).unwrap().unwrap().source,
            Some("[2001:db8::1]:1".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().source, None);

        let mut body = vec![198, 51, 100, 9, 10, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let bytes = v2(1, 0x11, &body);
        let h = parse(&bytes).unwrap().unwrap();
        assert_eq!(h.len, bytes.len());
        assert_eq!(h.source, Some("198.51.100.9:40000".parse().unwrap()));
        assert_eq!(parse(&v2(0, 0x00, &[])).unwrap().unwrap().source, None);
    }

    #[test]
    fn partial_and_malformed_headers() {
        let full = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
        for cut in 1..full.len() {
            assert_eq!(parse(&full.as_bytes()[..cut]).unwrap(), None, "{cut}");
        }
        let bytes = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        for cut in 1..bytes.len() {
            assert_eq!(parse(&bytes[..cut]).unwrap(), None, "{cut}");
        }
        let bad: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY SCTP 1.2.3.4\r\n",
            &[b'P'; 200],
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(parse(&long).is_err());
        // v2 with a wrong version, a short address block, an unknown command.
        let mut wrong = v2(1, 0x11, &[0; 12]);
        wrong[12] = 0x31;
        assert!(parse(&wrong).is_err());
        assert!(parse(&v2(1, 0x11, &[0; 4])).is_err());
        assert!(parse(&v2(5, 0x11, &[0; 12])).is_err());
    }
}
