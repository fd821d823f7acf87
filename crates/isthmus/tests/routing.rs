//! Routing end to end, through real sockets: request matching, virtual-host selection, binding
//! to Gateways, merging, weights and load balancing, the gateway's own replies, the headers it
//! adds, path normalisation, h2c and request bodies. Istio semantics are the reference.
//!
//! Most tests start one gateway with a VirtualService whose routes each lead to their own demo
//! backend, then check a table of requests against the backend that must answer (or the status
//! the gateway must give).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
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

/// HTTP routes from `(match, backend)` pairs; an empty match makes a route without `match`.
fn routes(rules: &[(&str, &str)]) -> String {
    let hosts: Vec<String> = rules.iter().map(|(_, b)| host_of(b)).collect();
    let pairs: Vec<(&str, &str)> = rules
        .iter()
        .zip(&hosts)
        .map(|((m, _), h)| (*m, h.as_str()))
        .collect();
    http_routes(&pairs)
}

/// A gateway with an HTTP server for `*` on port 80 and one VirtualService `vs` for `hosts`,
/// bound to it, with one route per `(match, backend)`.
async fn serve(hosts: &[&str], rules: &[(&str, &str)]) -> Gateway {
    let names: Vec<&str> = rules.iter().map(|(_, b)| *b).collect();
    let mut files = backends(&names).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    files.push((
        "vs.yaml".into(),
        virtual_service("vs", "default", hosts, &["gw"], &routes(rules)),
    ));
    start_files(&files).await
}

// === Requests and expected outcomes ===

/// One request of a table.
#[derive(Debug, Clone)]
struct Req {
    port: u16,
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
}

/// A GET of `path` with `Host: host` on Gateway port 80.
fn req(host: &'static str, path: &'static str) -> Req {
    Req {
        port: 80,
        method: "GET",
        host,
        path,
        headers: Vec::new(),
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.push((name, value));
        self
    }

    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn port(mut self, port: u16) -> Req {
        self.port = port;
        self
    }

    async fn send(&self, client: &reqwest::Client, addr: SocketAddr) -> Reply {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut rb = client
            .request(method, format!("http://{addr}{}", self.path))
            .header("host", self.host);
        for (k, v) in &self.headers {
            rb = rb.header(*k, *v);
        }
        Reply::from(rb.send().await.unwrap()).await
    }
}

/// What a reply amounts to: the backend that answered, or else the status code.
fn outcome(r: &Reply) -> String {
    match (r.status, r.backend()) {
        (200, Some(b)) => b.to_string(),
        (status, _) => status.to_string(),
    }
}

