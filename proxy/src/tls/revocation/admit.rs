//! The one gate a fetched (or cached) CRL body passes before it can be in force.
//!
//! Whoever controls a CRL's HTTP path (plain HTTP, DNS, the CRL host) can serve any bytes. A
//! body is only ever compared with what is already held for the same issuer at the same URL,
//! and refused when it would move that issuer backwards (a lower CRL number, or without numbers
//! an earlier thisUpdate; a CRL already past its nextUpdate while the held one is not), or when
//! its signature cannot be tied to the issuer. Refusal keeps the held CRL: the caller never
//! replaces anything with a refused body.
//!
//! Signatures of CRLs whose issuer is in `client_ca` are checked when the trust state is
//! built. For an issuer outside the bundle (an intermediate clients send), the keys are those
//! of the issuer certificates seen in verified chains: the body must verify against one of
//! them. With none seen yet, a first CRL is taken and checked when a chain brings the issuer
//! (contract §3); a replacement for a held one waits until the issuer has been seen.

use openssl::x509::{CrlNumber, X509Crl, X509NameRef, X509};

use crate::time::{asn1_unix, now_unix};
use crate::tls::dn::rfc2253;

/// A CA's clock may run a little ahead of ours; more than this and thisUpdate is "in the future".
pub const CLOCK_SKEW: i64 = 300;

/// What is held of one CRL at a URL: enough to tell whether another is older.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCrl {
    pub issuer: String,
    /// The CRL number, big-endian without leading zeros (`None` without the extension).
    pub number: Option<Vec<u8>>,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub revoked: usize,
}

impl HeldCrl {
    pub fn of(crl: &X509Crl) -> HeldCrl {
        let number = crl
            .extension::<CrlNumber>()
            .ok()
            .flatten()
            .and_then(|(_, n)| n.to_bn().ok())
            .map(|n| n.to_vec());
        HeldCrl {
            issuer: rfc2253(crl.issuer_name()),
            number,
            this_update: asn1_unix(crl.last_update()),
            next_update: crl.next_update().map(asn1_unix),
            revoked: crl.get_revoked().map_or(0, |r| r.len()),
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.next_update.is_some_and(|n| n < now)
    }

    /// True when `self` is older than `held` (same issuer).
    fn is_older_than(&self, held: &HeldCrl) -> bool {
        match (&self.number, &held.number) {
            (Some(a), Some(b)) => (a.len(), a) < (b.len(), b),
            _ => self.this_update < held.this_update,
        }
    }

    /// Whether `self` may take the place of `held`, a CRL of the same issuer in force: never
    /// one that moves the issuer backwards, nor one already past its nextUpdate while `held`
    /// is not. File CRLs on reload (`tls::trust`) are held to the same rule.
    pub fn may_replace(&self, held: &HeldCrl, now: i64) -> Result<(), Refusal> {
        if self.is_older_than(held) {
            return Err(Refusal::Older {
                offered: self.number_text(),
                held: held.number_text(),
                offered_at: crate::time::unix_rfc3339(self.this_update),
                held_at: crate::time::unix_rfc3339(held.this_update),
                issuer: self.issuer.clone(),
            });
        }
        if self.expired(now) && !held.expired(now) {
            return Err(Refusal::Expired {
                next_update: self
                    .next_update
                    .map(crate::time::unix_rfc3339)
                    .unwrap_or_default(),
                issuer: self.issuer.clone(),
            });
        }
        Ok(())
    }

    fn number_text(&self) -> String {
        self.number
            .as_ref()
            .map_or_else(|| "none".into(), |n| format!("0x{}", hex::encode(n)))
    }
}

/// Why a body is not taken. Shown as `last_error` in `/status` and logged with the URL.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Neither PEM nor DER CRLs: the parser's message.
    #[error("{0}")]
    NotACrl(String),
    #[error("the body holds no CRL")]
    Empty,
    #[error("the CRL of {issuer} has its thisUpdate in the future ({ahead}s ahead); check the CA's clock")]
    FutureThisUpdate { issuer: String, ahead: i64 },
    #[error("the CRL of {issuer} is older than the one in force (CRL number {offered} < {held}, thisUpdate {offered_at} vs {held_at}); refused so that nothing revoked is let back in")]
    Older {
        issuer: String,
        offered: String,
        held: String,
        offered_at: String,
        held_at: String,
    },
    #[error("the CRL of {issuer} is already past its nextUpdate ({next_update}) while the one in force is not; refused")]
    Expired { issuer: String, next_update: String },
    #[error("the CRL of {issuer} does not verify against the certificate of that issuer that clients present (forged, or signed by another key); refused")]
    Forged { issuer: String },
    #[error("the CRL of {issuer} cannot be verified yet: no certificate of that issuer has been seen in a client chain since start; the CRL in force stays until one is")]
    Unverifiable { issuer: String },
}

