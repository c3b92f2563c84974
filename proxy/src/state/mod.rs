//! What the parts of a running process share: the validated config, each listener's swappable
//! trust state and policy, and the drain. It sits below the listener, proxy, reloader and admin
//! endpoint, so each of them reaches the others' data through here rather than through
//! `server`.

pub(crate) mod asker;
pub(crate) mod connection;
pub(crate) mod inventory;

pub(crate) use connection::{Connection, HeaderGuardHandle, IdentityHeaders};
pub(crate) use inventory::Inventory;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::{Config, ListenerConfig};
use crate::policy::Policy;
use crate::tls::revocation::Revocation;
use crate::tls::trust::{FetchedCrl, TrustState};

/// What one listener serves with, shared by its connections. Trust and policy are swapped by
/// the reloader; the rest needs a restart.
pub struct Listener {
    pub config: ListenerConfig,
    pub trust: Arc<ArcSwap<TrustState>>,
    pub policy: Arc<ArcSwapOption<Policy>>,
}

/// What the running process shares between its proxy, admin endpoint and reloader.
pub(crate) struct Shared {
    pub config: Config,
    pub listeners: Vec<Arc<Listener>>,
    pub started: AtomicBool,
    /// Every listener address is bound (checked by `/readyz` until true).
    pub listening: AtomicBool,
    pub drain: Arc<Drain>,
    /// The client certificates seen, for `/clients` and the expiry metric.
    pub inventory: Arc<Inventory>,
    /// Fetched CRLs, discovery and OCSP answers, for every listener (see
    /// [`crate::tls::revocation`]); the listeners' trust states hold the same value.
    pub revocation: Arc<Revocation>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        listeners: Vec<Arc<Listener>>,
        revocation: Arc<Revocation>,
    ) -> Shared {
        let names = listeners
            .iter()
            .map(|l| Arc::from(l.config.name.as_str()))
            .collect();
        let inventory = Arc::new(Inventory::new(config.clients_max, names));
        Shared {
            inventory,
            config,
            listeners,
            started: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            drain: Arc::default(),
            revocation,
        }
    }
}

/// Whether the process is draining (SIGTERM/SIGINT arrived), and how many client connections
/// are still open over all listeners, so a drain can end as soon as they are gone.
#[derive(Debug, Default)]
pub struct Drain {
    draining: AtomicBool,
    open: AtomicUsize,
}

impl Drain {
    /// From now on keep-alive ends and `/readyz` answers 503.
    pub fn start(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Open client connections over all listeners.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    pub fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Loads the trust state and policy of every listener, each with the CRLs `revocation` has
/// fetched for its `tls`. Used at start.
pub(crate) fn load_listeners(
    config: &Config,
    revocation: &Arc<Revocation>,
) -> anyhow::Result<Vec<Arc<Listener>>> {
    config
        .listeners
        .iter()
        .map(|l| load_listener(l, &revocation.fetched_for(&l.tls), revocation))
        .collect()
}

/// One listener's trust state (with the CRLs `fetched` for it, telling `revocation` of the
/// issuers it sees) and policy, with its name on any error.
pub(crate) fn load_listener(
    l: &ListenerConfig,
    fetched: &[FetchedCrl],
    revocation: &Arc<Revocation>,
) -> anyhow::Result<Arc<Listener>> {
    let trust = TrustState::load(&l.tls, &l.name, fetched, revocation)
        .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.name))?;
    let policy = match &l.policy {
        Some(p) => Some(Arc::new(
            Policy::load(p).map_err(|e| anyhow::anyhow!("listener {}: {e}", l.name))?,
        )),
        None => None,
    };
    Ok(Arc::new(Listener {
        config: l.clone(),
        trust: Arc::new(ArcSwap::from_pointee(trust)),
        policy: Arc::new(ArcSwapOption::new(policy)),
    }))
}

#[cfg(test)]
mod tests {
    use super::Drain;

    #[test]
    fn drain_counts_connections_and_remembers_the_signal() {
        let drain = Drain::default();
        assert!(!drain.is_draining());
        drain.connection_opened();
        drain.connection_opened();
        drain.connection_closed();
        assert_eq!(drain.open(), 1);
        drain.start();
        assert!(drain.is_draining());
    }
}
