//! The TLS side of a listener: a static `SslAcceptor` for what needs a restart to change
//! (versions, ciphers, ALPN), and per-handshake callbacks that take the server certificate, the
//! client CA store and the CRLs from the listener's current [`TrustState`], so reloads reach the
//! next handshake without rebuilding the acceptor.
//!
//! Session resumption (`tls.session_resumption`, on by default) goes through
//! [`resumption`](crate::tls::resumption), which re-checks every resumed session against the
//! current trust state: OpenSSL itself would skip the certificate callback and chain
//! verification, letting a revoked or no-longer-trusted client back in.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{
    AlpnError, SslAcceptor, SslMethod, SslMode, SslOptions, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::{X509Name, X509StoreContextRef, X509VerifyResult, X509};
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::tls::SslStream;
use pingora::tls::ext;
use pingora::tls::ssl::SslRef;

use crate::config::{Alpn, ClientAuth, TlsConfig, TlsVersion};
use crate::tls::identity::{Identity, Presented};
use crate::tls::resumption;
use crate::tls::revocation::Revocation;
use crate::tls::trust::TrustState;
use crate::tls::verify::AuthFailure;

/// Most intermediates a client chain may have between leaf and trust anchor.
pub const MAX_CHAIN_DEPTH: u32 = 8;

/// TLS 1.2 suites unless `tls.ciphers` says: Mozilla's intermediate list without its DHE
/// suites, so no finite-field key exchange in TLS 1.2 either (`tls.groups` has none).
const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// How a handshake ended badly, for the handshake metric and the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client certificate was refused (`client_auth: required`).
    Client(AuthFailure),
    /// Not finished within `timeouts.handshake`.
    Timeout,
    /// Anything else: not TLS, no shared version or cipher, the peer went away.
    Protocol,
    /// A plain HTTP request where the ClientHello should be (the listener answers it 400).
    PlainHttp,
}

/// A handshake that failed: how, and the leaf certificate of a refused client, kept (a
/// reference, not a copy) so that only a refusal pays for rendering it in its log line.
#[derive(Debug)]
pub struct Failed {
    pub failure: HandshakeFailure,
    pub presented: Option<X509>,
}

impl HandshakeFailure {
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Client(f) => f.label(),
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::PlainHttp => "plain_http",
        }
    }
}

/// What a connection's handshake established about the client. The listener stores it in the
/// TLS digest with its own per-connection state, so every request of the connection finds it.
pub struct ConnAuth {
    /// The identity when the certificate verified, else why not.
    pub verdict: Result<Arc<Identity>, AuthFailure>,
    /// What a certificate refused in the handshake claimed (`optional` mode goes on with it),
    /// for the access log; boxed, as most connections have none.
    presented: Option<Box<Presented>>,
    /// The identity of a chain that verified but whose revocation status was unknown (an
    /// issuer without a CRL yet, `tls.crl_check`): once a later trust state covers it, the
    /// connection's next request is decided with it instead of staying refused.
    uncovered: Option<Arc<Identity>>,
    /// The chain OpenSSL verified (leaf first), kept to re-check it after a reload.
    chain: Vec<X509>,
    generation: u64,
    /// (trust generation, verdict under it), so the re-check runs once per reload, not per request.
    recheck: Mutex<(u64, Result<(), AuthFailure>)>,
}

/// Turns a connection's [`ConnAuth`] into what the TLS digest carries (the listener adds its
/// per-connection state).
pub type Attach<'a> = &'a (dyn Fn(ConnAuth) -> Arc<dyn Any + Send + Sync> + Sync);

impl ConnAuth {
    /// The verified chain, leaf first (empty without a certificate).
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    /// The subject DN of the certificate the client presented, whether or not it verified;
    /// empty without one. Never an identity to decide on: for the access log only.
    pub fn presented_subject(&self) -> &str {
        match (&self.verdict, &self.presented) {
            (Ok(identity), _) => &identity.subject_dn,
            (Err(_), Some(p)) => &p.subject_dn,
            (Err(_), None) => "",
        }
    }

