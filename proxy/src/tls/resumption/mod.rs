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
//!   previous key still decrypts (and triggers a fresh ticket) for one more lifetime. With
//!   `tls.session_ticket_keys` they come from a file shared by the replicas instead, part of
//!   the listener's trust state (so reloaded with it): the first key encrypts, every key
//!   decrypts. Tickets carry the sealing process's random origin, so a ticket from another
//!   replica never takes the "nothing changed since" shortcut: its chain is verified again.
//!
//! A resumed connection gets the chain from the check, so the per-request re-check after a
//! later reload works exactly as for a full handshake.
//!
//! Files: `ticket` (what a ticket carries, and its codec), `keys` (the ticket key ring),
//! `cache` (the session-ID cache), `ffi` (every `unsafe` block and OpenSSL callback).

mod cache;
mod ffi;
mod keys;
pub mod ticket;

pub use keys::{FileTicketKeys, KeyFileError};

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslAcceptorBuilder, SslContext, SslRef, SslSession, SslSessionCacheMode, SslVersion,
};
use openssl::x509::{X509Ref, X509VerifyResult, X509};

use crate::metrics;
use crate::time::now_unix;
use crate::tls::acceptor::AcceptorError;
use crate::tls::trust::TrustState;
use cache::SessionCache;
use keys::TicketKeys;
use ticket::Sealed;

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
) -> Result<(), AcceptorError> {
    let resumption = Arc::new(Resumption {
        listener: listener.to_string(),
        state,
        lifetime,
        keys: Mutex::new(TicketKeys::new().map_err(AcceptorError::TicketKey)?),
        cache: Mutex::default(),
    });
    b.set_ex_data(resumption_index(), resumption.clone());
    // TLS 1.3: one ticket per full handshake is enough for a client that resumes serially.
    b.set_num_tickets(1).map_err(AcceptorError::Tickets)?;
    b.set_session_cache_mode(SslSessionCacheMode::SERVER | SslSessionCacheMode::NO_INTERNAL);
    let cache = resumption.clone();
    b.set_new_session_callback(move |ssl, session| cache.store(ssl, session));
    ffi::install(b, resumption, lifetime)?;
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
                if s.sealed_here() && s.generation == state.generation && now_unix() < s.not_after {
                    // This process verified the chain, nothing was reloaded since, and it has
                    // not expired: the verdict stands without redoing the signatures. A ticket
                    // sealed by another replica (shared keys) always verifies again.
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
        let Some(copy) = ffi::detached(&session) else {
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
        match self.admit(ffi::session_peer(&session), Some(&sealed)) {
            Some(checked) => {
                ssl.set_ex_data(checked_index(), checked);
                ffi::detached(&session)
            }
            None => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.remove(id);
                None
            }
        }
    }
}
