//! Request-path normalisation: the path that is matched is the path that is
//! forwarded, so every spelling that an upstream might read differently is either rewritten to
//! one canonical form or refused with a 400.
//!
//! Rules, in the order they apply to each segment:
//! - the path must begin with `/`;
//! - `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!   valid escape is kept with upper-case hex;
//! - refused: an encoded `/` or `\` (`%2F`, `%5C`, any case), a NUL or control character
//!   (0x00–0x1F, 0x7F) raw or encoded, a `%` not followed by two hex digits;
//! - `.` segments are dropped and `..` removes the previous segment (after decoding, so `%2e%2e`
//!   is `..`); a `..` with nothing left to remove is refused ("path escapes root");
//! - repeated slashes are merged;
//! - a trailing slash is kept (so is the directory form of a final `.` or `..`, as RFC 3986
//!   section 5.2.4 has it); the matcher ignores it.
//!
//! Everything else (`;`, a raw `\`, non-ASCII text) is an ordinary character.

use std::borrow::Cow;

/// Why a request path was refused. [`PathError::reason`] is the `reason` of the 400 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PathError {
    /// The path does not begin with `/` (asterisk-form, absolute-form or empty target).
    #[error("path must begin with /")]
    NotAbsolute,
    /// `%2F` or `%5C` in any case.
    #[error("encoded slash in path")]
    EncodedSlash,
    /// A byte 0x00–0x1F or 0x7F, raw or percent-encoded.
    #[error("control character in path")]
    ControlCharacter,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
    /// A `..` segment with no segment left to remove.
    #[error("path escapes root")]
    EscapesRoot,
}

impl PathError {
    /// The exact `reason` string of the 400 response body.
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path must begin with /",
            PathError::EncodedSlash => "encoded slash in path",
            PathError::ControlCharacter => "control character in path",
            PathError::InvalidPercentEncoding => "invalid percent-encoding",
            PathError::EscapesRoot => "path escapes root",
        }
    }
}

/// Normalises a request path (without its query string). Returns the input unchanged, without
/// allocating, when it is already in normal form.
pub fn normalize_path(raw_path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw_path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(raw_path));
    }
    normalize_slow(raw_path).map(Cow::Owned)
}

/// True when the path needs no rewriting: no `%`, no control byte, no empty segment except a
/// final one (the trailing slash), no `.` or `..` segment.
fn is_normal(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            // Only an escape that normalisation would keep as it is: upper-case hex, and not an
            // unreserved, slash, backslash or control character.
            let (Some(&hi), Some(&lo)) = (path.get(i + 1), path.get(i + 2)) else {
                return false;
            };
            if !is_upper_hex(hi) || !is_upper_hex(lo) {
                return false;
            }
            let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) else {
                return false;
            };
            let v = (hi << 4) | lo;
            if is_unreserved(v) || v == b'/' || v == b'\\' || is_control(v) {
                return false;
            }
            i += 3;
        } else if is_control(b) {
            return false;
        } else {
            i += 1;
        }
    }
    // path[0] == b'/' (checked by the caller), so the first item is the empty string before it.
    let mut segments = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            b"" if !last => return false,
            b"." | b".." => return false,
            _ => {}
        }
    }
    true
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes one raw segment into `out` (appending). Shared with the route parser so that route
/// literals and request paths are compared in the same form.
pub(crate) fn decode_segment_into(seg: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = seg.as_bytes();
    let mut i = 0;
    // Copy runs of ordinary characters as &str slices so multi-byte UTF-8 stays intact.
    let mut run_start = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            out.push_str(&seg[run_start..i]);
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let v = (hi << 4) | lo;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSlash);
            }
            if is_control(v) {
                return Err(PathError::ControlCharacter);
            }
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(v & 0x0f)]));
            }
            i += 3;
            run_start = i;
        } else if is_control(b) {
            return Err(PathError::ControlCharacter);
        } else {
            i += 1;
        }
    }
    out.push_str(&seg[run_start..]);
    Ok(())
}

