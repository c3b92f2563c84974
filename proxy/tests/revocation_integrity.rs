//! Revocation that cannot be undone from outside: each test is a way a revoked client got back
//! in, or a whole CA's clients got locked out, found by trying certgate as an attacker and an
//! operator would. Through the real binary, with a real CRL server and OCSP responder on
//! 127.0.0.1 that fail, hang, redirect, and serve old, expired, forged or replayed answers.

mod common;

use std::time::{Duration, Instant};

use certgate::pki::{self, Issued};
use common::crl_server::{CrlServer, Mode};
use common::ocsp_responder::OcspResponder;
use common::tunnel::{closed_by, open_tunnel};
use common::*;
use openssl::x509::X509;

const CHANGE: Duration = Duration::from_secs(15);
const ISSUER: &str = "CN=Issuing CA,O=certgate tests";

fn crl_der(issuer: &Issued, revoked: &[&X509], this_days: i64, next_days: i64, n: u64) -> Vec<u8> {
    pki::make_crl(issuer, revoked, this_days, next_days, n)
        .unwrap()
        .to_der()
        .unwrap()
}

/// Polls `who`'s request until it answers `want` (and `reason`, when given).
async fn wait_for_code(c: &reqwest::Client, p: &Proxy, want: u16, reason: Option<&str>) {
    let start = Instant::now();
    loop {
        let (code, v) = get_json(c, &p.url("/")).await;
        if code == want && reason.is_none_or(|r| v["reason"] == r) {
            return;
        }
        assert!(start.elapsed() < CHANGE, "still {code}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/status` → `crl_fetch` entry of `url`.
fn url_status(p: &Proxy, url: &str) -> serde_json::Value {
    let s = status_json(p);
    s["crl_fetch"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["url"] == url).cloned())
        .unwrap_or_else(|| panic!("no crl_fetch entry for {url}: {s}"))
}

/// Waits until `url`'s `last_error` contains `needle`.
fn wait_for_error(p: &Proxy, url: &str, needle: &str) -> serde_json::Value {
    wait_for(&format!("{url}: last_error {needle}"), CHANGE, || {
        let st = url_status(p, url);
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
            .then_some(st)
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Coverage: an issuer without a CRL is no longer fail-open.

/// Root-only `client_ca`, a client issued by an intermediate it sends in its chain.
struct Branch {
    w: World,
    inter: Issued,
    alice: Issued,
}

impl Branch {
    fn new() -> Branch {
        let w = World::new();
        let inter = intermediate("Issuing CA", &w.ca);
        let alice = client(&[("O", "ci"), ("CN", "alice")], &inter);
        w.save_chain("alice", &alice, &[&inter]);
        w.write_crl_of("inter-crl.pem", &inter, &[], 30);
        Branch { w, inter, alice }
    }

    fn start(&self, auth: &'static str, crl: &'static str, check: Option<&str>) -> Proxy {
        let tls = check.map_or(String::new(), |c| format!("  crl_check: {c}\n"));
        let mut cfg = ProxyConfig::new(upstream());
        cfg.client_auth = auth;
        cfg.crl = crl;
        cfg.tls_extra = &tls;
        Proxy::start(&self.w, &cfg)
    }

    async fn code(&self, p: &Proxy) -> (u16, serde_json::Value) {
        get_json(
            &https_chain(&self.w, p, &self.alice, &[&self.inter]),
            &p.url("/"),
        )
        .await
    }
}

fn uncovered(p: &Proxy) -> Vec<serde_json::Value> {
    status_json(p)["uncovered_issuers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_without_a_crl_is_refused_under_chain_and_leaf_and_shown_under_available() {
    let b = Branch::new();
    // Only the root's CRL, the default (chain): refused, and the missing CRL is named.
    for check in [None, Some("chain"), Some("leaf")] {
        let p = b.start("optional", "[crl.pem]", check);
        let (code, v) = b.code(&p).await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (401, Some("revocation status unknown")),
            "{check:?}: {v}"
        );
        let u = uncovered(&p);
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(u[0]["issuer"], ISSUER);
        assert_eq!(u[0]["refused"], true);
        assert!(u[0]["count"].as_u64().unwrap() >= 1);
        assert!(u[0]["first_seen"].is_string() && u[0]["last_seen"].is_string());
        assert!(
            metric(
                &p.metrics(),
                "certgate_crl_uncovered_total",
                &[("issuer", ISSUER)]
            ) >= 1.0
        );
        let log = p.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("revocation status unknown") && l.contains(ISSUER)),
            "{log}"
        );
    }
    // available: let in, and the gap still visible.
    let p = b.start("optional", "[crl.pem]", Some("available"));
    assert_eq!(b.code(&p).await.0, 200);
    let u = uncovered(&p);
    assert_eq!((u.len(), &u[0]["refused"]), (1, &serde_json::json!(false)));
    // The intermediate's CRL but not the root's: the intermediate itself is uncovered. chain
    // refuses, leaf does not need it.
    let p = b.start("optional", "[inter-crl.pem]", Some("chain"));
    let (code, v) = b.code(&p).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown"))
    );
    assert_eq!(
        uncovered(&p)[0]["issuer"],
        "CN=Test Root CA,O=certgate tests"
    );
    let p = b.start("optional", "[inter-crl.pem]", Some("leaf"));
    assert_eq!(b.code(&p).await.0, 200);
    // Both CRLs: covered everywhere, nothing listed.
    let p = b.start("optional", "[crl.pem, inter-crl.pem]", None);
    assert_eq!(b.code(&p).await.0, 200);
    assert!(uncovered(&p).is_empty());
}

#[test]
fn required_mode_refuses_an_uncovered_chain_in_the_handshake() {
    let b = Branch::new();
    let p = b.start("required", "[crl.pem]", None);
    let (cert, key) = b.w.files("alice");
    let (code, err) = curl(&b.w, &p, Some((&cert, &key)), &["-f"]);
    assert_ne!(code, 0, "{err}");
    assert!(!err.contains("reset"), "the client reads an alert: {err}");
    wait_for("the handshake refusal counted", CHANGE, || {
        (metric(
            &p.metrics(),
            "certgate_handshakes_total",
            &[("result", "fail"), ("reason", "revocation_status_unknown")],
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(uncovered(&p)[0]["issuer"], ISSUER);
    // With the intermediate's CRL loaded the same client gets through.
    let p = b.start("required", "[crl.pem, inter-crl.pem]", None);
    let (code, err) = curl(&b.w, &p, Some((&cert, &key)), &["-f"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_warns_about_missing_revocation_and_uncovered_cas() {
    let b = Branch::new();
    let run = |crl: &str, extra: &str| {
        let text = format!(
            "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: {crl}\n{extra}listeners:\n  - name: t\n    listen: 127.0.0.1:1\n    upstream: http://127.0.0.1:2\n"
        );
        std::fs::write(b.w.path("check.yaml"), text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "-c"])
            .arg(b.w.path("check.yaml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let none = run("[]", "");
    assert!(
        none.contains("warning: no revocation source is configured"),
        "{none}"
    );
    let root_only = run("[inter-crl.pem]", "");
    assert!(
        root_only.contains("warning: client CA CN=Test Root CA,O=certgate tests has no CRL"),
        "{root_only}"
    );
    let covered = run("[crl.pem]", "");
    assert!(!covered.contains("has no CRL"), "{covered}");
    // crl_check without any source is a config error naming the key.
    std::fs::write(
        b.w.path("bad.yaml"),
        "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl_check: chain\nlisteners:\n  - name: t\n    listen: 127.0.0.1:1\n    upstream: http://127.0.0.1:2\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(b.w.path("bad.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tls.crl_check") && err.contains("revocation source"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. and 4. CRLs discovered from certificates: cached across restarts, never replaced by a
// forgery, and the cost of a newly discovered issuer.

/// A root whose intermediate names its CRL at `/issuing.crl`, two clients of it.
struct Discovered {
    w: World,
    srv: CrlServer,
    inter: Issued,
    alice: Issued,
    bob: Issued,
    cache: std::path::PathBuf,
}

impl Discovered {
    fn new() -> Discovered {
        let w = World::new();
        let srv = CrlServer::start();
        let mut s = spec(&[("O", "certgate tests"), ("CN", "Issuing CA")]);
        s.is_ca = true;
        s.client_auth = false;
        s.eku = false;
        s.crl_urls = vec![srv.url("/root.crl")];
        let inter = pki::issue(&s, &w.ca).unwrap();
        let leaf = |cn: &str| {
            let mut s = spec(&[("O", "ci"), ("CN", cn)]);
            s.crl_urls = vec![srv.url("/issuing.crl")];
            pki::issue(&s, &inter).unwrap()
        };
        let (alice, bob) = (leaf("alice"), leaf("bob"));
        srv.publish("/root.crl", crl_der(&w.ca, &[], -1, 30, 1));
        srv.publish("/issuing.crl", crl_der(&inter, &[&alice.cert], -1, 30, 5));
        let cache = w.path("crl-cache");
        Discovered {
            w,
            srv,
            inter,
            alice,
            bob,
            cache,
        }
    }

    fn start(&self) -> Proxy {
        let tls = format!(
            "  crl_fetch:\n    from_certificates: true\n    refresh: 1s\n    timeout: 1s\n    cache_dir: {}\n",
            self.cache.display()
        );
        let mut cfg = ProxyConfig::new(upstream());
        cfg.crl = "[]";
        cfg.tls_extra = &tls;
        Proxy::start(&self.w, &cfg)
    }

    fn client(&self, p: &Proxy, who: &Issued) -> reqwest::Client {
        https_chain(&self.w, p, who, &[&self.inter])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_cdp_down_or_hanging_keeps_the_cached_crl_of_a_discovered_url() {
    let d = Discovered::new();
    let p = d.start();
    // A newly discovered issuer: never let in before its CRL is in force. The revoked client
    // is the first to present the intermediate: refused as unknown (or, if the fetch already
    // landed when its request is decided, as revoked), never 200.
    let alice = d.client(&p, &d.alice);
    let first = Instant::now();
    let (code, v) = get_json(&alice, &p.url("/")).await;
    assert_eq!(code, 401, "{v}");
    assert!(
        ["revocation status unknown", "certificate revoked"]
            .contains(&v["reason"].as_str().unwrap_or("")),
        "{v}"
    );
    wait_for_code(&d.client(&p, &d.bob), &p, 200, None).await;
    eprintln!(
        "a newly discovered issuer was covered {:?} after its first client was refused",
        first.elapsed()
    );
    wait_for_code(&alice, &p, 401, Some("certificate revoked")).await;
    let inter_url = d.srv.url("/issuing.crl");
    // Both discovered CRLs (the root's, named by the intermediate, and the intermediate's)
    // are cached before the restart: the chain needs both under crl_check: chain.
    // The cache writes a URL's `.url` file before its `.crl`: wait for the CRLs themselves.
    wait_for("both discovered CRLs cached", CHANGE, || {
        let cached = std::fs::read_dir(&d.cache)
            .ok()?
            .flatten()
            .filter(|e| {
                let path = e.path();
                path.extension().is_some_and(|x| x == "crl") && path.with_extension("url").is_file()
            })
            .count();
        (cached == 2).then_some(())
    });
    drop(p);

    for mode in [Mode::Unavailable, Mode::Hang] {
        d.srv.set_mode(mode.clone());
        let p = d.start();
        // Before any fetch could succeed: the cached CRL is in force from the first request.
        for _ in 0..3 {
            let (code, v) = get_json(&d.client(&p, &d.alice), &p.url("/")).await;
            assert_eq!(
                (code, v["reason"].as_str()),
                (401, Some("certificate revoked")),
                "{mode:?}: {v}"
            );
        }
        assert_eq!(get_json(&d.client(&p, &d.bob), &p.url("/")).await.0, 200);
        let st = url_status(&p, &inter_url);
        assert_eq!(
            (&st["loaded"], &st["source"]),
            (&true.into(), &"cache".into()),
            "{st}"
        );
        assert_eq!(http_get(p.admin, "/readyz").map(|r| r.0), Some(200));
        d.srv.set_mode(Mode::Serve);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_intermediate_crl_at_its_cdp_is_refused_and_never_in_force() {
    let d = Discovered::new();
    let p = d.start();
    let bob = d.client(&p, &d.bob);
    wait_for_code(&bob, &p, 200, None).await;
    let alice = d.client(&p, &d.alice);
    wait_for_code(&alice, &p, 401, Some("certificate revoked")).await;
    // The CDP now serves a CRL with the intermediate's name, signed by another key, newer, and
    // revoking nobody (or bob): refused, the genuine one stays.
    let mut s = spec(&[("O", "certgate tests"), ("CN", "Issuing CA")]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    let forger = pki::self_signed_ca(&s).unwrap();
    d.srv
        .publish("/issuing.crl", crl_der(&forger, &[&d.bob.cert], -1, 30, 99));
    let url = d.srv.url("/issuing.crl");
    let st = wait_for_error(&p, &url, "does not verify");
    assert_eq!(st["state"], "loaded", "{st}");
    assert_eq!(st["crl_numbers"][0], "05", "the genuine CRL stays: {st}");
    for _ in 0..3 {
        assert_eq!(get_json(&bob, &p.url("/")).await.0, 200);
        let (code, v) = get_json(&alice, &p.url("/")).await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (401, Some("certificate revoked"))
        );
    }
    assert!(
        metric(
            &p.metrics(),
            "certgate_crl_fetches_total",
            &[("url", &url), ("result", "error")]
        ) >= 1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Rollback: an older or expired CRL never replaces the one in force.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_or_expired_crl_never_replaces_the_one_in_force_nor_does_a_reload() {
    let w = World::new();
    let srv = CrlServer::start();
    let url = srv.url("/ca.crl");
    let alice = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
    let bob = client(&[("O", "ci"), ("CN", "bob")], &w.ca);
    let carol = client(&[("O", "ci"), ("CN", "carol")], &w.ca);
    srv.publish(
        "/ca.crl",
        crl_der(&w.ca, &[&alice.cert, &bob.cert], -1, 30, 3),
    );
    let tls = format!("  crl_fetch:\n    urls: [{url}]\n    refresh: 1s\n    timeout: 1s\n");
    let mut cfg = ProxyConfig::new(upstream());
    cfg.crl = "[]";
    cfg.tls_extra = &tls;
    let p = Proxy::start(&w, &cfg);
    let refused = |p: &Proxy| {
        let (w, alice, bob, carol) = (&w, &alice, &bob, &carol);
        let p_url = p.url("/");
        let (a, b, c) = (
            https(w, p, Some(alice)),
            https(w, p, Some(bob)),
            https(w, p, Some(carol)),
        );
        async move {
            for client in [&a, &b] {
                let (code, v) = get_json(client, &p_url).await;
                assert_eq!(
                    (code, v["reason"].as_str()),
                    (401, Some("certificate revoked")),
                    "{v}"
                );
            }
            assert_eq!(get_json(&c, &p_url).await.0, 200);
        }
    };
    refused(&p).await;

    // CRL number 1 again: valid, signed, not expired, older.
    srv.publish("/ca.crl", crl_der(&w.ca, &[], -2, 30, 1));
    let st = wait_for_error(&p, &url, "older than the one in force");
    assert_eq!(st["crl_numbers"][0], "03", "{st}");
    refused(&p).await;
    // Newer by number but already past its nextUpdate.
    srv.publish("/ca.crl", crl_der(&w.ca, &[], -3, -1, 4));
    wait_for_error(&p, &url, "past its nextUpdate");
    refused(&p).await;
    assert_eq!(http_get(p.admin, "/readyz").map(|r| r.0), Some(200));
    // A SIGHUP rebuilds every trust state: the fetched CRL in force stays.
    sighup(&p);
    wait_for("the SIGHUP reload", CHANGE, || {
        p.log_text().contains("cause=\"SIGHUP\"").then_some(())
    });
    refused(&p).await;
    // A newer CRL that un-revokes bob (the CA's own decision) is taken: his next connection
    // gets in.
    srv.publish("/ca.crl", crl_der(&w.ca, &[&alice.cert], -1, 30, 6));
    let start = Instant::now();
    while get_json(&https(&w, &p, Some(&bob)), &p.url("/")).await.0 != 200 {
        assert!(start.elapsed() < CHANGE, "CRL number 6 never taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. and 6. OCSP: replayed answers, failed answers, tunnels.

/// A client of the world's CA, saved as `name`.
fn ocsp_client(w: &World, name: &str) -> Issued {
    let who = client(&[("O", "ci"), ("CN", name)], &w.ca);
    w.save(name, &who);
    who
}

fn ocsp_tls(responder: &str, mode: &str, max_age: &str) -> String {
    format!("  ocsp:\n    mode: {mode}\n    responder: {responder}\n    max_age: {max_age}\n    timeout: 1s\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_good_answer_without_nonce_or_next_update_goes_stale() {
    let w = World::new();
    let who = ocsp_client(&w, "replayed");
    // A live responder that answers without nextUpdate; record its `good` without a nonce.
    let r = OcspResponder::start(w.dir.path(), &w.ca, &[&who.cert], &[], 0);
    let recorded = w.path("recorded.der");
    let out = std::process::Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-noverify", "-issuer"])
        .arg(w.path("ca.pem"))
        .arg("-cert")
        .arg(w.path("replayed.pem"))
        .args(["-url", &r.url(), "-respout"])
        .arg(&recorded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The responder now says revoked; the attacker keeps replaying the recorded `good`.
    r.set(&[], &[&who.cert]);
    let replay = CrlServer::start();
    replay.publish("/", std::fs::read(&recorded).unwrap());
    let p = {
        let mut cfg = ProxyConfig::new(upstream());
        let tls = ocsp_tls(&replay.url("/"), "hard", "3s");
        cfg.tls_extra = &tls;
        Proxy::start(&w, &cfg)
    };
    let c = https(&w, &p, Some(&who));
    // At most max_age after the recorded thisUpdate, the replay is no answer.
    wait_for_code(&c, &p, 401, Some("revocation status unknown")).await;
    for _ in 0..3 {
        let (code, v) = get_json(&c, &p.url("/")).await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (401, Some("revocation status unknown"))
        );
    }
    assert!(p.log_text().contains("stale answer"), "{}", p.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ocsp_answer_is_remembered_at_most_max_age() {
    let w = World::new();
    let who = ocsp_client(&w, "patient");
    let addr = free_addr();
    let p = {
        let mut cfg = ProxyConfig::new(upstream());
        let tls = ocsp_tls(&format!("http://{addr}"), "hard", "1s");
        cfg.tls_extra = &tls;
        Proxy::start(&w, &cfg)
    };
    let c = https(&w, &p, Some(&who));
    let (code, v) = get_json(&c, &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown"))
    );
    // The responder comes up: with max_age 1s the failure is forgotten within a second or so
    // (before, it was kept 10 s whatever max_age said).
    let _r = OcspResponder::start_at(w.dir.path(), &w.ca, &[&who.cert], &[], 60, addr);
    let up = Instant::now();
    let start = Instant::now();
    loop {
        if get_json(&c, &p.url("/")).await.0 == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "hard mode recovered {:?} after the responder came up",
        up.elapsed()
    );
}

#[test]
fn an_ocsp_revocation_closes_the_clients_open_tunnels() {
    let w = World::new();
    let who = ocsp_client(&w, "tunneller");
    let other = ocsp_client(&w, "other");
    let r = OcspResponder::start(w.dir.path(), &w.ca, &[&who.cert, &other.cert], &[], 0);
    let tls = ocsp_tls(&r.url(), "hard", "1s");
    let mut cfg = ProxyConfig::new(upstream());
    cfg.tls_extra = &tls;
    let p = Proxy::start(&w, &cfg);
    let mut mine = open_tunnel(&w, &p, &who);
    let mut theirs = open_tunnel(&w, &p, &other);
    let revoked_at = Instant::now();
    r.set(&[&other.cert], &[&who.cert]);
    assert!(
        closed_by(&mut mine, revoked_at + Duration::from_secs(8)),
        "the tunnel still echoes 8 s after the responder said revoked (max_age 1s)"
    );
    eprintln!(
        "tunnel closed {:?} after the OCSP revocation",
        revoked_at.elapsed()
    );
    use std::io::{Read, Write};
    theirs.write_all(b"pong").unwrap();
    let mut echo = [0u8; 4];
    theirs.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"pong");
    assert_eq!(
        metric(
            &p.metrics(),
            "certgate_tunnels_closed_total",
            &[("reason", "certificate_revoked")]
        ),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Redirects.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_fetches_follow_at_most_three_http_redirects() {
    let w = World::new();
    let srv = CrlServer::start();
    srv.publish("/ca.crl", crl_der(&w.ca, &[], -1, 30, 1));
    // Three hops are followed.
    srv.redirect("/three", &srv.url("/two"));
    srv.redirect("/two", &srv.url("/one"));
    srv.redirect("/one", &srv.url("/ca.crl"));
    // Four are not, nor a hop to another scheme.
    srv.redirect("/four", &srv.url("/three"));
    srv.redirect("/ftp", "ftp://127.0.0.1/ca.crl");
    let (three, four, ftp) = (srv.url("/three"), srv.url("/four"), srv.url("/ftp"));
    let tls = format!(
        "  crl_fetch:\n    urls: [{three}, {four}, {ftp}]\n    refresh: 1s\n    timeout: 1s\n"
    );
    let mut cfg = ProxyConfig::new(upstream());
    cfg.crl = "[]";
    cfg.tls_extra = &tls;
    let p = Proxy::start_unready(&w, &cfg);
    wait_for("the three-hop URL loaded", CHANGE, || {
        (url_status(&p, &three)["loaded"] == true).then_some(())
    });
    wait_for_error(&p, &four, "more than 3 redirects");
    wait_for_error(&p, &ftp, "ftp");
    assert_eq!(url_status(&p, &four)["loaded"], false);
    assert!(
        p.log_text().contains("CRL fetch was redirected"),
        "{}",
        p.log_text()
    );
    // The URLs that never loaded hold /readyz.
    assert_eq!(http_get(p.admin, "/readyz").map(|r| r.0), Some(503));
}
