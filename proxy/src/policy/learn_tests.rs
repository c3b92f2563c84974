use std::path::Path;

use super::*;

fn record(
    decision: &str,
    status: u16,
    reason: &str,
    user: &str,
    groups: &str,
    path: &str,
) -> String {
    serde_json::json!({
        "timestamp": "2026-11-29T10:00:00.000001Z", "level": "INFO", "listener": "ctrl",
        "client": "127.0.0.1", "method": "GET", "path": path, "status": status,
        "duration_ms": 1.5, "user": user, "groups": groups, "permission": "",
        "decision": decision, "reason": reason, "vpce": "", "target": "certgate::access"
    })
    .to_string()
}

fn refusal(line: &str) -> Refusal {
    match parse_line(line) {
        Line::Refusal(r) => r,
        other => panic!("not a refusal: {other:?} for {line}"),
    }
}

#[test]
fn ids_are_generalised() {
    let cases = [
        ("/api/v1/vm/42", "/api/v1/vm/{id}"),
        (
            "/registry/vm/c0847bc9-5d2d-4dbc-ba6a-240f7ff08032/tags",
            "/registry/vm/{id}/tags",
        ),
        // Anka writes ids that are UUID-shaped without being RFC 4122 (version nibble 6 here).
        ("/x/C2AF6080-3AE3-4CD3-64E5-2193F31B9AA5", "/x/{id}"),
        ("/files/9f86d081884c7d65.ank", "/files/{id}"),
        (
            "/files/c0847bc9-5d2d-4dbc-ba6a-240f7ff08032.yaml",
            "/files/{id}",
        ),
        ("/blob/0123456789abcdef0123456789abcdef", "/blob/{id}"),
        ("/blob/deadbeefcafe", "/blob/{id}"),
        ("/a/*/b", "/a/{id}/b"),
        ("/a/", "/a"),
        ("/", "/"),
    ];
    for (path, want) in cases {
        assert_eq!(generalize(path), want, "{path}");
    }
    // Words, versions and short hex stay literal.
    for keep in [
        "api",
        "v1",
        "deadbee",
        "abc123",
        "1234567g",
        "status.json",
        "v2",
        "a-b-c-d-e",
    ] {
        assert!(!is_id_like(keep), "{keep}");
    }
}

#[test]
fn only_policy_refusals_are_taken() {
    let r = refusal(&record(
        "deny",
        403,
        "GET /api/v1/vm requires one of: list_vms",
        "jenkins",
        "ci,build",
        "/api/v1/vm",
    ));
    assert_eq!(
        r.grantees,
        vec![Grantee::Group("ci".into()), Grantee::Group("build".into())]
    );
    assert_eq!(r.user.as_deref(), Some("jenkins"));
    let r = refusal(&record(
        "audit_deny",
        200,
        "GET /x/7 is covered by no permission",
        "bot",
        "",
        "/x/7",
    ));
    assert_eq!(r.grantees, vec![Grantee::User("bot".into())]);
    assert_eq!(r.route.text(), "GET /x/{id}");
    let r = refusal(&record("deny", 401, "no certificate", "", "", "/livez"));
    assert_eq!(r.grantees, vec![Grantee::Anonymous]);
    let r = refusal(&record(
        "audit_deny",
        204,
        "no certificate",
        "",
        "",
        "/livez",
    ));
    assert_eq!(r.grantees, vec![Grantee::Anonymous]);

    for ignored in [
        record("allow", 200, "", "jenkins", "ci", "/api/v1/vm"),
        record("deny", 400, "encoded slash in path", "", "", "/a"),
        record("deny", 401, "certificate revoked", "", "", "/a"),
        record("audit_deny", 200, "unknown CA", "", "", "/a"),
        record("deny", 502, "connection refused", "jenkins", "ci", "/a"),
        // A certificate with neither group nor CN cannot be granted anything.
        record(
            "deny",
            403,
            "GET /a is covered by no permission",
            "",
            "",
            "/a",
        ),
    ] {
        assert_eq!(parse_line(&ignored), Line::Ignored, "{ignored}");
    }
    for other in [
        "plain text line",
        "",
        r#"{"timestamp":"x","level":"WARN","fields":{"message":"audit"},"target":"certgate::proxy"}"#,
        r#"{"level":"INFO","message":"reloaded","target":"certgate::reload"}"#,
        "{not json",
    ] {
        assert_eq!(parse_line(other), Line::NotAccess, "{other}");
    }
}

#[test]
fn container_log_wrappers_are_unwrapped() {
    let inner = record("deny", 401, "no certificate", "", "", "/livez");
    let cri = format!("2026-11-29T10:00:00.1Z stdout F {inner}");
    assert!(matches!(parse_line(&cri), Line::Refusal(_)));
    let docker = serde_json::json!({"log": format!("{inner}\n"), "stream": "stderr"}).to_string();
    assert!(matches!(parse_line(&docker), Line::Refusal(_)));
}

