//! The `tls.session_ticket_keys` reader on arbitrary file contents (an operator's file, or a
//! Secret someone else writes): errors, never panics, and whatever it accepts holds between one
//! and 64 keys, a raw 80-byte file exactly one.
#![no_main]

use certgate::tls::resumption::FileTicketKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = FileTicketKeys::parse(data) {
        assert!(!keys.is_empty() && keys.len() <= 64, "{} keys", keys.len());
        if data.len() == 80 {
            assert_eq!(keys.len(), 1, "a raw 80-byte file is one NGINX key");
        }
    }
});
