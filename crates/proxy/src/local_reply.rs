//! Responses the gateway makes itself, with Envoy's status codes, bodies and response flags.

use crate::headers::{GRPC_MESSAGE, GRPC_STATUS};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::response_flags::ResponseFlags;

/// The body of every response: streamed from the upstream, or made here.
pub type ResponseBody = Either<crate::pool::PooledBody, Full<Bytes>>;

/// Why the gateway answered by itself; `flag` is Envoy's response flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReply {
    /// No virtual host or route matched.
    NoRoute,
    /// The destination names no known cluster.
    NoCluster,
    /// A Gateway API backend that is invalid or unknown: the route's own status (500 for
    /// HTTPRoute), flagged `NC` as Envoy flags a missing cluster.
    InvalidBackend(u16),
    /// The cluster has no endpoint.
    NoHealthyUpstream,
    /// Every connection attempt failed.
    ConnectFailure,
    /// The upstream closed the connection before sending response headers.
    UpstreamReset,
    /// An HTTP/2 upstream reset the request's stream (`RST_STREAM`) before its response
    /// headers (Envoy's `UR`, `remote reset`).
    UpstreamRemoteReset,
    /// An HTTP/2 upstream refused the stream (`REFUSED_STREAM`, or a stream beyond its
    /// GOAWAY), and no retry was left (Envoy's `UR`, `remote refused stream reset`).
    UpstreamRefused,
    /// The upstream sent something that is not HTTP.
    UpstreamProtocolError,
    /// HTTP/1.0 is refused, as by Istio's gateways unless configured otherwise.
    Http10,
    /// The route timeout (or the last per-try timeout) expired.
    UpstreamTimeout,
    /// A fault injection abort with this status.
    FaultAbort(u16),
    /// A circuit breaker of the cluster is open (Envoy's `UO`).
    Overflow,
    /// A request the gateway refuses to route: an invalid Host, a path that cannot be
    /// normalised, a header name with an underscore when configured to reject them.
    BadRequest,
    /// The request body is larger than `--max-request-body-bytes` (Envoy's buffer filter:
    /// 413, `request_payload_too_large`).
    PayloadTooLarge,
    /// The host of an original-destination request did not resolve (Envoy's dynamic forward
    /// proxy: `DF`).
    DnsFailure,
}

