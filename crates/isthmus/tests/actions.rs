//! Route actions end to end, through real sockets: rewrites, redirects, direct responses,
//! header edits, the `x-envoy-*` headers, CORS and delegation, plus the diagnostics their
//! invalid forms get. Each test checks what the client receives and, when a backend answers,
//! what that backend saw (the demo backend echoes the request as JSON).
//!
//! Istio's semantics are the reference; where Envoy defines the exact behaviour (how a redirect
//! `Location` is built, the order of header edits, CORS), Envoy's is what is expected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use support::*;

// === Fixtures ===

/// The ServiceEntry host of the demo backend `name`.
fn host_of(name: &str) -> String {
    format!("{name}.internal")
}

/// Starts one demo backend per distinct name, each the only endpoint of ServiceEntry host
/// `NAME.internal`, and returns the ServiceEntry files.
async fn backends(names: &[&str]) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        if seen.insert(*name) {
            let addr = backend(name).await;
            files.push((
                format!("svc-{name}.yaml"),
                service(name, &host_of(name), &[(addr, "v1")]),
            ));
        }
    }
    files
}

/// A gateway with HTTP servers for `*` on ports 80 and 81, the backends `names`, and the
/// VirtualService `vs` (in `default`, bound to it) for `host` with the routes `http`.
async fn serve(names: &[&str], host: &str, http: &str) -> Gateway {
    let mut files = backends(names).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"]), (81, &["*"])])));
    files.push((
        "vs.yaml".into(),
        virtual_service("vs", "default", &[host], &["gw"], http),
    ));
    start_files(&files).await
}

/// Like [`serve`] with the single backend `echo` (`echo.internal`), whose echo keeps repeated
/// request headers (see [`backend_joined`]).
async fn serve_joined(host: &str, http: &str) -> Gateway {
    let echo = backend_joined("echo").await;
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("echo", "echo.internal", &[(echo, "v1")]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service("vs", "default", &[host], &["gw"], http),
        ),
    ];
    start_files(&files).await
}

/// A GET of `path` with `Host: host` and extra headers, on Gateway port 80.
async fn send(g: &Gateway, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    get(&g.url(80, path).await, host, headers).await
}

/// A request with any method, not following redirects.
async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = client_no_redirects()
        .request(method, format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    Reply::from(rb.send().await.unwrap()).await
}

// === rewrite ===

