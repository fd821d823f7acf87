//! What is recorded when an HTTP exchange ends: Istio's request metrics and the access log
//! line. The response body carries the record and writes it when the body is done with (read
//! to its end, or dropped when the client goes away), so the duration and the bytes sent
//! cover the whole response, as Envoy measures them.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::access_log::Entry;
use crate::body::Received;
use crate::handler::ConnInfo;
use crate::local_reply::{LocalReply, ResponseBody};
use crate::metrics::{Protocol, RequestKey};
use crate::response_flags::ResponseFlags;
use crate::{Active, Gateway};

/// How a request was answered, as the handler saw it.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// Index of the route's destination cluster in [`Active::clusters`], if any.
    pub cluster: Option<usize>,
    pub flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`.
    pub details: &'static str,
    /// The route's name, once a route matched (borrowed from the snapshot until the access
    /// log needs it).
    pub route: Option<Cow<'a, str>>,
    pub upstream: Option<UpstreamInfo>,
    /// The request body's bytes, once it was read.
    pub received: Option<Received>,
}

/// The endpoint that answered, and how long it took to send the response headers.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamInfo {
    pub host: SocketAddr,
    /// The gateway's end of the upstream connection.
    pub local: Option<SocketAddr>,
    pub service_ms: u64,
}

impl Outcome<'_> {
    /// The outcome without borrows, keeping the route's name only if it is to be logged.
    pub fn detach(self, keep_route: bool) -> Outcome<'static> {
        Outcome {
            cluster: self.cluster,
            flags: self.flags,
            details: self.details,
            route: self
                .route
                .filter(|r| keep_route && !r.is_empty())
                .map(|r| Cow::Owned(r.into_owned())),
            upstream: self.upstream,
            received: self.received,
        }
    }

    /// An answer the gateway made itself, with no error (redirects, direct responses).
    pub fn answered(details: &'static str) -> Self {
        Outcome {
            cluster: None,
            flags: ResponseFlags::NONE,
            details,
            route: None,
            upstream: None,
            received: None,
        }
    }
}

/// The request's side of the access log line, taken before the request is routed (and
/// possibly rewritten). Only made when the access log is on.
pub struct RequestLog {
    start: SystemTime,
    method: Method,
    path: Option<PathAndQuery>,
    version: Version,
    forwarded_for: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
    authority: Option<HeaderValue>,
    local: SocketAddr,
    peer: SocketAddr,
    server_name: Option<Arc<str>>,
}

impl RequestLog {
    pub fn capture(parts: &http::request::Parts, conn: &ConnInfo, start: SystemTime) -> Self {
        let h = &parts.headers;
        let authority = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => h.get(header::HOST).cloned(),
        };
        RequestLog {
            start,
            method: parts.method.clone(),
            path: parts.uri.path_and_query().cloned(),
            version: parts.version,
            forwarded_for: h.get(&crate::headers::X_FORWARDED_FOR).cloned(),
            user_agent: h.get(header::USER_AGENT).cloned(),
            request_id: h.get(&crate::headers::X_REQUEST_ID).cloned(),
            authority,
            local: conn.local,
            peer: conn.peer,
            server_name: conn.sni().cloned(),
        }
    }

    /// The request's fields of its log line (the rest are left empty).
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            start: Some(self.start),
            method: Some(self.method.as_str()),
            path: self.path.as_ref().map(PathAndQuery::as_str),
            protocol: Some(version_name(self.version)),
            x_forwarded_for: text(&self.forwarded_for),
            user_agent: text(&self.user_agent),
            request_id: text(&self.request_id),
            authority: text(&self.authority),
            downstream_local: Some(self.local),
            downstream_remote: Some(self.peer),
            server_name: self.server_name.as_deref(),
            ..Entry::default()
        }
    }
}

/// The log fields known once the response is ready.
struct ResponseLog {
    request: RequestLog,
    details: &'static str,
    route: Option<Cow<'static, str>>,
    upstream: Option<UpstreamInfo>,
}

/// Everything recorded when the exchange ends.
pub struct Exchange {
    gw: Arc<Gateway>,
    active: Arc<Active>,
    cluster: Option<usize>,
    /// Stats of a destination outside the registry (egress pass-through and blocked hosts),
    /// labelled per request: found under a lock, which only those requests take.
    external: Option<Arc<crate::metrics::DestinationStats>>,
    key: RequestKey,
    start: Instant,
    /// Request headers and body, as HTTP/1.1 would put them on the wire.
    request_head: u64,
    received: Received,
    response_head: u64,
    log: Option<Box<ResponseLog>>,
}

/// What is known of a request when it arrives. Small, as it is moved about: the log line's
/// part, when there is one, is boxed already in the form the exchange's record keeps it.
pub struct Arrival {
    pub start: Instant,
    pub protocol: Protocol,
    /// The request line and headers, as [`request_head_size`] counts them.
    pub request_head: u64,
    log: Option<Box<ResponseLog>>,
}

impl Arrival {
    /// Takes what the metrics need from a request as it came, before the gateway adds to it.
    pub fn of(parts: &http::request::Parts, grpc: bool) -> Self {
        Arrival {
            start: Instant::now(),
            protocol: if grpc { Protocol::Grpc } else { Protocol::Http },
            request_head: request_head_size(parts),
            log: None,
        }
    }

    /// The request is to be logged: its side of the line is taken now.
    pub fn log_request(&mut self, request: RequestLog) {
        self.log = Some(Box::new(ResponseLog {
            request,
            details: "",
            route: None,
            upstream: None,
        }));
    }

    pub fn is_logged(&self) -> bool {
        self.log.is_some()
    }

    /// The request's side of the log line, taken for a record made elsewhere (a tunnel's).
    pub fn take_request_log(&mut self) -> Option<RequestLog> {
        self.log.take().map(|l| l.request)
    }

    /// What the record of the exchange takes: everything but the log line is copied.
    fn take(&mut self) -> Arrival {
        Arrival {
            log: self.log.take(),
            ..*self
        }
    }
}

impl Exchange {
    pub fn new(
        gw: Arc<Gateway>,
        active: Arc<Active>,
        arrival: Arrival,
        outcome: Outcome<'static>,
        resp: &Response<ResponseBody>,
    ) -> Exchange {
        let Arrival {
            start,
            protocol,
            request_head,
            log,
        } = arrival;
        let grpc_status = match protocol {
            Protocol::Grpc => grpc_status(resp.headers()),
            _ => None,
        };
        let log = log.map(|mut log| {
            log.details = outcome.details;
            log.route = outcome.route;
            log.upstream = outcome.upstream;
            log
        });
        let external = resp
            .extensions()
            .get::<crate::metrics::DestinationLabels>()
            .map(|labels| gw.metrics.istio.destination(labels));
        Exchange {
            gw,
            active,
            cluster: outcome.cluster,
            external,
            key: RequestKey {
                protocol,
                code: resp.status().as_u16(),
                grpc_status,
                flags: outcome.flags,
            },
            start,
            request_head,
            received: outcome.received.unwrap_or(Received::Bytes(0)),
            response_head: response_head_size(resp),
            log,
        }
    }

    /// The record of a request whose client went away before its response was ready, as
    /// Envoy makes it: response code 0, flag `DC`, `downstream_remote_disconnect`.
    fn unanswered(
        gw: Arc<Gateway>,
        active: Arc<Active>,
        arrival: Arrival,
        progress: &Progress<'_>,
    ) -> Exchange {
        let log = arrival.log.map(|mut log| {
            log.details = DOWNSTREAM_DISCONNECT;
            log.route = progress.route.get().map(|r| Cow::Owned((*r).to_string()));
            log
        });
        Exchange {
            gw,
            active,
            cluster: progress.cluster.get().copied(),
            external: None,
            key: RequestKey {
                protocol: arrival.protocol,
                code: 0,
                grpc_status: None,
                flags: ResponseFlags::DC,
            },
            start: arrival.start,
            request_head: arrival.request_head,
            received: Received::Bytes(0),
            response_head: 0,
            log,
        }
    }

    /// The client went away while the response body was being sent: Envoy keeps the code and
    /// flags the exchange `DC`, `downstream_remote_disconnect`.
    fn client_left(&mut self) {
        self.key.flags |= ResponseFlags::DC;
        if let Some(log) = self.log.as_mut() {
            log.details = DOWNSTREAM_DISCONNECT;
        }
    }

    /// The upstream cut the response body short (or the route timeout did): Envoy keeps the
    /// code, adds the failure's flag and says the reset came after the response started.
    fn upstream_failed(&mut self, failure: LocalReply) {
        self.key.flags |= failure.flag();
        if let Some(log) = self.log.as_mut() {
            log.details = failure.details_after_response_started();
        }
    }

    /// Records the metrics and the log line of an exchange whose response sent `sent` body
    /// bytes.
    fn finish(self, sent: u64) {
        let elapsed = self.start.elapsed();
        let received = self.received.get();
        let cluster = self.cluster.and_then(|i| self.active.clusters.get(i));
        let stats = match &self.external {
            Some(s) => s,
            None => cluster.map_or(self.gw.metrics.istio.unknown(), |c| &c.stats),
        };
        stats.record_request(
            self.key,
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            self.request_head + received,
            self.response_head + sent,
        );
        let (Some(log), Some(sink)) = (self.log, &self.gw.access_log) else {
            return;
        };
        sink.log(&Entry {
            code: self.key.code,
            flags: self.key.flags,
            details: Some(log.details),
            bytes_received: received,
            bytes_sent: sent,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            upstream_service_time: log.upstream.map(|u| u.service_ms),
            upstream_host: log.upstream.map(|u| u.host),
            upstream_cluster: cluster.map(|c| c.name.as_str()),
            upstream_local: log.upstream.and_then(|u| u.local),
            route_name: log.route.as_deref(),
            ..log.request.entry()
        });
    }
}

fn text(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

/// Envoy's `%PROTOCOL%`.
fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// `grpc-status` of a response's headers or trailers.
fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get(&crate::headers::GRPC_STATUS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The size of the header block: each `name: value\r\n`, and the final `\r\n`.
fn header_block_size(h: &HeaderMap) -> u64 {
    let fields: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (fields + 2) as u64
}

/// The request line and headers as the client sent them, in HTTP/1.1 form.
pub fn request_head_size(parts: &http::request::Parts) -> u64 {
    let target = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD target HTTP/1.1\r\n"
    (parts.method.as_str().len() + target + 12) as u64 + header_block_size(&parts.headers)
}

/// The status line and headers of a response, in HTTP/1.1 form.
fn response_head_size<B>(resp: &Response<B>) -> u64 {
    let reason = resp.status().canonical_reason().map_or(0, str::len);
    // "HTTP/1.1 200 OK\r\n"
    (15 + reason) as u64 + header_block_size(resp.headers())
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` of an exchange whose client went away.
const DOWNSTREAM_DISCONNECT: &str = "downstream_remote_disconnect";

