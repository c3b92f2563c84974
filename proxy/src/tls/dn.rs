//! Distinguished names printed exactly as OpenSSL prints them with `XN_FLAG_RFC2253`, which is
//! what NGINX puts in `$ssl_client_s_dn` / `$ssl_client_i_dn` and Envoy in XFCC `Subject=`.
//!
//! The `openssl` crate has no binding for `X509_NAME_print_ex` / `ASN1_STRING_print_ex`, so they
//! are declared here; the libcrypto that `openssl-sys` links exports both.
//!
//! What the flags mean for the output: RDNs in reverse encoding order, `,` between RDNs and `+`
//! inside a multi-valued RDN, short names (`CN`, `O`, …; dotted OID for unknown attributes, whose
//! value is dumped as `#<hex DER>`), the RFC 2253 escapes `\, \+ \" \\ \< \> \;`, a leading `#`
//! or space and a trailing space escaped with `\`, and control characters and every byte of the
//! UTF-8 form >= 0x80 as `\XX`. The result is therefore plain ASCII without control characters,
//! usable as an HTTP header value as is.

use std::os::raw::{c_char, c_int, c_ulong};

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1StringRef;
use openssl::x509::X509NameRef;
use openssl_sys as ffi;

/// `ASN1_STRFLGS_RFC2253` = `ESC_2253 | ESC_CTRL | ESC_MSB | UTF8_CONVERT | DUMP_UNKNOWN | DUMP_DER`
/// (`include/openssl/asn1.h`).
pub const ASN1_STRFLGS_RFC2253: c_ulong = 0x0001 | 0x0002 | 0x0004 | 0x0010 | 0x0100 | 0x0200;
/// `XN_FLAG_RFC2253` = `ASN1_STRFLGS_RFC2253 | XN_FLAG_SEP_COMMA_PLUS | XN_FLAG_DN_REV |
/// XN_FLAG_FN_SN | XN_FLAG_DUMP_UNKNOWN_FIELDS` (`include/openssl/x509.h`).
pub const XN_FLAG_RFC2253: c_ulong = ASN1_STRFLGS_RFC2253 | (1 << 16) | (1 << 20) | (1 << 24);

extern "C" {
    fn X509_NAME_print_ex(
        out: *mut ffi::BIO,
        nm: *const ffi::X509_NAME,
        indent: c_int,
        flags: c_ulong,
    ) -> c_int;
    fn ASN1_STRING_print_ex(
        out: *mut ffi::BIO,
        s: *const ffi::ASN1_STRING,
        flags: c_ulong,
    ) -> c_int;
}

/// An owned memory BIO, freed on drop.
struct MemBio(*mut ffi::BIO);

impl MemBio {
    fn new() -> Option<MemBio> {
        openssl::init();
        // SAFETY: BIO_s_mem returns a static method table; BIO_new returns an owned BIO or NULL,
        // and NULL is checked before the pointer is wrapped.
        let bio = unsafe { ffi::BIO_new(ffi::BIO_s_mem()) };
        (!bio.is_null()).then_some(MemBio(bio))
    }

