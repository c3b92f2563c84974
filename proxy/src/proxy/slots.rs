//! Bounds on requests talking to the upstream at the same time: per client connection (an
//! HTTP/2 connection multiplexes many streams, and one whose client never opens its window
//! would otherwise hold an upstream connection per stream), per client over all its
//! connections (so no one client can take every slot of the listener, however many
//! connections it opens), and per listener. A request waits for its slots at most the connect
//! timeout, then gets 503.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::{Error, ErrorType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ListenerConfig;
use crate::state::Connection;

/// The error type of a request that found no free listener (or connection) slot in time.
pub(crate) const BUSY: &str = "busy";
/// The error type of a request whose client had all its own slots in use the whole time.
pub(crate) const CLIENT_BUSY: &str = "busy_client";

/// Who a request counts against: a verified certificate wherever it connects from, or, with
/// no verified certificate, the address it connects from (after PROXY protocol). An unverified
/// certificate does not count as a client of its own: anyone can make a fresh one per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    /// The certificate's SHA-256 fingerprint.
    Cert([u8; 32]),
    Addr(IpAddr),
    /// No address known (not TCP): such requests share one allowance.
    Unknown,
}

/// The slots a request holds until it ends (dropping this gives them back).
pub(crate) struct Held {
    _permits: Vec<OwnedSemaphorePermit>,
    // Declared after the permits: its client's entry may go only once they are returned.
    _client: ClientLease,
}

#[derive(Clone)]
pub(crate) struct UpstreamSlots {
    listener: Arc<Semaphore>,
    clients: Arc<ClientSlots>,
    per_connection: usize,
    wait: Duration,
}

impl UpstreamSlots {
    pub(crate) fn new(config: &ListenerConfig) -> UpstreamSlots {
        UpstreamSlots {
            listener: Arc::new(Semaphore::new(config.limits.upstream_connections)),
            clients: Arc::new(ClientSlots::new(config.limits.upstream_per_client)),
            per_connection: config.limits.upstream_per_connection,
            wait: config.timeouts.connect,
        }
    }

    /// One of the connection's slots, one of the client's, then one of the listener's (in
    /// that order, so a request waiting on its own connection or client holds nothing other
    /// clients need). All are held until the request ends.
    pub(crate) async fn take(
        &self,
        conn: Option<&Connection>,
        client: ClientKey,
    ) -> pingora::Result<Held> {
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut permits = Vec::with_capacity(3);
        let busy = |what, context| Error::explain(ErrorType::Custom(what), context);
        if let Some(conn) = conn {
            let pool = conn.header_guard.upstream_slots(self.per_connection);
            match tokio::time::timeout_at(deadline, pool.acquire_owned()).await {
                Ok(Ok(p)) => permits.push(p),
                _ => return Err(busy(BUSY, "no free upstream slot on this connection")),
            }
        }
        let (lease, pool) = ClientSlots::lease(&self.clients, client);
        match tokio::time::timeout_at(deadline, pool.acquire_owned()).await {
            Ok(Ok(p)) => permits.push(p),
            _ => {
                return Err(busy(
                    CLIENT_BUSY,
                    "this client's limits.upstream_per_client slots are all in use",
                ))
            }
        }
        match tokio::time::timeout_at(deadline, self.listener.clone().acquire_owned()).await {
            Ok(Ok(p)) => permits.push(p),
            _ => return Err(busy(BUSY, "no free upstream slot")),
        }
        Ok(Held {
            _permits: permits,
            _client: lease,
        })
    }

    /// Clients with a request holding or waiting for one of their slots (entries in the map).
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.len()
    }
}

/// Each client's slots, in a map sharded so that requests of different clients rarely wait on
/// the same lock. An entry lives while some request holds or waits for its semaphore, and goes
/// with the last one: the map holds only clients with requests in flight.
struct ClientSlots {
    shards: Box<[Mutex<HashMap<ClientKey, Entry>>]>,
    hasher: RandomState,
    size: usize,
}

struct Entry {
    slots: Arc<Semaphore>,
    /// Requests holding or waiting for one of `slots`. Counted under the shard's lock, so an
    /// entry is never removed while a request may still take from its semaphore (which would
    /// let a new entry's requests and the old one's add up to more than `size`).
    users: usize,
}

/// A request's claim on its client's entry; dropping it ends the claim.
struct ClientLease {
    clients: Arc<ClientSlots>,
    key: ClientKey,
}

const SHARDS: usize = 16;

impl ClientSlots {
    fn new(size: usize) -> ClientSlots {
        ClientSlots {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            size,
        }
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<HashMap<ClientKey, Entry>> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        &self.shards[i]
    }

    fn lease(clients: &Arc<ClientSlots>, key: ClientKey) -> (ClientLease, Arc<Semaphore>) {
        let slots = {
            let mut shard = clients
                .shard(&key)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let entry = shard.entry(key.clone()).or_insert_with(|| Entry {
                slots: Arc::new(Semaphore::new(clients.size)),
                users: 0,
            });
            entry.users += 1;
            entry.slots.clone()
        };
        let lease = ClientLease {
            clients: clients.clone(),
            key,
        };
        (lease, slots)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for ClientLease {
    fn drop(&mut self) {
        let mut shard = self
            .clients
            .shard(&self.key)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = shard.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(per_client: usize, listener: usize) -> UpstreamSlots {
        UpstreamSlots {
            listener: Arc::new(Semaphore::new(listener)),
            clients: Arc::new(ClientSlots::new(per_client)),
            per_connection: 32,
            wait: Duration::from_millis(50),
        }
    }

    fn addr(last: u8) -> ClientKey {
        ClientKey::Addr(IpAddr::from([10, 0, 0, last]))
    }

    #[tokio::test]
    async fn one_client_gets_its_share_and_others_still_get_slots() {
        let s = slots(2, 4);
        let a1 = s.take(None, addr(1)).await.unwrap();
        let _a2 = s.take(None, addr(1)).await.unwrap();
        let third = s.take(None, addr(1)).await.err().unwrap();
        assert_eq!(third.etype(), &ErrorType::Custom(CLIENT_BUSY));
        let cert = ClientKey::Cert([0xab; 32]);
        let _b = s.take(None, cert.clone()).await.unwrap();
        let _b2 = s.take(None, cert).await.unwrap();
        // The listener is full now: a third client waits on the listener, not on itself.
        let full = s.take(None, addr(3)).await.err().unwrap();
        assert_eq!(full.etype(), &ErrorType::Custom(BUSY));
        drop(a1);
        assert!(s.take(None, addr(1)).await.is_ok());
    }

    #[tokio::test]
    async fn a_client_entry_goes_with_its_last_request() {
        let s = slots(1, 4);
        let a = s.take(None, addr(1)).await.unwrap();
        let b = s.take(None, addr(2)).await.unwrap();
        // A waiter that gives up leaves the holder's entry in place.
        assert!(s.take(None, addr(1)).await.is_err());
        assert_eq!(s.clients(), 2);
        drop(a);
        assert_eq!(s.clients(), 1);
        drop(b);
        assert_eq!(s.clients(), 0);
        // A client that waited in vain on a full listener leaves no entry either.
        let s = slots(1, 1);
        let _a = s.take(None, addr(1)).await.unwrap();
        assert!(s.take(None, addr(2)).await.is_err());
        assert_eq!(s.clients(), 1);
    }
}
