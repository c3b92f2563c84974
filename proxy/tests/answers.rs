//! Hostile and unusual clients: pipelined HTTP/1.1 requests are answered in order on the same
//! connection on both forwarding paths (RFC 9112 §9.3.2), and every answer certgate gives
//! itself (a parser's 400, the header limits' 408 and 431 on HTTP/1.1 and HTTP/2) is logged
//! once and counted like any other request.

mod common;

use certgate::pki::Issued;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP/1.1 TLS connection to the proxy as `who`.
fn connect(w: &World, p: &Proxy, who: &Issued) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls_connector(w, Some(who), b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap()
}

/// Writes `requests` in one write (one TLS record) and reads until the proxy closes: the
/// final responses, in the order they came (interim 100s left out).
fn pipelined(w: &World, p: &Proxy, who: &Issued, requests: &str) -> Vec<String> {
    let mut s = connect(w, p, who);
    s.write_all(requests.as_bytes()).unwrap();
    let text = read_all(&mut s);
    text.split("HTTP/1.1 ")
        .filter(|r| !r.is_empty() && !r.starts_with("100"))
        .map(str::to_string)
        .collect()
}

#[test]
fn pipelined_requests_are_answered_in_order_on_both_forwarding_paths() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "piper")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    // A pipelined request's body is never counted as a header: these bodies are larger.
    cfg.listener_extra = "    limits: { max_header_bytes: 16384 }\n";
    let p = Proxy::start(&w, &cfg);
    let big = "b".repeat(30_000);
    let cases = [
        (
            "certgate's path",
            "GET /pipe/01 HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /pipe/02 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
             GET /pipe/03 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_string(),
        ),
        (
            // A Connection header naming another header, and `Expect`, stay on Pingora's path.
            "Pingora's path",
            "GET /pipe/04 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n\
             POST /pipe/05 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello\
             GET /pipe/06 HTTP/1.1\r\nHost: x\r\nConnection: x-hop, close\r\n\r\n"
                .to_string(),
        ),
        (
            "both, alternating",
            "GET /pipe/07 HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /pipe/08 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\n\r\n\
             GET /pipe/09 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                .to_string(),
        ),
        (
            "certgate's path, a body beyond max_header_bytes",
            format!(
                "GET /pipe/10 HTTP/1.1\r\nHost: x\r\n\r\n\
                 POST /pipe/11 HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n{big}\
                 GET /pipe/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "Pingora's path, a body beyond max_header_bytes",
            format!(
                "GET /pipe/13 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\n\r\n\
                 POST /pipe/14 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\nContent-Length: 30000\r\n\r\n{big}\
                 GET /pipe/15 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ),
        ),
    ];
    for (name, requests) in &cases {
        let answers = pipelined(&w, &p, &who, requests);
        assert_eq!(answers.len(), 3, "{name}: {answers:#?}");
        // In order: each echo names its own path, a POST's its body's length too.
        let ids: Vec<&str> = requests.split("/pipe/").skip(1).map(|r| &r[..2]).collect();
        for (i, a) in answers.iter().enumerate() {
            assert!(a.starts_with("200"), "{name} {i}: {a}");
            assert!(a.contains(&format!("/pipe/{}", ids[i])), "{name} {i}: {a}");
            if requests.contains(&format!("POST /pipe/{}", ids[i])) {
                let length = if requests.contains("30000") {
                    30_000
                } else {
                    5
                };
                assert!(
                    a.contains(&format!("\"body_bytes\":{length}")),
                    "{name} {i}: {a}"
                );
            }
        }
    }
    // Every request was decided and logged once, as any other.
    for i in 1..=15 {
        let line = p.access_line(&format!("/pipe/{i:02}"));
        assert!(line.contains("status=\"200\""), "{line}");
    }
}

/// How many access-log lines of `p` contain every one of `needles`.
fn access_lines(p: &Proxy, needles: &[&str]) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains("certgate::access") && needles.iter().all(|n| l.contains(n)))
        .count()
}

/// The JSON error body of a raw HTTP/1.1 answer, and its head in lower case.
fn json_answer(raw: &str) -> (String, serde_json::Value) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("no JSON body: {raw}"));
    (head.to_ascii_lowercase(), body)
}

const HSTS: &str = "max-age=63072000";

