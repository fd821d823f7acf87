//! The fast reader is held to one rule: when it reads a text, it gives exactly the values and
//! lines serde-saphyr and the event walk give; when they refuse the text, so does it.

use std::path::{Path, PathBuf};

use crate::load::full_parse;

/// Checks the rule on one text; says whether the fast reader read it.
fn agrees(text: &str) -> bool {
    crate::fuzzing::fast_reader_agrees(text)
}

#[test]
fn reads_what_configuration_is_written_in() {
    let cases = [
        // Block mappings and sequences, compact and indented; comments; markers.
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\n  namespace: b\nspec:\n  hosts:\n  - a.example.com\n  http:\n  - match:\n    - uri:\n        prefix: /a\n    route:\n    - destination:\n        host: a\n        port:\n          number: 8080\n      weight: 100\n",
        "# leading comment\n---\na: 1 # trailing\n\n# between\nb:\n    - x\n    -   k: 1\n        z: 2\n---\n---\nc: {d: [1, 2, {e: f}], 'g h': \"i\\\"j\"}\n",
        "a:\n  -\n    b: 1\n  - c\n",
        "a:\n- b: [x, y]\n  c:\n  - d\n  e: f\n- g\n",
        // Flow collections, JSON, quoted scalars and escapes.
        "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"s\"},\"data\":{\"tls.crt\":\"QUFB\",\"n\":-3,\"f\":1.5,\"t\":true,\"z\":null}}",
        "{\n  \"a\": [\n    1,\n    \"x\\u00e9\\n\\t\\\\\"\n  ],\n  # comment\n  \"b\": {}\n}\n",
        "a: 'it''s'\nb: \"\"\nc: ''\nd: [ ]\ne: {}\n",
        // Scalars of other types, resolved by serde-saphyr.
        "a: 1.5\nb: 0x1f\nc: yes\nd: 'yes'\ne: ~\nf:\ng: 5s\nh: -0\ni: 007\nj: 1_000\nk: Off\nl: +1\nm: 12345678901234567890123\nnn: .5\n",
        // Plain scalars with indicators inside them.
        "url: http://example.com:8080/a#b\nre: ^/a/[0-9]+$\nq: a, b\nx: -a\nyy: ?b\nz: :c\nw: a'b\"c\n",
        "a: {b: c:d, e: -f, g: h#i}\n",
        // Keys with dots, slashes and quotes; non-ASCII.
        "metadata:\n  annotations:\n    kubernetes.io/ingress.class: istio\n    \"quoted key\": 1\n  labels: {app.kubernetes.io/name: x}\nnote: héllo wörld ✓\n",
    ];
    for text in cases {
        assert!(agrees(text), "the fast reader refused {text:?}");
    }
}

#[test]
fn leaves_everything_else_to_serde_saphyr() {
    let cases = [
        // Outside the subset, valid.
        "a: |\n  text\n",
        "a: >-\n  folded\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: b\n  c\n",
        "a: \"b\n  c\"\n",
        "a:\n\tb: 1\n",
        "a: 1\r\nb: 2\r\n",
        "\u{feff}a: 1\n",
        "%YAML 1.2\n---\na: 1\n",
        "--- {a: 1}\n",
        "a: 1\n...\n",
        "- a\n- b\n",
        "plain\n",
        "? a\n: b\n",
        "<<: {a: 1}\n",
        "1: a\n",
        "true: a\n",
        "a:\n- - b\n",
        "a: [b,\n  c]\n",
        "a: [b: c]\n",
        "a: {b: }\n",
        "a: \"\\x41\"\n",
        "  a: 1\n",
        // Errors.
        "a: 1\na: 2\n",
        "a: b: c\n",
        "a: [b\n",
        "a: 1\n b: 2\n",
        "a:\n  b: 1\n c: 2\n",
        "a: 'b\n",
        "a: \"b\"c\n",
        "a: 1\nb\n",
        "a: - b\n",
        "{a: 1}\nb: 2\n",
    ];
    for text in cases {
        assert!(!agrees(text), "the fast reader read {text:?}");
    }
}

#[test]
fn deep_nesting_is_left_to_serde_saphyr() {
    let deep = format!("a: {}1{}\n", "[".repeat(70), "]".repeat(70));
    assert!(!agrees(&deep));
    let shallow = format!("a: {}1{}\n", "[".repeat(20), "]".repeat(20));
    assert!(agrees(&shallow));
}

#[test]
fn a_file_over_serde_saphyr_default_budget_reads_either_way() {
    // Over the default budget of 250,000 nodes, which refused such files (a few thousand
    // routes) whole.
    let items = "1,".repeat(130_000);
    let text = format!("a: [{items}0]\n---\nb: [{items}0]\n");
    assert!(agrees(&text));
    // The full parser alone (a block scalar is outside the fast subset).
    assert!(full_parse(&format!("{text}---\nc: |\n  x\n")).is_ok());
}

/// The repository's own configuration files and the acceptance manifests.
fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["examples", "deploy", "fuzz/regressions", "testdata"] {
        collect(&root.join(dir), &mut files);
    }
    files
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            collect(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
}

#[test]
fn agrees_with_serde_saphyr_on_every_example_and_acceptance_manifest() {
    let files = corpus();
    assert!(files.len() > 80, "only {} files found", files.len());
    let mut read = 0;
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if agrees(&text) {
            read += 1;
        }
    }
    // Most real files are inside the subset (the rest use block scalars and the like).
    assert!(
        read * 10 > files.len() * 7,
        "read {read} of {}",
        files.len()
    );
}

/// A small deterministic generator (xorshift), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Edits that move a text across the subset's edges: indentation, indicators, quotes,
/// markers, comments, scalars of other types.
const PIECES: &[&str] = &[
    " ",
    "  ",
    "\n",
    "\n  ",
    "- ",
    "-",
    ":",
    ": ",
    "#",
    " #",
    "'",
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ",",
    ", ",
    "---\n",
    "...",
    "a",
    "1",
    "-1",
    "0",
    "1.5",
    "~",
    "null",
    "yes",
    "&x ",
    "*x",
    "!t ",
    "|",
    ">",
    "?",
    "%",
    "\t",
    "\r",
    "x: y",
    "\n- a: b\n  c: d",
    "é",
    "<<",
    "@",
    "`",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut s = text.to_string();
    for _ in 0..1 + rng.below(3) {
        let mut at = rng.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(3) {
            0 => {
                let mut end = (at + 1 + rng.below(4)).min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.replace_range(at..end, "");
            }
            _ => s.insert_str(at, PIECES[rng.below(PIECES.len())]),
        }
    }
    s
}

#[test]
fn agrees_with_serde_saphyr_on_edited_texts() {
    let mut seeds: Vec<String> = corpus()
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|t| t.len() < 4096)
        .collect();
    seeds.push("a:\n  b: [1, {c: d}]\n  e:\n  - f: 'g'\n    h: \"i\"\n".into());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut read, mut tried) = (0, 0);
    for _ in 0..2500 {
        let seed = &seeds[rng.below(seeds.len())];
        let text = mutate(seed, &mut rng);
        tried += 1;
        if agrees(&text) {
            read += 1;
        }
    }
    // Many edits keep the text inside the subset: the comparison is exercised.
    assert!(read * 5 > tried, "read only {read} of {tried}");
}
