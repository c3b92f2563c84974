//! `from_certificates`: the CRL Distribution Point URLs of the CAs in `client_ca` and of every
//! certificate of each verified chain (leaves included: under RFC 5280 a leaf's CDP is where
//! its issuer's CRL lives). Each URL is handed to the fetcher the first time it is seen; until
//! its CRL arrives, that issuer is one without a loaded CRL.

use std::sync::atomic::{AtomicBool, Ordering};

use once_cell::sync::OnceCell;
use openssl::x509::X509Ref;
use tokio::sync::mpsc::UnboundedSender;

use super::schedule::Target;
use super::Revocation;
use crate::config::HttpUrl;

/// Distinct discovered URLs kept at most. Only CA-issued certificates of verified chains get
/// here, so real fleets stay far below; past it new URLs are ignored (and logged once).
const MAX_URLS: usize = 1024;

/// Where discovered URLs go: the fetcher's queue, once a listener asks for discovery (until
/// then, and for `check` and `explain`, chains are not looked at).
#[derive(Debug, Default)]
pub struct Discovery {
    sender: OnceCell<UnboundedSender<HttpUrl>>,
    /// The "too many" warning was logged.
    full: AtomicBool,
}

impl Revocation {
    /// Turns discovery on when a listener asks for it, and queues the CDPs of its CAs.
    pub(super) fn enable_discovery(&self, targets: &[Target], tx: UnboundedSender<HttpUrl>) {
        let wanted = targets
            .iter()
            .filter(|t| {
                t.tls
                    .crl_fetch
                    .as_ref()
                    .is_some_and(|f| f.from_certificates)
            })
            .collect::<Vec<_>>();
        if wanted.is_empty() || self.discovery.sender.set(tx).is_err() {
            return;
        }
        for t in wanted {
            if let Some(client) = &t.trust.load().client {
                self.chain_verified(client.ca_certs.iter().map(|c| c.as_ref()));
            }
        }
    }

    /// Called with each chain that verified: queues the URLs not seen before.
    pub fn chain_verified<'a>(&self, chain: impl IntoIterator<Item = &'a X509Ref>) {
        let Some(tx) = self.discovery.sender.get() else {
            return;
        };
        for cert in chain {
            for url in cdp_urls(cert) {
                let mut t = self.urls.table();
                if t.get(&url).is_some_and(|s| s.discovered) {
                    continue;
                }
                if t.len() >= MAX_URLS {
                    if !self.discovery.full.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            max = MAX_URLS,
                            "too many CRL distribution points; new ones are not fetched"
                        );
                    }
                    continue;
                }
                t.entry(url.clone()).or_default().discovered = true;
                drop(t);
                let _ = tx.send(url);
            }
        }
    }
}

/// The http(s) URLs of a certificate's CRL Distribution Points extension.
pub fn cdp_urls(cert: &X509Ref) -> Vec<HttpUrl> {
    let Some(points) = cert.crl_distribution_points() else {
        return Vec::new();
    };
    points
        .iter()
        .filter_map(|p| p.distpoint().and_then(|d| d.fullname()))
        .flat_map(|names| names.iter().filter_map(|n| n.uri()))
        .filter_map(|u| HttpUrl::parse(u).ok())
        .collect()
}
