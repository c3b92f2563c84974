//! `crl_fetch.cache_dir`: each URL's last good CRL on disk, so a restart with the URL down still
//! starts with it. A file is written under a temporary name, synced and renamed over the old
//! one, so a crash mid-write leaves the previous copy or none, never half a CRL; the temporary
//! names are never read.
//!
//! Beside each `<sha256 of URL>.crl` a `.url` file holds the URL itself, so that at start the
//! CRLs of URLs discovered through `from_certificates` (which the config does not name) are
//! found and loaded too: a restart with an intermediate's distribution point down must not let
//! the clients that CRL revokes back in.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::HttpUrl;

/// The cache file of `url`: the SHA-256 of the URL, so any URL maps to a safe file name.
pub fn file_for(dir: &Path, url: &HttpUrl) -> PathBuf {
    dir.join(format!(
        "{}.crl",
        hex::encode(openssl::sha::sha256(url.as_str().as_bytes()))
    ))
}

/// Writes `bytes` as the cached CRL of `url`, atomically (the URL first, so a `.crl` found
/// at start always has its URL).
pub fn store(dir: &Path, url: &HttpUrl, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let crl = file_for(dir, url);
    let name = crl.with_extension("url");
    let text = url.as_str().as_bytes();
    if std::fs::read(&name).ok().as_deref() != Some(text) {
        write_atomically(dir, &name, text)?;
    }
    write_atomically(dir, &crl, bytes)
}

fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    // The rename itself survives a crash only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The cached CRL of `url`, if there is one.
pub fn load(dir: &Path, url: &HttpUrl) -> Option<Vec<u8>> {
    std::fs::read(file_for(dir, url)).ok()
}

/// Every URL with a cached CRL in `dir`. A `.url` file that does not name the URL its file
/// name is the hash of (edited, or from another tool) is skipped.
pub fn cached_urls(dir: &Path) -> Vec<HttpUrl> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut urls: Vec<HttpUrl> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "url"))
        .filter_map(|p| {
            let url = HttpUrl::parse(std::str::from_utf8(&std::fs::read(&p).ok()?).ok()?).ok()?;
            (file_for(dir, &url).with_extension("url") == p && file_for(dir, &url).exists())
                .then_some(url)
        })
        .collect();
    urls.sort();
    urls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("crls");
        let url = &HttpUrl::parse("http://pki.example.com/a.crl").unwrap();
        assert_eq!(load(&sub, url), None);
        store(&sub, url, b"first").unwrap();
        store(&sub, url, b"second").unwrap();
        assert_eq!(load(&sub, url).as_deref(), Some(&b"second"[..]));
        let other = HttpUrl::parse("http://pki.example.com/b.crl").unwrap();
        assert_eq!(load(&sub, &other), None);
        // Nothing but the cache file and its URL is left behind.
        let names: Vec<_> = std::fs::read_dir(&sub).unwrap().collect();
        assert_eq!(names.len(), 2);
        assert_eq!(cached_urls(&sub), vec![url.clone()]);
        // A .url file that does not name the URL it is the hash of is not trusted.
        std::fs::write(
            file_for(&sub, url).with_extension("url"),
            "http://elsewhere/x.crl",
        )
        .unwrap();
        assert!(cached_urls(&sub).is_empty());
        let name = file_for(&sub, url);
        assert!(name
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".crl"));
    }
}
