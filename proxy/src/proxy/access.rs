//! The authorization verdict for one request, after the root token: shared by the request
//! phase and by the re-check of open tunnels when a reload changes trust or policy, so both
//! decide by the same rule.

use crate::policy::{Decision, Mode, Policy, Principal};
use crate::tls::identity::Identity;
use crate::tls::verify::AuthFailure;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; the permission when a policy allowed it.
    Allow {
        permission: Option<String>,
    },
    /// A policy in audit mode would deny this: logged and counted, then forwarded.
    AuditDeny {
        code: u16,
        reason: String,
    },
    Deny {
        code: u16,
        reason: String,
    },
}

/// Without a policy every verified certificate is allowed and nothing else is; with one, the
/// identity's permissions must cover `method path`. Denied: 401 without a valid certificate
/// (`failure` says why), 403 with one.
pub fn authorize(
    policy: Option<&Policy>,
    identity: Option<&Identity>,
    failure: Option<AuthFailure>,
    method: &str,
    path: &str,
) -> Verdict {
    let unauthenticated = || Verdict::Deny {
        code: 401,
        reason: failure
            .unwrap_or(AuthFailure::NoCertificate)
            .reason()
            .to_string(),
    };
    let Some(policy) = policy else {
        return match identity {
            Some(_) => Verdict::Allow { permission: None },
            None => unauthenticated(),
        };
    };
    let principal = match identity {
        Some(id) => Principal::Certificate {
            user: id.user.as_deref(),
            organizations: &id.organizations,
            org_units: &id.org_units,
        },
        None => Principal::Anonymous,
    };
    let denial = match policy.decide(&principal, method, path) {
        Decision::Allow { permission } => {
            return Verdict::Allow {
                permission: Some(permission.to_string()),
            }
        }
        Decision::Deny(denial) => denial,
    };
    let (code, reason) = match identity {
        Some(_) => (403, denial.reason(method, path)),
        None => match unauthenticated() {
            Verdict::Deny { code, reason } => (code, reason),
            other => return other,
        },
    };
    match policy.mode() {
        Mode::Audit => Verdict::AuditDeny { code, reason },
        Mode::Enforce => Verdict::Deny { code, reason },
    }
}
