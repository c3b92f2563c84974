//! Revocation sources beyond CRL files: CRLs fetched over HTTP(S) from configured URLs and from
//! the CRL Distribution Points certificates name, and OCSP.
//!
//! A fetched CRL is not a second revocation mechanism: its bytes join the CRL files when a
//! listener's trust state is built ([`crate::tls::trust`]), so signature checks (at load for
//! CAs of the bundle, on first use for intermediates), `crl_expired`, the all-or-nothing swap,
//! the per-request re-check of open connections and the re-check of resumed sessions are the
//! ones file CRLs get. Fetches run on a runtime of their own, so a hanging server never delays
//! a handshake or a request.
//!
//! All of it is one value, [`Revocation`]: the URL table ([`store`]), discovery, the OCSP
//! answers and client ([`ocsp::Ocsp`]), the runtime handle and the build lock. `server` makes
//! it once and hands it to the trust states, the acceptors, the proxies, the reloader and
//! `/status`; `check` and `explain` make one of their own that never fetches. Trust states get
//! the fetched CRLs as an argument ([`Revocation::fetched_for`]).

pub mod admit;
pub mod cache_dir;
pub mod discover;
pub mod fetch;
pub mod ocsp;
pub mod probe;
pub mod schedule;
pub mod store;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::{HttpUrl, OcspMode, TlsConfig};
use crate::tls::trust::{FetchedCrl, TrustState};
pub use schedule::Target;
use store::{BodySource, Store};

/// What the process knows and runs for revocation beyond CRL files, shared by every listener:
/// a URL is fetched once and a certificate asked about once however many listeners name it.
#[derive(Default)]
pub struct Revocation {
    /// Every fetched URL's last good CRL and history.
    urls: Store,
    /// Where verified chains' CRL Distribution Points go (`from_certificates`).
    discovery: discover::Discovery,
    /// The OCSP answers, client and runtime handle.
    ocsp: Arc<ocsp::Ocsp>,
    /// Held while a trust state is built and swapped, by the reloader and the fetcher alike:
    /// two builders must not both make generation N+1 from different inputs.
    build: Mutex<()>,
}

impl Revocation {
    pub fn new() -> Arc<Revocation> {
        Arc::default()
    }

    /// The OCSP answers, for the acceptors, the proxies and `/status`.
    pub fn ocsp(&self) -> &Arc<ocsp::Ocsp> {
        &self.ocsp
    }

    /// Held while a trust state is built and swapped, by the reloader and the fetcher alike,
    /// for as long as the guard lives.
    pub fn build_lock(&self) -> MutexGuard<'_, ()> {
        self.build.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fetched CRLs a trust state for `tls` includes: its configured URLs, and with
    /// `from_certificates` every discovered one, each as last fetched successfully.
    pub fn fetched_for(&self, tls: &TlsConfig) -> Vec<FetchedCrl> {
        let Some(f) = &tls.crl_fetch else {
            return Vec::new();
        };
        self.urls
            .table()
            .iter()
            .filter(|(url, s)| f.urls.contains(url) || (f.from_certificates && s.discovered))
            .filter_map(|(url, s)| {
                s.body.clone().map(|body| FetchedCrl {
                    url: url.clone(),
                    body,
                })
            })
            .collect()
    }

