//! Whether the certificates of `tls.cert` and `tls.client_ca` can do the job the config gives
//! them, read from their extensions as OpenSSL's verifier reads them. Each of these files loads
//! without complaint from OpenSSL when it holds the wrong certificate (a server certificate as
//! the client CA, a client certificate as the server's, a chain written CA-first), and then
//! every handshake fails with a reason that points nowhere near the file.

use std::path::Path;

use foreign_types::ForeignTypeRef;
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::{X509ExtendedKeyUsage, X509KeyUsage, X509Ref, X509};

use super::{terr, TrustError};
use crate::tls::dn::rfc2253;

/// Why `cert` cannot issue the certificates a verifier chains through it, or `None` when it
/// can. Mirrors OpenSSL's `X509_check_ca`: a keyUsage without keyCertSign, or a
/// basicConstraints without CA:TRUE, rules a certificate out; without basicConstraints only a
/// v1 self-signed root, a keyUsage with keyCertSign or a Netscape CA type makes it a CA.
pub(crate) fn not_a_ca(cert: &X509Ref) -> Option<&'static str> {
    use openssl_sys::{EXFLAG_BCONS, EXFLAG_CA, EXFLAG_NSCERT, EXFLAG_SS, EXFLAG_V1};
    // SAFETY: `cert` is a live X509 for the whole call; X509_get_extension_flags only reads
    // (and on first use caches) the certificate's parsed extensions, as every verification
    // of it does, and keeps no pointer.
    let flags = unsafe { openssl_sys::X509_get_extension_flags(cert.as_ptr()) };
    let key_usage = cert.key_usage();
    let cert_sign = key_usage.map(|ku| ku.contains(X509KeyUsage::KEY_CERT_SIGN));
    if flags & EXFLAG_BCONS != 0 {
        if flags & EXFLAG_CA == 0 {
            return Some("no basicConstraints CA:TRUE");
        }
        return (cert_sign == Some(false)).then_some("its keyUsage has no keyCertSign");
    }
    let v1_root = flags & (EXFLAG_V1 | EXFLAG_SS) == EXFLAG_V1 | EXFLAG_SS;
    if v1_root || cert_sign == Some(true) || flags & EXFLAG_NSCERT != 0 {
        return None;
    }
    Some("no basicConstraints CA:TRUE")
}

/// Whether a client could present `cert` itself: every certificate of the bundle is a trust
/// anchor (partial chains), so a leaf in it verifies as itself when its usages allow a TLS
/// client (OpenSSL's `ssl_client` purpose, which a server checks the client's leaf against).
fn client_may_present(cert: &X509Ref) -> bool {
    let eku_ok = cert
        .extended_key_usage()
        .is_none_or(|eku| eku.contains(X509ExtendedKeyUsage::SSL_CLIENT));
    let ku_ok = cert.key_usage().is_none_or(|ku| {
        ku.intersects(X509KeyUsage::DIGITAL_SIGNATURE | X509KeyUsage::KEY_AGREEMENT)
    });
    eku_ok && ku_ok
}

/// One certificate of the bundle that is no CA.
struct NotCa {
    /// 1-based, in file order, as an operator counts the PEM blocks.
    number: usize,
    subject: String,
    reason: &'static str,
    /// A client presenting exactly this certificate is still let in.
    presentable: bool,
}

fn not_cas(certs: &[X509]) -> Vec<NotCa> {
    certs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            not_a_ca(c).map(|reason| NotCa {
                number: i + 1,
                subject: rfc2253(c.subject_name()),
                reason,
                presentable: client_may_present(c),
            })
        })
        .collect()
}

/// Refuses a `tls.client_ca` bundle against which no client certificate can ever verify: no
/// certificate of it is a CA, and none could be presented by a client as itself. Such a
/// listener would refuse every client with `unknown CA`/`bad certificate` while looking
/// healthy; a bundle with at least one usable certificate loads, and [`client_ca_warnings`]
/// names the others.
pub(super) fn check_client_ca(file: &Path, certs: &[X509]) -> Result<(), TrustError> {
    let bad = not_cas(certs);
    if bad.len() < certs.len() || bad.iter().any(|b| b.presentable) {
        return Ok(());
    }
    let each: Vec<String> = bad
        .iter()
        .map(|b| {
            format!(
                "certificate {} (subject {}) is not a CA certificate ({})",
                b.number, b.subject, b.reason
            )
        })
        .collect();
    Err(terr(
        file,
        format!(
            "tls.client_ca: {}; client certificates cannot chain to {}, and its usages do not let a client present {} as its own, so no client can be verified; point client_ca at your CA's certificate",
            each.join("; "),
            if bad.len() == 1 { "it" } else { "them" },
            if bad.len() == 1 { "it" } else { "one" },
        ),
    ))
}

