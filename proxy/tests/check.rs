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

/// The shipped Registry policy grants permissions whose routes are not known yet.
fn shipped_policy(name: &str) -> String {
    format!("{}/../policies/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The stdout lines of `check` that are warnings, each with the listener it was printed under.
fn warnings_by_listener(out: &str) -> Vec<(String, String)> {
    let mut listener = String::new();
    let mut found = Vec::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("listener ") {
            listener = rest.split(':').next().unwrap_or("").to_string();
        } else if let Some(w) = line.trim_start().strip_prefix("warning: ") {
            found.push((listener.clone(), w.to_string()));
        }
    }
    found
}

#[test]
fn policy_warnings_are_printed_under_their_listener_naming_the_file() {
    let w = World::new();
    let d = w.dir.path();
    std::fs::write(
        d.join("open.yaml"),
        "permissions:\n  health: [\"GET /livez\"]\nanonymous: [\"*\"]\n",
    )
    .unwrap();
    let registry = shipped_policy("anka-registry.yaml");
    let config = format!(
        "{BASE}    policy: {registry}\n  - name: open\n    listen: 127.0.0.1:18444\n    upstream: http://127.0.0.1:81\n    policy: open.yaml\n"
    );
    let (code, out, err) = check(d, &config);
    assert_eq!(code, 0, "warnings do not fail check:\n{out}{err}");
    let warnings = warnings_by_listener(&out);
    let routeless = format!(
        "policy {registry}: groups.build-nodes: these permissions have no routes, so they allow nothing until routes are added: "
    );
    let line = warnings
        .iter()
        .find(|(_, w)| w.starts_with(&routeless))
        .unwrap_or_else(|| panic!("no {routeless:?} warning in:\n{out}"));
    assert_eq!(line.0, "test", "printed under its listener:\n{out}");
    for name in ["pull_vm", "push_vm"] {
        assert!(line.1.contains(name), "{name} is named: {}", line.1);
    }
    let star = format!(
        "policy {}: anonymous: \"*\" lets requests without a certificate do everything",
        d.join("open.yaml").display()
    );
    assert!(
        warnings.contains(&("open".to_string(), star.clone())),
        "missing {star:?} under listener open in:\n{out}"
    );
    assert!(
        !warnings
            .iter()
            .any(|(l, w)| l == "open" && w.contains("anka-registry")),
        "each policy's warnings stay with its listener:\n{out}"
    );
}

#[test]
fn a_client_ca_that_is_not_a_ca_is_named_with_the_fix() {
    let w = World::new();
    let d = w.dir.path();
    let jenkins = client(&[("O", "ci"), ("CN", "jenkins")], &w.ca);
    w.save("jenkins", &jenkins);
    let mut bundle = cert_pem(&w.ca);
    bundle.extend(cert_pem(&w.server));
    write(&d.join("mixed.pem"), &bundle);

    // The server's certificate as the client CA: no client certificate can chain to it, and
    // its serverAuth-only usage lets no client present it either. `run` would refuse everyone.
    let (code, out, err) = check(
        d,
        &BASE.replace("client_ca: ca.pem", "client_ca: server.pem"),
    );
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        &format!("{}: tls.client_ca: ", d.join("server.pem").display()),
        "certificate 1 (subject CN=localhost) is not a CA certificate (no basicConstraints CA:TRUE); client certificates cannot chain to it",
        "point client_ca at your CA's certificate",
    ] {
        assert!(err.contains(want), "missing {want:?} in stderr:\n{err}");
    }

    // A bundle with the CA and a stray leaf loads (the CA still verifies clients): a warning
    // names the leaf, by its place in the file.
    let (code, out, err) = check(
        d,
        &BASE.replace("client_ca: ca.pem", "client_ca: mixed.pem"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let want = format!(
        "tls.client_ca: {}: certificate 2 (subject CN=localhost) is not a CA certificate (no basicConstraints CA:TRUE); client certificates cannot chain to it; remove it from the bundle",
        d.join("mixed.pem").display()
    );
    assert!(
        warnings_by_listener(&out).contains(&("test".into(), want.clone())),
        "missing {want:?} in:\n{out}"
    );
    assert!(
        !out.contains("certificate 1 (subject CN=Test Root CA"),
        "the CA is not warned about:\n{out}"
    );
    assert!(
        !out.contains("no CRL loaded for CA CN=localhost"),
        "a leaf issues nothing, so it lacks no CRL:\n{out}"
    );

    // A client's own certificate as the bundle still lets that one client in (every bundle
    // certificate is a trust anchor): a warning, saying so.
    let (code, out, err) = check(
        d,
        &BASE.replace("client_ca: ca.pem", "client_ca: jenkins.pem"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let want = "certificate 1 (subject CN=jenkins,O=ci) is not a CA certificate (no basicConstraints CA:TRUE); client certificates cannot chain to it (only a client presenting this very certificate is let in); point client_ca at your CA's certificate";
    assert!(
        warnings_by_listener(&out)
            .iter()
            .any(|(l, w)| l == "test" && w.ends_with(want)),
        "missing {want:?} in:\n{out}"
    );
}

#[test]
fn a_client_certificate_as_the_server_certificate_is_warned_about() {
    let w = World::new();
    let d = w.dir.path();
    w.save(
        "client-only",
        &client(&[("O", "ci"), ("CN", "jenkins")], &w.ca),
    );
    let (code, out, err) = check(
        d,
        &BASE
            .replace("server.pem", "client-only.pem")
            .replace("server-key.pem", "client-only-key.pem"),
    );
    assert_eq!(code, 0, "{out}{err}");
    let want = format!(
        "tls.cert: {}: the server certificate (subject CN=jenkins,O=ci) has an extendedKeyUsage without serverAuth (it lists clientAuth); TLS clients will refuse it",
        d.join("client-only.pem").display()
    );
    assert!(
        warnings_by_listener(&out)
            .iter()
            .any(|(l, w)| l == "test" && w.starts_with(&want)),
        "missing {want:?} in:\n{out}"
    );

    let (code, out, err) = check(d, BASE);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("without serverAuth"),
        "a serverAuth certificate is not warned about:\n{out}"
    );
}

#[test]
fn a_chain_written_ca_first_says_the_leaf_must_come_first() {
    let w = World::new();
    let d = w.dir.path();
    let inter = intermediate("Test Intermediate", &w.ca);
    let mut reversed = cert_pem(&inter);
    reversed.extend(cert_pem(&w.server));
    write(&d.join("reversed.pem"), &reversed);
    let (code, out, err) = check(d, &BASE.replace("cert: server.pem", "cert: reversed.pem"));
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        format!("{}: tls.cert: the first certificate (subject CN=Test Intermediate,O=certgate tests) does not match the key in {}", d.join("reversed.pem").display(), d.join("server-key.pem").display()),
        "but certificate 2 of the file (subject CN=localhost) does: the leaf (the certificate of that key) must come first".into(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in stderr:\n{err}");
    }

    // No certificate of the file is the key's: the plain mismatch, without the order hint.
    let other = server(&ca("Other"));
    write(&d.join("other-key.pem"), &key_pem(&other));
    let (code, out, err) = check(d, &BASE.replace("server-key.pem", "other-key.pem"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("does not match the certificate in"), "{err}");
    assert!(!err.contains("must come first"), "{err}");
}

/// The running proxy shows a policy's warnings in `/status` and logs them at WARN, at start and
/// when a reload brings new ones.
#[test]
fn policy_warnings_reach_status_and_the_log() {
    let w = World::new();
    let up = upstream();
    let policy = |group: &str| {
        format!("permissions:\n  later: []\n  health: [\"GET /livez\"]\ngroups:\n  {group}: [later, health]\n")
    };
    std::fs::write(w.path("policy.yaml"), policy("first")).unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let warning = |group: &str| {
        format!(
            "policy {}: groups.{group}: this permission has no routes, so it allows nothing until routes are added: later",
            w.path("policy.yaml").display()
        )
    };
    let status_warnings = || -> Vec<String> {
        status_json(&p)["listeners"][0]["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let logged = |needle: &str| {
        p.log_text()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(needle))
            .count()
    };

    assert!(
        status_warnings().contains(&warning("first")),
        "{:?}",
        status_warnings()
    );
    wait_for(
        "the policy warning in the log",
        std::time::Duration::from_secs(15),
        || (logged(&warning("first")) > 0).then_some(()),
    );

    std::fs::write(w.path("policy.yaml"), policy("second")).unwrap();
    sighup(&p);
    wait_for(
        "the reloaded policy's warning in the log",
        std::time::Duration::from_secs(15),
        || (logged(&warning("second")) > 0).then_some(()),
    );
    let now = status_warnings();
    assert!(now.contains(&warning("second")), "{now:?}");
    assert!(
        !now.contains(&warning("first")),
        "the old policy's warning is gone: {now:?}"
    );
}
