//! Bounds on requests talking to the upstream at the same time: per client connection (an
//! HTTP/2 connection multiplexes many streams, and one whose client never opens its window
//! would otherwise hold an upstream connection per stream) and per listener. A request waits
//! for a slot at most the connect timeout, then gets 503.

use std::sync::Arc;
use std::time::Duration;

use pingora::{Error, ErrorType};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ListenerConfig;
use crate::state::Connection;

/// The error type of a request that found no free slot in time.
pub const BUSY: &str = "busy";

#[derive(Clone)]
pub struct UpstreamSlots {
    listener: Arc<Semaphore>,
    per_connection: usize,
    wait: Duration,
}

impl UpstreamSlots {
    pub fn new(config: &ListenerConfig) -> UpstreamSlots {
        UpstreamSlots {
            listener: Arc::new(Semaphore::new(config.limits.upstream_connections)),
            per_connection: config.limits.upstream_per_connection,
            wait: config.timeouts.connect,
        }
    }

    /// One of the connection's slots, then one of the listener's (in that order, so a request
    /// waiting on its own connection holds nothing the listener's other clients need). Both are
    /// held until the request ends.
    pub async fn take(
        &self,
        conn: Option<&Connection>,
    ) -> pingora::Result<Vec<OwnedSemaphorePermit>> {
        let mut pools = Vec::with_capacity(2);
        if let Some(conn) = conn {
            pools.push(conn.header_guard.upstream_slots(self.per_connection));
        }
        pools.push(self.listener.clone());
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut permits = Vec::with_capacity(pools.len());
        for pool in pools {
            match tokio::time::timeout_at(deadline, pool.acquire_owned()).await {
                Ok(Ok(p)) => permits.push(p),
                _ => {
                    return Err(Error::explain(
                        ErrorType::Custom(BUSY),
                        "no free upstream slot",
                    ))
                }
            }
        }
        Ok(permits)
    }
}
