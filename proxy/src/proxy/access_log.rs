//! What each request leaves behind: the request metrics and, when something writes it, the
//! access log line (target `certgate::access`).

use pingora::proxy::Session;
use pingora::Error;

use super::{client_ip, conn_auth, forward, RequestCtx};
use crate::metrics;
use crate::policy::RequestTarget;

/// Counts the finished request and writes its access log line.
pub(super) fn record(name: &str, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
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
            forward::groups_rfc2253(id, ctx.policy.as_ref().map(|p| p.group_attribute())).join(",")
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
        // Workload certificates often have no CN: without this their lines would name no one.
        spiffe_id = %ctx.identity.as_ref().and_then(|i| crate::policy::spiffe::svid_id(&i.uri_sans).ok()).map_or("", |s| s.id),
        permission = %ctx.permission.as_deref().unwrap_or(""),
        decision = decision,
        reason = %reason,
        vpce = %vpce.as_deref().unwrap_or(""),
    );
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