impl LocalReply {
    pub fn status(self) -> StatusCode {
        match self {
            LocalReply::NoRoute => StatusCode::NOT_FOUND,
            LocalReply::UpstreamProtocolError => StatusCode::BAD_GATEWAY,
            LocalReply::Http10 => StatusCode::UPGRADE_REQUIRED,
            LocalReply::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReply::BadRequest => StatusCode::BAD_REQUEST,
            LocalReply::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            LocalReply::FaultAbort(code) | LocalReply::InvalidBackend(code) => {
                StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn flag(self) -> ResponseFlags {
        match self {
            LocalReply::NoRoute => ResponseFlags::NR,
            LocalReply::NoCluster | LocalReply::InvalidBackend(_) => ResponseFlags::NC,
            LocalReply::NoHealthyUpstream => ResponseFlags::UH,
            LocalReply::ConnectFailure => ResponseFlags::UF,
            LocalReply::UpstreamReset => ResponseFlags::UC,
            LocalReply::UpstreamRemoteReset | LocalReply::UpstreamRefused => ResponseFlags::UR,
            LocalReply::UpstreamProtocolError => ResponseFlags::UPE,
            LocalReply::Http10 | LocalReply::PayloadTooLarge => ResponseFlags::NONE,
            LocalReply::UpstreamTimeout => ResponseFlags::UT,
            LocalReply::FaultAbort(_) => ResponseFlags::FI,
            LocalReply::Overflow => ResponseFlags::UO,
            LocalReply::BadRequest => ResponseFlags::DPE,
            LocalReply::DnsFailure => ResponseFlags::DF,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for this reply.
    pub fn details(self) -> &'static str {
        match self {
            LocalReply::NoRoute => "route_not_found",
            LocalReply::NoCluster | LocalReply::InvalidBackend(_) => "cluster_not_found",
            LocalReply::NoHealthyUpstream => "no_healthy_upstream",
            LocalReply::ConnectFailure => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            LocalReply::UpstreamReset => {
                "upstream_reset_before_response_started{connection_termination}"
            }
            LocalReply::UpstreamRemoteReset => {
                "upstream_reset_before_response_started{remote_reset}"
            }
            LocalReply::UpstreamRefused => {
                "upstream_reset_before_response_started{remote_refused_stream_reset}"
            }
            LocalReply::UpstreamProtocolError => {
                "upstream_reset_before_response_started{protocol_error}"
            }
            LocalReply::Http10 => "low_version",
            LocalReply::UpstreamTimeout => "response_timeout",
            LocalReply::FaultAbort(_) => "fault_filter_abort",
            LocalReply::Overflow => "upstream_reset_before_response_started{overflow}",
            LocalReply::BadRequest => "bad_request",
            LocalReply::PayloadTooLarge => "request_payload_too_large",
            LocalReply::DnsFailure => "dns_resolution_failure",
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` when this failure cuts a response whose headers were
    /// already sent: the reset variants say `after_response_started`; Envoy keeps the
    /// response's code and resets the client's stream.
    pub fn details_after_response_started(self) -> &'static str {
        match self {
            LocalReply::UpstreamReset => {
                "upstream_reset_after_response_started{connection_termination}"
            }
            LocalReply::UpstreamRemoteReset => {
                "upstream_reset_after_response_started{remote_reset}"
            }
            LocalReply::UpstreamProtocolError => {
                "upstream_reset_after_response_started{protocol_error}"
            }
            other => other.details(),
        }
    }

    /// Envoy's bodies; 404 and NC have none, exactly as Envoy answers them.
    pub fn body(self) -> &'static str {
        match self {
            LocalReply::NoRoute
            | LocalReply::NoCluster
            | LocalReply::InvalidBackend(_)
            | LocalReply::Http10 => "",
            LocalReply::BadRequest => "Bad Request",
            LocalReply::PayloadTooLarge => "Payload Too Large",
            LocalReply::NoHealthyUpstream => "no healthy upstream",
            LocalReply::UpstreamTimeout => "upstream request timeout",
            LocalReply::FaultAbort(_) => "fault filter abort",
            LocalReply::ConnectFailure => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            LocalReply::UpstreamReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            LocalReply::UpstreamRemoteReset => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
            }
            LocalReply::UpstreamRefused => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
            }
            LocalReply::UpstreamProtocolError => {
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            }
            LocalReply::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            LocalReply::DnsFailure => "DNS resolution failure",
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let body = Bytes::from_static(self.body().as_bytes());
        let mut resp = local_response(self.status(), body.clone());
        if !body.is_empty() {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        if self == LocalReply::Overflow {
            resp.headers_mut()
                .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
        }
        resp
    }
}

/// Marks a response the gateway made itself (Envoy's local replies: errors, redirects, direct
/// responses, fault aborts) and keeps its body text, so that the answer to a gRPC request can
/// become a gRPC error. Extensions are never sent.
#[derive(Debug, Clone)]
pub struct LocalText(pub Bytes);

/// A local reply with `status` and `body` (no content type), marked with [`LocalText`].
pub fn local_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Right(Full::new(body.clone())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static(crate::handler::SERVER_NAME),
    );
    resp.extensions_mut().insert(LocalText(body));
    resp
}

/// Whether a request is gRPC as Envoy decides it: content type `application/grpc`, or
/// `application/grpc+...` or `application/grpc;...` (not gRPC-Web).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

/// Envoy's gRPC status for an HTTP status (`Grpc::Utility::httpToGrpcStatus`, after gRPC's
/// http-grpc-status-mapping): anything else is UNKNOWN.
pub fn grpc_status(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// Turns a local reply to a gRPC request into a trailers-only gRPC response, as Envoy does:
/// status 200, `content-type: application/grpc`, `grpc-status` mapped from the HTTP status
/// (unless already set, as by a gRPC fault abort) and the body text as `grpc-message`
/// (percent-encoded; none for HEAD requests), without a body. Other responses pass unchanged.
pub fn grpc_local_reply(resp: Response<ResponseBody>, head: bool) -> Response<ResponseBody> {
    let Some(LocalText(text)) = resp.extensions().get::<LocalText>().cloned() else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    let status = parts.status;
    parts.status = StatusCode::OK;
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if !h.contains_key(&GRPC_STATUS) {
        h.insert(GRPC_STATUS.clone(), HeaderValue::from(grpc_status(status)));
    }
    if !text.is_empty()
        && !head
        && let Ok(v) = HeaderValue::from_str(&percent_encode(&text))
    {
        h.insert(GRPC_MESSAGE.clone(), v);
    }
    h.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..0x7f).contains(&b) && b != b'%' {
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
    fn grpc_requests_are_recognised_as_envoy_does() {
        let cases = [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
        ];
        for (ct, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn http_statuses_map_to_grpc_statuses() {
        let cases = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (200, 2),
        ];
        for (http, grpc) in cases {
            assert_eq!(
                grpc_status(StatusCode::from_u16(http).unwrap()),
                grpc,
                "{http}"
            );
        }
    }

    #[test]
    fn local_replies_become_trailers_only_grpc_errors() {
        let r = grpc_local_reply(LocalReply::NoHealthyUpstream.response(), false);
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "no healthy upstream");
        let r = grpc_local_reply(LocalReply::NoRoute.response(), false);
        assert_eq!(r.headers()["grpc-status"], "12");
        assert!(!r.headers().contains_key("grpc-message"));
    }

    #[test]
    fn upstream_failures_answer_as_envoy_does() {
        const PREFIX: &str = "upstream connect error or disconnect/reset before headers. ";
        let cases = [
            (
                LocalReply::ConnectFailure,
                ResponseFlags::UF,
                "connection_failure",
                "connection failure",
            ),
            (
                LocalReply::UpstreamReset,
                ResponseFlags::UC,
                "connection_termination",
                "connection termination",
            ),
            (
                LocalReply::UpstreamRemoteReset,
                ResponseFlags::UR,
                "remote_reset",
                "remote reset",
            ),
            (
                LocalReply::UpstreamRefused,
                ResponseFlags::UR,
                "remote_refused_stream_reset",
                "remote refused stream reset",
            ),
            (
                LocalReply::UpstreamProtocolError,
                ResponseFlags::UPE,
                "protocol_error",
                "protocol error",
            ),
            (
                LocalReply::Overflow,
                ResponseFlags::UO,
                "overflow",
                "overflow",
            ),
        ];
        for (reply, flag, detail, reason) in cases {
            assert_eq!(reply.flag(), flag, "{reply:?}");
            assert_eq!(
                reply.details(),
                format!("upstream_reset_before_response_started{{{detail}}}"),
                "{reply:?}"
            );
            assert_eq!(
                reply.body(),
                format!("{PREFIX}reset reason: {reason}"),
                "{reply:?}"
            );
        }
        let r = LocalReply::PayloadTooLarge;
        assert_eq!(
            (r.status(), r.flag(), r.details(), r.body()),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                ResponseFlags::NONE,
                "request_payload_too_large",
                "Payload Too Large"
            )
        );
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode(b"a b"), "a b");
        assert_eq!(
            percent_encode("100% \u{e9}\n".as_bytes()),
            "100%25 %C3%A9%0A"
        );
    }
}
