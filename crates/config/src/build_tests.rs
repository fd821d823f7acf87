//! A [`Builder`] that reuses what it can from the previous build gives exactly what a build
//! from scratch gives, whatever changed in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use isthmus_api::Resource;
use isthmus_api::load::load_str;

use crate::build::{Build, Builder, LastGood, build};
use crate::instance::Instance;

const BASE: &str = "
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
  hosts: [a.svc, b.svc, c.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 9001}, labels: {version: v1}}
  - {address: 127.0.0.2, ports: {http: 9002}, labels: {version: v2}}
";

const RULE: &str = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.svc
  subsets: [{name: v1, labels: {version: v1}}]
";

fn vs(name: &str, host: &str, destinations: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  gateways: [gw]\n  http:\n"
    );
    for (i, d) in destinations.iter().enumerate() {
        let (host, subset) = d.split_once('#').map_or((*d, None), |(h, s)| (h, Some(s)));
        let subset = subset.map_or(String::new(), |s| format!(", subset: {s}"));
        out += &format!(
            "  - match: [{{uri: {{prefix: /{name}/{i}/}}}}]\n    route: [{{destination: {{host: {host}{subset}}}}}]\n"
        );
    }
    out
}

fn catch_all(name: &str, hosts: &str, destination: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: {hosts}\n  gateways: [gw]\n  http:\n  - route: [{{destination: {{host: {destination}}}}}]\n  - match: [{{uri: {{prefix: /{name}/}}}}]\n    route: [{{destination: {{host: {destination}}}}}]\n"
    )
}

/// Files as a file source keeps them: an unchanged file keeps the resources (the same `Arc`s)
/// of its previous parse.
#[derive(Default)]
struct Files {
    parsed: BTreeMap<String, (String, Vec<Arc<Resource>>)>,
}

impl Files {
    fn load(&mut self, files: &[(&str, String)]) -> Vec<Arc<Resource>> {
        let mut next = BTreeMap::new();
        for (name, text) in files {
            let resources = match self.parsed.remove(*name) {
                Some((old, resources)) if old == *text => resources,
                _ => load_str(name, text).unwrap().resources,
            };
            next.insert(name.to_string(), (text.clone(), resources));
        }
        self.parsed = next;
        self.parsed
            .values()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect()
    }
}

fn fresh(files: &[(&str, String)], last_good: &LastGood) -> Build {
    let resources: Vec<Arc<Resource>> = files
        .iter()
        .flat_map(|(name, text)| load_str(name, text).unwrap().resources)
        .collect();
    build(&resources, &[], last_good, &Instance::default())
}

fn rendered(b: &Build) -> (String, Vec<String>) {
    (
        serde_json::to_string_pretty(&b.snapshot).unwrap(),
        b.diagnostics.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn an_incremental_build_equals_a_build_from_scratch() {
    let gen0 = vec![
        ("0-base.yaml", BASE.to_string()),
        ("1-rule.yaml", RULE.to_string()),
        ("2-x.yaml", vs("x", "x.example", &["a.svc", "nowhere.svc"])),
        ("3-y.yaml", vs("y", "y.example", &["b.svc", "a.svc#v1"])),
        ("4-z.yaml", vs("z", "z.example", &["c.svc", "a.svc#v9"])),
        // Merged into x.example's table after x, its catch-all behind x's routes; and a second
        // host with the same routes.
        (
            "5-w.yaml",
            catch_all("w", "[x.example, w.example]", "b.svc"),
        ),
    ];
    let with = |g: &[(&'static str, String)], file: &'static str, text: Option<String>| {
        let mut g: Vec<(&'static str, String)> =
            g.iter().filter(|(n, _)| *n != file).cloned().collect();
        if let Some(t) = text {
            g.push((file, t));
            g.sort();
        }
        g
    };
    let steps: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("first build", gen0.clone()),
        ("nothing changed", gen0.clone()),
        (
            // x now meets c.svc first: every later VirtualService's clusters move up one.
            "an edit that reorders the clusters",
            with(
                &gen0,
                "2-x.yaml",
                Some(vs("x", "x.example", &["c.svc", "b.svc"])),
            ),
        ),
        (
            "a subset appears",
            with(
                &gen0,
                "1-rule.yaml",
                Some(RULE.replace(
                    "[{name: v1,",
                    "[{name: v9, labels: {version: v2}}, {name: v1,",
                )),
            ),
        ),
        ("a VirtualService removed", with(&gen0, "3-y.yaml", None)),
        (
            // Same cluster indexes, other names: outbound|8080||a.svc.
            "the services' port changes",
            with(
                &gen0,
                "0-base.yaml",
                Some(BASE.replace("ports: [{number: 80,", "ports: [{number: 8080,")),
            ),
        ),
        (
            // Destinations without a port no longer resolve, with a message naming the ports.
            "the services get a second port",
            with(
                &gen0,
                "0-base.yaml",
                Some(BASE.replace(
                    "ports: [{number: 80, name: http, protocol: HTTP}]",
                    "ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP}]",
                )),
            ),
        ),
        (
            "endpoints change (the routes stay, the clusters follow)",
            with(&gen0, "0-base.yaml", Some(BASE.replace("127.0.0.2", "127.0.0.3"))),
        ),
        ("the subsets go", with(&gen0, "1-rule.yaml", None)),
        (
            "an edit of the second VirtualService of a host",
            with(
                &gen0,
                "5-w.yaml",
                Some(catch_all("w", "[x.example]", "c.svc")),
            ),
        ),
        (
            "an edit that breaks a VirtualService (its last good version serves)",
            with(
                &gen0,
                "3-y.yaml",
                Some(vs("y", "y.example", &["b.svc"]).replace("prefix: /y/0/", "regex: '(['")),
            ),
        ),
        ("back to the start", gen0.clone()),
    ];
    let mut files = Files::default();
    let mut builder = Builder::default();
    let mut last_good = LastGood::new();
    for (what, step) in &steps {
        let incremental = builder.build(&files.load(step), &[], &Instance::default());
        let scratch = fresh(step, &last_good);
        assert_eq!(rendered(&incremental), rendered(&scratch), "{what}");
        last_good = scratch.accepted;
    }
    // The scenario is the one meant: x.example merges x's routes with w's catch-all last.
    let b = builder.build(&files.load(&gen0), &[], &Instance::default());
    let table = &b.snapshot.listeners[&80].virtual_hosts;
    let x: Vec<&str> = table
        .find("x.example")
        .unwrap()
        .routes
        .iter()
        .map(|r| r.virtual_service.as_str())
        .collect();
    assert_eq!(x, ["default/x", "default/x", "default/w"]);
    assert!(table.find("w.example").is_some());
}
