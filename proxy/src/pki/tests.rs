//! Round trips through the real `openssl` CLI: what we issue verifies, what we revoke fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use openssl::x509::{X509Crl, X509VerifyResult, X509};

use super::*;

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn verify_with_crl(dir: &Path, cert: &str) -> (bool, String) {
    openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-crl_check",
            "-CRLfile",
            "crl.pem",
            cert,
        ],
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn ca_spec(key: KeyKind) -> CertSpec {
    CertSpec {
        subject: vec![("O".into(), "t".into()), ("CN".into(), "Test CA".into())],
        key,
        is_ca: true,
        client_auth: false,
        eku: false,
        ..CertSpec::default()
    }
}

fn client_spec(cn: &str) -> CertSpec {
    CertSpec {
        subject: vec![("CN".into(), cn.into())],
        ..CertSpec::default()
    }
}

#[test]
fn init_issue_revoke_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("pki");
    init(&d, Some("Acme, Inc."), &[]).expect("init");
    for f in [
        "ca.pem",
        "ca-key.pem",
        "server.pem",
        "server-key.pem",
        "crl.pem",
    ] {
        assert!(d.join(f).is_file(), "{f}");
    }
    assert_eq!(mode(&d.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&d.join("server-key.pem")), 0o600);
    assert!(
        init(&d, None, &[]).is_err(),
        "a second init must not overwrite the CA"
    );

    // The server certificate: serverAuth, SANs, verifies.
    let (ok, out) = openssl(
        &d,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslserver",
            "server.pem",
        ],
    );
    assert!(ok, "{out}");
    let (_, text) = openssl(&d, &["x509", "-in", "server.pem", "-noout", "-text"]);
    assert!(
        text.contains("DNS:localhost, IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let (ok, out) = openssl(
        &d,
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify",
        ],
    );
    assert!(ok && out.contains("verify OK"), "{out}");

    let orgs = vec!["DevOps".to_string(), "Anka Build, Inc.".to_string()];
    let jenkins = issue_client(&d, "Jenkins CI", &orgs, Some("CI"), 30, None).expect("issue");
    assert_eq!(jenkins, d.join("Jenkins_CI.pem"));
    assert_eq!(mode(&d.join("Jenkins_CI-key.pem")), 0o600);
    let other = issue_client(&d, "other", &[], None, 30, Some("second")).expect("issue");
    assert_eq!(other, d.join("second.pem"));
    assert!(
        issue_client(&d, "other", &[], None, 30, Some("second")).is_err(),
        "no overwrite"
    );
    assert!(
        issue_client(&d, "x", &[], None, 30, Some("ca")).is_err(),
        "reserved name"
    );
    assert!(
        issue_client(&d, "x", &[], None, 30, Some("../x")).is_err(),
        "path in --out"
    );
    assert!(
        issue_client(&d, "x", &[], None, 0, None).is_err(),
        "zero days"
    );

    let (_, subject) = openssl(
        &d,
        &[
            "x509",
            "-in",
            "Jenkins_CI.pem",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ],
    );
    assert_eq!(
        subject.trim(),
        r"subject=CN=Jenkins CI,OU=CI,O=Anka Build\, Inc.,O=DevOps"
    );
    let (ok, out) = openssl(
        &d,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslclient",
            "Jenkins_CI.pem",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = verify_with_crl(&d, "Jenkins_CI.pem");
    assert!(ok, "before revoke: {out}");

    revoke(&d, &jenkins).expect("revoke");
    let (ok, out) = verify_with_crl(&d, "Jenkins_CI.pem");
    assert!(
        !ok && out.contains("certificate revoked"),
        "after revoke: {out}"
    );
    let (ok, out) = verify_with_crl(&d, "second.pem");
    assert!(ok, "others unaffected: {out}");
    let (ok, out) = openssl(
        &d,
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify",
        ],
    );
    assert!(ok && out.contains("verify OK"), "{out}");

    // Second revoke keeps the first entry and bumps the number; repeating is a no-op.
    revoke(&d, &other).expect("revoke 2");
    let crl = X509Crl::from_pem(&std::fs::read(d.join("crl.pem")).expect("crl")).expect("parse");
    let (entries, number) = read_crl_entries(&crl).expect("entries");
    assert_eq!((entries.len(), number), (2, Some(3)));
    revoke(&d, &other).expect("revoke again");
    let again = std::fs::read(d.join("crl.pem")).expect("crl");
    assert_eq!(again, crl.to_pem().expect("pem"), "unchanged");
    assert!(!verify_with_crl(&d, "Jenkins_CI.pem").0);
    assert!(!verify_with_crl(&d, "second.pem").0);
    let (_, text) = openssl(&d, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(
        text.contains("X509v3 CRL Number: \n                3") || text.contains("CRL Number"),
        "{text}"
    );
    assert!(text.contains("Version 2"), "{text}");
    assert!(
        text.contains("keyid:") || text.contains("Authority Key Identifier"),
        "{text}"
    );
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());

    // A certificate from another CA is refused.
    let stranger = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let foreign = issue(&client_spec("x"), &stranger).expect("issue");
    let foreign_path = d.join("foreign.pem");
    write_cert_pem(&foreign_path, &foreign.cert).expect("write");
    let err = revoke(&d, &foreign_path).expect_err("foreign");
    assert!(err.to_string().contains("not issued by the CA"), "{err}");
}

