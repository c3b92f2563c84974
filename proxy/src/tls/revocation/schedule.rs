//! The fetch loop of each URL, and what happens to a body it brings: verified by building every
//! listener's trust state with it (exactly the code that loads file CRLs), then swapped in for
//! all listeners at once, or refused with the last good CRL kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use std::cmp::Ordering;

use openssl::x509::{X509NameRef, X509};

use super::admit::{admit, HeldCrl, Issuers, Refusal};
use super::cache_dir;
use super::fetch::{self, Fetched};
use super::store::BodySource;
use super::Revocation;
use crate::config::{HttpUrl, TlsConfig};
use crate::metrics::CRL_FETCHES;
use crate::time::now_unix;
use crate::tls::trust::{TrustError, TrustState};

/// Until a URL has loaded once, a failed fetch is retried sooner than `refresh`: from 1 s,
/// doubling, at most this long.
const FIRST_LOAD_RETRY_MAX: Duration = Duration::from_secs(60);

/// A listener whose trust state fetched CRLs feed.
pub struct Target {
    pub name: String,
    pub tls: TlsConfig,
    pub trust: Arc<ArcSwap<TrustState>>,
}

/// How one URL is fetched: the settings of the first listener that names it (or, for a
/// discovered URL, of the first listener with `from_certificates`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub cache_dir: Option<PathBuf>,
}

pub fn settings_for(targets: &[Target], url: &HttpUrl, discovered: bool) -> Option<Settings> {
    targets
        .iter()
        .filter_map(|t| t.tls.crl_fetch.as_ref())
        .find(|f| {
            if discovered {
                f.from_certificates
            } else {
                f.urls.contains(url)
            }
        })
        .map(|f| Settings {
            refresh: f.refresh,
            timeout: f.timeout,
            max_bytes: f.max_bytes,
            cache_dir: f.cache_dir.clone(),
        })
}

/// The keys `admit` checks an issuer's CRL with: the CA bundles and the issuer certificates
/// every listener has seen in verified chains.
struct TargetIssuers<'a>(&'a [Target]);

impl Issuers for TargetIssuers<'_> {
    fn in_bundle(&self, name: &X509NameRef) -> bool {
        self.0.iter().any(|t| {
            t.trust.load().client.as_ref().is_some_and(|c| {
                c.ca_certs
                    .iter()
                    .any(|ca| ca.subject_name().try_cmp(name).ok() == Some(Ordering::Equal))
            })
        })
    }

    fn seen(&self, name: &X509NameRef) -> Vec<X509> {
        self.0
            .iter()
            .flat_map(|t| t.trust.load().seen.issuers_named(name))
            .collect()
    }
}

/// Why a fetched CRL is not in force. Logged with the URL and shown as `last_error` in `/status`.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("listener {listener}: {source}")]
    Rebuild {
        listener: String,
        source: TrustError,
    },
    /// The blocking task that ran [`accept`] panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(tokio::task::JoinError),
}

/// Puts `bytes` in as the CRL of `url` if [`admit`] takes it: every listener's trust state is
/// rebuilt with it and all are swapped, or none is and the previous body stays. Established
/// connections see the new generation on their next request and re-check their chain.
pub fn accept(
    revocation: &Revocation,
    targets: &[Target],
    url: &HttpUrl,
    bytes: Vec<u8>,
    source: BodySource,
) -> Result<Vec<HeldCrl>, AcceptError> {
    let store = &revocation.urls;
    let _build = revocation.build_lock();
    let (previous, held) = {
        let t = store.table();
        let e = t.get(url);
        (
            e.and_then(|e| e.body.clone()),
            e.map(|e| e.held.clone()).unwrap_or_default(),
        )
    };
    if previous.as_deref() == Some(&bytes) {
        let body = previous.unwrap_or_default();
        store.record_success(url, source, body, held.clone());
        return Ok(held);
    }
    let admitted = match admit(&bytes, &held, &TargetIssuers(targets)) {
        Ok(h) => h,
        Err(refusal) => {
            let mut t = store.table();
            let e = t.entry(url.clone()).or_default();
            e.waiting_for = refusal.waits_for().map(str::to_string);
            return Err(refusal.into());
        }
    };
    let body = Arc::new(bytes);
    store.table().entry(url.clone()).or_default().body = Some(body.clone());
    let mut built = Vec::new();
    for t in targets.iter().filter(|t| t.tls.crl_fetch.is_some()) {
        match t
            .trust
            .load()
            .reload(&t.tls, &revocation.fetched_for(&t.tls))
        {
            Ok(state) => built.push((t, state)),
            Err(e) => {
                store.table().entry(url.clone()).or_default().body = previous;
                return Err(AcceptError::Rebuild {
                    listener: t.name.clone(),
                    source: e,
                });
            }
        }
    }
    for (t, state) in built {
        tracing::info!(listener = %t.name, url = url.as_str(), generation = state.generation, "fetched CRL in effect");
        t.trust.store(Arc::new(state));
    }
    for h in &admitted {
        if let Some(next) = h.next_update {
            crate::metrics::CRL_NEXT_UPDATE
                .with_label_values(&[&h.issuer])
                .set(next as f64);
        }
    }
    store.record_success(url, source, body, admitted.clone());
    Ok(admitted)
}

