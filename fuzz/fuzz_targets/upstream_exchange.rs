//! Any bytes as an upstream's answer to a GET, HEAD or POST, through the gateway's own
//! HTTP/1.1 exchange over real loopback sockets.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    isthmus_proxy::fuzzing::upstream_exchange(data);
});
