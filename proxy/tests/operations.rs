//! Operations: admin endpoints, metrics after real traffic, JSON access log, graceful drain,
//! and the limits against misbehaving clients, each tried with a raw socket that misbehaves.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn tls_conn(
    w: &World,
    p: &Proxy,
    who: &certgate::pki::Issued,
) -> openssl::ssl::SslStream<TcpStream> {
    let tcp = TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tls_connector(w, Some(who), b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_every_metric_family() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "m")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    assert_eq!(http_get(p.admin, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(p.admin, "/readyz").unwrap().0, 200);
    // Pingora's lines (through the `log` crate) in the text format: its target, not the
    // bridge's `log.file`/`log.line` fields.
    let log = p.log_text();
    let pingora = log
        .lines()
        .find(|l| l.contains("pingora_core::server"))
        .unwrap_or_else(|| panic!("a line of Pingora's start-up:\n{log}"));
    assert!(!pingora.contains("log."), "{pingora}");
    let (code, body) = http_get(p.admin, "/nope").unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, _) = get_json(&https(&w, &p, Some(&who)), &p.url("/x")).await;
    assert_eq!(code, 200);
    let (code, _) = get_json(&https(&w, &p, None), &p.url("/x")).await;
    assert_eq!(code, 401);

    let (code, body) = http_get(p.admin, "/status").unwrap();
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    let l = &s["listeners"][0];
    assert_eq!(l["name"], "test");
    let files: Vec<&str> = l["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("ca.pem")) && files.iter().any(|f| f.ends_with("crl.pem")),
        "{files:?}"
    );
    assert_eq!(l["files"][0]["sha256"].as_str().unwrap().len(), 64);
    assert!(l["server_certificate"]["not_after"].as_i64().unwrap() > 0);
    assert_eq!(
        l["client_cas"][0]["subject"],
        "CN=Test Root CA,O=certgate tests"
    );
    assert_eq!(l["crls"][0]["revoked"], 0);
    assert!(l["crls"][0]["next_update"].as_i64().unwrap() > 0);

    // A request is counted in its finish step, after its response was sent: wait until both
    // are (the exact counts are asserted below).
    let m = wait_for("both requests counted", Duration::from_secs(10), || {
        let m = p.metrics();
        (metric(
            &m,
            "certgate_request_duration_seconds_count",
            &[("listener", "test")],
        ) >= 2.0)
            .then_some(m)
    });
    for family in [
        "certgate_requests_total",
        "certgate_request_duration_seconds_bucket",
        "certgate_handshakes_total",
        "certgate_authz_decisions_total",
        "certgate_reloads_total",
        "certgate_certificate_not_after_seconds",
        "certgate_crl_next_update_seconds",
        "certgate_upstream_errors_total",
    ] {
        assert!(
            m.contains(&format!("# TYPE {}", family.trim_end_matches("_bucket"))),
            "missing family {family}:\n{m}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "certgate_requests_total",
            &[("listener", "test"), ("code", "200"), ("decision", "allow")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "certgate_requests_total",
            &[("code", "401"), ("decision", "deny")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "certgate_request_duration_seconds_count",
            &[("listener", "test")]
        ),
        2.0
    );
    assert!(
        metric(
            &m,
            "certgate_certificate_not_after_seconds",
            &[("kind", "server"), ("subject", "CN=localhost")]
        ) > 1.7e9
    );
    assert!(
        metric(
            &m,
            "certgate_crl_next_update_seconds",
            &[("issuer", "CN=Test Root CA,O=certgate tests")]
        ) > 1.7e9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_one_json_line_per_request() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "logged")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    cfg.top_extra = "log:\n  format: json\n";
    let p = Proxy::start(&w, &cfg);
    let (code, _) = get_json(&https(&w, &p, Some(&who)), &p.url("/api/v1/vm?secret=1")).await;
    assert_eq!(code, 200);
    let line = wait_for("access log line", Duration::from_secs(10), || {
        p.log_text()
            .lines()
            .find(|l| l.contains("certgate::access"))
            .map(str::to_string)
    });
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["listener"], "test");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert_eq!(v["user"], "logged");
    assert_eq!(v["groups"], "ci");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["client"], "127.0.0.1");
    assert!(v["duration_ms"].as_f64().is_some());
    assert!(
        !p.log_text().contains("BEGIN CERTIFICATE"),
        "no certificates at info level"
    );
}

