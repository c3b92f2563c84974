//! A small plain-HTTP upstream that shows what certgate forwarded: the demo's backend, the
//! integration tests' backend, and a stand-in for Anka in the compose example.
//!
//! - `GET /bytes/N` streams N bytes (a repeating pattern), for download tests;
//! - a request with a body is read as a stream and answered with its length and SHA-256;
//! - `GET /slow/MS` answers after MS milliseconds;
//! - an `Upgrade` request is switched (101) and echoes bytes back;
//! - anything else is answered with the method, path, query and headers as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn json(v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The pattern byte at offset `i` of `/bytes/N` (tests recompute the checksum from it).
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

fn download(n: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = CHUNK.min(n - sent);
        let data: Vec<u8> = (sent..sent + len).map(pattern_byte).collect();
        Some((
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(data))),
            sent + len,
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn headers_json(req: &http::HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in req {
        let entry = map
            .entry(name.as_str().to_string())
            .or_insert_with(|| serde_json::json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(serde_json::Value::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    serde_json::Value::Object(map)
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let described = serde_json::json!({
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query(),
        "headers": headers_json(req.headers()),
    });
    if req.headers().contains_key(http::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = hyper_util::rt::TokioIo::new(upgraded);
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let proto = req
            .headers()
            .get(http::header::UPGRADE)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("websocket"));
        r.headers_mut().insert(http::header::UPGRADE, proto);
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        return Ok(r);
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        return Ok(download(n));
    }
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(json(described));
    }
    let has_body = req.headers().contains_key(http::header::CONTENT_LENGTH)
        || req.headers().contains_key(http::header::TRANSFER_ENCODING);
    if !has_body {
        return Ok(json(described));
    }
    let mut hasher = openssl::sha::Sha256::new();
    let mut total: u64 = 0;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref() {
                    hasher.update(data);
                    total += data.len() as u64;
                }
            }
            Err(e) => {
                let mut r = json(serde_json::json!({"error": e.to_string()}));
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                return Ok(r);
            }
        }
    }
    let mut v = described;
    v["body_bytes"] = total.into();
    v["body_sha256"] = hex::encode(hasher.finish()).into();
    Ok(json(v))
}

/// Serves on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, hyper::service::service_fn(handle))
                .with_upgrades()
                .await;
        });
    }
}

/// Binds `addr` (port 0 for any) and serves on a background thread; returns the bound address.
pub fn spawn(addr: &str) -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                    serve(listener).await;
                }
            });
        })?;
    Ok(bound)
}

/// `certgate echo --listen ADDR`: serve in the foreground.
pub fn serve_blocking(addr: &str) -> anyhow::Result<()> {
    let bound = spawn(addr)?;
    eprintln!("echo upstream on http://{bound}");
    loop {
        std::thread::park();
    }
}
