//! Everything resumption does through OpenSSL's C API that the `openssl` crate does not wrap:
//! the ticket callbacks, the ticket app data, session copies and peers. Every `unsafe` block
//! of session resumption is in this file.

use std::ffi::{c_char, c_int, c_long, c_uchar, c_void};
use std::sync::Arc;
use std::time::Duration;

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ssl::{SslAcceptorBuilder, SslRef, SslSession, SslVersion};
use openssl::x509::X509Ref;
use openssl_sys as ffi;

use super::ticket::Sealed;
use super::{checked_index, of, Resumption};
use crate::tls::acceptor::AcceptorError;

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

/// Installs the session cache lookup and the ticket callbacks of `resumption` on `b`.
pub(super) fn install(
    b: &mut SslAcceptorBuilder,
    resumption: Arc<Resumption>,
    lifetime: Duration,
) -> Result<(), AcceptorError> {
    let cache = resumption;
    // SAFETY: the callback returns sessions created by this context and never blocks.
    unsafe {
        b.set_get_session_callback(move |ssl, id| cache.lookup(ssl, id));
    }
    let ctx = b.as_ptr();
    let timeout = c_long::try_from(lifetime.as_secs()).unwrap_or(c_long::MAX);
    // SAFETY: `ctx` is the builder's live SSL_CTX, borrowed mutably through `b`.
    unsafe { SSL_CTX_set_timeout(ctx, timeout) };
    // SAFETY: as above; the callback is a plain function that finds its state through the
    // connection's context's ex_data, which lives as long as the context.
    let key_cb = unsafe { SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, Some(ticket_key_cb)) };
    // SAFETY: as above, for both callbacks; they take no argument of ours (NULL).
    let session_cb = unsafe {
        SSL_CTX_set_session_ticket_cb(
            ctx,
            Some(ticket_generate_cb),
            Some(ticket_decrypt_cb),
            std::ptr::null_mut(),
        )
    };
    if key_cb != 1 || session_cb != 1 {
        return Err(AcceptorError::TicketCallbacks);
    }
    Ok(())
}

/// The client certificate a session was established with.
pub(super) fn session_peer(session: &SslSession) -> Option<&X509Ref> {
    // SAFETY: the session is alive (we hold a reference); get0 returns its peer (or NULL)
    // without a reference of ours.
    let p = unsafe { SSL_SESSION_get0_peer(session.as_ptr()) };
    // SAFETY: a non-NULL peer is owned by the session, so it lives as long as the borrow of
    // `session` the result is tied to, and is only read through it.
    (!p.is_null()).then(|| unsafe { X509Ref::from_ptr(p) })
}

/// A copy of `session` that no connection holds. OpenSSL marks a connection's session as not
/// resumable when the connection is freed without a close_notify sent (`ssl_clear_bad_session`),
/// which is how most HTTP connections end; the cache therefore keeps, and hands out, copies.
pub(super) fn detached(session: &SslSession) -> Option<SslSession> {
    // SAFETY: `session` is alive; SSL_SESSION_dup only reads it.
    let copy = unsafe { SSL_SESSION_dup(session.as_ptr()) };
    // SAFETY: a non-NULL `copy` is a new session whose one reference is ours to hand over.
    (!copy.is_null()).then(|| unsafe { SslSession::from_ptr(copy) })
}

