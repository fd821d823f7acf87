//! CORS at the gateway, as Envoy's CORS filter does it for Istio's `corsPolicy`: preflights
//! are answered here, and allowed origins get CORS headers on the upstream's response.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use isthmus_config::actions::Cors;

use crate::local_reply::ResponseBody;

/// What the CORS policy decided for a request.
pub enum Decision {
    /// Not a CORS request, or a preflight to forward (unmatched, `FORWARD`).
    Pass,
    /// Answer now (a preflight).
    Respond(Box<Response<ResponseBody>>),
    /// Forward, then add these headers to the response.
    Decorate(HeaderMap),
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|v| !v.is_empty())
}

pub fn decide(cors: &Cors, method: &Method, headers: &HeaderMap) -> Decision {
    let Some(origin) = headers.get(header::ORIGIN).filter(|o| !o.is_empty()) else {
        return Decision::Pass;
    };
    let allowed = origin.to_str().is_ok_and(|o| cors.allows(o));
    let preflight = is_preflight(method, headers);
    match (preflight, allowed) {
        (true, true) => {
            Decision::Respond(Box::new(preflight_response(cors, Some(origin), headers)))
        }
        // `IGNORE`: Envoy answers as for an allowed origin, but without allow-origin.
        (true, false) if !cors.forward_unmatched_preflights => {
            Decision::Respond(Box::new(preflight_response(cors, None, headers)))
        }
        (false, true) => Decision::Decorate(simple_headers(cors, origin)),
        _ => Decision::Pass,
    }
}

fn put(h: &mut HeaderMap, name: header::HeaderName, value: &Option<String>) {
    if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(name, v);
    }
}

fn simple_headers(cors: &Cors, origin: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if cors.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    put(
        &mut h,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &cors.expose_headers,
    );
    h
}

/// A policy value of exactly `*` echoes the preflight's request header `asked`, as Envoy does.
fn put_or_echo(
    h: &mut HeaderMap,
    name: header::HeaderName,
    value: &Option<String>,
    request: &HeaderMap,
    asked: header::HeaderName,
) {
    if value.as_deref() == Some("*") {
        if let Some(v) = request.get(asked) {
            h.insert(name, v.clone());
        }
    } else {
        put(h, name, value);
    }
}

fn preflight_response(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    request: &HeaderMap,
) -> Response<ResponseBody> {
    let mut resp = empty(StatusCode::OK);
    let h = resp.headers_mut();
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if cors.allow_credentials == Some(true) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    put_or_echo(
        h,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &cors.allow_methods,
        request,
        header::ACCESS_CONTROL_REQUEST_METHOD,
    );
    put_or_echo(
        h,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        &cors.allow_headers,
        request,
        header::ACCESS_CONTROL_REQUEST_HEADERS,
    );
    put(h, header::ACCESS_CONTROL_MAX_AGE, &cors.max_age);
    if cors.expose_on_preflight {
        put(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &cors.expose_headers,
        );
    }
    resp
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
        bytes::Bytes::new(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static(crate::handler::SERVER_NAME),
    );
    r
}
