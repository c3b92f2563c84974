//! Envoy's `x-forwarded-client-cert`.

use super::escape::{escape_pem, header_safe_dn, percent_unsafe};
use crate::tls::identity::Identity;

pub(super) fn headers(
    out: &mut Vec<(&'static str, String)>,
    forward_cert: bool,
    identity: Option<&Identity>,
) {
    if let Some(id) = identity {
        out.push(("x-forwarded-client-cert", xfcc(id, forward_cert)));
    }
}

/// An HTTP quoted-string (Envoy's XFCC, RFC 7239 `Forwarded`): `"` and `\` backslash-escaped
/// inside double quotes.
pub fn xfcc_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A SAN value: bare unless it holds `,` `;` `=` `"` `\` or a space, then quoted.
pub(super) fn xfcc_value(value: &str) -> String {
    let value = percent_unsafe(value);
    if value.contains([',', ';', '=', '"', '\\', ' ']) {
        xfcc_quoted(&value)
    } else {
        value
    }
}

/// `Hash=<sha256>;Cert="<pem>";Subject="<dn>";URI=<uri>;DNS=<dns>` in Envoy's key order
/// (`By` is not sent: it names our own server certificate's URI SAN, which upstreams of a
/// sidecar do not need). Envoy writes `URI=` even when there is no URI SAN; so do we.
pub(super) fn xfcc(id: &Identity, forward_cert: bool) -> String {
    let mut parts = vec![format!("Hash={}", id.fingerprint_sha256)];
    if forward_cert {
        parts.push(format!("Cert=\"{}\"", escape_pem(&id.pem())));
    }
    parts.push(format!(
        "Subject={}",
        xfcc_quoted(&header_safe_dn(&id.subject_dn))
    ));
    if id.uri_sans.is_empty() {
        parts.push("URI=".into());
    }
    for uri in &id.uri_sans {
        parts.push(format!("URI={}", xfcc_value(uri)));
    }
    for dns in &id.dns_sans {
        parts.push(format!("DNS={}", xfcc_value(dns)));
    }
    parts.join(";")
}