    /// The identity as of the current trust state: a certificate revoked, expired or no longer
    /// trusted since the handshake loses it on its next request.
    pub fn identity(&self, state: &TrustState) -> Result<&Arc<Identity>, AuthFailure> {
        let identity = match (&self.verdict, &self.uncovered) {
            (Ok(identity), _) | (Err(AuthFailure::RevocationUnknown), Some(identity)) => identity,
            (Err(f), _) => return Err(*f),
        };
        if state.generation == self.generation {
            return self.verdict.as_ref().map_err(|f| *f);
        }
        let mut cached = self.recheck.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != state.generation {
            *cached = (state.generation, state.reverify(&self.chain));
        }
        cached.1.map(|()| identity)
    }
}

/// Why a listener's TLS settings cannot be built; each names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    #[error("cannot create the TLS acceptor: {0}")]
    Create(ErrorStack),
    #[error("tls.min_version/max_version: {0}")]
    Versions(ErrorStack),
    #[error(
        "tls.ciphers: OpenSSL accepts none of `{ciphers}` ({source}); see `openssl ciphers -v`"
    )]
    Ciphers { ciphers: String, source: ErrorStack },
    #[error("tls.ciphersuites: OpenSSL rejects `{suites}` ({source}); e.g. TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")]
    Ciphersuites { suites: String, source: ErrorStack },
    #[error("tls.groups: OpenSSL rejects `{groups}` ({source}); `openssl list -tls-groups` shows the names it knows")]
    Groups { groups: String, source: ErrorStack },
    #[error("session id context: {0}")]
    SessionIdContext(ErrorStack),
    #[error("tickets: {0}")]
    Tickets(ErrorStack),
    #[error("ticket key: {0}")]
    TicketKey(ErrorStack),
    #[error("cannot install the session ticket callbacks")]
    TicketCallbacks,
}

/// One listener's TLS: static settings plus the swappable trust state.
pub struct ListenerTls {
    acceptor: SslAcceptor,
    client_auth: ClientAuth,
    handshake_timeout: Duration,
    pub state: Arc<ArcSwap<TrustState>>,
    /// Told of each verified chain (CRL discovery); its OCSP answers are applied in the
    /// handshake when OCSP is on.
    revocation: Arc<Revocation>,
    /// When OCSP is on: the listener's name and settings, for the verify callback.
    ocsp: Option<Arc<HandshakeOcsp>>,
}

/// What the verify callback needs of OCSP besides the answers: the listener's name and settings.
struct HandshakeOcsp {
    listener: Arc<str>,
    cfg: crate::config::OcspConfig,
}

