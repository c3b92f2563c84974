//! A reload never moves a CRL file's issuer backwards.
//!
//! Fetched CRLs pass `revocation::admit` before they can be in force; a `tls.crl` file is
//! written by the operator, but a restored backup, a copy from a stale mirror or a deploy of an
//! old bundle would otherwise let every certificate revoked since back in, without a word, on
//! the next reload. So a reloaded file CRL is held to the same rule against the file CRL in
//! force for the same issuer key: never a lower CRL number (without numbers, an earlier
//! thisUpdate), never one past its nextUpdate while the one in force is not. The reload is then
//! refused as any broken file is: the last good state keeps serving, and the error says why.
//!
//! "The same issuer" is the same key, not the same name: `certgate pki init` run again makes a
//! CA of the same name whose CRL numbers start over, and a new CA with its CRL is a rotation,
//! not a rollback. A restart takes the files as they are.

use std::collections::HashMap;

use openssl::x509::X509Crl;

use super::{sha256_der, terr_at, ClientTrust, Source, TrustError};
use crate::time::now_unix;
use crate::tls::coverage::ChainsSeen;
use crate::tls::revocation::admit::HeldCrl;

/// Refuses `next` when one of its file CRLs may not replace the file CRL `current` holds for
/// the same issuer key.
pub(super) fn check(
    current: &ClientTrust,
    next: &ClientTrust,
    seen: &ChainsSeen,
) -> Result<(), TrustError> {
    let in_force: HashMap<[u8; 32], HeldCrl> = file_crls(current, seen)
        .map(|(key, _, crl)| (key, HeldCrl::of(crl)))
        .collect();
    let now = now_unix();
    for (key, source, crl) in file_crls(next, seen) {
        let Some(held) = in_force.get(&key) else {
            continue;
        };
        HeldCrl::of(crl).may_replace(held, now).map_err(|refusal| {
            terr_at(
                source,
                format!(
                    "tls.crl: {refusal}; the last good CRL stays in force: put the CA's newest CRL in the file, or restart certgate if going back is intended"
                ),
            )
        })?;
    }
    Ok(())
}

/// The file CRLs of `trust` whose signing key is known, with that key's certificate
/// fingerprint: the bundle CA that verified it at load, or an issuer certificate clients
/// presented that verifies it. One whose signer is not known yet cannot be compared, and is
/// not.
fn file_crls<'a>(
    trust: &'a ClientTrust,
    seen: &'a ChainsSeen,
) -> impl Iterator<Item = ([u8; 32], &'a Source, &'a X509Crl)> + 'a {
    let mut signer_of: HashMap<usize, [u8; 32]> = HashMap::new();
    for (key, indices) in &trust.crls_by_issuer {
        for &i in indices {
            signer_of.insert(i, *key);
        }
    }
    trust
        .crls
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.source, Source::File(_)))
        .filter_map(move |(i, c)| {
            let key = signer_of.get(&i).copied().or_else(|| {
                seen.issuers_named(c.crl.issuer_name())
                    .iter()
                    .find(|issuer| {
                        issuer
                            .public_key()
                            .and_then(|k| c.crl.verify(&k))
                            .unwrap_or(false)
                    })
                    .map(|issuer| sha256_der(issuer))
            })?;
            Some((key, &c.source, &c.crl))
        })
}
