//! SPIFFE and SAN identities through the real binary: workload certificates as cert-manager's
//! csi-driver-spiffe issues them (empty subject, one critical SPIFFE URI SAN, no O=), allowed
//! and denied by `spiffe:` patterns and `users_from`, the identity the upstream sees, and
//! `certgate explain` naming the rule.

mod common;

use certgate::pki::{self, CertSpec, Issued};
use common::*;

const POLICY: &str = r#"
permissions:
  list_vms: ["GET /vms"]
  start_vm: ["POST /vms"]
  status:   ["GET /status"]
spiffe:
  "spiffe://example.org/ns/ci/sa/*": [list_vms]
  "spiffe://example.org/ns/ops/**": [list_vms, start_vm]
authenticated: [status]
"#;

/// A workload certificate: no subject at all, only these URI SANs.
fn workload(world: &World, uris: &[&str]) -> Issued {
    let spec = CertSpec {
        uris: uris.iter().map(|u| u.to_string()).collect(),
        ..CertSpec::default()
    };
    pki::issue(&spec, &world.ca).unwrap()
}

fn start(world: &World, policy: &str) -> Proxy {
    std::fs::write(world.path("policy.yaml"), policy).unwrap();
    let mut cfg = ProxyConfig::new(upstream());
    cfg.listener_extra = "    policy: policy.yaml\n    headers: [nginx-ingress, xfcc]\n";
    Proxy::start(world, &cfg)
}

