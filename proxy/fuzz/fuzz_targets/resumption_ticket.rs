//! The session ticket decoder on arbitrary bytes (what a ticket carries after decryption):
//! errors, never panics, and whatever it accepts encodes back to exactly the same bytes.
#![no_main]

use certgate::tls::resumption::ticket::Sealed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As given, and behind the right magic so the fuzzer reaches the fields at once.
    let mut with_magic = b"CGT2".to_vec();
    with_magic.extend_from_slice(data);
    for input in [data, &with_magic[..]] {
        if let Some(sealed) = Sealed::decode(input) {
            let again = sealed.encode().expect("a decoded ticket encodes");
            assert_eq!(again, input, "decode then encode changed the bytes");
        }
    }
});
