//! `tls.crl_fetch`: CRLs fetched over HTTP from a real server on 127.0.0.1 feed the same
//! revocation state as CRL files: loaded before `/readyz` says ready, refreshed with
//! conditional requests, every failure keeping the last good CRL, cached on disk for a start
//! with the URL down, and discovered from the certificates' CRL Distribution Points.

mod common;

use std::time::{Duration, Instant};

use certgate::pki::{self, Issued};
use common::crl_server::{CrlServer, Mode};
use common::*;
use openssl::x509::X509;

const CHANGE: Duration = Duration::from_secs(15);

fn crl_der(issuer: &Issued, revoked: &[&X509], this_days: i64) -> Vec<u8> {
    static NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);
    let n = NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    pki::make_crl(issuer, revoked, this_days, 30, n)
        .unwrap()
        .to_der()
        .unwrap()
}

/// A world whose CA publishes its CRL at `/ca.crl`, and two of its clients.
struct Fetching {
    w: World,
    srv: CrlServer,
    alice: Issued,
    bob: Issued,
}

impl Fetching {
    fn new() -> Fetching {
        let w = World::new();
        let alice = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
        let bob = client(&[("O", "ci"), ("CN", "bob")], &w.ca);
        Fetching {
            srv: CrlServer::start(),
            w,
            alice,
            bob,
        }
    }

    fn url(&self) -> String {
        self.srv.url("/ca.crl")
    }

    fn publish(&self, revoked: &[&X509]) {
        self.srv
            .publish("/ca.crl", crl_der(&self.w.ca, revoked, -1));
    }

    /// `tls.crl_fetch` for this world's URL, refreshed every second, plus `extra` keys.
    fn tls_extra(&self, extra: &str) -> String {
        format!(
            "  crl_fetch:\n    urls: [{}]\n    refresh: 1s\n    timeout: 1s\n    max_bytes: 4KiB\n{extra}",
            self.url()
        )
    }

    fn start(&self, extra: &str) -> Proxy {
        self.start_with(extra, Proxy::start)
    }

    /// For a start under which `/readyz` stays 503 (the URL down, no cache).
    fn start_unready(&self, extra: &str) -> Proxy {
        self.start_with(extra, Proxy::start_unready)
    }

    fn start_with(&self, extra: &str, start: fn(&World, &ProxyConfig<'_>) -> Proxy) -> Proxy {
        let tls = self.tls_extra(extra);
        let mut cfg = ProxyConfig::new(upstream());
        cfg.crl = "[]";
        cfg.tls_extra = &tls;
        start(&self.w, &cfg)
    }

    async fn code(&self, p: &Proxy, who: &Issued) -> (u16, serde_json::Value) {
        get_json(&https(&self.w, p, Some(who)), &p.url("/")).await
    }
}

/// The `/status` entry of `url` under `crl_fetch`.
fn url_status(p: &Proxy, url: &str) -> serde_json::Value {
    let s = status_json(p);
    s["crl_fetch"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["url"] == url).cloned())
        .unwrap_or_else(|| panic!("no crl_fetch entry for {url}: {s}"))
}

