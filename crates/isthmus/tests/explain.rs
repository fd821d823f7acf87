//! `isthmus explain` and the admin `/routes`, end to end: the real binary's output and exit
//! codes, and explain's answer checked against what a running gateway does with the same
//! requests on the same configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use support::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Bookinfo-like routing of `reviews`: by header, by method and path, by query, else v1.
const ROUTES: &str = "  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: post-v3
    match: [{uri: {prefix: /v3}, method: {exact: POST}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: query-v3
    match: [{queryParams: {version: {exact: '3'}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: default
    route: [{destination: {host: reviews, subset: v1}}]
";

/// The configuration files, and the demo backend name behind each endpoint address.
async fn reviews_config() -> (Vec<(String, String)>, BTreeMap<SocketAddr, String>) {
    let mut names = BTreeMap::new();
    let mut endpoints = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let name = format!("reviews-{v}");
        let addr = backend(&name).await;
        names.insert(addr, name);
        endpoints.push((addr, v));
    }
    let files = vec![
        ("gw.yaml".to_string(), gateway(&[(80, &["*"])])),
        (
            "svc.yaml".to_string(),
            service("reviews", REVIEWS, &endpoints),
        ),
        (
            "dr.yaml".to_string(),
            destination_rule("reviews", REVIEWS, &["v1", "v2", "v3"]),
        ),
        (
            "vs.yaml".to_string(),
            virtual_service("reviews", "default", &["reviews"], &["gw"], ROUTES),
        ),
    ];
    (files, names)
}

fn write_dir(files: &[(String, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[tokio::test]
async fn text_names_every_route_tried_and_why_it_failed() {
    let (files, _) = reviews_config().await;
    let dir = write_dir(&files);
    let out = explain_in(
        dir.path(),
        &[
            &format!("http://{REVIEWS}/reviews/0"),
            "-H",
            "end-user: bob",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let vs_file = dir.path().join("vs.yaml").display().to_string();
    let vs = &files[3].1;
    let expected = [
        format!(
            "skip  #0 VirtualService default/reviews route \"jason\" spec.http[0].match[0]  {vs_file}:{}",
            line_of(vs, "end-user")
        ),
        r#"why  header "end-user" exact "jason" does not match "bob""#.to_string(),
        r#"why  uri prefix "/v3" does not match "/reviews/0""#.to_string(),
        r#"why  query param "version" exact "3": parameter absent"#.to_string(),
        format!(
            "MATCH #3 VirtualService default/reviews route \"default\" spec.http[3]  {vs_file}:{}",
            line_of(vs, "name: default")
        ),
        format!("to       outbound|80|v1|{REVIEWS}"),
        format!("Result     forwarded to outbound|80|v1|{REVIEWS}"),
    ];
    for want in expected {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&want)),
            "missing {want:?} in\n{}",
            out.stdout
        );
    }
    let gw_file = dir.path().join("gw.yaml").display().to_string();
    assert!(
        out.stdout.contains(&format!(
            "Server     Gateway default/gw servers[0] (HTTP, hosts *)  {gw_file}:"
        )),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn exit_codes_say_routed_local_error_or_bad_input() {
    let (files, _) = reviews_config().await;
    let dir = write_dir(&files);
    // No virtual host for the host: the gateway answers 404 itself.
    let out = explain_in(dir.path(), &["http://other.example.com/"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains("404 (NR): no virtual host of port 80 matches host \"other.example.com\""),
        "{}",
        out.stdout
    );
    // No listener on the port.
    let out = explain_in(dir.path(), &[&format!("http://{REVIEWS}:8081/")]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("Gateway ports: 80 (HTTP)"),
        "{}",
        out.stdout
    );
    // Bad arguments.
    for args in [
        vec!["ftp://x/"],
        vec!["http://x/", "-H", "no colon"],
        vec!["http://x/", "--format", "yaml"],
        vec!["http://x/", "--nope"],
    ] {
        let out = explain_in(dir.path(), &args);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    // A configuration that cannot be read.
    let out = explain_in(&dir.path().join("missing"), &["http://x/"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
    std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
    let out = explain_in(dir.path(), &[&format!("http://{REVIEWS}/")]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("YAML syntax error"), "{}", out.stderr);
}

#[tokio::test]
async fn json_for_machines_with_the_diagnostics() {
    let (mut files, _) = reviews_config().await;
    // A route to a subset nobody defines: an error diagnostic, and a 503 (NC) for its requests.
    files[3].1 = files[3].1.replace("subset: v2", "subset: v9");
    let dir = write_dir(&files);
    let out = explain_in(
        dir.path(),
        &[
            &format!("http://{REVIEWS}/"),
            "-H",
            "end-user: jason",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let v = out.json();
    assert_eq!(v["routed"], false);
    assert_eq!(v["routes"][0]["name"], "jason");
    assert_eq!(v["routes"][0]["matched"], true);
    assert_eq!(v["outcome"]["kind"], "forward");
    assert_eq!(
        v["outcome"]["destinations"][0]["endpoints"]["kind"],
        "unknown"
    );
    assert!(v["result"].as_str().unwrap().starts_with("503 (NC)"), "{v}");
    let diags = v["diagnostics"].as_array().unwrap();
    assert!(
        diags
            .iter()
            .any(|d| d.as_str().unwrap().contains("subset \"v9\" is not defined")),
        "{diags:?}"
    );
    assert!(out.stderr.contains("1 error(s)"), "{}", out.stderr);
}

/// `(method, path, headers)` through the real gateway and through explain: same backend (or
/// the same 404).
#[tokio::test]
async fn explain_agrees_with_the_running_gateway() {
    let (files, names) = reviews_config().await;
    let g = start_files(&files).await;
    let base = g.url(80, "").await;
    let cases: [(&str, &str, &[&str]); 7] = [
        ("GET", "/reviews/0", &[]),
        ("GET", "/reviews/0", &["end-user: jason"]),
        ("POST", "/v3/ratings", &[]),
        ("GET", "/v3/ratings", &[]),
        ("GET", "/reviews?version=3", &[]),
        ("GET", "/a/../v3/x?version=3", &["end-user: bob"]),
        ("GET", "/", &["host: unknown.example.com"]),
    ];
    for (method, path, headers) in cases {
        let mut args = vec![
            format!("http://{REVIEWS}{path}"),
            "-X".into(),
            method.into(),
            "--format".into(),
            "json".into(),
        ];
        for h in headers {
            args.extend(["-H".to_string(), h.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let explained = explain_in(g.dir.path(), &args).json();

        let mut req = client().request(method.parse().unwrap(), format!("{base}{path}"));
        if !headers.iter().any(|h| h.starts_with("host:")) {
            req = req.header("host", REVIEWS);
        }
        for h in headers {
            let (k, v) = h.split_once(": ").unwrap();
            req = req.header(k, v);
        }
        let real = Reply::from(req.send().await.unwrap()).await;

        let at = format!("{method} {path} {headers:?}: {explained:#}");
        if explained["routed"] == true {
            let addr: SocketAddr =
                explained["outcome"]["destinations"][0]["endpoints"]["addresses"][0]["address"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(real.status, 200, "{at}");
            assert_eq!(real.backend(), Some(names[&addr].as_str()), "{at}");
        } else {
            assert_eq!(explained["outcome"]["status"], 404, "{at}");
            assert_eq!(real.status, 404, "{at}");
        }
    }
}

#[tokio::test]
async fn admin_routes_in_json_and_text() {
    let (files, _) = reviews_config().await;
    let g = start_files(&files).await;
    let (status, body) = g.admin_get("/routes").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["generation"].as_u64().unwrap() >= 1, "{v}");
    let port = &v["ports"][0];
    assert_eq!(port["port"], 80);
    assert_eq!(port["protocol"], "HTTP");
    let host = &port["virtual_hosts"][0];
    assert_eq!(host["domain"], REVIEWS);
    let names: Vec<&str> = host["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jason", "post-v3", "query-v3", "default"]);
    assert_eq!(
        host["routes"][1]["match"],
        r#"uri prefix "/v3" and method exact "POST""#
    );
    assert_eq!(
        host["routes"][0]["action"],
        format!("forward outbound|80|v2|{REVIEWS}")
    );

    let (status, text) = g.admin_get("/routes?format=text").await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"port 80 HTTP  servers: default/gw (http-80)"),
        "{text}"
    );
    assert!(
        lines.contains(&format!("host {REVIEWS}").as_str()),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "#3 default/reviews \"default\"  any request  -> forward outbound|80|v1|{REVIEWS}"
        ))),
        "{text}"
    );
}

/// TLS passthrough by SNI: explain's destination is the backend that completes the handshake
/// through a running gateway, and a name without a route is closed by both.
#[tokio::test]
async fn explain_agrees_with_the_running_gateway_on_sni_passthrough() {
    use tokio::io::AsyncBufReadExt;

    let (ha, hb) = ("a.pass.example.com", "b.pass.example.com");
    let ca = Pki::new("backends");
    let mut names = BTreeMap::new();
    let mut files = Vec::new();
    for name in ["pass-a", "pass-b"] {
        let addr = tls_echo_backend(name, &ca.server(&[ha, hb])).await;
        names.insert(addr, name.to_string());
        files.push((
            format!("svc-{name}.yaml"),
            l4_service(name, &format!("{name}.internal"), "TLS", &[addr]),
        ));
    }
    files.push((
        "gw.yaml".into(),
        gateway_servers(&[server(
            443,
            "tls-pass",
            "TLS",
            &["*.pass.example.com"],
            "{mode: PASSTHROUGH}",
        )]),
    ));
    files.push((
        "vs.yaml".into(),
        l4_virtual_service(
            "pass",
            &[ha, hb],
            "  tls:\n  - match: [{sniHosts: [a.pass.example.com]}]\n    route: [{destination: {host: pass-a.internal}}]\n  - match: [{sniHosts: [b.pass.example.com]}]\n    route: [{destination: {host: pass-b.internal}}]\n",
        ),
    ));
    let g = start_files_with(&files, &["--bind", "443=127.0.0.1:0"]).await;
    let addr = g.addr(443).await;
    let cfg = tls_client(&ca, None);
    for sni in [ha, hb, "c.pass.example.com"] {
        let explained = explain_in(
            g.dir.path(),
            &[&format!("https://{sni}/"), "--format", "json"],
        )
        .json();
        let real = match tls_connect(addr, sni, &cfg).await {
            Ok(s) => {
                let mut line = String::new();
                tokio::io::BufReader::new(s)
                    .read_line(&mut line)
                    .await
                    .unwrap();
                Some(line.trim().to_string())
            }
            Err(_) => None,
        };
        let at = format!("{sni}: {explained:#}");
        if explained["routed"] == true {
            assert_eq!(explained["outcome"]["mode"], "tls_passthrough", "{at}");
            let to: SocketAddr = explained["outcome"]["destinations"][0]["endpoints"]["addresses"]
                [0]["address"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(real.as_deref(), Some(names[&to].as_str()), "{at}");
        } else {
            assert!(
                explained["result"]
                    .as_str()
                    .unwrap()
                    .starts_with("the connection is closed"),
                "{at}"
            );
            assert_eq!(real, None, "{at}: the gateway completed a handshake");
        }
    }
}
