//! The YAML `learn` writes: the fragment, the canonical policy, `--merged` keeping the
//! policy's comments, quoting of hostile names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::cli::learn::log::Grantee;
use crate::cli::learn::propose::{Grant, NewPermission, Proposal, Seen};
use crate::cli::learn::splice::merge_text;
use crate::cli::learn::yaml::*;
use crate::policy::Policy;

fn seen(n: u64, users: &[&str]) -> Seen {
    Seen {
        count: n,
        users: users.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>(),
        first: Some("2026-11-29T10:00:00Z".into()),
        last: Some("2026-11-29T11:00:00Z".into()),
        ..Default::default()
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
        sans: Default::default(),
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
    for q in [
        "*", "yes", "Null", "a b", "1abc", "a:b", "", "GET /x", "-a", "#a",
    ] {
        assert!(quote(q).starts_with('"'), "{q}");
    }
    assert_eq!(quote("a\u{2028}b\u{85}\"c\\"), r#""a\u2028b\x85\"c\\""#);
    assert_eq!(quote("\u{1F600}\u{E0001}"), "\"\u{1F600}\\U000E0001\"");
}

/// Strings a client can put in a path, a CN or an O value, and that YAML reads specially.
fn hostile() -> Vec<String> {
    let mut out: Vec<String> = [
        "plain",
        "",
        " lead and trail ",
        "\"quoted\" and 'single'",
        "back\\slash\\u2028",
        "# not a comment",
        "a #b",
        "-dash",
        "- item",
        "key: value",
        "a:b",
        "? complex",
        "[flow, list]",
        "{flow: map}",
        "&anchor *alias !tag %directive @at `tick` |pipe >fold",
        "yes",
        "~",
        "0x1F",
        "1e3",
        ".inf",
        "---",
        "...",
        "caf\u{e9} \u{4e2d}\u{6587} \u{1F600}",
        "nbsp\u{a0}here",
        "line\nbreak",
        "cr\rlf\r\n",
        "nel\u{85}x",
        "ls\u{2028}x",
        "ps\u{2029}x",
        "bom\u{feff}x",
        "tab\tx",
        "nul\u{0}x\u{1b}[31m\u{7f}\u{9f}",
        "rlo\u{202e}txt.exe",
        "\u{fffe}\u{ffff}\u{e0001}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every character of the first two planes, and the odd ones above, one string each.
    out.extend(
        (0u32..0x2_0000)
            .chain([0xE_0001, 0xF_FFFD, 0x10_FFFF])
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b")),
    );
    // Block mapping keys must be unique (`a:b` is in both lists).
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_scalar_reads_back_as_written_in_every_place_it_is_written() {
    let all = hostile();
    for s in &all {
        let q = quote(s);
        assert!(
            !q.contains(['\n', '\r']) && !q.chars().any(needs_escape),
            "{s:?} -> {q:?}"
        );
    }
    // One document per context, read by the same parser `certgate check` uses.
    let block_keys: String = all
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}: {i}\n", quote(s)))
        .collect();
    let block_items: String = all.iter().map(|s| format!("- {}\n", quote(s))).collect();
    let flow: Vec<String> = all.iter().map(|s| quote(s)).collect();
    let flow = format!("k: [{}]\n", flow.join(", "));
    let keys: Mapping = serde_yaml_ng::from_str(&block_keys).unwrap();
    let want_keys: Mapping = all
        .iter()
        .enumerate()
        .map(|(i, s)| (Value::String(s.clone()), Value::Number(i.into())))
        .collect();
    assert!(keys == want_keys, "block keys differ");
    let want: Vec<Value> = all.iter().cloned().map(Value::String).collect();
    let items: Vec<Value> = serde_yaml_ng::from_str(&block_items).unwrap();
    assert!(items == want, "block items differ");
    let flow: Mapping = serde_yaml_ng::from_str(&flow).unwrap();
    assert!(
        flow.get("k") == Some(&Value::Sequence(want)),
        "flow items differ"
    );
}

#[test]
fn comments_end_where_they_are_meant_to() {
    let all = hostile();
    let doc: String = all
        .iter()
        .enumerate()
        .map(|(i, s)| format!("k{i}: {i}  # {}\n# {}\n", comment_safe(s), comment_safe(s)))
        .collect();
    let m: Mapping = serde_yaml_ng::from_str(&doc).unwrap();
    assert_eq!(m.len(), all.len());
    assert_eq!(comment_safe("a\\u2028b\u{2028}"), "a\\\\u2028b\\u2028");
}

#[test]
fn hostile_names_and_routes_load_as_a_policy() {
    let weird = [
        "ls\u{2028}  admins: [\"*\"]",
        "nel\u{85}#x",
        "q\"u'o:te",
        "- dash",
    ];
    let routes = [
        "GET /p0/\"q\"",
        "GET /p1/'s'",
        "GET /p2/a:b",
        "GET /p3/-x,y[z]",
    ];
    let mut grants = Vec::new();
    let mut permissions = Vec::new();
    for (i, w) in weird.iter().enumerate() {
        let route = routes[i].to_string();
        let mut s = seen(1, &[*w]);
        s.paths = vec![format!("/p{i}/{w}"), w.to_string()];
        permissions.push(NewPermission {
            name: format!("learned_get_p{i}"),
            route: route.clone(),
            seen: s.clone(),
        });
        grants.push(Grant {
            grantee: Grantee::Group(w.to_string()),
            permission: format!("learned_get_p{i}"),
            learned: true,
            routes: vec![(route.clone(), s.clone())],
        });
        grants.push(Grant {
            grantee: Grantee::User(w.to_string()),
            permission: format!("learned_get_p{i}"),
            learned: true,
            routes: vec![(route, s)],
        });
    }
    let p = Proposal {
        permissions,
        grants,
        ..Default::default()
    };
    let (path, text) = registry_policy();
    let merged = merge_text(&text, &p).expect("block layout is handled");
    assert_eq!(
        Value::Mapping(parse(&merged)),
        Value::Mapping(expected(&parse(&text), &p)),
        "{merged}"
    );
    let policy = Policy::from_yaml(&merged, &path).expect(&merged);
    let fragment = canonical(&Mapping::new(), &p);
    assert_eq!(
        Value::Mapping(parse(&fragment)),
        Value::Mapping(expected(&Mapping::new(), &p)),
        "{fragment}"
    );
    // Only the group named with a line separator got anything, and not `admins`.
    let orgs = [weird[0].to_string()];
    let who = crate::policy::Principal::Certificate {
        user: None,
        organizations: &orgs,
        org_units: &[],
        sans: Default::default(),
    };
    let nobody = crate::policy::Principal::Certificate {
        user: None,
        organizations: &[],
        org_units: &[],
        sans: Default::default(),
    };
    let base = policy.held_by(&nobody);
    let extra: Vec<&str> = policy
        .held_by(&who)
        .into_iter()
        .filter(|p| !base.contains(p))
        .collect();
    assert_eq!(extra, ["learned_get_p0"]);
    assert!(policy.decide(&who, "GET", "/p0/\"q\"").is_allowed());
    assert!(!merged.contains('\u{2028}') && !merged.contains('\u{85}'));
}
