//! Adversarial clients through the real proxy: request smuggling, header injection through
//! certificate values, oversized and odd request targets, weak keys, deep chains, old TLS
//! versions, renegotiation, and a bounded handshake flood that must not starve good clients.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn raw(w: &World, p: &Proxy, who: &certgate::pki::Issued, bytes: &[u8]) -> String {
    raw_https(w, p, Some(who), bytes)
}

fn status_codes(resp: &str) -> Vec<u16> {
    resp.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| resp[i + 9..i + 12].parse().ok())
        .collect()
}

#[test]
fn request_smuggling_attempts_never_reach_the_upstream_as_a_second_request() {
    let w = World::new();
    let up = upstream();
    std::fs::write(
        w.path("policy.yaml"),
        "permissions:\n  public: [\"* /public/**\"]\ngroups:\n  ci: [public]\n",
    )
    .unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "smuggler")], &w.ca);
    let attacks: Vec<Vec<u8>> = vec![
        // CL + TE: the chunked body ends at 0; the rest would be a request to a denied route.
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // Two different Content-Lengths.
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // obs-fold continuation line.
        b"GET /public/a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n".to_vec(),
        // Bare LF line endings.
        b"GET /public/a HTTP/1.1\nHost: x\nContent-Length: 40\n\nGET /admin/smuggled HTTP/1.1\nHost: x\n\n".to_vec(),
        // TE with an obfuscated value.
        b"POST /public/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 40\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    for attack in attacks {
        let resp = raw(&w, &p, &who, &attack);
        assert!(
            !resp.contains("\"path\":\"/admin/smuggled\""),
            "smuggled request reached the upstream:\n{resp}"
        );
        for code in status_codes(&resp) {
            // 501: a transfer-coding other than chunked is refused, never forwarded.
            assert!(
                code == 200 || code == 400 || code == 403 || code == 501,
                "unexpected {code}:\n{resp}"
            );
        }
    }
    // The proxy is still healthy.
    assert_eq!(http_get(p.admin, "/healthz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_values_cannot_inject_headers() {
    let w = World::new();
    let up = upstream();
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let crlf = client(
        &[
            ("O", "ci\r\nX-Injected: o"),
            ("CN", "evil\r\nX-Injected: 1"),
        ],
        &w.ca,
    );
    let (code, v) = get_json(&https(&w, &p, Some(&crlf)), &p.url("/")).await;
    assert_eq!(code, 200);
    assert!(v["headers"].get("x-injected").is_none(), "{v}");
    let user = seen(&v, "x-certgate-user").join("");
    assert_eq!(user, "evil\\0D\\0AX-Injected: 1");
    assert_eq!(seen(&v, "x-certgate-groups"), ["ci\\0D\\0AX-Injected: o"]);
    assert_eq!(
        seen(&v, "ssl-client-subject-dn"),
        [openssl_subject(&w, &crlf.cert)]
    );

    let nul = client(&[("O", "ci"), ("CN", "admin\0.evil")], &w.ca);
    let (code, v) = get_json(&https(&w, &p, Some(&nul)), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("bad certificate")),
        "a CN with NUL is invalid"
    );

    let utf8 = client(&[("O", "Zürich ops"), ("CN", "Jürgen")], &w.ca);
    let (_, v) = get_json(&https(&w, &p, Some(&utf8)), &p.url("/")).await;
    assert_eq!(seen(&v, "x-certgate-user"), ["J\\C3\\BCrgen"]);
    assert_eq!(seen(&v, "x-certgate-groups"), ["Z\\C3\\BCrich ops"]);

    // Several CNs: the last one is the user (as the contract says), never a concatenation.
    let two = client(&[("CN", "first"), ("O", "ci"), ("CN", "second")], &w.ca);
    let (_, v) = get_json(&https(&w, &p, Some(&two)), &p.url("/")).await;
    assert_eq!(seen(&v, "x-certgate-user"), ["second"]);
}

