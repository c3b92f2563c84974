//! `explain`: the same decision, with its working shown.

use super::*;

#[test]
fn explain_allow() {
    let p = policy(CONTRACT_EXAMPLE);
    let c = Cert::new("Jenkins", &["MyOrgName", "Unknown"]);
    let e = p.explain(&c.p(), "GET", "/api/v1/vm");
    assert_eq!(e.groups, strings(&["MyOrgName", "Unknown"]));
    assert_eq!(e.user.as_deref(), Some("Jenkins"));
    assert_eq!(e.held, strings(&["list_vms", "start_vm", "get_status"]));
    assert_eq!(
        e.held_from,
        vec![
            ("list_vms".to_string(), "group MyOrgName".to_string()),
            ("list_vms".to_string(), "user Jenkins".to_string()),
            ("start_vm".to_string(), "group MyOrgName".to_string()),
            ("get_status".to_string(), "authenticated".to_string()),
        ]
    );
    assert_eq!(e.covering, strings(&["list_vms"]));
    assert_eq!(
        e.covering_routes,
        vec![("list_vms".to_string(), "GET /api/v1/vm".to_string())]
    );
    assert!(e.allowed);
    assert_eq!(e.permission.as_deref(), Some("list_vms"));
    assert_eq!(
        e.rule,
        "allowed: permission \"list_vms\" (held through group MyOrgName) covers GET /api/v1/vm by its route \"GET /api/v1/vm\""
    );
}

#[test]
fn explain_star_and_denials() {
    let p = policy(CONTRACT_EXAMPLE);
    let d = Cert::new("alice", &["DevOps"]);
    let e = p.explain(&d.p(), "GET", "/api/v1/logs/x");
    assert!(e
        .held_from
        .contains(&("view_logs".to_string(), "group DevOps (*)".to_string())));
    assert!(e
        .held_from
        .contains(&("get_status".to_string(), "authenticated".to_string())));
    assert!(e
        .held_from
        .contains(&("get_status".to_string(), "group DevOps (*)".to_string())));
    assert_eq!(e.held.len(), 4);
    assert!(e.rule.contains("group DevOps (*)"), "{}", e.rule);

    let e = p.explain(&d.p(), "DELETE", "/api/v1/vm");
    assert!(!e.allowed && e.permission.is_none() && e.covering.is_empty());
    assert_eq!(
        e.rule,
        "denied (403 Permission Denied): DELETE /api/v1/vm is covered by no permission; whatever no permission covers is denied"
    );

    let c = Cert::new("carol", &[]);
    let e = p.explain(&c.p(), "POST", "/api/v1/vm");
    assert_eq!(e.covering, strings(&["start_vm"]));
    assert_eq!(
        e.rule,
        "denied (403 Permission Denied): POST /api/v1/vm requires one of: start_vm; user \"carol\" (no groups) holds none of them (it holds: get_status)"
    );

    let e = p.explain(&Principal::Anonymous, "GET", "/api/v1/status/");
    assert!(e.groups.is_empty() && e.user.is_none() && e.held.is_empty());
    assert_eq!(
        e.covering_routes,
        vec![(
            "get_status".to_string(),
            "GET|HEAD /api/v1/status".to_string()
        )]
    );
    assert_eq!(
        e.rule,
        "denied (401 Authentication Required): GET /api/v1/status/ requires one of: get_status; an anonymous request holds none of them (it holds: nothing)"
    );
}

#[test]
fn explain_agrees_with_decide_and_mentions_audit() {
    let p = policy(&CONTRACT_EXAMPLE.replace("mode: enforce", "mode: audit"));
    let c = Cert::new("x", &["MyOrgName"]);
    let e = p.explain(&c.p(), "GET", "/api/v1/logs");
    assert!(!e.allowed);
    assert!(e.rule.ends_with("logged as audit_deny"), "{}", e.rule);
    let e = p.explain(&c.p(), "GET", "/api/v1/vm");
    assert!(e.allowed && !e.rule.contains("audit"));
}

#[test]
fn explain_lists_every_matching_route() {
    let p = policy(
        "permissions:\n  a: [\"GET /x/*\", \"GET /x/**\", \"POST /x/y\"]\n  b: [\"* /x/y\"]\n",
    );
    let e = p.explain(&Principal::Anonymous, "GET", "/x/y");
    assert_eq!(
        e.covering_routes,
        vec![
            ("a".to_string(), "GET /x/*".to_string()),
            ("a".to_string(), "GET /x/**".to_string()),
            ("b".to_string(), "* /x/y".to_string()),
        ]
    );
}
