//! The HTTP side of a listener: what happens to a request once its connection's TLS handshake
//! (in [`crate::listener`]) is done. `exchange` is a request's life in five steps (decide,
//! peer, rewrite, refuse, finish); [`forward`] carries plain requests directly (HTTP/1.1 and
//! HTTP/2 streams to the HTTP/1.1 upstream), and Pingora's `HttpProxy` carries the rest through
//! the thin `ProxyHttp` adapter below, which only calls the same steps.

pub mod access_log;
pub mod dialects;
pub mod errors;
mod exchange;
pub mod forward;
mod slots;
mod tunnels;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

pub use exchange::{Exchange, Outcome};

use crate::state::{Connection, Drain, Inventory, Listener};
use crate::tls::revocation::ocsp::Ocsp;

/// Cheap to clone: the clones share the upstream, its slots and the tunnels, so Pingora's
/// `HttpProxy` and the direct path ([`forward::Forwarder`]) decide and count as one.
#[derive(Clone)]
pub struct CertgateProxy {
    listener: Arc<Listener>,
    drain: Arc<Drain>,
    upstream: Arc<upstream::Upstream>,
    slots: slots::UpstreamSlots,
    tunnels: Arc<tunnels::Tunnels>,
    inventory: Arc<Inventory>,
    /// The OCSP answers shared by every listener.
    ocsp: Arc<Ocsp>,
    /// This listener's index among the inventory's listener names.
    listener_index: usize,
}

impl CertgateProxy {
    /// `listener_index` is the listener's position in the list `inventory` was made with.
    pub fn new(
        listener: Arc<Listener>,
        drain: Arc<Drain>,
        inventory: Arc<Inventory>,
        ocsp: Arc<Ocsp>,
        listener_index: usize,
    ) -> Self {
        let upstream = Arc::new(upstream::Upstream::new(&listener.config));
        let slots = slots::UpstreamSlots::new(&listener.config);
        let tunnels = tunnels::Tunnels::new(listener.clone(), ocsp.clone());
        CertgateProxy {
            listener,
            drain,
            upstream,
            slots,
            tunnels,
            inventory,
            ocsp,
            listener_index,
        }
    }

    fn hsts(&self) -> Option<&http::HeaderValue> {
        self.listener.config.hsts.as_ref()
    }
}

fn conn_auth(session: &Session) -> Option<&Connection> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_deref())
        .and_then(Connection::of)
}

/// The client's IP as the upstream should see it (from the PROXY header when one was used).
fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The adapter: each phase `HttpProxy` calls is one step of `exchange`, and no phase does
/// anything else, so the direct path, which calls the steps itself, cannot miss one. A phase
/// overridden here without a step behind it would exist on one engine only.
#[async_trait]
impl ProxyHttp for CertgateProxy {
    type CTX = Exchange;

    fn new_ctx(&self) -> Exchange {
        Exchange::new()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
    ) -> pingora::Result<bool> {
        self.decide(session, ex).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
    ) -> pingora::Result<Box<HttpPeer>> {
        self.peer(session, ex).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ex: &mut Exchange,
    ) -> pingora::Result<()> {
        self.rewrite_request(session, upstream, ex)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ex: &mut Exchange,
    ) -> pingora::Result<()> {
        self.rewrite_response(session, resp, ex)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ex: &mut Exchange,
    ) -> FailToProxy {
        FailToProxy {
            error_code: self.refuse_failure(session, e).await,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ex: &Exchange, _error: &Error) -> bool {
        // Every failure is in our access log line and metrics already.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ex: &mut Exchange) {
        self.finish(session, e, ex);
    }
}
