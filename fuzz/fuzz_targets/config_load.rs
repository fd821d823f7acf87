//! Any bytes as a YAML configuration file: loading, validation and compilation must give
//! diagnostics, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::config(data);
});
