//! Request-path normalisation: never panics, and every accepted path comes out in normal form.
#![no_main]

use std::borrow::Cow;

use certgate::policy::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    check(input);
    // Most random strings are refused as not absolute: also try the absolute form.
    check(&format!("/{input}"));
});

fn check(input: &str) {
    let Ok(out) = normalize_path(input) else {
        return;
    };
    let out: &str = &out;
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    assert!(!out.contains("//"), "{input:?} -> {out:?}");
    assert!(!out.contains("/./"), "{input:?} -> {out:?}");
    assert!(!out.contains("/../"), "{input:?} -> {out:?}");
    assert!(!out.ends_with("/."), "{input:?} -> {out:?}");
    assert!(!out.ends_with("/.."), "{input:?} -> {out:?}");
    let lower = out.to_ascii_lowercase();
    assert!(
        !lower.contains("%2f") && !lower.contains("%5c"),
        "{input:?} -> {out:?}"
    );
    assert!(
        !out.bytes().any(|b| b < 0x20 || b == 0x7f),
        "{input:?} -> {out:?}"
    );
    // Idempotent, and the normal form is recognised without rewriting.
    match normalize_path(out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out, "{input:?}"),
        Ok(Cow::Owned(again)) => panic!("{input:?} -> {out:?} -> {again:?}"),
        Err(e) => panic!("{input:?} -> {out:?} refused: {e}"),
    }
    // Every remaining escape is a valid upper-case %XX of a reserved byte.
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).unwrap_or(b"");
            assert!(
                hex.len() == 2
                    && hex
                        .iter()
                        .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{input:?} -> {out:?}"
            );
        }
    }
}