#[test]
fn oversized_and_odd_request_targets() {
    let w = World::new();
    let up = upstream();
    std::fs::write(
        w.path("policy.yaml"),
        "permissions:\n  api: [\"GET /api/**\"]\ngroups:\n  ci: [api]\n",
    )
    .unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "odd")], &w.ca);

    let long = format!(
        "GET /api/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(200_000)
    );
    let resp = raw(&w, &p, &who, long.as_bytes());
    assert!(
        status_codes(&resp)
            .first()
            .is_some_and(|c| *c == 431 || *c == 414 || *c == 400),
        "{}",
        &resp[..resp.len().min(200)]
    );

    // Absolute-form: matched and forwarded by its path; the authority is not a way around policy.
    // (Pingora refuses an authority that disagrees with Host outright; either way nothing else
    // than /api/vm can be reached.)
    let resp = raw(
        &w,
        &p,
        &who,
        b"GET http://evil.example/api/vm HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        resp.starts_with("HTTP/1.1 400")
            || (resp.starts_with("HTTP/1.1 200") && resp.contains("\"path\":\"/api/vm\"")),
        "{resp}"
    );
    let resp = raw(
        &w,
        &p,
        &who,
        b"GET http://evil.example/admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        resp.starts_with("HTTP/1.1 403") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    // `*` and CONNECT are not paths.
    let resp = raw(
        &w,
        &p,
        &who,
        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        status_codes(&resp)
            .first()
            .is_some_and(|c| *c == 400 || *c == 405),
        "{resp}"
    );
    let resp = raw(
        &w,
        &p,
        &who,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    );
    assert!(
        status_codes(&resp)
            .first()
            .is_some_and(|c| *c == 400 || *c == 405),
        "{resp}"
    );
    // Duplicate identity headers are all removed.
    let resp = raw(&w, &p, &who, b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Certgate-User: a\r\nx-certgate-user: b\r\nSSL_Client_Verify: SUCCESS\r\nConnection: close\r\n\r\n");
    assert!(resp.contains("\"x-certgate-user\":[\"odd\"]"), "{resp}");
    assert!(
        !resp.contains("SSL_Client_Verify") && !resp.contains("ssl_client_verify"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_keys_and_deep_chains_are_refused() {
    let w = World::new();
    let up = upstream();
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut s = spec(&[("CN", "weak")]);
    s.key = certgate::pki::KeyKind::Rsa(1024);
    let weak = certgate::pki::issue(&s, &w.ca).unwrap();
    // Our own client library refuses such a key; an attacker's would not, so lower its bar.
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_security_level(0);
    b.set_ca_file(w.path("ca.pem")).unwrap();
    b.set_certificate(&weak.cert).unwrap();
    b.set_private_key(&weak.key).unwrap();
    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = b.build().connect("localhost", tcp).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 401") && out.contains("\"reason\":\"bad certificate\""),
        "RSA-1024 client key: {out}"
    );

    let mut s = spec(&[("CN", "ok-rsa")]);
    s.key = certgate::pki::KeyKind::Rsa2048;
    let ok = certgate::pki::issue(&s, &w.ca).unwrap();
    assert_eq!(
        get_json(&https(&w, &p, Some(&ok)), &p.url("/")).await.0,
        200
    );

    // leaf + 10 intermediates: deeper than the verify depth.
    let mut chain = vec![intermediate("I0", &w.ca)];
    for i in 1..10 {
        let next = intermediate(&format!("I{i}"), chain.last().unwrap());
        chain.push(next);
    }
    let leaf = client(&[("CN", "deep")], chain.last().unwrap());
    let mut pem = cert_pem(&leaf);
    for c in chain.iter().rev() {
        pem.extend(cert_pem(c));
    }
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem(&w.ca)).unwrap())
        .resolve("localhost", p.addr)
        .identity(reqwest::Identity::from_pkcs8_pem(&pem, &key_pem(&leaf)).unwrap())
        .build()
        .unwrap();
    let (code, v) = get_json(&c, &p.url("/")).await;
    assert_eq!(code, 401, "{v}");
}

