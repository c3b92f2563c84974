//! The authorization verdict for one request: the one rule the proxy applies to each request,
//! re-applies to open tunnels when a reload changes trust or policy, and `certgate explain`
//! reports, so the three cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::policy::{Decision, Mode, Policy, Principal};

/// Why a request has no verified certificate, as far as the decision needs to know: the 401
/// reason, and whether a certificate was presented at all (a refused certificate is not an
/// anonymous request to `policy learn`). The TLS side says which; the policy only reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unauthenticated {
    /// The 401 `reason`, one of the contract's strings.
    pub reason: &'static str,
    /// A certificate was presented and refused (rather than none sent).
    pub presented: bool,
}

/// Who asks: a verified certificate's principal, or why there is none.
pub type Asker<'a> = Result<Principal<'a>, Unauthenticated>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The listener's root token: allowed whatever the certificate and policy say.
    Root,
    /// Allowed; the permission when a policy allowed it.
    Allow {
        permission: Option<String>,
    },
    /// A policy in audit mode would deny this: logged and counted, then forwarded.
    AuditDeny {
        status: u16,
        reason: String,
    },
    Deny {
        status: u16,
        reason: String,
    },
}

/// Which refusal a denying [`Verdict`] is, typed, for the access log's `refusal` field (and so
/// for `certgate policy learn`, which must not read it out of the reason's wording).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// 401: no certificate at all (not a refused one): only `anonymous` grants could allow it.
    NoCertificate,
    /// 401: a certificate was presented and refused (expired, revoked, unknown CA, ...).
    BadCertificate,
    /// 403: a verified certificate whose permissions do not cover the request.
    NotPermitted,
}

impl RefusalKind {
    /// The spelling in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::NoCertificate => "no_certificate",
            RefusalKind::BadCertificate => "bad_certificate",
            RefusalKind::NotPermitted => "not_permitted",
        }
    }
}

impl Verdict {
    /// The refusal this verdict is, given who it was decided for; None when allowed.
    pub fn refusal(&self, asker: &Asker<'_>) -> Option<RefusalKind> {
        match self {
            Verdict::Root | Verdict::Allow { .. } => None,
            Verdict::AuditDeny { .. } | Verdict::Deny { .. } => Some(match asker {
                Ok(_) => RefusalKind::NotPermitted,
                Err(u) if u.presented => RefusalKind::BadCertificate,
                Err(_) => RefusalKind::NoCertificate,
            }),
        }
    }
}

/// The root token first. Then, without a policy, every verified certificate is allowed and
/// nothing else is; with one, the asker's permissions must cover `method path`. Denied: 401
/// without a valid certificate (`asker` says why), 403 with one.
pub fn authorize(
    asker: Asker<'_>,
    policy: Option<&Policy>,
    root: bool,
    method: &str,
    path: &str,
) -> Verdict {
    if root {
        return Verdict::Root;
    }
    let unauthenticated = |u: Unauthenticated| (401, u.reason.to_string());
    let Some(policy) = policy else {
        return match asker {
            Ok(_) => Verdict::Allow { permission: None },
            Err(u) => {
                let (status, reason) = unauthenticated(u);
                Verdict::Deny { status, reason }
            }
        };
    };
    let principal = asker.unwrap_or(Principal::Anonymous);
    let denial = match policy.decide(&principal, method, path) {
        Decision::Allow { permission } => {
            return Verdict::Allow {
                permission: Some(permission.to_string()),
            }
        }
        Decision::Deny(denial) => denial,
    };
    let (status, reason) = match asker {
        Ok(_) => (403, denial.reason(method, path)),
        Err(u) => unauthenticated(u),
    };
    match policy.mode() {
        Mode::Audit => Verdict::AuditDeny { status, reason },
        Mode::Enforce => Verdict::Deny { status, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec};
    use crate::tls::identity::Identity;
    use crate::tls::verify::AuthFailure;
    use std::path::Path;

    /// The proxy's call: a certificate's identity (or why there is none) through `state::asker`.
    fn authorize(
        identity: Result<&Identity, AuthFailure>,
        policy: Option<&Policy>,
        root: bool,
        method: &str,
        path: &str,
    ) -> Verdict {
        super::authorize(
            crate::state::asker::asker(identity),
            policy,
            root,
            method,
            path,
        )
    }

    fn identity(cn: &str, o: &str) -> Identity {
        let mut ca = CertSpec::with_subject(&[("CN", "Authorize Test CA")]);
        ca.is_ca = true;
        ca.eku = false;
        let ca = pki::self_signed_ca(&ca).expect("ca");
        let leaf = pki::issue(&CertSpec::with_subject(&[("O", o), ("CN", cn)]), &ca).expect("leaf");
        Identity::from_x509(&leaf.cert).expect("identity")
    }

    fn policy(mode: &str) -> Policy {
        let yaml = format!(
            "mode: {mode}\npermissions:\n  list: [\"GET /vms\"]\n  open: [\"GET /health\"]\ngroups:\n  ops: [list]\nanonymous: [open]\n"
        );
        Policy::from_yaml(&yaml, Path::new("/policy.yaml")).expect("policy")
    }

    #[test]
    fn the_root_token_wins_over_everything() {
        let p = policy("enforce");
        let anonymous = Err(AuthFailure::NoCertificate);
        assert_eq!(
            authorize(anonymous, Some(&p), true, "DELETE", "/x"),
            Verdict::Root
        );
        assert_eq!(authorize(anonymous, None, true, "GET", "/"), Verdict::Root);
    }

    #[test]
    fn without_a_policy_a_verified_certificate_is_enough() {
        let id = identity("alice", "ops");
        assert_eq!(
            authorize(Ok(&id), None, false, "DELETE", "/anything"),
            Verdict::Allow { permission: None }
        );
        let expired = authorize(Err(AuthFailure::Expired), None, false, "GET", "/");
        assert_eq!(
            expired,
            Verdict::Deny {
                status: 401,
                reason: AuthFailure::Expired.reason().into()
            }
        );
    }

    #[test]
    fn a_policy_decides_with_401_for_anonymous_and_403_for_certificates() {
        let p = policy("enforce");
        let ops = identity("alice", "ops");
        let other = identity("bob", "sales");
        assert_eq!(
            authorize(Ok(&ops), Some(&p), false, "GET", "/vms"),
            Verdict::Allow {
                permission: Some("list".into())
            }
        );
        match authorize(Ok(&other), Some(&p), false, "GET", "/vms") {
            Verdict::Deny {
                status: 403,
                reason,
            } => assert!(reason.contains("/vms"), "{reason}"),
            v => panic!("{v:?}"),
        }
        let anonymous = Err(AuthFailure::NoCertificate);
        assert_eq!(
            authorize(anonymous, Some(&p), false, "GET", "/health"),
            Verdict::Allow {
                permission: Some("open".into())
            }
        );
        assert_eq!(
            authorize(anonymous, Some(&p), false, "GET", "/vms"),
            Verdict::Deny {
                status: 401,
                reason: AuthFailure::NoCertificate.reason().into()
            }
        );
    }

    #[test]
    fn audit_mode_turns_denials_into_audit_denials() {
        let p = policy("audit");
        let other = identity("bob", "sales");
        assert!(matches!(
            authorize(Ok(&other), Some(&p), false, "GET", "/vms"),
            Verdict::AuditDeny { status: 403, .. }
        ));
        assert!(matches!(
            authorize(Err(AuthFailure::Revoked), Some(&p), false, "GET", "/vms"),
            Verdict::AuditDeny { status: 401, .. }
        ));
    }
}