/// (path sent, extra request header, backend, path it saw, query it saw,
/// `x-envoy-original-path` it saw)
type RewriteCase<'a> = (
    &'a str,
    Option<(&'a str, &'a str)>,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn rewrite_uri_replaces_the_matched_prefix_or_the_whole_path() {
    let http = r#"  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /api}
    route: [{destination: {host: prefix.internal}}]
  - match: [{uri: {exact: /exact}}]
    rewrite: {uri: /whole}
    route: [{destination: {host: exact.internal}}]
  - match: [{uri: {regex: '/re/[0-9]+'}}]
    rewrite: {uri: /regex}
    route: [{destination: {host: regex.internal}}]
  - match: [{uri: {prefix: /service}}]
    rewrite:
      uriRegexRewrite: {match: '^/service/([^/]+)(/.*)$', rewrite: '/customprefix\2/\1'}
    route: [{destination: {host: regex-rewrite.internal}}]
  - match: [{headers: {x-no-uri: {}}}]
    rewrite: {uri: /new}
    route: [{destination: {host: no-uri.internal}}]
  - route: [{destination: {host: plain.internal}}]
"#;
    let g = serve(
        &[
            "prefix",
            "exact",
            "regex",
            "regex-rewrite",
            "no-uri",
            "plain",
        ],
        "w.example.com",
        http,
    )
    .await;
    let cases: &[RewriteCase<'_>] = &[
        ("/v1/x", None, "prefix", "/api/x", "", Some("/v1/x")),
        // The query string is kept, and is part of the original :path.
        (
            "/v1/x?a=1&b=2",
            None,
            "prefix",
            "/api/x",
            "a=1&b=2",
            Some("/v1/x?a=1&b=2"),
        ),
        ("/v1", None, "prefix", "/api", "", Some("/v1")),
        // A native VirtualService prefix is a plain string prefix.
        (
            "/v1beta/x",
            None,
            "prefix",
            "/apibeta/x",
            "",
            Some("/v1beta/x"),
        ),
        ("/exact", None, "exact", "/whole", "", Some("/exact")),
        (
            "/exact?q=1",
            None,
            "exact",
            "/whole",
            "q=1",
            Some("/exact?q=1"),
        ),
        ("/re/42", None, "regex", "/regex", "", Some("/re/42")),
        (
            "/service/foo/v1/api",
            None,
            "regex-rewrite",
            "/customprefix/v1/api/foo",
            "",
            Some("/service/foo/v1/api"),
        ),
        (
            "/service/foo/v1/api?x=1",
            None,
            "regex-rewrite",
            "/customprefix/v1/api/foo",
            "x=1",
            Some("/service/foo/v1/api?x=1"),
        ),
        // Without a uri match Istio matches the prefix `/`, and that is what is replaced.
        (
            "/abc",
            Some(("x-no-uri", "1")),
            "no-uri",
            "/newabc",
            "",
            Some("/abc"),
        ),
        // No rewrite: the path is forwarded as is and no original path is added, even if the
        // client sends one.
        ("/other/x?k=v", None, "plain", "/other/x", "k=v", None),
        (
            "/other",
            Some(("x-envoy-original-path", "/forged")),
            "plain",
            "/other",
            "",
            None,
        ),
    ];
    let mut wrong = Vec::new();
    for (path, header, backend, want_path, want_query, original) in cases {
        let headers: Vec<(&str, &str)> = header.iter().copied().collect();
        let r = send(&g, "w.example.com", path, &headers).await;
        let v = r.json();
        let got = (
            r.status,
            r.backend().map(str::to_string),
            v["path"].as_str().map(str::to_string),
            v["query"].as_str().map(str::to_string),
            v["headers"]["x-envoy-original-path"]
                .as_str()
                .map(str::to_string),
        );
        let want = (
            200,
            Some(backend.to_string()),
            Some(want_path.to_string()),
            Some(want_query.to_string()),
            original.map(str::to_string),
        );
        if got != want {
            wrong.push(format!("  {path}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong rewrites:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn rewrite_authority_and_host_edits_change_the_host_the_backend_sees() {
    let http = r#"  - match: [{uri: {prefix: /authority}}]
    rewrite: {authority: rewritten.internal:8080}
    route: [{destination: {host: echo.internal}}]
  - match: [{uri: {prefix: /both}}]
    rewrite: {uri: /new, authority: both.internal}
    route: [{destination: {host: echo.internal}}]
  - match: [{uri: {prefix: /dest-authority}}]
    route:
    - destination: {host: echo.internal}
      headers: {request: {set: {':authority': dest-authority.internal}}}
  - match: [{uri: {prefix: /dest-host}}]
    route:
    - destination: {host: echo.internal}
      headers: {request: {set: {host: dest-host.internal}}}
  - match: [{uri: {prefix: /route-host}}]
    headers: {request: {set: {host: route-host.internal}}}
    route: [{destination: {host: echo.internal}}]
  - match: [{uri: {prefix: /route-add-host}}]
    headers: {request: {add: {host: route-add-host.internal}}}
    route: [{destination: {host: echo.internal}}]
  - match: [{uri: {prefix: /precedence}}]
    rewrite: {authority: route-wins.internal}
    route:
    - destination: {host: echo.internal}
      headers: {request: {set: {host: dest-loses.internal}}}
  - route: [{destination: {host: echo.internal}}]
"#;
    let g = serve_joined("a.example.com", http).await;
    let cases = [
        ("/authority/x", "rewritten.internal:8080", "/authority/x"),
        ("/both/x", "both.internal", "/new/x"),
        (
            "/dest-authority",
            "dest-authority.internal",
            "/dest-authority",
        ),
        ("/dest-host", "dest-host.internal", "/dest-host"),
        // Istio turns a route-level `:authority`/`host` edit into a host rewrite as well.
        ("/route-host", "route-host.internal", "/route-host"),
        (
            "/route-add-host",
            "route-add-host.internal",
            "/route-add-host",
        ),
        // The route's host rewrite wins over the destination's (Istio and Envoy).
        ("/precedence", "route-wins.internal", "/precedence"),
        ("/plain", "a.example.com", "/plain"),
    ];
    let mut wrong = Vec::new();
    for (path, host, forwarded) in cases {
        let r = send(&g, "a.example.com", path, &[]).await;
        let v = r.json();
        let got = (
            r.status,
            v["headers"]["host"].as_str().unwrap_or("-").to_string(),
            v["path"].as_str().unwrap_or("-").to_string(),
        );
        if got != (200, host.to_string(), forwarded.to_string()) {
            wrong.push(format!("  {path}: got {got:?}, want {host} {forwarded}"));
        }
    }
    assert!(wrong.is_empty(), "wrong hosts:\n{}", wrong.join("\n"));
}

// === redirect ===

#[tokio::test]
async fn redirects_answer_with_the_location_envoy_builds() {
    let http = r#"  - match: [{uri: {exact: /uri}}]
    redirect: {uri: /new}
  - match: [{uri: {exact: /uri-query}}]
    redirect: {uri: '/new?b=2'}
  - match: [{uri: {prefix: /authority}}]
    redirect: {authority: other.example.com}
  - match: [{uri: {prefix: /port80}}]
    redirect: {port: 80}
  - match: [{uri: {prefix: /port}}]
    redirect: {port: 8443}
  - match: [{uri: {prefix: /protocol-default}}]
    redirect: {derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /https-protocol-default}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /request-port}}]
    redirect: {derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /https}}]
    redirect: {scheme: https}
  - match: [{uri: {prefix: /old}}]
    redirect: {prefixRewrite: /new}
  - match: [{uri: {prefix: /all}}]
    redirect: {scheme: https, authority: secure.example.com, port: 8443, uri: /login, redirectCode: 308}
  - match: [{uri: {exact: /c301}}]
    redirect: {uri: /to, redirectCode: 301}
  - match: [{uri: {exact: /c302}}]
    redirect: {uri: /to, redirectCode: 302}
  - match: [{uri: {exact: /c303}}]
    redirect: {uri: /to, redirectCode: 303}
  - match: [{uri: {exact: /c307}}]
    redirect: {uri: /to, redirectCode: 307}
  - match: [{uri: {exact: /c308}}]
    redirect: {uri: /to, redirectCode: 308}
