//! HTTP/2 request streams forwarded by certgate's own forwarding (`proxy/src/proxy/h2.rs`,
//! `h1.rs`) to the HTTP/1.1 upstream: a body without a length arrives whole (chunked), every
//! response framing ends its stream cleanly with no HTTP/1 connection header reaching the
//! client, an early upstream answer reaches a client still uploading, a client resetting its
//! stream ends the request while the upstream works, and what is not plain (CONNECT, `Expect`)
//! is still served by Pingora's `HttpProxy` on the same connection.

mod common;

use bytes::Bytes;
use common::h1_upstream::KeepAliveUpstream;
use common::*;
use h2::client::SendRequest;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// `method` of `path` on the proxy (`:authority` is `localhost:PORT`), with `headers`.
fn request(p: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", p.addr.port()));
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap()
}

/// The whole answer to a request already sent: (status, headers, body).
async fn answer(resp: h2::client::ResponseFuture) -> (u16, http::HeaderMap, Vec<u8>) {
    let resp = resp.await.expect("a response");
    let (parts, mut body) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the response body, ended cleanly");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (parts.status.as_u16(), parts.headers, out)
}

/// Sends `req` with `body` in pieces (none: the header ends the stream) and reads the answer.
async fn call(
    send: &SendRequest<Bytes>,
    req: http::Request<()>,
    body: &[&[u8]],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut send = send.clone().ready().await.unwrap();
    let (resp, mut stream) = send.send_request(req, body.is_empty()).unwrap();
    for (i, piece) in body.iter().enumerate() {
        stream
            .send_data(Bytes::copy_from_slice(piece), i + 1 == body.len())
            .unwrap();
    }
    answer(resp).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_a_length_arrives_whole_and_chunked() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "h2upload")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let send = h2_connect(&w, &p, Some(&who)).await;

    let piece = vec![b'u'; 100_000];
    let req = request(&p, "POST", "/up", &[("te", "trailers")]);
    let (code, _, body) = call(&send, req, &[&piece, &piece, &piece]).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["body_bytes"], 300_000);
    let whole = vec![b'u'; 300_000];
    assert_eq!(v["body_sha256"], hex::encode(openssl::sha::sha256(&whole)));
    assert_eq!(seen(&v, "transfer-encoding"), ["chunked"]);
    assert!(seen(&v, "content-length").is_empty(), "{v}");
    // `:authority` becomes Host; hop-by-hop `te` stays behind; the identity goes on.
    assert_eq!(seen(&v, "host"), [format!("localhost:{}", p.addr.port())]);
    assert!(seen(&v, "te").is_empty(), "{v}");
    assert_eq!(seen(&v, "x-certgate-user"), ["h2upload"]);

    // With a length, on the same connection: sent with exactly that length.
    let req = request(&p, "PUT", "/up", &[("content-length", "5")]);
    let (code, _, body) = call(&send, req, &[b"he", b"llo"]).await;
    assert_eq!(code, 200);
    let v = json(&body);
    assert_eq!(v["body_bytes"], 5);
    assert_eq!(seen(&v, "content-length"), ["5"]);
    assert!(seen(&v, "transfer-encoding").is_empty(), "{v}");

    // Counted and logged like any request.
    let line = p.access_line("method=\"POST\"");
    assert!(line.contains("status=\"200\""), "{line}");
    assert!(line.contains("path=\"/up\""), "{line}");
    wait_for("both requests counted", Duration::from_secs(15), || {
        let counted = metric(
            &p.metrics(),
            "certgate_requests_total",
            &[("listener", "test"), ("code", "200")],
        );
        (counted == 2.0).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_ends_its_stream_without_connection_headers() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "h2framing")], &w.ca);
    let mut cfg = ProxyConfig::new(up.addr);
    // One worker, so a released upstream connection is in the pool for the next stream.
    cfg.top_extra = "threads: 1\n";
    let p = Proxy::start(&w, &cfg);
    let send = h2_connect(&w, &p, Some(&who)).await;

    // HEAD keeps its Content-Length with no body (a DATA frame after it would be an error).
    let (code, headers, body) = call(&send, request(&p, "HEAD", "/h", &[]), &[]).await;
    assert_eq!((code, body.len()), (200, 0));
    assert_eq!(headers["content-length"], "5");
    for (path, status) in [("/status/204", 204), ("/status/304", 304)] {
        let (code, _, body) = call(&send, request(&p, "GET", path, &[]), &[]).await;
        assert_eq!((code, body.len()), (status, 0), "{path}");
    }
    // A body the upstream ends by closing arrives whole.
    let (code, _, body) = call(&send, request(&p, "GET", "/close-delimited", &[]), &[]).await;
    assert_eq!((code, body.as_slice()), (200, &b"until the end"[..]));
    // Connection, Keep-Alive, Proxy-Connection and Transfer-Encoding stay behind: the client's
    // h2 layer would refuse the response (a stream error) if any reached it.
    let (code, headers, body) = call(&send, request(&p, "GET", "/hop", &[]), &[]).await;
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(!headers.contains_key(name), "{name}: {headers:?}");
    }
    let (code, _, body) = call(&send, request(&p, "GET", "/plain", &[]), &[]).await;
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
    // The first upstream connection served everything up to the close-delimited body, a
    // second one the rest: upstream connections are pooled across streams.
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_upstream_answer_reaches_a_client_still_uploading() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "h2early")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up.addr));
    let send = h2_connect(&w, &p, Some(&who)).await;

    // Announces 100 MB and sends 64 KiB without ending the stream: the answer can only come
    // early.
    let req = request(&p, "POST", "/early", &[("content-length", "100000000")]);
    let mut ready = send.clone().ready().await.unwrap();
    let (resp, mut stream) = ready.send_request(req, false).unwrap();
    stream
        .send_data(Bytes::from(vec![b'u'; 65536]), false)
        .unwrap();
    let (code, _, body) = answer(resp).await;
    assert_eq!((code, body.as_slice()), (413, &b"too big"[..]));
    drop(stream);

    // The connection carries on.
    let (code, _, body) = call(&send, request(&p, "GET", "/after", &[]), &[]).await;
    assert_eq!((code, body.as_slice()), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_while_the_upstream_thinks_ends_the_request() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "h2reset")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let send = h2_connect(&w, &p, Some(&who)).await;

    let mut ready = send.clone().ready().await.unwrap();
    let (resp, mut stream) = ready
        .send_request(request(&p, "GET", "/slow/5000", &[]), true)
        .unwrap();
    stream.send_reset(h2::Reason::CANCEL);
    drop(resp);
    // Seen while waiting for the upstream (the stream's reset, not a failed write of the
    // answer): logged with no status.
    let line = p.access_line("/slow/5000");
    assert!(line.contains("status=\"0\""), "{line}");
    assert!(line.contains("Client closed H2"), "{line}");

    // Other streams of the connection are untouched.
    let (code, _, body) = call(&send, request(&p, "GET", "/next", &[]), &[]).await;
    assert_eq!(code, 200);
    assert_eq!(json(&body)["path"], "/next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_plain_is_still_served_by_pingora_on_the_same_connection() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "h2mixed")], &w.ca);
    let mut cfg = ProxyConfig::new(up.addr);
    cfg.top_extra = "threads: 1\n";
    let p = Proxy::start(&w, &cfg);
    let send = h2_connect(&w, &p, Some(&who)).await;

    // Plain requests and `Expect` ones, interleaved: each path keeps its own pool of upstream
    // connections, so two paths mean exactly two upstream connections, each reused.
    for i in 0..2 {
        let (code, _, body) = call(&send, request(&p, "GET", &format!("/a/{i}"), &[]), &[]).await;
        assert_eq!((code, body.as_slice()), (200, &b"ok"[..]), "plain {i}");
        let req = request(
            &p,
            "POST",
            &format!("/b/{i}"),
            &[("expect", "100-continue"), ("content-length", "2")],
        );
        let (code, _, body) = call(&send, req, &[b"hi"]).await;
        assert_eq!((code, body.as_slice()), (200, &b"ok"[..]), "expect {i}");
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);

    // CONNECT gets Pingora's own refusal (certgate's forwarding would answer 400 for a target
    // not in origin form).
    let mut ready = send.clone().ready().await.unwrap();
    let connect = http::Request::builder()
        .method("CONNECT")
        .uri("localhost:443")
        .body(())
        .unwrap();
    let (resp, _stream) = ready.send_request(connect, false).unwrap();
    let (code, _, _) = answer(resp).await;
    assert_eq!(code, 405);
}