/// One warning per certificate of a loaded `tls.client_ca` bundle that is not a CA (the bundle
/// as a whole still verifies someone, or it would not have loaded).
pub(crate) fn client_ca_warnings(file: &Path, certs: &[X509]) -> Vec<String> {
    let bad = not_cas(certs);
    let has_ca = bad.len() < certs.len();
    bad.iter()
        .map(|b| {
            format!(
                "tls.client_ca: {}: certificate {} (subject {}) is not a CA certificate ({}); client certificates cannot chain to it{}; {}",
                file.display(),
                b.number,
                b.subject,
                b.reason,
                if b.presentable {
                    " (only a client presenting this very certificate is let in)"
                } else {
                    ""
                },
                if has_ca {
                    "remove it from the bundle"
                } else {
                    "point client_ca at your CA's certificate"
                }
            )
        })
        .collect()
}

/// The TLS names of the usages in an extendedKeyUsage, for messages.
fn eku_names(eku: X509ExtendedKeyUsage) -> Vec<&'static str> {
    [
        (X509ExtendedKeyUsage::SSL_SERVER, "serverAuth"),
        (X509ExtendedKeyUsage::SSL_CLIENT, "clientAuth"),
        (X509ExtendedKeyUsage::SMIME, "emailProtection"),
        (X509ExtendedKeyUsage::CODE_SIGN, "codeSigning"),
        (X509ExtendedKeyUsage::OCSP_SIGN, "OCSPSigning"),
        (X509ExtendedKeyUsage::TIMESTAMP, "timeStamping"),
        (X509ExtendedKeyUsage::ANYEKU, "anyExtendedKeyUsage"),
    ]
    .into_iter()
    .filter(|(bit, _)| eku.contains(*bit))
    .map(|(_, name)| name)
    .collect()
}

/// A server certificate whose extendedKeyUsage leaves out serverAuth: OpenSSL, browsers, curl,
/// Go and Java clients all refuse it (`unsupported certificate purpose`), so every client's
/// handshake would fail. A warning, not an error: a client that checks no purpose still works.
pub(crate) fn server_cert_warning(file: &Path, cert: &X509Ref) -> Option<String> {
    let eku = cert.extended_key_usage()?;
    if eku.contains(X509ExtendedKeyUsage::SSL_SERVER) {
        return None;
    }
    let names = eku_names(eku);
    Some(format!(
        "tls.cert: {}: the server certificate (subject {}) has an extendedKeyUsage without serverAuth ({}); TLS clients will refuse it; use a certificate issued for serverAuth (as `certgate pki init` makes)",
        file.display(),
        rfc2253(cert.subject_name()),
        if names.is_empty() {
            "it lists no TLS usage".to_string()
        } else {
            format!("it lists {}", names.join(", "))
        }
    ))
}

