//! `certgate check`: a valid config is summarised; each kind of broken input is refused with the
//! file, the key and the fix.

mod common;

use common::*;
use std::process::Command;

fn check(dir: &std::path::Path, config: &str) -> (i32, String, String) {
    let path = dir.join("check.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &str = "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem]\nlisteners:\n  - name: test\n    listen: 127.0.0.1:18443\n    upstream: http://127.0.0.1:80\n";

#[test]
fn valid_config_prints_the_summary() {
    let w = World::new();
    let (code, out, err) = check(w.dir.path(), BASE);
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "listener test: 127.0.0.1:18443 -> http://127.0.0.1:80",
        "server certificate: CN=localhost",
        "SANs: DNS:localhost, IP:127.0.0.1",
        "client CA: CN=Test Root CA,O=certgate tests",
        "CRL: CN=Test Root CA,O=certgate tests",
        "0 revoked",
        "days left",
        "check passed",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn broken_inputs_are_named_with_the_fix() {
    let w = World::new();
    let d = w.dir.path();
    let other = server(&ca("Other"));
    write(&d.join("other-key.pem"), &key_pem(&other));
    let encrypted = w
        .server
        .key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"secret")
        .unwrap();
    write(&d.join("encrypted-key.pem"), &encrypted);
    // The bundle's CA name with another key: its issuer is in the bundle, so it is checked at
    // load, and refused. (A CRL whose issuer is not in the bundle is checked later, on use.)
    let impostor = ca("Test Root CA");
    let crl = certgate::pki::make_crl(&impostor, &[], -1, 30, 1).unwrap();
    std::fs::write(d.join("forged-crl.pem"), crl.to_pem().unwrap()).unwrap();
    std::fs::write(
        d.join("not-a-crl.pem"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate").unwrap();

    let cases = [
        (
            BASE.replace("server-key.pem", "encrypted-key.pem"),
            vec!["encrypted-key.pem", "openssl pkey"],
        ),
        (
            BASE.replace("server-key.pem", "other-key.pem"),
            vec!["other-key.pem", "does not match"],
        ),
        (
            BASE.replace("ca.pem", "missing.pem"),
            vec!["missing.pem", "cannot read"],
        ),
        (
            BASE.replace("client_ca: ca.pem", "client_ca: garbage.pem"),
            vec!["garbage.pem"],
        ),
        (
            BASE.replace("crl.pem", "forged-crl.pem"),
            vec!["forged-crl.pem", "not signed by the key of that CA"],
        ),
        (
            BASE.replace("crl.pem", "not-a-crl.pem"),
            vec!["not-a-crl.pem", "does not parse"],
        ),
        (
            BASE.replace(
                "  client_ca: ca.pem\n  crl: [crl.pem]\n",
                "  client_auth: required\n",
            ),
            vec!["client_auth", "client_ca"],
        ),
        (
            BASE.replace("    upstream:", "    upstreem: x\n    upstream:"),
            vec!["upstreem", "line 9"],
        ),
        (
            BASE.replace("http://127.0.0.1:80", "https://127.0.0.1:443"),
            vec!["listeners[0].upstream", "plain HTTP"],
        ),
        (
            format!("{BASE}    policy: nowhere.yaml\n"),
            vec!["nowhere.yaml"],
        ),
        (
            BASE.replace(
                "  crl: [crl.pem]\n",
                "  crl: [crl.pem]\n  ciphers: NOT-A-CIPHER\n",
            ),
            vec!["tls.ciphers"],
        ),
    ];
    for (config, wants) in cases {
        let (code, out, err) = check(d, &config);
        assert_eq!(code, 1, "should fail: {wants:?}\n{out}{err}");
        for want in wants {
            assert!(err.contains(want), "missing {want:?} in stderr:\n{err}");
        }
        assert!(
            err.contains(&d.display().to_string()),
            "the file is named:\n{err}"
        );
    }
}

#[test]
fn warnings_for_loose_key_modes_and_near_expiry() {
    let w = World::new();
    let mut s = spec(&[("CN", "localhost")]);
    s.server_auth = true;
    s.client_auth = false;
    s.dns_names = vec!["localhost".into()];
    s.not_after_days = 10;
    let soon = certgate::pki::issue(&s, &w.ca).unwrap();
    write(&w.path("soon.pem"), &cert_pem(&soon));
    std::fs::write(w.path("soon-key.pem"), key_pem(&soon)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        w.path("soon-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (code, out, err) = check(
        w.dir.path(),
        &BASE
            .replace("server.pem", "soon.pem")
            .replace("server-key.pem", "soon-key.pem"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("warning: key file") && out.contains("chmod 600"),
        "{out}"
    );
    assert!(
        out.contains("warning: server certificate CN=localhost expires in"),
        "{out}"
    );
}

#[test]
fn session_ticket_keys_are_counted_and_a_bad_file_is_named_with_the_fix() {
    use base64::Engine;
    let w = World::new();
    let d = w.dir.path();
    let line = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k) + "\n";
    let mut k1 = vec![0u8; 80];
    let mut k2 = vec![0u8; 80];
    openssl::rand::rand_bytes(&mut k1).unwrap();
    openssl::rand::rand_bytes(&mut k2).unwrap();
    write(&d.join("ticket.keys"), (line(&k1) + &line(&k2)).as_bytes());
    let config = BASE.replace(
        "  crl: [crl.pem]\n",
        "  crl: [crl.pem]\n  session_ticket_keys: ticket.keys\n",
    );
    let (code, out, err) = check(d, &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("session ticket keys: 2 from"), "{out}");
    assert!(!out.contains(&line(&k1)[..20]), "never the keys: {out}");

    write(&d.join("ticket.keys"), &[1u8; 48]);
    let (code, out, err) = check(d, &config);
    assert_eq!(code, 1, "{out}{err}");
    let all = out + &err;
    for want in [
        "ticket.keys",
        "tls.session_ticket_keys",
        "48-byte",
        "openssl rand 80",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}
