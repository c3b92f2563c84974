//! TLS session resumption that keeps the reload guarantees.
//!
//! OpenSSL resumes a session without running the certificate callback or verifying the client
//! chain again, so a plain session cache would let a certificate revoked (or no longer trusted)
//! since its first handshake back in for the session's lifetime. certgate therefore decides
//! every resumption itself, before OpenSSL accepts it:
//!
//! - **Tickets** (TLS 1.2 and 1.3): each ticket carries, encrypted and authenticated with the
//!   listener's ticket key, the trust generation the chain was verified under, the earliest
//!   notAfter of that chain, and the chain's intermediates. On decryption the ticket is used
//!   only if the trust state has not changed since and the chain is still within its validity
//!   period, or else if the chain verifies again against the current CA bundle and CRLs.
//!   Otherwise OpenSSL is told to ignore the ticket, and the client gets a full handshake,
//!   where it meets the usual verdict (alert or 401).
//! - **Session-ID cache** (TLS 1.2 clients without tickets): held by certgate, not OpenSSL
//!   (`NO_INTERNAL`), so the same check runs on every lookup.
//! - **Ticket keys** are random, held only in memory, and rotate every session lifetime; the
//!   previous key still decrypts (and triggers a fresh ticket) for one more lifetime.
//!
//! A resumed connection gets the chain from the check, so the per-request re-check after a
//! later reload works exactly as for a full handshake.

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_long, c_uchar, c_void};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslAcceptorBuilder, SslContext, SslRef, SslSession, SslSessionCacheMode, SslVersion,
};
use openssl::x509::{X509Ref, X509VerifyResult, X509};
use openssl_sys as ffi;

use crate::metrics;
use crate::time::{asn1_unix, now_unix};
use crate::tls::trust::TrustState;

/// Most TLS 1.2 sessions the session-ID cache holds per listener (oldest dropped first).
const CACHE_CAPACITY: usize = 20_000;
/// Ticket contents version; a ticket of another version is ignored (full handshake).
const TICKET_MAGIC: &[u8; 4] = b"CGT1";
/// Intermediates a ticket may carry (the verify depth bounds real chains well below this).
const MAX_INTERMEDIATES: usize = 8;

extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(
        ctx: *mut ffi::SSL_CTX,
        cb: Option<
            unsafe extern "C" fn(
                *mut ffi::SSL,
                *mut c_uchar,
                *mut c_uchar,
                *mut ffi::EVP_CIPHER_CTX,
                *mut ffi::EVP_MAC_CTX,
                c_int,
            ) -> c_int,
        >,
    ) -> c_int;
    fn SSL_CTX_set_session_ticket_cb(
        ctx: *mut ffi::SSL_CTX,
        gen_cb: Option<unsafe extern "C" fn(*mut ffi::SSL, *mut c_void) -> c_int>,
        dec_cb: Option<
            unsafe extern "C" fn(
                *mut ffi::SSL,
                *mut ffi::SSL_SESSION,
                *const c_uchar,
                usize,
                c_int,
                *mut c_void,
            ) -> c_int,
        >,
        arg: *mut c_void,
    ) -> c_int;
    fn SSL_SESSION_set1_ticket_appdata(
        ss: *mut ffi::SSL_SESSION,
        data: *const c_void,
        len: usize,
    ) -> c_int;
    fn SSL_SESSION_get0_ticket_appdata(
        ss: *mut ffi::SSL_SESSION,
        data: *mut *mut c_void,
        len: *mut usize,
    ) -> c_int;
    fn SSL_SESSION_get0_peer(ss: *mut ffi::SSL_SESSION) -> *mut ffi::X509;
    fn SSL_SESSION_dup(ss: *const ffi::SSL_SESSION) -> *mut ffi::SSL_SESSION;
    fn SSL_CTX_set_timeout(ctx: *mut ffi::SSL_CTX, t: c_long) -> c_long;
    fn OSSL_PARAM_construct_utf8_string(
        key: *const c_char,
        buf: *mut c_char,
        bsize: usize,
    ) -> ffi::OSSL_PARAM;
}

// SSL_TICKET_STATUS and SSL_TICKET_RETURN (openssl/ssl.h).
const TICKET_SUCCESS: c_int = 5;
const TICKET_SUCCESS_RENEW: c_int = 6;
const TICKET_RETURN_IGNORE_RENEW: c_int = 2;
const TICKET_RETURN_USE: c_int = 3;
const TICKET_RETURN_USE_RENEW: c_int = 4;