"#;
    let g = serve(&[], "r.example.com", http).await;
    let (p80, p81) = (g.addr(80).await, g.addr(81).await);
    let h = "r.example.com";
    let h8080 = "r.example.com:8080";
    // (Gateway port, Host, path, status, Location)
    let cases: &[(u16, &str, &str, u16, &str)] = &[
        (80, h, "/uri", 301, "http://r.example.com/new"),
        (80, h, "/uri?a=1", 301, "http://r.example.com/new?a=1"),
        // A redirect uri with its own query replaces the request's.
        (80, h, "/uri-query?a=1", 301, "http://r.example.com/new?b=2"),
        (80, h, "/uri-query", 301, "http://r.example.com/new?b=2"),
        // A new authority replaces the host and its port; the path and query are kept.
        (
            80,
            h8080,
            "/authority/x?q=1",
            301,
            "http://other.example.com/authority/x?q=1",
        ),
        (
            80,
            h8080,
            "/port/x",
            301,
            "http://r.example.com:8443/port/x",
        ),
        // Istio leaves out :80 for http (the port redirect is then unset).
        (80, h, "/port80", 301, "http://r.example.com/port80"),
        // FROM_PROTOCOL_DEFAULT sets no port: Envoy keeps the Host's port unless the scheme
        // changes and that port is the old scheme's default.
        (
            80,
            h,
            "/protocol-default",
            301,
            "http://r.example.com/protocol-default",
        ),
        (
            80,
            h8080,
            "/protocol-default",
            301,
            "http://r.example.com:8080/protocol-default",
        ),
        (
            80,
            "r.example.com:80",
            "/https-protocol-default",
            301,
            "https://r.example.com/https-protocol-default",
        ),
        (
            80,
            h,
            "/https-protocol-default",
            301,
            "https://r.example.com/https-protocol-default",
        ),
        // FROM_REQUEST_PORT is the Gateway port the request arrived on; :80 is left out.
        (
            81,
            h,
            "/request-port",
            301,
            "http://r.example.com:81/request-port",
        ),
        (
            81,
            h8080,
            "/request-port",
            301,
            "http://r.example.com:81/request-port",
        ),
        (
            80,
            h,
            "/request-port",
            301,
            "http://r.example.com/request-port",
        ),
        (80, h, "/https?x=1", 301, "https://r.example.com/https?x=1"),
        (
            80,
            "r.example.com:80",
            "/https",
            301,
            "https://r.example.com/https",
        ),
        (80, h8080, "/https", 301, "https://r.example.com:8080/https"),
        (80, h, "/old/x?q=1", 301, "http://r.example.com/new/x?q=1"),
        (80, h, "/oldx", 301, "http://r.example.com/newx"),
        (
            80,
            h8080,
            "/all/x?q=1",
            308,
            "https://secure.example.com:8443/login?q=1",
        ),
        (80, h, "/c301", 301, "http://r.example.com/to"),
        (80, h, "/c302", 302, "http://r.example.com/to"),
        (80, h, "/c303", 303, "http://r.example.com/to"),
        (80, h, "/c307", 307, "http://r.example.com/to"),
        (80, h, "/c308", 308, "http://r.example.com/to"),
    ];
    let mut wrong = Vec::new();
    for (port, host, path, status, location) in cases {
        let addr = if *port == 81 { p81 } else { p80 };
        let r = request(addr, "GET", host, path, &[]).await;
        let got = (r.status, r.header("location").unwrap_or("-"));
        if got != (*status, *location) {
            wrong.push(format!(
                "  port {port} Host {host} {path}: got {got:?}, want ({status}, {location:?})"
            ));
        }
        assert_eq!(r.body, "", "{path}");
        assert_eq!(r.header("server"), Some("istio-envoy"), "{path}");
        assert_eq!(r.backend(), None, "{path}");
    }
    assert!(wrong.is_empty(), "wrong redirects:\n{}", wrong.join("\n"));
    // Other methods are redirected the same way.
    let r = request(p80, "POST", h, "/c307", &[]).await;
    assert_eq!(
        (r.status, r.header("location")),
        (307, Some("http://r.example.com/to"))
    );
}

// === directResponse ===

#[tokio::test]
async fn direct_responses_answer_status_and_body_without_an_upstream() {
    let http = r#"  - match: [{uri: {exact: /text}}]
    directResponse: {status: 503, body: {string: down for maintenance}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: 'AAEC/w=='}}
  - match: [{uri: {exact: /empty}}]
    directResponse: {status: 204}
  - match: [{uri: {exact: /empty-404}}]
    directResponse: {status: 404}
  - match: [{uri: {exact: /json}}]
    directResponse: {status: 200, body: {string: '{"ok":true}'}}
    headers: {response: {set: {content-type: application/json}}}
