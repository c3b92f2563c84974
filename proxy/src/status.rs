//! What `/readyz` and `/status` report about the running process: readiness with its reason,
//! each listener's report, the drain and the last reload. The admin endpoint serves it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::reload::{ReloadStatus, Reloader};
use crate::report;
use crate::state::Shared;

/// Where `/status` reads the last reload from: the [`Reloader`], named here so the admin endpoint
/// (which only serves what this module reports) does not depend on the reload machinery.
pub(crate) trait LastReload: Send + Sync {
    fn last(&self) -> ReloadStatus;
}

impl LastReload for Reloader {
    fn last(&self) -> ReloadStatus {
        Reloader::last(self)
    }
}

/// Why the process is not ready, or None.
pub(crate) fn not_ready_reason(shared: &Shared) -> Option<String> {
    if shared.drain.is_draining() {
        return Some("draining".into());
    }
    if !shared.started.load(Ordering::Acquire) {
        return Some("starting".into());
    }
    if !shared.listening.load(Ordering::Acquire) {
        // Pingora binds the listener sockets after start-up, on its own threads.
        match shared
            .listeners
            .iter()
            .flat_map(|l| &l.config.listen)
            .find(|a| !is_bound(a))
        {
            Some(addr) => return Some(format!("listener {addr} not bound yet")),
            None => shared.listening.store(true, Ordering::Release),
        }
    }
    if let Some(reason) = shared.revocation.not_ready_reason() {
        return Some(reason);
    }
    for l in &shared.listeners {
        if l.trust.load().has_expired_crl() {
            return Some(format!(
                "listener {}: a loaded CRL is past its nextUpdate",
                l.config.name
            ));
        }
    }
    None
}

/// Whether a socket listens on `addr`: binding it ourselves fails with "address in use". (A
/// probe connection would be accepted and counted as a failed handshake.)
fn is_bound(addr: &SocketAddr) -> bool {
    matches!(std::net::TcpListener::bind(addr), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

/// The `/status` document: the process, each listener's report and the last reload.
pub(crate) fn status(shared: &Shared, last_reload: &ReloadStatus) -> serde_json::Value {
    let listeners: Vec<_> = shared
        .listeners
        .iter()
        .map(|l| {
            let policy = l.policy.load_full();
            report::listener_report(&l.config, &l.trust.load(), policy.as_deref())
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": shared.config.path.display().to_string(),
        // A reload does not apply the config's own edits: true until a restart does.
        "config_changed_since_start": shared.config.changed_on_disk(),
        "ready": not_ready_reason(shared).is_none(),
        "not_ready_reason": not_ready_reason(shared),
        "draining": shared.drain.is_draining(),
        "listeners": listeners,
        "last_reload": last_reload,
        "crl_fetch": shared.revocation.status_json(),
        "uncovered_issuers": shared
            .listeners
            .iter()
            .flat_map(|l| l.trust.load().seen.status_json())
            .collect::<Vec<_>>(),
        "ocsp": shared.revocation.ocsp().status_json(),
    })
}
