//! The PROXY protocol v1/v2 parser on arbitrary bytes: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = certgate::listener::proxy_protocol::parse_header(data);
});
