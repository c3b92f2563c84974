//! One request's life, whichever engine carries it: an [`Exchange`] and the steps every request
//! takes, in this order:
//!
//! 1. [`CertgateProxy::decide`]: who asks (the connection's certificate, as of the trust state
//!    current now), whether the request is usable (one Host, its framing, its target), and the
//!    policy's [`Verdict`]. A refused request is answered here.
//! 2. [`CertgateProxy::peer`]: the upstream, and the slots the request holds to its end.
//! 3. [`CertgateProxy::rewrite_request`] and [`CertgateProxy::rewrite_response`]: the head the
//!    upstream receives (the decided target, hop-by-hop and spoofable headers gone, identity
//!    headers added) and the head the client receives (HSTS; an upgrade becomes a tunnel).
//! 4. [`CertgateProxy::refuse`]: the only writer of certgate's own answers, the JSON error
//!    body with its one head; also for answers given before a request reached a session
//!    ([`crate::proxy::access_log::Early`] and the header guards below the parser).
//! 5. [`CertgateProxy::finish`]: the only writer of the access-log line and the request
//!    metrics.
//!
//! Pingora's `HttpProxy` reaches the steps through the `ProxyHttp` adapter in
//! [`crate::proxy`]; the direct path ([`crate::proxy::forward`]) calls them itself. Neither
//! engine has a step of its own, so what one path does to a request the other does too
//! (`tests/parity/` sends the same requests through both).

use std::sync::Arc;
use std::time::Instant;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

use super::errors::{self, Answer};
use super::forward::{framing, headers as forward_headers};
use super::{access_log, client_ip, conn_auth, slots, tunnels, CertgateProxy};
use crate::metrics;
use crate::policy::{authorize, parse_target, GroupAttribute, Policy, RequestTarget, Verdict};
use crate::state::{connection, IdentityHeaders};
use crate::tls::identity::Identity;
use crate::tls::verify::AuthFailure;

/// What became of a request, as its answer, access-log line and metrics tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided: it failed before a decision (the client went away, an internal error).
    Undecided,
    /// Refused before the policy looked at it: the request itself is unusable.
    Unusable(Answer),
    /// The policy's verdict (the root token's included).
    Decided(Verdict),
}

impl Outcome {
    /// The `decision` of a request refused or failed before the policy decided it.
    pub const REFUSED: &'static str = "deny";

    /// The access log's `decision` and the metrics' label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Decided(v) => v.label(),
            Outcome::Undecided | Outcome::Unusable(_) => Outcome::REFUSED,
        }
    }

    /// The `permission` the request was allowed on, if any.
    pub fn permission(&self) -> Option<&str> {
        match self {
            Outcome::Decided(v) => v.allowed_by().and_then(|a| a.permission()),
            Outcome::Undecided | Outcome::Unusable(_) => None,
        }
    }

    /// The reason the log gives: the refusal's (enforced or audited) or the answer's.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Decided(v) => v.refusal().map(|r| r.reason()),
            Outcome::Unusable(a) => Some(&a.reason),
            Outcome::Undecided => None,
        }
    }

    /// Allowed by the listener's root token.
    pub fn root(&self) -> bool {
        matches!(
            self,
            Outcome::Decided(Verdict::Allow(crate::policy::AllowedBy::Root))
        )
    }
}

