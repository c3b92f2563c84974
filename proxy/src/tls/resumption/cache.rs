//! The TLS 1.2 session-ID cache: held by certgate rather than OpenSSL, so every lookup passes
//! the same resumption check as a ticket.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use openssl::ssl::SslSession;

use super::ticket::Sealed;

/// Most TLS 1.2 sessions the session-ID cache holds per listener (oldest dropped first).
const CACHE_CAPACITY: usize = 20_000;

/// TLS 1.2 sessions by ID, oldest evicted first.
#[derive(Default)]
pub(super) struct SessionCache {
    entries: HashMap<Vec<u8>, (SslSession, Sealed, Instant)>,
    order: VecDeque<Vec<u8>>,
}

impl SessionCache {
    pub(super) fn insert(&mut self, id: Vec<u8>, session: SslSession, sealed: Sealed) {
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

    pub(super) fn get(&mut self, id: &[u8], lifetime: Duration) -> Option<(SslSession, Sealed)> {
        let (session, sealed, at) = self.entries.get(id)?;
        if at.elapsed() > lifetime {
            self.remove(id);
            return None;
        }
        Some((session.clone(), sealed.clone()))
    }

    pub(super) fn remove(&mut self, id: &[u8]) {
        if self.entries.remove(id).is_some() {
            self.order.retain(|k| k != id);
        }
    }
}
