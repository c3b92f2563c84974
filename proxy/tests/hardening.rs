//! Hardening from the outside security pass, through the real binary: headers that upstreams
//! trust are stripped, the text access log cannot be split by a certificate, open WebSocket
//! tunnels are closed when a reload withdraws their access, and an HTTP/2 client that never
//! opens its window holds a bounded number of upstream connections for a bounded time.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::tunnel::{closed_by, open_tunnel};
use common::*;

const STRIPPED: [&str; 11] = [
    "X-HTTP-Method-Override",
    "X-Method-Override",
    "X-HTTP-Method",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Remote-User",
    "Remote-User",
    "X-Forwarded-User",
    "X-SSL-Client-DN",
    "X-Client-Cert",
    "ssl-client-s-dn",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_upstreams_trust_are_stripped_unless_passed() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    for http1 in [true, false] {
        let mut b = https_builder(&w, &p, Some(&who));
        if http1 {
            b = b.http1_only();
        }
        let c = b.build().unwrap();
        let mut req = c.get(p.url("/x"));
        for name in STRIPPED {
            req = req.header(name, "DELETE /admin");
        }
        // Underscore spellings are the same header to many frameworks.
        req = req.header("x_http_method_override", "DELETE");
        req = req.header("Forwarded", "for=6.6.6.6;host=evil;proto=http");
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        for name in STRIPPED {
            assert!(
                seen(&v, &name.to_ascii_lowercase()).is_empty(),
                "{name}: {v}"
            );
        }
        assert!(seen(&v, "x_http_method_override").is_empty(), "{v}");
        assert_eq!(
            seen(&v, "forwarded"),
            [format!(
                "for=127.0.0.1;host=\"localhost:{}\";proto=https",
                p.addr.port()
            )],
            "http1={http1}"
        );
    }
    drop(p);

    // A listener can pass one on to an upstream that needs it.
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    pass_client_headers: [X-HTTP-Method-Override]\n";
    let p = Proxy::start(&w, &cfg);
    let r = https(&w, &p, Some(&who))
        .get(p.url("/x"))
        .header("X-HTTP-Method-Override", "PATCH")
        .header("X-Original-URL", "/admin")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen(&v, "x-http-method-override"), ["PATCH"]);
    assert!(seen(&v, "x-original-url").is_empty());

    // Identity headers cannot be passed: the config is refused, naming the key.
    let bad = w.path("bad.yaml");
    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("[X-HTTP-Method-Override]", "[x-certgate-user]");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pass_client_headers") && err.contains("x-certgate-user"),
        "{err}"
    );
}

/// What other auth proxies (oauth2-proxy, NGINX `auth_request`, IIS rewrite) send an upstream
/// to say who is asking or where it was mounted.
const LOOK_ALIKES: [&str; 17] = [
    "X-Forwarded-Prefix",
    "X-Forwarded-Port",
    "X-Original-URI",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Access-Token",
    "X-Auth-Request-Anything-New",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Remote-User",
    "Remote-User",
];

