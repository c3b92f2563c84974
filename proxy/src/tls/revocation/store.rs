//! What the fetcher knows per URL: the last good CRL bytes (what trust states are built from),
//! the validators for conditional requests, and the history `/status` shows. One table per
//! [`super::Revocation`], because a URL is fetched once however many listeners or
//! certificates name it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::admit::HeldCrl;
use crate::config::HttpUrl;
use crate::metrics::CRL_FETCHES;
use crate::time::{now_unix, unix_rfc3339};

/// Where the body in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySource {
    /// Fetched from the URL.
    Network,
    /// Read from `crl_fetch.cache_dir` at start.
    Cache,
}

impl BodySource {
    /// As `/status` shows it.
    pub fn label(self) -> &'static str {
        match self {
            BodySource::Network => "network",
            BodySource::Cache => "cache",
        }
    }
}

/// One URL's state. Times are Unix seconds; `/status` renders them as RFC 3339.
#[derive(Clone, Debug, Default)]
pub struct UrlState {
    /// Named in `crl_fetch.urls` (holds `/readyz` until loaded), rather than discovered.
    pub configured: bool,
    /// Named by a certificate's CRL Distribution Points (`from_certificates`).
    pub discovered: bool,
    /// The last good CRL as served (PEM or DER).
    pub body: Option<Arc<Vec<u8>>>,
    /// The validators of the last body fetched, as the server sent them.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Where `body` came from.
    pub source: Option<BodySource>,
    /// When `body` was last confirmed in force (fetched and swapped in, loaded from the cache,
    /// or answered 304).
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// What `body` holds, per CRL: what a newer body is compared with.
    pub held: Vec<HeldCrl>,
    /// When the next scheduled fetch is.
    pub next_fetch: Option<i64>,
    /// The issuer whose certificate a refused body waits for (its signature could not be
    /// checked yet); seeing it in a verified chain fetches the URL again at once.
    pub waiting_for: Option<String>,
    /// Wakes the URL's fetch loop before its next scheduled fetch.
    pub wake: Arc<Notify>,
}

impl UrlState {
    /// The earliest nextUpdate of the CRLs held.
    pub fn next_update(&self) -> Option<i64> {
        self.held.iter().filter_map(|h| h.next_update).min()
    }
}

/// Every URL fetched (configured or discovered), by URL.
#[derive(Debug, Default)]
pub struct Store {
    table: Mutex<BTreeMap<HttpUrl, UrlState>>,
}

impl Store {
    pub fn table(&self) -> MutexGuard<'_, BTreeMap<HttpUrl, UrlState>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last good body of `url`, if any.
    pub fn body(&self, url: &HttpUrl) -> Option<Arc<Vec<u8>>> {
        self.table().get(url).and_then(|s| s.body.clone())
    }

    /// Adds `url` to the table (a configured URL stays configured once named).
    pub fn register(&self, url: &HttpUrl, configured: bool) {
        let mut t = self.table();
        let e = t.entry(url.clone()).or_default();
        e.configured |= configured;
    }

    pub fn record_error(&self, url: &HttpUrl, message: &str) {
        CRL_FETCHES
            .with_label_values(&[url.as_str(), "error"])
            .inc();
        let mut t = self.table();
        let e = t.entry(url.clone()).or_default();
        e.last_error = Some(message.to_string());
        e.last_error_at = Some(now_unix());
    }

    /// `body` is in force from now on, holding `held`.
    pub fn record_success(
        &self,
        url: &HttpUrl,
        source: BodySource,
        body: Arc<Vec<u8>>,
        held: Vec<HeldCrl>,
    ) {
        let mut t = self.table();
        let e = t.entry(url.clone()).or_default();
        e.body = Some(body);
        e.source = Some(source);
        e.last_success = Some(now_unix());
        e.held = held;
        e.waiting_for = None;
    }

