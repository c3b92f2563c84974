//! CRLs whose issuer is not in `client_ca`.
//!
//! Operators usually trust only their root and let clients send the issuing intermediate in
//! their chain; the intermediate's CRL then cannot be checked at load, because its issuer's key
//! is not known yet. Such a CRL is accepted at load and filed under its issuer's name. The first
//! time a verified chain presents a certificate with that name as the issuer of another, the
//! CRL's signature is checked against that certificate's key, and the verdict is cached under
//! the SHA-256 of the issuer certificate for the life of the trust state: a reload builds a new
//! state and so starts afresh, and no handshake after the first pays for the signature check.
//!
//! A CRL that names the issuer but does not verify against its key fails every chain through
//! that issuer with `bad certificate` (fail closed: a CRL that cannot be trusted must not let a
//! revoked certificate through, nor be silently ignored), and is logged once per issuer
//! certificate with its file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use openssl::x509::X509Ref;

use super::LoadedCrl;
use crate::tls::dn::rfc2253;
use crate::tls::verify::AuthFailure;

/// Issuer certificates remembered per trust state. Only certificates of chains that verified
/// against the bundle get here, so real deployments stay far below it; past it a verdict is
/// computed each time (correct, only slower) and not logged again.
const MAX_ISSUERS: usize = 4096;

/// How a CRL's signature was (or will be) checked.
#[derive(Debug)]
pub enum CrlSignature {
    /// Against a CA of the bundle, at load.
    AtLoad,
    /// Against the issuer certificate a client presents, on first use.
    Deferred(DeferredStatus),
}

/// What the presented issuers said of a deferred CRL so far, for `/status`.
#[derive(Debug, Default)]
pub struct DeferredStatus {
    verified: AtomicBool,
    failed: AtomicBool,
}

impl CrlSignature {
    /// One line for `/status` and `check`.
    pub fn describe(&self) -> &'static str {
        match self {
            CrlSignature::AtLoad => "verified",
            CrlSignature::Deferred(s) => match (
                s.verified.load(Ordering::Relaxed),
                s.failed.load(Ordering::Relaxed),
            ) {
                (false, false) => "not yet verified",
                (true, false) => "verified",
                (false, true) => "does not verify against the issuer a client presented",
                (true, true) => {
                    "verified against one presented issuer, does not verify against another"
                }
            },
        }
    }

    pub fn is_deferred(&self) -> bool {
        matches!(self, CrlSignature::Deferred(_))
    }
}

/// The CRLs to apply to certificates issued by one issuer certificate, or why none can be.
type Verdict = Result<Arc<[usize]>, AuthFailure>;

/// The deferred CRLs of one trust state and the verdicts reached for each issuer certificate.
#[derive(Default)]
pub(super) struct DeferredCrls {
    /// Indexes (into the trust state's CRL list) of the CRLs whose issuer is not in the bundle.
    indexes: Vec<usize>,
    /// Keyed by the SHA-256 of the issuer certificate's DER.
    verdicts: RwLock<HashMap<[u8; 32], Verdict>>,
}

