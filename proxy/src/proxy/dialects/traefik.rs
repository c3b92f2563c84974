//! Traefik's `passTLSClientCert`: `x-forwarded-tls-client-cert-info` and (with
//! `forward_cert`) `x-forwarded-tls-client-cert`, byte for byte as Go writes them.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::escape::{b64, go_query_escape};
use crate::tls::identity::Identity;

pub(super) fn headers(
    out: &mut Vec<(&'static str, String)>,
    forward_cert: bool,
    identity: Option<&Identity>,
) {
    if let Some(id) = identity {
        if forward_cert {
            out.push(("x-forwarded-tls-client-cert", b64(&id.der)));
        }
        out.push(("x-forwarded-tls-client-cert-info", traefik_info(id)));
    }
}

/// Go's `net.IP.String()`: IPv4-mapped IPv6 addresses print as dotted IPv4.
pub(super) fn go_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The subject / issuer sub-fields as Traefik writes them: `DC` (every value, encoding order),
/// then every `C`, `ST`, `L`, `O`, (subject only) `OU`, then the last `SN` (serialNumber
/// attribute) and the last `CN`; each `K=V,`, raw and unescaped, empty values skipped, the final
/// `,` trimmed. Values are read from the DER (Go's `pkix.Name` sees the same values).
pub(super) fn traefik_dn(name: &openssl::x509::X509NameRef, with_ou: bool) -> String {
    use openssl::nid::Nid;
    let vals = |nid: Nid| -> Vec<String> {
        name.entries_by_nid(nid)
            .filter_map(|e| e.data().to_string().ok())
            .collect()
    };
    let mut out = String::new();
    // Go's pkix.Name keeps DC only in `Names`, which Traefik prints with %s (empty ones too).
    for v in vals(Nid::DOMAINCOMPONENT) {
        let _ = write!(out, "DC={v},");
    }
    // Go's writePart: empty values are skipped.
    let mut put = |key: &str, values: Vec<String>| {
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            let _ = write!(out, "{key}={v},");
        }
    };
    put("C", vals(Nid::COUNTRYNAME));
    put("ST", vals(Nid::STATEORPROVINCENAME));
    put("L", vals(Nid::LOCALITYNAME));
    put("O", vals(Nid::ORGANIZATIONNAME));
    if with_ou {
        put("OU", vals(Nid::ORGANIZATIONALUNITNAME));
    }
    // Go keeps only the last serialNumber and CN (even an empty one, which is then skipped).
    put("SN", vals(Nid::SERIALNUMBER).pop().into_iter().collect());
    put("CN", vals(Nid::COMMONNAME).pop().into_iter().collect());
    out.strip_suffix(',').map(str::to_string).unwrap_or(out)
}

/// `x-forwarded-tls-client-cert-info` with every field on, for the leaf:
/// `QueryEscape(Subject="…";Issuer="…";SerialNumber="…";NB="…";NA="…";SAN="…")`.
pub(super) fn traefik_info(id: &Identity) -> String {
    let mut values = Vec::new();
    // Subject and issuer need the attribute structure, which the identity keeps only in DER.
    if let Ok(cert) = openssl::x509::X509::from_der(&id.der) {
        let subject = traefik_dn(cert.subject_name(), true);
        if !subject.is_empty() {
            values.push(format!("Subject=\"{subject}\""));
        }
        let issuer = traefik_dn(cert.issuer_name(), false);
        if !issuer.is_empty() {
            values.push(format!("Issuer=\"{issuer}\""));
        }
    }
    if !id.serial_decimal.is_empty() {
        values.push(format!("SerialNumber=\"{}\"", id.serial_decimal));
    }
    // Go: uint64(t.Unix()) — a pre-1970 time wraps, as there.
    values.push(format!("NB=\"{}\"", id.not_before as u64));
    values.push(format!("NA=\"{}\"", id.not_after as u64));
    let sans: Vec<String> = id
        .dns_sans
        .iter()
        .cloned()
        .chain(id.email_sans.iter().cloned())
        .chain(id.ip_sans.iter().map(go_ip))
        .chain(id.uri_sans.iter().cloned())
        .collect();
    if !sans.is_empty() {
        values.push(format!("SAN=\"{}\"", sans.join(",")));
    }
    go_query_escape(&values.join(";"))
}