fn normalize_slow(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    // Byte offsets in `out` where each kept segment's leading '/' sits, so `..` can truncate.
    let mut starts: Vec<usize> = Vec::new();
    let mut trailing = false;
    // raw[0] is '/', so the first split item is "" and is skipped like any empty segment.
    let mut segments = raw.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push('/');
        decode_segment_into(seg, &mut out)?;
        let decoded = &out[start + 1..];
        match decoded {
            "" => {
                out.truncate(start);
                // An empty final segment means the input ended with a slash.
                if last && seg.is_empty() && raw.len() > 1 {
                    trailing = true;
                }
            }
            "." => {
                out.truncate(start);
                trailing = last;
            }
            ".." => {
                out.truncate(start);
                let prev = starts.pop().ok_or(PathError::EscapesRoot)?;
                out.truncate(prev);
                trailing = last;
            }
            _ => {
                starts.push(start);
                trailing = false;
            }
        }
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    fn ok(p: &str) -> String {
        match normalize_path(p) {
            Ok(c) => c.into_owned(),
            Err(e) => panic!("{p:?} refused: {e}"),
        }
    }

    #[test]
    fn already_normal_is_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/api/v1/vm",
            "/a;b/c",
            "/a\\b",
            "/é/ü",
            "/a.b/..c/...",
            "/~x",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(_))),
                "{p} should be borrowed"
            );
            assert_eq!(ok(p), p);
        }
    }

    #[test]
    fn not_absolute() {
        for p in ["", "a", "*", "http://x/y", " /a", "%2F"] {
            assert_eq!(n(p), Err(PathError::NotAbsolute), "{p:?}");
        }
    }

    #[test]
    fn reasons_are_exact() {
        assert_eq!(PathError::EncodedSlash.reason(), "encoded slash in path");
        assert_eq!(
            PathError::ControlCharacter.reason(),
            "control character in path"
        );
        assert_eq!(
            PathError::InvalidPercentEncoding.reason(),
            "invalid percent-encoding"
        );
        assert_eq!(PathError::EscapesRoot.reason(), "path escapes root");
        assert_eq!(PathError::NotAbsolute.reason(), "path must begin with /");
        assert_eq!(PathError::EscapesRoot.to_string(), "path escapes root");
    }

    #[test]
    fn encoded_slash_and_backslash_any_case() {
        for p in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a%5cb",
            "/%2F",
            "/allowed/..%2fdenied",
            "/%2f..",
            "/a/%5c/b",
        ] {
            assert_eq!(n(p), Err(PathError::EncodedSlash), "{p}");
        }
    }

    #[test]
    fn control_characters_raw_and_encoded() {
        for p in [
            "/a%00b", "/a\0b", "/a%0Ab", "/a%0d%0a", "/a\nb", "/a\rb", "/a\tb", "/a%7F", "/a%7f",
            "/a\u{7f}", "/%1F", "/%1f/x", "/x/\u{1}",
        ] {
            assert_eq!(n(p), Err(PathError::ControlCharacter), "{p:?}");
        }
    }

    #[test]
    fn invalid_percent_encoding() {
        for p in [
            "/a%", "/a%2", "/a%G0", "/a%0G", "/%%", "/a%2x/b", "/a%-1", "/%é1", "/x%",
        ] {
            assert_eq!(n(p), Err(PathError::InvalidPercentEncoding), "{p:?}");
        }
    }

    #[test]
    fn escapes_root() {
        for p in [
            "/..",
            "/../",
            "/../a",
            "/a/../..",
            "/%2e%2e",
            "/%2E%2E/x",
            "/a/%2e%2e/%2E.",
            "/./..",
        ] {
            assert_eq!(n(p), Err(PathError::EscapesRoot), "{p}");
        }
    }

    #[test]
    fn dot_segments() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/./"), "/");
        assert_eq!(ok("/a/%2e/b"), "/a/b");
        assert_eq!(ok("/a/.%2E/b"), "/b");
        assert_eq!(ok("/a/..."), "/a/...");
        assert_eq!(ok("/a/.b/..c"), "/a/.b/..c");
    }

    #[test]
    fn slashes_merged_trailing_kept() {
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("///a"), "/a");
        assert_eq!(ok("/a//b"), "/a/b");
        assert_eq!(ok("/a/b//"), "/a/b/");
        assert_eq!(ok("/a/b/"), "/a/b/");
        assert_eq!(ok("/a///"), "/a/");
        assert_eq!(ok("/"), "/");
    }

    #[test]
    fn unreserved_decoded_others_uppercased() {
        assert_eq!(ok("/%41%62%2D%2e%5F%7e%30"), "/Ab-._~0");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%2cb%3b"), "/a%2Cb%3B");
        assert_eq!(ok("/%e2%82%ac"), "/%E2%82%AC");
        assert_eq!(ok("/%25"), "/%25");
        assert_eq!(ok("/%3f%23"), "/%3F%23");
    }

    #[test]
    fn attack_strings() {
        assert_eq!(ok("/allowed/../denied"), "/denied");
        assert_eq!(ok("/allowed/%2e%2e/denied"), "/denied");
        assert_eq!(ok("//denied"), "/denied");
        assert_eq!(n("/allowed/..%2fdenied"), Err(PathError::EncodedSlash));
        assert_eq!(ok("/allowed;/../denied"), "/denied");
        assert_eq!(ok("/allowed/..;/denied"), "/allowed/..;/denied");
        assert_eq!(ok("/ALLOWED"), "/ALLOWED");
        assert_eq!(ok("/a\\..\\b"), "/a\\..\\b");
        assert_eq!(ok("/api/v1/vm/%2e%2e/node"), "/api/v1/node");
        assert_eq!(ok("/api/v1/%76m"), "/api/v1/vm");
    }

    #[test]
    fn non_ascii_kept() {
        assert_eq!(ok("/ünï/../cödé"), "/cödé");
        assert_eq!(ok("/日本//語"), "/日本/語");
    }

    fn check_invariants(input: &str) {
        if let Ok(out) = normalize_path(input) {
            let out = out.into_owned();
            assert!(out.starts_with('/'), "{input:?} -> {out:?}");
            assert!(!out.contains("//"), "{input:?} -> {out:?}");
            assert!(!out.contains("/./"), "{input:?} -> {out:?}");
            assert!(!out.contains("/../"), "{input:?} -> {out:?}");
            assert!(!out.ends_with("/."), "{input:?} -> {out:?}");
            assert!(!out.ends_with("/.."), "{input:?} -> {out:?}");
            assert!(
                !out.to_ascii_lowercase().contains("%2f"),
                "{input:?} -> {out:?}"
            );
            let again = normalize_path(&out);
            assert_eq!(
                again.as_deref(),
                Ok(out.as_str()),
                "not idempotent for {input:?}"
            );
            assert!(
                matches!(again, Ok(Cow::Borrowed(_))),
                "normal form not recognised: {out:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

        #[test]
        fn invariants_on_path_like(s in "(/|//|\\.|\\.\\.|%2[eEfF]|%5[cC]|%[0-9a-fA-F]{2}|%|[a-z;~\\\\]|\u{e9}|\u{1})*") {
            check_invariants(&s);
            check_invariants(&format!("/{s}"));
        }

        #[test]
        fn invariants_on_any_string(s in any::<String>()) {
            check_invariants(&s);
            check_invariants(&format!("/{s}"));
        }

        #[test]
        fn segment_structure(segs in proptest::collection::vec("[a-z]{1,3}|\\.|\\.\\.|", 0..8), trailing in any::<bool>()) {
            let mut p = String::new();
            for s in &segs { p.push('/'); p.push_str(s); }
            if trailing { p.push('/'); }
            if p.is_empty() { p.push('/'); }
            // Reference: RFC 3986-style stack.
            let mut stack: Vec<&str> = Vec::new();
            let mut escaped = false;
            for s in &segs {
                match s.as_str() {
                    "" | "." => {}
                    ".." => if stack.pop().is_none() { escaped = true; break; },
                    other => stack.push(other),
                }
            }
            match normalize_path(&p) {
                Err(PathError::EscapesRoot) => prop_assert!(escaped),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
                Ok(out) => {
                    prop_assert!(!escaped);
                    let expect_segs: Vec<&str> = out.split('/').filter(|s| !s.is_empty()).collect();
                    prop_assert_eq!(expect_segs, stack);
                }
            }
        }
    }
}