#[test]
fn groups_field_splits_on_unescaped_commas() {
    assert_eq!(
        split_groups("ci,Acme\\, Inc.,caf\\C3\\A9"),
        ["ci", "Acme, Inc.", "café"]
    );
    assert_eq!(split_groups(""), Vec::<String>::new());
    assert_eq!(split_groups("a\\\\b"), ["a\\b"]);
}

const POLICY: &str = r#"
permissions:
  everything: ["* /api/**"]
  list_vms: ["GET /api/v1/vm"]
  node: ["GET /api/v1/node/{id}"]
  health: ["GET /livez"]
groups:
  admins: [everything]
  readers: [list_vms]
anonymous: []
"#;

fn learned(lines: &[String], min: u64) -> Proposal {
    let policy = Policy::from_yaml(POLICY, Path::new("p.yaml")).unwrap();
    let mut l = Learner::default();
    for line in lines {
        if let Line::Refusal(r) = parse_line(line) {
            l.add(&r);
        }
    }
    propose(&l, Some(&policy), min)
}

#[test]
fn existing_permissions_are_reused_narrowest_first() {
    let p = learned(
        &[
            record(
                "deny",
                403,
                "GET /api/v1/node/3 requires one of: everything, node",
                "n1",
                "nodes",
                "/api/v1/node/3",
            ),
            record(
                "deny",
                403,
                "GET /api/v1/node/4 requires one of: everything, node",
                "n2",
                "nodes",
                "/api/v1/node/4",
            ),
            record("deny", 401, "no certificate", "", "", "/livez"),
            record(
                "deny",
                403,
                "GET /registry/push is covered by no permission",
                "n1",
                "nodes",
                "/registry/push",
            ),
            // readers hold list_vms already (granted after the log was written): nothing to do.
            record(
                "deny",
                403,
                "GET /api/v1/vm requires one of: everything, list_vms",
                "r",
                "readers",
                "/api/v1/vm",
            ),
        ],
        1,
    );
    assert!(p.permissions.len() == 1 && p.permissions[0].name == "learned_get_registry_push");
    assert_eq!(p.permissions[0].route, "GET /registry/push");
    let grants: Vec<(Grantee, &str, bool)> = p
        .grants
        .iter()
        .map(|g| (g.grantee.clone(), g.permission.as_str(), g.learned))
        .collect();
    assert_eq!(
        grants,
        vec![
            (Grantee::Group("nodes".into()), "node", false),
            (
                Grantee::Group("nodes".into()),
                "learned_get_registry_push",
                true
            ),
            (Grantee::Anonymous, "health", false),
        ]
    );
    let node = &p.grants[0].routes[0];
    assert_eq!(node.0, "GET /api/v1/node/{id}");
    assert_eq!(node.1.count, 2);
    assert_eq!(node.1.users.iter().collect::<Vec<_>>(), ["n1", "n2"]);
    assert_eq!(p.already_allowed, 1);
}

#[test]
fn min_count_leaves_rare_pairs_out() {
    let line = |p: &str| {
        record(
            "deny",
            403,
            "GET /x is covered by no permission",
            "u",
            "g",
            p,
        )
    };
    let lines = vec![line("/a/1"), line("/a/2"), line("/b")];
    let p = learned(&lines, 2);
    assert_eq!(p.permissions.len(), 1);
    assert_eq!(p.permissions[0].route, "GET /a/{id}");
    assert_eq!(p.below_min, 1);
    assert_eq!(learned(&lines, 3).grants.len(), 0);
}

#[test]
fn first_and_last_follow_time_not_file_order() {
    let mut l = Learner::default();
    for t in [
        "2026-11-29T10:00:05Z",
        "2026-11-29T09:59:59.5Z",
        "2026-11-29T10:00:01Z",
    ] {
        let mut v: serde_json::Value =
            serde_json::from_str(&record("deny", 401, "no certificate", "", "", "/a")).unwrap();
        v["timestamp"] = t.into();
        if let Line::Refusal(r) = parse_line(&v.to_string()) {
            l.add(&r);
        }
    }
    let seen = l.pairs.values().next().unwrap();
    assert_eq!(seen.first.as_deref(), Some("2026-11-29T09:59:59.5Z"));
    assert_eq!(seen.last.as_deref(), Some("2026-11-29T10:00:05Z"));
}

#[test]
fn learned_names_are_valid_and_unique() {
    let taken: BTreeSet<String> = ["learned_get_a_id".to_string()].into();
    let key = |m: &str, p: &str| RouteKey {
        method: m.into(),
        path: p.into(),
    };
    assert_eq!(
        learned_name(&key("GET", "/a/{id}"), &taken),
        "learned_get_a_id_2"
    );
    assert_eq!(learned_name(&key("POST", "/"), &taken), "learned_post_root");
    assert_eq!(
        learned_name(&key("PUT", "/Käse/%20x"), &taken),
        "learned_put_k_se_20x"
    );
}