/// The error for a `tls.key` that does not match the first certificate of `tls.cert`. When a
/// later certificate of the file is the key's, the file is in the wrong order (CA first, as some
/// CAs ship their bundles), and the message says to put that one first.
pub(super) fn key_mismatch(
    cert_file: &Path,
    key_file: &Path,
    leaf: &X509Ref,
    rest: &[X509],
    key: &PKeyRef<Private>,
) -> TrustError {
    let of_key = rest.iter().position(|c| {
        c.public_key()
            .map(|public| public.public_eq(key))
            .unwrap_or(false)
    });
    match of_key {
        Some(i) => terr(
            cert_file,
            format!(
                "tls.cert: the first certificate (subject {}) does not match the key in {}, but certificate {} of the file (subject {}) does: the leaf (the certificate of that key) must come first, then its intermediates; reorder the file",
                rfc2253(leaf.subject_name()),
                key_file.display(),
                i + 2,
                rfc2253(rest[i].subject_name()),
            ),
        ),
        None => terr(
            key_file,
            format!(
                "does not match the certificate in {}; give the key the certificate was issued for",
                cert_file.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec, Issued};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyFlags;
    use openssl::x509::{X509PurposeId, X509StoreContext};

    fn spec(cn: &str) -> CertSpec {
        CertSpec::with_subject(&[("CN", cn)])
    }

    fn root() -> Issued {
        let mut s = spec("Root");
        s.is_ca = true;
        s.client_auth = false;
        s.eku = false;
        pki::self_signed_ca(&s).expect("CA")
    }

    fn server(ca: &Issued) -> Issued {
        let mut s = spec("server");
        s.client_auth = false;
        s.server_auth = true;
        pki::issue(&s, ca).expect("server")
    }

    /// Whether `leaf` verifies as a TLS client against a partial-chain store of `anchors`, as
    /// the acceptor's store is built.
    fn client_verifies(anchors: &[&X509], leaf: &X509) -> bool {
        let mut b = X509StoreBuilder::new().unwrap();
        for a in anchors {
            b.add_cert((*a).clone()).unwrap();
        }
        b.set_flags(X509VerifyFlags::PARTIAL_CHAIN).unwrap();
        b.set_purpose(X509PurposeId::SSL_CLIENT).unwrap();
        let store = b.build();
        let mut ctx = X509StoreContext::new().unwrap();
        ctx.init(&store, leaf, &Stack::new().unwrap(), |c| c.verify_cert())
            .unwrap()
    }

    #[test]
    fn a_ca_is_a_ca_and_leaves_are_not() {
        let ca = root();
        assert_eq!(not_a_ca(&ca.cert), None);
        let client = pki::issue(&spec("jenkins"), &ca).unwrap();
        assert_eq!(not_a_ca(&client.cert), Some("no basicConstraints CA:TRUE"));
        assert_eq!(
            not_a_ca(&server(&ca).cert),
            Some("no basicConstraints CA:TRUE")
        );
    }

    /// The rule behind error vs warning: what the verifier does with a leaf as an anchor.
    #[test]
    fn a_leaf_anchor_verifies_only_itself_and_only_when_a_client_may_present_it() {
        let ca = root();
        let jenkins = pki::issue(&spec("jenkins"), &ca).unwrap();
        let other = pki::issue(&spec("other"), &ca).unwrap();
        let srv = server(&ca);
        // A client leaf in the bundle pins exactly that certificate.
        assert!(client_verifies(&[&jenkins.cert], &jenkins.cert));
        assert!(!client_verifies(&[&jenkins.cert], &other.cert));
        assert!(client_may_present(&jenkins.cert));
        // A serverAuth-only leaf lets no client in, not even one presenting it.
        assert!(!client_verifies(&[&srv.cert], &srv.cert));
        assert!(!client_verifies(&[&srv.cert], &jenkins.cert));
        assert!(!client_may_present(&srv.cert));
        // And the CA verifies its clients.
        assert!(client_verifies(&[&ca.cert], &jenkins.cert));
    }

    #[test]
    fn a_bundle_is_refused_only_when_it_can_verify_nobody() {
        let ca = root();
        let srv = server(&ca);
        let jenkins = pki::issue(&spec("jenkins"), &ca).unwrap();
        let file = Path::new("/etc/certgate/ca.pem");
        let e = check_client_ca(file, std::slice::from_ref(&srv.cert))
            .unwrap_err()
            .to_string();
        for want in [
            "/etc/certgate/ca.pem: tls.client_ca: certificate 1 (subject CN=server) is not a CA certificate (no basicConstraints CA:TRUE)",
            "client certificates cannot chain to it",
            "point client_ca at your CA's certificate",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        assert!(check_client_ca(file, &[ca.cert.clone(), srv.cert.clone()]).is_ok());
        assert!(check_client_ca(file, std::slice::from_ref(&jenkins.cert)).is_ok());

        let mixed = client_ca_warnings(file, &[ca.cert.clone(), srv.cert.clone()]);
        assert_eq!(mixed.len(), 1, "{mixed:?}");
        assert!(
            mixed[0].starts_with("tls.client_ca: /etc/certgate/ca.pem: certificate 2 (subject CN=server) is not a CA certificate"),
            "{mixed:?}"
        );
        assert!(mixed[0].ends_with("remove it from the bundle"), "{mixed:?}");
        let pinned = client_ca_warnings(file, std::slice::from_ref(&jenkins.cert));
        assert_eq!(pinned.len(), 1, "{pinned:?}");
        assert!(
            pinned[0].contains("only a client presenting this very certificate is let in")
                && pinned[0].ends_with("point client_ca at your CA's certificate"),
            "{pinned:?}"
        );
        assert!(client_ca_warnings(file, std::slice::from_ref(&ca.cert)).is_empty());
    }

    #[test]
    fn a_server_certificate_without_server_auth_is_named() {
        let ca = root();
        let file = Path::new("server.pem");
        let client = pki::issue(&spec("jenkins"), &ca).unwrap();
        let w = server_cert_warning(file, &client.cert).expect("a warning");
        assert!(
            w.contains("without serverAuth (it lists clientAuth); TLS clients will refuse it"),
            "{w}"
        );
        assert_eq!(server_cert_warning(file, &server(&ca).cert), None);
        let mut s = spec("no-eku");
        s.eku = false;
        let no_eku = pki::issue(&s, &ca).unwrap();
        assert_eq!(server_cert_warning(file, &no_eku.cert), None);
    }
}
