//! Every key kind issues and verifies; key encodings.

use openssl::x509::X509VerifyResult;

use super::*;

#[test]
fn every_key_kind_issues_and_verifies() {
    for kind in [
        KeyKind::EcdsaP256,
        KeyKind::Rsa2048,
        KeyKind::Rsa(3072),
        KeyKind::Ed25519,
    ] {
        let ca = self_signed_ca(&ca_spec(kind.clone())).expect("ca");
        let leaf = issue(
            &CertSpec {
                key: kind.clone(),
                ..client_spec("leaf")
            },
            &ca,
        )
        .expect("leaf");
        assert!(
            leaf.cert
                .verify(&ca.cert.public_key().expect("pk"))
                .expect("verify"),
            "{kind:?}"
        );
        assert_eq!(ca.cert.issued(&leaf.cert), X509VerifyResult::OK, "{kind:?}");
        let crl = make_crl(&ca, &[&leaf.cert], -1, 30, 7).expect("crl");
        assert!(
            crl.verify(&ca.cert.public_key().expect("pk"))
                .expect("verify"),
            "{kind:?}"
        );

        let tmp = tempfile::tempdir().expect("tempdir");
        write_cert_pem(&tmp.path().join("ca.pem"), &ca.cert).expect("w");
        write_cert_pem(&tmp.path().join("leaf.pem"), &leaf.cert).expect("w");
        write_crl_pem(&tmp.path().join("crl.pem"), &crl).expect("w");
        let (ok, out) = openssl(
            tmp.path(),
            &[
                "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify",
            ],
        );
        assert!(ok, "{kind:?}: {out}");
        let (ok, out) = verify_with_crl(tmp.path(), "leaf.pem");
        assert!(
            !ok && out.contains("certificate revoked"),
            "{kind:?}: {out}"
        );
    }
}

#[test]
fn key_encodings() {
    let rsa = generate_key(&KeyKind::Rsa2048).expect("rsa");
    let ec = generate_key(&KeyKind::EcdsaP256).expect("ec");
    let ed = generate_key(&KeyKind::Ed25519).expect("ed");
    let has = |b: &[u8], s: &str| String::from_utf8_lossy(b).starts_with(s);
    assert!(has(
        &key_pem(&rsa, KeyFormat::Pkcs8).expect("k"),
        "-----BEGIN PRIVATE KEY-----"
    ));
    assert!(has(
        &key_pem(&rsa, KeyFormat::Pkcs1Rsa).expect("k"),
        "-----BEGIN RSA PRIVATE KEY-----"
    ));
    assert!(has(
        &key_pem(&ec, KeyFormat::Sec1Ec).expect("k"),
        "-----BEGIN EC PRIVATE KEY-----"
    ));
    assert!(has(
        &key_pem(&ed, KeyFormat::Pkcs8).expect("k"),
        "-----BEGIN PRIVATE KEY-----"
    ));
    let enc = key_pem(&ec, KeyFormat::EncryptedPkcs8("secret".into())).expect("k");
    assert!(has(&enc, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(PKey::private_key_from_pem(&enc).is_err());
    let back = PKey::private_key_from_pem_passphrase(&enc, b"secret").expect("decrypt");
    assert!(back.public_eq(&ec));
    assert!(key_pem(&ec, KeyFormat::Pkcs1Rsa).is_err());
    assert!(key_pem(&rsa, KeyFormat::Sec1Ec).is_err());
    for (k, f) in [
        (&rsa, KeyFormat::Pkcs1Rsa),
        (&ec, KeyFormat::Sec1Ec),
        (&ed, KeyFormat::Pkcs8),
    ] {
        let pem = key_pem(k, f).expect("k");
        assert!(PKey::private_key_from_pem(&pem)
            .expect("parse")
            .public_eq(k));
    }
}
