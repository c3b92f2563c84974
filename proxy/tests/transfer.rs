//! Large bodies stream through both ways without buffering (the Anka Registry moves multi-GB VM
//! images), and upgraded connections (WebSocket) pass through.

mod common;

use common::*;
use futures_util::StreamExt;

const GIB: u64 = 1 << 30;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_and_upload_match_by_checksum() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "registry"), ("CN", "pusher")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    // Integrity, not speed (benches/ measures that): a debug build on a busy machine can take
    // more than the usual 60 s per request to move a GiB.
    let c = https_chain_builder(&w, &p, Some((&who, &[])))
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();

    // Download: the echo upstream streams a known pattern; hash it as it arrives.
    let r = c.get(p.url(&format!("/bytes/{GIB}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let (mut got, mut hasher, mut expected) = (
        0u64,
        openssl::sha::Sha256::new(),
        openssl::sha::Sha256::new(),
    );
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let want: Vec<u8> = (got..got + chunk.len() as u64)
            .map(certgate::demo::echo::pattern_byte)
            .collect();
        hasher.update(&chunk);
        expected.update(&want);
        got += chunk.len() as u64;
    }
    assert_eq!(got, GIB);
    assert_eq!(hasher.finish(), expected.finish());

    // Upload: stream 1 GiB from a generator; the upstream reports length and SHA-256.
    let mut local = openssl::sha::Sha256::new();
    let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    for _ in 0..1024 {
        local.update(&chunk);
    }
    let body =
        futures_util::stream::iter((0..1024).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = c
        .put(p.url("/registry/upload"))
        .header("content-length", GIB.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_bytes"], GIB);
    assert_eq!(v["body_sha256"], hex::encode(local.finish()));

    // Streaming, not buffering: the proxy's peak RSS stays far below the 1 GiB moved.
    let peak = rss_kib(p.pid());
    eprintln!("proxy peak RSS after 1 GiB down + 1 GiB up: {peak} KiB");
    assert!(peak > 0 && peak < 256 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "ws")], &w.ca);
    w.save("ws", &who);
    let mut cfg = ProxyConfig::new(up);
    cfg.tls_extra = "  alpn: [http/1.1]\n";
    let p = Proxy::start(&w, &cfg);

    let ssl = tls_connector(&w, Some(&who), b"")
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    tls.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tls.write_all(b"ping through the tunnel").await.unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 23 {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0);
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&echoed, b"ping through the tunnel");
}
