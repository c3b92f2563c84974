//! Unusual certificates: odd subjects and extensions, a SAN made critical by an empty subject.

use openssl::x509::X509;

use super::*;

#[test]
fn odd_certificates() {
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let pk = ca.cert.public_key().expect("pk");
    let now = Asn1Time::days_from_now(0).expect("now");

    let expired = issue(
        &CertSpec {
            not_before_days: -30,
            not_after_days: -1,
            ..client_spec("old")
        },
        &ca,
    )
    .expect("expired");
    assert_eq!(
        expired.cert.not_after().compare(&now).expect("cmp"),
        std::cmp::Ordering::Less
    );
    let future = issue(
        &CertSpec {
            not_before_days: 2,
            not_after_days: 30,
            ..client_spec("new")
        },
        &ca,
    )
    .expect("future");
    assert_eq!(
        future.cert.not_before().compare(&now).expect("cmp"),
        std::cmp::Ordering::Greater
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    write_cert_pem(&d.join("ca.pem"), &ca.cert).expect("w");
    let check = |name: &str, cert: &X509, purpose: &str| {
        write_cert_pem(&d.join(name), cert).expect("w");
        openssl(
            d,
            &["verify", "-CAfile", "ca.pem", "-purpose", purpose, name],
        )
    };
    let (ok, out) = check("expired.pem", &expired.cert, "sslclient");
    assert!(!ok && out.contains("expired"), "{out}");
    let (ok, out) = check("future.pem", &future.cert, "sslclient");
    assert!(!ok && out.contains("not yet valid"), "{out}");

    let server_only = issue(
        &CertSpec {
            client_auth: false,
            server_auth: true,
            ..client_spec("srv")
        },
        &ca,
    )
    .expect("srv");
    let (ok, out) = check("srv.pem", &server_only.cert, "sslclient");
    assert!(!ok && out.contains("certificate purpose"), "{out}");
    let no_eku = issue(
        &CertSpec {
            eku: false,
            client_auth: false,
            ..client_spec("any")
        },
        &ca,
    )
    .expect("no eku");
    assert!(check("any.pem", &no_eku.cert, "sslclient").0);
    let (_, text) = openssl(d, &["x509", "-in", "any.pem", "-noout", "-text"]);
    assert!(!text.contains("Extended Key Usage"), "{text}");
    let neither = issue(
        &CertSpec {
            client_auth: false,
            ..client_spec("mail")
        },
        &ca,
    )
    .expect("mail");
    assert!(!check("mail.pem", &neither.cert, "sslclient").0);

    // Intermediates chain.
    let inter = issue(&ca_spec(KeyKind::EcdsaP256), &ca).expect("intermediate");
    let leaf = issue(&client_spec("deep"), &inter).expect("leaf");
    write_cert_pem(&d.join("inter.pem"), &inter.cert).expect("w");
    write_cert_pem(&d.join("deep.pem"), &leaf.cert).expect("w");
    let (ok, out) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "inter.pem",
            "deep.pem",
        ],
    );
    assert!(ok, "{out}");
    assert!(leaf
        .cert
        .verify(&inter.cert.public_key().expect("pk"))
        .expect("v"));
    assert!(!leaf.cert.verify(&pk).expect("v"));

    // Serials: 16 bytes, positive, distinct.
    let a = issue(&client_spec("a"), &ca).expect("a");
    let b = issue(&client_spec("a"), &ca).expect("b");
    let sa = a.cert.serial_number().to_bn().expect("bn");
    assert_eq!(sa.num_bytes(), 16);
    assert!(!sa.is_negative());
    assert_ne!(sa, b.cert.serial_number().to_bn().expect("bn"));

    // Subjects with any bytes, several CNs, multi-valued RDNs, OIDs.
    let odd = issue(
        &client_spec("x").clone_with_subject(&[
            ("CN", "a\0b"),
            ("CN", "c"),
            ("+UID", "u"),
            ("1.2.3.4", "oid"),
        ]),
        &ca,
    )
    .expect("odd");
    assert_eq!(odd.cert.subject_name().entries().count(), 4);
    assert!(build_name(&[("+CN".into(), "x".into())]).is_err());
    assert!(build_name(&[("NOTAFIELD".into(), "x".into())]).is_err());
}

impl CertSpec {
    fn clone_with_subject(&self, subject: &[(&str, &str)]) -> CertSpec {
        CertSpec {
            subject: subject
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..self.clone()
        }
    }
}

#[test]
fn an_empty_subject_makes_the_san_critical() {
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let spec = CertSpec {
        uris: vec!["spiffe://example.org/ns/ci/sa/builder".into()],
        ..CertSpec::default()
    };
    let leaf = issue(&spec, &ca).expect("leaf");
    let text = String::from_utf8(leaf.cert.to_text().expect("text")).expect("utf8");
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    let mut named = client_spec("x");
    named.uris = spec.uris.clone();
    let named = issue(&named, &ca).expect("leaf");
    let text = String::from_utf8(named.cert.to_text().expect("text")).expect("utf8");
    assert!(text.contains("X509v3 Subject Alternative Name:"), "{text}");
    assert!(
        !text.contains("Subject Alternative Name: critical"),
        "{text}"
    );
}
