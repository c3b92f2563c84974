//! What one listener has learnt from the client chains it verified, kept across reloads: the
//! issuer certificates clients present (the only keys a fetched CRL of an issuer outside
//! `client_ca` can be verified with), and the issuers that had no CRL when a chain through them
//! was checked (`tls.crl_check`), so an operator sees which CRL is missing instead of learning
//! it from a revoked client that got in.
//!
//! Every trust state of a listener shares one `ChainsSeen`: a reload builds a new state but
//! must not forget which issuers are uncovered or which issuer keys it knows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use openssl::x509::{X509NameRef, X509Ref, X509};

use crate::config::CrlCheck;
use crate::metrics::CRL_UNCOVERED;
use crate::time::{now_unix, unix_rfc3339};
use crate::tls::dn::rfc2253;

/// Issuer certificates remembered per listener. Only certificates of chains that verified
/// against `client_ca` get here, so real deployments stay far below it.
const MAX_ISSUERS: usize = 4096;
/// Distinct uncovered issuers listed in `/status` (and labelled in the metric) at most.
const MAX_UNCOVERED: usize = 256;
/// An uncovered issuer is logged when first seen, then at most this often, so a busy client of
/// an uncovered branch does not flood the log while the gap stays visible.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Which certificate of a chain is being checked, for the coverage rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    Leaf,
    Intermediate,
}

/// One issuer without a CRL, as `/status` lists it (times in Unix seconds).
#[derive(Clone, Debug)]
struct Uncovered {
    first_seen: i64,
    last_seen: i64,
    count: u64,
    refused: bool,
    logged: Instant,
}

pub struct ChainsSeen {
    listener: String,
    check: Option<CrlCheck>,
    /// OCSP answers for the leaf (§3a), so a leaf needs no CRL under `chain`/`leaf`.
    ocsp_covers_leaf: bool,
    issuers: RwLock<HashMap<[u8; 32], X509>>,
    uncovered: Mutex<BTreeMap<String, Uncovered>>,
}

impl ChainsSeen {
    pub fn new(listener: &str, check: Option<CrlCheck>, ocsp_covers_leaf: bool) -> ChainsSeen {
        ChainsSeen {
            listener: listener.to_string(),
            check,
            ocsp_covers_leaf,
            issuers: RwLock::default(),
            uncovered: Mutex::default(),
        }
    }

    /// True when no revocation source is configured: nothing is checked at all.
    pub fn checks_nothing(&self) -> bool {
        self.check.is_none()
    }

    /// Remembers an issuer certificate of a verified chain; true when it is new.
    pub fn remember_issuer(&self, sha256: [u8; 32], cert: &X509Ref) -> bool {
        if self
            .issuers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&sha256)
        {
            return false;
        }
        let mut map = self.issuers.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ISSUERS || map.contains_key(&sha256) {
            return false;
        }
        map.insert(sha256, cert.to_owned());
        true
    }

    /// The issuer certificates seen whose subject is `name`.
    pub fn issuers_named(&self, name: &X509NameRef) -> Vec<X509> {
        self.issuers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| c.subject_name().try_cmp(name).ok() == Some(std::cmp::Ordering::Equal))
            .cloned()
            .collect()
    }

    /// A certificate at `position` whose issuer has no CRL: records it and says whether the
    /// chain must be refused (`revocation status unknown`).
    pub fn uncovered(&self, issuer: &X509Ref, position: Position) -> bool {
        let refuse = match (self.check, position) {
            (None, _) | (Some(CrlCheck::Available), _) => false,
            (Some(_), Position::Leaf) => !self.ocsp_covers_leaf,
            (Some(CrlCheck::Chain), Position::Intermediate) => true,
            (Some(CrlCheck::Leaf), Position::Intermediate) => false,
        };
        if self.check.is_none() || (position == Position::Leaf && self.ocsp_covers_leaf) {
            return refuse;
        }
        let dn = rfc2253(issuer.subject_name());
        let mut map = self.uncovered.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&dn) && map.len() >= MAX_UNCOVERED {
            return refuse;
        }
        let now = now_unix();
        let fresh = !map.contains_key(&dn);
        let entry = map.entry(dn.clone()).or_insert_with(|| Uncovered {
            first_seen: now,
            last_seen: now,
            count: 0,
            refused: false,
            logged: Instant::now(),
        });
        entry.last_seen = now;
        entry.count += 1;
        entry.refused |= refuse;
        let log = fresh || entry.logged.elapsed() >= LOG_EVERY;
        if log {
            entry.logged = Instant::now();
        }
        drop(map);
        CRL_UNCOVERED.with_label_values(&[&dn]).inc();
        if log && refuse {
            tracing::warn!(listener = %self.listener, issuer = %dn, crl_check = ?self.check, "revocation status unknown: no CRL of this issuer is loaded, so its certificates are refused; add its CRL (tls.crl or tls.crl_fetch)");
        } else if log {
            tracing::warn!(listener = %self.listener, issuer = %dn, "no CRL of this issuer is loaded: its certificates are not checked for revocation (crl_check: available)");
        }
        refuse
    }

    /// `/status` → `uncovered_issuers`.
    pub fn status_json(&self) -> Vec<serde_json::Value> {
        self.uncovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(dn, u)| {
                serde_json::json!({
                    "listener": self.listener,
                    "issuer": dn,
                    "first_seen": unix_rfc3339(u.first_seen),
                    "last_seen": unix_rfc3339(u.last_seen),
                    "count": u.count,
                    "refused": u.refused,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn ca(cn: &str) -> X509 {
        crate::pki::test_ca(cn, None).cert
    }

    #[test]
    fn each_mode_refuses_what_it_must_and_records_every_gap() {
        let issuer = ca("Coverage unit CA");
        for (check, ocsp, leaf, inter) in [
            (Some(CrlCheck::Chain), false, true, true),
            (Some(CrlCheck::Chain), true, false, true),
            (Some(CrlCheck::Leaf), false, true, false),
            (Some(CrlCheck::Leaf), true, false, false),
            (Some(CrlCheck::Available), false, false, false),
            (None, false, false, false),
        ] {
            let seen = ChainsSeen::new("unit", check, ocsp);
            assert_eq!(
                seen.uncovered(&issuer, Position::Leaf),
                leaf,
                "{check:?} {ocsp}"
            );
            assert_eq!(
                seen.uncovered(&issuer, Position::Intermediate),
                inter,
                "{check:?} {ocsp}"
            );
            let listed = seen.status_json();
            if check.is_none() {
                assert!(listed.is_empty());
            } else {
                assert_eq!(listed.len(), 1, "{check:?}");
                assert_eq!(listed[0]["issuer"], "CN=Coverage unit CA");
                assert_eq!(listed[0]["refused"], leaf || inter);
            }
        }
    }

    #[test]
    fn issuers_are_remembered_once_and_found_by_name() {
        let seen = ChainsSeen::new("unit", Some(CrlCheck::Chain), false);
        let a = ca("Issuer A");
        let key = crate::tls::trust::sha256_der(&a);
        assert!(seen.remember_issuer(key, &a));
        assert!(!seen.remember_issuer(key, &a));
        assert_eq!(seen.issuers_named(a.subject_name()).len(), 1);
        assert!(seen.issuers_named(ca("Issuer B").subject_name()).is_empty());
    }
}
