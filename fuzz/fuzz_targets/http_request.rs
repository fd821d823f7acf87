//! Any bytes from a client on an HTTP port, through the real connection handling and routing
//! of a small configuration: an answer or a closed connection, never a panic or a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::http_request(data);
});