/// What a connection's client chain was checked under: stored on the `SSL` by the certificate
/// callback (full handshake) or by the resumption check, read when a ticket is issued and when
/// the connection's `ConnAuth` is built.
#[derive(Clone, Default)]
pub struct Checked {
    /// Trust generation of the state the chain was verified against.
    pub generation: u64,
    /// The chain, leaf first; empty until known (full handshakes use OpenSSL's verified chain).
    pub chain: Vec<X509>,
}

fn checked_index() -> Index<Ssl, Checked> {
    static INDEX: OnceLock<Index<Ssl, Checked>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL ex_data index"))
}

fn resumption_index() -> Index<SslContext, Arc<Resumption>> {
    static INDEX: OnceLock<Index<SslContext, Arc<Resumption>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index().expect("OpenSSL ex_data index"))
}

/// Records the trust generation a full handshake verifies under (certificate callback).
pub fn set_checked_generation(ssl: &mut SslRef, generation: u64) {
    ssl.set_ex_data(
        checked_index(),
        Checked {
            generation,
            chain: Vec::new(),
        },
    );
}

/// The check this connection's chain passed: the generation, and for a resumed session the
/// chain (OpenSSL keeps no verified chain on resumption).
pub fn checked(ssl: &SslRef) -> Option<&Checked> {
    ssl.ex_data(checked_index())
}

/// One listener's resumption state, stored on its `SSL_CTX`.
pub struct Resumption {
    listener: String,
    state: Arc<ArcSwap<TrustState>>,
    lifetime: Duration,
    keys: Mutex<TicketKeys>,
    cache: Mutex<SessionCache>,
}

/// Enables tickets and the session-ID cache on `b`, every resumption checked against `state`.
pub fn enable(
    b: &mut SslAcceptorBuilder,
    listener: &str,
    state: Arc<ArcSwap<TrustState>>,
    lifetime: Duration,
) -> Result<(), String> {
    let resumption = Arc::new(Resumption {
        listener: listener.to_string(),
        state,
        lifetime,
        keys: Mutex::new(TicketKeys::new().map_err(|e| format!("ticket key: {e}"))?),
        cache: Mutex::default(),
    });
    b.set_ex_data(resumption_index(), resumption.clone());
    // TLS 1.3: one ticket per full handshake is enough for a client that resumes serially.
    b.set_num_tickets(1).map_err(|e| format!("tickets: {e}"))?;
    b.set_session_cache_mode(SslSessionCacheMode::SERVER | SslSessionCacheMode::NO_INTERNAL);
    let cache = resumption.clone();
    b.set_new_session_callback(move |ssl, session| cache.store(ssl, session));
    let cache = resumption;
    // SAFETY: the callback returns sessions created by this context and never blocks.
    unsafe {
        b.set_get_session_callback(move |ssl, id| cache.lookup(ssl, id));
    }
    let ctx = b.as_ptr();
    // SAFETY: `ctx` is the builder's live SSL_CTX; the callbacks are plain functions that find
    // their state through the context's ex_data, which lives as long as the context.
    unsafe {
        SSL_CTX_set_timeout(ctx, lifetime.as_secs() as c_long);
        if SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, Some(ticket_key_cb)) != 1
            || SSL_CTX_set_session_ticket_cb(
                ctx,
                Some(ticket_generate_cb),
                Some(ticket_decrypt_cb),
                std::ptr::null_mut(),
            ) != 1
        {
            return Err("cannot install the session ticket callbacks".into());
        }
    }
    Ok(())
}

/// The client chain this connection was admitted with, leaf first: OpenSSL's verified chain
/// after a full handshake, the resumption check's chain after a resumption.
pub fn verified_chain(ssl: &SslRef) -> Vec<X509> {
    match ssl.verified_chain() {
        Some(c) if !c.is_empty() => c.iter().map(|x| x.to_owned()).collect(),
        _ => checked(ssl).map(|c| c.chain.clone()).unwrap_or_default(),
    }
}

/// The listener's resumption state, from the context of `ssl`.
fn of(ssl: &SslRef) -> Option<&Arc<Resumption>> {
    ssl.ssl_context().ex_data(resumption_index())
}

