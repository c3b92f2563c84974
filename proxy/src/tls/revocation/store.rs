//! What the fetcher knows per URL: the last good CRL bytes (what trust states are built from),
//! the validators for conditional requests, and the history `/status` shows. One process-wide
//! table, because a URL is fetched once however many listeners or certificates name it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use once_cell::sync::Lazy;
use prometheus::IntCounterVec;
use tokio::sync::Notify;

use super::admit::HeldCrl;
use crate::time::{now_rfc3339, now_unix};

/// One URL's state.
#[derive(Clone, Debug, Default)]
pub struct UrlState {
    /// Named in `crl_fetch.urls` (holds `/readyz` until loaded), rather than discovered.
    pub configured: bool,
    /// Named by a certificate's CRL Distribution Points (`from_certificates`).
    pub discovered: bool,
    /// The last good CRL as served (PEM or DER).
    pub body: Option<Arc<Vec<u8>>>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `network` or `cache`: where `body` came from.
    pub source: Option<&'static str>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// What `body` holds, per CRL: what a newer body is compared with.
    pub held: Vec<HeldCrl>,
    /// Unix time of the next scheduled fetch.
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

static TABLE: Lazy<Mutex<BTreeMap<String, UrlState>>> = Lazy::new(Default::default);

pub fn table() -> MutexGuard<'static, BTreeMap<String, UrlState>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last good body of `url`, if any.
pub fn body(url: &str) -> Option<Arc<Vec<u8>>> {
    table().get(url).and_then(|s| s.body.clone())
}

/// Adds `url` to the table (a configured URL stays configured once named).
pub fn register(url: &str, configured: bool) {
    let mut t = table();
    let e = t.entry(url.to_string()).or_default();
    e.configured |= configured;
}

pub fn record_error(url: &str, message: &str) {
    CRL_FETCHES.with_label_values(&[url, "error"]).inc();
    let mut t = table();
    let e = t.entry(url.to_string()).or_default();
    e.last_error = Some(message.to_string());
    e.last_error_at = Some(now_rfc3339());
}

/// `body` is in force from now on, holding `held`.
pub fn record_success(url: &str, source: &'static str, body: Arc<Vec<u8>>, held: Vec<HeldCrl>) {
    let mut t = table();
    let e = t.entry(url.to_string()).or_default();
    e.body = Some(body);
    e.source = Some(source);
    e.last_success = Some(now_rfc3339());
    e.held = held;
    e.waiting_for = None;
}

/// A verified chain brought a certificate of `issuer`: URLs whose last body waited for it are
/// fetched again now rather than at their next refresh.
pub fn issuer_seen(issuer: &str) {
    for e in table().values() {
        if e.waiting_for.as_deref() == Some(issuer) {
            e.wake.notify_one();
        }
    }
}

/// A configured URL that has not loaded once (from the network or the cache), for `/readyz`.
/// A body being built into the trust states is not loaded until it is in force everywhere
/// (`last_success` is written after the swap).
pub fn first_unloaded() -> Option<String> {
    table()
        .iter()
        .find(|(_, s)| s.configured && (s.body.is_none() || s.last_success.is_none()))
        .map(|(url, _)| url.clone())
}

fn text_time(unix: Option<i64>) -> serde_json::Value {
    unix.map(crate::time::unix_rfc3339).into()
}

/// `/status` → `crl_fetch`: one object per URL.
pub fn status_json() -> serde_json::Value {
    let now = now_unix();
    let urls: Vec<serde_json::Value> = table()
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
            serde_json::json!({
                "url": url,
                "configured": s.configured,
                "discovered": s.discovered,
                "loaded": s.body.is_some(),
                "state": if s.body.is_some() { "loaded" } else { "without a loaded CRL" },
                "source": s.source,
                "bytes": s.body.as_ref().map(|b| b.len()),
                "issuers": issuers,
                "crl_numbers": numbers,
                "revoked": s.held.iter().map(|h| h.revoked).sum::<usize>(),
                "this_update": text_time(this_update),
                "next_update": text_time(next_update),
                "next_update_passed": next_update.is_some_and(|n| n < now),
                "last_success": s.last_success,
                "last_error": s.last_error,
                "last_error_at": s.last_error_at,
                "waiting_for_issuer": s.waiting_for,
                "next_fetch": text_time(s.next_fetch),
            })
        })
        .collect();
    serde_json::Value::Array(urls)
}

/// `certgate_crl_fetches_total{url,result}`: `ok`, `not_modified` or `error`.
pub static CRL_FETCHES: Lazy<IntCounterVec> = Lazy::new(|| {
    crate::metrics::counter(
        "certgate_crl_fetches_total",
        "CRL fetches by URL and result (ok, not_modified, error).",
        &["url", "result"],
    )
});

/// `certgate_ocsp_requests_total{listener,result}`: `good`, `revoked`, `unknown`, `error`,
/// `cached`.
pub static OCSP_REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    crate::metrics::counter(
        "certgate_ocsp_requests_total",
        "OCSP answers for client certificates by listener and result (good, revoked, unknown, error, cached).",
        &["listener", "result"],
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_url_holds_readiness_until_it_has_a_body() {
        let url = "http://store-test.invalid/a.crl";
        register(url, true);
        assert_eq!(first_unloaded().as_deref(), Some(url));
        record_error(url, "connection refused");
        assert_eq!(first_unloaded().as_deref(), Some(url));
        record_success(url, "cache", Arc::new(vec![1]), Vec::new());
        assert_eq!(first_unloaded(), None);
        let s = status_json();
        let e = s
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == url)
            .unwrap();
        assert_eq!(e["source"], "cache");
        assert_eq!(e["last_error"], "connection refused");
        assert_eq!(e["bytes"], 1);
        // A discovered URL never holds readiness.
        register("http://store-test.invalid/b.crl", false);
        assert_eq!(first_unloaded(), None);
    }
}