/// A response body that records its exchange when it is done with.
pub struct TelemetryBody {
    inner: ResponseBody,
    sent: u64,
    exchange: Option<Exchange>,
    /// The body was sent whole (or failed on the upstream's side, or was never to be sent):
    /// dropped before that, its client went away.
    done: bool,
    /// The upstream's failure, held back for one poll: a server writes out what it has when
    /// a body is pending, but drops it with the connection when the body fails, so the
    /// client would lose what came before the failure.
    failed: Option<<ResponseBody as Body>::Error>,
}

impl TelemetryBody {
    /// `bodiless`: the response has no body to send whatever its body holds (a HEAD
    /// request's, 1xx, 204, 304), so the server may drop the body unread.
    pub fn new(inner: ResponseBody, exchange: Exchange, bodiless: bool) -> Self {
        TelemetryBody {
            inner,
            sent: 0,
            exchange: Some(exchange),
            done: bodiless,
            failed: None,
        }
    }
}

impl Drop for TelemetryBody {
    fn drop(&mut self) {
        if let Some(mut e) = self.exchange.take() {
            // Servers stop polling once a body says it has ended, and drop an empty one
            // unpolled.
            if !self.done && !self.inner.is_end_stream() {
                e.client_left();
            }
            e.finish(self.sent);
        }
    }
}

