//! Golden tests of the compiler over the Gateway API conformance manifests (the suite's own
//! YAML, `{GATEWAY_CLASS_NAME}` replaced by Isthmus's class): the listeners, route tables in
//! precedence order, clusters and diagnostics are compared with the reviewed snapshots in
//! `tests/snapshots/`. The manifests carry no Services, Secrets or Namespaces; [`BASE`] stands
//! in for the suite's base manifests: its Namespaces with their labels, its Services as the
//! ServiceEntries file mode resolves them through, and the certificate Secret (with
//! placeholder bytes: the compiler does not parse PEM). `nonexistent` stays unknown.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use isthmus_api::load::load_str;
use isthmus_config::{Instance, LastGood, build};
use serde::Serialize;

/// The conformance suite's base objects, as file mode reads them.
const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-infra, labels: {gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-app-backend, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Secret
metadata: {name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}
type: kubernetes.io/tls
stringData: {tls.crt: CERTIFICATE, tls.key: KEY}
"#;

/// `(namespace, service, port, protocol)` of the suite's Services.
const SERVICES: &[(&str, &str, u16, &str)] = &[
    (
        "gateway-conformance-infra",
        "infra-backend-v1",
        8080,
        "HTTP",
    ),
    (
        "gateway-conformance-infra",
        "infra-backend-v2",
        8080,
        "HTTP",
    ),
    (
        "gateway-conformance-infra",
        "infra-backend-v3",
        8080,
        "HTTP",
    ),
    (
        "gateway-conformance-infra",
        "grpc-infra-backend-v1",
        8080,
        "GRPC",
    ),
    (
        "gateway-conformance-infra",
        "grpc-infra-backend-v2",
        8080,
        "GRPC",
    ),
    (
        "gateway-conformance-infra",
        "grpc-infra-backend-v3",
        8080,
        "GRPC",
    ),
    ("gateway-conformance-infra", "tls-backend", 443, "TLS"),
    ("gateway-conformance-infra", "tls-backend-2", 443, "TLS"),
    ("gateway-conformance-infra", "tcp-backend", 8443, "TCP"),
    (
        "gateway-conformance-web-backend",
        "web-backend",
        8080,
        "HTTP",
    ),
];

fn base() -> String {
    let mut text = BASE.to_string();
    for (i, (ns, name, port, protocol)) in SERVICES.iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}.{ns}.svc.cluster.local]\n  ports: [{{number: {port}, name: p, protocol: {protocol}}}]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.0.{}}}]\n",
            i + 1
        ));
    }
    text
}

#[derive(Serialize)]
struct Golden {
    snapshot: isthmus_config::Snapshot,
    diagnostics: Vec<String>,
}

#[test]
fn conformance_manifests_compile_to_their_golden_snapshots() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/acceptance-data/gateway-api");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("acceptance data missing at {}: {e}", root.display()))
        .flatten()
        .map(|d| d.path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 40, "only {} scenarios found", dirs.len());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(dir.join("config.yaml"))
            .unwrap()
            .replace("{GATEWAY_CLASS_NAME}", "isthmus");
        let file = format!("{name}/config.yaml");
        let mut loaded = load_str("base.yaml", &base()).unwrap();
        assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
        let own = load_str(&file, &text).unwrap();
        loaded.resources.extend(own.resources);
        loaded.rejected.extend(own.rejected);
        loaded.diagnostics.extend(own.diagnostics);
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &Instance::default(),
        );
        let diagnostics = loaded
            .diagnostics
            .iter()
            .chain(&b.diagnostics)
            .map(ToString::to_string)
            .collect();
        let golden = Golden {
            snapshot: b.snapshot,
            diagnostics,
        };
        insta::assert_yaml_snapshot!(format!("gateway-api-{name}"), golden);
    }
}
