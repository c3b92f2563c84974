//! `certgate policy learn` end to end: real mTLS traffic through certgate in audit mode writes
//! the JSON access log; `learn --merged` turns its refusals into grants; the merged policy
//! passes `certgate check`, and the same traffic is allowed in enforce mode while what the log
//! did not show stays refused.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use certgate::pki::Issued;
use common::*;

const CATALOG: &str = r#"# catalog: permissions only
permissions:
  list_vms: ["GET /api/v1/vm"]
  nodes: ["GET /api/v1/node/{id}"]
  pull_vm: []
"#;

const POLICY: &str = r#"# learn test policy
include: [catalog.yaml]

permissions:
  health: ["GET /livez"]

groups:
  # admins may do everything
  admins: ["*"]
  readers: [list_vms]   # read-only

authenticated: []
anonymous: []
mode: audit
"#;

const UUID_A: &str = "c0847bc9-5d2d-4dbc-ba6a-240f7ff08032";
const UUID_B: &str = "ea663a61-0e5c-4419-8194-697104fb693a";

struct Clients {
    reader: reqwest::Client,
    builder: reqwest::Client,
    solo: reqwest::Client,
    stranger: reqwest::Client,
    anonymous: reqwest::Client,
}

fn clients(w: &World, p: &Proxy) -> Clients {
    let other_ca = ca("Other CA");
    Clients {
        reader: https(
            w,
            p,
            Some(&client(&[("O", "readers"), ("CN", "reader1")], &w.ca)),
        ),
        // Two groups, one with a comma inside: both get the grants.
        builder: https(
            w,
            p,
            Some(&client(
                &[("O", "build-nodes"), ("O", "Acme, Inc."), ("CN", "node1")],
                &w.ca,
            )),
        ),
        solo: https(w, p, Some(&client(&[("CN", "solo")], &w.ca))),
        stranger: https(
            w,
            p,
            Some(&client(&[("O", "admins"), ("CN", "intruder")], &other_ca)),
        ),
        anonymous: https(w, p, None),
    }
}

/// The requests of the "audit" period: (client, method, path).
fn traffic(c: &Clients) -> Vec<(&reqwest::Client, &'static str, String)> {
    vec![
        (&c.reader, "GET", "/api/v1/vm".into()),
        (&c.reader, "GET", "/api/v1/node/5".into()),
        (&c.builder, "GET", format!("/registry/vm/{UUID_A}/files")),
        (&c.builder, "GET", format!("/registry/vm/{UUID_B}/files")),
        (&c.builder, "POST", "/registry/push".into()),
        (&c.solo, "GET", "/api/v1/vm".into()),
        (&c.anonymous, "GET", "/livez".into()),
    ]
}

