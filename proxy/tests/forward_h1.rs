//! certgate's own forwarding of plain HTTP/1.1 requests (`proxy/src/proxy/forward/`): upstream
//! connections come from a pool and serve many requests, bodies of both framings reach the
//! upstream whole, every response framing leaves the client connection usable, a response the
//! upstream sends while the client is still uploading reaches the client at once, and requests
//! that stay on Pingora's path share a connection with those that do not.

mod common;

use certgate::pki::Issued;
use common::h1_upstream::KeepAliveUpstream;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// An HTTP/1.1 TLS connection to the proxy as `who`.
fn connect(w: &World, p: &Proxy, who: &Issued) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls_connector(w, Some(who), b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap()
}

/// A response head, then its chunked body decoded (until the last chunk): (head, body).
fn read_chunked(s: &mut impl Read) -> (String, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(5).any(|w| w == b"0\r\n\r\n") {
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(
            n > 0,
            "closed before the last chunk: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, mut rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (head.to_string(), body)
}

/// Just a response head (for HEAD, 204 and 304, which have no body).
fn read_head(s: &mut impl Read) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pooled_upstream_connections_serve_many_requests_and_every_response_framing() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "pool")], &w.ca);
    let mut cfg = ProxyConfig::new(up.addr);
    // One worker: an idle pooled connection is watched by a task on the worker that released
    // it, and a request on another worker may find it still held there and open a new one.
    cfg.top_extra = "threads: 1\n";
    let p = Proxy::start(&w, &cfg);

    // Two client connections one after the other, three requests each: one upstream
    // connection serves them all.
    for c in 0..2 {
        let mut s = connect(&w, &p, &who);
        for i in 0..3 {
            s.write_all(format!("GET /a/{c}/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let resp = read_response(&mut s);
            assert!(resp.starts_with("HTTP/1.1 200"), "{c}/{i}: {resp}");
            assert!(resp.ends_with("\r\n\r\nok"), "{c}/{i}: {resp}");
        }
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);

    // Responses with no body, of either kind, and a HEAD, then one framed by the upstream
    // closing (sent on chunked), then a plain one: all on one client connection.
    let mut s = connect(&w, &p, &who);
    for (request, status) in [
        ("GET /status/204", "HTTP/1.1 204"),
        ("GET /status/304", "HTTP/1.1 304"),
        ("HEAD /h", "HTTP/1.1 200"),
    ] {
        s.write_all(format!("{request} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let head = read_head(&mut s);
        assert!(head.starts_with(status), "{request}: {head}");
    }
    s.write_all(b"GET /close-delimited HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body) = read_chunked(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert_eq!(body, "until the end");
    s.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
}

#[test]
fn request_bodies_of_both_framings_reach_the_upstream_whole() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "upload")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut s = connect(&w, &p, &who);
    let body = vec![b'b'; 300_000];
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
        .unwrap();
    s.write_all(&body).unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"body_bytes\":300000"), "{resp}");

    // Chunked, on the same connection, in pieces.
    s.write_all(b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        s.write_all(b"4000\r\n").unwrap();
        s.write_all(&body[..0x4000]).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"body_bytes\":49152"), "{resp}");
}

#[test]
fn an_early_upstream_answer_reaches_a_client_still_uploading() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "early")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up.addr));
    let mut s = connect(&w, &p, &who);
    // Announces 100 MB and sends 64 KiB: the answer can only come early.
    s.write_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    s.write_all(&vec![b'u'; 65536]).unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.ends_with("\r\n\r\ntoo big"), "{resp}");
}

