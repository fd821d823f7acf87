//! Istio's access log encodings of an [`Entry`].
//!
//! TEXT is Istio's `EnvoyTextLogFormat`:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
//! "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
//! %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
//! "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
//! %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
//! %REQUESTED_SERVER_NAME% %ROUTE_NAME%
//! ```
//!
//! on one line, empty values as `-`. JSON uses Istio's keys with `null` for empty values.

use std::fmt::{Display, Write};

use super::Entry;
use crate::headers::rfc3339;

/// Neither Isthmus nor Envoy's defaults fill these for a gateway's requests.
const CONNECTION_TERMINATION_DETAILS: Option<&str> = None;
const UPSTREAM_TRANSPORT_FAILURE_REASON: Option<&str> = None;

pub fn text(e: &Entry<'_>) -> String {
    let mut s = String::with_capacity(320);
    let start = e.start.map(rfc3339);
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "[{}] \"{} {} {}\" {} {} {} {} \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}",
        Dash(start.as_deref()),
        Dash(e.method),
        Dash(e.path),
        Dash(e.protocol),
        e.code,
        e.flags,
        Dash(e.details),
        Dash(CONNECTION_TERMINATION_DETAILS),
        Dash(UPSTREAM_TRANSPORT_FAILURE_REASON),
        e.bytes_received,
        e.bytes_sent,
        e.duration_ms,
        Dash(e.upstream_service_time),
        Dash(e.x_forwarded_for),
        Dash(e.user_agent),
        Dash(e.request_id),
        Dash(e.authority),
        Dash(e.upstream_host),
        Dash(e.upstream_cluster),
        Dash(e.upstream_local),
        Dash(e.downstream_local),
        Dash(e.downstream_remote),
        Dash(e.server_name),
        Dash(e.route_name),
    );
    s
}

/// A value, or `-`.
struct Dash<T>(Option<T>);

impl<T: Display> Display for Dash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

pub fn json(e: &Entry<'_>) -> String {
    let mut o = JsonObject::new();
    o.string("start_time", e.start.map(rfc3339).as_deref());
    o.string("route_name", e.route_name);
    o.string("method", e.method);
    o.string("path", e.path);
    o.string("protocol", e.protocol);
    o.number("response_code", Some(u64::from(e.code)));
    o.string("response_flags", Some(&e.flags.to_string()));
    o.string("response_code_details", e.details);
    o.string(
        "connection_termination_details",
        CONNECTION_TERMINATION_DETAILS,
    );
    o.number("bytes_received", Some(e.bytes_received));
    o.number("bytes_sent", Some(e.bytes_sent));
    o.number("duration", Some(e.duration_ms));
    // A header's value: a string, as Envoy's %RESP()% gives it.
    o.string(
        "upstream_service_time",
        e.upstream_service_time.map(|t| t.to_string()).as_deref(),
    );
    o.string("x_forwarded_for", e.x_forwarded_for);
    o.string("user_agent", e.user_agent);
    o.string("request_id", e.request_id);
    o.string("authority", e.authority);
    o.string("upstream_host", address(e.upstream_host).as_deref());
    o.string("upstream_cluster", e.upstream_cluster);
    o.string(
        "upstream_local_address",
        address(e.upstream_local).as_deref(),
    );
    o.string(
        "downstream_local_address",
        address(e.downstream_local).as_deref(),
    );
    o.string(
        "downstream_remote_address",
        address(e.downstream_remote).as_deref(),
    );
    o.string("requested_server_name", e.server_name);
    o.string(
        "upstream_transport_failure_reason",
        UPSTREAM_TRANSPORT_FAILURE_REASON,
    );
    o.finish()
}

fn address(a: Option<std::net::SocketAddr>) -> Option<String> {
    a.map(|a| a.to_string())
}

/// A one-line JSON object written field by field.
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn new() -> Self {
        let mut out = String::with_capacity(512);
        out.push('{');
        JsonObject { out }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn string(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => escape_into(&mut self.out, v),
            None => self.out.push_str("null"),
        }
    }

    fn number(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(v) => {
                let _ = write!(self.out, "{v}");
            }
            None => self.out.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        self.out.push_str("}\n");
        self.out
    }
}

/// A JSON string literal (RFC 8259 escapes).
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response_flags::ResponseFlags;
    use std::time::{Duration, SystemTime};

    fn http_entry() -> Entry<'static> {
        Entry {
            start: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_606_339_578_409)),
            method: Some("GET"),
            path: Some("/status/418"),
            protocol: Some("HTTP/1.1"),
            code: 418,
            flags: ResponseFlags::NONE,
            details: Some("via_upstream"),
            bytes_received: 0,
            bytes_sent: 135,
            duration_ms: 4,
            upstream_service_time: Some(4),
            x_forwarded_for: None,
            user_agent: Some("curl/7.73.0-DEV"),
            request_id: Some("84961386-6d84-929d-98bd-c5aee93b5c88"),
            authority: Some("httpbin:8000"),
            upstream_host: Some("10.44.1.27:80".parse().unwrap()),
            upstream_cluster: Some("outbound|8000||httpbin.foo.svc.cluster.local"),
            upstream_local: Some("10.44.1.23:37652".parse().unwrap()),
            downstream_local: Some("10.0.45.184:8000".parse().unwrap()),
            downstream_remote: Some("10.44.1.23:46520".parse().unwrap()),
            server_name: None,
            route_name: Some("default"),
        }
    }

    #[test]
    fn text_is_istios_default_format() {
        // The example of Istio's "Envoy Access Logs" task, with this format's two newer fields.
        assert_eq!(
            text(&http_entry()),
            "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default\n"
        );
    }

    #[test]
    fn tcp_lines_leave_http_fields_empty() {
        let e = Entry {
            start: Some(SystemTime::UNIX_EPOCH),
            code: 0,
            flags: ResponseFlags::UF,
            bytes_received: 5,
            downstream_local: Some("127.0.0.1:80".parse().unwrap()),
            downstream_remote: Some("127.0.0.1:5000".parse().unwrap()),
            upstream_cluster: Some("outbound|9000||echo.local"),
            ..Entry::default()
        };
        assert_eq!(
            text(&e),
            "[1970-01-01T00:00:00.000Z] \"- - -\" 0 UF - - \"-\" 5 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" outbound|9000||echo.local - 127.0.0.1:80 127.0.0.1:5000 - -\n"
        );
    }

    #[test]
    fn json_has_istios_keys_and_nulls() {
        let line = json(&http_entry());
        assert!(line.ends_with("}\n"));
        for want in [
            "\"start_time\":\"2020-11-25T21:26:18.409Z\"",
            "\"route_name\":\"default\"",
            "\"method\":\"GET\"",
            "\"response_code\":418",
            "\"response_flags\":\"-\"",
            "\"bytes_sent\":135",
            "\"duration\":4",
            "\"upstream_service_time\":\"4\"",
            "\"x_forwarded_for\":null",
            "\"upstream_cluster\":\"outbound|8000||httpbin.foo.svc.cluster.local\"",
            "\"requested_server_name\":null",
            "\"upstream_transport_failure_reason\":null",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        let mut s = String::new();
        escape_into(&mut s, "a\"b\\c\u{1}");
        assert_eq!(s, "\"a\\\"b\\\\c\\u0001\"");
    }
}
