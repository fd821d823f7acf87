//! Any bytes as a PROXY protocol header.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::proxy_protocol(data);
});
