//! A two-level PKI as operators run it: `client_ca` holds only the root, clients send their
//! issuing intermediate, and `crl` names both the root's and the intermediate's CRL. The
//! intermediate's CRL is verified against the intermediate a client presents; every CRL
//! guarantee (revocation, per-request re-check, crl_expired, /readyz, reload) holds for it.

mod common;

use certgate::pki::Issued;
use common::*;
use std::time::Duration;

const ISSUER: &str = "CN=Issuing CA,O=certgate tests";
const CHANGE: Duration = Duration::from_secs(10);

/// The root (ca.pem, crl.pem) from `World`, an intermediate not in the bundle, its CRL in
/// inter-crl.pem, and two clients it issued: `good` and `revoked` (on its CRL).
struct TwoLevel {
    w: World,
    inter: Issued,
    good: Issued,
    revoked: Issued,
}

impl TwoLevel {
    fn new(crl_next_days: i64) -> TwoLevel {
        let w = World::new();
        let inter = intermediate("Issuing CA", &w.ca);
        let good = client(&[("O", "ci"), ("CN", "good")], &inter);
        let revoked = client(&[("O", "ci"), ("CN", "revoked")], &inter);
        w.write_crl_of("inter-crl.pem", &inter, &[&revoked.cert], crl_next_days);
        w.save_chain("good", &good, &[&inter]);
        w.save_chain("revoked", &revoked, &[&inter]);
        TwoLevel {
            w,
            inter,
            good,
            revoked,
        }
    }

