//! CRLs: times, entries, and the authority key identifier.

use super::*;

#[test]
fn crl_times_and_entries() {
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let a = issue(&client_spec("a"), &ca).expect("a");
    let b = issue(&client_spec("b"), &ca).expect("b");
    let entries = vec![
        RevokedEntry {
            serial: b.cert.serial_number().to_bn().expect("bn"),
            revoked_at: 1_700_000_000,
        },
        RevokedEntry {
            serial: a.cert.serial_number().to_bn().expect("bn"),
            revoked_at: 1_600_000_000,
        },
    ];
    let crl = make_crl_entries(&ca, &entries, 1_700_000_100, 1_800_000_000, u64::MAX).expect("crl");
    let (back, number) = read_crl_entries(&crl).expect("read");
    assert_eq!(number, Some(u64::MAX));
    assert_eq!(back.len(), 2);
    for e in &entries {
        let found = back.iter().find(|x| x.serial == e.serial).expect("entry");
        assert_eq!(found.revoked_at, e.revoked_at);
    }
    // Sorted by serial.
    assert!(back[0].serial < back[1].serial);
    assert_eq!(
        crl.last_update()
            .compare(&Asn1Time::from_unix(1_700_000_100).expect("t"))
            .expect("c"),
        std::cmp::Ordering::Equal
    );
    let next = crl.next_update().expect("next");
    assert_eq!(
        next.compare(&Asn1Time::from_unix(1_800_000_000).expect("t"))
            .expect("c"),
        std::cmp::Ordering::Equal
    );
    assert_eq!(
        crl.issuer_name()
            .try_cmp(ca.cert.subject_name())
            .expect("cmp"),
        std::cmp::Ordering::Equal
    );
    // An empty CRL has no revoked list at all (what OpenSSL writes too).
    let empty = make_crl(&ca, &[], -1, 30, 1).expect("empty");
    assert!(empty.get_revoked().map(|r| r.is_empty()).unwrap_or(true));
}

#[test]
fn crl_aki_without_issuer_ski() {
    // An issuer certificate without a subject key identifier (not one we make, but possible):
    // the AKI is then SHA-1 of its public key, which is what OpenSSL's "hash" SKI would be.
    let ca = self_signed_ca(&ca_spec(KeyKind::EcdsaP256)).expect("ca");
    let ski = ca.cert.subject_key_id().expect("ski").as_slice().to_vec();
    let spki = ca
        .cert
        .public_key()
        .expect("pk")
        .public_key_to_der()
        .expect("der");
    let bits = crate::pki::crl::subject_public_key_bits(&spki).expect("bits");
    assert_eq!(
        openssl::hash::hash(MessageDigest::sha1(), bits)
            .expect("sha1")
            .to_vec(),
        ski
    );
}
