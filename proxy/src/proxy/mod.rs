//! The HTTP side of a listener, as one Pingora `ProxyHttp` with small phases:
//! `request_filter` decides (identity → path → policy), `upstream_peer` names the plain-HTTP
//! upstream, `upstream_request_filter` rewrites headers, `logging` writes the access log line and
//! the request metrics. The TLS handshake and identity extraction happened before, in
//! [`crate::listener`], and reach us through the connection's TLS digest.

pub mod dialects;
pub mod errors;
mod forward;
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
use crate::policy::{normalize_path, Decision, GroupAttribute, Mode, Policy, Principal};
use crate::tls::acceptor::{ConnAuth, IdentityHeaders};
use crate::tls::identity::Identity;
use crate::tls::trust::TrustState;
use crate::tls::verify::AuthFailure;

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
    /// The normalised path and query, forwarded instead of what the client wrote.
    forward_path: Option<String>,
    policy: Option<Arc<Policy>>,
}

pub struct CertgateProxy {
    listener: Arc<Listener>,
    upstream: upstream::Upstream,
}

impl CertgateProxy {
    pub fn new(listener: Arc<Listener>) -> Self {
        let upstream = upstream::Upstream::new(&listener.config);
        CertgateProxy { listener, upstream }
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

    /// `Authorization: Basic base64("root:" + root_token)`, compared in constant time.
    fn is_root(&self, req: &RequestHeader) -> bool {
        let Some(token) = self.listener.config.root_token.as_deref() else {
            return false;
        };
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(encoded) = value.strip_prefix(b"Basic ").map(|v| v.trim_ascii()) else {
            return false;
        };
        use base64::Engine;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("root:{token}");
        decoded.len() == expected.len() && openssl::memcmp::eq(&decoded, expected.as_bytes())
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
            forward_path: None,
            policy: None,
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
        // 1. Who is asking, as of the trust state current now (revocation reaches open connections).
        let trust = self.listener.trust.load();
        match conn_auth(session).map(|c| c.identity(&trust)) {
            Some(Ok(identity)) => ctx.identity = Some(identity.clone()),
            Some(Err(f)) => ctx.failure = Some(f),
            None => ctx.failure = Some(AuthFailure::NoCertificate),
        }

        // 2. Which path: normalised before matching, and what is matched is what is forwarded.
        let req = session.req_header();
        let uri = &req.uri;
        let path = match normalize_path(uri.path()) {
            Ok(p) => p.into_owned(),
            Err(e) => return self.refuse(session, ctx, 400, e.reason().to_string()).await,
        };
        ctx.forward_path = Some(match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.clone(),
        });
        let method = req.method.as_str().to_string();

        // 3. May they: root token, then policy, then (without a policy) any verified certificate.
        if self.is_root(req) {
            ctx.root = true;
            ctx.decision = DecisionKind::Allow;
            ctx.permission = Some("root".into());
            return Ok(false);
        }
        let policy = self.listener.policy.load_full();
        let Some(policy) = policy else {
            if ctx.identity.is_some() {
                ctx.decision = DecisionKind::Allow;
                return Ok(false);
            }
            let reason = ctx
                .failure
                .unwrap_or(AuthFailure::NoCertificate)
                .reason()
                .to_string();
            return self.refuse(session, ctx, 401, reason).await;
        };
        let principal = match &ctx.identity {
            Some(id) => Principal::Certificate {
                user: id.user.as_deref(),
                organizations: &id.organizations,
                org_units: &id.org_units,
            },
            None => Principal::Anonymous,
        };
        let (allowed, denial) = match policy.decide(&principal, &method, &path) {
            Decision::Allow { permission } => (Some(permission.to_string()), None),
            Decision::Deny(denial) => (None, Some(denial.reason(&method, &path))),
        };
        ctx.policy = Some(policy.clone());
        if let Some(permission) = allowed {
            ctx.decision = DecisionKind::Allow;
            ctx.permission = Some(permission);
            return Ok(false);
        }
        let (code, reason) = match &ctx.identity {
            Some(_) => (403, denial.unwrap_or_default()),
            None => (
                401,
                ctx.failure
                    .unwrap_or(AuthFailure::NoCertificate)
                    .reason()
                    .to_string(),
            ),
        };
        if policy.mode() == Mode::Audit {
            tracing::warn!(listener = %self.listener.config.name, %method, %path, code, %reason, "audit mode: would deny, forwarding");
            ctx.decision = DecisionKind::AuditDeny;
            ctx.reason = Some(reason);
            return Ok(false);
        }
        self.refuse(session, ctx, code, reason).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
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
                forward_path: ctx.forward_path.as_deref(),
            },
        )
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let Some(h) = self.hsts() {
            resp.insert_header("strict-transport-security", h)?;
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
            path = %ctx.forward_path.as_deref().map(|p| p.split('?').next().unwrap_or(p)).unwrap_or_else(|| req.uri.path()),
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

/// Status, `reason` and upstream-error kind for a failed proxy attempt.
fn classify_error(e: &Error) -> (u16, String, Option<&'static str>) {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => (*code, message_reason(*code), None),
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