"#;
    let g = serve(&[], "d.example.com", http).await;
    let addr = g.addr(80).await;
    // (path, status, body, content-type)
    let cases: &[(&str, u16, &[u8], Option<&str>)] = &[
        ("/text", 503, b"down for maintenance", Some("text/plain")),
        (
            "/bytes",
            200,
            &[0, 1, 2, 255],
            Some("application/octet-stream"),
        ),
        ("/empty", 204, b"", None),
        ("/empty-404", 404, b"", None),
        ("/json", 200, br#"{"ok":true}"#, Some("application/json")),
    ];
    for (path, status, body, content_type) in cases {
        let resp = client()
            .get(format!("http://{addr}{path}"))
            .header("host", "d.example.com")
            .send()
            .await
            .unwrap();
        let headers = resp.headers().clone();
        let got_status = resp.status().as_u16();
        let got_body = resp.bytes().await.unwrap();
        assert_eq!(got_status, *status, "{path}");
        assert_eq!(&got_body[..], *body, "{path}");
        assert_eq!(
            headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
            content_type.map(str::to_string),
            "{path}"
        );
        if *status != 204 {
            assert_eq!(
                headers.get("content-length").map(|v| v.to_str().unwrap()),
                Some(body.len().to_string().as_str()),
                "{path}"
            );
        }
        assert_eq!(
            headers.get("server").map(|v| v.to_str().unwrap()),
            Some("istio-envoy")
        );
        assert!(headers.get("x-backend").is_none(), "{path}");
    }
}

/// `body.filename` (an Isthmus extension: Envoy's DataSource filename) is read when the
/// configuration is applied, relative to the YAML file; a missing file is an error naming it.
#[tokio::test]
async fn direct_response_bodies_can_come_from_a_file() {
    let http = "  - directResponse: {status: 200, body: {filename: page.html}}\n";
    let files = [
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "vs.yaml".to_string(),
            virtual_service("vs", "default", &["f.example.com"], &["gw"], http),
        ),
        (
            "page.html".to_string(),
            "<h1>maintenance</h1>\n".to_string(),
        ),
    ];
    let g = start_files(&files).await;
    let r = get(&g.url(80, "/").await, "f.example.com", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "<h1>maintenance</h1>\n"));

    let http = "  - directResponse: {status: 200, body: {filename: missing.html}}\n";
    let out = validate_files(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        (
            "vs.yaml",
            &virtual_service("vs", "default", &["f.example.com"], &["gw"], http),
        ),
    ]);
    assert_eq!(out.code, Some(1), "{:?}", out.lines);
    let want = format!("{}:", out.file("vs.yaml"));
    assert!(
        out.lines.iter().any(|l| l.starts_with(&want)
            && l.contains(": error: VirtualService default/vs: spec.http[0].directResponse.body.filename: cannot read ")),
        "{:?}",
        out.lines
    );
}

/// A VirtualService for `host` with one direct response whose body is `size` bytes.
fn direct_body_vs(name: &str, host: &str, size: usize) -> String {
    virtual_service(
        name,
        "default",
        &[host],
        &["gw"],
        &format!(
            "  - match: [{{uri: {{prefix: /}}}}]\n    directResponse:\n      status: 200\n      body:\n        string: {}\n",
            "a".repeat(size)
        ),
    )
}

#[tokio::test]
async fn direct_response_bodies_over_1_mib_are_an_error_and_not_served() {
    const MIB: usize = 1024 * 1024;
    let gw = gateway(&[(80, &["*"])]);
    let big = direct_body_vs("big", "big.example.com", MIB + 1);
    let limit = direct_body_vs("limit", "limit.example.com", MIB);

    let v = validate_files(&[("gw.yaml", &gw), ("big.yaml", &big), ("limit.yaml", &limit)]);
    assert_eq!(v.code, Some(1), "{v:#?}");
    let want = format!(
        "{}:{}: error: VirtualService default/big: spec.http[0].directResponse.body: body is {} bytes, more than the limit of 1 MiB",
        v.file("big.yaml"),
        line_of(&big, "body:"),
        MIB + 1
    );
    assert!(
        v.lines.contains(&want),
        "missing\n  {want}\nin {:#?}",
        v.lines
    );
    assert!(
        !v.lines.iter().any(|l| l.contains("default/limit")),
        "exactly 1 MiB is allowed: {:#?}",
        v.lines
    );

    let g = Gateway::start(&[("gw.yaml", &gw), ("big.yaml", &big), ("limit.yaml", &limit)]).await;
    let r = send(&g, "big.example.com", "/", &[]).await;
    assert_eq!(r.status, 404, "the rejected VirtualService is not served");
    let r = send(&g, "limit.example.com", "/", &[]).await;
    assert_eq!((r.status, r.body.len()), (200, MIB));
    let prefix = format!(
        "{}:{}: error: VirtualService default/big: spec.http[0].directResponse.body: ",
        g.path("big.yaml").display(),
        line_of(&big, "body:")
    );
    let diags = g.diagnostics().await;
    assert!(
        diags.iter().any(|d| d.starts_with(&prefix)),
        "missing {prefix} in {diags:#?}"
    );
}

// === headers ===