    /// `/readyz`: 503 until every configured URL has loaded once.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.urls
            .first_unloaded()
            .map(|url| format!("CRL {url} has not loaded yet"))
    }

    /// `/status` → `crl_fetch`.
    pub fn status_json(&self) -> serde_json::Value {
        self.urls.status_json()
    }

    /// A verified chain brought a certificate of `issuer` not seen before (see
    /// [`Store::issuer_seen`]).
    pub fn issuer_seen(&self, issuer: &str) {
        self.urls.issuer_seen(issuer);
    }

    /// Before the listeners are built: names every configured URL (so `/readyz` waits for it)
    /// and loads each cached copy from `cache_dir`: the configured URLs' and, for listeners
    /// with `from_certificates`, every URL discovered before the restart. A cached copy the
    /// trust state refuses (a CA rotated since) is dropped with an error, as if there were none.
    pub fn prepare(self: &Arc<Self>, tls_configs: &[&TlsConfig]) {
        let store = &self.urls;
        for tls in tls_configs {
            let Some(f) = &tls.crl_fetch else { continue };
            for url in &f.urls {
                store.register(url, true);
            }
            let Some(dir) = &f.cache_dir else { continue };
            let mut urls: Vec<(HttpUrl, bool)> =
                f.urls.iter().map(|u| (u.clone(), false)).collect();
            if f.from_certificates {
                for url in cache_dir::cached_urls(dir) {
                    if !f.urls.contains(&url) {
                        urls.push((url, true));
                    }
                }
            }
            for (url, discovered) in urls {
                if store.body(&url).is_some() {
                    continue;
                }
                let Some(bytes) = cache_dir::load(dir, &url) else {
                    continue;
                };
                match admit::admit(&bytes, &[], &admit::CheckedLater) {
                    Ok(held) => {
                        if discovered {
                            store.table().entry(url.clone()).or_default().discovered = true;
                        }
                        store.record_success(&url, BodySource::Cache, Arc::new(bytes), held);
                        tracing::info!(url = url.as_str(), dir = %dir.display(), discovered, "CRL loaded from the cache");
                    }
                    Err(m) => {
                        tracing::error!(url = url.as_str(), dir = %dir.display(), error = %m, "cached CRL refused");
                        store.record_error(&url, &format!("cached copy refused: {m}"));
                    }
                }
            }
        }
        // A cached CRL that no longer verifies must not stop the start: drop it and say so.
        let entries = store.table().len();
        for _ in 0..entries {
            let Some(bad) = tls_configs
                .iter()
                .find_map(|tls| TrustState::load(tls, "start", &self.fetched_for(tls), self).err())
                .and_then(|e| e.origin.url().cloned())
                .filter(|url| store.body(url).is_some())
            else {
                break;
            };
            tracing::error!(url = %bad, "cached CRL does not verify against client_ca; starting without it");
            store.record_error(&bad, "cached copy does not verify against client_ca");
            if let Some(e) = store.table().get_mut(&bad) {
                e.body = None;
                e.source = None;
                e.held.clear();
            }
        }
    }

    /// Starts the revocation runtime on a thread of its own, and on it the fetch loops
    /// (configured URLs now, discovered ones as they appear); OCSP queries run on it from then
    /// on. Does nothing when no listener fetches CRLs or asks OCSP.
    pub fn spawn(self: &Arc<Self>, targets: Vec<Target>) -> anyhow::Result<()> {
        let asks_ocsp = targets.iter().any(|t| t.tls.ocsp.mode != OcspMode::Off);
        if targets.iter().all(|t| t.tls.crl_fetch.is_none()) && !asks_ocsp {
            return Ok(());
        }
        let targets = Arc::new(targets);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<HttpUrl>();
        self.enable_discovery(&targets, tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        self.ocsp.set_runtime(rt.handle().clone());
        let client = fetch::client().map_err(|e| anyhow::anyhow!(e))?;
        let revocation = self.clone();
        std::thread::Builder::new()
            .name("certgate-crl-fetch".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut started = std::collections::HashSet::new();
                    let mut start = |url: HttpUrl, discovered: bool| {
                        if !started.insert(url.clone()) {
                            return false;
                        }
                        let Some(s) = schedule::settings_for(&targets, &url, discovered) else {
                            return false;
                        };
                        tokio::spawn(schedule::run_url(
                            revocation.clone(),
                            targets.clone(),
                            client.clone(),
                            url,
                            s,
                        ));
                        true
                    };
                    let configured: Vec<HttpUrl> = targets
                        .iter()
                        .filter_map(|t| t.tls.crl_fetch.as_ref())
                        .flat_map(|f| f.urls.iter().cloned())
                        .collect();
                    for url in configured {
                        start(url, false);
                    }
                    // Discovered before the restart and loaded from the cache: refreshed as
                    // before.
                    let cached: Vec<HttpUrl> = revocation
                        .urls
                        .table()
                        .iter()
                        .filter(|(_, s)| s.discovered)
                        .map(|(url, _)| url.clone())
                        .collect();
                    for url in cached {
                        start(url, true);
                    }
                    while let Some(url) = rx.recv().await {
                        let text = url.to_string();
                        if start(url, true) {
                            tracing::info!(
                                url = text.as_str(),
                                "CRL distribution point discovered; fetching it"
                            );
                        }
                    }
                    // No discovery (its sender is gone): the fetch loops still run for good.
                    std::future::pending::<()>().await;
                });
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    #[test]
    fn each_value_has_its_own_urls_readiness_and_build_lock() {
        let text = "tls:\n  cert: s.pem\n  key: k.pem\n  client_ca: ca.pem\n  crl_fetch:\n    urls: [http://pki.example.com/a.crl]\nlisteners:\n  - name: l\n    listen: 127.0.0.1:9443\n    upstream: http://127.0.0.1:80\n";
        let config =
            Config::from_yaml(text, Path::new("/etc/certgate/certgate.yaml"), |_| None).unwrap();
        let tls = &config.listeners[0].tls;
        let running = Revocation::new();
        running.prepare(&[tls]);
        assert_eq!(
            running.not_ready_reason().as_deref(),
            Some("CRL http://pki.example.com/a.crl has not loaded yet")
        );
        assert_eq!(
            running.status_json()[0]["url"],
            "http://pki.example.com/a.crl"
        );
        assert!(running.fetched_for(tls).is_empty(), "nothing fetched yet");
        // What `check` and `explain` make: nothing of the running one is in it.
        let other = Revocation::new();
        assert_eq!(other.not_ready_reason(), None);
        assert_eq!(other.status_json(), serde_json::json!([]));
        // Holding one value's build lock does not hold the other's.
        let _held = running.build_lock();
        drop(other.build_lock());
    }
}
