//! HTTP/1.1 keep-alive through certgate's own loop (the connection waits for each request's
//! first bytes outside Pingora): every request of one TLS connection is served, however its
//! bytes arrive, and the header limits still bound each of them.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn one_connection_serves_requests_however_their_bytes_arrive() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "keep")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    limits: { header_read: 1s }\n";
    let p = Proxy::start(&w, &cfg);
    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = tls_connector(&w, Some(&who), b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap();

    // Whole requests, one after another.
    for i in 0..3 {
        s.write_all(format!("GET /r/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut s);
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
        assert!(resp.contains(&format!("/r/{i}")), "request {i}: {resp}");
        // The identity reaches the upstream on every request of the connection.
        assert!(resp.contains("CN=keep"), "request {i}: {resp}");
    }

    // A request whose bytes come one small write at a time: the first byte wakes the
    // connection, Pingora reads the rest.
    for piece in [
        &b"G"[..],
        b"ET /r/pieces HT",
        b"TP/1.1\r\nHo",
        b"st: x\r\n",
        b"\r\n",
    ] {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
    }
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("/r/pieces"), "{resp}");

    // A later request that never finishes its header is still cut off by header_read.
    s.write_all(b"GET /r/slow HTTP/1.1\r\nHost: x\r\n").unwrap();
    let resp = read_response(&mut s);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        resp.contains("request header not received in time"),
        "{resp}"
    );
    let rest = read_all(&mut s);
    assert!(rest.is_empty(), "the connection ends after the 408: {rest}");
}

#[test]
fn a_client_closing_between_requests_is_not_a_request() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "bye")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    for _ in 0..3 {
        let tcp = TcpStream::connect(p.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut s = tls_connector(&w, Some(&who), b"\x08http/1.1")
            .connect("localhost", tcp)
            .unwrap();
        s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
        let _ = s.shutdown();
    }
    // Three requests, each counted once; the closes between requests are not requests.
    let total = wait_for("three requests counted", Duration::from_secs(5), || {
        let m = p.metrics();
        let n = metric(&m, "certgate_requests_total", &[("code", "200")]);
        (n >= 3.0).then_some(m)
    });
    assert_eq!(
        metric(&total, "certgate_requests_total", &[("code", "200")]),
        3.0,
        "{total}"
    );
    assert_eq!(
        metric(&total, "certgate_requests_total", &[("code", "400")]),
        0.0,
        "{total}"
    );
}

#[test]
fn a_connection_waiting_for_its_next_request_does_not_hold_the_drain() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "idle")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    // Longer than the drain's grace: the idle timeout cannot be what ends the connection.
    cfg.listener_extra = "    timeouts: { idle: 60s }\n";
    let mut p = Proxy::start(&w, &cfg);
    // One connection whose last request certgate forwarded, one whose last request Pingora's
    // path served (a Connection header naming another header): the second waits for its next
    // request inside `HttpProxy`.
    let mut open = Vec::new();
    for extra in ["", "Connection: x-hop\r\n"] {
        let tcp = TcpStream::connect(p.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut s = tls_connector(&w, Some(&who), b"\x08http/1.1")
            .connect("localhost", tcp)
            .unwrap();
        s.write_all(format!("GET /first HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
            .unwrap();
        let resp = read_response(&mut s);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        open.push(s);
    }

    // The connection now waits for its next request; the process is told to drain.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = p.child.take().unwrap();
    let exit = wait_for("exit", Duration::from_secs(25), || {
        child.try_wait().unwrap()
    });
    assert_eq!(exit.code(), Some(0), "{}", p.log_text());
    // The drain ended because the last connection closed, not because its grace ran out with
    // the idle connection still open.
    let log = p.log_text();
    let drained = log
        .lines()
        .find(|l| l.contains("drained; exiting"))
        .unwrap_or_else(|| panic!("no drain line: {log}"));
    assert!(drained.contains("open=\"0\""), "{drained}");
    for mut s in open {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "no response on the idle connection: {rest:?}"
        );
    }
}
