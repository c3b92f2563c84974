//! The findings of the outside security pass, each through the real binary: request targets
//! that are not paths, empty lines before the request line, log injection through a
//! certificate, headers upstreams trust, body framing, path parameters, and `/status`.

mod common;

use std::time::Duration;

use certgate::pki::Issued;
use common::*;

const POLICY: &str = "permissions:\n  index: [\"GET|HEAD /\"]\n  logs: [\"GET /api/v1/logs/**\"]\n  upload: [\"POST /upload\"]\ngroups:\n  build-nodes: [index, logs, upload]\n";

struct Setup {
    w: World,
    up: RawUpstream,
    p: Proxy,
    node: Issued,
}

fn setup(listener_extra: &str) -> Setup {
    let w = World::new();
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    let up = RawUpstream::start(RawReply::Ok);
    let extra = format!("    policy: policy.yaml\n{listener_extra}");
    let mut cfg = ProxyConfig::new(up.addr);
    cfg.listener_extra = &extra;
    let p = Proxy::start(&w, &cfg);
    let node = client(&[("O", "build-nodes"), ("CN", "node1")], &w.ca);
    Setup { w, up, p, node }
}

impl Setup {
    fn send(&self, bytes: &[u8]) -> String {
        raw_https(&self.w, &self.p, Some(&self.node), bytes)
    }

    fn get(&self, target: &str) -> String {
        self.send(
            format!(
                "GET {target} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                self.p.addr.port()
            )
            .as_bytes(),
        )
    }
}

#[test]
fn targets_that_are_not_paths_are_refused_and_the_decided_path_is_what_is_forwarded() {
    let s = setup("");
    // `GET /` is granted: a target that some parser reads as `/` and another as `/admin/x`
    // must not ride on that grant.
    for target in [
        "foo:/admin/x",
        "x:/api/v1/vm",
        "admin/x",
        "foo:/a/../../admin/x",
        "*",
        "https://evil.example/admin/x",
        "http:/admin/x",
    ] {
        let resp = s.get(target);
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
    }
    assert_eq!(
        s.up.targets(),
        Vec::<String>::new(),
        "nothing reached the upstream"
    );
    let resp = s.get("foo:/admin/x");
    assert_eq!(
        raw_reason(&resp),
        "request target must be a path or an absolute http(s) URL"
    );

    // What is allowed reaches the upstream exactly as decided, rebuilt by certgate.
    let port = s.p.addr.port();
    for (target, forwarded) in [
        ("/".to_string(), "/"),
        ("/./?q=1".to_string(), "/?q=1"),
        ("//".to_string(), "/"),
        ("/api/v1/logs/a/../b".to_string(), "/api/v1/logs/b"),
        (
            format!("https://localhost:{port}/api/v1/logs/%78"),
            "/api/v1/logs/x",
        ),
        (format!("https://localhost:{port}?a=b"), "/?a=b"),
    ] {
        let before = s.up.targets().len();
        let resp = s.get(&target);
        assert!(resp.starts_with("HTTP/1.1 200"), "{target}: {resp}");
        assert_eq!(
            s.up.targets()[before..],
            [forwarded.to_string()],
            "{target}"
        );
    }
    // The access log shows the path that was decided and forwarded.
    wait_for("access log", Duration::from_secs(5), || {
        s.p.log_text()
            .contains("path=\"/api/v1/logs/x\"")
            .then_some(())
    });
}

#[test]
fn path_parameters_are_refused_unless_kept() {
    let s = setup("");
    for target in [
        "/api/v1/logs/..;/..;/admin/x",
        "/api/v1/logs/a;b",
        "/;/api/v1/logs/x",
    ] {
        let resp = s.get(target);
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert_eq!(raw_reason(&resp), "path parameter (;) in path", "{target}");
    }
    assert_eq!(s.up.targets(), Vec::<String>::new());
    // A `;` in the query is not a path parameter.
    assert!(s.get("/api/v1/logs/x?a;b").starts_with("HTTP/1.1 200"));

    let keep = setup("    path_params: keep\n");
    let resp = keep.get("/api/v1/logs/..;/..;/admin/x");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(keep.up.targets(), ["/api/v1/logs/..;/..;/admin/x"]);
}

