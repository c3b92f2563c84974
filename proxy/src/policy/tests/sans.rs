//! `users_from` and `spiffe:` grants: decisions, explanations and load errors.

use super::*;

/// A certificate with a CN and SANs, no O/OU (the shared `Cert` has no SANs).
struct SanCert {
    cn: Option<String>,
    dns: Vec<String>,
    uri: Vec<String>,
    email: Vec<String>,
}

impl SanCert {
    fn uris(uri: &[&str]) -> SanCert {
        SanCert {
            cn: None,
            dns: Vec::new(),
            uri: strings(uri),
            email: Vec::new(),
        }
    }
    fn p(&self) -> Principal<'_> {
        Principal::Certificate {
            user: self.cn.as_deref(),
            organizations: &[],
            org_units: &[],
            sans: Sans {
                dns: &self.dns,
                uri: &self.uri,
                email: &self.email,
            },
        }
    }
}

const SPIFFE: &str = r#"
permissions:
  list_vms: ["GET /vms"]
  start_vm: ["POST /vms"]
  status:   ["GET /status"]
spiffe:
  "spiffe://example.org/ns/ci/sa/*": [list_vms]
  "spiffe://example.org/ns/ops/**": [list_vms, start_vm]
  spiffe://example.org: [status]
"#;

fn permission(p: &Policy, who: &SanCert, method: &str, path: &str) -> Option<String> {
    p.decide(&who.p(), method, path)
        .permission()
        .map(str::to_string)
}

#[test]
fn spiffe_grants_follow_the_pattern() {
    let p = policy(SPIFFE);
    assert_eq!(p.spiffe_count(), 3);
    let ci = SanCert::uris(&["spiffe://example.org/ns/ci/sa/builder"]);
    assert_eq!(
        permission(&p, &ci, "GET", "/vms").as_deref(),
        Some("list_vms")
    );
    assert_eq!(permission(&p, &ci, "POST", "/vms"), None);
    let ops = SanCert::uris(&["spiffe://example.org/ns/ops/sa/admin/extra"]);
    assert_eq!(
        permission(&p, &ops, "POST", "/vms").as_deref(),
        Some("start_vm")
    );
    let td = SanCert::uris(&["spiffe://example.org"]);
    assert_eq!(p.held_by(&td.p()), vec!["status"]);
    let other_td = SanCert::uris(&["spiffe://example.com/ns/ci/sa/builder"]);
    assert!(p.held_by(&other_td.p()).is_empty());
    // A non-spiffe URI SAN beside the SPIFFE ID changes nothing.
    let mixed = SanCert::uris(&["https://ci.example.org/", "spiffe://example.org/ns/ci/sa/b"]);
    assert_eq!(p.held_by(&mixed.p()), vec!["list_vms"]);
}

#[test]
fn several_or_invalid_spiffe_ids_get_no_spiffe_grant() {
    let p = policy(&format!("{SPIFFE}authenticated: [status]\n"));
    let two = SanCert::uris(&[
        "spiffe://example.org/ns/ci/sa/builder",
        "spiffe://example.org/ns/ops/sa/admin",
    ]);
    assert_eq!(p.held_by(&two.p()), vec!["status"]);
    let e = p.explain(&two.p(), "GET", "/vms");
    assert!(!e.allowed);
    assert_eq!(e.spiffe_id, None);
    let note = e.spiffe_note.unwrap_or_default();
    assert!(note.contains("2 spiffe URI SANs"), "{note}");
    for bad in [
        "spiffe://example.org/ns/ci/sa/../../ops/sa/x",
        "spiffe://example.org/ns/ci/sa/%62uilder",
        "spiffe://example.org/ns/ci/sa//b",
        "spiffe://example.org/ns/ci/sa/b?x=1",
        "spiffe://EXAMPLE.org/ns/ci/sa/b",
    ] {
        let c = SanCert::uris(&[bad]);
        assert_eq!(p.held_by(&c.p()), vec!["status"], "{bad}");
        let note = p.explain(&c.p(), "GET", "/vms").spiffe_note;
        assert!(
            note.as_deref()
                .is_some_and(|n| n.contains("not a valid SPIFFE ID")),
            "{bad}: {note:?}"
        );
    }
}