impl ListenerTls {
    pub fn new(
        listener: &str,
        tls: &TlsConfig,
        handshake_timeout: Duration,
        state: Arc<ArcSwap<TrustState>>,
        revocation: Arc<Revocation>,
    ) -> Result<ListenerTls, AcceptorError> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(AcceptorError::Create)?;
        let version = |v: TlsVersion| match v {
            TlsVersion::V1_2 => SslVersion::TLS1_2,
            TlsVersion::V1_3 => SslVersion::TLS1_3,
        };
        b.set_min_proto_version(Some(version(tls.min_version)))
            .and_then(|_| b.set_max_proto_version(Some(version(tls.max_version))))
            .map_err(AcceptorError::Versions)?;
        let ciphers = tls.ciphers.as_deref().unwrap_or(DEFAULT_CIPHERS);
        b.set_cipher_list(ciphers)
            .map_err(|source| AcceptorError::Ciphers {
                ciphers: ciphers.to_string(),
                source,
            })?;
        let groups = tls.groups.join(":");
        b.set_groups_list(&groups)
            .map_err(|source| AcceptorError::Groups { groups, source })?;
        if let Some(suites) = &tls.ciphersuites {
            b.set_ciphersuites(suites)
                .map_err(|source| AcceptorError::Ciphersuites {
                    suites: suites.clone(),
                    source,
                })?;
        }
        let mut wire = Vec::new();
        for a in &tls.alpn {
            let p: &[u8] = match a {
                Alpn::H2 => b"h2",
                Alpn::Http11 => b"http/1.1",
            };
            wire.push(p.len() as u8);
            wire.extend_from_slice(p);
        }
        b.set_alpn_select_callback(move |_, client| {
            select_alpn(&wire, client).ok_or(AlpnError::NOACK)
        });
        b.set_session_id_context(listener.as_bytes())
            .map_err(AcceptorError::SessionIdContext)?;
        b.set_options(SslOptions::NO_RENEGOTIATION);
        // OpenSSL reads ahead into its own record buffer (the listener has no L4 read buffer),
        // and an idle keep-alive connection gives that buffer back: idle connections cost no
        // I/O buffers at all, busy ones still read a whole record per syscall.
        b.set_read_ahead(true);
        b.set_mode(SslMode::RELEASE_BUFFERS);
        crate::tls::read_buffer::set(&mut b);
        // Level 2: RSA/DH keys of at least 2048 bits, no SHA-1 signatures, on both sides.
        b.set_security_level(2);
        // Real client chains are 2-3 deep; a deeper one is an attack on verification time.
        b.set_verify_depth(MAX_CHAIN_DEPTH);
        match tls.session_lifetime {
            Some(lifetime) => resumption::enable(&mut b, listener, state.clone(), lifetime)?,
            None => {
                b.set_options(SslOptions::NO_TICKET);
                b.set_session_cache_mode(SslSessionCacheMode::OFF);
                b.set_num_tickets(0).map_err(AcceptorError::Tickets)?;
            }
        }
        Ok(ListenerTls {
            acceptor: b.build(),
            client_auth: tls.client_auth,
            handshake_timeout,
            state,
            revocation,
            ocsp: (tls.ocsp.mode != crate::config::OcspMode::Off).then(|| {
                Arc::new(HandshakeOcsp {
                    listener: Arc::from(listener),
                    cfg: tls.ocsp.clone(),
                })
            }),
        })
    }

    /// How long a connection has from `started` (after its PROXY header) to a finished
    /// handshake: `timeouts.handshake`.
    pub fn handshake_deadline(&self, started: tokio::time::Instant) -> tokio::time::Instant {
        started + self.handshake_timeout
    }

    /// Runs the TLS handshake of one connection, to be done by `deadline` (what the listener
    /// read of the connection before it counts against the same timeout).
    pub async fn handshake(
        &self,
        io: TcpStream,
        attach: Attach<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<SslStream<TcpStream>, Failed> {
        let callbacks = HandshakeCallbacks {
            tls: self,
            refused: Arc::new(Mutex::new(Refused::default())),
            attach,
        };
        let refused = callbacks.refused.clone();
        let failure = match tokio::time::timeout_at(
            deadline,
            handshake_with_callback(&self.acceptor, io, &callbacks),
        )
        .await
        {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => {
                let mut refused = refused.lock().unwrap_or_else(|p| p.into_inner());
                tracing::debug!(error = %e, "TLS handshake failed");
                match refused.failure {
                    Some(f) => {
                        return Err(Failed {
                            failure: HandshakeFailure::Client(f),
                            presented: refused.leaf.take(),
                        })
                    }
                    None if self.client_auth == ClientAuth::Required && is_missing_cert(&e) => {
                        HandshakeFailure::Client(AuthFailure::NoCertificate)
                    }
                    None => HandshakeFailure::Protocol,
                }
            }
            Err(_) => HandshakeFailure::Timeout,
        };
        Err(Failed {
            failure,
            presented: None,
        })
    }
}

/// The first of our protocols (in configured order) that the client offers, as a slice of the
/// client's list (the ALPN callback must return memory OpenSSL owns).
fn select_alpn<'c>(ours: &[u8], client: &'c [u8]) -> Option<&'c [u8]> {
    let theirs = alpn_protocols(client);
    alpn_protocols(ours)
        .into_iter()
        .find_map(|p| theirs.iter().find(|t| **t == p).copied())
}

