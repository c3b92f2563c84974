//! The pki module's tests, mostly round trips through the real `openssl` CLI (what we issue
//! verifies, what we revoke fails), by concern: the commands, key kinds, certificate shapes,
//! CRLs. The helpers here are theirs.

mod certificates;
mod commands;
mod crls;
mod keys;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

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
