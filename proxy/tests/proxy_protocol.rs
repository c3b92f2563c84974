//! PROXY protocol v1/v2 against a real peer (HAProxy in TCP mode, as an AWS NLB would sit), the
//! LOCAL command, plain connections refused, and `proxy_protocol_from`.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy(w: &World, target: SocketAddr) -> (Haproxy, SocketAddr, SocketAddr) {
    let (v2, v1) = (free_addr(), free_addr());
    let cfg = format!(
        "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend fe_v2\n  bind {v2}\n  default_backend be_v2\nbackend be_v2\n  server certgate {target} send-proxy-v2\nfrontend fe_v1\n  bind {v1}\n  default_backend be_v1\nbackend be_v1\n  server certgate {target} send-proxy\n"
    );
    let path = w.path("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy must be installed (proxy/bootstrap.sh test installs it)");
    let h = Haproxy(child);
    for addr in [v2, v1] {
        wait_for("haproxy listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).ok()
        });
    }
    (h, v2, v1)
}

fn via(w: &World, who: &certgate::pki::Issued, front: SocketAddr, source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem(&w.ca)).unwrap())
        .identity(reqwest::Identity::from_pkcs8_pem(&cert_pem(who), &key_pem(who)).unwrap())
        .resolve("localhost", front)
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_v1_and_v2_carry_the_real_client_address() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "behind-nlb")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1/32]\n";
    let p = Proxy::start(&w, &cfg);
    let (_h, v2, v1) = haproxy(&w, p.addr);
    for (front, source) in [(v2, "127.0.0.7"), (v1, "127.0.0.9")] {
        let url = format!("https://localhost:{}/nlb", front.port());
        let (code, v) = get_json(&via(&w, &who, front, source), &url).await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(seen(&v, "x-forwarded-for"), [source]);
        assert_eq!(seen(&v, "x-real-ip"), [source]);
        assert_eq!(seen(&v, "x-certgate-user"), ["behind-nlb"]);
    }
    let line = wait_for(
        "access log with the real client",
        Duration::from_secs(5),
        || {
            p.log_text()
                .lines()
                .find(|l| l.contains("certgate::access") && l.contains("127.0.0.7"))
                .map(str::to_string)
        },
    );
    assert!(line.contains("/nlb"));
}

async fn raw_tls(
    addr: SocketAddr,
    w: &World,
    who: &certgate::pki::Issued,
    preamble: &[u8],
) -> std::io::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(preamble).await?;
    let ssl = tls_connector(w, Some(who), b"\x08http/1.1")
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls)
        .connect()
        .await
        .map_err(std::io::Error::other)?;
    tls.write_all(b"GET /raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_command_plain_connections_and_untrusted_sources() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "raw")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    proxy_protocol: true\n";
    let p = Proxy::start(&w, &cfg);

    // v2 LOCAL (NLB health checks): the socket address stands.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let resp = raw_tls(p.addr, &w, &who, &local).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\"x-forwarded-for\":[\"127.0.0.1\"]"),
        "{resp}"
    );

    // v1 from a raw socket, ClientHello in the same write path right after.
    let resp = raw_tls(
        p.addr,
        &w,
        &who,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n",
    )
    .await
    .unwrap();
    assert!(
        resp.contains("\"x-forwarded-for\":[\"203.0.113.7\"]"),
        "{resp}"
    );

    // v2 through AWS PrivateLink: the VPC endpoint id is in the access log.
    let vpce = b"vpce-0123456789abcdef0";
    let mut tlv = vec![0xEA, 0x00, (vpce.len() + 1) as u8, 0x01];
    tlv.extend_from_slice(vpce);
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11]);
    v2.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x11, 0x5c, 0x01, 0xbb]);
    v2.extend_from_slice(&tlv);
    let resp = raw_tls(p.addr, &w, &who, &v2).await.unwrap();
    assert!(
        resp.contains("\"x-forwarded-for\":[\"198.51.100.9\"]"),
        "{resp}"
    );
    wait_for(
        "access log with the VPC endpoint id",
        Duration::from_secs(5),
        || {
            p.log_text()
                .lines()
                .find(|l| l.contains("certgate::access") && l.contains("vpce-0123456789abcdef0"))
                .map(str::to_string)
        },
    );

    // No header: refused before TLS.
    assert!(
        raw_tls(p.addr, &w, &who, b"").await.is_err(),
        "plain TLS to a proxy_protocol listener is refused"
    );
    let m = p.metrics();
    assert!(
        metric(
            &m,
            "certgate_connections_refused_total",
            &[("reason", "proxy_missing")]
        ) >= 1.0,
        "{m}"
    );
    drop(p);

    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.0/8]\n";
    let p = Proxy::start(&w, &cfg);
    assert!(raw_tls(
        p.addr,
        &w,
        &who,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n"
    )
    .await
    .is_err());
    let m = p.metrics();
    assert!(
        metric(
            &m,
            "certgate_connections_refused_total",
            &[("reason", "proxy_untrusted")]
        ) >= 1.0,
        "{m}"
    );
}

