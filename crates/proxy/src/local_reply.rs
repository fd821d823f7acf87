//! Responses the gateway makes itself, with Envoy's status codes, bodies and response flags.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// The body of every response: streamed from the upstream, or made here.
pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// Why the gateway answered by itself; `flag` is Envoy's response flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// No virtual host or route matched.
    NoRoute,
    /// The destination names no known cluster.
    NoCluster,
    /// The cluster has no endpoint.
    NoHealthyUpstream,
    /// Every connection attempt failed.
    ConnectFailure,
    /// The upstream reset or closed before sending response headers.
    UpstreamReset,
    /// The upstream sent something that is not HTTP.
    UpstreamProtocolError,
    /// HTTP/1.0 is refused, as by Istio's gateways unless configured otherwise.
    Http10,
    /// The route timeout (or the last per-try timeout) expired.
    UpstreamTimeout,
    /// A fault injection abort with this status.
    FaultAbort(u16),
}

impl LocalReply {
    pub fn status(self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            LocalReply::Http10 => StatusCode::UPGRADE_REQUIRED,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::FaultAbort(code) => {
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            LocalReply::NoRoute => "NR",
            LocalReply::NoCluster => "NC",
            LocalReply::NoHealthyUpstream => "UH",
            LocalReply::ConnectFailure => "UF",
            LocalReply::UpstreamReset => "UC",
            LocalReply::UpstreamProtocolError => "UPE",
            LocalReply::Http10 => "-",
            LocalReply::UpstreamTimeout => "UT",
            LocalReply::FaultAbort(_) => "FI",
        }
    }

    /// Envoy's bodies; 404 and NC have none, exactly as Envoy answers them.
    pub fn body(self) -> &'static str {
        match self {
            LocalReply::NoRoute | LocalReply::NoCluster | LocalReply::Http10 => "",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::UpstreamTimeout => "upstream request timeout",
            LocalReply::FaultAbort(_) => "fault filter abort",
            LocalReply::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            LocalReply::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::UpstreamProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let body = self.body();
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        if !body.is_empty() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        headers.insert(
            header::SERVER,
            HeaderValue::from_static(crate::handler::SERVER_NAME),
        );
        resp
    }
}
