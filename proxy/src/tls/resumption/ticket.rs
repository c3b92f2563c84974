//! What certgate seals into a session ticket (or keeps beside a cached session), and its
//! byte format. The decoder reads bytes that came back from a client (decrypted and
//! authenticated by the ticket key first), and is fuzzed (`proxy/fuzz`, `resumption_ticket`).

use openssl::x509::X509;

use crate::time::asn1_unix;

/// Ticket contents version; a ticket of another version is ignored (full handshake).
const TICKET_MAGIC: &[u8; 4] = b"CGT2";
/// Intermediates a ticket may carry (the verify depth bounds real chains well below this).
const MAX_INTERMEDIATES: usize = 8;

/// What certgate seals into a ticket (or keeps beside a cached session).
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    /// The process that sealed it ([`origin`]): trust generations count per process, so a
    /// generation only means "nothing changed since" to the process that counted it.
    pub origin: u64,
    pub generation: u64,
    /// Earliest notAfter of the chain, unix seconds.
    pub not_after: i64,
    pub intermediates: Vec<X509>,
}

impl Sealed {
    pub fn anonymous(generation: u64) -> Sealed {
        Sealed {
            origin: origin(),
            generation,
            not_after: i64::MAX,
            intermediates: Vec::new(),
        }
    }

    /// From a verified chain (leaf first, trust anchor last).
    pub fn of(generation: u64, chain: &[X509]) -> Option<Sealed> {
        let not_after = chain.iter().map(|c| asn1_unix(c.not_after())).min()?;
        // The leaf comes from the session itself; the anchor is in the CA bundle (if it leaves
        // the bundle, the re-check fails and the client does a full handshake).
        let intermediates = match chain.len() {
            0..=2 => Vec::new(),
            n => chain[1..n - 1].to_vec(),
        };
        Some(Sealed {
            origin: origin(),
            generation,
            not_after,
            intermediates,
        })
    }

    /// Whether the generation in this ticket was counted by this process (see `origin`).
    pub fn sealed_here(&self) -> bool {
        self.origin != 0 && self.origin == origin()
    }

    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(TICKET_MAGIC);
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.push(u8::try_from(self.intermediates.len()).ok()?);
        for c in &self.intermediates {
            let der = c.to_der().ok()?;
            out.extend_from_slice(&u32::try_from(der.len()).ok()?.to_be_bytes());
            out.extend_from_slice(&der);
        }
        Some(out)
    }

    /// The sealed data of a ticket, or `None` for anything but exactly what `encode` writes.
    pub fn decode(mut data: &[u8]) -> Option<Sealed> {
        fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = data.split_at_checked(n)?;
            *data = rest;
            Some(head)
        }
        if take(&mut data, 4)? != TICKET_MAGIC {
            return None;
        }
        let origin = u64::from_be_bytes(take(&mut data, 8)?.try_into().ok()?);
        let generation = u64::from_be_bytes(take(&mut data, 8)?.try_into().ok()?);
        let not_after = i64::from_be_bytes(take(&mut data, 8)?.try_into().ok()?);
        let count = take(&mut data, 1)?[0] as usize;
        if count > MAX_INTERMEDIATES {
            return None;
        }
        let mut intermediates = Vec::with_capacity(count);
        for _ in 0..count {
            let len = u32::from_be_bytes(take(&mut data, 4)?.try_into().ok()?) as usize;
            intermediates.push(X509::from_der(take(&mut data, len)?).ok()?);
        }
        data.is_empty().then_some(Sealed {
            origin,
            generation,
            not_after,
            intermediates,
        })
    }
}

/// This process's random identity, sealed into its tickets. With `tls.session_ticket_keys`
/// another replica decrypts them too, and its generation 3 is not this process's generation 3:
/// a ticket from elsewhere always has its chain verified again.
pub fn origin() -> u64 {
    static ORIGIN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness the origin is 0 in every process; 0 is never "sealed here", so
        // every ticket then takes the full re-check (slower, never wrong).
        match openssl::rand::rand_bytes(&mut b) {
            Ok(()) => u64::from_be_bytes(b).max(1),
            Err(_) => 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{issue, self_signed_ca, CertSpec};

    #[test]
    fn sealed_round_trips_and_rejects_garbage() {
        let root = self_signed_ca(&CertSpec::with_subject(&[("CN", "root")])).expect("root");
        let mid = issue(&CertSpec::with_subject(&[("CN", "mid")]), &root).expect("mid");
        let leaf = issue(&CertSpec::with_subject(&[("CN", "leaf")]), &mid).expect("leaf");
        let chain = vec![leaf.cert.clone(), mid.cert.clone(), root.cert.clone()];
        let sealed = Sealed::of(7, &chain).expect("sealed");
        assert_eq!(sealed.intermediates.len(), 1);
        let bytes = sealed.encode().expect("encode");
        assert_eq!(Sealed::decode(&bytes), Some(sealed.clone()));
        assert!(sealed.sealed_here());
        let mut elsewhere = sealed.clone();
        elsewhere.origin ^= 1;
        let decoded = Sealed::decode(&elsewhere.encode().expect("encode")).expect("decode");
        assert!(!decoded.sealed_here(), "another replica's ticket");
        for cut in 0..bytes.len() {
            assert_eq!(Sealed::decode(&bytes[..cut]), None, "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Sealed::decode(&longer), None);
        let mut other = bytes;
        other[0] = b'X';
        assert_eq!(Sealed::decode(&other), None);
    }
}