    fn config(&self, client_auth: &'static str) -> ProxyConfig<'static> {
        let mut cfg = ProxyConfig::new(upstream());
        cfg.client_auth = client_auth;
        cfg.crl = "[crl.pem, inter-crl.pem]";
        cfg
    }

    fn client(&self, p: &Proxy, who: &Issued) -> reqwest::Client {
        https_chain(&self.w, p, who, &[&self.inter])
    }
}

/// The `/status` entry of the intermediate's CRL.
fn inter_crl_status(p: &Proxy) -> serde_json::Value {
    let s = status_json(p);
    s["listeners"][0]["crls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["issuer"] == ISSUER)
        .cloned()
        .unwrap_or_else(|| panic!("no CRL of {ISSUER} in /status: {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_checks_the_intermediate_crl_and_revocation_reaches_open_connections() {
    let t = TwoLevel::new(30);
    let p = Proxy::start(&t.w, &t.config("optional"));
    assert_eq!(
        inter_crl_status(&p)["signature"],
        "not yet verified",
        "nobody presented the intermediate yet"
    );
    let m = p.metrics();
    assert!(
        m.contains(&format!(
            "certgate_crl_next_update_seconds{{issuer=\"{ISSUER}\"}}"
        )),
        "nextUpdate gauge of the intermediate's CRL:\n{m}"
    );

    let open = t.client(&p, &t.good);
    let (code, v) = get_json(&open, &p.url("/")).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(seen(&v, "ssl-client-issuer-dn"), [ISSUER]);
    assert_eq!(inter_crl_status(&p)["signature"], "verified");

    let (code, v) = get_json(&t.client(&p, &t.revoked), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked"))
    );

    // Revoke `good` by rewriting the intermediate's CRL: its open keep-alive connection is
    // refused on its next request, without a new handshake.
    let handshakes = metric(&p.metrics(), "certgate_handshakes_total", &[]);
    t.w.write_crl_of(
        "inter-crl.pem",
        &t.inter,
        &[&t.revoked.cert, &t.good.cert],
        30,
    );
    wait_for_code(&open, &p, 401, "certificate revoked").await;
    assert_eq!(
        metric(&p.metrics(), "certgate_handshakes_total", &[]),
        handshakes,
        "the same connection"
    );
    assert_eq!(
        inter_crl_status(&p)["signature"],
        "verified",
        "the new state verified the new CRL against the intermediate"
    );
}

async fn wait_for_code(c: &reqwest::Client, p: &Proxy, want: u16, reason: &str) {
    let start = std::time::Instant::now();
    loop {
        let (code, v) = get_json(c, &p.url("/")).await;
        if code == want {
            assert_eq!(v["reason"], reason, "{v}");
            return;
        }
        assert!(start.elapsed() < CHANGE, "still {code}: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn required_mode_accepts_the_good_client_and_alerts_the_revoked_one() {
    let t = TwoLevel::new(30);
    let p = Proxy::start(&t.w, &t.config("required"));
    let (good, good_key) = t.w.files("good");
    let (code, err) = curl(&t.w, &p, Some((&good, &good_key)), &["-f"]);
    assert_eq!(code, 0, "good client through the intermediate: {err}");
    for version in [&[][..], &["--tls-max", "1.2"][..]] {
        let (revoked, revoked_key) = t.w.files("revoked");
        let (code, err) = curl(&t.w, &p, Some((&revoked, &revoked_key)), version);
        assert_ne!(code, 0);
        assert!(
            err.contains("alert certificate revoked") && !err.contains("reset"),
            "{version:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_intermediate_crl_fails_its_certificates_unless_allowed() {
    let t = TwoLevel::new(-1);
    let p = Proxy::start_unready(&t.w, &t.config("optional"));
    let (code, v) = get_json(&t.client(&p, &t.good), &p.url("/")).await;
    assert_eq!((code, v["reason"].as_str()), (401, Some("CRL expired")));
    let (code, body) = http_get(p.admin, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("nextUpdate"), "{body}");
    assert_eq!(inter_crl_status(&p)["expired"], true);
    drop(p);

    let mut cfg = t.config("optional");
    cfg.tls_extra = "  crl_expired: allow\n";
    let p = Proxy::start_unready(&t.w, &cfg);
    let (code, v) = get_json(&t.client(&p, &t.good), &p.url("/")).await;
    assert_eq!(
        code, 200,
        "allow: the stale CRL does not fail everyone: {v}"
    );
    let (code, v) = get_json(&t.client(&p, &t.revoked), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked")),
        "its entries still revoke"
    );
    assert_eq!(http_get(p.admin, "/readyz").unwrap().0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_intermediate_crl_fails_with_bad_certificate_and_a_good_one_repairs_it() {
    let t = TwoLevel::new(30);
    // Same issuer name, another key: not the intermediate's CRL.
    let forger = ca("Issuing CA");
    t.w.write_crl_of("inter-crl.pem", &forger, &[], 30);
    let p = Proxy::start(&t.w, &t.config("optional"));
    for _ in 0..3 {
        // A new connection each time: the verdict is cached, not recomputed per handshake.
        let (code, v) = get_json(&t.client(&p, &t.good), &p.url("/")).await;
        assert_eq!((code, v["reason"].as_str()), (401, Some("bad certificate")));
    }
    let log = p.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not verify against the issuer certificate"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once:\n{log}");
    assert!(lines[0].contains("inter-crl.pem"), "{}", lines[0]);
    assert!(
        inter_crl_status(&p)["signature"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{}",
        inter_crl_status(&p)
    );

    // A reload starts with a fresh cache: the genuine CRL is verified and applies.
    t.w.write_crl_of("inter-crl.pem", &t.inter, &[&t.revoked.cert], 30);
    let start = std::time::Instant::now();
    loop {
        let (code, v) = get_json(&t.client(&p, &t.good), &p.url("/")).await;
        if code == 200 {
            break;
        }
        assert!(start.elapsed() < CHANGE, "still {code}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, v) = get_json(&t.client(&p, &t.revoked), &p.url("/")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("certificate revoked"))
    );
}

#[test]
fn check_accepts_the_intermediate_crl_with_a_note() {
    let t = TwoLevel::new(30);
    let p = t.w.path("check.yaml");
    std::fs::write(
        &p,
        "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem, inter-crl.pem]\nlisteners:\n  - name: test\n    listen: 127.0.0.1:18443\n    upstream: http://127.0.0.1:80\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("note: the CRL of {ISSUER}"))
            && text.contains(&format!("verified when a client presents {ISSUER}")),
        "{text}"
    );
    assert!(
        text.contains("signature not yet verified"),
        "the CRL line says so too:\n{text}"
    );
}
