//! Writing and reading PKI files. Every write is atomic (a temporary file in the same directory,
//! fsynced, then renamed over the target), so a watcher never sees half a file; keys are created
//! with mode 0600 from the start.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::x509::{X509CrlRef, X509Ref, X509};

use super::Issued;

/// Writes `bytes` to `path` atomically with permission `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every filesystem allows fsync on a directory.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

pub fn write_cert_pem(path: &Path, cert: &X509Ref) -> anyhow::Result<()> {
    write_atomic(path, &cert.to_pem()?, 0o644)
}

/// PKCS#8 PEM (`BEGIN PRIVATE KEY`), mode 0600.
pub fn write_key_pem(path: &Path, key: &PKeyRef<Private>) -> anyhow::Result<()> {
    write_atomic(path, &key.private_key_to_pem_pkcs8()?, 0o600)
}

pub fn write_crl_pem(path: &Path, crl: &X509CrlRef) -> anyhow::Result<()> {
    write_atomic(path, &crl.to_pem()?, 0o644)
}

/// A certificate (first PEM block) and its key (PEM, any format OpenSSL reads), checked to
/// belong together.
pub fn load_issued(cert: &Path, key: &Path) -> anyhow::Result<Issued> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let cert_x = X509::from_pem(&cert_pem)
        .with_context(|| format!("{}: no PEM certificate in it", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key_p = PKey::private_key_from_pem(&key_pem)
        .with_context(|| format!("{}: not an unencrypted PEM private key", key.display()))?;
    anyhow::ensure!(
        cert_x.public_key()?.public_eq(&key_p),
        "{} does not match the certificate in {}",
        key.display(),
        cert.display()
    );
    Ok(Issued {
        cert: cert_x,
        key: key_p,
    })
}
