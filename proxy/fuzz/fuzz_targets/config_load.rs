//! The config loader on arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = certgate::config::Config::from_yaml(text, std::path::Path::new("/fuzz/certgate.yaml"), |name| {
            (name == "SET").then(|| "value".to_string())
        });
    }
});
