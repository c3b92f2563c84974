use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;
use crate::policy::learn::{NewPermission, Proposal};
use crate::policy::Policy;

fn seen(n: u64, users: &[&str]) -> Seen {
    Seen {
        count: n,
        users: users.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>(),
        first: Some("2026-11-29T10:00:00Z".into()),
        last: Some("2026-11-29T11:00:00Z".into()),
    }
}

fn grant(who: Grantee, perm: &str, learned: bool, route: &str, users: &[&str]) -> Grant {
    Grant {
        grantee: who,
        permission: perm.into(),
        learned,
        routes: vec![(route.into(), seen(3, users))],
    }
}

fn proposal() -> Proposal {
    Proposal {
        permissions: vec![NewPermission {
            name: "learned_get_registry_files_id".into(),
            route: "GET /registry/files/{id}".into(),
            seen: seen(5, &["node1", "node2"]),
        }],
        grants: vec![
            grant(
                Grantee::Group("build-nodes".into()),
                "learned_get_registry_files_id",
                true,
                "GET /registry/files/{id}",
                &["node1"],
            ),
            grant(
                Grantee::Group("ci-tools".into()),
                "revert",
                false,
                "DELETE /registry/revert",
                &["jenkins"],
            ),
            grant(
                Grantee::Group("Acme, Inc.".into()),
                "index",
                false,
                "GET /",
                &["x"],
            ),
            grant(
                Grantee::User("solo".into()),
                "delete_vm",
                false,
                "DELETE /registry/vm",
                &["solo"],
            ),
            grant(
                Grantee::Anonymous,
                "status",
                false,
                "GET /registry/status",
                &[],
            ),
        ],
        ..Default::default()
    }
}

fn registry_policy() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/anka-registry.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn parse(text: &str) -> Mapping {
    match serde_yaml_ng::from_str(text).unwrap() {
        Value::Mapping(m) => m,
        other => panic!("not a mapping: {other:?}"),
    }
}

#[test]
fn splice_keeps_every_comment_and_merges_exactly() {
    let (path, text) = registry_policy();
    let p = proposal();
    let merged = merge_text(&text, &p).expect("block layout is handled");
    assert_eq!(
        Value::Mapping(parse(&merged)),
        Value::Mapping(expected(&parse(&text), &p))
    );
    for line in text.lines().filter(|l| l.trim_start().starts_with('#')) {
        assert!(merged.contains(line), "comment lost: {line}\n{merged}");
    }
    assert!(merged.contains("  # learned GET /registry/files/{id}: 3 requests by node1; first 2026-11-29T10:00:00Z, last 2026-11-29T11:00:00Z\n"));
    let policy = Policy::from_yaml(&merged, &path).expect("merged policy loads");
    let orgs = ["ci-tools".to_string()];
    let ci = crate::policy::Principal::Certificate {
        user: None,
        organizations: &orgs,
        org_units: &[],
    };
    assert!(policy
        .decide(&ci, "DELETE", "/registry/revert")
        .is_allowed());
    assert!(policy
        .decide(
            &crate::policy::Principal::Anonymous,
            "GET",
            "/registry/status"
        )
        .is_allowed());
}

#[test]
fn flow_style_falls_back_to_a_canonical_policy() {
    let text = "{permissions: {a: [\"GET /a\"]}, groups: {g: [a]}, mode: audit}\n";
    let mut p = proposal();
    p.grants
        .retain(|g| g.grantee != Grantee::User("solo".into()));
    p.grants
        .iter_mut()
        .for_each(|g| g.permission = "learned_get_registry_files_id".into());
    assert!(merge_text(text, &p).is_none());
    let out = canonical(&parse(text), &p);
    assert_eq!(
        Value::Mapping(parse(&out)),
        Value::Mapping(expected(&parse(text), &p))
    );
    let policy = Policy::from_yaml(&out, Path::new("p.yaml")).expect(&out);
    assert_eq!(policy.mode(), crate::policy::Mode::Audit);
}

#[test]
fn one_line_lists_and_empty_sections_become_block_lists() {
    let text = "permissions: {}\ngroups:\n  g: [a]   # keep me\n  h:\n  - b\nanonymous: []\n";
    let p = Proposal {
        permissions: vec![NewPermission {
            name: "n".into(),
            route: "GET /n".into(),
            seen: seen(1, &[]),
        }],
        grants: vec![
            grant(Grantee::Group("g".into()), "n", true, "GET /n", &["u"]),
            grant(Grantee::Group("h".into()), "n", true, "GET /n", &["u"]),
            grant(Grantee::Anonymous, "n", true, "GET /n", &[]),
        ],
        ..Default::default()
    };
    let out = merge_text(text, &p).unwrap();
    assert_eq!(
        Value::Mapping(parse(&out)),
        Value::Mapping(expected(&parse(text), &p)),
        "{out}"
    );
    assert!(out.contains("# keep me"));
}

#[test]
fn names_from_certificates_cannot_inject_yaml() {
    let evil = "x\n  admins: [\"*\"]";
    let p = Proposal {
        grants: vec![grant(
            Grantee::Group(evil.into()),
            "p",
            false,
            "GET /a",
            &[evil],
        )],
        ..Default::default()
    };
    let out = canonical(&Mapping::new(), &p);
    let m = parse(&out);
    assert_eq!(
        Value::Mapping(m),
        Value::Mapping(expected(&Mapping::new(), &p)),
        "{out}"
    );
    assert!(out
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .all(|l| !l.contains('\n')));
}

#[test]
fn quoting() {
    assert_eq!(quote("list_vms"), "list_vms");
    assert_eq!(quote("ci-tools"), "ci-tools");
    for q in ["*", "yes", "Null", "a b", "1abc", "a:b", "", "GET /x"] {
        assert!(quote(q).starts_with('"'), "{q}");
    }
}
