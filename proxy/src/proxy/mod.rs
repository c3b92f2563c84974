//! The HTTP side of a listener, as one Pingora `ProxyHttp` with small phases:
//! `request_filter` decides (identity → framing → request target → policy), `upstream_peer`
//! names the plain-HTTP upstream and takes a slot for the request, `upstream_request_filter`
//! rewrites the target and headers, `response_filter` registers upgraded tunnels, `logging`
//! writes the access log line and the request metrics. The TLS handshake and identity
//! extraction happened before, in [`crate::listener`], and reach us through the connection's
//! TLS digest.

pub mod access_log;
pub mod dialects;
pub mod errors;
mod forward;
mod framing;
pub mod h1;
pub mod h2;
mod slots;
mod tunnels;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

use crate::metrics;
use crate::policy::{
    authorize, parse_target, GroupAttribute, Policy, RefusalKind, RequestTarget, TargetError,
    Verdict,
};
use crate::state::{connection, Connection, Drain, IdentityHeaders, Inventory, Listener};
use crate::tls::identity::Identity;
use crate::tls::revocation::ocsp::Ocsp;
use crate::tls::verify::AuthFailure;

/// How the request was authorized, for headers, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    Allow,
    Deny,
    AuditDeny,
}

impl DecisionKind {
    pub fn label(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::AuditDeny => "audit_deny",
        }
    }
}

/// Per-request state, filled in as the phases run.
pub struct RequestCtx {
    start: Instant,
    identity: Option<Arc<Identity>>,
    failure: Option<AuthFailure>,
    root: bool,
    decision: DecisionKind,
    permission: Option<String>,
    reason: Option<String>,
    /// Which policy refusal the verdict was (the access log's `refusal`).
    refusal: Option<RefusalKind>,
    /// The decided target: its path is what the policy matched, and the target as a whole is
    /// the only request-target the upstream receives.
    target: Option<RequestTarget>,
    /// The one Content-Length sent upstream, when the request has one.
    content_length: Option<u64>,
    policy: Option<Arc<Policy>>,
    /// The trust generation the identity was read under.
    generation: u64,
    /// This request's upstream slots (its connection's, its client's and the listener's),
    /// held to its end.
    slots: Option<slots::Held>,
    /// Set once the upstream switched protocols; unregisters the tunnel when the request ends.
    tunnel: Option<tunnels::Registration>,
}

impl RequestCtx {
    /// The verified identity, or why there is none.
    fn identity(&self) -> Result<&Identity, AuthFailure> {
        self.identity
            .as_deref()
            .ok_or(self.failure.unwrap_or(AuthFailure::NoCertificate))
    }
}

