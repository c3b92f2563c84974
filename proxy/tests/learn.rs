//! `certgate policy learn` end to end: real mTLS traffic through certgate in audit mode writes
//! the JSON access log; `learn --merged` turns its refusals into grants; the merged policy
//! passes `certgate check`, and the same traffic is allowed in enforce mode while what the log
//! did not show stays refused.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
