//! Version 2 CRLs signed by an [`Issued`] CA: CRL number and authority key identifier
//! extensions, entries sorted by serial, SHA-256 signature (none for Ed25519).

use anyhow::Context;
use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, BigNumRef};
use openssl::hash::{hash, MessageDigest};
use openssl::x509::extension::CrlNumber;
use openssl::x509::{
    X509Crl, X509CrlBuilder, X509CrlRef, X509Extension, X509Ref, X509RevokedBuilder, X509,
};

use super::{digest_for, now_unix, Issued};

/// One CRL entry.
#[derive(Debug)]
pub struct RevokedEntry {
    pub serial: BigNum,
    /// Revocation time, unix seconds.
    pub revoked_at: i64,
}

/// A CRL from `issuer` revoking `revoked` (each as of now), valid from now +
/// `this_update_days` to now + `next_update_days`.
pub fn make_crl(
    issuer: &Issued,
    revoked: &[&X509],
    this_update_days: i64,
    next_update_days: i64,
    crl_number: u64,
) -> anyhow::Result<X509Crl> {
    let now = now_unix();
    let entries = revoked
        .iter()
        .map(|c| {
            Ok(RevokedEntry {
                serial: c.serial_number().to_bn()?,
                revoked_at: now,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    make_crl_entries(
        issuer,
        &entries,
        now + this_update_days * 86_400,
        now + next_update_days * 86_400,
        crl_number,
    )
}

/// A CRL from explicit entries and unix times (`this_update` = lastUpdate).
pub fn make_crl_entries(
    issuer: &Issued,
    revoked: &[RevokedEntry],
    this_update: i64,
    next_update: i64,
    crl_number: u64,
) -> anyhow::Result<X509Crl> {
    let mut b = X509CrlBuilder::new()?;
    b.set_issuer_name(issuer.cert.subject_name())?;
    let last = Asn1Time::from_unix(this_update as libc::time_t)?;
    b.set_last_update(&last)?;
    let next = Asn1Time::from_unix(next_update as libc::time_t)?;
    b.set_next_update(&next)?;
    for entry in revoked {
        let mut r = X509RevokedBuilder::new()?;
        let serial = entry.serial.to_asn1_integer()?;
        r.set_serial_number(&serial)?;
        let at = Asn1Time::from_unix(entry.revoked_at as libc::time_t)?;
        r.set_revocation_date(&at)?;
        b.add_revoked(r.build())?;
    }
    b.append_extension(CrlNumber::new(BigNum::from_dec_str(&crl_number.to_string())?)?.build()?)?;
    b.append_extension(authority_key_identifier(&issuer.cert)?)?;
    b.sort()?;
    b.sign(&issuer.key, digest_for(&issuer.key))?;
    Ok(b.build()?)
}

/// The entries and CRL number of an existing CRL.
pub fn read_crl_entries(crl: &X509CrlRef) -> anyhow::Result<(Vec<RevokedEntry>, Option<u64>)> {
    let epoch = Asn1Time::from_unix(0)?;
    let mut entries = Vec::new();
    if let Some(revoked) = crl.get_revoked() {
        for r in revoked {
            let d = epoch.diff(r.revocation_date())?;
            entries.push(RevokedEntry {
                serial: r.serial_number().to_bn()?,
                revoked_at: i64::from(d.days) * 86_400 + i64::from(d.secs),
            });
        }
    }
    let number = match crl.extension::<CrlNumber>()? {
        Some((_, n)) => {
            let dec = n.to_bn()?.to_dec_str()?.to_string();
            Some(dec.parse::<u64>().context("CRL number out of range")?)
        }
        None => None,
    };
    Ok((entries, number))
}

/// `AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }` from the
/// issuer's subject key identifier (or, without one, SHA-1 of its public key, RFC 5280 4.2.1.2).
fn authority_key_identifier(issuer: &X509Ref) -> anyhow::Result<X509Extension> {
    let key_id = match issuer.subject_key_id() {
        Some(ski) => ski.as_slice().to_vec(),
        None => {
            let spki = issuer.public_key()?.public_key_to_der()?;
            hash(
                MessageDigest::sha1(),
                subject_public_key_bits(&spki).context("issuer public key")?,
            )?
            .to_vec()
        }
    };
    anyhow::ensure!(key_id.len() < 126, "issuer key identifier too long");
    let mut der = vec![0x30, key_id.len() as u8 + 2, 0x80, key_id.len() as u8];
    der.extend_from_slice(&key_id);
    let oid = Asn1Object::from_str("2.5.29.35")?;
    let value = Asn1OctetString::new_from_bytes(&der)?;
    Ok(X509Extension::new_from_der(&oid, false, &value)?)
}

/// The contents of the subjectPublicKey BIT STRING inside a SubjectPublicKeyInfo (without the
/// unused-bits byte).
pub(crate) fn subject_public_key_bits(spki: &[u8]) -> Option<&[u8]> {
    // One DER TLV: (tag, contents, rest).
    fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *d.first()?;
        let first = *d.get(1)?;
        let (len, hdr) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for b in d.get(2..2 + n)? {
                len = (len << 8) | *b as usize;
            }
            (len, 2 + n)
        };
        let body = d.get(hdr..hdr.checked_add(len)?)?;
        Some((tag, body, &d[hdr + len..]))
    }
    let (tag, seq, _) = tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = tlv(seq)?; // AlgorithmIdentifier
    let (tag, bits, _) = tlv(rest)?;
    if tag != 0x03 {
        return None;
    }
    bits.get(1..)
}

/// Whether `serial` is among `entries`.
pub(crate) fn contains(entries: &[RevokedEntry], serial: &BigNumRef) -> bool {
    entries.iter().any(|e| e.serial.as_ref() == serial)
}
