//! `from_certificates`: the CRL Distribution Point URLs of the CAs in `client_ca` and of every
//! certificate of each verified chain (leaves included: under RFC 5280 a leaf's CDP is where
//! its issuer's CRL lives). Each URL is handed to the fetcher the first time it is seen; until
//! its CRL arrives, that issuer is one without a loaded CRL.

use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::sync::OnceCell;
use openssl::x509::X509Ref;
use tokio::sync::mpsc::UnboundedSender;

use super::schedule::Target;
use super::store;

/// Distinct discovered URLs kept at most. Only CA-issued certificates of verified chains get
/// here, so real fleets stay far below; past it new URLs are ignored (and logged once).
const MAX_URLS: usize = 1024;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SENDER: OnceCell<UnboundedSender<String>> = OnceCell::new();

/// Turns discovery on when a listener asks for it, and queues the CDPs of its CAs.
pub fn enable(targets: &[Target], tx: UnboundedSender<String>) {
    let wanted = targets
        .iter()
        .filter(|t| {
            t.tls
                .crl_fetch
                .as_ref()
                .is_some_and(|f| f.from_certificates)
        })
        .collect::<Vec<_>>();
    if wanted.is_empty() || SENDER.set(tx).is_err() {
        return;
    }
    ENABLED.store(true, Ordering::Release);
    for t in wanted {
        if let Some(client) = &t.trust.load().client {
            on_chain(client.ca_certs.iter().map(|c| c.as_ref()));
        }
    }
}

/// The http(s) URLs of a certificate's CRL Distribution Points extension.
pub fn cdp_urls(cert: &X509Ref) -> Vec<String> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| p.distpoint().and_then(|d| d.fullname()))
        .flat_map(|names| names.iter().filter_map(|n| n.uri().map(str::to_string)))
        .filter(|u| crate::config::revocation::check_url(u).is_ok())
        .collect()
}

/// Called with each chain that verified: queues the URLs not seen before.
pub fn on_chain<'a>(chain: impl IntoIterator<Item = &'a X509Ref>) {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    let Some(tx) = SENDER.get() else { return };
    for cert in chain {
        for url in cdp_urls(cert) {
            let mut t = store::table();
            if t.get(&url).is_some_and(|s| s.discovered) {
                continue;
            }
            if t.len() >= MAX_URLS {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!(
                        max = MAX_URLS,
                        "too many CRL distribution points; new ones are not fetched"
                    )
                });
                continue;
            }
            t.entry(url.clone()).or_default().discovered = true;
            drop(t);
            let _ = tx.send(url);
        }
    }
}