/// Splits an ALPN wire list (length-prefixed protocol names).
fn alpn_protocols(mut list: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = list.split_first() {
        let Some((p, rest)) = rest.split_at_checked(len as usize) else {
            break;
        };
        out.push(p);
        list = rest;
    }
    out
}

/// OpenSSL's reason when a `required` listener got no certificate.
fn is_missing_cert(e: &pingora::Error) -> bool {
    let text = e.to_string();
    text.contains("peer did not return a certificate") || text.contains("certificate required")
}

/// Per-handshake callbacks: they carry a slot for the reason a client certificate was refused,
/// which OpenSSL otherwise only reports as an alert.
struct HandshakeCallbacks<'a> {
    tls: &'a ListenerTls,
    refused: Arc<Mutex<Refused>>,
    attach: Attach<'a>,
}

/// Why the verify callback refused the client's certificate, and that certificate: a failed
/// handshake leaves nothing else to name the client by.
#[derive(Default)]
struct Refused {
    failure: Option<AuthFailure>,
    leaf: Option<X509>,
}

impl Refused {
    /// Records the first refusal of the chain being verified; later ones follow from it.
    fn refuse(&mut self, failure: AuthFailure, ctx: &X509StoreContextRef) {
        if self.failure.is_none() {
            self.failure = Some(failure);
            // OpenSSL puts the leaf first in the chain before it verifies anything; a reference
            // count, not a copy.
            self.leaf = ctx.chain().and_then(|c| c.get(0)).map(|c| c.to_owned());
        }
    }
}

#[async_trait]
impl TlsAccept for HandshakeCallbacks<'_> {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let state = self.tls.state.load_full();
        // A full handshake verifies under this state; tickets and ConnAuth record which one.
        resumption::set_checked_generation(ssl, state.generation);
        let server = &state.server;
        // A failure here leaves the SSL without a certificate, and the handshake fails cleanly.
        let _ = ext::ssl_use_certificate(ssl, &server.cert);
        let _ = ext::ssl_use_private_key(ssl, &server.key);
        for c in &server.chain {
            let _ = ext::ssl_add_chain_cert(ssl, c);
        }
        let Some(client) = &state.client else {
            ssl.set_verify(SslVerifyMode::NONE);
            return;
        };
        let _ = ext::ssl_set_verify_cert_store(ssl, &client.store);
        if let Ok(mut names) = Stack::<X509Name>::new() {
            for n in &client.ca_names {
                if let Ok(n) = openssl::x509::X509NameRef::to_owned(n) {
                    let _ = names.push(n);
                }
            }
            ssl.set_client_ca_list(names);
        }
        let optional = self.tls.client_auth == ClientAuth::Optional;
        let mode = if optional {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
        };
        let refused = self.refused.clone();
        let ocsp = self.tls.ocsp.clone();
        let revocation = self.tls.revocation.clone();
        ssl.set_verify_callback(mode, move |ok, ctx| {
            // Per connection: never contended.
            let mut slot = refused.lock().unwrap_or_else(|p| p.into_inner());
            if !ok {
                slot.refuse(AuthFailure::from_verify_code(ctx.error().as_raw()), ctx);
                return optional;
            }
            // Depth 0 comes last: OpenSSL has built and checked the whole chain, so our CRL
            // policy (coverage under crl_check; crl_expired) can run on it. Not on a
            // chain that already failed (optional mode goes on after a failure): its
            // certificates are the client's say-so, not to be checked against our CRLs.
            if ctx.error_depth() == 0 && slot.failure.is_none() {
                // The chain verified against client_ca, so its CRL Distribution Points are the
                // CA's word: queued before the revocation check, so that an issuer without a
                // CRL yet (refused below under crl_check) gets one fetched.
                if let Some(chain) = ctx.chain() {
                    revocation.chain_verified(chain.iter());
                }
                let verdict = match ctx.chain() {
                    Some(chain) => state.check_revocation(chain.iter()),
                    None => Err(AuthFailure::BadCertificate),
                };
                if let Err(f) = verdict {
                    ctx.set_error(f.verify_result());
                    slot.refuse(f, ctx);
                    return optional;
                }
                if let Some(chain) = ctx.chain() {
                    if let (Some(o), Some(leaf), Some(issuer)) = (&ocsp, chain.get(0), chain.get(1))
                    {
                        if let Some(Err(f)) =
                            revocation
                                .ocsp()
                                .handshake_verdict(&o.listener, &o.cfg, leaf, issuer)
                        {
                            ctx.set_error(f.verify_result());
                            slot.refuse(f, ctx);
                            return optional;
                        }
                    }
                }
            }
            true
        });
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &SslRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        release_client_ca_list(ssl);
        // A resumed session has no verified chain from OpenSSL: the resumption check kept one.
        let checked = resumption::checked(ssl);
        let generation = checked.map_or_else(|| self.tls.state.load().generation, |c| c.generation);
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failure;
        let peer = ssl.peer_certificate();
        let verdict = match (&peer, refused) {
            (None, _) => Err(AuthFailure::NoCertificate),
            (Some(_), Some(f)) => Err(f),
            (Some(_), None) if ssl.verify_result() != X509VerifyResult::OK => {
                Err(AuthFailure::from_verify_code(ssl.verify_result().as_raw()))
            }
            (Some(cert), None) => Identity::from_x509(cert)
                .map(Arc::new)
                .map_err(|_| AuthFailure::BadCertificate),
        };
        // Only a refused certificate is rendered here; a verified one is its identity.
        let presented = match (&verdict, &peer) {
            (Err(_), Some(cert)) => Some(Box::new(Presented::of(cert))),
            _ => None,
        };
        let chain = resumption::verified_chain(ssl);
        let uncovered = match (&verdict, &peer) {
            (Err(AuthFailure::RevocationUnknown), Some(cert)) if !chain.is_empty() => {
                Identity::from_x509(cert).ok().map(Arc::new)
            }
            _ => None,
        };
        Some((self.attach)(ConnAuth {
            verdict,
            presented,
            uncovered,
            chain,
            generation,
            recheck: Mutex::new((generation, Ok(()))),
        }))
    }
}

