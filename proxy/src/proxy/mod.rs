//! The HTTP side of a listener, as one Pingora `ProxyHttp` with small phases:
//! `request_filter` decides (identity → framing → request target → policy), `upstream_peer`
//! names the plain-HTTP upstream and takes a slot for the request, `upstream_request_filter`
//! rewrites the target and headers, `response_filter` registers upgraded tunnels, `logging`
//! writes the access log line and the request metrics. The TLS handshake and identity
//! extraction happened before, in [`crate::listener`], and reach us through the connection's
//! TLS digest.

pub mod access;
pub mod dialects;
pub mod errors;
mod forward;
mod framing;
mod slots;
mod tunnels;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::admin::metrics;
use crate::config::ListenerConfig;
use crate::policy::{parse_target, GroupAttribute, Policy, RequestTarget};
use crate::tls::acceptor::{ConnAuth, IdentityHeaders};
use crate::tls::identity::Identity;
use crate::tls::trust::TrustState;
use crate::tls::verify::AuthFailure;
use access::{authorize, Verdict};

/// What one listener serves with, shared by its connections. Trust and policy are swapped by
/// the reloader; the rest needs a restart.
pub struct Listener {
    pub config: ListenerConfig,
    pub trust: Arc<ArcSwap<TrustState>>,
    pub policy: Arc<ArcSwapOption<Policy>>,
}

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
    /// The decided target: its path is what the policy matched, and the target as a whole is
    /// the only request-target the upstream receives.
    target: Option<RequestTarget>,
    /// The one Content-Length sent upstream, when the request has one.
    content_length: Option<u64>,
    policy: Option<Arc<Policy>>,
    /// The trust generation the identity was read under.
    generation: u64,
    /// This request's upstream slots (its connection's and the listener's), held to its end.
    slots: Vec<tokio::sync::OwnedSemaphorePermit>,
    /// Set once the upstream switched protocols; unregisters the tunnel when the request ends.
    tunnel: Option<tunnels::Registration>,
}

pub struct CertgateProxy {
    listener: Arc<Listener>,
    upstream: upstream::Upstream,
    slots: slots::UpstreamSlots,
    tunnels: Arc<tunnels::Tunnels>,
}

impl CertgateProxy {
    pub fn new(listener: Arc<Listener>) -> Self {
        let upstream = upstream::Upstream::new(&listener.config);
        let slots = slots::UpstreamSlots::new(&listener.config);
        let tunnels = tunnels::Tunnels::new(listener.clone());
        CertgateProxy {
            listener,
            upstream,
            slots,
            tunnels,
        }
    }

    fn hsts(&self) -> Option<&str> {
        self.listener.config.hsts.as_deref()
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
        let key = group_attribute.map_or(0, |g| g as u8 + 1);
        let conn = conn_auth(session);
        if let Some(conn) = conn {
            let cached = conn
                .identity_headers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((k, headers)) = cached.as_ref() {
                if *k == key {
                    return Ok(headers.clone());
                }
            }
        }
        let built: IdentityHeaders =
            forward::identity_headers(&self.listener.config, id, group_attribute)?.into();
        if let Some(conn) = conn {
            *conn
                .identity_headers
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((key, built.clone()));
        }
        Ok(built)
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

fn conn_auth(session: &Session) -> Option<&ConnAuth> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<ConnAuth>())
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
            target: None,
            content_length: None,
            policy: None,
            generation: 0,
            slots: Vec::new(),
            tunnel: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        // HTTP/1.1 keep-alive: our idle timeout, and none once draining so connections end.
        if crate::server::is_draining() {
            session.set_keepalive(None);
        } else {
            session.set_keepalive(Some(self.listener.config.timeouts.idle.as_secs().max(1)));
        }
        // The client side gets `timeouts.read` too: a stream whose client stops reading (an
        // HTTP/2 window held at zero) or sending ends instead of holding its upstream connection.
        let read = self.listener.config.timeouts.read;
        session.set_read_timeout(Some(read));
        session.set_write_timeout(Some(read));

        // 1. Who is asking, as of the trust state current now (revocation reaches open connections).
        let trust = self.listener.trust.load();
        ctx.generation = trust.generation;
        match conn_auth(session).map(|c| c.identity(&trust)) {
            Some(Ok(identity)) => ctx.identity = Some(identity.clone()),
            Some(Err(f)) => ctx.failure = Some(f),
            None => ctx.failure = Some(AuthFailure::NoCertificate),
        }
        if ctx.identity.is_some() {
            if let Some(conn) = conn_auth(session) {
                let ocsp = &self.listener.config.tls.ocsp;
                let name = &self.listener.config.name;
                if let Err(f) = crate::tls::revocation::ocsp::check(name, ocsp, conn.chain()).await
                {
                    ctx.identity = None;
                    ctx.failure = Some(f);
                }
            }
        }

        // 2. The body framing sent upstream is ours: one Content-Length, or chunked.
        match framing::check(&session.req_header().headers) {
            Ok(length) => ctx.content_length = length,
            Err(e) => {
                // The body's extent is in doubt: the connection cannot carry another request.
                session.set_keepalive(None);
                return self.refuse(session, ctx, e.status(), e.reason()).await;
            }
        }

