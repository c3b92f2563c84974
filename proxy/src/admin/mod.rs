//! The admin endpoint: plain HTTP on its own port and its own thread, so it keeps answering
//! (`/readyz` 503) while the proxy listeners drain.

pub(crate) mod clients;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

use crate::metrics;
use crate::state::Shared;
use crate::status::{not_ready_reason, status, LastReload};

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

fn route(
    shared: &Shared,
    reloader: &dyn LastReload,
    req: &Request<hyper::body::Incoming>,
) -> Response<Body> {
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
        "/status" => json(200, status(shared, &reloader.last())),
        "/clients" => match clients::Filter::parse(req.uri().query()) {
            Ok(filter) => json(200, clients::clients(&shared.inventory, &filter)),
            Err(reason) => json(
                400,
                serde_json::json!({"status": "FAIL", "message": "Bad Request", "reason": reason.to_string()}),
            ),
        },
        "/metrics" => {
            // /readyz as a metric, so an alert needs no probe exporter.
            metrics::READY.set(i64::from(not_ready_reason(shared).is_none()));
            shared.inventory.update_metrics();
            reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(),
            )
        }
        _ => json(
            404,
            serde_json::json!({"status": "FAIL", "message": "Not Found", "reason": "try /healthz /readyz /status /metrics /clients"}),
        ),
    }
}

/// Binds now (so a taken port is a start-up error) and serves on a thread of its own.
pub(crate) fn spawn(
    addr: SocketAddr,
    shared: Arc<Shared>,
    reloader: Arc<dyn LastReload>,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "{}: admin.listen: cannot listen on {addr}: {e}{}",
            shared.config.path.display(),
            crate::config::bind_fix(&e)
        )
    })?;
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
                    let reloader = reloader.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let resp = route(&shared, &*reloader, &req);
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