/// Frees the client-CA names `certificate_callback` gave this connection: they were for the
/// CertificateRequest, and the connection would otherwise keep its copy of every name in
/// `client_ca` for its whole life (half a KiB per idle connection with one CA). Nothing reads
/// them after the handshake: renegotiation and post-handshake authentication are off.
fn release_client_ca_list(ssl: &SslRef) {
    // SAFETY: `ssl` is a live SSL for the duration of the call, on the task that owns the
    // connection (no other thread uses it during the handshake callback). A null list is
    // allowed: OpenSSL frees the previous list and keeps none.
    unsafe { openssl_sys::SSL_set_client_CA_list(ssl.as_ptr(), std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::{alpn_protocols, select_alpn};

    #[test]
    fn alpn_picks_our_first_protocol_the_client_offers() {
        let ours = b"\x02h2\x08http/1.1";
        assert_eq!(select_alpn(ours, b"\x08http/1.1\x02h2"), Some(&b"h2"[..]));
        assert_eq!(select_alpn(ours, b"\x08http/1.1"), Some(&b"http/1.1"[..]));
        let only_http11 = b"\x08http/1.1";
        assert_eq!(
            select_alpn(only_http11, b"\x02h2\x08http/1.1"),
            Some(&b"http/1.1"[..])
        );
        assert_eq!(select_alpn(ours, b"\x06spdy/3"), None);
        assert_eq!(select_alpn(ours, b""), None);
    }

    #[test]
    fn alpn_lists_that_lie_about_lengths_end_where_they_break() {
        // A length running past the end drops that entry, never reads beyond the list.
        assert_eq!(alpn_protocols(b"\x02h2\x09http/1.1"), vec![&b"h2"[..]]);
        assert!(alpn_protocols(b"\xffh2").is_empty());
        assert_eq!(alpn_protocols(b"\x00\x02h2"), vec![&b""[..], &b"h2"[..]]);
        assert_eq!(select_alpn(b"\x02h2", b"\x05h2"), None);
    }
}