#[test]
fn empty_lines_before_the_request_line_count_against_the_header_limits() {
    let s = setup("    limits:\n      header_read: 1s\n      max_header_bytes: 4096\n");
    // The HTTP parser skips them; the guard must still time the header (408)...
    let resp = s.send(b"\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    // ...and count them with it (431), whether they are few before a large header or many.
    let mut big = b"\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 4500));
    let resp = s.send(&big);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let mut many = b"\r\n".repeat(2100);
    many.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let resp = s.send(&many);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(s.up.targets(), Vec::<String>::new());
    // A few empty lines before a complete request are still accepted, as the parser does.
    let resp = s.send(b"\r\n\nGET / HTTP/1.1\nHost: localhost\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn headers_behind_empty_lines_cannot_grow_memory() {
    const CONNECTIONS: usize = 100;
    let s = setup("");
    let before = rss_kib(s.p.pid());
    let bound = before + 64 * 1024;
    // 100 connections each send empty lines and then a 900 KB header (the limit is 64 KiB),
    // and stay open until the memory has been looked at.
    let written = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let release = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS + 1));
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (addr, ca) = (s.p.addr, s.w.path("ca.pem"));
            let (cert, key) = (s.node.cert.clone(), s.node.key.clone());
            let (written, release) = (written.clone(), release.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut b =
                    openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
                b.set_ca_file(ca).unwrap();
                b.set_certificate(&cert).unwrap();
                b.set_private_key(&key).unwrap();
                b.set_alpn_protos(b"\x08http/1.1").unwrap();
                let tcp = std::net::TcpStream::connect(addr).unwrap();
                let tls = b.build().connect("localhost", tcp);
                if let Ok(mut tls) = tls {
                    let _ = tls.write_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ");
                    let chunk = vec![b'a'; 16 * 1024];
                    for _ in 0..56 {
                        if tls.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    written.wait();
                    release.wait();
                } else {
                    written.wait();
                    release.wait();
                }
            })
        })
        .collect();
    written.wait();
    // What the proxy has not read yet sits in socket buffers: give it a moment to take it in
    // (or to stop at the limit), stopping early once the bound is crossed.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while peak_rss_kib(s.p.pid()) < bound && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = peak_rss_kib(s.p.pid());
    release.wait();
    for t in threads {
        let _ = t.join();
    }
    eprintln!("certgate RSS before {before} KiB, peak {peak} KiB with {CONNECTIONS} connections");
    assert!(
        peak < bound,
        "{CONNECTIONS} connections with 900 KB headers grew certgate from {before} KiB to a peak of {peak} KiB"
    );
    assert_eq!(s.up.targets(), Vec::<String>::new());
}

#[test]
fn framing_sent_upstream_is_certgate_s_own() {
    let s = setup("");
    let post = |headers: &str, body: &str| {
        s.send(
            format!("POST /upload HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n{body}")
                .as_bytes(),
        )
    };
    let lengths = |head: &str| -> Vec<String> {
        head.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .map(|l| l.to_ascii_lowercase())
            .collect()
    };
    for headers in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let before = s.up.heads().len();
        let resp = post(headers, "hello");
        assert!(resp.starts_with("HTTP/1.1 200"), "{headers}: {resp}");
        let head = &s.up.heads()[before];
        assert_eq!(lengths(head), ["content-length: 5"], "{head}");
    }
    let sent = s.up.heads().len();
    let resp = post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = post(
        "Transfer-Encoding: gzip, chunked\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 501"), "{resp}");
    assert!(raw_reason(&resp).contains("gzip"), "{resp}");
    assert_eq!(
        s.up.heads().len(),
        sent,
        "refused requests never reach the upstream"
    );
    let resp = post("Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let head = s.up.heads()[sent].to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(lengths(&head).is_empty(), "{head}");
}

#[test]
fn status_shows_no_hash_of_the_private_key() {
    let s = setup("");
    let (code, body) = http_get(s.p.admin, "/status").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let files = v["listeners"][0]["files"].as_array().unwrap().clone();
    let file = |name: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .clone()
    };
    assert!(file("server-key.pem").get("sha256").is_none(), "{body}");
    for name in ["/server.pem", "/ca.pem", "/crl.pem"] {
        assert_eq!(file(name)["sha256"].as_str().unwrap().len(), 64, "{name}");
    }
    let key = std::fs::read(s.w.path("server-key.pem")).unwrap();
    assert!(!body.contains(&hex::encode(openssl::sha::sha256(&key))));
}

/// Go's `net/http` (what Anka's Controller and Registry are written in) as the upstream, when
/// a Go toolchain is installed: it routes `foo:/admin/x` to `/admin/x`, so this is the upstream
/// the bypass was found against.
struct GoUpstream {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for GoUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn go_upstream() -> GoUpstream {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.go"),
        r#"package main

import (
	"fmt"
	"net"
	"net/http"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Addr().String())
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "path=%s uri=%s", r.URL.Path, r.RequestURI)
	}))
}
"#,
    )
    .unwrap();
    let bin = dir.path().join("upstream");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(dir.path().join("main.go"))
        .env("GOCACHE", dir.path().join("cache"))
        .env("GO111MODULE", "off")
        .output();
    match built {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("go build: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!("no Go toolchain ({e}): proxy/bootstrap.sh test installs golang-go"),
    }
    let mut child = std::process::Command::new(&bin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    GoUpstream {
        child,
        addr: line.trim().parse().unwrap(),
        _dir: dir,
    }
}

#[test]
fn a_go_upstream_receives_the_decided_path() {
    let go = go_upstream();
    let w = World::new();
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    let mut cfg = ProxyConfig::new(go.addr);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let node = client(&[("O", "build-nodes"), ("CN", "node1")], &w.ca);
    let get = |target: &str| {
        raw_https(
            &w,
            &p,
            Some(&node),
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    for target in ["foo:/admin/x", "x:/api/v1/vm", "foo:/a/../../admin/x"] {
        let resp = get(target);
        assert!(resp.starts_with("HTTP/1.1 400"), "{target}: {resp}");
        assert!(!resp.contains("path=/admin"), "{target}: {resp}");
    }
    let resp = get("/");
    assert!(resp.ends_with("path=/ uri=/"), "{resp}");
    let resp = get("/api/v1/logs/x/../y?q=1");
    assert!(
        resp.ends_with("path=/api/v1/logs/y uri=/api/v1/logs/y?q=1"),
        "{resp}"
    );
}
