//! Any bytes as an upstream's HTTP/1.1 response: head, framing and chunked body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::upstream_response(data);
});
