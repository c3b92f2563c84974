//! The fetch loop of each URL, and what happens to a body it brings: verified by building every
//! listener's trust state with it (exactly the code that loads file CRLs), then swapped in for
//! all listeners at once, or refused with the last good CRL kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::fetch::{self, Fetched};
use super::store::{self, BodyFacts, CRL_FETCHES};
use super::{build_lock, cache_dir};
use crate::config::TlsConfig;
use crate::time::{asn1_unix, now_unix};
use crate::tls::dn::rfc2253;
use crate::tls::trust::{parse_crls, TrustState};

/// A CA's clock may run a little ahead of ours; more than this and thisUpdate is "in the future".
const CLOCK_SKEW: i64 = 300;
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

pub fn settings_for(targets: &[Target], url: &str, discovered: bool) -> Option<Settings> {
    targets
        .iter()
        .filter_map(|t| t.tls.crl_fetch.as_ref())
        .find(|f| {
            if discovered {
                f.from_certificates
            } else {
                f.urls.iter().any(|u| u == url)
            }
        })
        .map(|f| Settings {
            refresh: f.refresh,
            timeout: f.timeout,
            max_bytes: f.max_bytes,
            cache_dir: f.cache_dir.clone(),
        })
}

/// Why a fetched (or cached) body is not taken as a CRL.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyRefused {
    /// Neither PEM nor DER CRLs: the parser's message.
    #[error("{0}")]
    NotACrl(String),
    #[error("the body holds no CRL")]
    Empty,
    #[error("the CRL of {issuer} has its thisUpdate in the future ({ahead}s ahead); check the CA's clock")]
    FutureThisUpdate { issuer: String, ahead: i64 },
}

/// Parses a body and refuses what no file CRL would be allowed to be either.
pub fn facts(bytes: &[u8]) -> Result<BodyFacts, BodyRefused> {
    let crls = parse_crls(bytes).map_err(BodyRefused::NotACrl)?;
    if crls.is_empty() {
        return Err(BodyRefused::Empty);
    }
    let now = now_unix();
    let mut facts = BodyFacts::default();
    for crl in &crls {
        let this_update = asn1_unix(crl.last_update());
        if this_update > now + CLOCK_SKEW {
            return Err(BodyRefused::FutureThisUpdate {
                issuer: rfc2253(crl.issuer_name()),
                ahead: this_update - now,
            });
        }
        facts.issuers.push(rfc2253(crl.issuer_name()));
        facts.this_update = Some(
            facts
                .this_update
                .map_or(this_update, |t| t.max(this_update)),
        );
        if let Some(next) = crl.next_update().map(asn1_unix) {
            facts.next_update = Some(facts.next_update.map_or(next, |n| n.min(next)));
        }
        facts.revoked += crl.get_revoked().map_or(0, |r| r.len());
    }
    Ok(facts)
}