impl Resumption {
    /// Whether a session may resume: `Some(check)` to resume with that chain, `None` for a full
    /// handshake. A session without a client certificate (anonymous, `optional`) resumes as
    /// anonymous.
    fn admit(&self, peer: Option<&X509Ref>, sealed: Option<&Sealed>) -> Option<Checked> {
        let state = self.state.load();
        let Some(peer) = peer else {
            return Some(Checked {
                generation: state.generation,
                chain: Vec::new(),
            });
        };
        let verdict = match sealed {
            None => Err("no verified chain"),
            Some(s) => {
                let mut chain = Vec::with_capacity(1 + s.intermediates.len());
                chain.push(peer.to_owned());
                chain.extend(s.intermediates.iter().cloned());
                if s.generation == state.generation && now_unix() < s.not_after {
                    // Nothing was reloaded since the chain verified and it has not expired:
                    // the verdict stands without redoing the signatures.
                    Ok(chain)
                } else {
                    state.verified_chain(&chain).map_err(|f| f.reason())
                }
            }
        };
        match verdict {
            Ok(chain) => {
                metrics::RESUMPTIONS
                    .with_label_values(&[&self.listener, "resumed"])
                    .inc();
                Some(Checked {
                    generation: state.generation,
                    chain,
                })
            }
            Err(why) => {
                metrics::RESUMPTIONS
                    .with_label_values(&[&self.listener, "refused"])
                    .inc();
                tracing::debug!(listener = %self.listener, reason = why, "session not resumed: full handshake");
                None
            }
        }
    }

    /// What to seal into a ticket or cache entry for the connection `ssl`; `None` when its
    /// client certificate did not verify (such sessions never resume).
    fn seal(&self, ssl: &SslRef) -> Option<Sealed> {
        let checked = checked(ssl)?;
        if ssl.peer_certificate().is_none() {
            return Some(Sealed::anonymous(checked.generation));
        }
        if ssl.verify_result() != X509VerifyResult::OK {
            return None;
        }
        Sealed::of(checked.generation, &verified_chain(ssl))
    }

    fn store(&self, ssl: &mut SslRef, session: SslSession) {
        // TLS 1.3 resumes by ticket only; the cache is for TLS 1.2 session IDs.
        if ssl.version2() != Some(SslVersion::TLS1_2) {
            return;
        }
        let Some(sealed) = self.seal(ssl) else {
            return;
        };
        let Some(copy) = detached(&session) else {
            return;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(session.id().to_vec(), copy, sealed);
    }

    fn lookup(&self, ssl: &mut SslRef, id: &[u8]) -> Option<SslSession> {
        let (session, sealed) = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(id, self.lifetime)?
        };
        // SAFETY: the session is alive (we hold a reference); get0 borrows its peer.
        let peer = unsafe {
            let p = SSL_SESSION_get0_peer(session.as_ptr());
            (!p.is_null()).then(|| X509Ref::from_ptr(p))
        };
        match self.admit(peer, Some(&sealed)) {
            Some(checked) => {
                ssl.set_ex_data(checked_index(), checked);
                detached(&session)
            }
            None => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.remove(id);
                None
            }
        }
    }
}

/// A copy of `session` that no connection holds. OpenSSL marks a connection's session as not
/// resumable when the connection is freed without a close_notify sent (`ssl_clear_bad_session`),
/// which is how most HTTP connections end; the cache therefore keeps, and hands out, copies.
fn detached(session: &SslSession) -> Option<SslSession> {
    // SAFETY: `session` is alive; SSL_SESSION_dup returns a new owned session or NULL.
    unsafe {
        let copy = SSL_SESSION_dup(session.as_ptr());
        (!copy.is_null()).then(|| SslSession::from_ptr(copy))
    }
}

/// What certgate seals into a ticket (or keeps beside a cached session).
#[derive(Clone, Debug, PartialEq)]
struct Sealed {
    generation: u64,
    /// Earliest notAfter of the chain, unix seconds.
    not_after: i64,
    intermediates: Vec<X509>,
}

impl Sealed {
    fn anonymous(generation: u64) -> Sealed {
        Sealed {
            generation,
            not_after: i64::MAX,
            intermediates: Vec::new(),
        }
    }

    /// From a verified chain (leaf first, trust anchor last).
    fn of(generation: u64, chain: &[X509]) -> Option<Sealed> {
        let not_after = chain.iter().map(|c| asn1_unix(c.not_after())).min()?;
        // The leaf comes from the session itself; the anchor is in the CA bundle (if it leaves
        // the bundle, the re-check fails and the client does a full handshake).
        let intermediates = match chain.len() {
            0..=2 => Vec::new(),
            n => chain[1..n - 1].to_vec(),
        };
        Some(Sealed {
            generation,
            not_after,
            intermediates,
        })
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(TICKET_MAGIC);
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

    fn decode(mut data: &[u8]) -> Option<Sealed> {
        fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = data.split_at_checked(n)?;
            *data = rest;
            Some(head)
        }
        if take(&mut data, 4)? != TICKET_MAGIC {
            return None;
        }
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
            generation,
            not_after,
            intermediates,
        })
    }
}