/// `certgate run` on a config whose addresses are `listen` and `admin`: its exit code and what
/// it printed, once it has exited (within a deadline: it must not stay up without a listener).
fn run_until_exit(w: &World, listen: &str, admin: &str) -> (Option<i32>, String) {
    let config = w.path("bind.yaml");
    std::fs::write(
        &config,
        format!(
            "admin:\n  listen: {admin}\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem]\nlisteners:\n  - name: test\n    listen: {listen}\n    upstream: http://{}\n",
            upstream()
        ),
    )
    .unwrap();
    let err = w.path("bind.err");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let exit = wait_for("certgate to exit", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    });
    (
        exit.code(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

#[test]
fn an_address_it_cannot_listen_on_stops_the_start_naming_the_key_and_the_fix() {
    let w = World::new();
    // Held by another socket for the whole test: another process listening there.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let free = free_addr().to_string();

    let (code, err) = run_until_exit(&w, &taken, &free);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bind.yaml")
            && err.contains(&format!("listeners[0].listen: cannot listen on {taken}"))
            && err.contains("another process listens there: stop it or choose another port"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("Bootstrap"),
        "{err}"
    );

    // An address no interface of this host has (TEST-NET-1).
    let (code, err) = run_until_exit(&w, "192.0.2.1:8443", &free);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("listeners[0].listen: cannot listen on 192.0.2.1:8443")
            && err.contains("no interface of this host has that address"),
        "{err}"
    );

    let (code, err) = run_until_exit(&w, &free_addr().to_string(), &taken);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("admin.listen: cannot listen on {taken}"))
            && err.contains("another process listens there"),
        "{err}"
    );
    // Checked before anything starts: nothing of Pingora's start-up is logged first.
    assert!(!err.contains("Bootstrap"), "{err}");
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "slow")], &w.ca);
    let mut p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut conn = tls_conn(&w, &p, &who);
    conn.write_all(b"GET /slow/1500 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // The request is in flight once certgate has identified its client (`/clients` counts it
    // before the request goes upstream): only then is the drain owed its answer.
    wait_for("the request in flight", Duration::from_secs(10), || {
        let (_, body) = http_get(p.admin, "/clients")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["clients"][0]["requests"] == 1).then_some(())
    });
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _) = wait_for("readyz 503 while draining", Duration::from_secs(5), || {
        http_get(p.admin, "/readyz").filter(|(c, _)| *c == 503)
    });
    assert_eq!(code, 503);
    let mut buf = vec![0u8; 8192];
    let n = conn.read(&mut buf).unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {resp}"
    );
    drop(conn);
    let mut child = p.child.take().unwrap();
    let exit = wait_for("exit", Duration::from_secs(15), || {
        child.try_wait().unwrap()
    });
    assert_eq!(exit.code(), Some(0), "{}", p.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exits once drained, not after the full grace"
    );
    assert!(
        TcpStream::connect_timeout(&p.addr, Duration::from_secs(1)).is_err(),
        "listener closed"
    );
}

#[test]
fn limits_against_misbehaving_clients() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "limits")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    timeouts: { handshake: 1s, idle: 2s }\n    limits: { max_connections: 3, header_read: 2s, max_header_bytes: 16384 }\n";
    let p = Proxy::start(&w, &cfg);

    // A header sent one byte a second: cut off with 408.
    let mut slow = tls_conn(&w, &p, &who);
    let started = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: x\r\n" {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let resp = read_all(&mut slow);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(
        resp.contains("\"reason\":\"request header not received in time\""),
        "{resp}"
    );

    // A 1 MiB header: 431 JSON.
    let mut big = tls_conn(&w, &p, &who);
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend_from_slice(b"\r\n\r\n");
    let _ = big.write_all(&req);
    let resp = read_all(&mut big);
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );

    // A handshake never finished: closed after timeouts.handshake.
    let mut raw = TcpStream::connect(p.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    raw.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut b = [0u8; 16];
    let n = raw.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "connection closed");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "closed by the handshake timeout"
    );

    // One connection too many: three are held open, the fourth is closed at once. A connection
    // gives its place back only after its client saw it end: wait until the ones above have.
    wait_for(
        "the earlier connections released",
        Duration::from_secs(10),
        || (metric(&p.metrics(), "certgate_connections_active", &[]) == 0.0).then_some(()),
    );
    let held: Vec<_> = (0..3).map(|_| tls_conn(&w, &p, &who)).collect();
    let mut extra = TcpStream::connect(p.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 16];
    assert_eq!(
        extra.read(&mut b).unwrap_or(0),
        0,
        "fourth connection closed"
    );
    drop(held);
    let m = p.metrics();
    assert!(
        metric(
            &m,
            "certgate_connections_refused_total",
            &[("reason", "max_connections")]
        ) >= 1.0,
        "{m}"
    );
    // The 408 and 431 are counted after their response was sent, the handshake timeout after
    // the connection was closed: what the client saw can come first.
    for (what, name, labels) in [
        (
            "the 408 counted",
            "certgate_requests_total",
            &[("code", "408")][..],
        ),
        (
            "the 431 counted",
            "certgate_requests_total",
            &[("code", "431")][..],
        ),
        (
            "the handshake timeout counted",
            "certgate_handshakes_total",
            &[("result", "fail"), ("reason", "timeout")][..],
        ),
    ] {
        wait_for(what, Duration::from_secs(10), || {
            (metric(&p.metrics(), name, labels) >= 1.0).then_some(())
        });
    }

    // Idle keep-alive: closed after timeouts.idle.
    let mut idle = tls_conn(&w, &p, &who);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 8192];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let t = Instant::now();
    let rest = read_all(&mut idle);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "idle connection closed after about 2s, got {rest}"
    );
}
