//! The request `isthmus explain` reasons about, built from a URL, headers and a method as a
//! client such as curl would send them.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// How the client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A request as the gateway would receive it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The URL, as a client would write it.
    pub url: String,
    pub method: String,
    pub scheme: Scheme,
    /// The Host header (or `:authority`) as sent, port included if sent.
    pub authority: String,
    /// The Gateway port the connection reaches.
    pub port: u16,
    /// The path as sent, before normalisation, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Every header, `host` included.
    pub headers: HeaderMap,
    /// The TLS server name the client sends, if any.
    pub sni: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("{0:?} is not a URL: {1}")]
    Url(String, String),
    #[error("{0:?}: only http:// and https:// URLs can be explained")]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("header {0:?} is not `name: value`")]
    Header(String),
    #[error("{0:?} is not an HTTP method")]
    Method(String),
}

/// The request options of `isthmus explain`.
#[derive(Debug, Clone, Default)]
pub struct RequestSpec<'a> {
    /// `http://HOST[:PORT]/PATH[?QUERY]`; without a scheme, `http://` is assumed (as curl does).
    pub url: &'a str,
    /// Default `GET`.
    pub method: Option<&'a str>,
    /// `name: value` lines, as curl's `-H`. A `Host` header replaces the URL's host for routing
    /// (not for SNI, as with curl).
    pub headers: &'a [String],
    /// The SNI to send instead of the URL's host.
    pub sni: Option<&'a str>,
}

impl Request {
    pub fn parse(spec: &RequestSpec<'_>) -> Result<Request, RequestError> {
        let text = if spec.url.contains("://") {
            spec.url.to_string()
        } else {
            format!("http://{}", spec.url)
        };
        let uri: http::Uri = text.parse().map_err(|e: http::uri::InvalidUri| {
            RequestError::Url(spec.url.into(), e.to_string())
        })?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return Err(RequestError::Scheme(spec.url.into())),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| RequestError::NoHost(spec.url.into()))?;
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        // curl's Host: the port only when it is not the scheme's default.
        let url_authority = if port == scheme.default_port() {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let mut headers = HeaderMap::new();
        for line in spec.headers {
            let (name, value) = parse_header(line)?;
            headers.append(name, value);
        }
        let authority = match headers.get(header::HOST).map(HeaderValue::to_str) {
            Some(Ok(h)) => h.to_string(),
            Some(Err(_)) => return Err(RequestError::Header("host".into())),
            None => {
                let v = HeaderValue::from_str(&url_authority)
                    .map_err(|_| RequestError::NoHost(spec.url.into()))?;
                headers.insert(header::HOST, v);
                url_authority.clone()
            }
        };
        let method = spec.method.unwrap_or("GET");
        http::Method::from_bytes(method.as_bytes())
            .map_err(|_| RequestError::Method(method.into()))?;
        let sni = match (spec.sni, scheme) {
            (Some(s), _) => Some(s.to_string()),
            // Clients send no SNI for an IP address.
            (None, Scheme::Https) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                bare.parse::<IpAddr>().is_err().then(|| host.to_string())
            }
            (None, Scheme::Http) => None,
        };
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Ok(Request {
            url: format!("{}://{url_authority}{pq}", scheme.as_str()),
            method: method.to_string(),
            scheme,
            authority,
            port,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            sni,
        })
    }

    /// The path and query as sent.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// `name: value`, as curl's `-H`.
fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), RequestError> {
    let bad = || RequestError::Header(line.to_string());
    let (name, value) = line.split_once(':').ok_or_else(bad)?;
    let name =
        HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, headers: &[&str], sni: Option<&str>) -> Result<Request, RequestError> {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        Request::parse(&RequestSpec {
            url,
            method: None,
            headers: &headers,
            sni,
        })
    }

    #[test]
    fn urls_as_curl_sends_them() {
        let r = parse("http://a.example.com/x/y?q=1", &[], None).unwrap();
        assert_eq!(
            (r.scheme, r.port, r.authority.as_str(), r.path.as_str()),
            (Scheme::Http, 80, "a.example.com", "/x/y")
        );
        assert_eq!(r.query.as_deref(), Some("q=1"));
        assert_eq!(r.headers["host"], "a.example.com");
        assert_eq!(r.sni, None);

        let r = parse("https://a.example.com:8443", &["Host: b.example.com"], None).unwrap();
        assert_eq!((r.port, r.authority.as_str()), (8443, "b.example.com"));
        assert_eq!(
            r.sni.as_deref(),
            Some("a.example.com"),
            "SNI is the URL's host"
        );
        assert_eq!(r.path, "/");

        let r = parse("https://10.0.0.1/", &[], None).unwrap();
        assert_eq!(r.sni, None, "no SNI for an IP address");
        let r = parse("https://10.0.0.1/", &[], Some("c.example.com")).unwrap();
        assert_eq!(r.sni.as_deref(), Some("c.example.com"));

        let r = parse(
            "a.example.com:8080/p",
            &["End-User: jason", "x-a: 1", "x-a: 2"],
            None,
        )
        .unwrap();
        assert_eq!((r.scheme, r.port), (Scheme::Http, 8080));
        assert_eq!(r.authority, "a.example.com:8080");
        assert_eq!(r.headers["end-user"], "jason");
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn bad_requests_are_named() {
        assert!(matches!(
            parse("ftp://a/", &[], None),
            Err(RequestError::Scheme(_))
        ));
        assert!(matches!(
            parse("http://a/", &["nocolon"], None),
            Err(RequestError::Header(_))
        ));
        assert!(matches!(
            parse("http:// bad", &[], None),
            Err(RequestError::Url(..))
        ));
        let headers: Vec<String> = Vec::new();
        let r = Request::parse(&RequestSpec {
            url: "http://a/",
            method: Some("GE T"),
            headers: &headers,
            sni: None,
        });
        assert!(matches!(r, Err(RequestError::Method(_))));
    }
}
