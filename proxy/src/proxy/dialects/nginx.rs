//! ingress-nginx: `ssl-client-verify`, `ssl-client-subject-dn`, `ssl-client-issuer-dn` and
//! (with `forward_cert`) `ssl-client-cert`.

use super::escape::{escape_pem, header_safe_dn, percent_unsafe};
use super::ClientVerify;
use crate::tls::identity::Identity;

pub(super) fn headers(
    out: &mut Vec<(&'static str, String)>,
    forward_cert: bool,
    verify: &ClientVerify,
    identity: Option<&Identity>,
) {
    out.push(("ssl-client-verify", client_verify(verify)));
    if let Some(id) = identity {
        out.push(("ssl-client-subject-dn", header_safe_dn(&id.subject_dn)));
        out.push(("ssl-client-issuer-dn", header_safe_dn(&id.issuer_dn)));
        if forward_cert {
            out.push(("ssl-client-cert", escape_pem(&id.pem())));
        }
    }
}

/// `SUCCESS`, `NONE` or `FAILED:<reason>` (no space, as NGINX writes it).
fn client_verify(verify: &ClientVerify) -> String {
    match verify {
        ClientVerify::Success => "SUCCESS".into(),
        ClientVerify::None => "NONE".into(),
        ClientVerify::Failed(reason) => format!("FAILED:{}", percent_unsafe(reason.trim())),
    }
}
