//! The escapings the dialects share: percent-encoding as NGINX and Go write it, base64, and
//! the guard that keeps every header value visible ASCII.

use std::fmt::Write as _;

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Every byte but `A-Za-z0-9-._~` (RFC 3986 unreserved).
pub(super) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// NGINX `$ssl_client_escaped_cert` / Envoy `Cert=`: every byte but `A-Za-z0-9-._~` as
/// upper-case `%XX`.
pub fn escape_pem(pem: &str) -> String {
    utf8_percent_encode(pem, UNRESERVED).to_string()
}

pub(super) fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Bytes that may not appear in a header value (controls, DEL, non-ASCII).
pub(super) fn not_header_byte(b: u8) -> bool {
    !(b == b' ' || b.is_ascii_graphic())
}

/// Defensive: `%XX` for any byte that may not appear in a header value; the identity's own
/// fields never need it, but [`Identity`] has public fields.
pub(super) fn percent_unsafe(s: &str) -> String {
    escape_unsafe(s, '%')
}

/// A DN is already ASCII without controls when it comes from OpenSSL's RFC 2253 printer; should
/// anything else slip in, it is written with the RFC 2253 `\XX` hex escape.
pub(super) fn header_safe_dn(dn: &str) -> String {
    escape_unsafe(dn, '\\')
}

/// Writes every byte that may not appear in a header value as `<prefix>XX`.
pub(super) fn escape_unsafe(s: &str, prefix: char) -> String {
    if !s.bytes().any(not_header_byte) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if not_header_byte(b) {
            let _ = write!(out, "{prefix}{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Go's `url.QueryEscape`: `A-Za-z0-9-_.~` kept, space as `+`, every other byte `%XX`.
pub fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}
