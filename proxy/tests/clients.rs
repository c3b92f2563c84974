//! The client inventory: `GET /clients` on the admin port, the
//! `certgate_client_cert_expiry_seconds` metric, `certgate clients`, and `admin.clients_max`,
//! driven by real clients with real certificates through the real binary.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use certgate::pki::{self, Issued};
use common::*;
use openssl::hash::MessageDigest;

/// A client certificate of `group` (O=) for `cn`, valid for `days` more days.
fn cert(w: &World, cn: &str, group: &str, days: i64) -> Issued {
    let mut s = spec(&[("O", group), ("CN", cn)]);
    s.not_after_days = days;
    pki::issue(&s, &w.ca).unwrap()
}

fn not_after(i: &Issued) -> i64 {
    certgate::time::asn1_unix(i.cert.not_after())
}

fn fingerprint(i: &Issued) -> String {
    hex::encode(i.cert.digest(MessageDigest::sha256()).unwrap())
}

/// Two listeners, `test` and `other`, on the echo upstream; `admin` is appended to the admin
/// block.
fn start(w: &World, admin_extra: &str) -> (Proxy, SocketAddr) {
    let (addr, other, admin) = (free_addr(), free_addr(), free_addr());
    let up = upstream();
    let text = format!(
        "admin:\n  listen: {admin}\n{admin_extra}shutdown_grace: 5s\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem]\n  client_auth: optional\nlisteners:\n  - name: test\n    listen: {addr}\n    upstream: http://{up}\n  - name: other\n    listen: {other}\n    upstream: http://{up}\n"
    );
    (Proxy::start_with(w.dir.path(), &text, addr, admin), other)
}

async fn get_ok(w: &World, p: &Proxy, who: &Issued, port: u16, times: usize) {
    // One client, so the requests share a connection: the entry is looked up once, counted
    // per request.
    let c = https(w, p, Some(who));
    for _ in 0..times {
        let (code, body) = get_json(&c, &format!("https://localhost:{port}/x")).await;
        assert_eq!(code, 200, "{body}");
    }
}

fn clients(p: &Proxy, query: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get(p.admin, &format!("/clients{query}")).unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (code, json)
}

