//! The dashboard page: hand-written HTML, CSS and JavaScript built into the binary, which
//! read the admin server's JSON endpoints from the browser. No CDN, fonts or build step.

use bytes::Bytes;
use http::StatusCode;

use crate::reply::{self, Reply};

const HTML: &str = include_str!("../assets/dashboard.html");
const CSS: &str = include_str!("../assets/dashboard.css");
const JS: &str = include_str!("../assets/dashboard.js");

/// The asset at `path`, if it is one.
pub fn asset(path: &str) -> Option<Reply> {
    let (content_type, body) = match path {
        "/" | "/dashboard" | "/dashboard/" => ("text/html; charset=utf-8", HTML),
        "/dashboard/dashboard.css" => ("text/css; charset=utf-8", CSS),
        "/dashboard/dashboard.js" => ("text/javascript; charset=utf-8", JS),
        _ => return None,
    };
    let mut r = reply::respond(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    );
    // The page only talks to this server, and only runs its own script.
    r.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    Some(r)
}