/// Puts `bytes` in as the CRL of `url`: every listener's trust state is rebuilt with it and
/// all are swapped, or none is and the previous body stays. Established connections see the
/// new generation on their next request and re-check their chain.
pub fn accept(
    targets: &[Target],
    url: &str,
    bytes: Vec<u8>,
    source: &'static str,
) -> Result<BodyFacts, String> {
    let facts = facts(&bytes).map_err(|e| e.to_string())?;
    let _build = build_lock();
    let previous = {
        let mut t = store::table();
        let e = t.entry(url.to_string()).or_default();
        if e.body.as_deref() == Some(&bytes) {
            drop(t);
            store::record_success(url, source, facts.clone());
            return Ok(facts);
        }
        e.body.replace(Arc::new(bytes))
    };
    let mut built = Vec::new();
    for t in targets.iter().filter(|t| t.tls.crl_fetch.is_some()) {
        let generation = t.trust.load().generation + 1;
        match TrustState::load(&t.tls, generation) {
            Ok(state) => built.push((t, state)),
            Err(e) => {
                store::table().entry(url.to_string()).or_default().body = previous;
                return Err(format!("listener {}: {e}", t.name));
            }
        }
    }
    for (t, state) in built {
        tracing::info!(listener = %t.name, url, generation = state.generation, "fetched CRL in effect");
        t.trust.store(Arc::new(state));
    }
    if let Some(next) = facts.next_update {
        for issuer in &facts.issuers {
            crate::metrics::CRL_NEXT_UPDATE
                .with_label_values(&[issuer])
                .set(next as f64);
        }
    }
    store::record_success(url, source, facts.clone());
    Ok(facts)
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
    targets: Arc<Vec<Target>>,
    client: reqwest::Client,
    url: String,
    settings: Settings,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let (etag, last_modified) = {
            let t = store::table();
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
                CRL_FETCHES.with_label_values(&[&url, "not_modified"]).inc();
                let mut t = store::table();
                let e = t.entry(url.clone()).or_default();
                e.last_success = Some(crate::time::now_rfc3339());
            }
            Ok(Fetched::Body {
                bytes,
                etag,
                last_modified,
            }) => {
                let copy = settings.cache_dir.as_ref().map(|_| bytes.clone());
                // Building trust states reads files: off the event loop.
                let (targets2, url2) = (targets.clone(), url.clone());
                let verdict =
                    tokio::task::spawn_blocking(move || accept(&targets2, &url2, bytes, "network"))
                        .await
                        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
                match verdict {
                    Ok(_) => {
                        CRL_FETCHES.with_label_values(&[&url, "ok"]).inc();
                        {
                            let mut t = store::table();
                            let e = t.entry(url.clone()).or_default();
                            e.etag = etag;
                            e.last_modified = last_modified;
                        }
                        if let (Some(dir), Some(bytes)) = (&settings.cache_dir, copy) {
                            if let Err(e) = cache_dir::store(dir, &url, &bytes) {
                                tracing::warn!(url, dir = %dir.display(), error = %e, "cannot write the CRL cache; a restart with the URL down will start without it");
                            }
                        }
                    }
                    Err(m) => {
                        tracing::error!(url, error = %m, "fetched CRL refused; the last good CRL stays in effect");
                        store::record_error(&url, &m);
                    }
                }
            }
            Err(m) => {
                tracing::error!(url, error = %m, "CRL fetch failed; the last good CRL stays in effect");
                store::record_error(&url, &m.to_string());
            }
        }
        let now = now_unix();
        let loaded = store::body(&url).is_some();
        let delay = if loaded {
            let next_update = store::table().get(&url).and_then(|e| e.next_update);
            next_delay(settings.refresh, next_update, now)
        } else {
            let d = retry.min(settings.refresh).min(FIRST_LOAD_RETRY_MAX);
            retry = (retry * 2).min(FIRST_LOAD_RETRY_MAX);
            d
        };
        if let Some(e) = store::table().get_mut(&url) {
            e.next_fetch = Some(now + delay.as_secs() as i64);
        }
        tokio::time::sleep(delay).await;
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

    #[test]
    fn garbage_and_future_crls_are_refused() {
        assert!(facts(b"<html>not found</html>").is_err());
        assert!(facts(b"").is_err());
        let mut s = crate::pki::CertSpec::with_subject(&[("CN", "Fetch CA")]);
        s.is_ca = true;
        let ca = crate::pki::self_signed_ca(&s).unwrap();
        let good = crate::pki::make_crl(&ca, &[&ca.cert], -1, 7, 1).unwrap();
        let f = facts(&good.to_der().unwrap()).unwrap();
        assert_eq!(f.issuers, vec!["CN=Fetch CA".to_string()]);
        assert_eq!(f.revoked, 1);
        let future = crate::pki::make_crl(&ca, &[], 1, 7, 2).unwrap();
        let e = facts(&future.to_pem().unwrap()).unwrap_err();
        assert!(matches!(e, BodyRefused::FutureThisUpdate { .. }), "{e}");
        assert!(e.to_string().contains("in the future"), "{e}");
    }
}