async fn wait_for_code(c: &reqwest::Client, p: &Proxy, want: u16, reason: Option<&str>) {
    let start = Instant::now();
    loop {
        let (code, v) = get_json(c, &p.url("/")).await;
        if code == want {
            if let Some(reason) = reason {
                assert_eq!(v["reason"], reason, "{v}");
            }
            return;
        }
        assert!(start.elapsed() < CHANGE, "still {code}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn errors(p: &Proxy, url: &str) -> f64 {
    metric(
        &p.metrics(),
        "certgate_crl_fetches_total",
        &[("url", url), ("result", "error")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_at_start_refreshed_conditionally_and_a_new_revocation_reaches_an_open_connection()
{
    let t = Fetching::new();
    t.publish(&[]);
    // Proxy::start waits for /readyz 200: the configured URL has loaded.
    let p = t.start("");
    let st = url_status(&p, &t.url());
    assert_eq!(st["loaded"], true, "{st}");
    assert_eq!(st["source"], "network", "{st}");
    assert_eq!(st["issuers"][0], "CN=Test Root CA,O=certgate tests", "{st}");
    let listener = &status_json(&p)["listeners"][0];
    assert!(
        listener["crls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["file"] == t.url().as_str()),
        "the fetched CRL is part of the listener's trust state: {listener}"
    );

    let open = https(&t.w, &p, Some(&t.alice));
    let (code, v) = get_json(&open, &p.url("/")).await;
    assert_eq!(code, 200, "{v}");

    // The next fetches are conditional and answered 304.
    wait_for("a conditional request", CHANGE, || {
        t.srv
            .heads("/ca.crl")
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("if-none-match: \"v1\""))
            .then_some(())
    });
    wait_for("a not_modified fetch", CHANGE, || {
        let m = p.metrics();
        (metric(
            &m,
            "certgate_crl_fetches_total",
            &[("url", &t.url()), ("result", "not_modified")],
        ) >= 1.0)
            .then_some(())
    });
    assert!(t.srv.heads("/ca.crl").iter().any(|h| h
        .to_ascii_lowercase()
        .contains("if-modified-since: sun, 29 nov 2026")));

    // The CA revokes alice: her open keep-alive connection is refused on a later request.
    let handshakes = metric(&p.metrics(), "certgate_handshakes_total", &[]);
    let published = Instant::now();
    t.publish(&[&t.alice.cert]);
    wait_for_code(&open, &p, 401, Some("certificate revoked")).await;
    eprintln!(
        "published → first refusal (refresh 1s): {:?}",
        published.elapsed()
    );
    assert_eq!(
        metric(&p.metrics(), "certgate_handshakes_total", &[]),
        handshakes,
        "refused on the same connection"
    );
    assert_eq!(t.code(&p, &t.bob).await.0, 200);
    // The new CRL is swapped in before the fetch is counted and before `/status` takes its
    // entries: the refusal above can come first.
    wait_for("the second fetch counted", CHANGE, || {
        (metric(
            &p.metrics(),
            "certgate_crl_fetches_total",
            &[("url", &t.url()), ("result", "ok")],
        ) >= 2.0)
            .then_some(())
    });
    wait_for("/status to count the revocation", CHANGE, || {
        (url_status(&p, &t.url())["revoked"] == 1).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_failed_fetch_keeps_the_last_good_crl() {
    let t = Fetching::new();
    t.publish(&[&t.alice.cert]);
    let p = t.start("");
    assert_eq!(
        t.code(&p, &t.alice).await,
        (
            401,
            serde_json::json!({"status": "FAIL", "message": "Authentication Required", "reason": "certificate revoked"})
        )
    );

    // An impostor "Test Root CA" (same name, another key) and a CRL from the future.
    let forger = ca("Test Root CA");
    let forged = crl_der(&forger, &[], -1);
    let future = crl_der(&t.w.ca, &[], 2);
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Case> = vec![
        ("HTTP 500", Box::new(|| t.srv.set_mode(Mode::Fail)), "500"),
        (
            "garbage",
            Box::new(|| t.srv.set_mode(Mode::Garbage)),
            "not a PEM or DER CRL",
        ),
        (
            "oversized",
            Box::new(|| t.srv.set_mode(Mode::Oversized(8192))),
            "max_bytes",
        ),
        (
            "hang",
            Box::new(|| t.srv.set_mode(Mode::Hang)),
            "no complete answer",
        ),
        (
            "bad signature",
            Box::new(|| {
                t.srv.publish("/ca.crl", forged.clone());
                t.srv.set_mode(Mode::Serve);
            }),
            "not signed by the key",
        ),
        (
            "thisUpdate in the future",
            Box::new(|| t.srv.publish("/ca.crl", future.clone())),
            "in the future",
        ),
    ];
    for (what, make, needle) in cases {
        let before = errors(&p, &t.url());
        make();
        wait_for(what, CHANGE, || {
            let st = url_status(&p, &t.url());
            (errors(&p, &t.url()) > before
                && st["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(needle)))
            .then_some(())
        });
        // While the server misbehaves (hangs included) requests are decided as before.
        assert_eq!(
            t.code(&p, &t.alice).await.1["reason"],
            "certificate revoked",
            "{what}: the last good CRL still revokes alice"
        );
        assert_eq!(t.code(&p, &t.bob).await.0, 200, "{what}");
        assert!(
            p.log_text().contains(&t.url()),
            "{what}: the failure is logged with the URL"
        );
    }
    let st = url_status(&p, &t.url());
    assert_eq!(st["loaded"], true);
    assert_eq!(st["revoked"], 1, "{st}");

    // A reload of the files (SIGHUP) rebuilds the trust state with the fetched CRL in it.
    sighup(&p);
    wait_for("the SIGHUP reload", CHANGE, || {
        (metric(
            &p.metrics(),
            "certgate_reloads_total",
            &[("kind", "ca"), ("result", "ok")],
        ) >= 1.0)
            .then_some(())
    });
    assert_eq!(
        t.code(&p, &t.alice).await.1["reason"],
        "certificate revoked",
        "after a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_dir_serves_a_start_with_the_url_down_and_readyz_waits_for_a_first_load() {
    let t = Fetching::new();
    t.publish(&[&t.alice.cert]);
    let cache = t.w.path("crl-cache");
    let extra = format!("    cache_dir: {}\n", cache.display());
    {
        let p = t.start(&extra);
        wait_for("the cache file", CHANGE, || {
            std::fs::read_dir(&cache)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".crl"))
                .then_some(())
        });
        assert_eq!(t.code(&p, &t.alice).await.0, 401);
    }

    // The URL is down: the cached copy makes the proxy ready and still revokes alice.
    t.srv.set_mode(Mode::Fail);
    let p = t.start(&extra);
    let st = url_status(&p, &t.url());
    assert_eq!(st["source"], "cache", "{st}");
    assert_eq!(
        t.code(&p, &t.alice).await.1["reason"],
        "certificate revoked"
    );
    assert_eq!(t.code(&p, &t.bob).await.0, 200);
    drop(p);

    // No cache and the URL down: not fatal, but not ready, and the issuer has no loaded CRL,
    // so its clients are refused (fail closed, crl_check: chain) until it loads.
    let p = t.start_unready("");
    let body = wait_for("/readyz to name the unloaded URL", CHANGE, || {
        let (code, body) = http_get(p.admin, "/readyz")?;
        assert_ne!(code, 200, "{body}");
        body.contains("has not loaded yet").then_some(body)
    });
    assert!(body.contains(&t.url()), "{body}");
    assert_eq!(url_status(&p, &t.url())["state"], "without a loaded CRL");
    for who in [&t.alice, &t.bob] {
        let (code, v) = t.code(&p, who).await;
        assert_eq!(
            (code, v["reason"].as_str()),
            (401, Some("revocation status unknown")),
            "an issuer without a loaded CRL: {v}"
        );
    }
    // The URL comes back: ready, alice is revoked and bob let in.
    t.srv.set_mode(Mode::Serve);
    wait_for("/readyz 200", CHANGE, || {
        (http_get(p.admin, "/readyz")?.0 == 200).then_some(())
    });
    assert_eq!(
        t.code(&p, &t.alice).await.1["reason"],
        "certificate revoked"
    );
    assert_eq!(t.code(&p, &t.bob).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_file_is_not_loaded() {
    let t = Fetching::new();
    t.srv.set_mode(Mode::Fail);
    let cache = t.w.path("crl-cache");
    std::fs::create_dir_all(&cache).unwrap();
    // What a crash in the middle of a non-atomic write would leave: half a CRL.
    let der = crl_der(&t.w.ca, &[&t.alice.cert], -1);
    let name = format!(
        "{}.crl",
        hex::encode(openssl::sha::sha256(t.url().as_bytes()))
    );
    std::fs::write(cache.join(name), &der[..der.len() / 2]).unwrap();
    let p = t.start_unready(&format!("    cache_dir: {}\n", cache.display()));
    // The refusal is logged once at start; `/status` shows it as last_error only until the
    // first (failing) fetch of the URL replaces it, so the log is what the test reads.
    wait_for("the cached copy's verdict", CHANGE, || {
        p.log_text()
            .lines()
            .any(|l| l.contains("cached CRL refused") && l.contains(&t.url()))
            .then_some(())
    });
    let st = url_status(&p, &t.url());
    assert_eq!(st["loaded"], false, "{st}");
    assert_eq!(http_get(p.admin, "/readyz").unwrap().0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_certificates_fetches_the_cdps_of_the_client_ca_bundle_at_start() {
    let w = World::new();
    let srv = CrlServer::start();
    let root_url = srv.url("/root.crl");
    let mut s = spec(&[("O", "certgate tests"), ("CN", "Bundled Issuing CA")]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    s.crl_urls = vec![root_url.clone()];
    let inter = pki::issue(&s, &w.ca).unwrap();
    let victim = client(&[("CN", "victim")], &w.ca);
    // The bundle holds the intermediate, whose CDP is where the root's CRL lives: fetched at
    // start, before any client came.
    write(
        &w.path("ca.pem"),
        &[cert_pem(&w.ca), cert_pem(&inter)].concat(),
    );
    srv.publish("/root.crl", crl_der(&w.ca, &[], -1));
    let mut cfg = ProxyConfig::new(upstream());
    cfg.crl = "[]";
    cfg.tls_extra = "  crl_fetch:\n    from_certificates: true\n    refresh: 1s\n";
    let p = Proxy::start(&w, &cfg);
    // `loaded` turns true as the body is taken, before the trust states are rebuilt with it;
    // `last_success` is written once it is in force.
    wait_for("the bundle's CDP fetched and in force", CHANGE, || {
        let st = url_status(&p, &root_url);
        (st["loaded"] == true && !st["last_success"].is_null()).then_some(())
    });
    assert_eq!(url_status(&p, &root_url)["discovered"], true);
    assert_eq!(
        get_json(&https(&w, &p, Some(&victim)), &p.url("/")).await.0,
        200
    );
    // The root revokes a certificate it issued: refused.
    srv.publish("/root.crl", crl_der(&w.ca, &[&victim.cert], -1));
    let c = https(&w, &p, Some(&victim));
    wait_for_code(&c, &p, 401, Some("certificate revoked")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_certificates_fetches_the_cdp_an_intermediate_issued_certificate_names() {
    let w = World::new();
    let srv = CrlServer::start();
    let (root_url, inter_url) = (srv.url("/root.crl"), srv.url("/issuing.crl"));
    let mut s = spec(&[("O", "certgate tests"), ("CN", "Issuing CA")]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    s.crl_urls = vec![root_url.clone()];
    let inter = pki::issue(&s, &w.ca).unwrap();
    let leaf = |cn: &str| {
        let mut s = spec(&[("O", "ci"), ("CN", cn)]);
        s.crl_urls = vec![inter_url.clone()];
        pki::issue(&s, &inter).unwrap()
    };
    let (alice, bob) = (leaf("alice"), leaf("bob"));
    srv.publish("/root.crl", crl_der(&w.ca, &[], -1));
    srv.publish("/issuing.crl", crl_der(&inter, &[&alice.cert], -1));

    let mut cfg = ProxyConfig::new(upstream());
    cfg.crl = "[]";
    cfg.tls_extra = "  crl_fetch:\n    from_certificates: true\n    refresh: 1s\n";
    // Discovered URLs never hold /readyz: ready at once. Bob's chain is the first to name the
    // CDPs: refused until their CRLs land, then let in on the same connection. The CDPs answer
    // 503 until his first request is decided (on localhost a fetch could otherwise land before
    // it), then serve; the failed fetch is retried within seconds.
    srv.set_mode(Mode::Unavailable);
    let p = Proxy::start(&w, &cfg);
    let bob_client = https_chain(&w, &p, &bob, &[&inter]);
    let (code, v) = get_json(&bob_client, &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown")),
        "{v}"
    );
    srv.set_mode(Mode::Serve);
    wait_for_code(&bob_client, &p, 200, None).await;
    // Bob's chain named both CDPs; once fetched, alice's is refused.
    let alice_client = https_chain(&w, &p, &alice, &[&inter]);
    wait_for_code(&alice_client, &p, 401, Some("certificate revoked")).await;
    for url in [&root_url, &inter_url] {
        let st = url_status(&p, url);
        assert_eq!(st["discovered"], true, "{st}");
        assert_eq!(st["loaded"], true, "{st}");
        let path = url.trim_start_matches(&format!("http://{}", srv.addr));
        assert!(!srv.heads(path).is_empty(), "{path} fetched");
    }
    let crls = status_json(&p)["listeners"][0]["crls"].clone();
    assert!(
        crls.as_array()
            .unwrap()
            .iter()
            .any(|c| c["issuer"] == "CN=Issuing CA,O=certgate tests"
                && c["file"] == inter_url.as_str()),
        "filed under its own issuer: {crls}"
    );
    let (code, _) = get_json(&https_chain(&w, &p, &bob, &[&inter]), &p.url("/")).await;
    assert_eq!(code, 200);
}

#[test]
fn check_prints_each_url_and_whether_it_answers() {
    let t = Fetching::new();
    t.publish(&[&t.alice.cert]);
    // Bound but never listening: refused, and no other socket can take the port meanwhile.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let down = format!("http://{}/down.crl", held.local_addr().unwrap());
    let config = t.w.path("certgate.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl_fetch:\n    urls: [{}, {down}]\n    timeout: 1s\n  ocsp:\n    mode: soft\nlisteners:\n  - name: test\n    listen: {}\n    upstream: http://127.0.0.1:1\n",
            t.url(),
            free_addr()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "a URL down is a warning, not an error: {text}"
    );
    assert!(
        text.contains(&format!("CRL URL {} (configured): answers", t.url()))
            && text.contains("1 revoked"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "warning: CRL URL {down} (configured): does not answer"
        )),
        "{text}"
    );
    assert!(
        text.contains("OCSP: soft mode, responder from each certificate's AIA"),
        "{text}"
    );
}

/// Not a test of behaviour: the time from a CRL published at the URL to the first refused
/// request with `refresh: 2s`, printed. Run with
/// `cargo test -p certgate --test crl_fetch -- --ignored --nocapture publish_to_refusal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn publish_to_refusal_timing() {
    let t = Fetching::new();
    t.publish(&[]);
    let tls = format!("  crl_fetch:\n    urls: [{}]\n    refresh: 2s\n", t.url());
    let mut cfg = ProxyConfig::new(upstream());
    cfg.crl = "[]";
    cfg.tls_extra = &tls;
    let p = Proxy::start(&t.w, &cfg);
    let mut times = Vec::new();
    let mut revoked: Vec<X509> = Vec::new();
    for i in 0..8 {
        let who = client(&[("CN", &format!("victim{i}"))], &t.w.ca);
        let c = https(&t.w, &p, Some(&who));
        assert_eq!(get_json(&c, &p.url("/")).await.0, 200);
        revoked.push(who.cert.clone());
        let refs: Vec<&X509> = revoked.iter().collect();
        let start = Instant::now();
        t.publish(&refs);
        wait_for_code(&c, &p, 401, Some("certificate revoked")).await;
        times.push(start.elapsed());
    }
    times.sort();
    eprintln!(
        "publish → first refused request, refresh 2s, n={}: min {:?} median {:?} max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
