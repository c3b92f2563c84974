//! The identity read from a verified client certificate: CN is the user, O (or OU) the groups.
//!
//! Values are read structurally from the certificate (name entries and SAN entries), never by
//! parsing a printed DN. Every value the policy can match on (CN, O, OU) and every SAN is
//! refused when it holds a NUL byte: such a certificate is `bad certificate`, since C-string
//! consumers would read a different name than we match on (the classic NUL-prefix attack).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use openssl::asn1::Asn1TimeRef;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509Ref};

use crate::tls::dn::{rfc2253, rfc2253_value};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Subject DN, RFC 2253 exactly as OpenSSL/NGINX print it.
    pub subject_dn: String,
    /// Issuer DN, same format.
    pub issuer_dn: String,
    /// Subject CN (the last CN if several), raw UTF-8.
    pub user: Option<String>,
    /// That CN escaped as it appears inside `subject_dn`.
    pub user_rfc2253: Option<String>,
    /// Every subject O value, in certificate (encoding) order, raw UTF-8.
    pub organizations: Vec<String>,
    /// The same values escaped as inside `subject_dn`.
    pub organizations_rfc2253: Vec<String>,
    /// Every subject OU value, in certificate order, raw UTF-8.
    pub org_units: Vec<String>,
    pub org_units_rfc2253: Vec<String>,
    pub dns_sans: Vec<String>,
    pub uri_sans: Vec<String>,
    pub email_sans: Vec<String>,
    pub ip_sans: Vec<IpAddr>,
    /// Upper-case hex as `openssl x509 -serial` prints it (two digits per byte, `-` if negative).
    pub serial_hex: String,
    /// Decimal, as Go's `big.Int.String()` (Traefik) prints it.
    pub serial_decimal: String,
    /// Lower-case hex SHA-256 of the DER.
    pub fingerprint_sha256: String,
    /// The same SHA-256, as bytes: a fixed-size key for per-request bookkeeping.
    pub fingerprint: [u8; 32],
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the certificate's {0} holds a NUL byte")]
    NulByte(&'static str),
    #[error("the certificate's {0} cannot be read: {1}")]
    Unreadable(&'static str, String),
    #[error("the certificate has a malformed {0} subject alternative name")]
    MalformedSan(&'static str),
}

impl Identity {
    pub fn from_x509(cert: &X509Ref) -> Result<Identity, IdentityError> {
        let subject = cert.subject_name();
        let (cns, cns_escaped) = values(subject, Nid::COMMONNAME, "subject CN")?;
        let (organizations, organizations_rfc2253) =
            values(subject, Nid::ORGANIZATIONNAME, "subject O")?;
        let (org_units, org_units_rfc2253) =
            values(subject, Nid::ORGANIZATIONALUNITNAME, "subject OU")?;

        let mut dns_sans = Vec::new();
        let mut uri_sans = Vec::new();
        let mut email_sans = Vec::new();
        let mut ip_sans = Vec::new();
        if let Some(sans) = cert.subject_alt_names() {
            for san in sans.iter() {
                if let Some(dns) = san.dnsname() {
                    dns_sans.push(ia5(dns, "DNS")?);
                } else if let Some(uri) = san.uri() {
                    uri_sans.push(ia5(uri, "URI")?);
                } else if let Some(email) = san.email() {
                    email_sans.push(ia5(email, "email")?);
                } else if let Some(ip) = san.ipaddress() {
                    ip_sans.push(ip_from_bytes(ip).ok_or(IdentityError::MalformedSan("IP"))?);
                }
            }
        }

        let serial = cert
            .serial_number()
            .to_bn()
            .map_err(|e| IdentityError::Unreadable("serial number", e.to_string()))?;
        let serial_decimal = serial
            .to_dec_str()
            .map_err(|e| IdentityError::Unreadable("serial number", e.to_string()))?
            .to_string();
        let serial_hex = serial_hex(&serial)?;
        let der = cert
            .to_der()
            .map_err(|e| IdentityError::Unreadable("encoding", e.to_string()))?;
        let digest = cert
            .digest(MessageDigest::sha256())
            .map_err(|e| IdentityError::Unreadable("fingerprint", e.to_string()))?;
        let fingerprint = <[u8; 32]>::try_from(&digest[..])
            .map_err(|e| IdentityError::Unreadable("fingerprint", e.to_string()))?;

        Ok(Identity {
            subject_dn: rfc2253(subject),
            issuer_dn: rfc2253(cert.issuer_name()),
            user: cns.last().cloned(),
            user_rfc2253: cns_escaped.last().cloned(),
            organizations,
            organizations_rfc2253,
            org_units,
            org_units_rfc2253,
            dns_sans,
            uri_sans,
            email_sans,
            ip_sans,
            serial_hex,
            serial_decimal,
            fingerprint_sha256: hex::encode(fingerprint),
            fingerprint,
            not_before: unix_time(cert.not_before(), "notBefore")?,
            not_after: unix_time(cert.not_after(), "notAfter")?,
            der,
        })
    }

    /// The leaf as PEM, exactly as `openssl x509` writes it (64-column base64, trailing newline).
    pub fn pem(&self) -> String {
        pem_encode(&self.der)
    }
}

/// What a refused client certificate claims, for the refusal's log line and the access log:
/// its chain did not verify, so none of this is an identity, only the client's say-so. Rendered
/// only when a certificate is refused, so a verified handshake never pays for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presented {
    /// As [`Identity::subject_dn`]: RFC 2253, plain ASCII, control characters escaped.
    pub subject_dn: String,
    pub issuer_dn: String,
    /// As [`Identity::serial_hex`]; empty when the serial cannot be read.
    pub serial_hex: String,
}

impl Presented {
    pub fn of(cert: &X509Ref) -> Presented {
        let serial = cert.serial_number().to_bn().ok();
        Presented {
            subject_dn: rfc2253(cert.subject_name()),
            issuer_dn: rfc2253(cert.issuer_name()),
            serial_hex: serial.and_then(|s| serial_hex(&s).ok()).unwrap_or_default(),
        }
    }
}

/// PEM of a DER certificate, line-wrapped at 64 like OpenSSL (and Go's `pem.Encode`).
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Every value of `nid`, raw and RFC 2253-escaped, in encoding order.
fn values(
    name: &X509NameRef,
    nid: Nid,
    what: &'static str,
) -> Result<(Vec<String>, Vec<String>), IdentityError> {
    let mut raw = Vec::new();
    let mut escaped = Vec::new();
    for entry in name.entries_by_nid(nid) {
        let data = entry.data();
        let value = data
            .to_string()
            .map_err(|e| IdentityError::Unreadable(what, e.to_string()))?;
        if value.contains('\0') {
            return Err(IdentityError::NulByte(what));
        }
        raw.push(value);
        escaped.push(rfc2253_value(data));
    }
    Ok((raw, escaped))
}

/// DNS, URI and email SANs are IA5Strings: ASCII. NUL or anything outside ASCII is malformed.
fn ia5(value: &str, what: &'static str) -> Result<String, IdentityError> {
    if value.contains('\0') {
        return Err(IdentityError::NulByte(match what {
            "DNS" => "DNS SAN",
            "URI" => "URI SAN",
            _ => "email SAN",
        }));
    }
    if !value.is_ascii() {
        return Err(IdentityError::MalformedSan(what));
    }
    Ok(value.to_string())
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// `openssl x509 -serial` (i2a_ASN1_INTEGER): two upper-case hex digits per byte, `00` for zero.
fn serial_hex(serial: &openssl::bn::BigNumRef) -> Result<String, IdentityError> {
    if serial.num_bits() == 0 {
        return Ok("00".into());
    }
    let hex = serial
        .to_hex_str()
        .map_err(|e| IdentityError::Unreadable("serial number", e.to_string()))?;
    Ok(hex.to_ascii_uppercase())
}

fn unix_time(t: &Asn1TimeRef, what: &'static str) -> Result<i64, IdentityError> {
    crate::time::asn1_unix_checked(t).map_err(|e| IdentityError::Unreadable(what, e.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pki::{self, CertSpec, Issued};
    use openssl::asn1::Asn1Time;
    use std::process::Command;

    fn spec(subject: &[(&str, &str)]) -> CertSpec {
        CertSpec::with_subject(subject)
    }

    fn ca() -> Issued {
        let mut s = spec(&[("O", "certgate tests"), ("CN", "Test Root")]);
        s.is_ca = true;
        s.eku = false;
        pki::self_signed_ca(&s).expect("ca")
    }

    /// `openssl x509 -noout ARGS` on `cert`, its output without its final newline.
    pub(in crate::tls) fn cli(cert: &X509Ref, args: &[&str]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.pem");
        std::fs::write(&path, cert.to_pem().expect("pem")).expect("write");
        let out = Command::new("openssl")
            .args(["x509", "-noout"])
            .args(args)
            .arg("-in")
            .arg(&path)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Only the newline: a DN may end in an escaped space.
        let text = String::from_utf8(out.stdout).expect("utf8");
        text.strip_suffix('\n').unwrap_or(&text).to_string()
    }

    #[test]
    fn reads_every_field() {
        let ca = ca();
        let mut s = spec(&[
            ("C", "DE"),
            ("O", "Veertu"),
            ("O", "Anka Build, Inc."),
            ("OU", "CI"),
            ("OU", "Nodes"),
            ("CN", "first"),
            ("CN", "Müller \"M\""),
        ]);
        s.dns_names = vec!["a.example".into(), "b.example".into()];
        s.uris = vec!["spiffe://td/ns/a".into()];
        s.emails = vec!["m@example.com".into()];
        s.ip_addrs = vec!["10.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
        let c = pki::issue(&s, &ca).expect("issue");
        let id = Identity::from_x509(&c.cert).expect("identity");

        assert_eq!(id.user.as_deref(), Some("Müller \"M\""));
        assert_eq!(id.user_rfc2253.as_deref(), Some(r#"M\C3\BCller \"M\""#));
        assert_eq!(id.organizations, ["Veertu", "Anka Build, Inc."]);
        assert_eq!(id.organizations_rfc2253, ["Veertu", r"Anka Build\, Inc."]);
        assert_eq!(id.org_units, ["CI", "Nodes"]);
        assert_eq!(id.org_units_rfc2253, ["CI", "Nodes"]);
        assert_eq!(
            id.subject_dn,
            r#"CN=M\C3\BCller \"M\",CN=first,OU=Nodes,OU=CI,O=Anka Build\, Inc.,O=Veertu,C=DE"#
        );
        assert_eq!(id.issuer_dn, "CN=Test Root,O=certgate tests");
        assert_eq!(id.dns_sans, ["a.example", "b.example"]);
        assert_eq!(id.uri_sans, ["spiffe://td/ns/a"]);
        assert_eq!(id.email_sans, ["m@example.com"]);
        assert_eq!(
            id.ip_sans,
            [
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "::1".parse().expect("ip")
            ]
        );

        // Serial and fingerprint as the CLI prints them.
        assert_eq!(
            format!("serial={}", id.serial_hex),
            cli(&c.cert, &["-serial"])
        );
        let fp = cli(&c.cert, &["-fingerprint", "-sha256"]);
        let fp = fp
            .split_once('=')
            .expect("fingerprint=")
            .1
            .replace(':', "")
            .to_lowercase();
        assert_eq!(id.fingerprint_sha256, fp);
        assert_eq!(hex::encode(id.fingerprint), fp);
        let bn = openssl::bn::BigNum::from_hex_str(&id.serial_hex).expect("hex");
        assert_eq!(id.serial_decimal, bn.to_dec_str().expect("dec").to_string());

        // Validity in unix seconds, against the CLI's `-dates` via openssl's own parser.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!(
            (id.not_before - (now - 86_400)).abs() < 120,
            "{}",
            id.not_before
        );
        assert!(
            (id.not_after - (now + 30 * 86_400)).abs() < 120,
            "{}",
            id.not_after
        );
        let nb = Asn1Time::from_unix(id.not_before).expect("t");
        assert_eq!(
            c.cert.not_before().compare(&nb).expect("cmp"),
            std::cmp::Ordering::Equal
        );

        // DER and PEM.
        assert_eq!(id.der, c.cert.to_der().expect("der"));
        assert_eq!(
            id.pem().as_bytes(),
            c.cert.to_pem().expect("pem").as_slice()
        );
    }

    #[test]
    fn serials_print_like_the_cli() {
        // Small, zero-padded and high-bit serials through the real CLI.
        let ca = ca();
        for _ in 0..8 {
            let c = pki::issue(&spec(&[("CN", "x")]), &ca).expect("issue");
            let id = Identity::from_x509(&c.cert).expect("identity");
            assert_eq!(
                format!("serial={}", id.serial_hex),
                cli(&c.cert, &["-serial"])
            );
            assert_eq!(id.serial_hex.len(), 32);
        }
        let mut b = openssl::x509::X509Builder::new().expect("builder");
        for (serial, hex) in [("0", "00"), ("10", "0A"), ("4096", "1000"), ("255", "FF")] {
            let bn = openssl::bn::BigNum::from_dec_str(serial).expect("bn");
            b.set_serial_number(&bn.to_asn1_integer().expect("int"))
                .expect("set");
            let got = serial_hex(&bn).expect("hex");
            assert_eq!(got, hex);
        }
    }

    #[test]
    fn no_cn_no_o() {
        let ca = ca();
        let c = pki::issue(&spec(&[("C", "US")]), &ca).expect("issue");
        let id = Identity::from_x509(&c.cert).expect("identity");
        assert_eq!(id.user, None);
        assert_eq!(id.user_rfc2253, None);
        assert!(id.organizations.is_empty() && id.org_units.is_empty());
        assert_eq!(id.subject_dn, "C=US");
    }

    #[test]
    fn nul_bytes_are_refused() {
        let ca = ca();
        for (subject, what) in [
            (vec![("CN", "admin\0.evil")], "subject CN"),
            (vec![("CN", "ok"), ("O", "DevOps\0")], "subject O"),
            (vec![("CN", "ok"), ("OU", "\0")], "subject OU"),
            // Even when an earlier CN is the bad one: never pick around it.
            (vec![("CN", "a\0"), ("CN", "b")], "subject CN"),
        ] {
            let c = pki::issue(&spec(&subject), &ca).expect("issue");
            assert_eq!(
                Identity::from_x509(&c.cert),
                Err(IdentityError::NulByte(what)),
                "{subject:?}"
            );
        }
        let mut s = spec(&[("CN", "ok")]);
        s.dns_names = vec!["good.example\0.evil".into()];
        if let Ok(c) = pki::issue(&s, &ca) {
            assert_eq!(
                Identity::from_x509(&c.cert),
                Err(IdentityError::NulByte("DNS SAN"))
            );
        }
    }

    #[test]
    fn a_presented_certificate_reads_as_its_identity_would() {
        let ca = ca();
        let c = pki::issue(&spec(&[("O", "ci"), ("CN", "node \"7\"\nx=1")]), &ca).expect("issue");
        let id = Identity::from_x509(&c.cert).expect("identity");
        let p = Presented::of(&c.cert);
        assert_eq!(p.subject_dn, id.subject_dn);
        assert_eq!(p.subject_dn, r#"CN=node \"7\"\0Ax=1,O=ci"#);
        assert_eq!(p.issuer_dn, "CN=Test Root,O=certgate tests");
        assert_eq!(p.serial_hex, id.serial_hex);
        assert_eq!(
            format!("serial={}", p.serial_hex),
            cli(&c.cert, &["-serial"])
        );
        // A NUL in the CN makes no identity, but the refusal can still say who it claimed to be.
        let nul = pki::issue(&spec(&[("CN", "admin\0.evil")]), &ca).expect("issue");
        assert!(Identity::from_x509(&nul.cert).is_err());
        assert_eq!(Presented::of(&nul.cert).subject_dn, r"CN=admin\00.evil");
    }

    #[test]
    fn control_characters_stay_raw_but_escaped_in_the_dn() {
        let ca = ca();
        let c =
            pki::issue(&spec(&[("O", "x\r\nInjected: 1"), ("CN", "a\nb")]), &ca).expect("issue");
        let id = Identity::from_x509(&c.cert).expect("identity");
        assert_eq!(id.user.as_deref(), Some("a\nb"));
        assert_eq!(id.user_rfc2253.as_deref(), Some(r"a\0Ab"));
        assert_eq!(id.organizations_rfc2253, [r"x\0D\0AInjected: 1"]);
        assert!(id.subject_dn.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn bmp_and_other_string_types_convert_to_utf8() {
        // A CN written as BMPString (UTF-16BE): raw value is UTF-8, escaped form as OpenSSL
        // prints. The builder takes the raw BMP bytes as &str: "\0Z\0o" + "é" (C3 A9) is
        // Z, o, U+C3A9.
        let ca = ca();
        let c = pki::issue(&spec(&[("CN", "x")]), &ca).expect("issue");
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_nid_with_type(
            Nid::COMMONNAME,
            "\0Z\0oé",
            openssl::asn1::Asn1Type::BMPSTRING,
        )
        .expect("bmp");
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().expect("builder");
        b.set_version(2).expect("v");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(ca.cert.subject_name()).expect("issuer");
        b.set_pubkey(&c.key).expect("key");
        b.set_not_before(&Asn1Time::from_unix(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::from_unix(1).expect("t"))
            .expect("na");
        b.sign(&ca.key, MessageDigest::sha256()).expect("sign");
        let cert = b.build();
        let id = Identity::from_x509(&cert).expect("identity");
        assert_eq!(id.user.as_deref(), Some("Zo\u{c3a9}"));
        assert_eq!(id.user_rfc2253.as_deref(), Some(r"Zo\EC\8E\A9"));
        assert_eq!(id.subject_dn, r"CN=Zo\EC\8E\A9");
        assert_eq!((id.not_before, id.not_after), (0, 1));
    }
}
