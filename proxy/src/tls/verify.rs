//! Why a client certificate was not accepted, in the operator's words.
//!
//! OpenSSL reports dozens of verify error codes; certgate groups them into the few reasons
//! below, which are what the 401 body, the access log and the handshake metric carry.

use openssl::x509::X509VerifyResult;

/// The reason a request has no valid certificate identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    NoCertificate,
    UnknownCa,
    Expired,
    NotYetValid,
    Revoked,
    CrlExpired,
    /// OCSP `hard` mode without a `good` or `revoked` answer.
    RevocationUnknown,
    BadCertificate,
}

impl AuthFailure {
    /// The exact string of the 401 `reason`: operators and scripts match on it, never change it.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::NoCertificate => "no certificate",
            AuthFailure::UnknownCa => "unknown CA",
            AuthFailure::Expired => "certificate expired",
            AuthFailure::NotYetValid => "certificate not yet valid",
            AuthFailure::Revoked => "certificate revoked",
            AuthFailure::CrlExpired => "CRL expired",
            AuthFailure::RevocationUnknown => "revocation status unknown",
            AuthFailure::BadCertificate => "bad certificate",
        }
    }

    /// Maps an OpenSSL `X509_V_ERR_*` code.
    pub fn from_verify_code(code: i32) -> AuthFailure {
        use openssl_sys as ffi;
        match code {
            ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            | ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | ffi::X509_V_ERR_CERT_UNTRUSTED
            | ffi::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => AuthFailure::UnknownCa,
            ffi::X509_V_ERR_CERT_HAS_EXPIRED => AuthFailure::Expired,
            ffi::X509_V_ERR_CERT_NOT_YET_VALID => AuthFailure::NotYetValid,
            ffi::X509_V_ERR_CERT_REVOKED => AuthFailure::Revoked,
            ffi::X509_V_ERR_CRL_HAS_EXPIRED => AuthFailure::CrlExpired,
            _ => AuthFailure::BadCertificate,
        }
    }

    /// The OpenSSL verify code that makes OpenSSL send the matching TLS alert
    /// (certificate_revoked, certificate_expired, unknown_ca, bad_certificate).
    pub fn verify_code(self) -> i32 {
        use openssl_sys as ffi;
        match self {
            AuthFailure::NoCertificate
            | AuthFailure::BadCertificate
            | AuthFailure::RevocationUnknown => ffi::X509_V_ERR_APPLICATION_VERIFICATION,
            AuthFailure::UnknownCa => ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
            AuthFailure::Expired => ffi::X509_V_ERR_CERT_HAS_EXPIRED,
            AuthFailure::NotYetValid => ffi::X509_V_ERR_CERT_NOT_YET_VALID,
            AuthFailure::Revoked => ffi::X509_V_ERR_CERT_REVOKED,
            AuthFailure::CrlExpired => ffi::X509_V_ERR_CRL_HAS_EXPIRED,
        }
    }

    /// OpenSSL's own text for this failure, as NGINX puts it after `FAILED:`.
    pub fn openssl_text(self) -> String {
        if self == AuthFailure::NoCertificate {
            return "no certificate".into();
        }
        self.verify_result().error_string().to_string()
    }

    pub fn verify_result(self) -> X509VerifyResult {
        // SAFETY: the code is one of OpenSSL's own X509_V_ERR_* constants above, and OpenSSL
        // accepts any verify code (unknown ones print as "unknown certificate verification error").
        unsafe { X509VerifyResult::from_raw(self.verify_code()) }
    }

    /// Label value for metrics (`reason`): the 401 reason with `_` for spaces.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::NoCertificate => "no_certificate",
            AuthFailure::UnknownCa => "unknown_ca",
            AuthFailure::Expired => "certificate_expired",
            AuthFailure::NotYetValid => "certificate_not_yet_valid",
            AuthFailure::Revoked => "certificate_revoked",
            AuthFailure::CrlExpired => "crl_expired",
            AuthFailure::RevocationUnknown => "revocation_status_unknown",
            AuthFailure::BadCertificate => "bad_certificate",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_round_trips_through_its_openssl_code() {
        for f in [
            AuthFailure::UnknownCa,
            AuthFailure::Expired,
            AuthFailure::NotYetValid,
            AuthFailure::Revoked,
            AuthFailure::CrlExpired,
            AuthFailure::BadCertificate,
        ] {
            assert_eq!(AuthFailure::from_verify_code(f.verify_code()), f);
        }
    }

    #[test]
    fn reasons_are_the_contract_strings() {
        assert_eq!(AuthFailure::Revoked.reason(), "certificate revoked");
        assert_eq!(AuthFailure::UnknownCa.reason(), "unknown CA");
        assert_eq!(AuthFailure::CrlExpired.reason(), "CRL expired");
        assert_eq!(AuthFailure::Revoked.openssl_text(), "certificate revoked");
        assert_eq!(
            AuthFailure::Expired.openssl_text(),
            "certificate has expired"
        );
    }
}