/// Cheap to clone: the clones share the upstream, its slots and the tunnels, so Pingora's
/// `HttpProxy` and certgate's own HTTP/1.1 forwarder ([`h1`]) decide and count as one.
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

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        code: u16,
        reason: String,
    ) -> pingora::Result<bool> {
        errors::respond(session, code, &reason, self.hsts()).await?;
        ctx.decision = DecisionKind::Deny;
        ctx.reason = Some(reason);
        Ok(true)
    }

    /// The identity's upstream headers: built on a connection's first request and kept on the
    /// connection, rebuilt only if a policy reload changed which attribute names the groups.
    fn identity_headers(
        &self,
        session: &Session,
        id: &Identity,
        group_attribute: Option<GroupAttribute>,
    ) -> pingora::Result<IdentityHeaders> {
        let build = || {
            forward::identity_headers(&self.listener.config, id, group_attribute)
                .map(IdentityHeaders::from)
        };
        match conn_auth(session) {
            Some(conn) => conn.identity_headers(group_attribute, build),
            None => build(),
        }
    }

    /// HTTP/1.1 keep-alive gets our idle timeout, and none once draining so connections end.
    /// The client side gets `timeouts.read` too: a stream whose client stops reading (an
    /// HTTP/2 window held at zero) or sending ends instead of holding its upstream connection.
    fn set_timeouts(&self, session: &mut Session) {
        if self.drain.is_draining() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(self.listener.config.timeouts.idle.as_secs().max(1)));
        }
        let t = &self.listener.config.timeouts;
        // Within a request, HTTP/1.1 reads from the client are only of its body (the idle
        // watch between requests has no timeout), so this bounds a stalled body; an upgraded
        // connection gets `read` back in `response_filter`. HTTP/2 bodies are timed by the
        // forwarder itself.
        session.set_read_timeout(Some(t.read.min(t.request_body)));
        session.set_write_timeout(Some(t.read));
    }

    /// Who is asking, as of the trust state current now (revocation reaches open connections).
    async fn identify(&self, session: &Session, ctx: &mut RequestCtx) {
        {
            let trust = self.listener.trust.load();
            ctx.generation = trust.generation;
            let identity = connection::identity(conn_auth(session), &trust);
            ctx.identity = identity.ok().cloned();
            ctx.failure = identity.err();
        }
        // With OCSP on, a valid certificate also needs the responder's word on its leaf (a
        // cached answer, or one asked now without blocking the event loop).
        if let (Some(conn), Some(_)) = (conn_auth(session), &ctx.identity) {
            let cfg = &self.listener.config;
            if let Err(f) = self
                .ocsp
                .check(&cfg.name, &cfg.tls.ocsp, conn.auth.chain())
                .await
            {
                ctx.identity = None;
                ctx.failure = Some(f);
            }
        }
        // Only a certificate valid now is inventoried, whatever the policy then decides: a
        // refused node is still a node whose certificate can expire. The map is consulted once
        // per connection; each request only touches the entry's atomics.
        if let (Some(conn), Some(id)) = (conn_auth(session), &ctx.identity) {
            let client = conn.client.get_or_init(|| {
                let policy = self.listener.policy.load();
                let attribute = policy
                    .as_ref()
                    .map_or(GroupAttribute::O, |p| p.group_attribute());
                let groups = attribute.select(&id.organizations, &id.org_units);
                self.inventory.client(id, groups)
            });
            self.inventory.record(client, self.listener_index);
        }
    }

    /// The request target as read from the client's bytes, with this listener's `path_params`.
    fn request_target(&self, req: &RequestHeader) -> Result<RequestTarget, TargetError> {
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        parse_target(req.raw_path(), host, self.listener.config.path_params)
    }

    /// Records the verdict on the request and answers a denial; true when the request is done.
    async fn apply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        policy: Option<Arc<Policy>>,
        verdict: Verdict,
    ) -> pingora::Result<bool> {
        match verdict {
            Verdict::Root => {
                ctx.root = true;
                ctx.decision = DecisionKind::Allow;
                ctx.permission = Some("root".into());
                return Ok(false);
            }
            Verdict::Allow { permission } => {
                ctx.decision = DecisionKind::Allow;
                ctx.permission = permission;
            }
            Verdict::AuditDeny { status, reason } => {
                let path = ctx.target.as_ref().map(|t| t.path()).unwrap_or_default();
                tracing::warn!(listener = %self.listener.config.name, method = %session.req_header().method, %path, code = status, %reason, "audit mode: would deny, forwarding");
                ctx.decision = DecisionKind::AuditDeny;
                ctx.reason = Some(reason);
            }
            Verdict::Deny { status, reason } => {
                ctx.policy = policy;
                return self.refuse(session, ctx, status, reason).await;
            }
        }
        ctx.policy = policy;
        Ok(false)
    }

    /// The request carries this listener's root token (see [`crate::config::RootToken`]).
    fn is_root(&self, req: &RequestHeader) -> bool {
        match (
            &self.listener.config.root_token,
            req.headers.get(http::header::AUTHORIZATION),
        ) {
            (Some(token), Some(value)) => token.matches_authorization(value.as_bytes()),
            _ => false,
        }
    }
}

fn conn_auth(session: &Session) -> Option<&Connection> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_deref())
        .and_then(Connection::of)
}

/// Why an HTTP/1 request's Host is unusable, if it is: an HTTP/1.1 request needs exactly one
/// Host header (RFC 9112 §3.2), and no HTTP/1 request may have two. HTTP/2 names its
/// authority in `:authority`.
fn host_problem(req: &RequestHeader) -> Option<&'static str> {
    if !matches!(req.version, http::Version::HTTP_10 | http::Version::HTTP_11) {
        return None;
    }
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("more than one Host header"),
        (None, _) if req.version == http::Version::HTTP_11 => Some("missing Host header"),
        _ => None,
    }
}

/// Whom the request counts against for `limits.upstream_per_client`: its verified certificate,
/// else its address.
fn client_key(session: &Session, ctx: &RequestCtx) -> slots::ClientKey {
    if let Some(id) = &ctx.identity {
        // Kept as bytes: a fixed-size key that needs no allocation per request.
        let mut fingerprint = [0u8; 32];
        if hex::decode_to_slice(&id.fingerprint_sha256, &mut fingerprint).is_ok() {
            return slots::ClientKey::Cert(fingerprint);
        }
    }
    match client_ip(session) {
        Some(ip) => slots::ClientKey::Addr(ip),
        None => slots::ClientKey::Unknown,
    }
}

