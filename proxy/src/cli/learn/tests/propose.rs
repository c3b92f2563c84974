//! What `learn` proposes: generalised routes, reused and learned permissions, names, counts
//! and times, anonymous refusals, users named by SAN.

use std::collections::BTreeSet;
use std::path::Path;

use super::{record, refused, POLICY};
use crate::cli::learn::log::*;
use crate::cli::learn::propose::*;
use crate::policy::route::Methods;
use crate::policy::{Policy, Route};

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