impl Refusal {
    /// The issuer a refusal waits to see (a client chain that brings its certificate).
    pub fn waits_for(&self) -> Option<&str> {
        match self {
            Refusal::Unverifiable { issuer } => Some(issuer),
            _ => None,
        }
    }
}

/// Where the keys of issuers come from, for a body's signatures.
pub trait Issuers {
    /// Whether `name` is a CA of `client_ca` (its CRL is verified when the trust state is built).
    fn in_bundle(&self, name: &X509NameRef) -> bool;
    /// Issuer certificates named `name` seen in verified chains.
    fn seen(&self, name: &X509NameRef) -> Vec<X509>;
}

/// For a body checked with nothing held (at start from the cache, by `check`): its signatures
/// are left to the trust state build (bundle CAs) and the first chain through its issuer.
pub struct CheckedLater;

impl Issuers for CheckedLater {
    fn in_bundle(&self, _: &X509NameRef) -> bool {
        true
    }
    fn seen(&self, _: &X509NameRef) -> Vec<X509> {
        Vec::new()
    }
}

/// Parses a body; every CRL in it must pass against what `held` (this URL's CRLs in force)
/// says of its issuer. Returns the CRLs and what to hold from now on.
pub fn admit(
    bytes: &[u8],
    held: &[HeldCrl],
    issuers: &dyn Issuers,
) -> Result<Vec<HeldCrl>, Refusal> {
    let crls = crate::tls::trust::parse_crls(bytes).map_err(Refusal::NotACrl)?;
    if crls.is_empty() {
        return Err(Refusal::Empty);
    }
    let now = now_unix();
    let mut out = Vec::with_capacity(crls.len());
    for crl in &crls {
        let offered = HeldCrl::of(crl);
        if offered.this_update > now + CLOCK_SKEW {
            return Err(Refusal::FutureThisUpdate {
                issuer: offered.issuer,
                ahead: offered.this_update - now,
            });
        }
        let previous = held.iter().find(|h| h.issuer == offered.issuer);
        if let Some(previous) = previous {
            offered.may_replace(previous, now)?;
        }
        let name = crl.issuer_name();
        if !issuers.in_bundle(name) {
            let keys = issuers.seen(name);
            let verified = keys
                .iter()
                .any(|c| c.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false));
            if !verified && !keys.is_empty() {
                return Err(Refusal::Forged {
                    issuer: offered.issuer,
                });
            }
            if !verified && previous.is_some() {
                return Err(Refusal::Unverifiable {
                    issuer: offered.issuer,
                });
            }
        }
        out.push(offered);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Issued};

    fn ca(cn: &str, issuer: Option<&Issued>) -> Issued {
        pki::test_ca(cn, issuer)
    }

    /// A bundle holding `root`, and the issuer certificates in `seen`.
    struct Known<'a> {
        root: &'a Issued,
        seen: Vec<X509>,
    }

    impl Issuers for Known<'_> {
        fn in_bundle(&self, name: &X509NameRef) -> bool {
            self.root.cert.subject_name().try_cmp(name).ok() == Some(std::cmp::Ordering::Equal)
        }
        fn seen(&self, name: &X509NameRef) -> Vec<X509> {
            self.seen
                .iter()
                .filter(|c| c.subject_name().try_cmp(name).ok() == Some(std::cmp::Ordering::Equal))
                .cloned()
                .collect()
        }
    }

    fn der(signer: &Issued, this_days: i64, next_days: i64, number: u64) -> Vec<u8> {
        pki::make_crl(signer, &[], this_days, next_days, number)
            .unwrap()
            .to_der()
            .unwrap()
    }

    #[test]
    fn a_lower_crl_number_or_an_expired_crl_never_replaces_the_held_one() {
        let root = ca("Admit root", None);
        let known = Known {
            root: &root,
            seen: vec![],
        };
        let held = admit(&der(&root, -1, 7, 3), &[], &known).unwrap();
        assert_eq!(held[0].number.as_deref(), Some(&[3u8][..]));
        let e = admit(&der(&root, -1, 7, 1), &held, &known).unwrap_err();
        assert!(matches!(e, Refusal::Older { .. }), "{e}");
        assert!(e.to_string().contains("0x01 < 0x03"), "{e}");
        // The same number again (a re-encoding, a second mirror) is fine; a newer one too.
        admit(&der(&root, -1, 7, 3), &held, &known).unwrap();
        admit(&der(&root, -1, 7, 4), &held, &known).unwrap();
        // Correctly signed, newer, but already past its nextUpdate: refused while held is not.
        let e = admit(&der(&root, -3, -1, 5), &held, &known).unwrap_err();
        assert!(matches!(e, Refusal::Expired { .. }), "{e}");
        // With nothing held, it is what the CA published: in force (and fails closed later).
        admit(&der(&root, -3, -1, 5), &[], &known).unwrap();
    }

    #[test]
    fn without_numbers_an_earlier_this_update_is_older() {
        let a = HeldCrl {
            issuer: "CN=x".into(),
            number: None,
            this_update: 100,
            next_update: None,
            revoked: 0,
        };
        let b = HeldCrl {
            this_update: 200,
            ..a.clone()
        };
        assert!(a.is_older_than(&b));
        assert!(!b.is_older_than(&a));
        let big = HeldCrl {
            number: Some(vec![1, 0]),
            ..a.clone()
        };
        let small = HeldCrl {
            number: Some(vec![0xff]),
            this_update: 300,
            ..a.clone()
        };
        assert!(
            small.is_older_than(&big),
            "256 > 255 whatever thisUpdate says"
        );
    }

    #[test]
    fn an_intermediate_crl_must_verify_against_the_issuer_seen_in_chains() {
        let root = ca("Admit root 2", None);
        let inter = ca("Admit issuing", Some(&root));
        let forger = ca("Admit issuing", None);
        let nobody = Known {
            root: &root,
            seen: vec![],
        };
        let seen = Known {
            root: &root,
            seen: vec![inter.cert.clone()],
        };
        // Nothing held, issuer not seen yet: taken, checked when a chain brings the issuer.
        let held = admit(&der(&forger, -1, 7, 1), &[], &nobody).unwrap();
        // Held, issuer not seen: a replacement waits.
        let e = admit(&der(&inter, -1, 7, 2), &held, &nobody).unwrap_err();
        assert_eq!(e.waits_for(), Some("CN=Admit issuing"));
        // Issuer seen: the forged one is refused whether or not something is held.
        for h in [&held[..], &[]] {
            let e = admit(&der(&forger, -1, 7, 9), h, &seen).unwrap_err();
            assert!(matches!(e, Refusal::Forged { .. }), "{e}");
        }
        admit(&der(&inter, -1, 7, 2), &held, &seen).unwrap();
    }

    #[test]
    fn garbage_and_future_crls_are_refused() {
        let root = ca("Admit root 3", None);
        let known = Known {
            root: &root,
            seen: vec![],
        };
        assert!(matches!(
            admit(b"<html>not found</html>", &[], &known),
            Err(Refusal::NotACrl(_))
        ));
        assert!(admit(b"", &[], &known).is_err());
        let e = admit(&der(&root, 1, 7, 2), &[], &known).unwrap_err();
        assert!(matches!(e, Refusal::FutureThisUpdate { .. }), "{e}");
    }
}
