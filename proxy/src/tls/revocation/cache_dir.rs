//! `crl_fetch.cache_dir`: each URL's last good CRL on disk, so a restart with the URL down still
//! starts with it. A file is written under a temporary name, synced and renamed over the old
//! one, so a crash mid-write leaves the previous copy or none, never half a CRL; the temporary
//! names are never read.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The cache file of `url`: the SHA-256 of the URL, so any URL maps to a safe file name.
pub fn file_for(dir: &Path, url: &str) -> PathBuf {
    dir.join(format!(
        "{}.crl",
        hex::encode(openssl::sha::sha256(url.as_bytes()))
    ))
}

/// Writes `bytes` as the cached CRL of `url`, atomically.
pub fn store(dir: &Path, url: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let target = file_for(dir, url);
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    // The rename itself survives a crash only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The cached CRL of `url`, if there is one.
pub fn load(dir: &Path, url: &str) -> Option<Vec<u8>> {
    std::fs::read(file_for(dir, url)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("crls");
        let url = "http://pki.example.com/a.crl";
        assert_eq!(load(&sub, url), None);
        store(&sub, url, b"first").unwrap();
        store(&sub, url, b"second").unwrap();
        assert_eq!(load(&sub, url).as_deref(), Some(&b"second"[..]));
        assert_eq!(load(&sub, "http://pki.example.com/b.crl"), None);
        // Nothing but the one cache file is left behind.
        let names: Vec<_> = std::fs::read_dir(&sub).unwrap().collect();
        assert_eq!(names.len(), 1);
        let name = file_for(&sub, url);
        assert!(name
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".crl"));
    }
}