impl DeferredCrls {
    pub(super) fn push(&mut self, index: usize) {
        self.indexes.push(index);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// The deferred CRLs that apply to certificates `issuer` issued (none when no deferred CRL
    /// names it), each verified against its key; `bad certificate` when one that names it
    /// does not verify. `issuer_sha256` is the SHA-256 of its DER.
    pub(super) fn for_issuer(
        &self,
        crls: &[LoadedCrl],
        issuer: &X509Ref,
        issuer_sha256: [u8; 32],
    ) -> Verdict {
        let read = self.verdicts.read().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = read.get(&issuer_sha256) {
            return v.clone();
        }
        drop(read);
        let mut map = self.verdicts.write().unwrap_or_else(|p| p.into_inner());
        // Another handshake may have decided while this one waited for the lock.
        if let Some(v) = map.get(&issuer_sha256) {
            return v.clone();
        }
        let remember = map.len() < MAX_ISSUERS;
        let verdict = self.decide(crls, issuer, &issuer_sha256, remember);
        if remember {
            map.insert(issuer_sha256, verdict.clone());
        }
        verdict
    }

    fn decide(
        &self,
        crls: &[LoadedCrl],
        issuer: &X509Ref,
        issuer_sha256: &[u8; 32],
        log: bool,
    ) -> Verdict {
        let named: Vec<usize> = self
            .indexes
            .iter()
            .copied()
            .filter(|&i| {
                crls.get(i).is_some_and(|c| {
                    c.crl.issuer_name().try_cmp(issuer.subject_name()).ok()
                        == Some(std::cmp::Ordering::Equal)
                })
            })
            .collect();
        if named.is_empty() {
            return Ok(Arc::from(named));
        }
        let key = issuer.public_key().ok();
        let mut forged = false;
        for &i in &named {
            let loaded = &crls[i];
            let ok = key
                .as_ref()
                .is_some_and(|k| loaded.crl.verify(k).unwrap_or(false));
            if let CrlSignature::Deferred(status) = &loaded.signature {
                let flag = if ok { &status.verified } else { &status.failed };
                flag.store(true, Ordering::Relaxed);
            }
            if ok {
                continue;
            }
            forged = true;
            if log {
                tracing::error!(
                    file = %loaded.source,
                    issuer = %rfc2253(issuer.subject_name()),
                    issuer_sha256 = %hex::encode(issuer_sha256),
                    "the CRL names this issuer but its signature does not verify against the issuer certificate a client presented; chains through that certificate fail with `bad certificate` until the CRL is replaced"
                );
            }
        }
        if forged {
            return Err(AuthFailure::BadCertificate);
        }
        Ok(Arc::from(named))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Issued};

    fn ca(cn: &str, issuer: Option<&Issued>) -> Issued {
        pki::test_ca(cn, issuer)
    }

    fn deferred(crls: &[(&Issued, &str)]) -> (DeferredCrls, Vec<LoadedCrl>) {
        let mut d = DeferredCrls::default();
        let loaded = crls
            .iter()
            .enumerate()
            .map(|(i, (signer, file))| {
                d.push(i);
                let crl = pki::make_crl(signer, &[], -1, 30, 1).unwrap();
                LoadedCrl {
                    issuer_dn: rfc2253(crl.issuer_name()),
                    this_update: 0,
                    next_update: None,
                    revoked_count: 0,
                    source: crate::tls::trust::Source::File(file.into()),
                    signature: CrlSignature::Deferred(Default::default()),
                    crl,
                }
            })
            .collect();
        (d, loaded)
    }

    #[test]
    fn a_verdict_is_reached_once_per_issuer_certificate() {
        let root = ca("Root", None);
        let inter = ca("Issuing", Some(&root));
        let (d, crls) = deferred(&[(&inter, "inter.crl")]);
        assert_eq!(crls[0].signature.describe(), "not yet verified");
        let key = crate::tls::trust::sha256_der(&inter.cert);
        let first = d.for_issuer(&crls, &inter.cert, key).unwrap();
        assert_eq!(&first[..], &[0]);
        assert_eq!(crls[0].signature.describe(), "verified");
        let again = d.for_issuer(&crls, &inter.cert, key).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        // An issuer no deferred CRL names: nothing applies, and that is cached too.
        let root_key = crate::tls::trust::sha256_der(&root.cert);
        assert!(d
            .for_issuer(&crls, &root.cert, root_key)
            .unwrap()
            .is_empty());
        assert_eq!(d.verdicts.read().unwrap().len(), 2);
    }

    #[test]
    fn a_crl_that_names_the_issuer_but_does_not_verify_fails_its_chains() {
        let root = ca("Root", None);
        let inter = ca("Issuing", Some(&root));
        let forger = ca("Issuing", None);
        let key = crate::tls::trust::sha256_der(&inter.cert);
        let (d, crls) = deferred(&[(&forger, "forged.crl")]);
        assert_eq!(
            d.for_issuer(&crls, &inter.cert, key),
            Err(AuthFailure::BadCertificate)
        );
        assert!(crls[0].signature.describe().contains("does not verify"));
        // With the genuine CRL beside it, the forged one still fails the chain.
        let (d, crls) = deferred(&[(&inter, "inter.crl"), (&forger, "forged.crl")]);
        assert_eq!(
            d.for_issuer(&crls, &inter.cert, key),
            Err(AuthFailure::BadCertificate)
        );
    }
}
