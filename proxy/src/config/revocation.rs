//! `tls.crl_fetch` and `tls.ocsp`: revocation sources other than CRL files. The raw keys as
//! written, the validated model, and the checks that turn a mistake into an error naming the
//! key and the fix.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Validator};

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCrlFetch {
    pub urls: Option<Vec<String>>,
    pub from_certificates: Option<bool>,
    pub refresh: Option<String>,
    pub timeout: Option<String>,
    /// A number of bytes, or a string such as `64MiB` / `512KiB`.
    pub max_bytes: Option<serde_yaml_ng::Value>,
    pub cache_dir: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOcsp {
    pub mode: Option<OcspMode>,
    pub responder: Option<String>,
    pub timeout: Option<String>,
    pub max_age: Option<String>,
}

/// CRLs fetched over HTTP(S) for one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlFetchConfig {
    /// Fetched at start and on every refresh; each must load once before `/readyz` is 200.
    pub urls: Vec<HttpUrl>,
    /// Also fetch the CRL Distribution Points named by the CAs and by verified chains.
    pub from_certificates: bool,
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub cache_dir: Option<PathBuf>,
}

pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
pub(crate) const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_MAX_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OcspMode {
    #[default]
    Off,
    Soft,
    Hard,
}

/// OCSP for client leaf certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspConfig {
    pub mode: OcspMode,
    /// Asked instead of each certificate's AIA OCSP URL.
    pub responder: Option<HttpUrl>,
    pub timeout: Duration,
    pub max_age: Duration,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            mode: OcspMode::Off,
            responder: None,
            timeout: Duration::from_secs(2),
            max_age: Duration::from_secs(3600),
        }
    }
}

/// `64MiB`, `512KiB`, `1048576`: a byte count.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Why a CRL or OCSP URL cannot be fetched from.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{url}` is not a URL ({reason})")]
    NotAUrl { url: String, reason: String },
    #[error("`{0}` must start with http:// or https://")]
    Scheme(String),
    #[error("`{0}` has no host")]
    NoHost(String),
}