/// 0–10% of `refresh`, so a fleet restarted together does not fetch in lockstep.
fn jitter(refresh: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = if openssl::rand::rand_bytes(&mut b).is_ok() {
        u32::from_le_bytes(b)
    } else {
        0
    };
    refresh.mul_f64(0.1 * f64::from(r) / f64::from(u32::MAX))
}

/// When to fetch again: `refresh` after this fetch, or at the CRL's nextUpdate if that is
/// sooner (and still ahead), plus jitter.
pub fn next_delay(refresh: Duration, next_update: Option<i64>, now: i64) -> Duration {
    let base = match next_update {
        Some(n) if n > now => refresh.min(Duration::from_secs((n - now) as u64)),
        _ => refresh,
    };
    base + jitter(refresh)
}

/// Fetches `url` for the life of the process.
pub async fn run_url(
    revocation: Arc<Revocation>,
    targets: Arc<Vec<Target>>,
    client: reqwest::Client,
    url: HttpUrl,
    settings: Settings,
) {
    let store = &revocation.urls;
    let mut retry = Duration::from_secs(1);
    loop {
        let (etag, last_modified) = {
            let t = store.table();
            let e = t.get(&url);
            (
                e.and_then(|e| e.etag.clone()),
                e.and_then(|e| e.last_modified.clone()),
            )
        };
        let result = fetch::get(
            &client,
            &url,
            etag.as_deref(),
            last_modified.as_deref(),
            settings.timeout,
            settings.max_bytes,
        )
        .await;
        match result {
            Ok(Fetched::NotModified) => {
                CRL_FETCHES
                    .with_label_values(&[url.as_str(), "not_modified"])
                    .inc();
                let mut t = store.table();
                let e = t.entry(url.clone()).or_default();
                e.last_success = Some(now_unix());
            }
            Ok(Fetched::Body {
                bytes,
                etag,
                last_modified,
            }) => {
                let copy = settings.cache_dir.as_ref().map(|_| bytes.clone());
                // Building trust states reads files: off the event loop.
                let (revocation2, targets2, url2) =
                    (revocation.clone(), targets.clone(), url.clone());
                let verdict = tokio::task::spawn_blocking(move || {
                    accept(&revocation2, &targets2, &url2, bytes, BodySource::Network)
                })
                .await
                .unwrap_or_else(|e| Err(AcceptError::Internal(e)));
                match verdict {
                    Ok(_) => {
                        CRL_FETCHES.with_label_values(&[url.as_str(), "ok"]).inc();
                        {
                            let mut t = store.table();
                            let e = t.entry(url.clone()).or_default();
                            e.etag = etag;
                            e.last_modified = last_modified;
                        }
                        if let (Some(dir), Some(bytes)) = (&settings.cache_dir, copy) {
                            if let Err(e) = cache_dir::store(dir, &url, &bytes) {
                                tracing::warn!(url = url.as_str(), dir = %dir.display(), error = %e, "cannot write the CRL cache; a restart with the URL down will start without it");
                            }
                        }
                    }
                    Err(m) => {
                        tracing::error!(url = url.as_str(), error = %m, "fetched CRL refused; {}", kept(store, &url));
                        store.record_error(&url, &m.to_string());
                    }
                }
            }
            Err(m) => {
                tracing::error!(url = url.as_str(), error = %m, "CRL fetch failed; {}", kept(store, &url));
                store.record_error(&url, &m.to_string());
            }
        }
        let now = now_unix();
        let loaded = store.body(&url).is_some();
        let delay = if loaded {
            let next_update = store.table().get(&url).and_then(|e| e.next_update());
            next_delay(settings.refresh, next_update, now)
        } else {
            let d = retry.min(settings.refresh).min(FIRST_LOAD_RETRY_MAX);
            retry = (retry * 2).min(FIRST_LOAD_RETRY_MAX);
            d
        };
        let wake = {
            let mut t = store.table();
            let e = t.entry(url.clone()).or_default();
            e.next_fetch = Some(now + delay.as_secs() as i64);
            e.wake.clone()
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {
                tracing::info!(url = url.as_str(), "the issuer a refused CRL waited for was seen in a client chain; fetching again");
            }
        }
    }
}

/// What a failed fetch or a refused body leaves in force, in the log's words.
fn kept(store: &super::store::Store, url: &HttpUrl) -> &'static str {
    if store.body(url).is_some() {
        "the last good CRL stays in effect"
    } else {
        "no CRL of this URL is in effect yet (its issuer is uncovered until one loads)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_fetch_comes_at_refresh_or_next_update_with_up_to_ten_percent_jitter() {
        let refresh = Duration::from_secs(3600);
        for _ in 0..50 {
            let d = next_delay(refresh, None, 1000);
            assert!(
                d >= refresh && d <= refresh + Duration::from_secs(360),
                "{d:?}"
            );
            let d = next_delay(refresh, Some(1600), 1000);
            assert!(d >= Duration::from_secs(600), "{d:?}");
            assert!(d <= Duration::from_secs(960), "{d:?}");
            // A nextUpdate already past does not make it fetch in a tight loop.
            assert!(next_delay(refresh, Some(10), 1000) >= refresh);
        }
    }
}
