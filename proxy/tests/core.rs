//! Core: mTLS termination, client verification with every failure reason, identity forwarding,
//! spoofed-header stripping, HTTP/2, upstream errors. Real TLS, real sockets, real clients.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_gives_each_failure_its_401_reason() {
    let mut w = World::new();
    let up = upstream();
    let good = client(&[("O", "ci"), ("CN", "good")], &w.ca);
    let stranger_ca = ca("Stranger CA");
    let stranger = client(&[("O", "ci"), ("CN", "stranger")], &stranger_ca);
    let mut s = spec(&[("CN", "expired")]);
    s.not_before_days = -10;
    s.not_after_days = -1;
    let expired = certgate::pki::issue(&s, &w.ca).unwrap();
    let mut s = spec(&[("CN", "future")]);
    s.not_before_days = 2;
    s.not_after_days = 10;
    let future = certgate::pki::issue(&s, &w.ca).unwrap();
    let mut s = spec(&[("CN", "server-only")]);
    s.client_auth = false;
    s.server_auth = true;
    let server_only = certgate::pki::issue(&s, &w.ca).unwrap();
    let revoked = client(&[("O", "ci"), ("CN", "revoked")], &w.ca);
    w.revoke(&revoked.cert);

    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let cases: Vec<(Option<&certgate::pki::Issued>, u16, &str)> = vec![
        (None, 401, "no certificate"),
        (Some(&stranger), 401, "unknown CA"),
        (Some(&expired), 401, "certificate expired"),
        (Some(&future), 401, "certificate not yet valid"),
        (Some(&server_only), 401, "bad certificate"),
        (Some(&revoked), 401, "certificate revoked"),
        (Some(&good), 200, ""),
    ];
    for (who, code, reason) in cases {
        let r = https(&w, &p, who)
            .get(p.url("/api/v1/vm"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "reason {reason}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: serde_json::Value = r.json().await.unwrap();
        if code == 401 {
            assert_eq!(
                v,
                serde_json::json!({"status": "FAIL", "message": "Authentication Required", "reason": reason})
            );
        } else {
            assert_eq!(seen(&v, "ssl-client-verify"), ["SUCCESS"]);
        }
    }
    // Each 401 is counted after it was sent: wait for the last one's count.
    let m = wait_for("the six 401s counted", Duration::from_secs(15), || {
        let m = p.metrics();
        (metric(
            &m,
            "certgate_requests_total",
            &[("code", "401"), ("decision", "deny")],
        ) >= 6.0)
            .then_some(m)
    });
    for reason in [
        "unknown_ca",
        "certificate_expired",
        "certificate_revoked",
        "bad_certificate",
    ] {
        assert!(
            metric(
                &m,
                "certgate_handshakes_total",
                &[("result", "fail"), ("reason", reason)]
            ) >= 1.0,
            "{reason}\n{m}"
        );
    }
}

#[test]
fn required_mode_fails_the_handshake_with_the_named_alert() {
    let mut w = World::new();
    let up = upstream();
    w.save_refused_clients();
    let mut cfg = ProxyConfig::new(up);
    cfg.client_auth = "required";
    let p = Proxy::start(&w, &cfg);

    let files = |n: &str| (w.path(&format!("{n}.pem")), w.path(&format!("{n}-key.pem")));
    let (ok, out) = s_client(&w, &p, None, &["-tls1_3"]);
    assert!(out.contains("certificate required"), "{ok} {out}");
    let (_, out) = s_client(&w, &p, None, &["-tls1_2"]);
    assert!(out.contains("handshake failure"), "{out}");
    for (who, alert) in [
        ("stranger", "unknown ca"),
        ("revoked", "certificate revoked"),
        ("expired", "certificate expired"),
    ] {
        let (c, k) = files(who);
        let (_, out) = s_client(&w, &p, Some((&c, &k)), &["-tls1_3"]);
        assert!(out.contains(alert), "{who}: expected alert {alert}:\n{out}");
    }
    let (c, k) = files("good");
    let (_, out) = s_client(&w, &p, Some((&c, &k)), &[]);
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    // A refused handshake is counted after its alert is written, which s_client may have read
    // and exited on before the count.
    let fails = |m: &str, reason| {
        metric(
            m,
            "certgate_handshakes_total",
            &[("result", "fail"), ("reason", reason)],
        )
    };
    wait_for(
        "the refused handshakes counted",
        Duration::from_secs(15),
        || {
            let m = p.metrics();
            (fails(&m, "no_certificate") >= 2.0
                && fails(&m, "unknown_ca") >= 1.0
                && fails(&m, "certificate_revoked") >= 1.0)
                .then_some(())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_are_byte_identical_to_openssl_and_spoofs_are_stripped() {
    let w = World::new();
    let up = upstream();
    let who = client(
        &[
            ("C", "US"),
            ("O", "Veertu"),
            ("O", "Anka Build, Inc."),
            ("OU", "CI"),
            ("CN", "Jürgen \"J\" Müller"),
        ],
        &w.ca,
    );
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let c = https(&w, &p, Some(&who));
    let r = c
        .get(p.url("/api/v1/vm?id=7"))
        .header("SSL-Client-Subject-DN", "CN=admin")
        .header("ssl_client_verify", "SUCCESS")
        .header("X-Certgate-User", "root")
        .header("x_certgate_groups", "admins")
        .header("X-Forwarded-For", "1.2.3.4")
        .header("x-real-ip", "1.2.3.4")
        .header("X-Forwarded-Client-Cert", "Hash=evil")
        .header("Client-Cert", ":AAAA:")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let expected_dn = openssl_subject(&w, &who.cert);
    assert!(expected_dn.contains("Anka Build\\, Inc."), "{expected_dn}");
    assert_eq!(
        seen(&v, "ssl-client-subject-dn"),
        std::slice::from_ref(&expected_dn)
    );
    assert_eq!(
        seen(&v, "ssl-client-issuer-dn"),
        ["CN=Test Root CA,O=certgate tests"]
    );
    assert_eq!(seen(&v, "ssl-client-verify"), ["SUCCESS"]);
    let cn_in_dn = expected_dn
        .split(",OU=")
        .next()
        .unwrap()
        .trim_start_matches("CN=")
        .to_string();
    assert_eq!(seen(&v, "x-certgate-user"), [cn_in_dn]);
    assert_eq!(seen(&v, "x-certgate-groups"), ["Veertu,Anka Build\\, Inc."]);
    assert_eq!(seen(&v, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&v, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(seen(&v, "x-forwarded-proto"), ["https"]);
    assert!(seen(&v, "x-forwarded-client-cert").is_empty());
    assert!(seen(&v, "client-cert").is_empty());
    assert!(
        v["headers"].get("ssl_client_verify").is_none()
            && v["headers"].get("x_certgate_groups").is_none(),
        "{v}"
    );
    assert_eq!(v["query"], "id=7");

    // Without a certificate: NONE, no identity, spoofs still gone.
    let r = https(&w, &p, None)
        .get(p.url("/livez"))
        .header("ssl-client-verify", "SUCCESS")
        .header("SSL_CLIENT_SUBJECT_DN", "CN=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no policy: anonymous is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_through_an_intermediate_is_accepted() {
    let w = World::new();
    let up = upstream();
    let inter = intermediate("Issuing CA", &w.ca);
    let who = client(&[("O", "nodes"), ("CN", "node7")], &inter);
    // Chain building is the point here, not revocation: the intermediate has no CRL.
    let mut cfg = ProxyConfig::new(up);
    cfg.tls_extra = "  crl_check: available\n";
    let p = Proxy::start(&w, &cfg);
    let mut chain = cert_pem(&who);
    chain.extend(cert_pem(&inter));
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem(&w.ca)).unwrap())
        .resolve("localhost", p.addr)
        .identity(reqwest::Identity::from_pkcs8_pem(&chain, &key_pem(&who)).unwrap())
        .build()
        .unwrap();
    let (code, v) = get_json(&c, &p.url("/x")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        seen(&v, "ssl-client-issuer-dn"),
        ["CN=Issuing CA,O=certgate tests"]
    );
    // Without the intermediate the chain does not build: unknown CA.
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/x")).await;
    assert_eq!((code, v["reason"].as_str()), (401, Some("unknown CA")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_carries_the_client_identity() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "h2client")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let c = https_builder(&w, &p, Some(&who))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = c.get(p.url("/h2")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(seen(&v, "x-certgate-user"), ["h2client"]);
        assert_eq!(seen(&v, "host").len(), 1, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let w = World::new();
    // Bound but never listening: connections to it are refused, and while `held` lives no
    // other socket (a parallel test's upstream binding port 0) can take the port, as it could
    // a free_addr() one.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = held.local_addr().unwrap();
    let who = client(&[("CN", "c")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(dead));
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/")).await;
    assert_eq!(code, 502);
    assert_eq!(
        v,
        serde_json::json!({"status": "FAIL", "message": "Upstream Unavailable", "reason": "connection refused"})
    );
    assert!(
        metric(
            &p.metrics(),
            "certgate_upstream_errors_total",
            &[("kind", "connect_refused")]
        ) >= 1.0
    );
    drop(p);

    let up = upstream();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    timeouts: { read: 300ms }\n";
    let p = Proxy::start(&w, &cfg);
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/slow/3000")).await;
    assert_eq!(code, 504, "{v}");
    assert_eq!(v["message"], "Upstream Timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_and_forward_cert() {
    let w = World::new();
    let up = upstream();
    let mut s = spec(&[("O", "ci"), ("CN", "dialects")]);
    s.dns_names = vec!["node.example".into()];
    s.uris = vec!["spiffe://ci/node".into()];
    let who = certgate::pki::issue(&s, &w.ca).unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra =
        "    headers: [nginx-ingress, xfcc, traefik, rfc9440]\n    forward_cert: true\n";
    let p = Proxy::start(&w, &cfg);
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/")).await;
    assert_eq!(code, 200);
    let pem = String::from_utf8(cert_pem(&who)).unwrap();
    let escaped: String = pem
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    assert_eq!(seen(&v, "ssl-client-cert"), std::slice::from_ref(&escaped));
    use base64::Engine;
    let der_b64 = base64::engine::general_purpose::STANDARD.encode(who.cert.to_der().unwrap());
    assert_eq!(seen(&v, "client-cert"), [format!(":{der_b64}:")]);
    assert_eq!(seen(&v, "x-forwarded-tls-client-cert"), [der_b64]);
    let xfcc = seen(&v, "x-forwarded-client-cert").join("");
    let fp = hex::encode(
        who.cert
            .digest(openssl::hash::MessageDigest::sha256())
            .unwrap(),
    );
    assert!(xfcc.starts_with(&format!("Hash={fp};")), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=dialects,O=ci\""), "{xfcc}");
    assert!(
        xfcc.contains("URI=spiffe://ci/node") && xfcc.contains("DNS=node.example"),
        "{xfcc}"
    );
    assert!(xfcc.contains(&format!("Cert=\"{escaped}\"")), "{xfcc}");
    let info = seen(&v, "x-forwarded-tls-client-cert-info").join("");
    assert!(info.starts_with("Subject%3D%22"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_serves_many_requests() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "ka")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let c = https(&w, &p, Some(&who));
    for i in 0..50 {
        let (code, _) = get_json(&c, &p.url(&format!("/n/{i}"))).await;
        assert_eq!(code, 200);
    }
    let m = p.metrics();
    let handshakes = metric(&m, "certgate_handshakes_total", &[("result", "ok")]);
    // HTTP/2 carries every request on one connection. Over HTTP/1.1 (CERTGATE_TEST_HTTP1)
    // reqwest opens another connection when a request starts before the previous one's
    // connection is back in its pool; the 50 requests still share a few connections.
    let most = if std::env::var_os("CERTGATE_TEST_HTTP1").is_some() {
        5.0
    } else {
        1.0
    };
    assert!(
        (1.0..=most).contains(&handshakes),
        "{handshakes} connections for 50 requests (at most {most}):\n{m}"
    );
    let _ = Duration::from_secs(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_crl_fails_its_cas_certificates_unless_allowed() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "fresh")], &w.ca);
    let revoked = client(&[("CN", "gone")], &w.ca);
    let stale = certgate::pki::make_crl(&w.ca, &[&revoked.cert], -3, -1, 7).unwrap();
    std::fs::write(w.path("crl.pem"), stale.to_pem().unwrap()).unwrap();

    let p = Proxy::start_unready(&w, &ProxyConfig::new(up));
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/")).await;
    assert_eq!((code, v["reason"].as_str()), (401, Some("CRL expired")));
    let (code, body) = http_get(p.admin, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("nextUpdate"), "{body}");
    drop(p);

    let mut cfg = ProxyConfig::new(up);
    cfg.tls_extra = "  crl_expired: allow\n";
    let p = Proxy::start_unready(&w, &cfg);
    assert_eq!(
        get_json(&https(&w, &p, Some(&who)), &p.url("/")).await.0,
        200,
        "allow: the stale CRL does not fail everyone"
    );
    let (code, v) = get_json(&https(&w, &p, Some(&revoked)), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked")),
        "its entries still revoke"
    );
    assert_eq!(
        http_get(p.admin, "/readyz").unwrap().0,
        503,
        "staleness shows in /readyz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_upstream_is_resolved_and_an_unknown_one_is_502() {
    let w = World::new();
    let who = client(&[("CN", "c")], &w.ca);
    let up = upstream();
    for (host, want) in [
        (format!("localhost:{}", up.port()), 200),
        ("no-such-upstream.invalid:80".to_string(), 502),
    ] {
        let (addr, admin) = (free_addr(), free_addr());
        let text = format!(
            "admin:\n  listen: {admin}\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\nlisteners:\n  - name: test\n    listen: {addr}\n    upstream: http://{host}\n"
        );
        let p = Proxy::start_with(w.dir.path(), &text, addr, admin);
        let client = https(&w, &p, Some(&who));
        for _ in 0..3 {
            let (code, v) = get_json(&client, &p.url("/")).await;
            assert_eq!(code, want, "{host}: {v}");
            if want == 502 {
                // DNS, not routing: "no route to upstream" is a network the host cannot reach.
                assert_eq!(v["reason"], "upstream name does not resolve", "{v}");
            }
        }
        if want == 502 {
            let line = p.access_line("status=\"502\"");
            assert!(
                line.contains(&format!(
                    "reason=\"upstream name does not resolve: {host}: "
                )),
                "{line}"
            );
        }
    }
}

/// `openssl x509 -noout FLAG -nameopt RFC2253` of `cert`, without the `name=` prefix.
fn openssl_x509(world: &World, cert: &openssl::x509::X509, flag: &str) -> String {
    let p = world.path("x509-probe.pem");
    std::fs::write(&p, cert.to_pem().unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", flag, "-nameopt", "RFC2253", "-in"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim_end_matches('\n');
    text.split_once('=').map_or(text, |(_, v)| v).to_string()
}

/// The log line of `needle`'s event with `field="value"`, waited for.
fn log_line(p: &Proxy, needle: &str, field: &str) -> String {
    wait_for(needle, Duration::from_secs(15), || {
        p.log_text()
            .lines()
            .find(|l| l.contains(needle) && l.contains(field))
            .map(str::to_string)
    })
}

#[test]
fn a_refused_handshake_names_the_client_and_the_certificate_it_presented() {
    let mut w = World::new();
    let stranger_ca = ca("Stranger CA");
    let stranger = client(&[("O", "ci"), ("CN", "build-node-7")], &stranger_ca);
    let revoked = client(&[("O", "ci"), ("CN", "build-node-9")], &w.ca);
    let mut s = spec(&[("CN", "build-node-3")]);
    s.not_before_days = -10;
    s.not_after_days = -1;
    let expired = certgate::pki::issue(&s, &w.ca).unwrap();
    w.revoke(&revoked.cert);
    for (name, who) in [
        ("stranger", &stranger),
        ("revoked", &revoked),
        ("expired", &expired),
    ] {
        w.save(name, who);
    }
    let cfg = ProxyConfig {
        client_auth: "required",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    const REFUSED: &str = "client certificate refused in the handshake";

    for (name, who, reason) in [
        ("stranger", &stranger, "unknown CA"),
        ("revoked", &revoked, "certificate revoked"),
        ("expired", &expired, "certificate expired"),
    ] {
        let (c, k) = w.files(name);
        let (_, out) = s_client(&w, &p, Some((&c, &k)), &["-tls1_3"]);
        let line = log_line(&p, REFUSED, &format!("reason=\"{reason}\""));
        // Independent of certgate's rendering: what the openssl CLI prints.
        let subject = openssl_x509(&w, &who.cert, "-subject");
        let issuer = openssl_x509(&w, &who.cert, "-issuer");
        let serial = openssl_x509(&w, &who.cert, "-serial");
        assert!(subject.starts_with("CN=build-node-"), "{subject}");
        assert_eq!(serial.len(), 32, "{serial}");
        let want = format!(
            "listener=\"test\" reason=\"{reason}\" client=\"127.0.0.1\" subject=\"{subject}\" issuer=\"{issuer}\" serial=\"{serial}\""
        );
        assert!(
            line.contains(&want),
            "{name}: want {want}\nin {line}\n{out}"
        );
        // Never the certificate itself.
        assert!(!line.contains("BEGIN") && !line.contains("MII"), "{line}");
    }
    // Without a certificate there is nothing to name but the client.
    let _ = s_client(&w, &p, None, &["-tls1_3"]);
    let line = log_line(&p, REFUSED, "reason=\"no certificate\"");
    assert!(
        line.contains("reason=\"no certificate\" client=\"127.0.0.1\"")
            && !line.contains("subject=")
            && !line.contains("serial="),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_access_lines_name_the_presented_certificate_apart_from_user() {
    let mut w = World::new();
    let stranger_ca = ca("Stranger CA");
    let stranger = client(&[("O", "ci"), ("CN", "stranger")], &stranger_ca);
    let revoked = client(&[("O", "ci"), ("CN", "revoked")], &w.ca);
    let good = client(&[("O", "ci"), ("CN", "good")], &w.ca);
    let later = client(&[("O", "ci"), ("CN", "later")], &w.ca);
    w.revoke(&revoked.cert);
    let p = Proxy::start(&w, &ProxyConfig::new(upstream()));

    for (who, path, code) in [
        (Some(&stranger), "/stranger", 401),
        (Some(&revoked), "/revoked", 401),
        (Some(&good), "/good", 200),
        (None, "/anonymous", 401),
    ] {
        let (got, v) = get_json(&https(&w, &p, who), &p.url(path)).await;
        assert_eq!(got, code, "{path}: {v}");
    }
    let fields = |path: &str| {
        let line = p.access_line(&format!("path=\"{path}\""));
        let user = line.contains("user=\"\"");
        let subject = line
            .split_once("presented_subject=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string());
        (user, subject, line)
    };
    for (path, subject) in [
        ("/stranger", "CN=stranger,O=ci"),
        ("/revoked", "CN=revoked,O=ci"),
    ] {
        let (user_empty, got, line) = fields(path);
        assert!(user_empty, "user is a verified identity only: {line}");
        assert_eq!(got.as_deref(), Some(subject), "{line}");
        assert!(line.contains("refusal=\"bad_certificate\""), "{line}");
    }
    let (user_empty, got, line) = fields("/good");
    assert!(!user_empty && line.contains("user=\"good\""), "{line}");
    assert_eq!(got.as_deref(), Some("CN=good,O=ci"), "{line}");
    let (_, got, line) = fields("/anonymous");
    assert_eq!(got.as_deref(), Some(""), "{line}");

    // Revoked after its handshake: refused on its next request on the same connection, and
    // still named.
    let c = https(&w, &p, Some(&later));
    assert_eq!(get_json(&c, &p.url("/before")).await.0, 200);
    w.revoke(&later.cert);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        if get_json(&c, &p.url(&format!("/after/{n}"))).await.0 == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new CRL never refused the open connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (user_empty, got, line) = fields(&format!("/after/{n}"));
    assert!(user_empty, "{line}");
    assert_eq!(got.as_deref(), Some("CN=later,O=ci"), "{line}");
    assert!(line.contains("reason=\"certificate revoked\""), "{line}");
}

#[test]
fn plain_http_to_the_tls_port_gets_a_json_400_and_tls_is_unchanged() {
    use std::io::{Read, Write};
    let mut w = World::new();
    w.save_refused_clients();
    let mut cfg = ProxyConfig::new(upstream());
    cfg.listener_extra = "    hsts: \"max-age=63072000\"\n";
    let p = Proxy::start(&w, &cfg);

    // The request line in pieces (the pauses only split it into segments): the answer waits
    // for the space after the method.
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for piece in [
        &b"P"[..],
        b"OS",
        b"T /api?token=x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let raw = read_all(&mut s);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{raw:?}"));
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{raw}");
    for h in [
        "content-type: application/json",
        "cache-control: no-store",
        "connection: close",
        &format!("content-length: {}", body.len()),
    ] {
        assert!(head.lines().any(|l| l == h), "{h} missing:\n{raw}");
    }
    // HSTS is for answers over TLS only (RFC 6797 §7.2).
    assert!(!head.contains("strict-transport-security"), "{raw}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "FAIL", "message": "Bad Request",
            "reason": "plain HTTP sent to the TLS port; use https://"})
    );
    // And closed: the read above ended.
    assert_eq!(s.read(&mut [0u8; 1]).unwrap_or(0), 0);

    // curl's plain request gets the same answer, not "Empty reply from server".
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/x", p.addr.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n400") && text.contains("use https://"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bytes that are neither TLS nor a request line: the handshake fails them as before.
    let mut junk = std::net::TcpStream::connect(p.addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    junk.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let reply = read_all(&mut junk);
    assert!(!reply.contains("HTTP/1.1"), "{reply:?}");

    // TLS clients on the same port: the handshakes and their verdicts are unchanged.
    let (good, good_key) = w.files("good");
    let (code, err) = curl(&w, &p, Some((&good, &good_key)), &["-f"]);
    assert_eq!(code, 0, "{err}");
    let (stranger, stranger_key) = w.files("stranger");
    let (_, out) = s_client(&w, &p, Some((&stranger, &stranger_key)), &["-tls1_2"]);
    assert!(out.contains("HTTP/1.1 401"), "{out}");

    let m = wait_for(
        "the plain requests counted",
        Duration::from_secs(15),
        || {
            let m = p.metrics();
            let n = |reason| {
                metric(
                    &m,
                    "certgate_handshakes_total",
                    &[("result", "fail"), ("reason", reason)],
                )
            };
            (n("plain_http") >= 2.0 && n("protocol") >= 1.0 && n("unknown_ca") >= 1.0).then_some(m)
        },
    );
    let n = |labels: &[(&str, &str)]| metric(&m, "certgate_handshakes_total", labels);
    assert_eq!(
        n(&[("result", "fail"), ("reason", "plain_http")]),
        2.0,
        "{m}"
    );
    assert_eq!(n(&[("result", "fail"), ("reason", "protocol")]), 1.0, "{m}");
    assert_eq!(n(&[("result", "ok"), ("reason", "verified")]), 1.0, "{m}");
    let line = log_line(&p, "plain HTTP sent to the TLS port", "method=\"POST\"");
    assert!(
        line.contains("listener=\"test\" client=\"127.0.0.1\" method=\"POST\""),
        "{line}"
    );
    assert!(!line.contains("token"), "{line}");
}
