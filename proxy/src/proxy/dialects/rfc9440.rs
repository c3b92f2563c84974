//! RFC 9440 `client-cert`: the leaf's DER as a structured-field byte sequence, only with
//! `forward_cert`.

use super::escape::b64;
use crate::tls::identity::Identity;

pub(super) fn headers(
    out: &mut Vec<(&'static str, String)>,
    forward_cert: bool,
    identity: Option<&Identity>,
) {
    if let (Some(id), true) = (identity, forward_cert) {
        out.push(("client-cert", format!(":{}:", b64(&id.der))));
    }
}
