use std::collections::BTreeSet;
use std::path::Path;

use super::log::*;
use super::propose::*;
use crate::policy::route::Methods;
use crate::policy::{Policy, Route};
use crate::tls::verify::AuthFailure;

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
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/x/7"));
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
        // A reason about another request than the record's.
        record(
            "deny",
            403,
            "GET /b is covered by no permission",
            "u",
            "g",
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

fn learner(lines: &[String]) -> Learner {
    let mut l = Learner::default();
    for line in lines {
        if let Line::Refusal(r) = parse_line(line) {
            l.add(&r);
        }
    }
    l
}

fn learned_with(policy: &str, lines: &[String], opts: Options) -> Proposal {
    let policy = Policy::from_yaml(policy, Path::new("p.yaml")).unwrap();
    propose(&learner(lines), Some(&policy), &opts)
}

fn learned(lines: &[String], min: u64) -> Proposal {
    let opts = Options {
        min_count: min,
        anonymous: true,
    };
    learned_with(POLICY, lines, opts)
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
        let reason = format!("GET {p} is covered by no permission");
        record("deny", 403, &reason, "u", "g", p)
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

/// A refusal of `method path` as the proxy logs it, by `user` of `groups` (anonymous when empty).
fn refused(method: &str, path: &str, user: &str, groups: &str) -> String {
    let (status, reason) = if user.is_empty() {
        (401, "no certificate".to_string())
    } else {
        (403, format!("{method} {path} is covered by no permission"))
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&record("audit_deny", status, &reason, user, groups, path)).unwrap();
    v["method"] = method.into();
    v.to_string()
}

#[test]
fn reasons_are_the_ones_the_proxy_writes() {
    use crate::pki::{self, CertSpec};
    use crate::policy::{authorize, Verdict};
    use crate::state::asker::asker;
    use crate::tls::identity::Identity;
    let mut ca = CertSpec::with_subject(&[("CN", "Learn Test CA")]);
    ca.is_ca = true;
    ca.eku = false;
    let ca = pki::self_signed_ca(&ca).unwrap();
    let leaf = pki::issue(&CertSpec::with_subject(&[("O", "g"), ("CN", "u")]), &ca).unwrap();
    let id = Identity::from_x509(&leaf.cert).unwrap();
    let policy = Policy::from_yaml(POLICY, Path::new("p.yaml")).unwrap();
    // Anonymous (401), covered but not held (403 "requires one of"), covered by none (403).
    let cases = [
        (Err(AuthFailure::NoCertificate), "/api/v1/vm", 401),
        (Ok(&id), "/api/v1/vm", 403),
        (Ok(&id), "/nowhere", 403),
    ];
    for (who, path, want) in cases {
        let Verdict::Deny(refused) = authorize(asker(who), Some(&policy), false, "GET", path)
        else {
            panic!("{path} is not denied");
        };
        let (status, reason) = (refused.status(), refused.reason());
        assert_eq!(status, want);
        let line = record("deny", status, reason, "u", "g", path);
        let r = refusal(&line);
        let kind = refusal_kind("GET", path, reason);
        if status == 401 {
            assert_eq!(kind, Some(RefusalKind::NoCertificate), "{reason}");
            assert_eq!(r.grantees, vec![Grantee::Anonymous]);
        } else {
            assert_eq!(kind, Some(RefusalKind::NotPermitted), "{reason}");
            assert_eq!(r.grantees, vec![Grantee::Group("g".into())]);
        }
    }
    // The other 401 reasons are certificate failures: never learned.
    let expired = authorize(
        asker(Err(AuthFailure::Expired)),
        Some(&policy),
        false,
        "GET",
        "/a",
    );
    let Verdict::Deny(refused) = expired else {
        panic!("not denied")
    };
    assert_eq!(refusal_kind("GET", "/a", refused.reason()), None);
}

#[test]
fn odd_methods_and_route_syntax_in_paths_are_skipped() {
    let lines: Vec<String> = [
        ("*", "/api/v1/vm"),
        ("GET|DELETE|PUT", "/api/v1/vm"),
        ("get", "/api/v1/vm"),
        ("M-SEARCH", "/api/v1/vm"),
        ("POST", "/*/*/*/*"),
        ("DELETE", "/a/**"),
        ("POST", "/admin/api/v1/permission/group/{x}/resources"),
        ("GET", "/a/x*y"),
        ("GET", "/a/{"),
        ("GET", "/ok/1"),
    ]
    .iter()
    .map(|(m, p)| refused(m, p, "n1", "nodes"))
    .collect();
    let l = learner(&lines);
    assert_eq!(l.refusals, 10);
    assert_eq!(l.bad_method.count, 4);
    assert_eq!(
        l.bad_method.examples,
        ["*", "GET|DELETE|PUT", "get", "M-SEARCH"]
    );
    assert_eq!(l.route_syntax.count, 5);
    assert_eq!(l.routes.len(), 1);
    let p = propose(&l, None, &Options::default());
    let routes: Vec<&str> = p.permissions.iter().map(|n| n.route.as_str()).collect();
    assert_eq!(routes, ["GET /ok/{id}"]);
    assert!(p.unroutable.is_empty(), "{:?}", p.unroutable);
}

/// The controller's shape: an `{id}` after `/api/v1` would reach list_vms, terminate_vm, ...
const CONTROLLER: &str = r#"
permissions:
  list_vms: ["GET /api/v1/vm"]
  terminate_vm: ["DELETE /api/v1/vm"]
  delete_node: ["DELETE /api/v1/node"]
  nodes: ["GET /api/v1/node/{id}"]
  queue: ["GET|POST /queue/v1/**"]
  group_resources: ["POST /admin/group/{name}/resources"]
groups:
  build-nodes: [queue]
anonymous: []
"#;

#[test]
fn generalised_routes_never_reach_into_existing_permissions() {
    let lines = vec![
        refused("DELETE", "/api/v1/deadbeef", "n1", "build-nodes"),
        refused("DELETE", "/api/v1/cafebabe", "n2", "build-nodes"),
        refused("GET", "/files/1", "n1", "build-nodes"),
        refused("GET", "/files/22", "n1", "build-nodes"),
        // Under a `*` route of nodes: the existing permission covers the whole {id} route.
        refused("GET", "/api/v1/node/42", "n1", "build-nodes"),
        // `/queue/v1/**` covers it: reused, not learned.
        refused("POST", "/queue/v1/7", "n1", "ci"),
    ];
    let p = learned_with(CONTROLLER, &lines, Options::default());
    let routes: Vec<&str> = p.permissions.iter().map(|n| n.route.as_str()).collect();
    assert_eq!(
        routes,
        [
            "DELETE /api/v1/cafebabe",
            "DELETE /api/v1/deadbeef",
            "GET /files/{id}"
        ]
    );
    assert_eq!(
        p.kept_literal,
        [KeptLiteral {
            route: "DELETE /api/v1/{id}".into(),
            permissions: vec!["terminate_vm".into(), "delete_node".into()],
        }]
    );
    let held: Vec<(&Grantee, &str)> = p
        .grants
        .iter()
        .map(|g| (&g.grantee, g.permission.as_str()))
        .collect();
    let nodes = Grantee::Group("build-nodes".into());
    assert_eq!(
        held,
        [
            (&nodes, "nodes"),
            (&nodes, "learned_delete_api_v1_cafebabe"),
            (&nodes, "learned_delete_api_v1_deadbeef"),
            (&nodes, "learned_get_files_id"),
            (&Grantee::Group("ci".into()), "queue"),
        ]
    );
    // Whatever was proposed, no learned route matches a request of another permission's route.
    let policy = Policy::from_yaml(CONTROLLER, Path::new("p.yaml")).unwrap();
    for np in &p.permissions {
        let learned = Route::parse(&np.route).unwrap();
        for (name, other) in policy.routes() {
            let Methods::List(m) = learned.methods() else {
                panic!("{}", np.route)
            };
            assert!(
                !overlaps(&learned, &m[0], other),
                "{} reaches {name}",
                np.route
            );
        }
    }
    // Without a policy there is nothing to reach into.
    let alone = propose(&learner(&lines), None, &Options::default());
    assert!(alone
        .permissions
        .iter()
        .any(|n| n.route == "DELETE /api/v1/{id}"));
}

#[test]
fn overlap_of_routes() {
    let r = |s: &str| Route::parse(s).unwrap();
    let yes = [
        ("GET /api/v1/{id}", "GET /api/v1/vm"),
        ("GET /api/v1/{id}", "GET|HEAD /api/v1/*"),
        ("GET /api/v1/{id}", "* /api/**"),
        ("GET /api/v1/{id}", "GET /api/v1/{id}/**"),
        ("GET /", "GET /**"),
        ("GET /a/{id}/b", "GET /a/x/*"),
    ];
    let no = [
        ("GET /api/v1/{id}", "POST /api/v1/vm"),
        ("GET /api/v1/{id}", "GET /api/v2/vm"),
        ("GET /api/v1/{id}", "GET /api/v1"),
        ("GET /api/v1/{id}", "GET /api/v1/vm/x"),
        ("GET /a/{id}/b", "GET /a/x/c"),
        ("GET /", "GET /a/**"),
    ];
    for (a, b) in yes {
        assert!(overlaps(&r(a), "GET", &r(b)), "{a} / {b}");
    }
    for (a, b) in no {
        assert!(!overlaps(&r(a), "GET", &r(b)), "{a} / {b}");
    }
}

#[test]
fn anonymous_refusals_are_granted_only_when_asked() {
    let lines = vec![
        refused("GET", "/api/v1/1", "", ""),
        refused("DELETE", "/api/v1/2", "", ""),
        refused("GET", "/livez", "", ""),
        refused("GET", "/livez", "n1", "build-nodes"),
    ];
    let p = learned_with(CONTROLLER, &lines, Options::default());
    assert!(p.grants.iter().all(|g| g.grantee != Grantee::Anonymous));
    let listed: Vec<&str> = p.anonymous.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(listed, ["GET /api/v1/1", "DELETE /api/v1/2", "GET /livez"]);
    // The learned permission counts only the requests it was learned from.
    assert_eq!(p.permissions.len(), 1);
    assert_eq!(p.permissions[0].seen.count, 1);

    let asked = Options {
        anonymous: true,
        ..Options::default()
    };
    let p = learned_with(CONTROLLER, &lines, asked);
    assert!(p.anonymous.is_empty());
    let anonymous: Vec<&str> = p
        .grants
        .iter()
        .filter(|g| g.grantee == Grantee::Anonymous)
        .flat_map(|g| g.routes.iter().map(|(r, _)| r.as_str()))
        .collect();
    // Even when asked for, the {id} form stays out of list_vms and terminate_vm.
    assert_eq!(
        anonymous,
        ["GET /api/v1/1", "DELETE /api/v1/2", "GET /livez"]
    );
    assert_eq!(
        p.permissions
            .iter()
            .find(|n| n.route == "GET /livez")
            .map(|n| n.seen.count),
        Some(2)
    );
}

#[test]
fn comments_keep_up_to_three_requested_paths() {
    let lines: Vec<String> = ["/files/1", "/files/2/", "/files/2", "/files/3", "/files/4"]
        .iter()
        .map(|p| refused("GET", p, "n1", "g"))
        .collect();
    let p = propose(&learner(&lines), None, &Options::default());
    let seen = &p.grants[0].routes[0].1;
    assert_eq!(seen.count, 5);
    assert_eq!(seen.paths, ["/files/1", "/files/2/", "/files/2"]);
    assert!(seen.more_paths);
    assert_eq!(p.permissions[0].seen.paths, seen.paths);
}

#[test]
fn users_are_not_proposed_by_cn_when_users_from_is_a_san() {
    let lines = vec![
        refused("GET", "/reports", "builder", ""),
        refused("GET", "/reports", "n1", "build-nodes"),
    ];
    let by_cn = "permissions:\n  a: [\"GET /a\"]\n";
    let p = learned_with(by_cn, &lines, Options::default());
    assert!(p
        .grants
        .iter()
        .any(|g| g.grantee == Grantee::User("builder".into())));
    assert_eq!(p.users_not_by_cn, 0);
    let by_uri = "permissions:\n  a: [\"GET /a\"]\nusers_from: uri_san\n";
    let p = learned_with(by_uri, &lines, Options::default());
    assert!(p
        .grants
        .iter()
        .all(|g| !matches!(g.grantee, Grantee::User(_))));
    assert!(p
        .grants
        .iter()
        .any(|g| g.grantee == Grantee::Group("build-nodes".into())));
    assert_eq!(p.users_not_by_cn, 1);
}