/// TLS 1.2 sessions by ID, oldest evicted first.
#[derive(Default)]
struct SessionCache {
    entries: HashMap<Vec<u8>, (SslSession, Sealed, Instant)>,
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    fn insert(&mut self, id: Vec<u8>, session: SslSession, sealed: Sealed) {
        if id.is_empty() {
            return;
        }
        while self.entries.len() >= CACHE_CAPACITY {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.entries.remove(&old);
        }
        if self
            .entries
            .insert(id.clone(), (session, sealed, Instant::now()))
            .is_none()
        {
            self.order.push_back(id);
        }
    }

    fn get(&mut self, id: &[u8], lifetime: Duration) -> Option<(SslSession, Sealed)> {
        let (session, sealed, at) = self.entries.get(id)?;
        if at.elapsed() > lifetime {
            self.remove(id);
            return None;
        }
        Some((session.clone(), sealed.clone()))
    }

    fn remove(&mut self, id: &[u8]) {
        if self.entries.remove(id).is_some() {
            self.order.retain(|k| k != id);
        }
    }
}

/// The current ticket key and the one before it.
struct TicketKeys {
    current: TicketKey,
    previous: Option<TicketKey>,
}

struct TicketKey {
    name: [u8; 16],
    aes: [u8; 32],
    hmac: [u8; 32],
    created: Instant,
}

impl TicketKey {
    fn random() -> Result<TicketKey, openssl::error::ErrorStack> {
        let mut k = TicketKey {
            name: [0; 16],
            aes: [0; 32],
            hmac: [0; 32],
            created: Instant::now(),
        };
        openssl::rand::rand_priv_bytes(&mut k.name)?;
        openssl::rand::rand_priv_bytes(&mut k.aes)?;
        openssl::rand::rand_priv_bytes(&mut k.hmac)?;
        Ok(k)
    }
}

impl TicketKeys {
    fn new() -> Result<TicketKeys, openssl::error::ErrorStack> {
        Ok(TicketKeys {
            current: TicketKey::random()?,
            previous: None,
        })
    }

    /// The key to encrypt with, rotated once it is a lifetime old.
    fn for_encryption(&mut self, lifetime: Duration) -> &TicketKey {
        if self.current.created.elapsed() >= lifetime {
            if let Ok(fresh) = TicketKey::random() {
                self.previous = Some(std::mem::replace(&mut self.current, fresh));
            }
        }
        &self.current
    }

    /// The key named `name`, and whether the ticket should be renewed (previous key).
    fn for_decryption(&self, name: &[u8], lifetime: Duration) -> Option<(&TicketKey, bool)> {
        if self.current.name == name {
            return Some((&self.current, false));
        }
        // The previous key stops decrypting one lifetime after it was retired.
        self.previous
            .as_ref()
            .filter(|k| k.name == name && k.created.elapsed() < lifetime * 2)
            .map(|k| (k, true))
    }
}

/// OpenSSL's ticket key callback: AES-256-CBC with HMAC-SHA256, keys from the listener's ring.
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut ffi::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut ffi::EVP_CIPHER_CTX,
    mac: *mut ffi::EVP_MAC_CTX,
    encrypt: c_int,
) -> c_int {
    let ssl = SslRef::from_ptr(ssl);
    let Some(r) = of(ssl) else {
        return -1;
    };
    let mut keys = r.keys.lock().unwrap_or_else(|p| p.into_inner());
    let name = std::slice::from_raw_parts_mut(name, 16);
    let iv = std::slice::from_raw_parts_mut(iv, 16);
    let (key, renew) = if encrypt == 1 {
        let key = keys.for_encryption(r.lifetime);
        if openssl::rand::rand_bytes(iv).is_err() {
            return -1;
        }
        name.copy_from_slice(&key.name);
        (key, false)
    } else {
        match keys.for_decryption(name, r.lifetime) {
            Some(k) => k,
            // Unknown or retired key: a full handshake and a fresh ticket.
            None => return 0,
        }
    };
    let mut digest = *b"SHA256\0";
    let params = [
        ffi::OSSL_PARAM_construct_octet_string(
            c"key".as_ptr(),
            key.hmac.as_ptr() as *mut c_void,
            key.hmac.len(),
        ),
        OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), digest.as_mut_ptr() as *mut c_char, 0),
        ffi::OSSL_PARAM_construct_end(),
    ];
    if ffi::EVP_MAC_CTX_set_params(mac, params.as_ptr()) != 1 {
        return -1;
    }
    let init = if encrypt == 1 {
        ffi::EVP_EncryptInit_ex
    } else {
        ffi::EVP_DecryptInit_ex
    };
    let init = init(
        cipher,
        ffi::EVP_aes_256_cbc(),
        std::ptr::null_mut(),
        key.aes.as_ptr(),
        iv.as_ptr(),
    );
    match (init, renew) {
        (1, true) => 2,
        (1, false) => 1,
        _ => -1,
    }
}