async fn send(client: &reqwest::Client, p: &Proxy, method: &str, path: &str) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    client
        .request(m, p.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn access_records(p: &Proxy) -> usize {
    p.log_text()
        .lines()
        .filter(|l| l.contains("\"certgate::access\""))
        .count()
}

fn certgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn setup() -> (World, std::net::SocketAddr) {
    let w = World::new();
    std::fs::write(w.path("catalog.yaml"), CATALOG).unwrap();
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    (w, upstream())
}

fn start(w: &World, up: std::net::SocketAddr) -> Proxy {
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: policy.yaml\n";
    cfg.top_extra = "log:\n  format: json\n";
    Proxy::start(w, &cfg)
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_then_learn_then_enforce_allows_the_same_traffic() {
    let (w, up) = setup();
    let audit = start(&w, up);
    let c = clients(&w, &audit);
    for (client, method, path) in traffic(&c) {
        assert_eq!(
            send(client, &audit, method, &path).await,
            200,
            "{method} {path} in audit mode"
        );
    }
    // Refusals the log must not teach: a foreign CA, and a malformed path (400 even in audit).
    assert_eq!(send(&c.stranger, &audit, "GET", "/secret").await, 200);
    assert_eq!(send(&c.reader, &audit, "GET", "/a/%2f/b").await, 400);
    wait_for("the access log", Duration::from_secs(10), || {
        (access_records(&audit) >= 9).then_some(())
    });
    let log = audit.log.clone();
    drop(audit);
    let log = log.to_str().unwrap();
    let policy = w.path("policy.yaml");
    let policy = policy.to_str().unwrap();

    let learn = |extra: &[&str]| {
        let base = [
            "policy",
            "learn",
            "--log",
            log,
            "--policy",
            policy,
            "--listener",
            "test",
            // The traffic includes an anonymous health check, to be granted too.
            "--anonymous",
        ];
        certgate(&[&base[..], extra].concat(), None)
    };
    let fragment = learn(&[]);
    assert!(fragment.status.success(), "{fragment:?}");
    let fragment = text(&fragment);
    for want in [
        "learned_get_registry_vm_id_files: [\"GET /registry/vm/{id}/files\"]",
        // Per permission each request counts once, though node1 is in two groups.
        "  # 1 request by node1; at ",
        "learned_post_registry_push: [\"POST /registry/push\"]",
        "  # 2 requests by node1; first ",
        "  readers:\n    # covers GET /api/v1/node/{id}: 1 request by reader1; at ",
        "  \"Acme, Inc.\":\n",
        "  build-nodes:\n    # learned POST /registry/push: 1 request by node1; at ",
        "    # learned GET /registry/vm/{id}/files: 2 requests by node1; first ",
        "users:\n  solo:\n",
        "anonymous:\n  # covers GET /livez: 1 request; at ",
    ] {
        assert!(fragment.contains(want), "missing {want:?} in:\n{fragment}");
    }
    assert!(
        !fragment.contains("intruder")
            && !fragment.contains("/secret")
            && !fragment.contains("%2f"),
        "{fragment}"
    );

    let merged = learn(&["--merged"]);
    assert!(merged.status.success(), "{merged:?}");
    let merged = text(&merged);
    assert!(
        merged.contains("# admins may do everything") && merged.contains("mode: audit"),
        "{merged}"
    );
    assert_eq!(
        std::fs::read_to_string(policy).unwrap(),
        POLICY,
        "learn never rewrites a file"
    );
    std::fs::write(policy, merged.replace("mode: audit", "mode: enforce")).unwrap();

    let enforce = start(&w, up);
    let check = certgate(&["check", "-c", enforce.config.to_str().unwrap()], None);
    assert!(
        check.status.success(),
        "check: {}{}",
        text(&check),
        String::from_utf8_lossy(&check.stderr)
    );
    let c = clients(&w, &enforce);
    for (client, method, path) in traffic(&c) {
        assert_eq!(
            send(client, &enforce, method, &path).await,
            200,
            "{method} {path} in enforce mode"
        );
    }
    // A template id the log never showed: the generalised route covers it.
    let other = "/registry/vm/0e42b576-4d36-482b-8f57-73c005fe8101/files";
    assert_eq!(send(&c.builder, &enforce, "GET", other).await, 200);
    // What nobody did stays refused.
    assert_eq!(
        send(&c.reader, &enforce, "POST", "/registry/push").await,
        403
    );
    assert_eq!(send(&c.solo, &enforce, "GET", "/api/v1/node/5").await, 403);
    assert_eq!(send(&c.anonymous, &enforce, "GET", "/api/v1/vm").await, 401);
    assert_eq!(send(&c.stranger, &enforce, "GET", "/secret").await, 401);
    assert_eq!(send(&c.reader, &enforce, "GET", "/a/%2f/b").await, 400);

    // Learning again from the same log: everything is allowed now.
    let again = learn(&[]);
    let again = text(&again);
    assert!(
        again.contains("# nothing to learn")
            && again.contains("pairs are allowed by the policy already"),
        "{again}"
    );
}

#[test]
fn stdin_gzip_min_count_and_errors() {
    let records: Vec<String> = (0..3)
        .map(|i| format!(
            r#"{{"timestamp":"2026-11-29T10:00:0{i}Z","level":"INFO","listener":"l","method":"GET","path":"/files/{i}","status":403,"user":"u","groups":"g","decision":"deny","reason":"GET /files/{i} is covered by no permission","target":"certgate::access"}}"#
        ))
        .chain(["{\"level\":\"INFO\",\"target\":\"certgate::reload\"}".to_string(), "text line".into()])
        .collect();
    let plain = records.join("\n") + "\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    std::fs::write(&file, &plain).unwrap();
    let from_file = certgate(&["policy", "learn", "--log", file.to_str().unwrap()], None);
    assert!(from_file.status.success());
    let body = |o: &Output| text(o).lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(
        body(&from_file).contains("learned_get_files_id: [\"GET /files/{id}\"]"),
        "{}",
        text(&from_file)
    );
    assert!(
        body(&from_file).contains("5 lines, 3 access records, 3 policy refusals"),
        "{}",
        text(&from_file)
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(plain.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let from_stdin = certgate(&["policy", "learn", "--log", "-"], Some(&gz));
    assert!(from_stdin.status.success(), "{from_stdin:?}");
    assert_eq!(body(&from_stdin), body(&from_file));

    let rare = certgate(
        &["policy", "learn", "--min-count", "4", "--log", "-"],
        Some(plain.as_bytes()),
    );
    assert!(rare.status.success());
    assert!(
        text(&rare).contains("# nothing to learn"),
        "{}",
        text(&rare)
    );

    for (args, says) in [
        (
            vec!["policy", "learn", "--log", "/nonexistent/access.log"],
            "/nonexistent/access.log: cannot open",
        ),
        (
            vec!["policy", "learn", "--log", "-", "--merged"],
            "--policy",
        ),
        (
            vec![
                "policy",
                "learn",
                "--log",
                "-",
                "--policy",
                "/nonexistent/p.yaml",
            ],
            "/nonexistent/p.yaml",
        ),
    ] {
        let out = certgate(&args, Some(b""));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {out:?}"
        );
    }
}

/// With `group_attribute: OU` the log's groups are the OU values (what the policy matched on),
/// so the grant goes to the OU, not to the O.
#[tokio::test(flavor = "multi_thread")]
async fn grants_follow_the_group_attribute() {
    let (w, up) = setup();
    let policy = POLICY.replace("mode: audit", "mode: enforce\ngroup_attribute: OU");
    std::fs::write(w.path("policy.yaml"), &policy).unwrap();
    let p = start(&w, up);
    let who = client(
        &[("O", "Example Org"), ("OU", "team-a"), ("CN", "dev1")],
        &w.ca,
    );
    assert_eq!(
        send(&https(&w, &p, Some(&who)), &p, "GET", "/api/v1/vm").await,
        403
    );
    wait_for("the access log", Duration::from_secs(10), || {
        (access_records(&p) >= 1).then_some(())
    });
    let log = p.log.to_str().unwrap().to_string();
    let out = certgate(
        &[
            "policy",
            "learn",
            "--log",
            &log,
            "--policy",
            w.path("policy.yaml").to_str().unwrap(),
        ],
        None,
    );
    let out = text(&out);
    assert!(
        out.contains("groups:\n  team-a:\n    # covers GET /api/v1/vm: 1 request by dev1; at "),
        "{out}"
    );
    assert!(!out.contains("Example Org"), "{out}");
}

/// The shipped controller policy (and its catalog) in the world's directory, in audit mode.
fn shipped_controller(w: &World) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let policy = std::fs::read_to_string(dir.join("anka-controller.yaml")).unwrap();
    assert!(
        policy.contains("\nmode: enforce"),
        "the shipped policy changed"
    );
    let audit = policy.replace("\nmode: enforce", "\nmode: audit");
    std::fs::write(w.path("anka-controller.yaml"), audit).unwrap();
    std::fs::copy(
        dir.join("anka-controller.catalog.yaml"),
        w.path("anka-controller.catalog.yaml"),
    )
    .unwrap();
}

fn start_controller(w: &World, up: std::net::SocketAddr) -> Proxy {
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    policy: anka-controller.yaml\n";
    cfg.top_extra = "log:\n  format: json\n";
    Proxy::start(w, &cfg)
}

/// One HTTP/1.1 request written byte for byte (any method, any path bytes): the status code.
fn raw(w: &World, p: &Proxy, who: Option<&Issued>, method: &str, path: &str) -> u16 {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let response = raw_https(w, p, who, head.as_bytes());
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The access log of `p` once it holds `n` records, and `p` stopped.
fn log_of(p: Proxy, n: usize) -> std::path::PathBuf {
    wait_for("the access log", Duration::from_secs(10), || {
        (access_records(&p) >= n).then_some(())
    });
    p.log.clone()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `certgate policy learn --merged` on the controller policy, written over it: the output.
fn learn_merged(w: &World, log: &std::path::Path, extra: &[&str]) -> String {
    let policy = w.path("anka-controller.yaml");
    let args = [
        "policy",
        "learn",
        "--log",
        log.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--merged",
    ];
    let out = certgate(&[&args[..], extra].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out), stderr(&out));
    let merged = text(&out);
    std::fs::write(&policy, &merged).unwrap();
    merged
}

/// `certgate check` on the world's config: passes.
fn check_passes(config: &std::path::Path, merged: &str) {
    let check = certgate(&["check", "-c", config.to_str().unwrap()], None);
    assert!(
        check.status.success(),
        "check: {}{}\nmerged policy:\n{merged}",
        text(&check),
        stderr(&check)
    );
}

/// `certgate explain` of one request (as anonymous, or with the client certificate NAME.pem):
/// whether it is allowed.
fn allowed(
    w: &World,
    config: &std::path::Path,
    who: Option<&str>,
    method: &str,
    path: &str,
) -> bool {
    let cert = who.map(|n| w.path(&format!("{n}.pem")));
    let mut args = vec![
        "explain",
        "-c",
        config.to_str().unwrap(),
        "--listener",
        "test",
        "--method",
        method,
        "--path",
        path,
    ];
    match &cert {
        Some(c) => args.extend(["--cert", c.to_str().unwrap()]),
        None => args.push("--anonymous"),
    }
    let out = certgate(&args, None);
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("explain {method} {path}: {}{}", text(&out), stderr(&out)),
    }
}

/// What the outside tester sent without a certificate, and what they got allowed.
const ATTACK: [(&str, &str); 7] = [
    ("GET", "/api/v1/1"),
    ("DELETE", "/api/v1/1"),
    ("POST", "/api/v1/1"),
    ("PUT", "/api/v1/1"),
    ("POST", "/*/*/*/*"),
    ("DELETE", "/*/*/*"),
    ("POST", "/admin/api/v1/permission/group/{x}/resources"),
];
const TAKEN: [(&str, &str); 6] = [
    ("GET", "/api/v1/apikey"),
    ("DELETE", "/api/v1/apikey"),
    ("POST", "/api/v1/vm"),
    ("DELETE", "/api/v1/vm"),
    ("POST", "/api/v1/node/config"),
    (
        "POST",
        "/admin/api/v1/permission/group/anka-admins/resources",
    ),
];

/// Anonymous requests and one build node's `DELETE /api/v1/deadbeef`, through certgate on the
/// shipped controller policy in audit mode: what learn proposes never lets anonymous clients
/// in, never gives the build nodes terminate_vm or delete_node, with or without --anonymous.
#[tokio::test(flavor = "multi_thread")]
async fn requests_cannot_steer_learn_into_existing_permissions() {
    let w = World::new();
    shipped_controller(&w);
    let p = start_controller(&w, upstream());
    let node = client(&[("O", "build-nodes"), ("CN", "node1")], &w.ca);
    w.save("node1", &node);
    for (method, path) in ATTACK {
        assert_ne!(raw(&w, &p, None, method, path), 400, "{method} {path}");
    }
    assert_eq!(raw(&w, &p, Some(&node), "DELETE", "/api/v1/deadbeef"), 200);
    let config = p.config.clone();
    let log = log_of(p, ATTACK.len() + 1);
    let lines = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (method, path) in ATTACK {
        assert!(
            records.iter().any(|r| r["decision"] == "audit_deny"
                && r["reason"] == "no certificate"
                && r["method"] == method
                && r["path"] == path),
            "{method} {path} is not an anonymous audit_deny in:\n{lines}"
        );
    }

    let merged = learn_merged(&w, &log, &[]);
    check_passes(&config, &merged);
    for (method, path) in TAKEN.iter().chain(&ATTACK) {
        assert!(
            !allowed(&w, &config, None, method, path),
            "anonymous {method} {path}\n{merged}"
        );
    }
    for (method, path) in TAKEN {
        assert!(
            !allowed(&w, &config, Some("node1"), method, path),
            "node1 {method} {path}\n{merged}"
        );
    }
    for (method, path) in [("DELETE", "/api/v1/node"), ("DELETE", "/api/v1/cafebabe")] {
        assert!(
            !allowed(&w, &config, Some("node1"), method, path),
            "node1 {method} {path}\n{merged}"
        );
    }
    // What the build node did is learned, as the path it requested.
    assert!(
        allowed(&w, &config, Some("node1"), "DELETE", "/api/v1/deadbeef"),
        "{merged}"
    );
    for want in [
        "learned_delete_api_v1_deadbeef: [\"DELETE /api/v1/deadbeef\"]",
        "# DELETE /api/v1/{id} is proposed as the paths requested: it would also cover routes of terminate_vm, delete_node",
        "# 3 requests skipped: a path segment is route syntax",
        "# 4 routes refused to requests without a certificate, not granted (--anonymous proposes them):",
        "#   GET /api/v1/1: 1 request; at ",
    ] {
        assert!(merged.contains(want), "missing {want:?} in:\n{merged}");
    }
    assert!(!merged.contains("{id}\"]"), "{merged}");

    // Asked for anonymous grants, learn proposes only the paths requested.
    shipped_controller(&w);
    let merged = learn_merged(&w, &log, &["--anonymous"]);
    check_passes(&config, &merged);
    for (method, path) in TAKEN {
        assert!(
            !allowed(&w, &config, None, method, path),
            "anonymous {method} {path}\n{merged}"
        );
        assert!(
            !allowed(&w, &config, Some("node1"), method, path),
            "node1 {method} {path}\n{merged}"
        );
    }
    for (method, path) in &ATTACK[4..] {
        assert!(
            !allowed(&w, &config, None, method, path),
            "anonymous {method} {path}\n{merged}"
        );
    }
    assert!(allowed(&w, &config, None, "GET", "/api/v1/1"), "{merged}");
    assert!(!allowed(&w, &config, None, "GET", "/api/v1/2"), "{merged}");
    assert!(
        merged.contains("learned_get_api_v1_1: [\"GET /api/v1/1\"]"),
        "{merged}"
    );
}

/// A path with U+2028, U+0085 and quotes, and a CN with a line separator and YAML in it: the
/// merged policy has them escaped, `certgate check` accepts it, and the grant reaches exactly
/// the client that made the request.
#[tokio::test(flavor = "multi_thread")]
async fn line_separators_and_quotes_cannot_break_the_merged_policy() {
    let w = World::new();
    shipped_controller(&w);
    let p = start_controller(&w, upstream());
    let ci = client(&[("O", "ci-tools"), ("CN", "ci1")], &w.ca);
    let evil_cn = "ls\u{2028}  anka-admins: [\"*\"]\u{85}#";
    let evil = client(&[("CN", evil_cn)], &w.ca);
    w.save("evil", &evil);
    // Covered by agent_package (GET /pkg/*), which ci-tools lack: the comment names the path.
    let pkg = "/pkg/a\u{2028}b\"c\u{85}d'e:f";
    assert_eq!(raw(&w, &p, Some(&ci), "GET", pkg), 200);
    // A route no permission covers: a new permission with quotes in its route.
    let quoted = "/\"q'uote:-x,[y]";
    assert_eq!(raw(&w, &p, Some(&evil), "GET", quoted), 200);
    // Unicode white space cannot be written in a route: left out, with a comment.
    assert_eq!(raw(&w, &p, Some(&evil), "GET", "/x\u{2028}y/\u{85}"), 200);
    let config = p.config.clone();
    let log = log_of(p, 3);

    let merged = learn_merged(&w, &log, &[]);
    check_passes(&config, &merged);
    assert!(
        !merged.contains(['\u{2028}', '\u{85}']),
        "raw line breaks in:\n{merged}"
    );
    for want in [
        "# covers GET /pkg/a\\u2028b\"c\\x85d'e:f: 1 request by ci1; at ",
        "learned_get_q_uote_x_y: [\"GET /\\\"q'uote:-x,[y]\"]",
        "users:\n  \"ls\\u2028  anka-admins: [\\\"*\\\"]\\x85#\":\n",
        "# not expressible as a route, left out: GET /x\\u2028y/\\x85: ",
    ] {
        assert!(merged.contains(want), "missing {want:?} in:\n{merged}");
    }
    assert!(
        allowed(&w, &config, Some("evil"), "GET", quoted),
        "{merged}"
    );
    for (method, path) in TAKEN {
        assert!(
            !allowed(&w, &config, Some("evil"), method, path),
            "{method} {path}\n{merged}"
        );
    }
}

/// `*`, `GET|DELETE|PUT`, a lower-case and an extension method, sent by a client with a
/// certificate: skipped with a comment, exit 0, nothing proposed for them.
#[tokio::test(flavor = "multi_thread")]
async fn methods_outside_the_seven_are_skipped() {
    let w = World::new();
    shipped_controller(&w);
    let p = start_controller(&w, upstream());
    let node = client(&[("O", "build-nodes"), ("CN", "node1")], &w.ca);
    let methods = ["*", "GET|DELETE|PUT", "get", "PURGE"];
    for m in methods {
        assert_ne!(raw(&w, &p, Some(&node), m, "/api/v1/vm"), 400, "{m}");
    }
    let config = p.config.clone();
    let log = log_of(p, methods.len());
    let merged = learn_merged(&w, &log, &[]);
    check_passes(&config, &merged);
    assert!(
        merged.contains("# 4 requests skipped: their method (\"*\", \"GET|DELETE|PUT\", \"get\", \"PURGE\") is none of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        "{merged}"
    );
    assert!(merged.contains("# nothing to learn"), "{merged}");
    assert!(!merged.contains("learned_"), "{merged}");
}