#[test]
fn answers_certgate_gives_itself_carry_the_error_headers_and_are_logged_once_and_counted() {
    let w = World::new();
    let up = RawUpstream::start(RawReply::Ok);
    let who = client(&[("O", "ci"), ("CN", "early")], &w.ca);
    let mut cfg = ProxyConfig::new(up.addr);
    let extra = format!(
        "    hsts: \"{HSTS}\"\n    limits: {{ header_read: 1s, max_header_bytes: 16384 }}\n"
    );
    cfg.listener_extra = &extra;
    let p = Proxy::start(&w, &cfg);
    let before = p.metrics();
    let count = |text: &str, code: &str| {
        metric(
            text,
            "certgate_requests_total",
            &[("listener", "test"), ("code", code)],
        )
    };
    let durations = |text: &str| {
        metric(
            text,
            "certgate_request_duration_seconds_count",
            &[("listener", "test")],
        )
    };

    // Refused by the parser: a header name with a space, and two differing Content-Lengths
    // (refused by Pingora after the request line and headers parsed).
    for (path, head) in [
        (
            "/early/1",
            "GET /early/1?secret=s HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        ),
        (
            "/early/2",
            "POST /early/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab",
        ),
    ] {
        let raw = raw_https(&w, &p, Some(&who), head.as_bytes());
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        let (head, body) = json_answer(&raw);
        assert_eq!(body["message"], "Bad Request", "{raw}");
        assert!(head.contains("cache-control: no-store"), "{raw}");
        assert!(
            head.contains(&format!("strict-transport-security: {HSTS}")),
            "{raw}"
        );
        let line = p.access_line(&format!("path=\"{path}\""));
        assert!(line.contains("status=\"400\""), "{line}");
        assert!(line.contains("client=\"127.0.0.1\""), "{line}");
        assert!(!line.contains("secret"), "{line}");
    }
    assert!(p
        .access_line("path=\"/early/1\"")
        .contains("method=\"GET\""));
    assert!(p
        .access_line("path=\"/early/2\"")
        .contains("method=\"POST\""));

    // Refused by Pingora's checks after parsing, on requests its own path would have taken
    // (userinfo in the target or in Host): the same JSON 400, the userinfo kept out of the log.
    for (needle, head) in [
        (
            "path=\"http://x/early/8\"",
            "GET http://user:pw@x/early/8 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "path=\"/early/9\"",
            "GET /early/9 HTTP/1.1\r\nHost: user@x\r\n\r\n",
        ),
    ] {
        let raw = raw_https(&w, &p, Some(&who), head.as_bytes());
        assert!(raw.starts_with("HTTP/1.1 400"), "{head}: {raw}");
        let (head, body) = json_answer(&raw);
        assert_eq!(body["status"], "FAIL", "{raw}");
        assert!(
            head.contains(&format!("strict-transport-security: {HSTS}")),
            "{raw}"
        );
        let line = p.access_line(needle);
        assert!(line.contains("status=\"400\""), "{line}");
        assert!(!line.contains("pw"), "{line}");
        assert_eq!(access_lines(&p, &[needle]), 1);
    }

    // The same header in two writes (two TLS records, so two reads): the same answer.
    let mut s = connect(&w, &p, &who);
    s.write_all(b"GET /early/7 HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s.flush().unwrap();
    s.write_all(b"Bad Header: y\r\n\r\n").unwrap();
    let raw = read_all(&mut s);
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    assert_eq!(json_answer(&raw).1["reason"], "malformed request", "{raw}");
    assert!(p
        .access_line("path=\"/early/7\"")
        .contains("status=\"400\""));

    // The header guard: 431 for a 20 KB header, 408 for one never finished.
    let big = format!(
        "GET /early/3 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let slow = "GET /early/4 HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for (path, status, head) in [("/early/3", "431", big.as_str()), ("/early/4", "408", slow)] {
        let raw = raw_https(&w, &p, Some(&who), head.as_bytes());
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {raw}"
        );
        let (head, body) = json_answer(&raw);
        assert_eq!(body["status"], "FAIL", "{raw}");
        for h in [
            "content-type: application/json",
            "cache-control: no-store",
            "connection: close",
        ] {
            assert!(head.contains(h), "{h}: {raw}");
        }
        assert!(
            head.contains(&format!("strict-transport-security: {HSTS}")),
            "{raw}"
        );
        let line = p.access_line(&format!("path=\"{path}\""));
        for field in [
            &format!("status=\"{status}\"") as &str,
            "method=\"GET\"",
            "client=\"127.0.0.1\"",
            "decision=\"deny\"",
        ] {
            assert!(line.contains(field), "{field}: {line}");
        }
    }
    // The 408 came after header_read: its duration says so.
    let line = p.access_line("path=\"/early/4\"");
    let ms: f64 = line
        .split("duration_ms=")
        .nth(1)
        .and_then(|v| v.trim_matches('"').split(['"', ' ']).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {line}"));
    assert!(ms >= 900.0, "{line}");

    // HTTP/2: the same 20 KB header gets 431 under the same limit; a small one goes through.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (big_status, big_body, small_status) = rt.block_on(async {
        let mut send = h2_connect(&w, &p, Some(&who)).await;
        let req = http::Request::get(p.url("/early/5"))
            .header("x-big", "b".repeat(20_000))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        let hsts = resp.headers().get("strict-transport-security").cloned();
        assert_eq!(hsts.as_ref().map(|h| h.to_str().unwrap()), Some(HSTS));
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        send = send.ready().await.unwrap();
        let req = http::Request::get(p.url("/early/6")).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let small = resp.await.unwrap().status().as_u16();
        (status, String::from_utf8_lossy(&bytes).into_owned(), small)
    });
    assert_eq!(big_status, 431, "{big_body}");
    assert!(big_body.contains("\"FAIL\""), "{big_body}");
    assert_eq!(small_status, 200);
    assert_eq!(
        up.targets()
            .iter()
            .filter(|t| t.contains("/early/"))
            .count(),
        1
    );

    // Each answer logged once, and counted with its duration.
    for path in [
        "/early/1", "/early/2", "/early/3", "/early/4", "/early/5", "/early/7",
    ] {
        let needle = format!("path=\"{path}\"");
        // /early/5's line (an HTTP/2 answer, logged after it was sent) was not waited for yet.
        p.access_line(&needle);
        assert_eq!(access_lines(&p, &[&needle]), 1, "{path}:\n{}", p.log_text());
    }
    assert!(p
        .access_line("path=\"/early/5\"")
        .contains("status=\"431\""));
    // The client stops reading /early/6 at its status: the request may still be ending. Its
    // line is written after its metrics are counted, so once the line is there, so are they.
    assert!(p
        .access_line("path=\"/early/6\"")
        .contains("status=\"200\""));
    let after = p.metrics();
    assert_eq!(count(&after, "400") - count(&before, "400"), 5.0);
    assert_eq!(count(&after, "431") - count(&before, "431"), 2.0);
    assert_eq!(count(&after, "408") - count(&before, "408"), 1.0);
    assert_eq!(durations(&after) - durations(&before), 9.0);
}

/// One HTTP/2 frame, as bytes.
fn h2_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[test]
fn an_http2_header_block_not_finished_in_time_gets_a_logged_408() {
    use std::io::Read;
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "slow-h2")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    let extra = format!("    hsts: \"{HSTS}\"\n    limits: {{ header_read: 1s }}\n");
    cfg.listener_extra = &extra;
    let p = Proxy::start(&w, &cfg);
    let before = p.metrics();

    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = tls_connector(&w, Some(&who), b"\x02h2")
        .connect("localhost", tcp)
        .unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2_frame(&mut out, 0x4, 0, 0, &[]);
    // HEADERS for stream 1 (`:method GET`, `:scheme https`) without END_HEADERS: the
    // CONTINUATION that would end the block never comes.
    h2_frame(&mut out, 0x1, 0, 1, &[0x82, 0x87]);
    let started = std::time::Instant::now();
    s.write_all(&out).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    let mut frames = Vec::new();
    let mut rest = &raw[..];
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let end = (9 + len).min(rest.len());
        frames.push((rest[3], rest[4], stream, rest[9..end].to_vec()));
        rest = &rest[end..];
    }
    let headers = frames
        .iter()
        .find(|f| f.0 == 0x1 && f.2 == 1)
        .unwrap_or_else(|| panic!("no HEADERS on stream 1: {frames:?}"));
    let block = String::from_utf8_lossy(&headers.3);
    for part in ["408", "application/json", "no-store", HSTS] {
        assert!(block.contains(part), "{part}: {block:?}");
    }
    let data = frames
        .iter()
        .find(|f| f.0 == 0x0 && f.2 == 1)
        .unwrap_or_else(|| panic!("no DATA on stream 1: {frames:?}"));
    let body: serde_json::Value = serde_json::from_slice(&data.3).unwrap();
    assert_eq!(body["reason"], "request header not received in time");
    assert!(frames.iter().any(|f| f.0 == 0x7), "no GOAWAY: {frames:?}");

    let line = p.access_line("status=\"408\"");
    assert!(line.contains("client=\"127.0.0.1\""), "{line}");
    let after = p.metrics();
    let count = |text: &str| {
        metric(
            text,
            "certgate_requests_total",
            &[("listener", "test"), ("code", "408")],
        )
    };
    assert_eq!(count(&after) - count(&before), 1.0);

    // A connection whose blocks arrive whole is not cut: a request after more than
    // header_read on the same connection is answered.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut send = h2_connect(&w, &p, Some(&who)).await;
        let mut statuses = Vec::new();
        for i in 0..2 {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            send = send.ready().await.unwrap();
            let req = http::Request::get(p.url(&format!("/h2/{i}")))
                .body(())
                .unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            statuses.push(resp.await.unwrap().status().as_u16());
        }
        statuses
    });
    assert_eq!(status, [200, 200]);
}