        // 3. Which target: read once from the client's bytes; its path is decided on and the
        // same value is forwarded.
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        let target = match parse_target(req.raw_path(), host, self.listener.config.path_params) {
            Ok(t) => t,
            Err(e) => return self.refuse(session, ctx, 400, e.reason().to_string()).await,
        };
        let method = req.method.as_str().to_string();
        let root = self.is_root(req);
        let target = ctx.target.insert(target);

        // 4. May they: root token, then the policy (or, without one, any verified certificate).
        if root {
            ctx.root = true;
            ctx.decision = DecisionKind::Allow;
            ctx.permission = Some("root".into());
            return Ok(false);
        }
        let policy = self.listener.policy.load_full();
        let verdict = authorize(
            policy.as_deref(),
            ctx.identity.as_deref(),
            ctx.failure,
            &method,
            target.path(),
        );
        let path = target.path().to_string();
        ctx.policy = policy;
        match verdict {
            Verdict::Allow { permission } => {
                ctx.decision = DecisionKind::Allow;
                ctx.permission = permission;
                Ok(false)
            }
            Verdict::AuditDeny { code, reason } => {
                tracing::warn!(listener = %self.listener.config.name, %method, %path, code, %reason, "audit mode: would deny, forwarding");
                ctx.decision = DecisionKind::AuditDeny;
                ctx.reason = Some(reason);
                Ok(false)
            }
            Verdict::Deny { code, reason } => self.refuse(session, ctx, code, reason).await,
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        if ctx.slots.is_empty() {
            ctx.slots = self.slots.take(conn_auth(session)).await?;
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
            resp.insert_header("strict-transport-security", h)?;
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ctx.tunnel.is_none() {
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
        let (code, reason, kind) = classify_error(e);
        if let Some(kind) = kind {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&self.listener.config.name, kind])
                .inc();
        }
        if code > 0 {
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
        let name = &self.listener.config.name;
        let code = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let elapsed = ctx.start.elapsed();
        let decision = ctx.decision.label();
        let mut code_text = itoa::Buffer::new();
        metrics::REQUESTS
            .with_label_values(&[name, code_text.format(code), decision])
            .inc();
        metrics::REQUEST_DURATION
            .with_label_values(&[name])
            .observe(elapsed.as_secs_f64());
        metrics::AUTHZ_DECISIONS
            .with_label_values(&[name, decision, ctx.permission.as_deref().unwrap_or("")])
            .inc();
        // The access log line is built only when something will write it.
        if !tracing::enabled!(target: "certgate::access", tracing::Level::INFO) {
            return;
        }
        let vpce = conn_auth(session).and_then(|c| c.vpce_id.clone());
        let req = session.req_header();
        // The groups the policy saw (its group_attribute), written as in x-certgate-groups, so
        // `certgate policy learn` can grant them back and a comma inside a value stays `\,`.
        let groups = ctx
            .identity
            .as_ref()
            .map(|id| {
                forward::groups_rfc2253(id, ctx.policy.as_ref().map(|p| p.group_attribute()))
                    .join(",")
            })
            .unwrap_or_default();
        let reason = ctx
            .reason
            .clone()
            .or_else(|| e.map(|e| e.to_string()))
            .unwrap_or_default();
        tracing::info!(
            target: "certgate::access",
            listener = %name,
            client = %client_ip(session).map(|ip| ip.to_string()).unwrap_or_default(),
            method = %req.method,
            // The path as matched and forwarded; the query stays out of the log (it may hold secrets).
            path = %logged_path(ctx.target.as_ref(), req.raw_path()),
            status = code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            user = %if ctx.root { "root" } else { ctx.identity.as_ref().and_then(|i| i.user.as_deref()).unwrap_or("") },
            groups = %groups,
            permission = %ctx.permission.as_deref().unwrap_or(""),
            decision = decision,
            reason = %reason,
            vpce = %vpce.as_deref().unwrap_or(""),
        );
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

/// The path for the access log: the decided one, or what the client wrote when it was refused
/// before a decision (the query never: it may hold secrets).
fn logged_path(target: Option<&RequestTarget>, raw: &[u8]) -> String {
    match target {
        Some(t) => t.path().to_string(),
        None => {
            let raw = String::from_utf8_lossy(raw);
            raw.split('?').next().unwrap_or_default().to_string()
        }
    }
}

/// Status, `reason` and upstream-error kind for a failed proxy attempt.
fn classify_error(e: &Error) -> (u16, String, Option<&'static str>) {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => (*code, message_reason(*code), None),
        Custom(slots::BUSY) => (503, "too many concurrent requests".into(), Some("busy")),
        ConnectTimedout => (504, "connect timeout".into(), Some("connect_timeout")),
        ReadTimedout | WriteTimedout => (504, "upstream timeout".into(), Some("timeout")),
        ConnectRefused => (502, "connection refused".into(), Some("connect_refused")),
        ConnectNoRoute => (502, "no route to upstream".into(), Some("connect_error")),
        ConnectError | BindError | SocketError => (
            502,
            "cannot connect to upstream".into(),
            Some("connect_error"),
        ),
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => (
                502,
                "upstream closed the connection".into(),
                Some("protocol"),
            ),
            pingora::ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => (0, String::new(), None),
                _ => (400, "malformed request".into(), None),
            },
            _ => (500, "internal error".into(), None),
        },
    }
}

fn message_reason(code: u16) -> String {
    errors::message_for(code).to_lowercase()
}
