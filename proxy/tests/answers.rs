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
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let cases = [
        (
            "certgate's path",
            "GET /pipe/1 HTTP/1.1\r\nHost: x\r\n\r\n\
             POST /pipe/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
             GET /pipe/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
        (
            // A Connection header naming another header, and `Expect`, stay on Pingora's path.
            "Pingora's path",
            "GET /pipe/4 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n\
             POST /pipe/5 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello\
             GET /pipe/6 HTTP/1.1\r\nHost: x\r\nConnection: x-hop, close\r\n\r\n",
        ),
        (
            "both, alternating",
            "GET /pipe/7 HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /pipe/8 HTTP/1.1\r\nHost: x\r\nConnection: x-hop\r\n\r\n\
             GET /pipe/9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (name, requests) in cases {
        let answers = pipelined(&w, &p, &who, requests);
        assert_eq!(answers.len(), 3, "{name}: {answers:#?}");
        for a in &answers {
            assert!(a.starts_with("200"), "{name}: {answers:#?}");
        }
        // In order: each GET's echo names its own path; the POST's names its body's length.
        let n: Vec<&str> = requests.split("/pipe/").skip(1).map(|r| &r[..1]).collect();
        for (i, a) in answers.iter().enumerate() {
            if requests.contains(&format!("POST /pipe/{}", n[i])) {
                assert!(a.contains("\"body_bytes\":5"), "{name} {i}: {a}");
            } else {
                assert!(a.contains(&format!("/pipe/{}", n[i])), "{name} {i}: {a}");
            }
        }
    }
    // Every request was decided and logged once, as any other.
    for i in 1..=9 {
        let line = p.access_line(&format!("/pipe/{i}"));
        assert!(line.contains("status=\"200\""), "{line}");
    }
}