/// Whether the header `name` is (a spelling of) one of [`LOOK_ALIKES`].
fn look_alike(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    n.starts_with("x-auth-request-") || LOOK_ALIKES.iter().any(|l| l.to_ascii_lowercase() == n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_identity_headers_never_reach_the_upstream_on_any_path() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    // HTTP/1.1 and HTTP/2, each on certgate's own forwarding and, with `Expect`, on Pingora's.
    for (http1, expect) in [(true, false), (true, true), (false, false), (false, true)] {
        let mut b = https_builder(&w, &p, Some(&who));
        if http1 {
            b = b.http1_only();
        }
        let c = b.build().unwrap();
        let mut req = c.post(p.url("/look-alike")).body("");
        for name in LOOK_ALIKES {
            req = req.header(name, "admin");
            req = req.header(name.to_ascii_lowercase().replace('-', "_"), "admin");
        }
        req = req.header("X_Auth-Request_Mixed", "admin");
        req = req.header("x-request-id", "kept");
        if expect {
            req = req.header("expect", "100-continue");
        }
        let r = req.send().await.unwrap();
        let version = r.version();
        assert_eq!(r.status(), 200, "http1={http1} expect={expect}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(version == reqwest::Version::HTTP_11, http1, "http1={http1}");
        let received: Vec<&String> = v["headers"]
            .as_object()
            .map(|h| h.keys().collect())
            .unwrap_or_default();
        let leaked: Vec<&&String> = received.iter().filter(|n| look_alike(n)).collect();
        assert!(
            leaked.is_empty(),
            "http1={http1} expect={expect}: {leaked:?} reached the upstream: {v}"
        );
        // The request did arrive with the client's other headers.
        assert_eq!(seen(&v, "x-request-id"), ["kept"], "{v}");
        assert_eq!(v["path"], "/look-alike", "{v}");
    }
    drop(p);

    // A listener passes on exactly the ones it names, a whole `x-auth-request-*` included.
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    pass_client_headers: [X-Auth-Request-*, x_forwarded_prefix]\n";
    let p = Proxy::start(&w, &cfg);
    let r = https(&w, &p, Some(&who))
        .get(p.url("/passed"))
        .header("X-Auth-Request-Email", "alice@example.com")
        .header("X-Forwarded-Prefix", "/app")
        .header("X-Forwarded-User", "admin")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        seen(&v, "x-auth-request-email"),
        ["alice@example.com"],
        "{v}"
    );
    assert_eq!(seen(&v, "x-forwarded-prefix"), ["/app"], "{v}");
    assert!(seen(&v, "x-forwarded-user").is_empty(), "{v}");
}

/// `key="value"` fields of a text log line after `target: `, unescaped; None if the line does
/// not parse as exactly such fields.
fn text_fields(line: &str, target: &str) -> Option<HashMap<String, String>> {
    let rest = &line[line.find(&format!("{target}: "))? + target.len() + 2..];
    let mut fields = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty()
            || key.contains(' ')
            || chars.next() != Some('=')
            || chars.next() != Some('"')
        {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    'u' => {
                        let hex: String = std::iter::from_fn(|| chars.next_if(|c| *c != '}'))
                            .filter(|c| *c != '{')
                            .collect();
                        chars.next();
                        value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        fields.insert(key, value);
        match chars.next() {
            None => return Some(fields),
            Some(' ') => {}
            Some(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_cannot_split_or_forge_a_text_log_line() {
    let w = World::new();
    let up = upstream();
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let cn = "evil\r\nx-certgate-user: admin decision=\"allow\"";
    let org = "ci groups=\"admins\" decision=allow \\";
    let evil = client(&[("O", org), ("CN", cn)], &w.ca);
    let (code, _) = get_json(&https(&w, &p, Some(&evil)), &p.url("/forged")).await;
    assert_eq!(code, 200);
    let lines = wait_for("access log", Duration::from_secs(5), || {
        let lines: Vec<String> = p
            .log_text()
            .lines()
            .filter(|l| l.contains("certgate::access"))
            .map(str::to_string)
            .collect();
        (!lines.is_empty()).then_some(lines)
    });
    assert_eq!(lines.len(), 1, "one request, one line: {lines:#?}");
    let fields = text_fields(&lines[0], "certgate::access")
        .unwrap_or_else(|| panic!("not key=\"value\" fields: {}", lines[0]));
    assert_eq!(fields["user"], cn);
    // The groups field carries the values as x-certgate-groups writes them: RFC 2253 escapes
    // the quotes and the backslash (the log's own quoting is undone by text_fields).
    assert_eq!(
        fields["groups"],
        r#"ci groups=\"admins\" decision=allow \\"#
    );
    assert_eq!(fields["decision"], "allow");
    assert_eq!(fields["path"], "/forged");
    assert!(
        !p.log_text()
            .lines()
            .any(|l| l.starts_with("x-certgate-user")),
        "{}",
        p.log_text()
    );
}

/// A refused certificate's CN is the client's own text: in the refusal's line (`required`) and
/// in the access line's `presented_subject` (`optional`) it stays one field of one line, in
/// both log formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_cannot_split_or_forge_a_log_line_in_either_format() {
    const REFUSED: &str = "client certificate refused in the handshake";
    let w = World::new();
    let stranger_ca = ca("Stranger CA");
    // CN and O hold at most 64 characters: a forged line, and a JSON field break-out.
    let cn = "evil\n2099 INFO x: refused client=\"10.6.6.6\" reason=\"ok\"";
    let evil = client(
        &[("O", "ci\"},{\"client\":\"10.6.6.6"), ("CN", cn)],
        &stranger_ca,
    );
    // What the refusal must say: the DN as OpenSSL prints it, newline escaped as \0A.
    let subject = openssl_subject(&w, &evil.cert);
    assert!(
        subject.contains(r"evil\0A2099") && subject.contains(r#"\"10.6.6.6\""#),
        "{subject}"
    );

    for json in [false, true] {
        let top = if json { "log:\n  format: json\n" } else { "" };
        let mut logs = Vec::new();
        for auth in ["required", "optional"] {
            let cfg = ProxyConfig {
                client_auth: auth,
                top_extra: top,
                ..ProxyConfig::new(upstream())
            };
            let p = Proxy::start(&w, &cfg);
            let sent = https(&w, &p, Some(&evil)).get(p.url("/evil")).send().await;
            let needle = if auth == "required" {
                assert!(sent.is_err(), "required: the handshake is refused");
                REFUSED
            } else {
                assert_eq!(sent.map(|r| r.status().as_u16()).ok(), Some(401));
                "/evil"
            };
            let log = wait_for("the refusal logged", Duration::from_secs(15), || {
                let log = p.log_text();
                log.contains(needle).then_some(log)
            });
            logs.push((auth, needle, log));
        }
        for (auth, needle, log) in logs {
            // No line but certgate's own: the forged one would start with its timestamp.
            assert!(
                !log.lines()
                    .any(|l| l.starts_with("2099") || l.starts_with("\"")),
                "{auth} json={json}:\n{log}"
            );
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            assert_eq!(lines.len(), 1, "{auth} json={json}: {lines:#?}");
            let fields: HashMap<String, String> = if json {
                let v: serde_json::Value =
                    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {}", lines[0]));
                v.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            } else if auth == "required" {
                let rest = lines[0]
                    .split_once(&format!("{REFUSED} "))
                    .map(|(_, rest)| format!("t: {rest}"))
                    .unwrap_or_default();
                text_fields(&rest, "t").unwrap_or_else(|| panic!("not fields: {}", lines[0]))
            } else {
                text_fields(lines[0], "certgate::access")
                    .unwrap_or_else(|| panic!("not fields: {}", lines[0]))
            };
            let field = if auth == "required" {
                "subject"
            } else {
                "presented_subject"
            };
            assert_eq!(fields[field], subject, "{auth} json={json}: {}", lines[0]);
            assert_eq!(
                fields["client"], "127.0.0.1",
                "{auth} json={json}: {}",
                lines[0]
            );
            if auth == "required" {
                assert_eq!(fields["reason"], "unknown CA", "{}", lines[0]);
            } else {
                assert_eq!(fields["user"], "", "{}", lines[0]);
            }
        }
    }
}

fn ws_policy(w: &World, granted: bool) {
    let grant = if granted { "[ws]" } else { "[]" };
    let text = format!("permissions:\n  ws: [\"GET /ws\"]\ngroups:\n  ci: {grant}\n");
    let tmp = w.path("policy.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, w.path("policy.yaml")).unwrap();
}

#[test]
fn open_websocket_tunnels_are_closed_when_a_reload_withdraws_access() {
    let mut w = World::new();
    ws_policy(&w, true);
    let up = upstream();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let alice = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
    let bob = client(&[("O", "ci"), ("CN", "bob")], &w.ca);
    let mut a = open_tunnel(&w, &p, &alice);
    let mut b = open_tunnel(&w, &p, &bob);

    // A CRL revoking alice: her tunnel ends within 2 s, bob's stays.
    let revoked_at = Instant::now();
    w.revoke(&alice.cert);
    assert!(
        closed_by(&mut a, revoked_at + Duration::from_secs(2)),
        "alice's tunnel still open 2 s after the CRL revoked her"
    );
    eprintln!(
        "tunnel closed {:?} after the CRL was written",
        revoked_at.elapsed()
    );
    b.write_all(b"pong").unwrap();
    let mut echo = [0u8; 4];
    b.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"pong");
    let m = p.metrics();
    assert_eq!(
        metric(
            &m,
            "certgate_tunnels_closed_total",
            &[("reason", "certificate_revoked")]
        ),
        1.0,
        "{m}"
    );
    wait_for("log line naming alice", Duration::from_secs(5), || {
        p.log_text()
            .lines()
            .find(|l| l.contains("upgraded connection closed") && l.contains("user=\"alice\""))
            .map(str::to_string)
    });

    // A policy that no longer grants the route ends bob's tunnel too.
    let changed_at = Instant::now();
    ws_policy(&w, false);
    assert!(
        closed_by(&mut b, changed_at + Duration::from_secs(2)),
        "bob's tunnel still open 2 s after the policy withdrew the route"
    );
    assert_eq!(
        metric(
            &p.metrics(),
            "certgate_tunnels_closed_total",
            &[("reason", "policy")]
        ),
        1.0
    );
}

/// Sends `n` GETs on `send` and waits for each stream to end, whatever way it ends.
async fn stalled_streams(send: h2::client::SendRequest<bytes::Bytes>, port: u16, n: usize) {
    let mut streams = Vec::new();
    for i in 0..n {
        let send = send.clone();
        streams.push(tokio::spawn(async move {
            let req = http::Request::get(format!("https://localhost:{port}/big/{i}"))
                .body(())
                .unwrap();
            let Ok(mut send) = send.ready().await else {
                return;
            };
            let Ok((resp, _)) = send.send_request(req, true) else {
                return;
            };
            let Ok(resp) = resp.await else { return };
            let mut body = resp.into_body();
            // Never released: the window stays at zero, so no DATA can arrive.
            while let Some(Ok(_)) = body.data().await {}
        }));
    }
    for s in streams {
        tokio::time::timeout(Duration::from_secs(120), s)
            .await
            .expect("a stalled stream was never ended by certgate")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_http2_clients_hold_bounded_upstream_connections() {
    let w = World::new();
    let up = RawUpstream::start(RawReply::Big(1 << 20));
    let mut cfg = ProxyConfig::new(up.addr);
    cfg.listener_extra = "    timeouts: { read: 2s }\n    limits: { upstream_per_connection: 4, upstream_connections: 6 }\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "slow")], &w.ca);
    let port = p.addr.port();

    // One connection, 12 streams: never more than 4 upstream connections at once.
    let send = h2_zero_window(&w, &p, &who).await;
    stalled_streams(send, port, 12).await;
    let (_, max) = up.active();
    eprintln!("one zero-window connection, 12 streams: at most {max} upstream connections");
    assert!(
        (1..=4).contains(&max),
        "{max} upstream connections for one client connection"
    );

    // Two connections: the listener's bound holds across them.
    let (s1, s2) = (
        h2_zero_window(&w, &p, &who).await,
        h2_zero_window(&w, &p, &who).await,
    );
    tokio::join!(stalled_streams(s1, port, 8), stalled_streams(s2, port, 8));
    let (_, max) = up.active();
    eprintln!("two zero-window connections, 8 streams each: at most {max} upstream connections");
    assert!(max <= 6, "{max} upstream connections for the listener");
    // Streams that made no progress were ended, and their upstream connections with them.
    wait_for(
        "upstream connections released",
        Duration::from_secs(10),
        || (up.active().0 == 0).then_some(()),
    );
    assert!(up.heads().len() >= 4, "the upstream was reached");
}
