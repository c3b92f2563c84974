//! A verified certificate's identity (or why there is none) as the policy sees it. It lives
//! here, above both: `tls` reads certificates and knows nothing of policies, and `policy`
//! decides on principals and knows nothing of certificates.

use crate::policy::{Asker, Principal, Sans, Unauthenticated};
use crate::tls::identity::Identity;
use crate::tls::verify::AuthFailure;

/// Who asks, for [`crate::policy::authorize`]: the identity's principal, or the 401 reason.
pub(crate) fn asker(identity: Result<&Identity, AuthFailure>) -> Asker<'_> {
    identity.map(principal).map_err(|f| Unauthenticated {
        reason: f.reason(),
        presented: f != AuthFailure::NoCertificate,
    })
}

/// The policy's view of a verified certificate.
pub(crate) fn principal(id: &Identity) -> Principal<'_> {
    Principal::Certificate {
        user: id.user.as_deref(),
        organizations: &id.organizations,
        org_units: &id.org_units,
        sans: Sans {
            dns: &id.dns_sans,
            uri: &id.uri_sans,
            email: &id.email_sans,
        },
    }
}