/// Whether the server has closed `s` (reads nothing but the end or a reset, without blocking).
fn closed(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_counts_the_proxy_source_before_tls() {
    use std::io::Write;
    use std::time::Instant;
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "neighbour")], &w.ca);
    let mut cfg = ProxyConfig::new(up);
    // A long handshake timeout: a silent connection is only ever closed by the limit.
    cfg.listener_extra =
        "    proxy_protocol: true\n    timeouts: { handshake: 120s }\n    limits: { connections_per_ip: 3 }\n";
    let p = Proxy::start(&w, &cfg);
    let from_a = b"PROXY TCP4 198.51.100.1 203.0.113.9 40000 443\r\n";
    let from_b = b"PROXY TCP4 198.51.100.2 203.0.113.9 40001 443\r\n";

    // Four connections from A that send their PROXY header and never start TLS.
    let mut conns: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(p.addr).unwrap();
            s.write_all(from_a).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // One of them is closed at once: whichever came fourth (the others held A's three places
    // when it was counted, so the count is final once one is closed).
    let started = Instant::now();
    let refused = wait_for(
        "a connection from A closed by the limit",
        Duration::from_secs(10),
        || {
            let shut: Vec<usize> = (0..conns.len())
                .filter(|i| closed(&mut conns[*i]))
                .collect();
            (!shut.is_empty()).then_some(shut)
        },
    );
    eprintln!("closed {:?} after the PROXY header", started.elapsed());
    assert_eq!(refused.len(), 1, "{refused:?} of 4 closed");
    conns.remove(refused[0]);
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "certgate_connections_refused_total",
            &[("listener", "test"), ("reason", "connections_per_ip")]
        ),
        1.0,
        "{m}"
    );

    // B is another client: served while A holds its three.
    let resp = raw_tls(p.addr, &w, &who, from_b).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\"x-forwarded-for\":[\"198.51.100.2\"]"),
        "{resp}"
    );
    // A real client from A is refused too, before any TLS.
    assert!(raw_tls(p.addr, &w, &who, from_a).await.is_err());
    assert!(
        conns.iter_mut().all(|s| !closed(s)),
        "A's three silent connections stay open"
    );

    // A closed connection gives its place back.
    drop(conns.pop());
    let resp = wait_for("a place for A again", Duration::from_secs(10), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| rt.block_on(raw_tls(p.addr, &w, &who, from_a))).ok()
    });
    assert!(
        resp.contains("\"x-forwarded-for\":[\"198.51.100.1\"]"),
        "{resp}"
    );
}

#[test]
fn plain_http_after_a_proxy_header_gets_the_400_and_names_the_real_client() {
    use std::io::Write;
    let w = World::new();
    let mut cfg = ProxyConfig::new(upstream());
    cfg.listener_extra = "    proxy_protocol: true\n";
    let p = Proxy::start(&w, &cfg);

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x11, 0x5c, 0x01, 0xbb]);
    for (header, source) in [
        (
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n"[..],
            "203.0.113.7",
        ),
        (&v2[..], "198.51.100.9"),
    ] {
        let mut s = std::net::TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(header).unwrap();
        s.write_all(b"GET /behind-nlb HTTP/1.1\r\nHost: ctrl\r\n\r\n")
            .unwrap();
        let raw = read_all(&mut s);
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{raw}");
        assert_eq!(
            raw_reason(&raw),
            "plain HTTP sent to the TLS port; use https://",
            "{raw}"
        );
        let line = wait_for("the plain request logged", Duration::from_secs(15), || {
            p.log_text()
                .lines()
                .find(|l| {
                    l.contains("plain HTTP sent to the TLS port")
                        && l.contains(&format!("client=\"{source}\""))
                })
                .map(str::to_string)
        });
        assert!(line.contains("method=\"GET\""), "{line}");
    }
    let m = wait_for("both counted", Duration::from_secs(15), || {
        let m = p.metrics();
        (metric(
            &m,
            "certgate_handshakes_total",
            &[("result", "fail"), ("reason", "plain_http")],
        ) >= 2.0)
            .then_some(m)
    });
    // Counted as a handshake that failed, not as a PROXY protocol refusal.
    assert_eq!(
        metric(&m, "certgate_connections_refused_total", &[]),
        0.0,
        "{m}"
    );
}