#[test]
fn requests_left_to_pingora_share_a_connection_with_those_forwarded_here() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "mixed")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut s = connect(&w, &p, &who);
    // Plain (forwarded here), `Expect` and a Connection header naming another header (both
    // left to Pingora), then plain again: the identity and the hop-by-hop rules hold on both.
    for (i, extra) in [
        "",
        "Expect: 100-continue\r\nContent-Length: 0\r\n",
        "Connection: x-hop\r\nX-Hop: secret\r\n",
        "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
    ]
    .iter()
    .enumerate()
    {
        s.write_all(format!("GET /m/{i} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .unwrap();
        let mut resp = read_response(&mut s);
        if resp.starts_with("HTTP/1.1 100") {
            // An interim answer, alone or with the final one behind it.
            resp = match resp[4..].find("HTTP/1.1 ") {
                Some(at) => resp[4 + at..].to_string(),
                None => read_response(&mut s),
            };
        }
        assert!(resp.starts_with("HTTP/1.1 200"), "{i}: {resp}");
        assert!(resp.contains(&format!("/m/{i}")), "{i}: {resp}");
        assert!(resp.contains("CN=mixed"), "{i}: {resp}");
        let lower = resp.to_ascii_lowercase();
        assert!(!lower.contains("x-hop"), "{i}: {resp}");
        assert!(!lower.contains("\"keep-alive\""), "{i}: {resp}");
    }
}

#[test]
fn a_client_leaving_while_the_upstream_thinks_ends_the_request() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "leaver")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut s = connect(&w, &p, &who);
    s.write_all(b"GET /slow/5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let _ = s.shutdown();
    drop(s);
    // The proxy notices the close while it waits for the upstream (not when it would write the
    // answer): the request is logged with no status and the client's leaving as its reason.
    let line = p.access_line("/slow/5000");
    assert!(line.contains("status=\"0\""), "{line}");
    // A clean close reads as the end of the stream, a close with unread bytes as a reset:
    // either way it is seen while waiting, before any answer.
    assert!(
        line.contains("Prematurely before response header")
            || line.contains("during HTTP body-or-idle state"),
        "{line}"
    );
}