/// Called as a ticket is made: seals the connection's verified chain into it. A connection
/// whose client certificate failed gets a ticket without our data, which never resumes.
unsafe extern "C" fn ticket_generate_cb(ssl: *mut ffi::SSL, _arg: *mut c_void) -> c_int {
    let ssl = SslRef::from_ptr(ssl);
    let (Some(r), Some(session)) = (of(ssl), ssl.session()) else {
        return 1;
    };
    if let Some(data) = r.seal(ssl).and_then(|s| s.encode()) {
        SSL_SESSION_set1_ticket_appdata(session.as_ptr(), data.as_ptr().cast(), data.len());
    }
    1
}

/// Called after a ticket is decrypted (or failed to): the gate described in the module docs.
unsafe extern "C" fn ticket_decrypt_cb(
    ssl: *mut ffi::SSL,
    session: *mut ffi::SSL_SESSION,
    _key_name: *const c_uchar,
    _key_name_len: usize,
    status: c_int,
    _arg: *mut c_void,
) -> c_int {
    if session.is_null() || (status != TICKET_SUCCESS && status != TICKET_SUCCESS_RENEW) {
        tracing::debug!(status, "session ticket not decrypted: full handshake");
        return TICKET_RETURN_IGNORE_RENEW;
    }
    let ssl = SslRef::from_ptr_mut(ssl);
    let Some(r) = of(ssl).cloned() else {
        return TICKET_RETURN_IGNORE_RENEW;
    };
    let mut data: *mut c_void = std::ptr::null_mut();
    let mut len = 0usize;
    let sealed = (SSL_SESSION_get0_ticket_appdata(session, &mut data, &mut len) == 1
        && !data.is_null())
    .then(|| Sealed::decode(std::slice::from_raw_parts(data as *const u8, len)))
    .flatten();
    let peer = SSL_SESSION_get0_peer(session);
    let peer = (!peer.is_null()).then(|| X509Ref::from_ptr(peer));
    if sealed.is_none() && peer.is_some() {
        tracing::debug!("session ticket without a verified chain: full handshake");
        return TICKET_RETURN_IGNORE_RENEW;
    }
    match r.admit(peer, sealed.as_ref()) {
        Some(checked) => {
            ssl.set_ex_data(checked_index(), checked);
            // TLS 1.3 clients use a ticket once, so each resumption gets a fresh one (carrying
            // the current trust generation). TLS 1.2 tickets are reused; renewing one there
            // would invalidate the client's copy (OpenSSL clients replace it silently).
            if status == TICKET_SUCCESS_RENEW || ssl.version2() == Some(SslVersion::TLS1_3) {
                TICKET_RETURN_USE_RENEW
            } else {
                TICKET_RETURN_USE
            }
        }
        None => TICKET_RETURN_IGNORE_RENEW,
    }
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

    #[test]
    fn ticket_keys_rotate_and_retire() {
        let lifetime = Duration::from_millis(50);
        let mut keys = TicketKeys::new().expect("keys");
        let first = keys.for_encryption(lifetime).name;
        assert!(matches!(
            keys.for_decryption(&first, lifetime),
            Some((_, false))
        ));
        keys.current.created -= lifetime;
        let second = keys.for_encryption(lifetime).name;
        assert_ne!(first, second);
        // The retired key still decrypts, asking for a fresh ticket.
        assert!(matches!(
            keys.for_decryption(&first, lifetime),
            Some((_, true))
        ));
        if let Some(prev) = keys.previous.as_mut() {
            prev.created -= lifetime * 2;
        }
        assert!(keys.for_decryption(&first, lifetime).is_none());
        assert!(keys.for_decryption(&[0; 16], lifetime).is_none());
    }
}