/// One request, from its header to its log line.
pub struct Exchange {
    pub(super) start: Instant,
    /// The verified identity, or why there is none.
    pub(super) asker: Result<Arc<Identity>, AuthFailure>,
    pub(super) outcome: Outcome,
    /// The decided target: its path is what the policy matched, and the target as a whole is
    /// the only request-target the upstream receives.
    pub(super) target: Option<RequestTarget>,
    /// The one Content-Length sent upstream, when the request has one.
    content_length: Option<u64>,
    pub(super) policy: Option<Arc<Policy>>,
    /// The trust generation the identity was read under.
    generation: u64,
    /// This request's upstream slots (its connection's, its client's and the listener's),
    /// held to its end.
    slots: Option<slots::Held>,
    /// Set once the upstream switched protocols; unregisters the tunnel when the request ends.
    tunnel: Option<tunnels::Registration>,
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            start: Instant::now(),
            asker: Err(AuthFailure::NoCertificate),
            outcome: Outcome::Undecided,
            target: None,
            content_length: None,
            policy: None,
            generation: 0,
            slots: None,
            tunnel: None,
        }
    }

    /// The verified identity, if any.
    pub(super) fn identity(&self) -> Option<&Identity> {
        self.asker.as_deref().ok()
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl CertgateProxy {
    /// Step 1: who asks, whether the request is usable, and the verdict. True when the request
    /// was answered here (refused) and goes no further.
    pub(super) async fn decide(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
    ) -> pingora::Result<bool> {
        if let Some(conn) = conn_auth(session) {
            conn.header_guard.header_received();
        }
        self.set_timeouts(session);
        self.identify(session, ex).await;
        if let Some(reason) = host_problem(session.req_header()) {
            // Which host the client meant is unknown, and a server behind us may pick another
            // Host than the one decided on: never forwarded (RFC 9112 §3.2).
            session.set_keepalive(None);
            return self
                .refuse_unusable(session, ex, Answer::new(400, reason))
                .await;
        }
        // The body framing sent upstream is ours: one Content-Length, or chunked.
        match framing::check(&session.req_header().headers) {
            Ok(length) => ex.content_length = length,
            Err(e) => {
                // The body's extent is in doubt: the connection cannot carry another request.
                session.set_keepalive(None);
                let answer = Answer::new(e.status(), e.reason());
                return self.refuse_unusable(session, ex, answer).await;
            }
        }
        // Which target: read once from the client's bytes; its path is decided on and the
        // same value is forwarded.
        let req = session.req_header();
        let target = match self.request_target(req) {
            Ok(t) => t,
            Err(e) => {
                let answer = Answer::new(400, e.reason().to_string());
                return self.refuse_unusable(session, ex, answer).await;
            }
        };
        let policy = self.listener.policy.load_full();
        let (root, method) = (self.is_root(req), req.method.as_str());
        let asker = crate::state::asker::asker(ex.asker.as_deref().map_err(|f| *f));
        let verdict = authorize(asker, policy.as_deref(), root, method, target.path());
        ex.target = Some(target);
        ex.policy = policy;
        if let Verdict::AuditDeny(refusal) = &verdict {
            let path = ex.target.as_ref().map(|t| t.path()).unwrap_or_default();
            tracing::warn!(listener = %self.listener.config.name, method = %session.req_header().method, %path, code = refusal.status(), reason = %refusal.reason(), "audit mode: would deny, forwarding");
        }
        let refused = match &verdict {
            Verdict::Deny(refusal) => {
                Some(Answer::new(refusal.status(), refusal.reason().to_string()))
            }
            Verdict::Allow(_) | Verdict::AuditDeny(_) => None,
        };
        ex.outcome = Outcome::Decided(verdict);
        match refused {
            Some(answer) => {
                self.refuse(session, &answer).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Step 2: the upstream peer, once the request holds its slots (taken on the first
    /// attempt, kept across retries).
    pub(super) async fn peer(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
    ) -> pingora::Result<Box<HttpPeer>> {
        if ex.slots.is_none() {
            let client = client_key(session, ex);
            ex.slots = Some(self.slots.take(conn_auth(session), client).await?);
        }
        self.upstream.peer().await
    }

    /// Step 3a: the head the upstream receives, from the client's: the decided target,
    /// spoofable headers stripped (and any `drop` names: the direct path's hop-by-hop
    /// headers), ours added, one Content-Length.
    pub(super) fn upstream_head(
        &self,
        session: &Session,
        client: &RequestHeader,
        ex: &Exchange,
        drop: impl Fn(&http::HeaderName) -> bool,
    ) -> pingora::Result<RequestHeader> {
        let group_attribute = ex.policy.as_ref().map(|p| p.group_attribute());
        let identity_headers = match ex.identity() {
            Some(id) => Some(self.identity_headers(session, id, group_attribute)?),
            None => None,
        };
        let mut head = forward_headers::upstream_head(
            client,
            &forward_headers::ForwardInfo {
                config: &self.listener.config,
                client_ip: client_ip(session),
                identity_headers: identity_headers.as_deref(),
                failure: ex.asker.as_ref().err().copied(),
                permission: ex.outcome.permission(),
                target: ex.target.as_ref(),
            },
            drop,
        )?;
        if let Some(length) = ex.content_length {
            // Replaces every copy the client sent (`5, 5`, or the header twice) with one.
            head.insert_header(http::header::CONTENT_LENGTH, length)?;
        }
        Ok(head)
    }

    /// [`Self::upstream_head`] in place of `upstream`, `HttpProxy`'s copy of the client's head.
    pub(super) fn rewrite_request(
        &self,
        session: &Session,
        upstream: &mut RequestHeader,
        ex: &Exchange,
    ) -> pingora::Result<()> {
        *upstream = self.upstream_head(session, upstream, ex, |_| false)?;
        Ok(())
    }

    /// Step 3b: the head the client receives: the upstream's hop-by-hop headers gone, HSTS, and
    /// an upgraded connection registered as a tunnel, to be decided again when a reload changes
    /// trust or policy.
    pub(super) fn rewrite_response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ex: &mut Exchange,
    ) -> pingora::Result<()> {
        forward_headers::strip_response_hop_by_hop(resp);
        if let Some(h) = self.hsts() {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h.clone())?;
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && ex.tunnel.is_none() {
            // A tunnel's bytes are no request body: a quiet WebSocket may idle up to `read`.
            session.set_read_timeout(Some(self.listener.config.timeouts.read));
            self.register_tunnel(session, ex);
        }
        Ok(())
    }

    /// Step 4: certgate's own answer to the request, the JSON error with its one head.
    pub(super) async fn refuse(
        &self,
        session: &mut Session,
        answer: &Answer,
    ) -> pingora::Result<()> {
        errors::respond(session, answer.status, &answer.reason, self.hsts()).await
    }

    /// A request refused before the policy: answered, and recorded as unusable.
    async fn refuse_unusable(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
        answer: Answer,
    ) -> pingora::Result<bool> {
        self.refuse(session, &answer).await?;
        ex.outcome = Outcome::Unusable(answer);
        Ok(true)
    }

    /// Step 4, after a failed attempt to proxy: the answer the failure is owed (none when the
    /// client is gone), counted against the upstream when it was the upstream's. Returns the
    /// status answered, 0 for none.
    pub(super) async fn refuse_failure(&self, session: &mut Session, e: &Error) -> u16 {
        let failure = errors::classify_error(e);
        if let Some(kind) = failure.upstream {
            metrics::UPSTREAM_ERRORS
                .with_label_values(&[&self.listener.config.name, kind.label()])
                .inc();
        }
        let Some(answer) = failure.answer else {
            return 0;
        };
        // The connection ends after this answer: saying so (`Connection: close`) keeps an
        // HTTP/1.1 client from sending its next request into a closing socket.
        session.set_keepalive(None);
        if let Err(write_err) = self.refuse(session, &answer).await {
            tracing::debug!(error = %write_err, "could not send the error response");
        }
        answer.status
    }

    /// Step 5: the request metrics and the access-log line; the header guard is re-armed for
    /// the connection's next request.
    pub(super) fn finish(&self, session: &Session, e: Option<&Error>, ex: &Exchange) {
        if let Some(conn) = conn_auth(session) {
            conn.header_guard.rearm();
        }
        access_log::record(&self.listener.config.name, session, e, ex);
    }

    /// Who is asking, as of the trust state current now (revocation reaches open connections).
    async fn identify(&self, session: &Session, ex: &mut Exchange) {
        {
            let trust = self.listener.trust.load();
            ex.generation = trust.generation;
            ex.asker = connection::identity(conn_auth(session), &trust).cloned();
        }
        // With OCSP on, a valid certificate also needs the responder's word on its leaf (a
        // cached answer, or one asked now without blocking the event loop).
        if let (Some(conn), Ok(_)) = (conn_auth(session), &ex.asker) {
            let cfg = &self.listener.config;
            if let Err(f) = self
                .ocsp
                .check(&cfg.name, &cfg.tls.ocsp, conn.auth.chain())
                .await
            {
                ex.asker = Err(f);
            }
        }
        // Only a certificate valid now is inventoried, whatever the policy then decides: a
        // refused node is still a node whose certificate can expire. The map is consulted once
        // per connection; each request only touches the entry's atomics.
        if let (Some(conn), Ok(id)) = (conn_auth(session), &ex.asker) {
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
    fn request_target(
        &self,
        req: &RequestHeader,
    ) -> Result<RequestTarget, crate::policy::TargetError> {
        let host = req
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
        parse_target(req.raw_path(), host, self.listener.config.path_params)
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

    /// The identity's upstream headers: built on a connection's first request and kept on the
    /// connection, rebuilt only if a policy reload changed which attribute names the groups.
    fn identity_headers(
        &self,
        session: &Session,
        id: &Identity,
        group_attribute: Option<GroupAttribute>,
    ) -> pingora::Result<IdentityHeaders> {
        let build = || {
            forward_headers::identity_headers(&self.listener.config, id, group_attribute)
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
        // connection gets `read` back in `rewrite_response`. HTTP/2 bodies are timed by the
        // forwarder itself.
        session.set_read_timeout(Some(t.read.min(t.request_body)));
        session.set_write_timeout(Some(t.read));
    }

    /// Keeps the upgraded connection on the listener's list of tunnels, to be decided again
    /// when a reload changes trust or policy.
    fn register_tunnel(&self, session: &Session, ex: &mut Exchange) {
        let Some(conn) = conn_auth(session) else {
            return;
        };
        let Some(target) = &ex.target else {
            return;
        };
        let tunnel = tunnels::Tunnel {
            digest: session.digest().and_then(|d| d.ssl_digest.clone()),
            handle: conn.header_guard.clone(),
            method: session.req_header().method.as_str().to_string(),
            path: target.path().to_string(),
            root: ex.outcome.root(),
            user: ex
                .identity()
                .and_then(|i| i.user.clone())
                .unwrap_or_default(),
            generation: ex.generation,
            policy: ex.policy.clone(),
        };
        ex.tunnel = Some(self.tunnels.register(tunnel));
    }
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
fn client_key(session: &Session, ex: &Exchange) -> slots::ClientKey {
    if let Some(id) = ex.identity() {
        return slots::ClientKey::Cert(id.fingerprint);
    }
    match client_ip(session) {
        Some(ip) => slots::ClientKey::Addr(ip),
        None => slots::ClientKey::Unknown,
    }
}
