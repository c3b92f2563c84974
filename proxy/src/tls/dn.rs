//! STUB (replaced by the identity work): RFC 2253 printing.
use openssl::asn1::Asn1StringRef;
use openssl::x509::X509NameRef;
pub fn rfc2253(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| format!("{}={}", e.object().nid().short_name().unwrap_or("?"), e.data().as_utf8().map(|s| s.to_string()).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}
pub fn rfc2253_value(value: &Asn1StringRef) -> String {
    value.as_utf8().map(|s| s.to_string()).unwrap_or_default()
}
