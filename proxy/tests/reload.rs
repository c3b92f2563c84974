//! Reload: CA rotation, revocation reaching open connections, broken files keeping the old state,
//! Kubernetes symlink swaps, SIGHUP, server certificate rotation, policy edits, and a bounded
//! load across 50 reloads with zero failed requests.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHANGE: Duration = Duration::from_secs(10);

async fn code(c: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    get_json(c, url).await
}

async fn wait_code(what: &str, mk: impl Fn() -> reqwest::Client, url: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let (c, _) = code(&mk(), url).await;
        if c == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < CHANGE, "{what}: still {c}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy whose listener has policy.yaml: every route for group `ci`.
fn start_with_policy(w: &World, up: std::net::SocketAddr) -> Proxy {
    std::fs::write(
        w.path("policy.yaml"),
        "permissions:\n  all: [\"* /**\"]\ngroups:\n  ci: [all]\n",
    )
    .unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    Proxy::start(w, &cfg)
}

fn atomic_write(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_takes_effect_for_new_and_open_connections() {
    let w = World::new();
    let up = upstream();
    let old_client = client(&[("O", "ci"), ("CN", "old")], &w.ca);
    let new_ca = ca("New Root CA");
    let new_client = client(&[("O", "ci"), ("CN", "new")], &new_ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let open = https(&w, &p, Some(&old_client));
    assert_eq!(code(&open, &p.url("/")).await.0, 200);

    // The CRL belongs to the old CA: replace both (the CRL first would fail validation).
    // Until both are in, the pair is inconsistent and the reload is refused; then it converges.
    let crl = certgate::pki::make_crl(&new_ca, &[], -1, 30, 1).unwrap();
    atomic_write(&w.path("ca.pem"), &cert_pem(&new_ca));
    atomic_write(&w.path("crl.pem"), &crl.to_pem().unwrap());

    let took = wait_code(
        "new CA accepted",
        || https(&w, &p, Some(&new_client)),
        &p.url("/"),
        200,
    )
    .await;
    eprintln!("CA rotation visible after {took:?}");
    let (c, v) = code(&https(&w, &p, Some(&old_client)), &p.url("/")).await;
    assert_eq!((c, v["reason"].as_str()), (401, Some("unknown CA")));
    let (c, v) = code(&open, &p.url("/")).await;
    assert_eq!(
        (c, v["reason"].as_str()),
        (401, Some("unknown CA")),
        "open connection re-checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_an_established_keep_alive_connection() {
    let mut w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "soon-revoked")], &w.ca);
    let other = client(&[("O", "ci"), ("CN", "other")], &w.ca);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let open = https(&w, &p, Some(&who));
    let open_h2 = https_builder(&w, &p, Some(&who))
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert_eq!(code(&open, &p.url("/")).await.0, 200);
    assert_eq!(code(&open_h2, &p.url("/")).await.0, 200);
    let before = metric(&p.metrics(), "certgate_handshakes_total", &[]);

    w.revoke(&who.cert);
    let start = Instant::now();
    loop {
        let (c, v) = code(&open, &p.url("/")).await;
        if c == 401 {
            assert_eq!(v["reason"], "certificate revoked");
            break;
        }
        assert!(
            start.elapsed() < CHANGE,
            "revocation not seen on the open connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "revocation visible on an open connection after {:?}",
        start.elapsed()
    );
    let (c, v) = code(&open_h2, &p.url("/")).await;
    assert_eq!(
        (c, v["reason"].as_str()),
        (401, Some("certificate revoked")),
        "HTTP/2 connection too"
    );
    assert_eq!(
        metric(&p.metrics(), "certgate_handshakes_total", &[]),
        before,
        "same connections, no new handshake"
    );
    let (c, v) = code(&https(&w, &p, Some(&who)), &p.url("/")).await;
    assert_eq!(
        (c, v["reason"].as_str()),
        (401, Some("certificate revoked"))
    );
    assert_eq!(code(&https(&w, &p, Some(&other)), &p.url("/")).await.0, 200);
    // A reload swaps the new state in (what the requests above saw) before it counts itself.
    wait_for("the CRL reload counted", CHANGE, || {
        (metric(
            &p.metrics(),
            "certgate_reloads_total",
            &[("kind", "crl"), ("result", "ok")],
        ) >= 1.0)
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_of_each_kind_keeps_the_old_state() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "steady")], &w.ca);
    let p = start_with_policy(&w, up);
    let c = https(&w, &p, Some(&who));
    assert_eq!(code(&c, &p.url("/")).await.0, 200);
    let other_key = key_pem(&client(&[("CN", "x")], &w.ca));
    for (file, kind, bytes) in [
        ("ca.pem", "ca", b"garbage".to_vec()),
        (
            "crl.pem",
            "crl",
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n".to_vec(),
        ),
        ("server-key.pem", "cert", other_key.clone()),
        ("policy.yaml", "policy", b"groups:\n  ci: [nope]\n".to_vec()),
    ] {
        let good = std::fs::read(w.path(file)).unwrap();
        atomic_write(&w.path(file), &bytes);
        wait_for(&format!("{kind} reload error counted"), CHANGE, || {
            (metric(
                &p.metrics(),
                "certgate_reloads_total",
                &[("kind", kind), ("result", "error")],
            ) >= 1.0)
                .then_some(())
        });
        let (code_now, _) = code(&https(&w, &p, Some(&who)), &p.url("/")).await;
        assert_eq!(
            code_now, 200,
            "old state keeps serving after a broken {file}"
        );
        // A failed reload is counted before /status records it: wait for this file's error
        // there (the previous one's, or the restore's success, may still be showing).
        let status = wait_for(&format!("/status to name {file}"), CHANGE, || {
            let s = status_json(&p);
            s["last_reload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(file))
                .then_some(s)
        });
        assert_eq!(status["last_reload"]["result"], "error", "{status}");
        atomic_write(&w.path(file), &good);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_symlink_swap_is_followed() {
    let w = World::new();
    let up = upstream();
    let d = w.path("secret");
    std::fs::create_dir(&d).unwrap();
    let v1 = d.join("..2026_11_23_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::copy(w.path("ca.pem"), v1.join("ca.crt")).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_01", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ca.crt", d.join("ca.crt")).unwrap();
    let new_ca = ca("Rotated CA");
    let new_client = client(&[("CN", "after-swap")], &new_ca);
    let (admin, addr) = (free_addr(), free_addr());
    let text = format!(
        "admin:\n  listen: {admin}\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: secret/ca.crt\nlisteners:\n  - name: test\n    listen: {addr}\n    upstream: http://{up}\n"
    );
    let p = Proxy::start_with(w.dir.path(), &text, addr, admin);
    assert_eq!(
        code(&https(&w, &p, Some(&new_client)), &p.url("/")).await.0,
        401
    );
    // What the kubelet does: new timestamped dir, new ..data_tmp link, rename over ..data.
    let v2 = d.join("..2026_11_23_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("ca.crt"), cert_pem(&new_ca)).unwrap();
    std::os::unix::fs::symlink("..2026_11_23_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    let took = wait_code(
        "swapped CA",
        || https(&w, &p, Some(&new_client)),
        &p.url("/"),
        200,
    )
    .await;
    eprintln!("symlink swap visible after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_nothing_changed_counts_every_kind_and_shows_in_status() {
    let w = World::new();
    let up = upstream();
    let p = start_with_policy(&w, up);
    let ok = |kind: &str| {
        metric(
            &p.metrics(),
            "certgate_reloads_total",
            &[("kind", kind), ("result", "ok")],
        )
    };
    const KINDS: [&str; 4] = ["cert", "ca", "crl", "policy"];
    for round in 1..=2 {
        let before: Vec<f64> = KINDS.iter().map(|k| ok(k)).collect();
        sighup(&p);
        // Every kind moves by one for this SIGHUP, though no file changed.
        for (kind, before) in KINDS.iter().zip(before) {
            wait_for(&format!("{kind} ok counted, round {round}"), CHANGE, || {
                (ok(kind) == before + 1.0).then_some(())
            });
        }
        let status = wait_for("/status shows the SIGHUP", CHANGE, || {
            let s = status_json(&p);
            (s["last_reload"]["cause"] == "SIGHUP").then_some(s)
        });
        let last = &status["last_reload"];
        assert_eq!(last["result"], "ok", "{status}");
        assert_eq!(last["cause"], "SIGHUP", "{status}");
        assert!(last["at"].is_string(), "{status}");
        assert_eq!(
            last["kinds"],
            serde_json::json!(["ca", "cert", "crl", "policy"]),
            "{status}"
        );
        assert_eq!(
            status["listeners"][0]["trust_generation"], 1,
            "nothing changed: the serving state stays"
        );
    }
    for kind in KINDS {
        assert_eq!(
            metric(
                &p.metrics(),
                "certgate_reloads_total",
                &[("kind", kind), ("result", "error")],
            ),
            0.0
        );
    }
    assert_eq!(http_get(p.admin, "/healthz").unwrap().0, 200, "still alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_rotation_reaches_new_handshakes() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("CN", "c")], &w.ca);
    w.save("c", &who);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let mut s = spec(&[("O", "rotated"), ("CN", "localhost")]);
    s.server_auth = true;
    s.client_auth = false;
    s.dns_names = vec!["localhost".into()];
    let rotated = certgate::pki::issue(&s, &w.ca).unwrap();
    // cert-manager writes both; a moment with a mismatched pair must not break anything.
    atomic_write(&w.path("server-key.pem"), &key_pem(&rotated));
    atomic_write(&w.path("server.pem"), &cert_pem(&rotated));
    wait_for("rotated certificate served", CHANGE, || {
        let (_, out) = s_client(&w, &p, Some((&w.path("c.pem"), &w.path("c-key.pem"))), &[]);
        out.contains("O = rotated").then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edit_applies_without_restart() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "jenkins")], &w.ca);
    std::fs::write(
        w.path("policy.yaml"),
        "permissions:\n  list_vms: [\"GET /api/v1/vm\"]\ngroups:\n  admins: [list_vms]\n",
    )
    .unwrap();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let (c, v) = code(&https(&w, &p, Some(&who)), &p.url("/api/v1/vm")).await;
    assert_eq!(
        (c, v["reason"].as_str()),
        (403, Some("GET /api/v1/vm requires one of: list_vms"))
    );
    atomic_write(
        &w.path("policy.yaml"),
        b"permissions:\n  list_vms: [\"GET /api/v1/vm\"]\ngroups:\n  ci: [list_vms]\n",
    );
    wait_code(
        "policy edit",
        || https(&w, &p, Some(&who)),
        &p.url("/api/v1/vm"),
        200,
    )
    .await;
}

#[test]
fn reload_latency_over_twenty_tries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new();
        let up = upstream();
        let p = Proxy::start(&w, &ProxyConfig::new(up));
        let mut times = Vec::new();
        for i in 0..20 {
            let who = client(&[("CN", &format!("victim{i}"))], &w.ca);
            let c = https(&w, &p, Some(&who));
            assert_eq!(code(&c, &p.url("/")).await.0, 200);
            let start = Instant::now();
            w.revoke(&who.cert);
            loop {
                if code(&c, &p.url("/")).await.0 == 401 {
                    break;
                }
                assert!(start.elapsed() < CHANGE);
            }
            times.push(start.elapsed());
        }
        times.sort();
        let line = format!("reload latency (CRL written -> first request refused), 20 tries: median {:?}, worst {:?}", times[10], times[19]);
        eprintln!("{line}");
        assert!(times[19] < Duration::from_secs(2), "{line}");
    });
}

#[test]
fn bounded_load_across_fifty_reloads_has_no_failed_request() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new();
        let up = upstream();
        let who = client(&[("O", "ci"), ("CN", "loader")], &w.ca);
        let p = Arc::new(Proxy::start(&w, &ProxyConfig::new(up)));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for t in 0..4 {
            let keep_alive = t % 2 == 0;
            let c = if keep_alive {
                https(&w, &p, Some(&who))
            } else {
                https_builder(&w, &p, Some(&who))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
            };
            let (p, stop, ok, failed) = (p.clone(), stop.clone(), ok.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.get(p.url("/load")).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        // 50 reloads over ~20 s: CRL rewrites revoking other certificates.
        for i in 0..50 {
            let bystander = client(&[("CN", &format!("bystander{i}"))], &w.ca);
            w.revoke(&bystander.cert);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let m = p.metrics();
        let reloads = metric(
            &m,
            "certgate_reloads_total",
            &[("kind", "crl"), ("result", "ok")],
        );
        eprintln!(
            "load: {} ok, {} failed, {reloads} CRL reloads",
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
        assert_eq!(failed.load(Ordering::Relaxed), 0);
        assert!(ok.load(Ordering::Relaxed) > 100);
        assert!(
            reloads >= 25.0,
            "most rewrites became reloads (debounce may merge some): {reloads}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_or_expired_crl_file_never_replaces_the_one_in_force() {
    let mut w = World::new();
    let up = upstream();
    let alice = client(&[("O", "ci"), ("CN", "alice")], &w.ca);
    let bob = client(&[("O", "ci"), ("CN", "bob")], &w.ca);
    w.revoke(&alice.cert);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let refused = |who: &certgate::pki::Issued| {
        let c = https(&w, &p, Some(who));
        let url = p.url("/");
        async move {
            let (code, v) = code(&c, &url).await;
            (code, v["reason"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(refused(&alice).await, (401, "certificate revoked".into()));
    let in_force = std::fs::read(w.path("crl.pem")).unwrap();

    // A restored backup: the same CA's CRL number 0, revoking nobody. And a CRL of the same CA
    // already past its nextUpdate, with a higher number: it would lock every client out.
    let older = certgate::pki::make_crl(&w.ca, &[], -5, 30, 0).unwrap();
    let expired = certgate::pki::make_crl(&w.ca, &[], -3, -1, 1_000).unwrap();
    for (what, crl, why) in [
        ("older", older, "is older than the one in force"),
        ("expired", expired, "is already past its nextUpdate"),
    ] {
        let errors = |p: &Proxy| {
            metric(
                &p.metrics(),
                "certgate_reloads_total",
                &[("kind", "crl"), ("result", "error")],
            )
        };
        let before = errors(&p);
        atomic_write(&w.path("crl.pem"), &crl.to_pem().unwrap());
        let status = wait_for(&format!("the {what} CRL refused"), CHANGE, || {
            let s = status_json(&p);
            s["last_reload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(why))
                .then_some(s)
        });
        let error = status["last_reload"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("crl.pem")
                && error.contains("tls.crl")
                && error.contains("the last good CRL stays in force")
                && error.contains("restart certgate if going back is intended"),
            "names the file, the key, what happened and the fix: {error}"
        );
        wait_for("the refusal counted", CHANGE, || {
            (errors(&p) > before).then_some(())
        });
        assert_eq!(
            refused(&alice).await,
            (401, "certificate revoked".into()),
            "{what}"
        );
        assert_eq!(refused(&bob).await.0, 200, "{what}");
        assert_eq!(
            http_get(p.admin, "/readyz").map(|r| r.0),
            Some(200),
            "{what}"
        );
        atomic_write(&w.path("crl.pem"), &in_force);
    }

    // A newer CRL is taken as always.
    w.revoke(&bob.cert);
    wait_code(
        "bob revoked",
        || https(&w, &p, Some(&bob)),
        &p.url("/"),
        401,
    )
    .await;

    // A new CA of the same name (another key, its CRL numbers starting over) is a rotation,
    // not a rollback. The CA bundle first: until its CRL follows, the pair is refused.
    let again = ca("Test Root CA");
    let carol = client(&[("O", "ci"), ("CN", "carol")], &again);
    let fresh = certgate::pki::make_crl(&again, &[], -1, 30, 0).unwrap();
    atomic_write(&w.path("ca.pem"), &cert_pem(&again));
    atomic_write(&w.path("crl.pem"), &fresh.to_pem().unwrap());
    wait_code(
        "the new CA's client let in",
        || https(&w, &p, Some(&carol)),
        &p.url("/"),
        200,
    )
    .await;
}

#[test]
fn sighup_after_a_config_edit_says_that_a_restart_applies_it() {
    let w = World::new();
    let p = Proxy::start(&w, &ProxyConfig::new(upstream()));
    assert_eq!(status_json(&p)["config_changed_since_start"], false);
    let mut text = std::fs::read_to_string(&p.config).unwrap();
    text.push_str("# edited while running\n");
    atomic_write(&p.config, text.as_bytes());
    sighup(&p);
    let line = wait_for("the warning", CHANGE, || {
        p.log_text()
            .lines()
            .find(|l| l.contains("the config file changed since start"))
            .map(str::to_string)
    });
    assert!(
        line.contains("WARN") && line.contains("restart certgate to apply"),
        "{line}"
    );
    assert_eq!(status_json(&p)["config_changed_since_start"], true);
}