fn users(v: &serde_json::Value) -> Vec<String> {
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_by_expiry_with_counts_filters_and_the_metric() {
    let w = World::new();
    let alice = cert(&w, "alice", "DevOps", 3);
    let bob = cert(&w, "bob", "ci", 20);
    let carol = cert(&w, "carol", "DevOps", 60);
    let (p, other) = start(&w, "");
    let (test_port, other_port) = (p.addr.port(), other.port());

    get_ok(&w, &p, &alice, test_port, 3).await;
    get_ok(&w, &p, &bob, other_port, 1).await;
    get_ok(&w, &p, &carol, test_port, 2).await;
    get_ok(&w, &p, &carol, other_port, 1).await;
    // Without a certificate nothing is recorded.
    let (code, _) = get_json(&https(&w, &p, None), &p.url("/x")).await;
    assert_eq!(code, 401);

    let (code, all) = clients(&p, "");
    assert_eq!(code, 200, "{all}");
    assert_eq!(
        users(&all),
        ["alice", "bob", "carol"],
        "soonest notAfter first"
    );
    assert_eq!(all["count"], 3);
    let list = all["clients"].as_array().unwrap();
    for (entry, who, requests, listener, group) in [
        (&list[0], &alice, 3, "test", "DevOps"),
        (&list[1], &bob, 1, "other", "ci"),
        (&list[2], &carol, 3, "other", "DevOps"),
    ] {
        assert_eq!(entry["fingerprint"], fingerprint(who), "{entry}");
        assert_eq!(entry["requests"], requests, "{entry}");
        assert_eq!(entry["last_listener"], listener, "{entry}");
        assert_eq!(entry["groups"], serde_json::json!([group]), "{entry}");
        assert_eq!(entry["not_after_unix"], not_after(who), "{entry}");
        assert_eq!(
            entry["not_after"],
            certgate::time::unix_rfc3339(not_after(who)),
            "{entry}"
        );
        assert_eq!(
            entry["issuer"], "CN=Test Root CA,O=certgate tests",
            "{entry}"
        );
        assert!(!entry["serial"].as_str().unwrap().is_empty(), "{entry}");
        let (first, last) = (
            entry["first_seen"].as_str().unwrap(),
            entry["last_seen"].as_str().unwrap(),
        );
        assert!(first.ends_with('Z') && first <= last, "{entry}");
    }

    let (_, soon) = clients(&p, "?expiring_within=7d");
    assert_eq!(users(&soon), ["alice"]);
    let (_, devops) = clients(&p, "?group=DevOps");
    assert_eq!(users(&devops), ["alice", "carol"]);
    let (_, both) = clients(&p, "?expiring_within=30d&group=ci");
    assert_eq!(users(&both), ["bob"]);
    let (_, none) = clients(&p, "?expiring_within=30d&group=nobody");
    assert_eq!(users(&none), Vec::<String>::new());

    for bad in [
        "?expiring_within=soon",
        "?expiring_within=",
        "?user=alice",
        "?group=",
    ] {
        let (code, err) = clients(&p, bad);
        assert_eq!(code, 400, "{bad}: {err}");
        assert_eq!(err["status"], "FAIL", "{bad}: {err}");
        assert!(!err["reason"].as_str().unwrap().is_empty(), "{bad}: {err}");
    }

    // Per listener and group: the earliest notAfter among the certificates seen there.
    let m = p.metrics();
    let expiry = |listener, group| {
        metric(
            &m,
            "certgate_client_cert_expiry_seconds",
            &[("listener", listener), ("group", group)],
        )
    };
    assert_eq!(expiry("test", "DevOps"), not_after(&alice) as f64, "{m}");
    assert_eq!(expiry("other", "DevOps"), not_after(&carol) as f64, "{m}");
    assert_eq!(expiry("other", "ci"), not_after(&bob) as f64, "{m}");
    assert!(
        !m.contains("certgate_client_cert_expiry_seconds{group=\"ci\",listener=\"test\"}"),
        "bob never used listener test: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certgate_clients_prints_the_table_and_exits_2_when_it_cannot_ask() {
    let w = World::new();
    let alice = cert(&w, "alice", "DevOps", 3);
    let bob = cert(&w, "bob", "ci", 20);
    let (p, _) = start(&w, "");
    get_ok(&w, &p, &alice, p.addr.port(), 1).await;
    get_ok(&w, &p, &bob, p.addr.port(), 1).await;

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("clients")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let config = p.config.to_str().unwrap();
    let (code, table, err) = run(&["-c", config]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for col in [
        "USER",
        "GROUPS",
        "NOT AFTER",
        "DAYS LEFT",
        "LAST SEEN",
        "ISSUER",
    ] {
        assert!(lines[0].contains(col), "{table}");
    }
    let alice_line: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(alice_line[..2], ["alice", "DevOps"], "{table}");
    assert_eq!(
        alice_line[2],
        certgate::time::unix_rfc3339(not_after(&alice))
    );
    // Issued for 3 days a moment ago: 2 full days left (3 if within the same second).
    assert!(["2", "3"].contains(&alice_line[3]), "{table}");
    assert!(
        lines[1].ends_with("CN=Test Root CA,O=certgate tests"),
        "{table}"
    );
    assert!(lines[2].starts_with("bob "), "{table}");

    let (code, table, err) = run(&["-c", config, "--expiring-within", "14d"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(table.contains("alice") && !table.contains("bob"), "{table}");

    let (code, _, err) = run(&["-c", config, "--expiring-within", "soon"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--expiring-within") && err.contains("14d"),
        "{err}"
    );

    // Admin disabled: the message names the key to add.
    let no_admin = w.path("no-admin.yaml");
    let text = std::fs::read_to_string(&p.config).unwrap();
    let (_, rest) = text.split_once("shutdown_grace").unwrap();
    std::fs::write(&no_admin, format!("shutdown_grace{rest}")).unwrap();
    let (code, _, err) = run(&["-c", no_admin.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("no-admin.yaml") && err.contains("admin"),
        "{err}"
    );

    // Nothing listening on the admin address.
    let dead = w.path("dead-admin.yaml");
    // Bound but never listening: refused, and no other socket can take the port meanwhile.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = held.local_addr().unwrap();
    std::fs::write(
        &dead,
        text.replace(&p.admin.to_string(), &closed.to_string()),
    )
    .unwrap();
    let (code, _, err) = run(&["-c", dead.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unreachable") && err.contains(&closed.to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_max_keeps_the_most_recently_seen() {
    let w = World::new();
    let a = cert(&w, "a", "g", 10);
    let b = cert(&w, "b", "g", 20);
    let c = cert(&w, "c", "g", 30);
    let (p, _) = start(&w, "  clients_max: 2\n");
    let port = p.addr.port();
    get_ok(&w, &p, &a, port, 1).await;
    get_ok(&w, &p, &b, port, 1).await;
    get_ok(&w, &p, &c, port, 1).await;
    assert_eq!(users(&clients(&p, "").1), ["b", "c"]);
    // a again: now b is the least recently seen.
    get_ok(&w, &p, &a, port, 1).await;
    let (_, now) = clients(&p, "");
    assert_eq!(users(&now), ["a", "c"]);
    assert_eq!(now["clients"][0]["requests"], 1, "a starts over: {now}");
}
