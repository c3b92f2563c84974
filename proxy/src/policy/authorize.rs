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

/// What the policy decided for one request. A refusal says which (its status follows from
/// it); the root token and audit mode are variants, never strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded.
    Allow(AllowedBy),
    /// A policy in audit mode would refuse this: logged and counted, then forwarded.
    AuditDeny(Refusal),
    /// Refused.
    Deny(Refusal),
}

/// Why a request is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedBy {
    /// The listener's root token: allowed whatever the certificate and policy say.
    Root,
    /// A policy permission the asker holds (its name).
    Permission(String),
    /// No policy on the listener: every verified certificate is allowed.
    Certificate,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no verified certificate (the asker says why), and no anonymous grant covers it.
    Unauthenticated(Unauthenticated),
    /// 403: a verified certificate whose permissions do not cover the request; the reason
    /// names the request and what would cover it.
    Forbidden { reason: String },
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

impl AllowedBy {
    /// The `x-certgate-permission` value and the log's `permission`: none when no policy
    /// permission was involved.
    pub fn permission(&self) -> Option<&str> {
        match self {
            AllowedBy::Root => Some("root"),
            AllowedBy::Permission(p) => Some(p),
            AllowedBy::Certificate => None,
        }
    }
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthenticated(_) => 401,
            Refusal::Forbidden { .. } => 403,
        }
    }

    /// The error body's `reason`.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Unauthenticated(u) => u.reason,
            Refusal::Forbidden { reason } => reason,
        }
    }

    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::Unauthenticated(u) if u.presented => RefusalKind::BadCertificate,
            Refusal::Unauthenticated(_) => RefusalKind::NoCertificate,
            Refusal::Forbidden { .. } => RefusalKind::NotPermitted,
        }
    }
}

impl Verdict {
    /// The refusal, whether enforced or only audited; None when allowed.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Verdict::Allow(_) => None,
            Verdict::AuditDeny(r) | Verdict::Deny(r) => Some(r),
        }
    }

    /// What allowed it, when allowed.
    pub fn allowed_by(&self) -> Option<&AllowedBy> {
        match self {
            Verdict::Allow(g) => Some(g),
            Verdict::AuditDeny(_) | Verdict::Deny(_) => None,
        }
    }

    /// The request goes upstream (allowed, or refused in audit mode only).
    pub fn forwards(&self) -> bool {
        !matches!(self, Verdict::Deny(_))
    }

    /// The `decision` of the access log and of the metrics' labels.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "allow",
            Verdict::AuditDeny(_) => "audit_deny",
            Verdict::Deny(_) => "deny",
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
        return Verdict::Allow(AllowedBy::Root);
    }
    let Some(policy) = policy else {
        return match asker {
            Ok(_) => Verdict::Allow(AllowedBy::Certificate),
            Err(u) => Verdict::Deny(Refusal::Unauthenticated(u)),
        };
    };
    let principal = asker.unwrap_or(Principal::Anonymous);
    let denial = match policy.decide(&principal, method, path) {
        Decision::Allow { permission } => {
            return Verdict::Allow(AllowedBy::Permission(permission.to_string()))
        }
        Decision::Deny(denial) => denial,
    };
    let refusal = match asker {
        Ok(_) => Refusal::Forbidden {
            reason: denial.reason(method, path),
        },
        Err(u) => Refusal::Unauthenticated(u),
    };
    match policy.mode() {
        Mode::Audit => Verdict::AuditDeny(refusal),
        Mode::Enforce => Verdict::Deny(refusal),
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
            Verdict::Allow(AllowedBy::Root)
        );
        assert_eq!(
            authorize(anonymous, None, true, "GET", "/"),
            Verdict::Allow(AllowedBy::Root)
        );
    }

    #[test]
    fn without_a_policy_a_verified_certificate_is_enough() {
        let id = identity("alice", "ops");
        assert_eq!(
            authorize(Ok(&id), None, false, "DELETE", "/anything"),
            Verdict::Allow(AllowedBy::Certificate)
        );
        let expired = authorize(Err(AuthFailure::Expired), None, false, "GET", "/");
        let refusal = expired.refusal().expect("refused");
        assert_eq!(expired.label(), "deny");
        assert_eq!(refusal.status(), 401);
        assert_eq!(refusal.reason(), AuthFailure::Expired.reason());
        assert_eq!(refusal.kind(), RefusalKind::BadCertificate);
    }

    #[test]
    fn a_policy_decides_with_401_for_anonymous_and_403_for_certificates() {
        let p = policy("enforce");
        let ops = identity("alice", "ops");
        let other = identity("bob", "sales");
        assert_eq!(
            authorize(Ok(&ops), Some(&p), false, "GET", "/vms"),
            Verdict::Allow(AllowedBy::Permission("list".into()))
        );
        match authorize(Ok(&other), Some(&p), false, "GET", "/vms") {
            Verdict::Deny(r @ Refusal::Forbidden { .. }) => {
                assert_eq!(r.status(), 403);
                assert!(r.reason().contains("/vms"), "{}", r.reason());
                assert_eq!(r.kind(), RefusalKind::NotPermitted);
            }
            v => panic!("{v:?}"),
        }
        let anonymous = Err(AuthFailure::NoCertificate);
        assert_eq!(
            authorize(anonymous, Some(&p), false, "GET", "/health"),
            Verdict::Allow(AllowedBy::Permission("open".into()))
        );
        let refused = authorize(anonymous, Some(&p), false, "GET", "/vms");
        let refusal = refused.refusal().expect("refused");
        assert_eq!(refusal.status(), 401);
        assert_eq!(refusal.reason(), AuthFailure::NoCertificate.reason());
        assert_eq!(refusal.kind(), RefusalKind::NoCertificate);
    }

    #[test]
    fn audit_mode_turns_denials_into_audit_denials() {
        let p = policy("audit");
        let other = identity("bob", "sales");
        let forbidden = authorize(Ok(&other), Some(&p), false, "GET", "/vms");
        assert!(matches!(
            &forbidden,
            Verdict::AuditDeny(Refusal::Forbidden { .. })
        ));
        assert!(forbidden.forwards());
        assert_eq!(forbidden.label(), "audit_deny");
        let revoked = authorize(Err(AuthFailure::Revoked), Some(&p), false, "GET", "/vms");
        assert!(matches!(
            &revoked,
            Verdict::AuditDeny(Refusal::Unauthenticated(_))
        ));
    }
}