#[test]
fn init_names_become_sans() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let names = vec![
        "proxy.internal".to_string(),
        "10.1.2.3".into(),
        "::1".into(),
    ];
    init(tmp.path(), None, &names).expect("init");
    let server =
        X509::from_pem(&std::fs::read(tmp.path().join("server.pem")).expect("read")).expect("pem");
    let id = crate::tls::identity::Identity::from_x509(&server).expect("identity");
    assert_eq!(id.dns_sans, ["proxy.internal"]);
    assert_eq!(
        id.ip_sans,
        [
            "10.1.2.3".parse::<IpAddr>().expect("ip"),
            "::1".parse().expect("ip")
        ]
    );
    assert_eq!(id.user.as_deref(), Some("proxy.internal"));
    assert!(init(&tmp.path().join("x"), None, &["a b".into()]).is_err());
}

#[test]
fn init_server_certificate_lives_at_most_366_days() {
    let tmp = tempfile::tempdir().expect("tempdir");
    init(tmp.path(), None, &[]).expect("init");
    let server =
        X509::from_pem(&std::fs::read(tmp.path().join("server.pem")).expect("read")).expect("pem");
    // Mozilla's intermediate profile counts notBefore to notAfter, backdating included.
    let life = server
        .not_before()
        .diff(server.not_after())
        .expect("validity");
    let seconds = i64::from(life.days) * 86_400 + i64::from(life.secs);
    assert!(
        seconds <= 366 * 86_400,
        "server certificate valid {} days {} s",
        life.days,
        life.secs
    );
    // Still a long-lived certificate: not shortened to something a dev setup trips over.
    assert!(seconds >= 365 * 86_400, "{} days", life.days);
    let now = Asn1Time::days_from_now(0).expect("now");
    assert!(server.not_before() <= now && server.not_after() > now);
}

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

#[test]
fn crl_times_and_entries() {
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let a = issue(&client_spec("a"), &ca).expect("a");
    let b = issue(&client_spec("b"), &ca).expect("b");
    let entries = vec![
        RevokedEntry {
            serial: b.cert.serial_number().to_bn().expect("bn"),
            revoked_at: 1_700_000_000,
        },
        RevokedEntry {
            serial: a.cert.serial_number().to_bn().expect("bn"),
            revoked_at: 1_600_000_000,
        },
    ];
    let crl = make_crl_entries(&ca, &entries, 1_700_000_100, 1_800_000_000, u64::MAX).expect("crl");
    let (back, number) = read_crl_entries(&crl).expect("read");
    assert_eq!(number, Some(u64::MAX));
    assert_eq!(back.len(), 2);
    for e in &entries {
        let found = back.iter().find(|x| x.serial == e.serial).expect("entry");
        assert_eq!(found.revoked_at, e.revoked_at);
    }
    // Sorted by serial.
    assert!(back[0].serial < back[1].serial);
    assert_eq!(
        crl.last_update()
            .compare(&Asn1Time::from_unix(1_700_000_100).expect("t"))
            .expect("c"),
        std::cmp::Ordering::Equal
    );
    let next = crl.next_update().expect("next");
    assert_eq!(
        next.compare(&Asn1Time::from_unix(1_800_000_000).expect("t"))
            .expect("c"),
        std::cmp::Ordering::Equal
    );
    assert_eq!(
        crl.issuer_name()
            .try_cmp(ca.cert.subject_name())
            .expect("cmp"),
        std::cmp::Ordering::Equal
    );
    // An empty CRL has no revoked list at all (what OpenSSL writes too).
    let empty = make_crl(&ca, &[], -1, 30, 1).expect("empty");
    assert!(empty.get_revoked().map(|r| r.is_empty()).unwrap_or(true));
}

#[test]
fn crl_aki_without_issuer_ski() {
    // An issuer certificate without a subject key identifier (not one we make, but possible):
    // the AKI is then SHA-1 of its public key, which is what OpenSSL's "hash" SKI would be.
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let ski = ca.cert.subject_key_id().expect("ski").as_slice().to_vec();
    let spki = ca
        .cert
        .public_key()
        .expect("pk")
        .public_key_to_der()
        .expect("der");
    let bits = super::crl::subject_public_key_bits(&spki).expect("bits");
    assert_eq!(
        openssl::hash::hash(MessageDigest::sha1(), bits)
            .expect("sha1")
            .to_vec(),
        ski
    );
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
fn issue_uri_sans_and_spiffe_ids_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    init(&d, None, &[]).expect("init");
    let id = "spiffe://example.org/ns/ci/sa/builder".to_string();
    let path = issue_client_with_uris(
        &d,
        "builder",
        &[],
        None,
        std::slice::from_ref(&id),
        30,
        None,
    )
    .expect("issue");
    let cert = X509::from_pem(&std::fs::read(&path).expect("read")).expect("pem");
    let identity = crate::tls::identity::Identity::from_x509(&cert).expect("identity");
    assert_eq!(identity.uri_sans, vec![id]);
    assert!(identity.organizations.is_empty());
    let (ok, out) = openssl(&d, &["verify", "-CAfile", "ca.pem", "builder.pem"]);
    assert!(ok, "{out}");
    for bad in [
        "spiffe://Example.org/x",
        "spiffe://example.org/a/../b",
        "not a uri",
    ] {
        let err = issue_client_with_uris(&d, "x", &[], None, &[bad.into()], 30, Some("bad"))
            .expect_err(bad)
            .to_string();
        assert!(err.contains("--uri"), "{err}");
        assert!(!d.join("bad.pem").exists(), "{bad}: nothing written");
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
