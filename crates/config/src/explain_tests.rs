//! Table tests of `isthmus explain`: inline configurations, requests, and the route, reasons
//! and outcome the explanation gives. Every HTTP case is also routed the way the data plane
//! routes it (virtual host lookup, then `VirtualHost::find`) to check that they agree.

use isthmus_api::load::load_str;

use super::*;
use crate::build::{LastGood, build};
use crate::instance::Instance;
use crate::matching::RequestView;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 8080, name: http-alt, protocol: HTTP}
    hosts: [a.example.com]
  - port: {number: 81, name: http-redirect, protocol: HTTP}
    hosts: [redirect.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/cert.pem, privateKey: /certs/key.pem}
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [pass.example.com, '*.pass.example.com']
    tls: {mode: PASSTHROUGH}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.svc, b.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 10.0.0.1, ports: {http: 9001}, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {http: 9002}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns, namespace: default}
spec:
  hosts: [c.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.svc
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [web]
  http:
  - name: api
    match: [{uri: {prefix: /api}, method: {exact: POST}}]
    route: [{destination: {host: a.svc}}]
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: a.svc, subset: v2}}]
  - name: query
    match: [{queryParams: {v: {exact: "1"}}}]
    route: [{destination: {host: b.svc}}]
  - name: alt
    match: [{port: 8080, uri: {prefix: /alt}}]
    route: [{destination: {host: b.svc}}]
    rewrite: {uri: /v2}
  - name: old
    match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com}
  - name: teapot
    match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - name: default
    route:
    - {destination: {host: a.svc, subset: v1}, weight: 80}
    - {destination: {host: b.svc}, weight: 20}
  - name: unreachable
    match: [{uri: {prefix: /never}}]
    route: [{destination: {host: b.svc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: default}
spec:
  hosts: ['*.example.com']
  gateways: [web]
  http:
  - route: [{destination: {host: c.svc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: deep, namespace: default}
spec:
  hosts: ['*.deep.example.com']
  gateways: [web]
  http:
  - route: [{destination: {host: b.svc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any, namespace: default}
spec:
  hosts: ['*']
  gateways: [web]
  http:
  - match: [{uri: {prefix: /any}}]
    route: [{destination: {host: a.svc, subset: v9}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.example.com]
  gateways: [secure]
  http:
  - match: [{scheme: {exact: https}}]
    route: [{destination: {host: a.svc}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [pass.example.com, '*.pass.example.com']
  gateways: [secure]
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: a.svc}}]
  - match: [{sniHosts: [x.pass.example.com]}]
    route: [{destination: {host: b.svc}}]
  tcp:
  - route: [{destination: {host: c.svc}}]
"#;

fn snapshot() -> Snapshot {
    let loaded = load_str("t.yaml", CONFIG).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let errors: Vec<String> = b
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && !d.message.contains("v9"))
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    b.snapshot
}

fn request(url: &str, method: Option<&str>, headers: &[&str]) -> Request {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    Request::parse(&RequestSpec {
        url,
        method,
        headers: &headers,
        sni: None,
    })
    .unwrap()
}

/// `MATCH #5 default` / `skip #0 api: <why>` for the HTTP and TLS/TCP routes evaluated.
fn trace(e: &Explanation) -> Vec<String> {
    let http = e.routes.iter().map(|r| {
        let mark = if r.matched { "MATCH" } else { "skip" };
        match &r.why_not {
            Some(w) => format!("{mark} #{} {}: {w}", r.index, r.name),
            None => format!("{mark} #{} {}", r.index, r.name),
        }
    });
    let l4 = e.l4_routes.iter().map(|r| {
        let mark = if r.matched { "MATCH" } else { "skip" };
        match &r.why_not {
            Some(w) => format!("{mark} #{} {}: {w}", r.index, r.virtual_service),
            None => format!("{mark} #{} {}", r.index, r.virtual_service),
        }
    });
    http.chain(l4).collect()
}

/// The route the data plane takes on a plaintext HTTP port: the same lookups as the handler.
fn data_plane(s: &Snapshot, req: &Request) -> Option<String> {
    let table = &s.listeners.get(&req.port)?.virtual_hosts;
    let host = crate::hosts::request_host(&req.authority);
    let vh = table.find(&host).filter(|vh| !vh.require_tls)?;
    let path = crate::path::normalize(&req.path);
    let view = RequestView {
        method: &req.method,
        scheme: "http",
        authority: &req.authority,
        path: &path,
        query: req.query.as_deref(),
        headers: &req.headers,
    };
    vh.find(&view).map(|r| r.source.field.clone())
}

/// The reason route `api` fails on a path outside `/api`.
fn api_uri(path: &str) -> &'static str {
    Box::leak(format!(r#"skip #0 api: uri prefix "/api" does not match "{path}""#).into_boxed_str())
}

struct Case {
    url: &'static str,
    method: Option<&'static str>,
    headers: &'static [&'static str],
    /// The virtual host and how it was found.
    host: Option<(&'static str, HostMatch)>,
    trace: Vec<&'static str>,
    routed: bool,
    result: &'static str,
}

fn get(url: &'static str) -> Case {
    Case {
        url,
        method: None,
        headers: &[],
        host: None,
        trace: vec![],
        routed: true,
        result: "",
    }
}

#[test]
fn http_routes_in_order_with_the_reason_each_one_failed() {
    let s = snapshot();
    let api = r#"skip #0 api: method exact "POST" does not match "GET""#;
    let jason = r#"skip #1 jason: header "end-user" exact "jason": header absent"#;
    let query = r#"skip #2 query: query param "v" exact "1": parameter absent"#;
    let cases = [
        Case {
            host: Some(("a.example.com", HostMatch::Exact)),
            trace: vec![
                api,
                jason,
                query,
                r#"skip #3 old: uri prefix "/old" does not match "/api/x""#,
                r#"skip #4 teapot: uri exact "/teapot" does not match "/api/x""#,
                "MATCH #5 default",
            ],
            result: "forwarded to outbound|80|v1|a.svc (80%), outbound|80||b.svc (20%)",
            ..get("http://a.example.com/api/x")
        },
        Case {
            method: Some("POST"),
            trace: vec!["MATCH #0 api"],
            result: "forwarded to outbound|80||a.svc",
            ..get("http://a.example.com/api/x")
        },
        Case {
            headers: &["End-User: bob"],
            trace: vec![
                api,
                r#"skip #1 jason: header "end-user" exact "jason" does not match "bob""#,
                query,
                r#"skip #3 old: uri prefix "/old" does not match "/api/x""#,
                r#"skip #4 teapot: uri exact "/teapot" does not match "/api/x""#,
                "MATCH #5 default",
            ],
            ..get("http://a.example.com/api/x")
        },
        Case {
            headers: &["end-user: jason"],
            trace: vec![api, "MATCH #1 jason"],
            result: "forwarded to outbound|80|v2|a.svc",
            ..get("http://a.example.com/api/x")
        },
        Case {
            trace: vec![api, jason, "MATCH #2 query"],
            result: "forwarded to outbound|80||b.svc",
            ..get("http://a.example.com/api?w=0&v=1")
        },
        Case {
            trace: vec![api_uri("/old/x"), jason, query, "MATCH #3 old"],
            result: "301 redirect to http://new.example.com/new?q=1",
            ..get("http://a.example.com/old/x?q=1")
        },
        // Dot segments go before matching, as in the data plane.
        Case {
            trace: vec![
                api_uri("/teapot"),
                jason,
                query,
                r#"skip #3 old: uri prefix "/old" does not match "/teapot""#,
                "MATCH #4 teapot",
            ],
            result: "418 direct response from the route",
            ..get("http://a.example.com/x/../teapot")
        },
        // Host precedence: exact, then the longest wildcard, then `*`.
        Case {
            host: Some(("*.deep.example.com", HostMatch::Wildcard)),
            result: "forwarded to outbound|80||b.svc",
            ..get("http://x.deep.example.com/")
        },
        Case {
            host: Some(("*.example.com", HostMatch::Wildcard)),
            result: "forwarded to outbound|80||c.svc",
            ..get("http://B.Example.com.:80/")
        },
        Case {
            host: Some(("*", HostMatch::Any)),
            trace: vec![r#"skip #0 : uri prefix "/any" does not match "/nothing""#],
            routed: false,
            result: "404 (NR): none of the 1 route(s) of virtual host * matches (Envoy answers 404 with an empty body)",
            ..get("http://other.org/nothing")
        },
        Case {
            host: Some(("*", HostMatch::Any)),
            trace: vec!["MATCH #0 "],
            routed: false,
            result: "503 (NC): outbound||v9|a.svc has no cluster (unknown service, port or subset)",
            ..get("http://other.org/any")
        },
        // Port 8080 has its own table: the port-8080 block is in it, and `b.example.com`
        // is not.
        Case {
            host: Some(("a.example.com", HostMatch::Exact)),
            trace: vec![api_uri("/alt/x"), jason, query, "MATCH #3 alt"],
            result: "forwarded to outbound|80||b.svc",
            ..get("http://a.example.com:8080/alt/x")
        },
        Case {
            routed: false,
            result: r#"404 (NR): no virtual host of port 8080 matches host "b.example.com" (Envoy answers 404 with an empty body)"#,
            ..get("http://b.example.com:8080/")
        },
        Case {
            routed: false,
            result: "no Gateway server of this instance declares port 9999: nothing listens there (connection refused)",
            ..get("http://a.example.com:9999/")
        },
        Case {
            host: Some(("redirect.example.com", HostMatch::Exact)),
            result: "301 redirect to https://redirect.example.com:81/p?q=1 (httpsRedirect)",
            ..get("http://redirect.example.com:81/p?q=1")
        },
        Case {
            routed: false,
            result: "port 80 serves plaintext HTTP: a TLS handshake fails there (use http://)",
            ..get("https://a.example.com:80/")
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let req = request(c.url, c.method, c.headers);
        let e = explain(&s, &req);
        let at = format!("case {i}: {} {:?}\n{}", c.url, c.headers, e.to_text());
        if let Some((domain, how)) = c.host {
            let vh = e.virtual_host.as_ref().expect(&at);
            assert_eq!((vh.domain.as_str(), vh.matched_by), (domain, how), "{at}");
        }
        if !c.trace.is_empty() {
            assert_eq!(trace(&e), c.trace, "{at}");
        }
        assert_eq!(e.routed, c.routed, "{at}");
        if !c.result.is_empty() {
            assert_eq!(e.result, c.result, "{at}");
        }
        if req.scheme == Scheme::Http {
            let chosen = e
                .routes
                .iter()
                .find(|r| r.matched)
                .map(|r| r.source.field.clone());
            assert_eq!(
                chosen,
                data_plane(&s, &req),
                "{at}: explain and the data plane agree"
            );
        }
    }
}

#[test]
fn excluded_blocks_say_why_they_are_not_in_the_table() {
    let s = snapshot();
    let e = explain(&s, &request("http://a.example.com/alt", None, &[]));
    let excluded: Vec<(String, String)> = e
        .excluded
        .iter()
        .map(|x| (x.name.clone(), x.reason.clone()))
        .collect();
    assert_eq!(
        excluded,
        [
            ("alt".to_string(), "match port 8080 != listener port 80".to_string()),
            (
                "unreachable".to_string(),
                "it comes after the catch-all route at spec.http[6], so it can never match (Istio drops it)"
                    .to_string()
            ),
        ]
    );
    let source = &e.excluded[0].source;
    assert_eq!(
        (source.file.as_ref(), source.line, source.field.as_str()),
        (
            "t.yaml",
            crate_line("name: alt") + 1,
            "spec.http[3].match[0]"
        )
    );
}

/// The 1-based line of the first line of [`CONFIG`] containing `needle`.
fn crate_line(needle: &str) -> usize {
    CONFIG.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn provenance_of_servers_and_routes() {
    let s = snapshot();
    let e = explain(
        &s,
        &request("http://a.example.com/", None, &["end-user: jason"]),
    );
    let vh = e.virtual_host.as_ref().unwrap();
    let servers: Vec<(String, usize, usize)> = vh
        .servers
        .iter()
        .map(|s| (s.gateway.clone(), s.index, s.source.line))
        .collect();
    assert_eq!(
        servers,
        [("default/web".to_string(), 0, crate_line("number: 80,"))]
    );
    let matched = e.routes.iter().find(|r| r.matched).unwrap();
    assert_eq!(matched.virtual_service, "default/a");
    assert_eq!(&*matched.source.resource, "VirtualService default/a");
    assert_eq!(matched.source.line, crate_line("headers: {end-user"));
    assert_eq!(matched.when, r#"header "end-user" exact "jason""#);
}

#[test]
fn forward_details_and_endpoint_sets() {
    let s = snapshot();
    let e = explain(&s, &request("http://a.example.com:8080/alt/x", None, &[]));
    let Outcome::Forward(f) = &e.outcome else {
        panic!("{e:?}")
    };
    assert_eq!(f.upstream_path.as_deref(), Some("/v2/x"));
    assert_eq!(f.retries.attempts, 2);
    let d = &f.destinations[0];
    assert_eq!(d.service.as_deref(), Some("b.svc"));
    let Endpoints::Static { addresses } = &d.endpoints else {
        panic!("{d:?}")
    };
    let addrs: Vec<String> = addresses.iter().map(|a| a.address.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:9001", "10.0.0.2:9002"]);

    let e = explain(&s, &request("http://x.example.com/", None, &[]));
    let Outcome::Forward(f) = &e.outcome else {
        panic!("{e:?}")
    };
    let Endpoints::Dns { names } = &f.destinations[0].endpoints else {
        panic!("{f:?}")
    };
    assert_eq!(names, &["c.svc:80"]);
}

/// URL, SNI option, the chain (server name, how, mode), the route trace, routed, result.
type TlsCase = (
    &'static str,
    Option<&'static str>,
    Option<(&'static str, HostMatch, &'static str)>,
    &'static [&'static str],
    bool,
    &'static str,
);

#[test]
fn tls_ports_choose_the_server_by_sni() {
    let s = snapshot();
    let cases: [TlsCase; 6] = [
        (
            "https://secure.example.com/",
            None,
            Some(("secure.example.com", HostMatch::Exact, "SIMPLE")),
            &["MATCH #0 "],
            true,
            "forwarded to outbound|80||a.svc",
        ),
        (
            "https://pass.example.com/",
            None,
            Some(("pass.example.com", HostMatch::Exact, "PASSTHROUGH")),
            &["MATCH #0 default/pass"],
            true,
            "TLS passed through to outbound|80||a.svc",
        ),
        (
            "https://x.pass.example.com/",
            None,
            Some(("*.pass.example.com", HostMatch::Wildcard, "PASSTHROUGH")),
            &[
                r#"skip #0 default/pass: sniHosts ["pass.example.com"] do not cover "x.pass.example.com""#,
                "MATCH #1 default/pass",
            ],
            true,
            "TLS passed through to outbound|80||b.svc",
        ),
        (
            "https://y.pass.example.com/",
            None,
            Some(("*.pass.example.com", HostMatch::Wildcard, "PASSTHROUGH")),
            &[
                r#"skip #0 default/pass: sniHosts ["pass.example.com"] do not cover "y.pass.example.com""#,
                r#"skip #1 default/pass: sniHosts ["x.pass.example.com"] do not cover "y.pass.example.com""#,
            ],
            false,
            r#"the connection is closed: no tls route matches SNI "y.pass.example.com""#,
        ),
        (
            "https://127.0.0.1/",
            None,
            None,
            &[],
            false,
            "the connection is closed: no server of port 443 matches a ClientHello without SNI (it takes only a '*' server); its server names: secure.example.com, pass.example.com, *.pass.example.com",
        ),
        (
            "http://secure.example.com:443/",
            None,
            None,
            &[],
            false,
            "port 443 expects TLS (its servers are HTTPS or TLS): a plaintext request fails the handshake (use https://)",
        ),
    ];
    for (url, sni, chain, want_trace, routed, result) in cases {
        let headers: Vec<String> = Vec::new();
        let req = Request::parse(&RequestSpec {
            url,
            method: None,
            headers: &headers,
            sni,
        })
        .unwrap();
        let e = explain(&s, &req);
        let at = format!("{url}\n{}", e.to_text());
        let got = e
            .chain
            .as_ref()
            .map(|c| (c.server_name.as_str(), c.matched_by, c.tls_mode));
        assert_eq!(got, chain, "{at}");
        assert_eq!(trace(&e), want_trace, "{at}");
        assert_eq!((e.routed, e.result.as_str()), (routed, result), "{at}");
    }
}

#[test]
fn tcp_ports_take_the_first_tcp_route_whatever_the_url() {
    let s = snapshot();
    let e = explain(&s, &request("http://anything:31400/x", None, &[]));
    assert_eq!(trace(&e), ["MATCH #0 default/pass"]);
    assert_eq!(e.result, "TCP proxied to outbound|80||c.svc");
    assert!(e.routed);
}

#[test]
fn short_names_get_a_hint() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [reviews.default.svc.cluster.local]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  gateways: [gw]
  http:
  - route: [{destination: {host: reviews}}]
";
    let loaded = load_str("t.yaml", yaml).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let e = explain(&b.snapshot, &request("http://reviews/", None, &[]));
    assert!(
        e.result
            .contains("did you mean reviews.default.svc.cluster.local?"),
        "{}",
        e.result
    );
    assert_eq!(e.domains, ["reviews.default.svc.cluster.local"]);
}

#[test]
fn fault_aborts_answer_before_any_destination() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /always}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: a.svc}}]
  - fault: {abort: {httpStatus: 500, percentage: {value: 25}}}
    route: [{destination: {host: a.svc}}]
";
    let loaded = load_str("t.yaml", yaml).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let cases = [
        (
            "http://a.example.com/always",
            "aborted by the route's fault injection with HTTP 503 (FI)",
        ),
        (
            "http://a.example.com/sometimes",
            "forwarded to outbound|80||a.svc; 25% of requests are aborted with HTTP 500 (FI)",
        ),
    ];
    for (url, want) in cases {
        let e = explain(&b.snapshot, &request(url, None, &[]));
        assert!(e.routed, "{url}");
        assert_eq!(e.result, want, "{url}");
    }
}

#[test]
fn delegated_routes_name_the_delegate_that_wrote_them() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
  - delegate: {name: child}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: child, namespace: default}
spec:
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route: [{destination: {host: a.svc}}]
";
    let loaded = load_str("t.yaml", yaml).unwrap();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &Instance::default(),
    );
    let e = explain(
        &b.snapshot,
        &request("http://a.example.com/api/x", None, &[]),
    );
    let r = &e.routes[0];
    assert!(r.matched);
    assert_eq!(r.virtual_service, "default/root");
    assert_eq!(&*r.source.resource, "VirtualService default/child");
    assert_eq!(r.source.field, "spec.http[0].match[0]");
    assert!(
        e.to_text().contains(
            "MATCH #0 VirtualService default/root (delegate VirtualService default/child) route \"api\" spec.http[0].match[0]  t.yaml:"
        ),
        "{}",
        e.to_text()
    );
}
