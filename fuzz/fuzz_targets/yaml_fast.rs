//! Any text as YAML: the fast reader must read it exactly as serde-saphyr does, or leave it to
//! serde-saphyr (a differential check, not only a crash check).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        isthmus_api::fuzzing::fast_reader_agrees(text);
    }
});