/// The client's IP as the upstream should see it (from the PROXY header when one was used).
fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for CertgateProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            identity: None,
            failure: None,
            root: false,
            decision: DecisionKind::Deny,
            permission: None,
            reason: None,
            refusal: None,
            target: None,
            content_length: None,
            policy: None,
            generation: 0,
            slots: None,
            tunnel: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        if let Some(conn) = conn_auth(session) {
            conn.header_guard.header_received();
        }
        self.set_timeouts(session);
        self.identify(session, ctx).await;
        if let Some(reason) = host_problem(session.req_header()) {
            // Which host the client meant is unknown, and a server behind us may pick another
            // Host than the one decided on: never forwarded (RFC 9112 §3.2).
            session.set_keepalive(None);
            return self.refuse(session, ctx, 400, reason.into()).await;
        }
        // The body framing sent upstream is ours: one Content-Length, or chunked.
        match framing::check(&session.req_header().headers) {
            Ok(length) => ctx.content_length = length,
            Err(e) => {
                // The body's extent is in doubt: the connection cannot carry another request.
                session.set_keepalive(None);
                return self.refuse(session, ctx, e.status(), e.reason()).await;
            }
        }
        // Which target: read once from the client's bytes; its path is decided on and the
        // same value is forwarded.
        let req = session.req_header();
        let target = match self.request_target(req) {
            Ok(t) => t,
            Err(e) => return self.refuse(session, ctx, 400, e.reason().to_string()).await,
        };
        let policy = self.listener.policy.load_full();
        let (root, method) = (self.is_root(req), req.method.as_str());
        let asker = crate::state::asker::asker(ctx.identity());
        let verdict = authorize(asker, policy.as_deref(), root, method, target.path());
        ctx.refusal = verdict.refusal(&asker);
        ctx.target = Some(target);
        self.apply(session, ctx, policy, verdict).await
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        if ctx.slots.is_none() {
            let client = client_key(session, ctx);
            ctx.slots = Some(self.slots.take(conn_auth(session), client).await?);
        }
        self.upstream.peer().await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let group_attribute = ctx.policy.as_ref().map(|p| p.group_attribute());
        let identity_headers = match &ctx.identity {
            Some(id) => Some(self.identity_headers(session, id, group_attribute)?),
            None => None,
        };
        forward::rewrite_request(
            upstream,
            &forward::ForwardInfo {
                config: &self.listener.config,
                client_ip: client_ip(session),
                identity_headers: identity_headers.as_deref(),
                failure: ctx.failure,
                permission: ctx.permission.as_deref(),
                target: ctx.target.as_ref(),
            },
        )?;
        if let Some(length) = ctx.content_length {
            // Replaces every copy the client sent (`5, 5`, or the header twice) with one.
            upstream.insert_header(http::header::CONTENT_LENGTH, length)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(h) = self.hsts() {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h.clone())?;
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.tunnel.is_none() {
            // A tunnel's bytes are no request body: a quiet WebSocket may idle up to `read`.
            session.set_read_timeout(Some(self.listener.config.timeouts.read));
            self.register_tunnel(session, ctx);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, reason, kind) = errors::classify_error(e);
        if let Some(kind) = kind {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&self.listener.config.name, kind.label()])
                .inc();
        }
        if code > 0 {
            // The connection ends after this answer: saying so (`Connection: close`) keeps an
            // HTTP/1.1 client from sending its next request into a closing socket.
            session.set_keepalive(None);
            if let Err(write_err) = errors::respond(session, code, &reason, self.hsts()).await {
                tracing::debug!(error = %write_err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // Every failure is in our access log line and metrics already.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(conn) = conn_auth(session) {
            conn.header_guard.rearm();
        }
        access_log::record(&self.listener.config.name, session, e, ctx);
    }
}

impl CertgateProxy {
    /// Keeps the upgraded connection on the listener's list of tunnels, to be decided again
    /// when a reload changes trust or policy.
    fn register_tunnel(&self, session: &Session, ctx: &mut RequestCtx) {
        let Some(conn) = conn_auth(session) else {
            return;
        };
        let Some(target) = &ctx.target else {
            return;
        };
        let tunnel = tunnels::Tunnel {
            digest: session.digest().and_then(|d| d.ssl_digest.clone()),
            handle: conn.header_guard.clone(),
            method: session.req_header().method.as_str().to_string(),
            path: target.path().to_string(),
            root: ctx.root,
            user: ctx
                .identity
                .as_ref()
                .and_then(|i| i.user.clone())
                .unwrap_or_default(),
            generation: ctx.generation,
            policy: ctx.policy.clone(),
        };
        ctx.tunnel = Some(self.tunnels.register(tunnel));
    }
}