#[test]
fn a_request_without_exactly_one_host_gets_400_and_is_never_forwarded() {
    let w = World::new();
    let up = RawUpstream::start(RawReply::Ok);
    let who = client(&[("O", "ci"), ("CN", "hostless")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up.addr));
    // Headers larger than the first read go to Pingora's path whatever they hold.
    let pad = format!("X-Pad: {}\r\n", "p".repeat(6000));
    let (big_hostless, big_two) = (
        format!("GET /h/7 HTTP/1.1\r\n{pad}\r\n"),
        format!("GET /h/8 HTTP/1.1\r\nHost: a\r\n{pad}Host: b\r\n\r\n"),
    );
    for (i, head) in [
        "GET /h/0 HTTP/1.1\r\n\r\n",
        "GET /h/1 HTTP/1.1\r\nHost: localhost\r\nHost: admin.internal\r\n\r\n",
        "GET /h/2 HTTP/1.1\r\nHost: localhost\r\nhost: localhost\r\n\r\n",
        "GET http://localhost/h/3 HTTP/1.1\r\n\r\n",
        // Pingora's path (`Expect`, a body) decides the same.
        "POST /h/4 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        "POST /h/5 HTTP/1.1\r\nHost: a\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "GET /h/6 HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        &big_hostless,
        &big_two,
    ]
    .iter()
    .enumerate()
    {
        let resp = raw_https(&w, &p, Some(&who), head.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{i}: {resp}");
        let lower = resp.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/json"),
            "{i}: {resp}"
        );
        let body: serde_json::Value = resp
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or_else(|| panic!("{i}: no JSON body: {resp}"));
        assert_eq!(body["status"], "FAIL", "{i}: {resp}");
        assert_eq!(body["message"], "Bad Request", "{i}: {resp}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("Host"), "{i}: {resp}");
    }
    // Each refusal is one access-log line.
    wait_for("9 access-log lines", Duration::from_secs(10), || {
        let text = p.log_text();
        let lines = text
            .lines()
            .filter(|l| l.contains("certgate::access") && l.contains("status=\"400\""))
            .count();
        (lines == 9).then_some(())
    });
    // An HTTP/1.0 request may leave Host out; and one Host is fine on either version. These are
    // the only requests the upstream ever sees.
    for (i, head) in [
        "GET /ok/0 HTTP/1.0\r\nConnection: close\r\n\r\n",
        "GET /ok/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ]
    .iter()
    .enumerate()
    {
        let resp = raw_https(&w, &p, Some(&who), head.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 200"), "{i}: {resp}");
    }
    assert_eq!(up.targets(), ["/ok/0", "/ok/1"]);
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "certgate_requests_total",
            &[("code", "400"), ("listener", "test")]
        ),
        9.0,
        "{m}"
    );
}

/// What `proxy/src/proxy/forward/pingora_mirror.rs` copies from pingora-proxy must stay what
/// pingora-proxy does: the same request, with every hop-by-hop header, reaches the upstream with
/// the same headers on both engines (a `Connection` header naming another header sends it to
/// `HttpProxy`), and a body framed by the upstream closing reaches the client chunked on both.
#[test]
fn hop_by_hop_headers_and_close_delimited_bodies_alike_on_both_engines() {
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "mirror")], &w.ca);
    let engines = [
        ("direct", "Connection: keep-alive\r\n"),
        ("HttpProxy", "Connection: keep-alive, x-hop\r\nX-Hop: 1\r\n"),
    ];
    let hop = "Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nProxy-Authorization: Basic eDp5\r\n\
               Proxy-Authenticate: x\r\nTE: trailers\r\nTrailer: x-t\r\nX-Kept: yes\r\n";
    let p = Proxy::start(&w, &ProxyConfig::new(upstream()));
    let mut seen = Vec::new();
    for (engine, connection) in engines {
        let mut s = connect(&w, &p, &who);
        s.write_all(format!("GET /hop HTTP/1.1\r\nHost: x\r\n{connection}{hop}\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut s);
        assert!(resp.starts_with("HTTP/1.1 200"), "{engine}: {resp}");
        let (_, body) = resp.split_once("\r\n\r\n").unwrap();
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        let mut names: Vec<String> = echo["headers"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        assert!(names.contains(&"x-kept".to_string()), "{engine}: {names:?}");
        seen.push(names);
    }
    assert_eq!(seen[0], seen[1], "direct vs HttpProxy");

    let up = KeepAliveUpstream::start();
    let p = Proxy::start(&w, &ProxyConfig::new(up.addr));
    for (engine, connection) in engines {
        let mut s = connect(&w, &p, &who);
        s.write_all(
            format!("GET /close-delimited HTTP/1.1\r\nHost: x\r\n{connection}\r\n").as_bytes(),
        )
        .unwrap();
        let (head, body) = read_chunked(&mut s);
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{engine}: {head}");
        assert!(
            head.contains("transfer-encoding: chunked"),
            "{engine}: {head}"
        );
        assert_eq!(body, "until the end", "{engine}");
    }
}

/// The (type, length) of every TLS record a relay saw the proxy send.
type Records = std::sync::Arc<std::sync::Mutex<Vec<(u8, usize)>>>;

/// A TCP relay in front of the proxy that records the type and length of every TLS record the
/// proxy sends (the record layer's 5-byte headers: TLS 1.2 leaves their types readable).
fn record_relay(proxy: std::net::SocketAddr) -> (std::net::SocketAddr, Records) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let records = Records::default();
    let seen = records.clone();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(proxy).unwrap();
        let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut c_read, &mut s_write);
        });
        let (mut s_read, mut c_write) = (server, client);
        let mut pending = Vec::new();
        let mut buf = [0u8; 16384];
        while let Ok(n) = s_read.read(&mut buf) {
            if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 5 {
                let len = usize::from(u16::from_be_bytes([pending[3], pending[4]]));
                if pending.len() < 5 + len {
                    break;
                }
                seen.lock().unwrap().push((pending[0], len));
                pending.drain(..5 + len);
            }
        }
    });
    (addr, records)
}

#[test]
fn a_small_response_leaves_in_one_tls_record() {
    let w = World::new();
    let up = KeepAliveUpstream::start();
    let who = client(&[("O", "ci"), ("CN", "records")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up.addr));
    let (relay, records) = record_relay(p.addr);
    let tcp = TcpStream::connect(relay).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut config = tls_connector(&w, Some(&who), b"\x08http/1.1")
        .configure()
        .unwrap();
    config
        .set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
        .unwrap();
    let mut s = config.connect("localhost", tcp).unwrap();
    const APPLICATION_DATA: u8 = 23;
    let app_records = || {
        records
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == APPLICATION_DATA)
            .count()
    };
    for i in 1..=3 {
        s.write_all(format!("GET /small/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut s);
        assert!(resp.ends_with("\r\n\r\nok"), "{resp}");
        // The relay passes bytes on before it counts them: wait for its count to catch up.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while app_records() < i && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(
            app_records(),
            i,
            "response {i}: head and body in one record each time: {:?}",
            records.lock().unwrap()
        );
    }
}
