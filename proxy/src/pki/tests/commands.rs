//! `init`, `issue` and `revoke` as the CLI runs them: files, modes, names, lifetimes, URI SANs.

use openssl::x509::{X509Crl, X509};

use super::*;

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
fn each_init_makes_a_ca_of_its_own_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let subject = |dir: &str| {
        let d = tmp.path().join(dir);
        init(&d, None, &[]).expect("init");
        let pem = std::fs::read(d.join("ca.pem")).expect("ca.pem");
        let ca = X509::from_pem(&pem).expect("PEM");
        crate::tls::dn::rfc2253(ca.subject_name())
    };
    let (a, b) = (subject("a"), subject("b"));
    assert!(a.starts_with("CN=certgate development CA "), "{a}");
    assert_ne!(a, b, "two dev CAs never share a name");
}
