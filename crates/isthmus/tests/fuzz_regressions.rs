//! Every input kept under `fuzz/regressions/<target>/` (seeds, and the inputs of crashes the
//! fuzzers found, once fixed) goes through its fuzz target's entry point on every test run,
//! on the stable toolchain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

#[test]
fn config_load_inputs() {
    for (_, bytes) in inputs("config_load") {
        isthmus_proxy::fuzzing::config(&bytes);
    }
}

#[test]
fn client_hello_inputs() {
    for (_, bytes) in inputs("client_hello") {
        isthmus_proxy::fuzzing::client_hello(&bytes);
    }
}

#[test]
fn proxy_protocol_inputs() {
    for (_, bytes) in inputs("proxy_protocol") {
        isthmus_proxy::fuzzing::proxy_protocol(&bytes);
    }
}

#[test]
fn http_request_inputs() {
    for (_, bytes) in inputs("http_request") {
        isthmus_proxy::fuzzing::http_request(&bytes);
    }
}

#[test]
fn upstream_response_inputs() {
    for (_, bytes) in inputs("upstream_response") {
        isthmus_proxy::fuzzing::upstream_response(&bytes);
    }
}

#[test]
fn upstream_exchange_inputs() {
    for (_, bytes) in inputs("upstream_exchange") {
        isthmus_proxy::fuzzing::upstream_exchange(&bytes);
    }
}

#[test]
fn yaml_fast_inputs() {
    for (_, bytes) in inputs("yaml_fast") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            isthmus_api::fuzzing::fast_reader_agrees(text);
        }
    }
}
