//! The admin endpoint: plain HTTP on its own port and its own thread, so it keeps answering
//! (`/readyz` 503) while the proxy listeners drain.

pub mod metrics;
pub mod report;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

use crate::server::Shared;

type Body = Full<Bytes>;

fn reply(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json(code: u16, v: serde_json::Value) -> Response<Body> {
    reply(code, "application/json", v.to_string())
}

/// Why the process is not ready, or None.
pub fn not_ready_reason(shared: &Shared) -> Option<String> {
    if crate::server::is_draining() {
        return Some("draining".into());
    }
    if !shared.started.load(Ordering::Acquire) {
        return Some("starting".into());
    }
    if !shared.listening.load(Ordering::Acquire) {
        // Pingora binds the listener sockets after start-up, on its own threads.
        match shared
            .listeners
            .iter()
            .flat_map(|l| &l.config.listen)
            .find(|a| !is_bound(a))
        {
            Some(addr) => return Some(format!("listener {addr} not bound yet")),
            None => shared.listening.store(true, Ordering::Release),
        }
    }
    if let Some(reason) = crate::tls::revocation::not_ready_reason() {
        return Some(reason);
    }
    for l in &shared.listeners {
        if l.trust.load().has_expired_crl() {
            return Some(format!(
                "listener {}: a loaded CRL is past its nextUpdate",
                l.config.name
            ));
        }
    }
    None
}

/// Whether a socket listens on `addr`: binding it ourselves fails with "address in use". (A
/// probe connection would be accepted and counted as a failed handshake.)
fn is_bound(addr: &SocketAddr) -> bool {
    matches!(std::net::TcpListener::bind(addr), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

pub fn status(shared: &Shared) -> serde_json::Value {
    let listeners: Vec<_> = shared
        .listeners
        .iter()
        .map(|l| {
            let policy = l.policy.load_full();
            report::listener_report(&l.config, &l.trust.load(), policy.as_deref())
        })
        .collect();
    let reload = shared
        .last_reload
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": shared.config.path.display().to_string(),
        "ready": not_ready_reason(shared).is_none(),
        "not_ready_reason": not_ready_reason(shared),
        "draining": crate::server::is_draining(),
        "listeners": listeners,
        "last_reload": reload,
        "crl_fetch": crate::tls::revocation::status_json(),
        "ocsp": crate::tls::revocation::ocsp_status_json(),
    })
}

fn route(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return json(
            405,
            serde_json::json!({"status": "FAIL", "message": "Method Not Allowed", "reason": "admin endpoints are GET only"}),
        );
    }
    match req.uri().path() {
        "/healthz" => json(200, serde_json::json!({"status": "OK"})),
        "/readyz" => match not_ready_reason(shared) {
            None => json(200, serde_json::json!({"status": "OK"})),
            Some(reason) => json(
                503,
                serde_json::json!({"status": "FAIL", "message": "Not Ready", "reason": reason}),
            ),
        },
        "/status" => json(200, status(shared)),
        "/metrics" => {
            // /readyz as a metric, so an alert needs no probe exporter.
            metrics::READY.set(i64::from(not_ready_reason(shared).is_none()));
            reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(),
            )
        }
        _ => json(
            404,
            serde_json::json!({"status": "FAIL", "message": "Not Found", "reason": "try /healthz /readyz /status /metrics"}),
        ),
    }
}

/// Binds now (so a taken port is a start-up error) and serves on a thread of its own.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("admin.listen {addr}: cannot bind: {e}"))?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("certgate-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "admin endpoint: cannot start its runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin endpoint: cannot listen");
                        return;
                    }
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let resp = route(&shared, &req);
                            async move { Ok::<_, Infallible>(resp) }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
            });
        })?;
    Ok(())
}
