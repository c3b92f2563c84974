//! One client connection's state beyond its TLS identity, shared by the listener (which
//! creates it after the handshake and wraps the stream in the header guard) and the proxy
//! (which reads it on every request of the connection from the TLS digest).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Waker};

use pingora::protocols::tls::SslDigest;
use tokio::sync::Semaphore;

use super::inventory::Client;
use crate::policy::GroupAttribute;
use crate::tls::acceptor::ConnAuth;
use crate::tls::identity::Identity;
use crate::tls::trust::TrustState;
use crate::tls::verify::AuthFailure;

/// What a connection's handshake established ([`ConnAuth`]) and what the listener adds to it.
/// Stored in the TLS digest, so every request of the connection (HTTP/1.1 keep-alive or
/// HTTP/2 streams) finds it.
pub(crate) struct Connection {
    pub auth: ConnAuth,
    /// Re-armed by the proxy after each response (HTTP/1.1 header limits).
    pub header_guard: Arc<HeaderGuardHandle>,
    /// AWS PrivateLink endpoint id from the PROXY header, for the access log.
    pub vpce_id: Option<Arc<str>>,
    /// The identity's upstream headers as the proxy built them for this connection, with the
    /// group attribute they were built for: built once, not per request.
    pub identity_headers: Mutex<Option<(Option<GroupAttribute>, IdentityHeaders)>>,
    /// The certificate's inventory entry, looked up on the first request with a valid
    /// identity, so later requests only bump its counters.
    pub client: OnceLock<Arc<Client>>,
}

/// The identity of a connection's client as of `trust` (the state current now), or why there
/// is none: a connection without [`Connection`] state presented no certificate.
pub(crate) fn identity<'a>(
    conn: Option<&'a Connection>,
    trust: &TrustState,
) -> Result<&'a Arc<Identity>, AuthFailure> {
    conn.map_or(Err(AuthFailure::NoCertificate), |c| c.auth.identity(trust))
}

/// Header names and values, ready to insert into every upstream request of a connection.
pub(crate) type IdentityHeaders = Arc<[(http::HeaderName, http::HeaderValue)]>;

impl Connection {
    pub(crate) fn new(auth: ConnAuth, vpce_id: Option<Arc<str>>) -> Connection {
        Connection {
            auth,
            header_guard: Arc::default(),
            vpce_id,
            identity_headers: Mutex::new(None),
            client: OnceLock::new(),
        }
    }

    /// The connection a TLS digest belongs to.
    pub(crate) fn of(digest: &SslDigest) -> Option<&Connection> {
        digest.extension.get::<Connection>()
    }

    /// The identity headers cached for `group_attribute`, else those `build` makes (then
    /// cached): rebuilt only if a policy reload changed which attribute names the groups.
    pub(crate) fn identity_headers<E>(
        &self,
        group_attribute: Option<GroupAttribute>,
        build: impl FnOnce() -> Result<IdentityHeaders, E>,
    ) -> Result<IdentityHeaders, E> {
        let mut cached = self
            .identity_headers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((key, headers)) = cached.as_ref() {
            if *key == group_attribute {
                return Ok(headers.clone());
            }
        }
        let built = build()?;
        *cached = Some((group_attribute, built.clone()));
        Ok(built)
    }
}

/// One connection's handle, shared between the guard (which wraps the connection's stream) and
/// the proxy: it re-arms the header limits, can end the connection, and holds the connection's
/// slots for concurrent upstream requests.
#[derive(Debug, Default)]
pub struct HeaderGuardHandle {
    /// What the proxy last told the guard: [`REARM`], [`RECEIVED`] or nothing (0).
    signal: AtomicU8,
    closed: AtomicBool,
    /// The next write is a response head whose body follows (see [`Self::hold_next_write`]).
    hold: AtomicBool,
    /// The task waiting on the connection, woken by [`Self::close`].
    waker: Mutex<Option<Waker>>,
    upstream_slots: OnceLock<Arc<Semaphore>>,
}

/// The response of the current request is complete; the next bytes start a new header.
pub(crate) const REARM: u8 = 1;
/// A request's header was parsed: the bytes that follow are its body.
pub(crate) const RECEIVED: u8 = 2;

impl HeaderGuardHandle {
    /// The response of the current request is complete; the next bytes start a new header.
    pub fn rearm(&self) {
        self.signal.store(REARM, Ordering::Release);
    }

    /// The current request's header was parsed. Said when the request reaches the proxy: a
    /// pipelined request's header can be parsed from bytes read with the previous request,
    /// which the guard never saw as a header; without this it would count the body as one.
    pub fn header_received(&self) {
        self.signal.store(RECEIVED, Ordering::Release);
    }

    /// Ends the connection: its pending and later reads and writes fail (for an upgraded
    /// tunnel whose client lost its access, which sends no further request to refuse).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }

    /// The next write to the client is an HTTP/1.1 response head with a body to follow: it
    /// waits for the body's first piece and leaves with it, in one TLS record.
    pub fn hold_next_write(&self) {
        self.hold.store(true, Ordering::Release);
    }

    /// Whether the write being made is one to hold, cleared.
    pub fn take_hold(&self) -> bool {
        self.hold.swap(false, Ordering::AcqRel)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What the proxy said last since the last call ([`REARM`], [`RECEIVED`] or 0), cleared.
    pub fn take_signal(&self) -> u8 {
        self.signal.swap(0, Ordering::AcqRel)
    }

    /// Wakes the task reading the connection when [`Self::close`] is called.
    pub fn park(&self, cx: &Context<'_>) {
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
    }

    /// This connection's slots for requests talking to the upstream at the same time, `size`
    /// of them (fixed by the first caller: the listener's limit).
    pub fn upstream_slots(&self, size: usize) -> Arc<Semaphore> {
        self.upstream_slots
            .get_or_init(|| Arc::new(Semaphore::new(size)))
            .clone()
    }
}
