//! STUB (replaced by the identity work).
use openssl::nid::Nid;
use openssl::x509::X509Ref;
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub subject_dn: String, pub issuer_dn: String,
    pub user: Option<String>, pub user_rfc2253: Option<String>,
    pub organizations: Vec<String>, pub organizations_rfc2253: Vec<String>,
    pub org_units: Vec<String>, pub org_units_rfc2253: Vec<String>,
    pub dns_sans: Vec<String>, pub uri_sans: Vec<String>, pub email_sans: Vec<String>, pub ip_sans: Vec<std::net::IpAddr>,
    pub serial_hex: String, pub serial_decimal: String, pub fingerprint_sha256: String,
    pub not_before: i64, pub not_after: i64, pub der: Vec<u8>,
}
#[derive(Debug, thiserror::Error)]
#[error("invalid identity: {0}")]
pub struct IdentityError(pub String);
impl Identity {
    pub fn from_x509(cert: &X509Ref) -> Result<Identity, IdentityError> {
        let vals = |nid| cert.subject_name().entries_by_nid(nid).map(|e| e.data().as_utf8().map(|s| s.to_string()).unwrap_or_default()).collect::<Vec<_>>();
        let o = vals(Nid::ORGANIZATIONNAME);
        let ou = vals(Nid::ORGANIZATIONALUNITNAME);
        let cn = vals(Nid::COMMONNAME).pop();
        Ok(Identity { subject_dn: crate::tls::dn::rfc2253(cert.subject_name()), issuer_dn: crate::tls::dn::rfc2253(cert.issuer_name()),
          user: cn.clone(), user_rfc2253: cn, organizations: o.clone(), organizations_rfc2253: o, org_units: ou.clone(), org_units_rfc2253: ou,
          der: cert.to_der().unwrap_or_default(), ..Default::default() })
    }
    pub fn pem(&self) -> String { String::new() }
}