#[test]
fn users_from_picks_the_field_and_any_san_of_that_kind_grants() {
    let yaml = |from: &str| {
        format!(
            "permissions:\n  list_vms: [\"GET /vms\"]\n  start_vm: [\"POST /vms\"]\nusers_from: {from}\nusers:\n  jenkins: [list_vms]\n  \"spiffe://example.org/ci\": [list_vms]\n  ci.example.org: [start_vm]\n  ci@example.org: [start_vm]\n"
        )
    };
    let cert = SanCert {
        cn: Some("jenkins".into()),
        dns: strings(&["other.example.org", "ci.example.org"]),
        uri: strings(&["https://nope", "spiffe://example.org/ci"]),
        email: strings(&["ci@example.org"]),
    };
    let cn = policy(&yaml("cn"));
    assert_eq!(cn.users_from(), UsersFrom::Cn);
    assert_eq!(cn.held_by(&cert.p()), vec!["list_vms"]);
    let uri = policy(&yaml("uri_san"));
    assert_eq!(uri.held_by(&cert.p()), vec!["list_vms"]);
    let dns = policy(&yaml("dns_san"));
    assert_eq!(dns.held_by(&cert.p()), vec!["start_vm"]);
    let email = policy(&yaml("email"));
    assert_eq!(email.held_by(&cert.p()), vec!["start_vm"]);
    // With a SAN kind the CN no longer names the user.
    let cn_only = SanCert {
        cn: Some("jenkins".into()),
        dns: Vec::new(),
        uri: Vec::new(),
        email: Vec::new(),
    };
    assert!(uri.held_by(&cn_only.p()).is_empty());
    // Matching is exact: DNS names are not case-folded.
    let upper = SanCert {
        dns: strings(&["CI.example.org"]),
        ..cn_only
    };
    assert!(dns.held_by(&upper.p()).is_empty());
    let e = dns.explain(&cert.p(), "POST", "/vms");
    assert_eq!(
        e.user_keys,
        strings(&["other.example.org", "ci.example.org"])
    );
    assert!(
        e.rule.contains("user ci.example.org (dns_san)"),
        "{}",
        e.rule
    );
}

#[test]
fn explain_names_the_spiffe_pattern() {
    let p = policy(SPIFFE);
    let ci = SanCert::uris(&["spiffe://example.org/ns/ci/sa/builder"]);
    let e = p.explain(&ci.p(), "GET", "/vms");
    assert!(e.allowed);
    assert_eq!(
        e.spiffe_id.as_deref(),
        Some("spiffe://example.org/ns/ci/sa/builder")
    );
    assert!(
        e.rule
            .contains("held through spiffe pattern \"spiffe://example.org/ns/ci/sa/*\""),
        "{}",
        e.rule
    );
    let e = p.explain(&ci.p(), "POST", "/vms");
    assert!(!e.allowed);
    assert!(
        e.rule
            .contains("SPIFFE ID \"spiffe://example.org/ns/ci/sa/builder\""),
        "{}",
        e.rule
    );
}

#[test]
fn bad_spiffe_entries_are_load_errors_naming_file_key_and_fix() {
    let with = |key: &str, perms: &str| {
        format!("permissions:\n  list_vms: [\"GET /vms\"]\nspiffe:\n  \"{key}\": [{perms}]\n")
    };
    let cases = [
        (
            with("spiffe://Example.org/ns/*", "list_vms"),
            "upper case in the trust domain",
            "lower case",
        ),
        (
            with("spiffe://*.example.org/ns/x", "list_vms"),
            "wildcard in the trust domain",
            "exactly",
        ),
        (
            with("https://example.org/x", "list_vms"),
            "must start with spiffe://",
            "spiffe://trust-domain",
        ),
        (
            with("spiffe://example.org/**/x", "list_vms"),
            "only as the last segment",
            "end the pattern with **",
        ),
        (
            with("spiffe://example.org/ns/x", "list_vm"),
            "unknown permission \"list_vm\"",
            "known permissions include \"list_vms\"",
        ),
    ];
    for (yaml, problem, fix) in cases {
        let e = policy_err(&yaml);
        let text = e.to_string();
        assert!(text.starts_with("policies/x.yaml: spiffe."), "{text}");
        assert!(text.contains(problem) && text.contains(fix), "{text}");
        assert_eq!(e.line(), Some(4), "{text}");
    }
    let twice = "permissions:\n  a: [\"GET /a\"]\nspiffe:\n  spiffe://example.org/x: [a]\n  spiffe://example.org/x: [a]\n";
    let text = policy_err(twice).to_string();
    assert!(text.contains("listed twice"), "{text}");
    let e = policy_err("permissions:\n  a: [\"GET /a\"]\nusers_from: san\n");
    assert!(e.to_string().contains("users_from"), "{e}");
}

#[test]
fn an_included_file_cannot_hold_spiffe_grants() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let inc = dir.path().join("inc.yaml");
    let main = dir.path().join("main.yaml");
    fs_write(
        &inc,
        "permissions:\n  a: [\"GET /a\"]\nspiffe:\n  spiffe://example.org/x: [a]\n",
    );
    fs_write(&main, "include: [inc.yaml]\n");
    let e = match Policy::load(&main) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    assert_eq!(e.key(), "spiffe");
    assert!(e.to_string().contains("move spiffe:"), "{e}");
}

fn fs_write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
