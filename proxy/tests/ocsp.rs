//! `tls.ocsp` against a real `openssl ocsp` responder on 127.0.0.1: good, revoked, unknown,
//! a dead responder in soft and hard mode, the responder from the certificate's AIA, the cache,
//! one query per certificate however many connections ask, and a revocation reaching an open
//! keep-alive connection once the cached answer expires.

mod common;

use std::time::{Duration, Instant};

use certgate::pki::{self, Issued};
use common::ocsp_responder::OcspResponder;
use common::*;

const CHANGE: Duration = Duration::from_secs(15);

/// A client of the world's CA whose certificate names `aia` as its OCSP responder.
fn client_with_aia(w: &World, cn: &str, aia: Option<&str>) -> Issued {
    let mut s = spec(&[("O", "ci"), ("CN", cn)]);
    s.ocsp_urls = aia.map(|u| vec![u.to_string()]).unwrap_or_default();
    pki::issue(&s, &w.ca).unwrap()
}

fn start(w: &World, ocsp: &str, up: std::net::SocketAddr) -> Proxy {
    let mut cfg = ProxyConfig::new(up);
    cfg.tls_extra = ocsp;
    Proxy::start(w, &cfg)
}

fn ocsp_metric(p: &Proxy, result: &str) -> f64 {
    metric(
        &p.metrics(),
        "certgate_ocsp_requests_total",
        &[("listener", "test"), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_revoked_and_unknown_from_the_responder_named_in_the_certificate() {
    let w = World::new();
    // The responder's port is needed in the certificates before it starts.
    let placeholder = free_addr();
    let aia = format!("http://{placeholder}");
    let good = client_with_aia(&w, "good", Some(&aia));
    let revoked = client_with_aia(&w, "revoked", Some(&aia));
    let stranger = client_with_aia(&w, "stranger", Some(&aia));
    let r = OcspResponder::start_at(
        w.dir.path(),
        &w.ca,
        &[&good.cert],
        &[&revoked.cert],
        60,
        placeholder,
    );
    let up = RawUpstream::start(RawReply::Ok);
    let p = start(&w, "  ocsp:\n    mode: hard\n", up.addr);

    let c = https(&w, &p, Some(&good));
    assert_eq!(get_json(&c, &p.url("/a")).await.0, 200);
    assert_eq!(get_json(&c, &p.url("/b")).await.0, 200);
    assert_eq!(ocsp_metric(&p, "good"), 1.0, "asked once");
    assert!(ocsp_metric(&p, "cached") >= 1.0, "then from the cache");
    assert!(r.requests() >= 1, "the responder was asked");

    let (code, v) = get_json(&https(&w, &p, Some(&revoked)), &p.url("/revoked")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked")),
        "{v}"
    );
    let (code, v) = get_json(&https(&w, &p, Some(&stranger)), &p.url("/stranger")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown")),
        "not in the responder's index: unknown, refused in hard mode"
    );
    assert_eq!(ocsp_metric(&p, "revoked"), 1.0);
    assert_eq!(ocsp_metric(&p, "unknown"), 1.0);
    // Refused clients never reached the upstream.
    let targets = up.targets();
    assert_eq!(targets, ["/a", "/b"], "{targets:?}");
    let st = status_json(&p);
    assert!(st["ocsp"]["cached_answers"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["ocsp"]["hit_rate"].as_f64().unwrap() > 0.0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_responder_is_allowed_in_soft_mode_and_refused_in_hard_mode() {
    let w = World::new();
    let dead = free_addr();
    let who = client_with_aia(&w, "good", None);
    let cfg = |mode: &str| {
        format!("  ocsp:\n    mode: {mode}\n    responder: http://{dead}\n    timeout: 1s\n")
    };
    let soft = start(&w, &cfg("soft"), upstream());
    let (code, v) = get_json(&https(&w, &soft, Some(&who)), &soft.url("/")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(ocsp_metric(&soft, "error"), 1.0);
    assert!(soft.log_text().contains("OCSP: no answer"));
    drop(soft);

    let hard = start(&w, &cfg("hard"), upstream());
    let (code, v) = get_json(&https(&w, &hard, Some(&who)), &hard.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown")),
        "{v}"
    );
    // No responder at all (no AIA, none configured) is no answer either.
    drop(hard);
    let none = start(&w, "  ocsp:\n    mode: hard\n", upstream());
    let (code, v) = get_json(&https(&w, &none, Some(&who)), &none.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_for_many_connections_and_a_revocation_reaches_an_open_connection() {
    let w = World::new();
    let who = client_with_aia(&w, "busy", None);
    let r = OcspResponder::start(w.dir.path(), &w.ca, &[&who.cert], &[], 60);
    let tls = |max_age: &str| {
        format!(
            "  ocsp:\n    mode: hard\n    responder: {}\n    max_age: {max_age}\n",
            r.url()
        )
    };
    // The responder says nextUpdate in 60 minutes. Under a cache that outlives the test, a
    // handshake that a busy machine delays cannot make a second query.
    let p = start(&w, &tls("10m"), upstream());

    // Eight connections ask at once: one query.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = https(&w, &p, Some(&who));
        let url = p.url(&format!("/{i}"));
        tasks.push(tokio::spawn(async move { get_json(&c, &url).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(ocsp_metric(&p, "good"), 1.0, "single flight");
    assert!(ocsp_metric(&p, "cached") >= 7.0);
    assert_eq!(r.requests(), 1, "the responder saw one request");
    drop(p);

    // Revoked at the responder: the open connection is refused once the answer expired
    // (max_age 2s caps the cache).
    let p = start(&w, &tls("2s"), upstream());
    let open = https(&w, &p, Some(&who));
    assert_eq!(get_json(&open, &p.url("/")).await.0, 200);
    let handshakes = metric(&p.metrics(), "certgate_handshakes_total", &[]);
    r.set(&[], &[&who.cert]);
    let start = Instant::now();
    loop {
        let (code, v) = get_json(&open, &p.url("/")).await;
        if code == 401 {
            assert_eq!(v["reason"], "certificate revoked", "{v}");
            break;
        }
        assert!(start.elapsed() < CHANGE, "still {code}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&p.metrics(), "certgate_handshakes_total", &[]),
        handshakes,
        "the same connection"
    );
}

#[test]
fn required_mode_refuses_a_revoked_client_on_its_first_request() {
    let w = World::new();
    let who = client_with_aia(&w, "revoked", None);
    let r = OcspResponder::start(w.dir.path(), &w.ca, &[], &[&who.cert], 60);
    let up = RawUpstream::start(RawReply::Ok);
    let mut cfg = ProxyConfig::new(up.addr);
    cfg.client_auth = "required";
    let tls = format!("  ocsp:\n    mode: soft\n    responder: {}\n", r.url());
    cfg.tls_extra = &tls;
    let p = Proxy::start(&w, &cfg);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, v) = rt.block_on(get_json(&https(&w, &p, Some(&who)), &p.url("/x")));
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked"))
    );
    assert!(up.targets().is_empty(), "never reached the upstream");
    // The answer is cached now: the next connection is refused in the handshake, with the alert.
    w.save("revoked", &who);
    let (cert, key) = w.files("revoked");
    let (code, err) = curl(&w, &p, Some((&cert, &key)), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("certificate revoked"), "{err}");
    assert!(up.targets().is_empty(), "never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_response_with_another_requests_nonce_is_refused() {
    let w = World::new();
    let who = client_with_aia(&w, "replayed", None);
    w.save("replayed", &who);
    let r = OcspResponder::start(w.dir.path(), &w.ca, &[&who.cert], &[], 60);
    // A genuine, signed `good` answer, recorded for the nonce of another request.
    let recorded = w.path("recorded.der");
    let st = std::process::Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(w.path("ca.pem"))
        .arg("-cert")
        .arg(w.path("replayed.pem"))
        .args(["-url", &r.url(), "-respout"])
        .arg(&recorded)
        .arg("-noverify")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let replay = common::crl_server::CrlServer::start();
    replay.publish("/", std::fs::read(&recorded).unwrap());
    let tls = format!(
        "  ocsp:\n    mode: hard\n    responder: {}\n",
        replay.url("/")
    );
    let p = start(&w, &tls, upstream());
    let (code, v) = get_json(&https(&w, &p, Some(&who)), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("revocation status unknown")),
        "{v}"
    );
    assert!(p.log_text().contains("nonce is not the request's"));
    // The same certificate, asked of the live responder, is good: the nonce was the only flaw.
    let tls = format!("  ocsp:\n    mode: hard\n    responder: {}\n", r.url());
    let p = start(&w, &tls, upstream());
    assert_eq!(
        get_json(&https(&w, &p, Some(&who)), &p.url("/")).await.0,
        200
    );
}
