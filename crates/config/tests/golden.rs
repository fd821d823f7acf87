//! Golden tests of the compiler: every Istio acceptance manifest (real YAML from Istio's samples
//! and tasks) compiled for an ingress and an egress instance; the route tables, clusters and
//! diagnostics are compared with the reviewed snapshots in `tests/snapshots/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use isthmus_api::load::load_file;
use isthmus_config::{Instance, LastGood, build};
use serde::Serialize;

#[derive(Serialize)]
struct Golden {
    ingress: isthmus_config::Snapshot,
    egress: isthmus_config::Snapshot,
    diagnostics: Vec<String>,
}

#[test]
fn acceptance_manifests_compile_to_their_golden_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/acceptance-data/istio");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("acceptance data missing at {}: {e}", root.display()))
        .flatten()
        .map(|d| d.path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "only {} scenarios found", dirs.len());
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let loaded = load_file(&dir.join("config.yaml")).unwrap();
        let ingress = Instance::default();
        let mut egress = Instance::default();
        egress.labels.insert("istio".into(), "egressgateway".into());
        let a = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &ingress,
        );
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &egress,
        );
        // Paths differ between machines; keep only the scenario-relative file name.
        let diagnostics = loaded
            .diagnostics
            .iter()
            .chain(&a.diagnostics)
            .map(|d| {
                d.to_string()
                    .replace(&root.display().to_string(), "<acceptance>")
            })
            .collect();
        let golden = Golden {
            ingress: a.snapshot,
            egress: b.snapshot,
            diagnostics,
        };
        insta::assert_yaml_snapshot!(name, golden);
    }
}