/// An http:// or https:// URL with a host: a CRL or OCSP URL from the config, a certificate's
/// CRL Distribution Points or AIA, or a CRL cache's index. Kept as written (no normalisation):
/// `/status`, the logs and the metric labels show it as the operator wrote it, and the CRL
/// cache names its files by the hash of this text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// `text` if it is an http:// or https:// URL with a host, or why not.
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        let uri: http::Uri =
            text.parse()
                .map_err(|e: http::uri::InvalidUri| UrlError::NotAUrl {
                    url: text.to_string(),
                    reason: e.to_string(),
                })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(UrlError::Scheme(text.to_string())),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost(text.to_string()));
        }
        Ok(HttpUrl(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HttpUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// So a table keyed by URL is looked up with the text of one.
impl std::borrow::Borrow<str> for HttpUrl {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for HttpUrl {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HttpUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = UrlError;

    fn from_str(text: &str) -> Result<HttpUrl, UrlError> {
        HttpUrl::parse(text)
    }
}

impl Validator<'_> {
    pub(super) fn crl_fetch(
        &self,
        key: &str,
        raw: Option<RawCrlFetch>,
        has_client_ca: bool,
    ) -> Result<Option<CrlFetchConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let key = format!("{key}.crl_fetch");
        let k = |sub: &str| format!("{key}.{sub}");
        if !has_client_ca {
            return Err(self.err(
                &key,
                "fetched CRLs need tls.client_ca (the CAs whose certificates they revoke); set client_ca or remove crl_fetch",
            ));
        }
        let urls = raw
            .urls
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, url)| {
                HttpUrl::parse(url).map_err(|m| {
                    self.err(
                        &format!("{key}.urls[{i}]"),
                        format!("{m}; write e.g. http://pki.example.com/issuing.crl"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refresh = self.duration(&k("refresh"), raw.refresh.as_deref(), DEFAULT_REFRESH)?;
        if refresh < Duration::from_secs(1) {
            return Err(self.err(&k("refresh"), "must be at least 1s; 1h is the usual choice"));
        }
        let timeout =
            self.duration(&k("timeout"), raw.timeout.as_deref(), DEFAULT_FETCH_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(self.err(&k("timeout"), "must be above 0; 5s is the usual choice"));
        }
        let max_bytes = match raw.max_bytes {
            None => DEFAULT_MAX_BYTES,
            Some(serde_yaml_ng::Value::Number(n)) => n.as_u64().ok_or_else(|| {
                self.err(
                    &k("max_bytes"),
                    format!("`{n}` is not a whole number of bytes"),
                )
            })?,
            Some(serde_yaml_ng::Value::String(s)) => parse_size(&s).ok_or_else(|| {
                self.err(
                    &k("max_bytes"),
                    format!("`{s}` is not a size; write a number of bytes or e.g. 512KiB, 64MiB"),
                )
            })?,
            Some(other) => {
                return Err(self.err(
                    &k("max_bytes"),
                    format!("{other:?} is not a size; write a number of bytes or e.g. 64MiB"),
                ))
            }
        };
        if max_bytes < 1024 {
            return Err(self.err(&k("max_bytes"), "must be at least 1KiB"));
        }
        Ok(Some(CrlFetchConfig {
            urls,
            from_certificates: raw.from_certificates.unwrap_or(false),
            refresh,
            timeout,
            max_bytes,
            cache_dir: raw.cache_dir.as_deref().map(|p| self.path(p)),
        }))
    }

    pub(super) fn ocsp(
        &self,
        key: &str,
        raw: Option<RawOcsp>,
        has_client_ca: bool,
    ) -> Result<OcspConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(OcspConfig::default());
        };
        let key = format!("{key}.ocsp");
        let k = |sub: &str| format!("{key}.{sub}");
        let d = OcspConfig::default();
        let mode = raw.mode.unwrap_or_default();
        if mode != OcspMode::Off && !has_client_ca {
            return Err(self.err(
                &k("mode"),
                "OCSP checks client certificates and needs tls.client_ca; set client_ca or use mode: off",
            ));
        }
        let responder = raw
            .responder
            .as_deref()
            .map(|url| {
                HttpUrl::parse(url).map_err(|m| {
                    self.err(
                        &k("responder"),
                        format!("{m}; write e.g. http://ocsp.example.com, or omit it to use each certificate's AIA"),
                    )
                })
            })
            .transpose()?;
        let timeout = self.duration(&k("timeout"), raw.timeout.as_deref(), d.timeout)?;
        if timeout.is_zero() {
            return Err(self.err(&k("timeout"), "must be above 0; 2s is the usual choice"));
        }
        let max_age = self.duration(&k("max_age"), raw.max_age.as_deref(), d.max_age)?;
        if max_age < Duration::from_secs(1) {
            return Err(self.err(&k("max_age"), "must be at least 1s; 1h is the usual choice"));
        }
        Ok(OcspConfig {
            mode,
            responder,
            timeout,
            max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(tls_extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "tls:\n  cert: s.pem\n  key: k.pem\n  client_ca: ca.pem\n{tls_extra}listeners:\n  - name: l\n    listen: 127.0.0.1:9443\n    upstream: http://127.0.0.1:80\n"
        );
        Config::from_yaml(&text, Path::new("/etc/certgate/certgate.yaml"), |_| None)
    }

    #[test]
    fn a_url_is_kept_as_written_once_it_is_http_with_a_host() {
        // No normalisation: /status, the metric labels and the cache file names use this text.
        for text in [
            "http://PKI.example.com:80/a.crl",
            "https://pki.example.com",
            "http://h/x?y=1",
        ] {
            assert_eq!(HttpUrl::parse(text).unwrap().as_str(), text);
        }
        assert!(matches!(
            HttpUrl::parse("ftp://x/a.crl"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            HttpUrl::parse("http:///a.crl"),
            Err(UrlError::NotAUrl { .. } | UrlError::NoHost(_))
        ));
        assert!(matches!(
            HttpUrl::parse("not a url"),
            Err(UrlError::NotAUrl { .. })
        ));
        assert!(matches!(HttpUrl::parse("/a.crl"), Err(UrlError::Scheme(_))));
        let mut table = std::collections::BTreeMap::new();
        table.insert(HttpUrl::parse("http://h/a.crl").unwrap(), 1);
        assert_eq!(
            table.get("http://h/a.crl"),
            Some(&1),
            "looked up by its text"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("1MB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }

    #[test]
    fn defaults_and_paths() {
        let c =
            load("  crl_fetch:\n    urls: [http://pki.example.com/a.crl]\n    cache_dir: cache\n")
                .unwrap();
        let f = c.listeners[0].tls.crl_fetch.clone().unwrap();
        assert_eq!(f.urls, vec!["http://pki.example.com/a.crl"]);
        assert_eq!(f.refresh, DEFAULT_REFRESH);
        assert_eq!(f.timeout, DEFAULT_FETCH_TIMEOUT);
        assert_eq!(f.max_bytes, DEFAULT_MAX_BYTES);
        assert!(!f.from_certificates);
        assert_eq!(f.cache_dir, Some(PathBuf::from("/etc/certgate/cache")));
        assert_eq!(c.listeners[0].tls.ocsp, OcspConfig::default());
        let c =
            load("  crl_fetch:\n    max_bytes: 2048\n  ocsp:\n    mode: hard\n    max_age: 5m\n")
                .unwrap();
        assert_eq!(
            c.listeners[0].tls.crl_fetch.as_ref().unwrap().max_bytes,
            2048
        );
        assert_eq!(c.listeners[0].tls.ocsp.mode, OcspMode::Hard);
        assert_eq!(c.listeners[0].tls.ocsp.max_age, Duration::from_secs(300));
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        for (extra, needle) in [
            (
                "  crl_fetch:\n    urls: [ftp://x/a.crl]\n",
                "tls.crl_fetch.urls[0]",
            ),
            (
                "  crl_fetch:\n    refresh: 500ms\n",
                "tls.crl_fetch.refresh: must be at least 1s",
            ),
            (
                "  crl_fetch:\n    max_bytes: 64MB\n",
                "tls.crl_fetch.max_bytes",
            ),
            ("  crl_fetch:\n    timeout: soon\n", "tls.crl_fetch.timeout"),
            ("  crl_fetch:\n    url: [http://x/a.crl]\n", "unknown field"),
            ("  ocsp:\n    mode: strict\n", "unknown variant"),
            (
                "  ocsp:\n    mode: soft\n    responder: x\n",
                "tls.ocsp.responder",
            ),
        ] {
            let e = load(extra).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
            assert!(e.starts_with("/etc/certgate/certgate.yaml"), "{e}");
        }
    }
}