async fn post(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = client.post(url).send().await.unwrap();
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_patterns_allow_and_deny_and_the_upstream_sees_the_id() {
    let w = World::new();
    let p = start(&w, POLICY);
    let id = "spiffe://example.org/ns/ci/sa/builder";
    let builder = workload(&w, &[id]);
    let c = https(&w, &p, Some(&builder));

    let (code, body) = get_json(&c, &p.url("/vms")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(seen(&body, "x-certgate-spiffe-id"), [id]);
    assert_eq!(seen(&body, "x-certgate-permission"), ["list_vms"]);
    // The contract defines x-certgate-user as the CN; this certificate has none.
    assert!(seen(&body, "x-certgate-user").is_empty(), "{body}");
    let xfcc = seen(&body, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{body}");
    assert!(xfcc[0].contains(&format!(";URI={id}")), "{xfcc:?}");

    let line = p.access_line(id);
    assert!(line.contains("/vms") && line.contains("list_vms"), "{line}");

    // `*` grants list_vms only, and only one segment deep.
    let (code, body) = post(&c, &p.url("/vms")).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["reason"], "POST /vms requires one of: start_vm");
    let deeper = workload(&w, &["spiffe://example.org/ns/ci/sa/builder/x"]);
    let (code, _) = get_json(&https(&w, &p, Some(&deeper)), &p.url("/vms")).await;
    assert_eq!(code, 403);
    // Another namespace, another trust domain.
    for other in [
        "spiffe://example.org/ns/prod/sa/builder",
        "spiffe://example.org.evil/ns/ci/sa/builder",
    ] {
        let who = workload(&w, &[other]);
        let (code, body) = get_json(&https(&w, &p, Some(&who)), &p.url("/vms")).await;
        assert_eq!(code, 403, "{other}: {body}");
    }
    // `**` takes the rest of the path.
    let ops = workload(&w, &["spiffe://example.org/ns/ops/sa/deployer"]);
    let (code, body) = post(&https(&w, &p, Some(&ops)), &p.url("/vms")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(seen(&body, "x-certgate-permission"), ["start_vm"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_or_invalid_spiffe_ids_get_nothing_and_spoofed_ids_are_stripped() {
    let w = World::new();
    let p = start(&w, POLICY);
    let two = workload(
        &w,
        &[
            "spiffe://example.org/ns/ci/sa/builder",
            "spiffe://example.org/ns/ops/sa/deployer",
        ],
    );
    let c = https(&w, &p, Some(&two));
    let (code, body) = get_json(&c, &p.url("/vms")).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = get_json(&c, &p.url("/status")).await;
    assert_eq!(code, 200, "{body}");
    assert!(seen(&body, "x-certgate-spiffe-id").is_empty(), "{body}");
    // Both URIs still reach the upstream in XFCC, as Envoy would send them.
    let xfcc = seen(&body, "x-forwarded-client-cert").join("");
    assert!(
        xfcc.contains(
            "URI=spiffe://example.org/ns/ci/sa/builder;URI=spiffe://example.org/ns/ops/sa/deployer"
        ),
        "{xfcc}"
    );

    let dotted = workload(&w, &["spiffe://example.org/ns/ci/sa/../../ops/sa/x"]);
    let (code, body) = get_json(&https(&w, &p, Some(&dotted)), &p.url("/vms")).await;
    assert_eq!(code, 403, "{body}");

    // A client without a SPIFFE ID cannot claim one.
    let plain = client(&[("O", "ci"), ("CN", "plain")], &w.ca);
    let r = https(&w, &p, Some(&plain))
        .get(p.url("/status"))
        .header("x-certgate-spiffe-id", "spiffe://example.org/ns/ops/sa/x")
        .header("X_Certgate_Spiffe_Id", "spiffe://example.org/ns/ops/sa/y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(seen(&body, "x-certgate-spiffe-id").is_empty(), "{body}");
    assert!(seen(&body, "x_certgate_spiffe_id").is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_uri_san_names_users_by_their_uri() {
    let w = World::new();
    let policy = r#"
permissions:
  list_vms: ["GET /vms"]
users_from: uri_san
users:
  "spiffe://example.org/ns/ci/sa/builder": [list_vms]
  jenkins: [list_vms]
"#;
    let p = start(&w, policy);
    let builder = workload(&w, &["spiffe://example.org/ns/ci/sa/builder"]);
    let (code, body) = get_json(&https(&w, &p, Some(&builder)), &p.url("/vms")).await;
    assert_eq!(code, 200, "{body}");
    // The CN no longer names the user.
    let jenkins = client(&[("CN", "jenkins")], &w.ca);
    let (code, body) = get_json(&https(&w, &p, Some(&jenkins)), &p.url("/vms")).await;
    assert_eq!(code, 403, "{body}");
}

#[test]
fn explain_names_the_spiffe_rule() {
    let w = World::new();
    let p = start(&w, POLICY);
    w.save(
        "builder",
        &workload(&w, &["spiffe://example.org/ns/ci/sa/builder"]),
    );
    w.save(
        "two",
        &workload(
            &w,
            &[
                "spiffe://example.org/ns/ci/sa/a",
                "spiffe://example.org/ns/ci/sa/b",
            ],
        ),
    );
    let run = |cert: &str, method: &str| {
        let o = std::process::Command::new(BIN)
            .args(["explain", "-c"])
            .arg(&p.config)
            .args(["--listener", "test", "--method", method, "--path", "/vms"])
            .arg("--cert")
            .arg(w.path(cert))
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = run("builder.pem", "GET");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("SPIFFE ID: spiffe://example.org/ns/ci/sa/builder"),
        "{out}"
    );
    assert!(
        out.contains("list_vms  (from spiffe pattern \"spiffe://example.org/ns/ci/sa/*\")"),
        "{out}"
    );
    assert!(
        out.contains("rule: allowed: permission \"list_vms\" (held through spiffe pattern \"spiffe://example.org/ns/ci/sa/*\")"),
        "{out}"
    );
    let (code, out) = run("builder.pem", "POST");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("requires one of: start_vm"), "{out}");
    let (code, out) = run("two.pem", "GET");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("2 spiffe URI SANs"), "{out}");

    let o = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&p.config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("0 users, 2 spiffe patterns"), "{out}");
}

#[test]
fn pki_issue_uri_writes_the_spiffe_id_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .arg("pki")
            .args(args)
            .arg("--dir")
            .arg(d)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (code, out) = pki(&["init"]);
    assert_eq!(code, Some(0), "{out}");
    let id = "spiffe://example.org/ns/ci/sa/builder";
    let (code, out) = pki(&["issue", "--cn", "builder", "--uri", id]);
    assert_eq!(code, Some(0), "{out}");
    let cert =
        openssl::x509::X509::from_pem(&std::fs::read(d.join("builder.pem")).unwrap()).unwrap();
    let identity = certgate::tls::identity::Identity::from_x509(&cert).unwrap();
    assert_eq!(identity.uri_sans, [id]);
    let (code, out) = pki(&[
        "issue",
        "--cn",
        "bad",
        "--uri",
        "spiffe://example.org/ns/../sa/x",
    ]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("--uri") && out.contains("not a valid SPIFFE ID"),
        "{out}"
    );
    assert!(!d.join("bad.pem").exists());
}
