//! Revocation sources beyond CRL files: CRLs fetched over HTTP(S) from configured URLs and from
//! the CRL Distribution Points certificates name.
//!
//! A fetched CRL is not a second revocation mechanism: its bytes join the CRL files when a
//! listener's trust state is built ([`crate::tls::trust`]), so signature checks (at load for
//! CAs of the bundle, on first use for intermediates), `crl_expired`, the all-or-nothing swap,
//! the per-request re-check of open connections and the re-check of resumed sessions are the
//! ones file CRLs get. Fetches run on a runtime of their own, so a hanging server never delays
//! a handshake or a request.
//!
//! The OCSP answers and the runtime handle are one value ([`ocsp::Ocsp`]) that `server` makes
//! and hands to the acceptors, the proxies and `/status`; trust states get the fetched CRLs as
//! an argument ([`fetched_for`]). The URL table ([`store`]), the build lock and discovery are
//! still process-wide.

pub mod admit;
pub mod cache_dir;
pub mod discover;
pub mod fetch;
pub mod ocsp;
pub mod probe;
pub mod schedule;
pub mod store;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::TlsConfig;
use crate::tls::trust::{FetchedCrl, TrustState};
pub use schedule::Target;

/// Held while a trust state is built and swapped, by the reloader and the fetcher alike: two
/// builders must not both make generation N+1 from different inputs.
pub fn build_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fetched CRLs a trust state for `tls` includes: its configured URLs, and with
/// `from_certificates` every discovered one, each as last fetched successfully.
pub fn fetched_for(tls: &TlsConfig) -> Vec<FetchedCrl> {
    let Some(f) = &tls.crl_fetch else {
        return Vec::new();
    };
    store::table()
        .iter()
        .filter(|(url, s)| f.urls.contains(url) || (f.from_certificates && s.discovered))
        .filter_map(|(url, s)| s.body.clone().map(|b| (url.clone(), b)))
        .collect()
}

/// `/readyz`: 503 until every configured URL has loaded once.
pub fn not_ready_reason() -> Option<String> {
    store::first_unloaded().map(|url| format!("CRL {url} has not loaded yet"))
}

/// `/status` → `crl_fetch`.
pub fn status_json() -> serde_json::Value {
    store::status_json()
}

/// Before the listeners are built: names every configured URL (so `/readyz` waits for it) and
/// loads each cached copy from `cache_dir`: the configured URLs' and, for listeners with
/// `from_certificates`, every URL discovered before the restart. A cached copy the trust
/// state refuses (a CA rotated since) is dropped with an error, as if there were none.
pub fn prepare(tls_configs: &[&TlsConfig]) {
    for tls in tls_configs {
        let Some(f) = &tls.crl_fetch else { continue };
        for url in &f.urls {
            store::register(url, true);
        }
        let Some(dir) = &f.cache_dir else { continue };
        let mut urls: Vec<(String, bool)> = f.urls.iter().map(|u| (u.clone(), false)).collect();
        if f.from_certificates {
            for url in cache_dir::cached_urls(dir) {
                if !f.urls.contains(&url) && crate::config::revocation::check_url(&url).is_ok() {
                    urls.push((url, true));
                }
            }
        }
        for (url, discovered) in urls {
            if store::body(&url).is_some() {
                continue;
            }
            let Some(bytes) = cache_dir::load(dir, &url) else {
                continue;
            };
            match admit::admit(&bytes, &[], &admit::CheckedLater) {
                Ok(held) => {
                    if discovered {
                        store::table().entry(url.clone()).or_default().discovered = true;
                    }
                    store::record_success(&url, "cache", Arc::new(bytes), held);
                    tracing::info!(url, dir = %dir.display(), discovered, "CRL loaded from the cache");
                }
                Err(m) => {
                    tracing::error!(url, dir = %dir.display(), error = %m, "cached CRL refused");
                    store::record_error(&url, &format!("cached copy refused: {m}"));
                }
            }
        }
    }
    // A cached CRL that no longer verifies must not stop the start: drop it and say so.
    let entries = store::table().len();
    for _ in 0..entries {
        let Some(bad) = tls_configs
            .iter()
            .find_map(|tls| TrustState::load(tls, "start", &fetched_for(tls)).err())
            .and_then(|e| e.origin.url().map(str::to_string))
            .filter(|url| store::body(url).is_some())
        else {
            break;
        };
        tracing::error!(url = %bad, "cached CRL does not verify against client_ca; starting without it");
        store::record_error(&bad, "cached copy does not verify against client_ca");
        if let Some(e) = store::table().get_mut(&bad) {
            e.body = None;
            e.source = None;
            e.held.clear();
        }
    }
}

/// A verified chain brought a certificate of `issuer` not seen before (see
/// [`store::issuer_seen`]).
pub fn issuer_seen(issuer: &str) {
    store::issuer_seen(issuer);
}

/// Starts the revocation runtime on a thread of its own, and on it the fetch loops (configured
/// URLs now, discovered ones as they appear); `ocsp` queries run on it from then on. Does
/// nothing when no listener fetches CRLs or asks OCSP.
pub fn spawn(targets: Vec<Target>, ocsp: &ocsp::Ocsp) -> anyhow::Result<()> {
    let asks_ocsp = targets
        .iter()
        .any(|t| t.tls.ocsp.mode != crate::config::OcspMode::Off);
    if targets.iter().all(|t| t.tls.crl_fetch.is_none()) && !asks_ocsp {
        return Ok(());
    }
    let targets = Arc::new(targets);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    discover::enable(&targets, tx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    ocsp.set_runtime(rt.handle().clone());
    let client = fetch::client().map_err(|e| anyhow::anyhow!(e))?;
    std::thread::Builder::new()
        .name("certgate-crl-fetch".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut started = std::collections::HashSet::new();
                let configured: Vec<String> = targets
                    .iter()
                    .filter_map(|t| t.tls.crl_fetch.as_ref())
                    .flat_map(|f| f.urls.iter().cloned())
                    .collect();
                for url in configured {
                    if !started.insert(url.clone()) {
                        continue;
                    }
                    if let Some(s) = schedule::settings_for(&targets, &url, false) {
                        tokio::spawn(schedule::run_url(targets.clone(), client.clone(), url, s));
                    }
                }
                // Discovered before the restart and loaded from the cache: refreshed as before.
                let cached: Vec<String> = store::table()
                    .iter()
                    .filter(|(_, s)| s.discovered)
                    .map(|(url, _)| url.clone())
                    .collect();
                for url in cached {
                    if !started.insert(url.clone()) {
                        continue;
                    }
                    if let Some(s) = schedule::settings_for(&targets, &url, true) {
                        tokio::spawn(schedule::run_url(targets.clone(), client.clone(), url, s));
                    }
                }
                while let Some(url) = rx.recv().await {
                    if !started.insert(url.clone()) {
                        continue;
                    }
                    if let Some(s) = schedule::settings_for(&targets, &url, true) {
                        tracing::info!(url, "CRL distribution point discovered; fetching it");
                        tokio::spawn(schedule::run_url(targets.clone(), client.clone(), url, s));
                    }
                }
                // No discovery (its sender is gone): the fetch loops still run for good.
                std::future::pending::<()>().await;
            });
        })?;
    Ok(())
}