    /// A verified chain brought a certificate of `issuer`: URLs whose last body waited for it
    /// are fetched again now rather than at their next refresh.
    pub fn issuer_seen(&self, issuer: &str) {
        for e in self.table().values() {
            if e.waiting_for.as_deref() == Some(issuer) {
                e.wake.notify_one();
            }
        }
    }

    /// A configured URL that has not loaded once (from the network or the cache), for
    /// `/readyz`. A body being built into the trust states is not loaded until it is in force
    /// everywhere (`last_success` is written after the swap).
    pub fn first_unloaded(&self) -> Option<HttpUrl> {
        self.table()
            .iter()
            .find(|(_, s)| s.configured && (s.body.is_none() || s.last_success.is_none()))
            .map(|(url, _)| url.clone())
    }

    /// `/status` → `crl_fetch`: one object per URL.
    pub fn status_json(&self) -> serde_json::Value {
        let now = now_unix();
        let text_time = |unix: Option<i64>| -> serde_json::Value { unix.map(unix_rfc3339).into() };
        let urls: Vec<serde_json::Value> = self
            .table()
            .iter()
            .map(|(url, s)| {
                let next_update = s.next_update();
                let this_update = s.held.iter().map(|h| h.this_update).max();
                let issuers: Vec<&str> = s.held.iter().map(|h| h.issuer.as_str()).collect();
                let numbers: Vec<Option<String>> = s
                    .held
                    .iter()
                    .map(|h| h.number.as_ref().map(hex::encode))
                    .collect();
                // A body being built into the trust states is not shown as loaded until it is
                // in force (`last_success`), as `/readyz` counts it.
                let loaded = s.body.is_some() && s.last_success.is_some();
                serde_json::json!({
                    "url": url.as_str(),
                    "configured": s.configured,
                    "discovered": s.discovered,
                    "loaded": loaded,
                    "state": if loaded { "loaded" } else { "without a loaded CRL" },
                    "source": s.source.map(BodySource::label),
                    "bytes": s.body.as_ref().map(|b| b.len()),
                    "issuers": issuers,
                    "crl_numbers": numbers,
                    "revoked": s.held.iter().map(|h| h.revoked).sum::<usize>(),
                    "this_update": text_time(this_update),
                    "next_update": text_time(next_update),
                    "next_update_passed": next_update.is_some_and(|n| n < now),
                    "last_success": text_time(s.last_success),
                    "last_error": s.last_error,
                    "last_error_at": text_time(s.last_error_at),
                    "waiting_for_issuer": s.waiting_for,
                    "next_fetch": text_time(s.next_fetch),
                })
            })
            .collect();
        serde_json::Value::Array(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_url_holds_readiness_until_it_has_a_body() {
        let store = Store::default();
        let url = HttpUrl::parse("http://store-test.invalid/a.crl").unwrap();
        store.register(&url, true);
        assert_eq!(store.first_unloaded().as_ref(), Some(&url));
        store.record_error(&url, "connection refused");
        assert_eq!(store.first_unloaded().as_ref(), Some(&url));
        store.record_success(&url, BodySource::Cache, Arc::new(vec![1]), Vec::new());
        assert_eq!(store.first_unloaded(), None);
        let s = store.status_json();
        let e = s
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == url.as_str())
            .unwrap();
        assert_eq!(e["source"], "cache");
        assert_eq!(e["last_error"], "connection refused");
        assert_eq!(e["bytes"], 1);
        // Times are shown as RFC 3339 UTC to the second, as before they were kept as numbers.
        let success = e["last_success"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(success).is_ok(), "{success}");
        assert!(success.ends_with('Z') && success.len() == 20, "{success}");
        assert_eq!(e["next_fetch"], serde_json::Value::Null);
        // A discovered URL never holds readiness.
        store.register(
            &HttpUrl::parse("http://store-test.invalid/b.crl").unwrap(),
            false,
        );
        assert_eq!(store.first_unloaded(), None);
        // A table per value: another one knows nothing of these URLs.
        assert!(Store::default().table().is_empty());
    }
}