/// Sends every request in order and compares its outcome (a backend name, or a status code
/// such as "404"); reports every mismatch at once.
async fn check(g: &Gateway, cases: &[(Req, &str)]) {
    let client = client();
    let mut addrs: BTreeMap<u16, SocketAddr> = BTreeMap::new();
    for port in cases.iter().map(|(r, _)| r.port).collect::<BTreeSet<u16>>() {
        addrs.insert(port, g.addr(port).await);
    }
    let mut wrong = Vec::new();
    for (r, want) in cases {
        let got = outcome(&r.send(&client, addrs[&r.port]).await);
        if got != *want {
            wrong.push(format!(
                "  {} {} Host: {} port {} headers {:?}: got {got}, want {want}",
                r.method, r.path, r.host, r.port, r.headers
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} requests routed wrongly:\n{}\nroutes: {}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        g.admin_get("/config_dump").await.1
    );
}

// === Matching ===

#[tokio::test]
async fn uri_exact_prefix_and_full_match_regex() {
    let g = serve(
        &["m.example.com"],
        &[
            ("[{uri: {exact: /exact}}]", "exact"),
            ("[{uri: {prefix: /prefix}}]", "prefix"),
            ("[{uri: {regex: '/a/[0-9]+'}}]", "regex"),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/exact"), "exact"),
            (req(h, "/exact?x=1"), "exact"), // the query is not part of the path
            (req(h, "/exact/"), "fallback"),
            (req(h, "/exactly"), "fallback"),
            (req(h, "/Exact"), "fallback"), // case-sensitive
            (req(h, "/prefix"), "prefix"),
            (req(h, "/prefixed/x"), "prefix"), // a plain string prefix, not per segment
            (req(h, "/PREFIX"), "fallback"),
            (req(h, "/a/1"), "regex"),
            (req(h, "/a/123?q=x"), "regex"),
            (req(h, "/a/1/x"), "fallback"), // the regex must match the whole path
            (req(h, "/x/a/1"), "fallback"),
            (req(h, "/a/"), "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn ignore_uri_case_folds_exact_and_prefix_but_not_regex() {
    let g = serve(
        &["m.example.com"],
        &[
            ("[{uri: {exact: /Exact}, ignoreUriCase: true}]", "exact"),
            ("[{uri: {prefix: /Pre}, ignoreUriCase: true}]", "prefix"),
            // Envoy ignores case_sensitive for regexes: `(?i)` is the way.
            ("[{uri: {regex: '/Re'}, ignoreUriCase: true}]", "regex"),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/exact"), "exact"),
            (req(h, "/EXACT"), "exact"),
            (req(h, "/exact/x"), "fallback"),
            (req(h, "/pre"), "prefix"),
            (req(h, "/PREFIX/x"), "prefix"),
            (req(h, "/Re"), "regex"),
            (req(h, "/re"), "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn method_scheme_and_authority_matches() {
    let g = serve(
        &["a.example.com", "b.example.com", "c.example.com"],
        &[
            ("[{uri: {prefix: /m}, method: {exact: POST}}]", "post"),
            (
                "[{uri: {prefix: /m}, method: {regex: 'PUT|PATCH'}}]",
                "put-or-patch",
            ),
            // The listener is plaintext: only `http` matches.
            ("[{scheme: {exact: https}}]", "https"),
            ("[{uri: {prefix: /s}, scheme: {exact: http}}]", "http"),
            // :authority is matched as sent, port included.
            ("[{authority: {exact: b.example.com}}]", "authority-exact"),
            (
                "[{authority: {regex: 'c\\.example\\.com(:[0-9]+)?'}}]",
                "authority-regex",
            ),
            ("", "fallback"),
        ],
    )
    .await;
    let a = "a.example.com";
    check(
        &g,
        &[
            (req(a, "/m").method("POST"), "post"),
            (req(a, "/m").method("PUT"), "put-or-patch"),
            (req(a, "/m").method("PATCH"), "put-or-patch"),
            (req(a, "/m"), "fallback"),
            (req(a, "/m").method("DELETE"), "fallback"),
            (req(a, "/s"), "http"),
            (req(a, "/x"), "fallback"),
            (req("b.example.com", "/x"), "authority-exact"),
            (req("b.example.com:8080", "/x"), "fallback"),
            (req("c.example.com", "/x"), "authority-regex"),
            (req("c.example.com:8080", "/x"), "authority-regex"),
        ],
    )
    .await;
}

#[tokio::test]
async fn header_matches_exact_prefix_regex_and_present() {
    let g = serve(
        &["m.example.com"],
        &[
            (
                "[{uri: {exact: /h}, headers: {x-exact: {exact: one}}}]",
                "exact",
            ),
            (
                "[{uri: {exact: /h}, headers: {x-prefix: {prefix: ab}}}]",
                "prefix",
            ),
            (
                "[{uri: {exact: /h}, headers: {x-regex: {regex: 'v[0-9]+'}}}]",
                "regex",
            ),
            ("[{uri: {exact: /h}, headers: {x-present: {}}}]", "present"),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/h").header("x-exact", "one"), "exact"),
            (req(h, "/h").header("X-Exact", "one"), "exact"), // names are case-insensitive
            (req(h, "/h").header("x-exact", "One"), "fallback"), // values are not
            (req(h, "/h").header("x-exact", "one1"), "fallback"),
            (req(h, "/h").header("x-prefix", "ab"), "prefix"),
            (req(h, "/h").header("x-prefix", "abc"), "prefix"),
            (req(h, "/h").header("x-prefix", "xab"), "fallback"),
            (req(h, "/h").header("x-regex", "v12"), "regex"),
            (req(h, "/h").header("x-regex", "v12x"), "fallback"),
            (req(h, "/h").header("x-regex", "V1"), "fallback"),
            (req(h, "/h").header("x-present", "anything"), "present"),
            (req(h, "/h").header("x-present", ""), "present"),
            (req(h, "/h"), "fallback"),
            (req(h, "/other").header("x-exact", "one"), "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn without_headers_excludes_matching_requests() {
    let g = serve(
        &["m.example.com"],
        &[
            (
                "[{uri: {prefix: /w}, withoutHeaders: {x-debug: {}}}]",
                "no-debug",
            ),
            (
                "[{uri: {prefix: /w}, withoutHeaders: {x-tier: {exact: gold}}}]",
                "not-gold",
            ),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/w"), "no-debug"),
            (req(h, "/w").header("x-debug", "1"), "not-gold"),
            (req(h, "/w").header("x-debug", ""), "not-gold"),
            (
                req(h, "/w")
                    .header("x-debug", "1")
                    .header("x-tier", "silver"),
                "not-gold",
            ),
            (
                req(h, "/w").header("x-debug", "1").header("x-tier", "gold"),
                "fallback",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn query_param_matches_exact_regex_and_bare_flag() {
    let g = serve(
        &["m.example.com"],
        &[
            (
                "[{uri: {prefix: /q}, queryParams: {v: {exact: '1'}}}]",
                "exact",
            ),
            (
                "[{uri: {prefix: /q}, queryParams: {v: {regex: '[0-9]{2}'}}}]",
                "regex",
            ),
            (
                "[{uri: {prefix: /q}, queryParams: {flag: {exact: ''}}}]",
                "flag",
            ),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/q?v=1"), "exact"),
            (req(h, "/q?a=b&v=1"), "exact"),
            (req(h, "/q?v=1&flag"), "exact"),
            (req(h, "/q?V=1"), "fallback"), // names are case-sensitive
            (req(h, "/q?v=10"), "regex"),
            (req(h, "/q?v=100"), "fallback"), // whole value
            (req(h, "/q?v=x1"), "fallback"),
            (req(h, "/q?flag"), "flag"),
            (req(h, "/q?flag="), "flag"),
            (req(h, "/q?x=1&flag"), "flag"),
            (req(h, "/q?flag=on"), "fallback"),
            (req(h, "/q"), "fallback"),
            (req(h, "/other?v=1"), "fallback"),
        ],
    )
    .await;
}

#[tokio::test]
async fn match_port_limits_a_route_to_that_gateway_port() {
    let names = ["on-81", "on-80"];
    let mut files = backends(&names).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"]), (81, &["*"])])));
    let http = routes(&[
        ("[{port: 81}]", "on-81"),
        ("[{port: 80, uri: {prefix: /eighty}}]", "on-80"),
    ]);
    files.push((
        "vs.yaml".into(),
        virtual_service("vs", "default", &["p.example.com"], &["gw"], &http),
    ));
    let g = start_files(&files).await;
    let h = "p.example.com";
    check(
        &g,
        &[
            (req(h, "/"), "404"),
            (req(h, "/eighty"), "on-80"),
            (req(h, "/").port(81), "on-81"),
            (req(h, "/eighty").port(81), "on-81"),
        ],
    )
    .await;
}

#[tokio::test]
async fn match_blocks_are_ored_and_conditions_within_a_block_anded() {
    let g = serve(
        &["m.example.com"],
        &[
            (
                "[{uri: {exact: /or1}}, {uri: {exact: /or2}}, {headers: {x-or: {exact: '3'}}}]",
                "or",
            ),
            (
                "[{uri: {exact: /and}, method: {exact: PUT}, headers: {x-a: {exact: '1'}}, queryParams: {b: {exact: '2'}}}]",
                "and",
            ),
            ("", "fallback"),
        ],
    )
    .await;
    let h = "m.example.com";
    let and = || req(h, "/and?b=2").method("PUT").header("x-a", "1");
    check(
        &g,
        &[
            (req(h, "/or1"), "or"),
            (req(h, "/or2"), "or"),
            (req(h, "/or3"), "fallback"),
            (req(h, "/elsewhere").header("x-or", "3"), "or"),
            (and(), "and"),
            (req(h, "/and?b=2").header("x-a", "1"), "fallback"), // GET
            (req(h, "/and?b=2").method("PUT"), "fallback"),      // no header
            (req(h, "/and").method("PUT").header("x-a", "1"), "fallback"), // no query
            (
                req(h, "/and/x?b=2").method("PUT").header("x-a", "1"),
                "fallback",
            ),
        ],
    )
    .await;
}

// === Route order and hosts ===

#[tokio::test]
async fn first_matching_route_wins_and_nothing_after_a_catch_all_is_reached() {
    let g = serve(
        &["m.example.com"],
        &[
            ("[{uri: {prefix: /a}}]", "first"),
            ("[{uri: {exact: /a/b}}]", "shadowed"),
            ("[{uri: {regex: '/b.*'}}]", "regex"),
            ("[{uri: {prefix: /b/c}}]", "shadowed"),
            ("[{uri: {prefix: /}}]", "catch-all"),
            // Istio stops translating a VirtualService at its first catch-all route.
            ("[{uri: {prefix: /z}}]", "after-catch-all"),
        ],
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/a/b"), "first"),
            (req(h, "/abc"), "first"),
            (req(h, "/b/c"), "regex"),
            (req(h, "/c"), "catch-all"),
            (req(h, "/z"), "catch-all"),
        ],
    )
    .await;
}

#[tokio::test]
async fn host_precedence_is_exact_then_longest_wildcard_then_any() {
    let names = ["exact", "wild-a", "wild", "any"];
    let mut files = backends(&names).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    let vs_for = |name: &str, host: &str| {
        virtual_service(name, "default", &[host], &["gw"], &routes(&[("", name)]))
    };
    // The least specific first: precedence must not depend on creation order.
    files.push(("vs-1.yaml".into(), vs_for("any", "*")));
    files.push(("vs-2.yaml".into(), vs_for("wild", "*.example.com")));
    files.push(("vs-3.yaml".into(), vs_for("wild-a", "*.a.example.com")));
    files.push(("vs-4.yaml".into(), vs_for("exact", "a.example.com")));
    let g = start_files(&files).await;
    check(
        &g,
        &[
            (req("a.example.com", "/"), "exact"),
            (req("A.Example.COM", "/"), "exact"), // host names compare case-insensitively
            (req("a.example.com:1234", "/"), "exact"), // the port is ignored
            (req("x.a.example.com", "/"), "wild-a"),
            (req("x.y.a.example.com:80", "/"), "wild-a"),
            (req("b.example.com", "/"), "wild"),
            (req("x.b.example.com", "/"), "wild"),
            (req("example.com", "/"), "any"), // `*.example.com` needs a label before it
            (req("other.org:8080", "/"), "any"),
        ],
    )
    .await;
}

#[tokio::test]
async fn gateway_hosts_intersect_virtual_service_hosts() {
    let names = ["vs-com", "vs-org", "vs-net"];
    let mut files = backends(&names).await;
    files.push((
        "gw.yaml".into(),
        gateway(&[(80, &["*.example.com"]), (81, &["a.example.org"])]),
    ));
    files.push((
        "gw-net.yaml".into(),
        gateway_named("default", "gw-net", &[(82, &["*.example.net"])]),
    ));
    let vs = |name: &str, hosts: &[&str], gw: &str| {
        virtual_service(name, "default", hosts, &[gw], &routes(&[("", name)]))
    };
    // Server `*.example.com` with VS `a.example.com`: a.example.com only; `c.other.com` is outside.
    files.push((
        "vs-com.yaml".into(),
        vs("vs-com", &["a.example.com", "c.other.com"], "gw"),
    ));
    // Server `a.example.org` with VS `*.example.org`: a.example.org only.
    files.push(("vs-org.yaml".into(), vs("vs-org", &["*.example.org"], "gw")));
    // Server `*.example.net` with VS `*`: *.example.net only.
    files.push(("vs-net.yaml".into(), vs("vs-net", &["*"], "gw-net")));
    let g = start_files(&files).await;
    check(
        &g,
        &[
            (req("a.example.com", "/"), "vs-com"),
            (req("b.example.com", "/"), "404"),
            (req("c.other.com", "/"), "404"),
            (req("a.example.org", "/"), "404"), // served on port 81 only
            (req("a.example.org", "/").port(81), "vs-org"),
            (req("b.example.org", "/").port(81), "404"),
            (req("a.example.com", "/").port(81), "404"),
            (req("x.example.net", "/").port(82), "vs-net"),
            (req("y.x.example.net", "/").port(82), "vs-net"),
            (req("example.net", "/").port(82), "404"),
            (req("a.example.com", "/").port(82), "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn gateway_host_namespaces_admit_only_their_virtual_services() {
    let names = ["prod", "dev", "local", "wrong-ref"];
    let mut files = backends(&names).await;
    // In istio-system: port 80 admits namespace prod only, port 81 the Gateway's own namespace.
    files.push((
        "gw.yaml".into(),
        gateway_named(
            "istio-system",
            "ingress",
            &[(80, &["prod/*"]), (81, &["./*"])],
        ),
    ));
    let vs = |ns: &str, name: &str, host: &str, gw: &str| {
        virtual_service(name, ns, &[host], &[gw], &routes(&[("", name)]))
    };
    files.push((
        "vs-prod.yaml".into(),
        vs("prod", "prod", "p.example.com", "istio-system/ingress"),
    ));
    files.push((
        "vs-dev.yaml".into(),
        vs("dev", "dev", "d.example.com", "istio-system/ingress"),
    ));
    files.push((
        "vs-local.yaml".into(),
        vs("istio-system", "local", "l.example.com", "ingress"),
    ));
    // `ingress` without a namespace means prod/ingress, which does not exist.
    files.push((
        "vs-wrong-ref.yaml".into(),
        vs("prod", "wrong-ref", "w.example.com", "ingress"),
    ));
    let g = start_files(&files).await;
    check(
        &g,
        &[
            (req("p.example.com", "/"), "prod"),
            (req("d.example.com", "/"), "404"),
            (req("l.example.com", "/"), "404"),
            (req("w.example.com", "/"), "404"),
            (req("p.example.com", "/").port(81), "404"),
            (req("d.example.com", "/").port(81), "404"),
            (req("l.example.com", "/").port(81), "local"),
            (req("w.example.com", "/").port(81), "404"),
        ],
    )
    .await;
}

#[tokio::test]
async fn virtual_service_without_gateways_is_not_served() {
    let mut files = backends(&["mesh-only", "bound"]).await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    files.push((
        "vs-mesh.yaml".into(),
        virtual_service(
            "mesh-only",
            "default",
            &["n.example.com"],
            &[],
            &routes(&[("", "mesh-only")]),
        ),
    ));
    files.push((
        "vs-bound.yaml".into(),
        virtual_service(
            "bound",
            "default",
            &["b.example.com"],
            &["default/gw"],
            &routes(&[("", "bound")]),
        ),
    ));
    let g = start_files(&files).await;
    check(
        &g,
        &[
            (req("n.example.com", "/"), "404"),
            (req("b.example.com", "/"), "bound"),
        ],
    )
    .await;
}

// === Merging VirtualServices of one host ===

/// Files for two VirtualServices of `m.example.com`: `first` has `/shared`, a catch-all and
/// `/late`, `second` has `/special` and `/shared`. The `*_meta` texts are added to their metadata.
async fn merge_files(
    first_file: &str,
    first_meta: &str,
    second_file: &str,
    second_meta: &str,
) -> Vec<(String, String)> {
    let mut files = backends(&[
        "first-shared",
        "first-all",
        "first-late",
        "second-special",
        "second-shared",
    ])
    .await;
    files.push(("gw.yaml".into(), gateway(&[(80, &["*"])])));
    let first = virtual_service(
        "first",
        "default",
        &["m.example.com"],
        &["gw"],
        &routes(&[
            ("[{uri: {exact: /shared}}]", "first-shared"),
            ("[{uri: {prefix: /}}]", "first-all"),
            // Dropped: it follows a catch-all of its own VirtualService.
            ("[{uri: {prefix: /late}}]", "first-late"),
        ]),
    );
    let second = virtual_service(
        "second",
        "default",
        &["m.example.com"],
        &["gw"],
        &routes(&[
            ("[{uri: {prefix: /special}}]", "second-special"),
            ("[{uri: {exact: /shared}}]", "second-shared"),
        ]),
    );
    let with_meta = |vs: String, meta: &str| {
        vs.replacen(
            "namespace: default}",
            &format!("namespace: default{meta}}}"),
            1,
        )
    };
    files.push((first_file.into(), with_meta(first, first_meta)));
    files.push((second_file.into(), with_meta(second, second_meta)));
    files
}

#[tokio::test]
async fn merged_virtual_services_keep_file_order_with_catch_alls_last() {
    // Files are read in name order, which stands for creation order.
    let g = start_files(&merge_files("a-first.yaml", "", "b-second.yaml", "").await).await;
    let h = "m.example.com";
    check(
        &g,
        &[
            // The first VirtualService's catch-all moved behind the second's routes.
            (req(h, "/special/x"), "second-special"),
            (req(h, "/shared"), "first-shared"),
            (req(h, "/other"), "first-all"),
            (req(h, "/late"), "first-all"),
        ],
    )
    .await;
}

#[tokio::test]
async fn merged_virtual_services_follow_creation_timestamps() {
    // File order says `first` first, but `second` was created earlier.
    let g = start_files(
        &merge_files(
            "a-first.yaml",
            ", creationTimestamp: '2024-02-01T00:00:00Z'",
            "b-second.yaml",
            ", creationTimestamp: '2024-01-01T00:00:00Z'",
        )
        .await,
    )
    .await;
    let h = "m.example.com";
    check(
        &g,
        &[
            (req(h, "/special/x"), "second-special"),
            (req(h, "/shared"), "second-shared"),
            (req(h, "/other"), "first-all"),
            (req(h, "/late"), "first-all"),
        ],
    )
    .await;
}

// === Destinations: weights, subsets, load balancing ===

/// Backends `v1` and `v2`, both endpoints of `web.internal` labelled with their version, and a
/// DestinationRule with subsets `v1`, `v2` and `v9` (which selects no endpoint).
async fn versioned_web() -> Vec<(String, String)> {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    vec![
        ("gw.yaml".into(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".into(),
            service("web", "web.internal", &[(v1, "v1"), (v2, "v2")]),
        ),
        (
            "dr.yaml".into(),
            destination_rule("web", "web.internal", &["v1", "v2", "v9"]),
        ),
    ]
}

/// Sends `n` GETs and counts the answers per backend (or status code).
async fn tally(g: &Gateway, host: &str, path: &str, n: usize) -> BTreeMap<String, usize> {
    let url = g.url(80, path).await;
    let client = client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let resp = client.get(&url).header("host", host).send().await.unwrap();
        let r = Reply::from(resp).await;
        *counts.entry(outcome(&r)).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn weights_split_traffic_between_subsets() {
    let mut files = versioned_web().await;
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [w.example.com]
  gateways: [gw]
  http:
  - route:
    - {destination: {host: web.internal, subset: v1}, weight: 80}
    - {destination: {host: web.internal, subset: v9}, weight: 0}
    - {destination: {host: web.internal, subset: v2}, weight: 20}
";
    files.push(("vs.yaml".into(), vs.into()));
    let g = start_files(&files).await;
    const N: usize = 1000;
    let counts = tally(&g, "w.example.com", "/get", N).await;
    let v1 = counts.get("v1").copied().unwrap_or(0);
    let v2 = counts.get("v2").copied().unwrap_or(0);
    // Weight 0 gets nothing: every answer is from v1 or v2.
    assert_eq!(v1 + v2, N, "{counts:?}");
    // 80% ± 6 points: the standard deviation over 1000 requests is 1.26 points, so a correct
    // split fails this less than once in 100,000 runs.
    let share = v1 as f64 / N as f64;
    assert!(
        (0.74..=0.86).contains(&share),
        "v1 share {share}: {counts:?}"
    );
}

#[tokio::test]
async fn a_subset_destination_only_reaches_that_subsets_endpoints() {
    let mut files = versioned_web().await;
    files.push((
        "vs.yaml".into(),
        virtual_service(
            "vs",
            "default",
            &["s.example.com"],
            &["gw"],
            "  - route: [{destination: {host: web.internal, subset: v2}}]\n",
        ),
    ));
    let g = start_files(&files).await;
    let counts = tally(&g, "s.example.com", "/get", 20).await;
    assert_eq!(counts, BTreeMap::from([("v2".to_string(), 20)]));
}

#[tokio::test]
async fn round_robin_uses_every_endpoint_of_a_service() {
    let mut files = versioned_web().await;
    files.push((
        "vs.yaml".into(),
        virtual_service(
            "vs",
            "default",
            &["r.example.com"],
            &["gw"],
            "  - route: [{destination: {host: web.internal}}]\n",
        ),
    ));
    let g = start_files(&files).await;
    let counts = tally(&g, "r.example.com", "/get", 20).await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["v1", "v2"],
        "{counts:?}"
    );
}

// === The gateway's own replies ===

/// A gateway for `s.example.com` with routes `/ok` (a live backend), `/nc` (a host without
/// ServiceEntry), `/uh` (a subset without endpoints) and `/uf` (endpoints refusing
/// connections); nothing else.
async fn failing_routes() -> Failing {
    let refusing = [refusing_port(), refusing_port()];
    let mut files = versioned_web().await;
    files.push((
        "dead.yaml".into(),
        service(
            "dead",
            "dead.internal",
            &[(refusing[0].addr, "v1"), (refusing[1].addr, "v1")],
        ),
    ));
    let http = "  - match: [{uri: {exact: /ok}}]
    route: [{destination: {host: web.internal, subset: v1}}]
  - match: [{uri: {exact: /nc}}]
    route: [{destination: {host: missing.internal}}]
  - match: [{uri: {exact: /uh}}]
    route: [{destination: {host: web.internal, subset: v9}}]
  - match: [{uri: {exact: /uf}}]
    route: [{destination: {host: dead.internal}}]
";
    files.push((
        "vs.yaml".into(),
        virtual_service("vs", "default", &["s.example.com"], &["gw"], http),
    ));
    Failing {
        g: start_files(&files).await,
        _refusing: refusing,
    }
}

/// The gateway of [`failing_routes`], with the ports its dead endpoints use.
struct Failing {
    g: Gateway,
    _refusing: [RefusingPort; 2],
}

#[tokio::test]
async fn no_matching_host_or_route_answers_404_with_an_empty_body() {
    let Failing { g, .. } = &failing_routes().await;
    let url = g.url(80, "/ok").await;
    assert_eq!(get(&url, "s.example.com", &[]).await.backend(), Some("v1"));
    for (host, path) in [("s.example.com", "/nope"), ("other.example.com", "/ok")] {
        let r = get(&g.url(80, path).await, host, &[]).await;
        assert_eq!(r.status, 404, "{host}{path}: {r:?}");
        assert_eq!(r.body, "", "{host}{path}");
        assert_eq!(r.header("server"), Some("istio-envoy"));
    }
}

#[tokio::test]
async fn unknown_destination_host_answers_503() {
    let Failing { g, .. } = &failing_routes().await;
    let r = get(&g.url(80, "/nc").await, "s.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "");
}

#[tokio::test]
async fn subset_without_endpoints_answers_503_no_healthy_upstream() {
    let Failing { g, .. } = &failing_routes().await;
    let r = get(&g.url(80, "/uh").await, "s.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "no healthy upstream");
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn refused_connections_answer_503_connection_failure() {
    let Failing { g, .. } = &failing_routes().await;
    let url = g.url(80, "/uf").await;
    let r = get(&url, "s.example.com", &[]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        ),
        "{r:?}"
    );
    // A request with a body fails the same way when every endpoint refuses.
    let resp = client()
        .post(&url)
        .header("host", "s.example.com")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
}

#[tokio::test]
async fn http_1_0_requests_answer_426() {
    let Failing { g, .. } = &failing_routes().await;
    let r = raw_http(
        g.addr(80).await,
        "GET /ok HTTP/1.0\r\nHost: s.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 426, "{r:?}");
}

// === Headers ===

/// A gateway sending every request for `e.example.com` to the echo backend `echo`.
async fn echo_gateway() -> Gateway {
    serve(&["e.example.com"], &[("", "echo")]).await
}

#[tokio::test]
async fn forwarded_headers_are_set_for_the_upstream() {
    let g = echo_gateway().await;
    let url = g.url(80, "/get").await;
    let host = "e.example.com";

    let r = get(&url, host, &[]).await;
    let sent = &r.json()["headers"];
    assert_eq!(sent["x-forwarded-for"], "127.0.0.1", "{r:?}");
    assert_eq!(sent["x-forwarded-proto"], "http");
    assert_eq!(sent["host"], host);

    // The client's address is appended to an incoming x-forwarded-for.
    let r = get(&url, host, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"],
        "203.0.113.7, 127.0.0.1"
    );
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_kept_when_present() {
    let g = echo_gateway().await;
    let url = g.url(80, "/get").await;
    let host = "e.example.com";
    let id_of = |r: &Reply| {
        r.json()["headers"]["x-request-id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let first = id_of(&get(&url, host, &[]).await);
    let second = id_of(&get(&url, host, &[]).await);
    let is_uuid = |id: &str| {
        id.len() == 36
            && id.split('-').map(str::len).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
            && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
    };
    assert!(is_uuid(&first), "{first}");
    assert!(is_uuid(&second), "{second}");
    assert_ne!(first, second);

    let kept = id_of(&get(&url, host, &[("x-request-id", "my-request-1")]).await);
    assert_eq!(kept, "my-request-1");
}

#[tokio::test]
async fn responses_carry_server_and_upstream_service_time() {
    let g = echo_gateway().await;
    let r = get(&g.url(80, "/status/201").await, "e.example.com", &[]).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("server"), Some("istio-envoy"));
    let t = r.header("x-envoy-upstream-service-time").unwrap();
    assert!(
        t.parse::<u64>().is_ok(),
        "x-envoy-upstream-service-time: {t}"
    );
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let g = echo_gateway().await;
    // Sent raw: HTTP clients manage `Connection` themselves.
    let r = raw_http(
        g.addr(80).await,
        "GET /get HTTP/1.1\r\nHost: e.example.com\r\nConnection: x-secret, close\r\n\
         x-secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nx-kept: 1\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let sent = r.json()["headers"].clone();
    let sent = sent.as_object().unwrap();
    for gone in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(!sent.contains_key(gone), "{gone} was forwarded: {sent:?}");
    }
    // The gateway's own upstream connection may say keep-alive, but never the client's list.
    assert!(
        sent.get("connection")
            .and_then(|v| v.as_str())
            .is_none_or(|v| !v.contains("x-secret")),
        "{sent:?}"
    );
    assert_eq!(sent["x-kept"], "1");
}

// === Paths, protocols and bodies ===

#[tokio::test]
async fn dot_segments_are_removed_before_routing_and_forwarding() {
    let g = serve(
        &["m.example.com"],
        &[
            ("[{uri: {exact: /b}}]", "b"),
            ("[{uri: {prefix: /a}}]", "a"),
        ],
    )
    .await;
    let addr = g.addr(80).await;
    // Sent raw: HTTP clients normalise paths themselves.
    for (path, backend, forwarded) in [
        ("/a/../b", "b", "/b"),
        ("/./b", "b", "/b"),
        ("/a/x/../../b?q=1", "b", "/b"),
        ("/a/b/..", "a", "/a/"),
        ("/b/../a/c", "a", "/a/c"),
    ] {
        let r = raw_http(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: m.example.com\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.header("x-backend"), Some(backend), "{path}");
        assert_eq!(r.json()["path"], forwarded, "{path}");
    }
    let r = raw_http(
        addr,
        "GET /a/x/../../b?q=1 HTTP/1.1\r\nHost: m.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.json()["query"], "q=1", "the query survives normalisation");
}

#[tokio::test]
async fn h2c_prior_knowledge_is_routed_on_the_same_port() {
    let g = serve(
        &["h.example.com"],
        &[
            ("[{headers: {x-version: {exact: '2'}}}]", "v2"),
            ("[{uri: {prefix: /}}]", "v1"),
        ],
    )
    .await;
    let addr = g.addr(80).await;
    let h2 = h2c_client_for("h.example.com", addr);
    let url = format!("http://h.example.com:{}/get", addr.port());

    let resp = h2.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let r = Reply::from(resp).await;
    assert_eq!(r.backend(), Some("v1"), "{r:?}");
    assert_eq!(r.header("server"), Some("istio-envoy"));

    let r = Reply::from(h2.get(&url).header("x-version", "2").send().await.unwrap()).await;
    assert_eq!(r.backend(), Some("v2"), "{r:?}");

    let r = Reply::from(h2.post(&url).body(vec![b'x'; 3000]).send().await.unwrap()).await;
    assert_eq!(r.json()["method"], "POST", "{r:?}");
    assert_eq!(r.json()["body_bytes"], 3000);

    // The same port still speaks HTTP/1.1.
    let r = get(
        &g.url(80, "/get").await,
        "h.example.com",
        &[("x-version", "2")],
    )
    .await;
    assert_eq!(r.backend(), Some("v2"));
}

#[tokio::test]
async fn request_bodies_are_forwarded() {
    let g = echo_gateway().await;
    let url = g.url(80, "/post").await;
    const SIZE: usize = 256 * 1024;
    let resp = client()
        .post(&url)
        .header("host", "e.example.com")
        .body(vec![b'a'; SIZE])
        .send()
        .await
        .unwrap();
    let r = Reply::from(resp).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body_bytes"], SIZE);
    assert_eq!(r.json()["headers"]["content-length"], SIZE.to_string());
}