    /// Everything written so far, as text (the printers only write ASCII with these flags;
    /// anything else would be replaced, never trusted).
    fn contents(&self) -> String {
        let mut data: *mut c_char = std::ptr::null_mut();
        // SAFETY: self.0 is a live memory BIO; BIO_get_mem_data stores a pointer to its internal
        // buffer (valid until the next write or free) and returns its length.
        let len = unsafe { ffi::BIO_get_mem_data(self.0, &mut data) };
        if data.is_null() || len <= 0 {
            return String::new();
        }
        // SAFETY: data points to `len` initialised bytes owned by the BIO, which outlives this
        // borrow; they are copied out before anything else touches the BIO.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, len as usize) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

impl Drop for MemBio {
    fn drop(&mut self) {
        // SAFETY: self.0 was returned by BIO_new, is owned by us alone and is freed once.
        unsafe { ffi::BIO_free_all(self.0) };
    }
}

/// The name as `openssl x509 -nameopt RFC2253` (and NGINX `$ssl_client_s_dn`) prints it.
/// An empty name gives an empty string.
pub fn rfc2253(name: &X509NameRef) -> String {
    let Some(bio) = MemBio::new() else {
        return String::new();
    };
    // SAFETY: bio.0 is a live memory BIO and name.as_ptr() a valid X509_NAME borrowed for the
    // duration of the call; X509_NAME_print_ex only reads the name.
    let written = unsafe { X509_NAME_print_ex(bio.0, name.as_ptr(), 0, XN_FLAG_RFC2253) };
    if written < 0 {
        return String::new();
    }
    bio.contents()
}

/// One attribute value escaped exactly as it appears inside [`rfc2253`] output (for attributes
/// OpenSSL knows by name, e.g. CN, O, OU; unknown OIDs are hex-dumped inside a DN instead).
pub fn rfc2253_value(value: &Asn1StringRef) -> String {
    let Some(bio) = MemBio::new() else {
        return String::new();
    };
    // SAFETY: bio.0 is a live memory BIO and value.as_ptr() a valid ASN1_STRING borrowed for
    // the duration of the call; ASN1_STRING_print_ex only reads it.
    let written = unsafe { ASN1_STRING_print_ex(bio.0, value.as_ptr(), ASN1_STRFLGS_RFC2253) };
    if written < 0 {
        return String::new();
    }
    bio.contents()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec};
    use openssl::nid::Nid;

    fn spec(subject: &[(&str, &str)]) -> CertSpec {
        CertSpec::with_subject(subject)
    }

    /// `openssl x509 -noout -subject -nameopt RFC2253`, without the `subject=` prefix.
    fn cli_subject(cert: &openssl::x509::X509Ref) -> String {
        let line = crate::tls::identity::tests::cli(cert, &["-subject", "-nameopt", "RFC2253"]);
        line.strip_prefix("subject=")
            .expect("subject= prefix")
            .to_string()
    }

    fn nasty_subjects() -> Vec<Vec<(&'static str, &'static str)>> {
        vec![
            vec![
                ("C", "US"),
                ("O", "Veertu"),
                ("O", "Anka Build, Inc."),
                ("OU", "CI"),
                ("CN", "node1"),
            ],
            vec![("O", "Müller GmbH"), ("CN", "Müller")],
            vec![("CN", "a \"quoted\" + plus \\ back <lt> >gt; semi")],
            vec![("CN", "#leading hash")],
            vec![("CN", " leading space")],
            vec![("CN", "trailing space ")],
            vec![("CN", " ")],
            vec![("CN", "=equals=")],
            vec![("CN", "ctl\r\n\tx\u{7f}y")],
            vec![
                ("O", "first"),
                ("CN", "a"),
                ("+UID", "b+c"),
                ("+1.2.3.4", "x"),
            ],
            vec![("1.2.3.4.5", "unknown oid"), ("CN", "x")],
            vec![
                ("DC", "org"),
                ("DC", "example"),
                ("serialNumber", "1234"),
                ("CN", "日本語"),
            ],
            vec![("CN", "first"), ("CN", "second")],
            vec![],
        ]
    }

    #[test]
    fn full_dn_is_byte_identical_to_the_openssl_cli() {
        let ca = pki::self_signed_ca(&{
            let mut s = spec(&[("O", "Test, CA"), ("CN", "Root \"CA\"")]);
            s.is_ca = true;
            s.eku = false;
            s
        })
        .expect("ca");
        for subject in nasty_subjects() {
            let issued = pki::issue(&spec(&subject), &ca).expect("issue");
            let ours = rfc2253(issued.cert.subject_name());
            assert_eq!(ours, cli_subject(&issued.cert), "subject {subject:?}");
            assert!(
                ours.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "not header-safe: {ours:?}"
            );
            assert_eq!(
                rfc2253(issued.cert.issuer_name()),
                r#"CN=Root \"CA\",O=Test\, CA"#
            );
        }
    }

    #[test]
    fn known_outputs() {
        let ca = pki::self_signed_ca(&{
            let mut s = spec(&[("CN", "ca")]);
            s.is_ca = true;
            s
        })
        .expect("ca");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("C", "US"),
                    ("O", "Acme, Inc."),
                    ("OU", "eng"),
                    ("CN", "svc-a"),
                ],
                r"CN=svc-a,OU=eng,O=Acme\, Inc.,C=US",
            ),
            (&[("CN", "Müller")], r"CN=M\C3\BCller"),
            (&[("CN", "#x y ")], r"CN=\#x y\ "),
            (&[("CN", "a"), ("+UID", "b")], "UID=b+CN=a"),
        ];
        for (subject, want) in cases {
            let c = pki::issue(&spec(subject), &ca).expect("issue");
            assert_eq!(rfc2253(c.cert.subject_name()), *want);
        }
    }

    #[test]
    fn single_values_match_their_place_in_the_dn() {
        let ca = pki::self_signed_ca(&{
            let mut s = spec(&[("CN", "ca")]);
            s.is_ca = true;
            s
        })
        .expect("ca");
        for subject in nasty_subjects() {
            let c = pki::issue(&spec(&subject), &ca).expect("issue");
            let name = c.cert.subject_name();
            let dn = rfc2253(name);
            // Rebuild the DN from the escaped values (entries reversed, `+` where the RDN set
            // repeats) and compare: every known attribute's value must appear exactly as inside.
            let entries: Vec<_> = name.entries().collect();
            for nid in [
                Nid::COMMONNAME,
                Nid::ORGANIZATIONNAME,
                Nid::ORGANIZATIONALUNITNAME,
            ] {
                for e in name.entries_by_nid(nid) {
                    let sn = nid.short_name().expect("short name");
                    let piece = format!("{sn}={}", rfc2253_value(e.data()));
                    assert!(dn.contains(&piece), "{piece:?} not in {dn:?}");
                }
            }
            let rebuilt: Vec<String> = entries
                .iter()
                .rev()
                .filter(|e| e.object().nid() != Nid::UNDEF)
                .map(|e| {
                    format!(
                        "{}={}",
                        e.object().nid().short_name().unwrap_or("?"),
                        rfc2253_value(e.data())
                    )
                })
                .collect();
            for piece in rebuilt {
                assert!(dn.contains(&piece), "{piece:?} not in {dn:?}");
            }
        }
    }
}