/// OpenSSL's ticket key callback: AES-256-CBC with HMAC-SHA256, keys from the listener's ring.
///
/// # Safety
///
/// Called by OpenSSL only (installed by [`install`]), with `ssl` the live connection, `name` and
/// `iv` 16-byte buffers (`TLSEXT_KEYNAME_LENGTH`, `EVP_MAX_IV_LENGTH`; read on decryption, written
/// on encryption) and `cipher`, `mac` live contexts for the ticket being made or opened.
unsafe extern "C" fn ticket_key_cb(
    ssl: *mut ffi::SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cipher: *mut ffi::EVP_CIPHER_CTX,
    mac: *mut ffi::EVP_MAC_CTX,
    encrypt: c_int,
) -> c_int {
    // SAFETY: OpenSSL passes the connection the callback runs for, alive for the whole call.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let Some(r) = of(ssl) else {
        return -1;
    };
    // SAFETY: OpenSSL passes a 16-byte key name buffer (TLSEXT_KEYNAME_LENGTH), valid and not
    // otherwise accessed for the whole call: the ticket's name on decryption, ours to fill on
    // encryption.
    let name = unsafe { std::slice::from_raw_parts_mut(name, 16) };
    // SAFETY: as for `name`: a 16-byte IV buffer (EVP_MAX_IV_LENGTH), the ticket's IV on
    // decryption, ours to fill on encryption; it does not overlap `name`.
    let iv = unsafe { std::slice::from_raw_parts_mut(iv, 16) };
    // The file's keys when configured (shared by the replicas), else the in-memory ring. A copy
    // of the key, so neither the trust state nor the ring's lock is held into OpenSSL's calls.
    let state = r.state.load();
    let chosen = match (&state.ticket_keys, encrypt == 1) {
        (Some(file), true) => file.for_encryption().map(|k| (k.clone(), false)),
        (Some(file), false) => file
            .for_decryption(name)
            .map(|(k, renew)| (k.clone(), renew)),
        (None, true) => {
            let mut keys = r.keys.lock().unwrap_or_else(|p| p.into_inner());
            Some((keys.for_encryption(r.lifetime).clone(), false))
        }
        (None, false) => {
            let keys = r.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.for_decryption(name, r.lifetime)
                .map(|(k, renew)| (k.clone(), renew))
        }
    };
    let Some((key, renew)) = chosen else {
        // Unknown or retired key: a full handshake and a fresh ticket (no key at all to
        // encrypt with cannot happen: a key file holds at least one).
        return if encrypt == 1 { -1 } else { 0 };
    };
    if encrypt == 1 {
        if openssl::rand::rand_bytes(iv).is_err() {
            return -1;
        }
        name.copy_from_slice(&key.name);
    }
    let mut digest = *b"SHA256\0";
    // SAFETY: the constructor only records the pointer and length given; `key` outlives
    // `params`, which is used (by EVP_MAC_CTX_set_params below) only within this call, and
    // OpenSSL reads the octet string, never writing through the pointer.
    let key_param = unsafe {
        ffi::OSSL_PARAM_construct_octet_string(
            c"key".as_ptr(),
            key.hmac.as_ptr() as *mut c_void,
            key.hmac.len(),
        )
    };
    // SAFETY: as for `key_param`; `digest` is NUL-terminated (size 0: OpenSSL measures it).
    let digest_param = unsafe {
        OSSL_PARAM_construct_utf8_string(c"digest".as_ptr(), digest.as_mut_ptr() as *mut c_char, 0)
    };
    // SAFETY: builds the terminator from nothing.
    let end = unsafe { ffi::OSSL_PARAM_construct_end() };
    let params = [key_param, digest_param, end];
    // SAFETY: `mac` is the live MAC context OpenSSL passed; `params` is end-terminated and its
    // buffers are alive (see above).
    if unsafe { ffi::EVP_MAC_CTX_set_params(mac, params.as_ptr()) } != 1 {
        return -1;
    }
    let init = if encrypt == 1 {
        ffi::EVP_EncryptInit_ex
    } else {
        ffi::EVP_DecryptInit_ex
    };
    // SAFETY: `cipher` is the live cipher context OpenSSL passed; the cipher is a static
    // OpenSSL object; `key.aes` is 32 bytes (AES-256's key) and `iv` 16 (its block), both alive
    // for the call, which copies them.
    let init = unsafe {
        init(
            cipher,
            ffi::EVP_aes_256_cbc(),
            std::ptr::null_mut(),
            key.aes.as_ptr(),
            iv.as_ptr(),
        )
    };
    match (init, renew) {
        (1, true) => 2,
        (1, false) => 1,
        _ => -1,
    }
}

/// Called as a ticket is made: seals the connection's verified chain into it. A connection
/// whose client certificate failed gets a ticket without our data, which never resumes.
///
/// # Safety
///
/// Called by OpenSSL only (installed by [`install`]), with `ssl` the live connection.
unsafe extern "C" fn ticket_generate_cb(ssl: *mut ffi::SSL, _arg: *mut c_void) -> c_int {
    // SAFETY: OpenSSL passes the connection the callback runs for, alive for the whole call.
    let ssl = unsafe { SslRef::from_ptr(ssl) };
    let (Some(r), Some(session)) = (of(ssl), ssl.session()) else {
        return 1;
    };
    if let Some(data) = r.seal(ssl).and_then(|s| s.encode()) {
        // SAFETY: `session` is the connection's live session; `data` is alive for the call and
        // set1 copies it.
        unsafe {
            SSL_SESSION_set1_ticket_appdata(session.as_ptr(), data.as_ptr().cast(), data.len());
        }
    }
    1
}

/// Called after a ticket is decrypted (or failed to): the gate described in the module docs.
///
/// # Safety
///
/// Called by OpenSSL only (installed by [`install`]), with `ssl` the live connection and
/// `session` NULL or the session decrypted from the ticket, alive for the call.
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
    // SAFETY: OpenSSL passes the connection the callback runs for, alive for the whole call and
    // not otherwise borrowed by us while this reference lives.
    let ssl = unsafe { SslRef::from_ptr_mut(ssl) };
    let Some(r) = of(ssl).cloned() else {
        return TICKET_RETURN_IGNORE_RENEW;
    };
    let mut data: *mut c_void = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: `session` is non-NULL (checked above) and alive for the call; `data` and `len`
    // are valid out-pointers.
    let found = unsafe { SSL_SESSION_get0_ticket_appdata(session, &mut data, &mut len) } == 1;
    let sealed = (found && !data.is_null())
        .then(|| {
            // SAFETY: get0 succeeded with a non-NULL `data`: it points at `len` bytes owned by
            // the session, which outlives this borrow (decode copies what it keeps).
            let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, len) };
            Sealed::decode(bytes)
        })
        .flatten();
    // SAFETY: `session` is non-NULL and alive; get0 returns its peer (or NULL) without a
    // reference of ours.
    let peer = unsafe { SSL_SESSION_get0_peer(session) };
    // SAFETY: a non-NULL peer is owned by `session`, alive for the rest of the call, and only
    // read through this reference.
    let peer = (!peer.is_null()).then(|| unsafe { X509Ref::from_ptr(peer) });
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
