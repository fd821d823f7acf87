//! Any bytes as the start of a TLS connection: the ClientHello reader must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::client_hello(data);
});