#[test]
fn old_tls_versions_and_renegotiation_are_refused() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "legacy")], &w.ca);
    w.save("legacy", &who);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    for v in ["-tls1", "-tls1_1"] {
        let (_, out) = s_client(&w, &p, None, &[v, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(
            !out.contains("HTTP/1.1"),
            "{v} must not get through:\n{out}"
        );
        assert!(
            out.contains("alert")
                || out.contains("no protocols available")
                || out.contains("wrong version"),
            "{v}:\n{out}"
        );
    }
    // TLS 1.2 renegotiation: `R` asks s_client to renegotiate; the server refuses.
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-connect",
            &p.addr.to_string(),
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(w.path("ca.pem"))
        .arg("-cert")
        .arg(w.path("legacy.pem"))
        .arg("-key")
        .arg(w.path("legacy-key.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = stdin.write_all(b"R\n");
    std::thread::sleep(Duration::from_millis(500));
    let _ = stdin.write_all(b"GET /after-reneg HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("RENEGOTIATING"), "{text}");
    assert!(
        !text.contains("/after-reneg\""),
        "no request after a refused renegotiation:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_handshake_flood_does_not_starve_good_clients() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "good")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    // The flood and the good clients share 127.0.0.1: the per-address limit (which would cut
    // the flood short) is lifted, so the handshake timeout alone bounds it.
    cfg.listener_extra =
        "    timeouts: { handshake: 2s }\n    limits: { connections_per_ip: 100000 }\n";
    let p = Proxy::start(&w, &cfg);
    let addr = p.addr;
    // 300 connections that start a handshake and stall, plus 300 that send garbage.
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        for i in 0..600 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                use tokio::io::AsyncWriteExt;
                let _ = if i % 2 == 0 {
                    s.write_all(&[0x16, 0x03, 0x01, 0x00]).await
                } else {
                    s.write_all(b"GARBAGE\r\n\r\n").await
                };
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        held.len()
    });
    let c = https(&w, &p, Some(&who));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let fresh = https_builder(&w, &p, Some(&who))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        assert_eq!(get_json(&fresh, &p.url("/")).await.0, 200);
        assert_eq!(get_json(&c, &p.url("/")).await.0, 200);
        worst = worst.max(t.elapsed());
    }
    let flooded = flood.await.unwrap();
    assert!(flooded > 100, "flood connections opened: {flooded}");
    assert!(
        worst < Duration::from_secs(3),
        "good clients kept being served (worst {worst:?})"
    );
    // The flood's handshakes fail inside the proxy on its own time (garbage read, the 2 s
    // timeout, the close): counted whenever it gets to them, not by any answer seen here.
    wait_for(
        "100 failed handshakes counted",
        Duration::from_secs(15),
        || {
            let m = p.metrics();
            (metric(&m, "certgate_handshakes_total", &[("result", "fail")]) >= 100.0).then_some(())
        },
    );
}

/// HTTP/2 straight from the `h2` crate (no client-side normalisation): odd `:path` values,
/// an `:authority` that disagrees with `host`, and spoofed identity headers in HEADERS frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pseudo_header_abuse() {
    let w = World::new();
    let up = upstream();
    std::fs::write(
        w.path("policy.yaml"),
        "permissions:\n  allowed: [\"GET /allowed/**\"]\ngroups:\n  ci: [allowed]\n",
    )
    .unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "h2abuse")], &w.ca);

    let send = h2_connect(&w, &p, Some(&who)).await;

    async fn call(
        send: &h2::client::SendRequest<bytes::Bytes>,
        req: http::Request<()>,
    ) -> (u16, String) {
        let mut send = send.clone().ready().await.unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let code = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        (code, String::from_utf8_lossy(&out).into_owned())
    }
    let req = |path: &str| {
        http::Request::builder()
            .uri(format!("https://localhost{path}"))
            .body(())
            .unwrap()
    };

    let (code, body) = call(&send, req("/allowed/x")).await;
    assert_eq!(code, 200, "{body}");
    for path in ["/allowed/../denied", "/allowed/%2e%2e/denied", "//denied"] {
        let (code, body) = call(&send, req(path)).await;
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("GET /denied is covered by no permission"),
            "{path}: {body}"
        );
    }
    let (code, body) = call(&send, req("/allowed/%2f..")).await;
    assert_eq!(code, 400, "{body}");
    // :authority and host disagree; spoofed identity headers ride along.
    let r = http::Request::builder()
        .uri("https://evil.example/allowed/y")
        .header("host", "localhost")
        .header("x-certgate-user", "root")
        .header("ssl-client-verify", "SUCCESS")
        .body(())
        .unwrap();
    let (code, body) = call(&send, r).await;
    if code == 200 {
        assert!(body.contains("\"x-certgate-user\":[\"h2abuse\"]"), "{body}");
        assert!(body.contains("\"path\":\"/allowed/y\""), "{body}");
    } else {
        assert_eq!(code, 400, "{body}");
    }
    // The connection survived all of it.
    assert_eq!(call(&send, req("/allowed/z")).await.0, 200);
}
