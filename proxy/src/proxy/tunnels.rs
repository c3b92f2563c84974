//! Open upgraded connections (WebSocket tunnels) of one listener. A tunnel carries no further
//! request that could be refused, so when a reload changes the trust state (CA bundle, CRLs)
//! or the policy, every open tunnel is decided again, by the same rule as a request, and one
//! that is no longer allowed is closed: counted in `certgate_tunnels_closed_total` and logged
//! with its user.
//!
//! A watcher task runs only while tunnels are open; it compares each tunnel's trust generation
//! and policy with the listener's current ones a few times a second, and with OCSP on looks up
//! the responder's cached word on each tunnel's certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::protocols::tls::SslDigest;

use crate::metrics;
use crate::policy::Policy;
use crate::policy::{authorize, Refusal, Verdict};
use crate::state::Listener;
use crate::state::{connection, Connection, HeaderGuardHandle};
use crate::tls::revocation::ocsp::Ocsp;
use crate::tls::verify::AuthFailure;

/// How often the watcher looks for a reload: well inside the 2 s a reload may take to reach
/// open tunnels.
const POLL: Duration = Duration::from_millis(250);

/// What a tunnel was allowed as, and how to end it.
pub(crate) struct Tunnel {
    /// The connection's TLS digest, which carries its verified chain ([`Connection`]).
    pub digest: Option<Arc<SslDigest>>,
    pub handle: Arc<HeaderGuardHandle>,
    pub method: String,
    pub path: String,
    /// Allowed by the root token, which no reload changes.
    pub root: bool,
    /// For the log line.
    pub user: String,
    /// The trust generation and policy it was last decided under.
    pub generation: u64,
    pub policy: Option<Arc<Policy>>,
}

#[derive(Default)]
struct Open {
    next: u64,
    tunnels: HashMap<u64, Tunnel>,
    watching: bool,
}

pub(crate) struct Tunnels {
    listener: Arc<Listener>,
    ocsp: Arc<Ocsp>,
    open: Mutex<Open>,
}

/// Removes its tunnel from the registry when the request ends (it lives in the request context).
pub(crate) struct Registration {
    tunnels: Arc<Tunnels>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tunnels.lock().tunnels.remove(&self.id);
    }
}

impl Tunnels {
    pub(crate) fn new(listener: Arc<Listener>, ocsp: Arc<Ocsp>) -> Arc<Tunnels> {
        Arc::new(Tunnels {
            listener,
            ocsp,
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an open tunnel (call from inside the listener's runtime).
    pub(crate) fn register(self: &Arc<Self>, tunnel: Tunnel) -> Registration {
        let mut open = self.lock();
        let id = open.next;
        open.next += 1;
        open.tunnels.insert(id, tunnel);
        if !open.watching {
            open.watching = true;
            let me = self.clone();
            tokio::spawn(async move { me.watch().await });
        }
        Registration {
            tunnels: self.clone(),
            id,
        }
    }

    async fn watch(self: Arc<Self>) {
        loop {
            tokio::time::sleep(POLL).await;
            if !self.recheck() {
                return;
            }
        }
    }

    /// Decides every tunnel whose trust generation or policy is not the current one again and
    /// closes those now refused; with OCSP on, also closes a tunnel whose certificate the
    /// responder now says is revoked (its cached answer is asked again once it expires, so at
    /// most every `max_age`). Returns false (and stops watching) when none is open.
    fn recheck(&self) -> bool {
        let trust = self.listener.trust.load_full();
        let policy = self.listener.policy.load_full();
        let mut open = self.lock();
        if open.tunnels.is_empty() {
            open.watching = false;
            return false;
        }
        let name = &self.listener.config.name;
        let ocsp = &self.listener.config.tls.ocsp;
        let ocsp_name: Option<Arc<str>> =
            (ocsp.mode != crate::config::OcspMode::Off).then(|| Arc::from(name.as_str()));
        for t in open.tunnels.values_mut() {
            if t.root || t.handle.is_closed() {
                continue;
            }
            let conn = t.digest.as_deref().and_then(Connection::of);
            if let (Some(listener), Some(conn)) = (&ocsp_name, conn) {
                if let [leaf, issuer, ..] = conn.auth.chain() {
                    let verdict = self.ocsp.handshake_verdict(listener, ocsp, leaf, issuer);
                    if verdict == Some(Err(AuthFailure::Revoked)) {
                        close(
                            name,
                            t,
                            AuthFailure::Revoked.label(),
                            401,
                            AuthFailure::Revoked.reason(),
                            "the OCSP responder says its certificate is revoked",
                        );
                        continue;
                    }
                }
            }
            let same_policy = match (&t.policy, &policy) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if t.generation == trust.generation && same_policy {
                continue;
            }
            t.generation = trust.generation;
            t.policy = policy.clone();
            let identity = connection::identity(conn, &trust).map(|id| &**id);
            let verdict = authorize(
                crate::state::asker::asker(identity),
                policy.as_deref(),
                t.root,
                &t.method,
                &t.path,
            );
            let Verdict::Deny(refusal) = verdict else {
                continue;
            };
            let label = match (&refusal, identity) {
                (Refusal::Unauthenticated(_), Err(f)) => f.label(),
                _ => "policy",
            };
            close(
                name,
                t,
                label,
                refusal.status(),
                refusal.reason(),
                "a reload withdrew its access",
            );
        }
        true
    }
}

/// Ends a tunnel no longer allowed: counted, logged with its user, closed.
fn close(listener: &str, t: &Tunnel, label: &str, status: u16, reason: &str, why: &str) {
    metrics::TUNNELS_CLOSED
        .with_label_values(&[listener, label])
        .inc();
    tracing::warn!(
        listener = %listener,
        user = %t.user,
        method = %t.method,
        path = %t.path,
        status = status,
        reason = %reason,
        "upgraded connection closed: {why}"
    );
    t.handle.close();
}