/// How far a request got in the handler, for the record of one whose client leaves before
/// its response is ready (the handler's future is then dropped, with all it knew). Each is
/// set once; `OnceLock`, as the request's future may move between threads.
#[derive(Debug, Default)]
pub struct Progress<'a> {
    /// The route that matched.
    pub route: OnceLock<&'a str>,
    /// The index of the route's destination cluster in [`Active::clusters`].
    pub cluster: OnceLock<usize>,
}

/// A request not answered yet: holds its [`Arrival`] while it is handled, and records the
/// exchange as a client's disconnect (see [`Exchange::unanswered`]) if it is dropped before
/// [`Unanswered::answered`].
pub struct Unanswered<'a> {
    gw: &'a Arc<Gateway>,
    active: &'a Arc<Active>,
    pub arrival: Arrival,
    pub progress: Progress<'a>,
    answered: bool,
}

impl<'a> Unanswered<'a> {
    pub fn new(gw: &'a Arc<Gateway>, active: &'a Arc<Active>, arrival: Arrival) -> Self {
        Unanswered {
            gw,
            active,
            arrival,
            progress: Progress::default(),
            answered: false,
        }
    }

    /// The response is ready: the arrival goes on into its record.
    pub fn answered(mut self) -> Arrival {
        self.answered = true;
        self.arrival.take()
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let (gw, active) = (self.gw.clone(), self.active.clone());
            let arrival = self.arrival.take();
            Exchange::unanswered(gw, active, arrival, &self.progress).finish(0);
        }
    }
}

impl Body for TelemetryBody {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        // The end, or the upstream's failure: either way not a client leaving.
        match frame {
            None => self.done = true,
            Some(Err(e)) => {
                self.done = true;
                if let Some(exchange) = self.exchange.as_mut() {
                    exchange.upstream_failed(crate::pool::body_failure(e.as_ref()));
                }
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(Ok(_)) => {}
        }
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                self.sent += data.len() as u64;
            } else if let Some(trailers) = f.trailers_ref()
                && let Some(e) = self.exchange.as_mut()
                && e.key.protocol == Protocol::Grpc
            {
                // A streamed gRPC response ends with its status in the trailers.
                e.key.grpc_status = grpc_status(trailers).or(e.key.grpc_status);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        // A failure held back is still to come: the body must not look complete.
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_sizes_count_as_http1_would() {
        let req = http::Request::get("/a?b=1")
            .header("host", "x.example")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        // "GET /a?b=1 HTTP/1.1\r\n" + "host: x.example\r\n" + "\r\n"
        assert_eq!(request_head_size(&parts), 21 + 17 + 2);
        let resp = Response::builder()
            .status(200)
            .header("content-length", "2")
            .body(())
            .unwrap();
        // "HTTP/1.1 200 OK\r\n" + "content-length: 2\r\n" + "\r\n"
        assert_eq!(response_head_size(&resp), 17 + 19 + 2);
    }
}