#[tokio::test]
async fn request_and_response_header_edits_at_route_and_destination_level() {
    let http = r#"  - headers:
      request:
        set:
          x-route-set: route
          x-client: '%DOWNSTREAM_REMOTE_ADDRESS%'
          x-client-ip: 'ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'
          x-user-copy: 'user=%REQ(x-user)%'
          x-percent: '100%%'
          x-absent-copy: '%REQ(x-absent)%'
        add: {x-existing: route}
        remove: [x-remove-me]
      response:
        set: {x-resp-route: route, x-resp-user: 'resp=%REQ(x-user)%'}
        add: {x-backend: added}
        remove: [x-up-route-removes]
    route:
    - destination: {host: echo.internal}
      headers:
        request:
          set: {x-dest-set: dest}
          add: {x-dest-add: dest}
          remove: [x-dest-remove]
        response:
          set: {x-resp-dest: dest}
          remove: [content-type, x-up-dest-removes]
"#;
    let g = serve_joined("h.example.com", http).await;
    let (client, r) = raw_http_from(
        g.addr(80).await,
        "GET /response-headers?x-up-route-removes=1&x-up-dest-removes=1&x-up-kept=1 HTTP/1.1\r\n\
         Host: h.example.com\r\nConnection: close\r\nx-user: jason\r\n\
         x-existing: client\r\nx-remove-me: 1\r\nx-dest-remove: 1\r\nx-dest-add: client\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let sent = r.json()["headers"].clone();
    let client_addr = client.to_string();
    let want_request = [
        ("x-route-set", Some("route")),
        ("x-client", Some(client_addr.as_str())),
        ("x-client-ip", Some("ip=127.0.0.1")),
        ("x-user-copy", Some("user=jason")),
        ("x-percent", Some("100%")),
        // A value that renders empty is not added (as Envoy).
        ("x-absent-copy", None),
        // `add` appends to what the client sent.
        ("x-existing", Some("client, route")),
        ("x-remove-me", None),
        ("x-dest-set", Some("dest")),
        ("x-dest-add", Some("client, dest")),
        ("x-dest-remove", None),
        ("x-user", Some("jason")),
    ];
    for (name, want) in want_request {
        assert_eq!(sent[name].as_str(), want, "request header {name}: {sent:#}");
    }
    let values = |name: &str| -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-resp-route"), ["route"]);
    assert_eq!(values("x-resp-user"), ["resp=jason"]);
    assert_eq!(values("x-resp-dest"), ["dest"]);
    // `add` appends to the upstream's own header; `remove` removes the upstream's.
    assert_eq!(values("x-backend"), ["echo", "added"]);
    let none: &[&str] = &[];
    assert_eq!(values("content-type"), none);
    assert_eq!(values("x-up-route-removes"), none);
    assert_eq!(values("x-up-dest-removes"), none);
    assert_eq!(values("x-up-kept"), ["1"]);
}

#[tokio::test]
async fn route_level_edits_win_over_destination_edits_on_the_same_header() {
    // Two weighted destinations (the second gets nothing): Envoy applies the weighted
    // cluster's edits first, then the route's. (For a single destination Istio appends the
    // destination's edits to the route's own list instead, so its `set` would win there;
    // Isthmus applies the destination's edits first in both cases.)
    let http = r#"  - headers:
      request:
        set: {x-both: route, x-seen-from-dest: '%REQ(x-dest-only)%'}
        remove: [x-dest-sets-route-removes]
      response:
        set: {x-both: route}
        remove: [x-dest-sets-route-removes]
    route:
    - destination: {host: echo.internal}
      weight: 100
      headers:
        request:
          set: {x-both: dest, x-dest-only: dest, x-dest-sets-route-removes: dest}
        response:
          set: {x-both: dest, x-dest-only: dest, x-dest-sets-route-removes: dest}
    - destination: {host: echo.internal}
      weight: 0
"#;
    let g = serve_joined("p.example.com", http).await;
    let r = send(&g, "p.example.com", "/get", &[("x-both", "client")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let sent = &r.json()["headers"];
    assert_eq!(sent["x-both"], "route", "{sent:#}");
    assert_eq!(sent["x-dest-only"], "dest");
    // The route's edits see the destination's result.
    assert_eq!(sent["x-seen-from-dest"], "dest");
    assert!(sent.get("x-dest-sets-route-removes").is_none(), "{sent:#}");
    assert_eq!(r.all("x-both"), ["route"]);
    assert_eq!(r.all("x-dest-only"), ["dest"]);
    assert_eq!(r.all("x-dest-sets-route-removes"), Vec::<&str>::new());
}

#[tokio::test]
async fn response_header_edits_apply_to_redirects_and_direct_responses() {
    let http = r#"  - match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /elsewhere}
    headers:
      response:
        set: {x-kind: redirect, cache-control: no-store}
        add: {x-added: one}
  - match: [{uri: {prefix: /direct}}]
    directResponse: {status: 418, body: {string: teapot}}
    headers:
      response:
        set: {x-kind: direct, x-client-ip: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'}
        remove: [content-type]
"#;
    let g = serve(&[], "e.example.com", http).await;
    let addr = g.addr(80).await;
    let r = request(addr, "GET", "e.example.com", "/redirect", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://e.example.com/elsewhere"));
    assert_eq!(r.all("x-kind"), ["redirect"]);
    assert_eq!(r.all("cache-control"), ["no-store"]);
    assert_eq!(r.all("x-added"), ["one"]);

    let r = request(addr, "GET", "e.example.com", "/direct", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (418, "teapot"));
    assert_eq!(r.all("x-kind"), ["direct"]);
    assert_eq!(r.all("x-client-ip"), ["127.0.0.1"]);
    assert_eq!(r.header("content-type"), None);
}

// === x-envoy-* ===

#[tokio::test]
async fn client_envoy_headers_are_dropped_and_the_attempt_count_is_sent() {
    let g = serve(
        &["echo"],
        "x.example.com",
        "  - route: [{destination: {host: echo.internal}}]\n",
    )
    .await;
    let r = send(
        &g,
        "x.example.com",
        "/get",
        &[
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-foo", "bar"),
            ("x-envoy-attempt-count", "7"),
            ("x-envoy-original-path", "/forged"),
            ("x-envoy-expected-rq-timeout-ms", "1"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("x-kept", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let sent = r.json()["headers"].clone();
    let envoy: Vec<(&String, &serde_json::Value)> = sent
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("x-envoy-"))
        .collect();
    assert_eq!(
        envoy,
        [(
            &"x-envoy-attempt-count".to_string(),
            &serde_json::json!("1")
        )],
        "{sent:#}"
    );
    assert_eq!(sent["x-kept"], "1");

    // A client's timeout header is not obeyed either: the slow answer still arrives.
    let r = send(
        &g,
        "x.example.com",
        "/delay/0.2",
        &[("x-envoy-upstream-rq-timeout-ms", "1")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
}

// === corsPolicy ===

const CORS_ROUTES: &str = r#"  - match: [{uri: {prefix: /ignore}}]
    corsPolicy:
      allowOrigins: [{exact: 'https://a.example'}]
      allowMethods: [GET]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: echo.internal}}]
  - match: [{uri: {prefix: /wildcards}}]
    corsPolicy:
      allowOrigins: [{exact: 'https://a.example'}]
      allowMethods: ['*']
      allowHeaders: ['*']
    route: [{destination: {host: echo.internal}}]
  - corsPolicy:
      allowOrigins:
      - exact: 'https://a.example'
      - prefix: 'https://pre.'
      - regex: 'https://[a-z]+\.re\.example'
      allowMethods: [GET, POST]
      allowHeaders: [x-custom, content-type]
      exposeHeaders: [x-exposed, x-other]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: echo.internal}}]
"#;

fn preflight(origin: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-custom"),
    ]
}

#[tokio::test]
async fn cors_preflights_from_allowed_origins_are_answered_by_the_gateway() {
    let g = serve(&["echo"], "c.example.com", CORS_ROUTES).await;
    let addr = g.addr(80).await;
    for origin in [
        "https://a.example",
        "https://pre.anything.example",
        "https://abc.re.example",
    ] {
        let r = request(addr, "OPTIONS", "c.example.com", "/api", &preflight(origin)).await;
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        // The backend never saw it.
        assert_eq!(r.backend(), None, "{origin}: {r:?}");
        assert_eq!(r.body, "");
        let want = [
            ("access-control-allow-origin", origin),
            ("access-control-allow-methods", "GET,POST"),
            ("access-control-allow-headers", "x-custom,content-type"),
            ("access-control-max-age", "86400"),
            ("access-control-allow-credentials", "true"),
        ];
        for (name, value) in want {
            assert_eq!(r.all(name), [value], "{origin}: {name}");
        }
        assert_eq!(
            r.names_starting("access-control-").len(),
            want.len(),
            "{r:?}"
        );
        assert_eq!(r.header("server"), Some("istio-envoy"));
    }
    // `*` for methods or headers echoes what the preflight asks for (Envoy).
    let r = request(
        addr,
        "OPTIONS",
        "c.example.com",
        "/wildcards",
        &preflight("https://a.example"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.all("access-control-allow-methods"), ["POST"]);
    assert_eq!(r.all("access-control-allow-headers"), ["x-custom"]);
}

#[tokio::test]
async fn cors_simple_requests_get_headers_only_for_allowed_origins() {
    let g = serve(&["echo"], "c.example.com", CORS_ROUTES).await;
    let addr = g.addr(80).await;
    let r = request(
        addr,
        "GET",
        "c.example.com",
        "/api",
        &[("origin", "https://abc.re.example")],
    )
    .await;
    assert_eq!((r.status, r.backend()), (200, Some("echo")), "{r:?}");
    assert_eq!(
        r.all("access-control-allow-origin"),
        ["https://abc.re.example"]
    );
    assert_eq!(
        r.all("access-control-expose-headers"),
        ["x-exposed,x-other"]
    );
    assert_eq!(r.all("access-control-allow-credentials"), ["true"]);
    assert_eq!(r.names_starting("access-control-").len(), 3, "{r:?}");

    // An OPTIONS without Access-Control-Request-Method is not a preflight: it is forwarded.
    let r = request(
        addr,
        "OPTIONS",
        "c.example.com",
        "/api",
        &[("origin", "https://a.example")],
    )
    .await;
    assert_eq!((r.status, r.backend()), (200, Some("echo")), "{r:?}");
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(r.all("access-control-allow-origin"), ["https://a.example"]);

    for headers in [
        vec![("origin", "https://evil.example")],
        // Regexes match the whole origin; prefixes are prefixes.
        vec![("origin", "https://abc.re.example.evil")],
        vec![("origin", "http://pre.example")],
        vec![],
    ] {
        let r = request(addr, "GET", "c.example.com", "/api", &headers).await;
        assert_eq!((r.status, r.backend()), (200, Some("echo")), "{headers:?}");
        assert!(
            r.names_starting("access-control-").is_empty(),
            "{headers:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn cors_unmatched_preflights_are_forwarded_or_ignored() {
    let g = serve(&["echo"], "c.example.com", CORS_ROUTES).await;
    let addr = g.addr(80).await;
    // FORWARD (the default): the backend answers, without CORS headers.
    let r = request(
        addr,
        "OPTIONS",
        "c.example.com",
        "/api",
        &preflight("https://evil.example"),
    )
    .await;
    assert_eq!((r.status, r.backend()), (200, Some("echo")), "{r:?}");
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(r.json()["headers"]["access-control-request-method"], "POST");
    assert!(r.names_starting("access-control-").is_empty(), "{r:?}");

    // IGNORE: the gateway answers 200 itself, and does not allow the origin. (Envoy still
    // sends the policy's methods, headers and max age; without allow-origin the browser
    // fails the preflight.)
    let r = request(
        addr,
        "OPTIONS",
        "c.example.com",
        "/ignore",
        &preflight("https://evil.example"),
    )
    .await;
    assert_eq!((r.status, r.backend()), (200, None), "{r:?}");
    assert_eq!(r.body, "");
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    assert_eq!(
        r.names_starting("access-control-"),
        ["access-control-allow-methods"]
    );
    assert_eq!(r.all("access-control-allow-methods"), ["GET"]);

    // The allowed origin on the IGNORE route still gets a full preflight answer.
    let r = request(
        addr,
        "OPTIONS",
        "c.example.com",
        "/ignore",
        &preflight("https://a.example"),
    )
    .await;
    assert_eq!((r.status, r.backend()), (200, None), "{r:?}");
    assert_eq!(r.all("access-control-allow-origin"), ["https://a.example"]);
}

// === delegate ===

/// A delegate VirtualService: no hosts, no gateways.
fn delegate_vs(name: &str, namespace: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  http:\n{http}"
    )
}

#[tokio::test]
async fn delegate_routes_replace_the_delegating_rule() {
    let mut files = backends(&["v1", "v2", "team"]).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    let root = r#"  - match: [{uri: {prefix: /api}}]
    delegate: {name: api}
    headers: {request: {set: {x-root: 'yes'}}}
    timeout: 5s
  - match: [{uri: {prefix: /team}}]
    delegate: {name: shared, namespace: team}
"#;
    files.push((
        "root.yaml".into(),
        virtual_service("root", "default", &["d.example.com"], &["gw"], root),
    ));
    files.push((
        "api.yaml".into(),
        delegate_vs(
            "api",
            "default",
            r#"  - match: [{uri: {prefix: /api/v1}}]
    route: [{destination: {host: v1.internal}}]
  - match: [{uri: {prefix: /api/v2}}]
    headers: {request: {set: {x-child: 'yes'}}}
    route: [{destination: {host: v2.internal}}]
"#,
        ),
    ));
    files.push((
        "team.yaml".into(),
        delegate_vs(
            "shared",
            "team",
            "  - match: [{uri: {prefix: /team/app}}]\n    route: [{destination: {host: team.internal}}]\n",
        ),
    ));
    let g = start_files(&files).await;
    let h = "d.example.com";
    let cases = [
        ("/api/v1", "v1"),
        ("/api/v1/users?id=1", "v1"),
        ("/api/v2/x", "v2"),
        ("/api/other", "404"),
        ("/api", "404"),
        ("/web", "404"),
        ("/team/app/x", "team"),
        ("/team/other", "404"),
    ];
    let mut wrong = Vec::new();
    for (path, want) in cases {
        let r = send(&g, h, path, &[]).await;
        let got = match (r.status, r.backend()) {
            (200, Some(b)) => b.to_string(),
            (s, _) => s.to_string(),
        };
        if got != want {
            wrong.push(format!("  {path}: got {got}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong routes:\n{}\n{}",
        wrong.join("\n"),
        g.admin_get("/config_dump").await.1
    );

    // The root's settings apply where the delegate route sets none.
    let r = send(&g, h, "/api/v1", &[]).await;
    let sent = &r.json()["headers"];
    assert_eq!(sent["x-root"], "yes", "{sent:#}");
    assert_eq!(sent["x-envoy-expected-rq-timeout-ms"], "5000");
    let r = send(&g, h, "/api/v2", &[]).await;
    let sent = &r.json()["headers"];
    assert_eq!(sent["x-child"], "yes", "{sent:#}");
    assert!(
        sent.get("x-root").is_none(),
        "the delegate's headers replace the root's"
    );
    assert_eq!(sent["x-envoy-expected-rq-timeout-ms"], "5000");
    let r = send(&g, h, "/team/app", &[]).await;
    assert!(r.json()["headers"].get("x-root").is_none());
}

#[tokio::test]
async fn missing_or_nested_delegates_are_diagnosed_and_their_rules_dropped() {
    let mut files = backends(&["ok", "fallback"]).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    let root = r#"  - match: [{uri: {prefix: /gone}}]
    delegate: {name: missing}
  - match: [{uri: {prefix: /nest}}]
    delegate: {name: level1}
  - route: [{destination: {host: fallback.internal}}]
"#;
    let root = virtual_service("root", "default", &["n.example.com"], &["gw"], root);
    let level1 = delegate_vs(
        "level1",
        "default",
        r#"  - match: [{uri: {prefix: /nest/deeper}}]
    delegate: {name: level2}
  - match: [{uri: {prefix: /nest/ok}}]
    route: [{destination: {host: ok.internal}}]
"#,
    );
    let level2 = delegate_vs(
        "level2",
        "default",
        "  - route: [{destination: {host: ok.internal}}]\n",
    );
    files.push(("root.yaml".into(), root.clone()));
    files.push(("level1.yaml".into(), level1.clone()));
    files.push(("level2.yaml".into(), level2.clone()));
    let g = start_files(&files).await;
    let h = "n.example.com";
    for (path, want) in [
        ("/gone/x", "fallback"),
        ("/nest/ok", "ok"),
        ("/nest/deeper", "fallback"),
        ("/other", "fallback"),
    ] {
        let r = send(&g, h, path, &[]).await;
        assert_eq!((r.status, r.backend()), (200, Some(want)), "{path}");
    }
    let diags = g.diagnostics().await;
    let root_file = g.path("root.yaml").display().to_string();
    let level1_file = g.path("level1.yaml").display().to_string();
    for want in [
        format!(
            "{root_file}:{}: warning: VirtualService default/root: spec.http[0].delegate: delegate VirtualService default/missing is not defined; this route is dropped",
            line_of(&root, "name: missing")
        ),
        format!(
            "{level1_file}:{}: error: VirtualService default/level1: spec.http[0].delegate: delegation is one level deep",
            line_of(&level1, "name: level2")
        ),
    ] {
        assert!(
            diags.iter().any(|d| d.starts_with(&want)),
            "missing\n  {want}\nin {diags:#?}"
        );
    }
}

// === validation ===

#[test]
fn invalid_route_actions_are_reported_with_file_line_and_field() {
    let vs = |name: &str, http: &str| {
        virtual_service(name, "default", &["v.example.com"], &["gw"], http)
    };
    let docs: Vec<(&str, String, &str, String)> = vec![
        (
            "bad-regex.yaml",
            vs(
                "bad-regex",
                "  - rewrite:\n      uriRegexRewrite:\n        match: '(unclosed'\n        rewrite: /x\n    route: [{destination: {host: a.internal}}]\n",
            ),
            "match: '(unclosed'",
            "error: VirtualService default/bad-regex: spec.http[0].rewrite.uriRegexRewrite.match: invalid regex \"(unclosed\": ".into(),
        ),
        (
            "rewrite-redirect.yaml",
            vs(
                "rewrite-redirect",
                "  - redirect: {uri: /x}\n    rewrite: {uri: /y}\n",
            ),
            "rewrite:",
            "error: VirtualService default/rewrite-redirect: spec.http[0].rewrite: rewrite and redirect cannot be used together".into(),
        ),
        (
            "code.yaml",
            vs(
                "code",
                "  - redirect:\n      uri: /x\n      redirectCode: 399\n",
            ),
            "redirectCode",
            "error: VirtualService default/code: spec.http[0].redirect.redirectCode: redirect code 399 is not one of 301, 302, 303, 307, 308".into(),
        ),
        (
            "fault.yaml",
            vs(
                "fault",
                "  - fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 150\n    route: [{destination: {host: a.internal}}]\n",
            ),
            "value: 150",
            "error: VirtualService default/fault: spec.http[0].fault.abort.percentage.value: percentage 150 is not in 0..100".into(),
        ),
        (
            "header-name.yaml",
            vs(
                "header-name",
                "  - headers:\n      request:\n        set: {'bad header': x}\n    route: [{destination: {host: a.internal}}]\n",
            ),
            "request:",
            "error: VirtualService default/header-name: spec.http[0].headers.request: \"bad header\" is not a valid header name".into(),
        ),
        (
            "operator.yaml",
            vs(
                "operator",
                "  - route:\n    - destination: {host: a.internal}\n      headers:\n        response:\n          set:\n            x-a: 'v=%NOPE%'\n",
            ),
            "x-a:",
            "error: VirtualService default/operator: spec.http[0].route[0].headers.response.set.x-a: unknown operator %NOPE% in \"v=%NOPE%\"".into(),
        ),
        (
            "delegate.yaml",
            vs("delegate", "  - delegate:\n      namespace: default\n"),
            "delegate:",
            "error: VirtualService default/delegate: spec.http[0].delegate.name: delegate name is required".into(),
        ),
    ];
    let gw = gateway(&[(80, &["*"])]);
    let se = service("a", "a.internal", &[("127.0.0.1:9".parse().unwrap(), "v1")]);
    let mut files: Vec<(&str, &str)> = vec![("gw.yaml", &gw), ("se.yaml", &se)];
    for (file, text, _, _) in &docs {
        files.push((file, text));
    }
    let v = validate_files(&files);
    assert_eq!(v.code, Some(1), "{v:#?}");
    let mut missing = Vec::new();
    for (file, text, needle, rest) in &docs {
        let prefix = format!("{}:{}: {rest}", v.file(file), line_of(text, needle));
        if !v.has_prefix(&prefix) {
            missing.push(prefix);
        }
    }
    assert!(
        missing.is_empty(),
        "missing diagnostics:\n  {}\nin\n{}",
        missing.join("\n  "),
        v.lines.join("\n")
    );
    assert!(
        v.stderr.contains(&format!("{} error(s)", docs.len())),
        "one error per bad VirtualService: {}\n{}",
        v.stderr,
        v.lines.join("\n")
    );
}
