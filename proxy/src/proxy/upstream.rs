//! The listener's upstream as a Pingora peer, built once instead of per request.
//!
//! `HttpPeer::new` with a `host:port` string resolves it with the blocking system resolver, on
//! the request path. An IP upstream is therefore built once; a host name (a compose service, a
//! Kubernetes Service) is resolved asynchronously and re-resolved at most every
//! [`REFRESH`], so a moved container is found again without a restart. When a refresh fails the
//! last address keeps serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::config::{ListenerConfig, Timeouts};

/// The error type of an upstream host name that does not resolve. Pingora has no type of its
/// own for it, and its `ConnectNoRoute` means a network the host cannot reach (EHOSTUNREACH,
/// ENETUNREACH), which sends an operator to the routing table rather than to DNS.
pub(crate) const UNRESOLVED: &str = "UpstreamNameUnresolved";

/// How long a resolved upstream address is used before it is looked up again.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

pub(crate) struct Upstream {
    authority: String,
    timeouts: Timeouts,
    /// An IP literal never needs resolving again.
    literal: bool,
    resolved: ArcSwapOption<(HttpPeer, Instant)>,
}

impl Upstream {
    pub(crate) fn new(config: &ListenerConfig) -> Upstream {
        let authority = config.upstream.authority.clone();
        let literal = config.upstream.literal;
        let up = Upstream {
            literal: literal.is_some(),
            timeouts: config.timeouts.clone(),
            authority,
            resolved: ArcSwapOption::empty(),
        };
        if let Some(addr) = literal {
            up.resolved
                .store(Some((up.peer_for(addr), Instant::now()).into()));
        }
        up
    }

    fn peer_for(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let t = &self.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.read);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    /// The peer for this request.
    pub(crate) async fn peer(&self) -> pingora::Result<Box<HttpPeer>> {
        let cached = self.resolved.load_full();
        if let Some(c) = &cached {
            if self.literal || c.1.elapsed() < REFRESH {
                return Ok(Box::new(c.0.clone()));
            }
        }
        let why = match tokio::net::lookup_host(self.authority.as_str()).await {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => {
                    let peer = self.peer_for(addr);
                    self.resolved
                        .store(Some((peer.clone(), Instant::now()).into()));
                    return Ok(Box::new(peer));
                }
                None => "no address".to_string(),
            },
            Err(e) => e.to_string(),
        };
        tracing::warn!(upstream = %self.authority, error = %why, "cannot resolve the upstream");
        match cached {
            Some(c) => {
                // Keep the last address and try again after another period.
                self.resolved
                    .store(Some((c.0.clone(), Instant::now()).into()));
                Ok(Box::new(c.0.clone()))
            }
            None => Err(Error::explain(
                ErrorType::Custom(UNRESOLVED),
                format!("{}: {why}", self.authority),
            )),
        }
    }
}
