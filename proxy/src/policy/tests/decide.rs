//! Decisions: who holds what, what covers a request, and the reasons a denial gives.

use super::*;

#[test]
fn contract_example_decisions() {
    let p = policy(CONTRACT_EXAMPLE);
    assert_eq!(p.permission_count(), 4);
    assert_eq!(p.group_count(), 2);
    assert_eq!(p.user_count(), 1);
    assert_eq!(p.route_count(), 4);
    assert_eq!(p.mode(), Mode::Enforce);
    assert_eq!(p.group_attribute(), GroupAttribute::O);
    assert_eq!(
        p.permission_names().collect::<Vec<_>>(),
        vec!["list_vms", "start_vm", "view_logs", "get_status"]
    );

    let devops = Cert::new("alice", &["DevOps"]);
    assert_eq!(allow(&p, &devops.p(), "GET", "/api/v1/vm"), "list_vms");
    assert_eq!(allow(&p, &devops.p(), "POST", "/api/v1/vm"), "start_vm");
    assert_eq!(allow(&p, &devops.p(), "GET", "/api/v1/logs"), "view_logs");
    assert_eq!(
        allow(&p, &devops.p(), "GET", "/api/v1/logs/a/b"),
        "view_logs"
    );
    assert_eq!(
        deny(&p, &devops.p(), "DELETE", "/api/v1/vm"),
        "DELETE /api/v1/vm is covered by no permission"
    );

    let jenkins = Cert::new("Jenkins", &["Nobody"]);
    assert_eq!(allow(&p, &jenkins.p(), "GET", "/api/v1/vm"), "list_vms");
    assert_eq!(
        deny(&p, &jenkins.p(), "POST", "/api/v1/vm"),
        "POST /api/v1/vm requires one of: start_vm"
    );
    assert_eq!(
        allow(&p, &jenkins.p(), "HEAD", "/api/v1/status"),
        "get_status"
    );

    let org = Cert::new("bob", &["MyOrgName"]);
    assert_eq!(allow(&p, &org.p(), "POST", "/api/v1/vm"), "start_vm");
    assert_eq!(
        deny(&p, &org.p(), "GET", "/api/v1/logs/x"),
        "GET /api/v1/logs/x requires one of: view_logs"
    );

    assert_eq!(
        deny(&p, &Principal::Anonymous, "GET", "/api/v1/status"),
        "GET /api/v1/status requires one of: get_status"
    );
    assert!(!p
        .decide(&Principal::Anonymous, "GET", "/nothing")
        .is_allowed());
}

#[test]
fn reasons_list_covering_permissions_in_file_order() {
    let p = policy(
        r#"
permissions:
  b: ["GET /x/**"]
  a: ["GET /x/y"]
  c: ["* /x/*"]
  d: ["POST /x/y"]
"#,
    );
    let c = Cert::new("u", &[]);
    assert_eq!(
        deny(&p, &c.p(), "GET", "/x/y"),
        "GET /x/y requires one of: b, a, c"
    );
    assert_eq!(
        p.decide(&c.p(), "GET", "/x/y"),
        Decision::Deny(Denial::Requires(vec!["b", "a", "c"]))
    );
    assert_eq!(
        p.decide(&c.p(), "GET", "/y"),
        Decision::Deny(Denial::NotCovered)
    );
}

#[test]
fn reported_permission_is_first_held_and_covering_in_file_order() {
    let p = policy(
        r#"
permissions:
  wide: ["GET /**"]
  narrow: ["GET /api/v1/vm"]
  other: ["GET /api/*/vm"]
groups:
  A: [other, narrow]
  B: [wide]
"#,
    );
    let a = Cert::new("u", &["A"]);
    assert_eq!(allow(&p, &a.p(), "GET", "/api/v1/vm"), "narrow");
    let ab = Cert::new("u", &["A", "B"]);
    assert_eq!(allow(&p, &ab.p(), "GET", "/api/v1/vm"), "wide");
    assert_eq!(allow(&p, &a.p(), "GET", "/api/v2/vm"), "other");
}

#[test]
fn identity_sources() {
    let p = policy(
        r#"
permissions:
  pub: ["GET /livez"]
  auth: ["GET /status"]
  grp: ["GET /grp"]
  usr: ["GET /usr"]
  all: ["GET /all"]
groups:
  G: [grp]
  "Acme, Inc.": [grp]
  Star: ["*"]
users:
  U: [usr]
authenticated: [auth]
anonymous: [pub]
"#,
    );
    let anon = Principal::Anonymous;
    assert_eq!(allow(&p, &anon, "GET", "/livez"), "pub");
    deny(&p, &anon, "GET", "/status");
    // A certificate does not hold the anonymous permissions.
    let plain = Cert::new("x", &[]);
    deny(&p, &plain.p(), "GET", "/livez");
    assert_eq!(allow(&p, &plain.p(), "GET", "/status"), "auth");
    deny(&p, &plain.p(), "GET", "/grp");
    let g = Cert::new("x", &["Other", "G"]);
    assert_eq!(allow(&p, &g.p(), "GET", "/grp"), "grp");
    let acme = Cert::new("x", &["Acme, Inc."]);
    assert_eq!(allow(&p, &acme.p(), "GET", "/grp"), "grp");
    let u = Cert::new("U", &[]);
    assert_eq!(allow(&p, &u.p(), "GET", "/usr"), "usr");
    deny(&p, &Cert::new("u", &[]).p(), "GET", "/usr"); // case-sensitive user
    deny(&p, &Cert::new("x", &["g"]).p(), "GET", "/grp"); // case-sensitive group
    let star = Cert::new("x", &["Star"]);
    for (path, perm) in [("/livez", "pub"), ("/all", "all"), ("/usr", "usr")] {
        assert_eq!(allow(&p, &star.p(), "GET", path), perm);
    }
    let nocn = Principal::Certificate {
        user: None,
        organizations: &[],
        org_units: &[],
        sans: Default::default(),
    };
    assert_eq!(allow(&p, &nocn, "GET", "/status"), "auth");
    assert_eq!(p.held_by(&nocn), vec!["auth"]);
    assert_eq!(p.held_by(&anon), vec!["pub"]);
    assert!(p.holds(&u.p(), "usr") && !p.holds(&u.p(), "grp") && !p.holds(&u.p(), "nope"));
}

#[test]
fn group_attribute_variants() {
    let base = r#"
permissions:
  o: ["GET /o"]
  ou: ["GET /ou"]
groups:
  OrgGroup: [o]
  UnitGroup: [ou]
"#;
    let with_o = Cert::new("x", &["OrgGroup"]).ou(&["UnitGroup"]);
    let only_o = Cert::new("x", &["OrgGroup"]);

    let p = policy(base);
    assert_eq!(p.group_attribute(), GroupAttribute::O);
    assert_eq!(p.groups_of(&with_o.p()), vec!["OrgGroup"]);
    allow(&p, &with_o.p(), "GET", "/o");
    deny(&p, &with_o.p(), "GET", "/ou");

    let p = policy(&format!("{base}group_attribute: OU\n"));
    assert_eq!(p.group_attribute(), GroupAttribute::Ou);
    assert_eq!(p.groups_of(&with_o.p()), vec!["UnitGroup"]);
    assert!(p.groups_of(&only_o.p()).is_empty());
    deny(&p, &with_o.p(), "GET", "/o");
    allow(&p, &with_o.p(), "GET", "/ou");
    deny(&p, &only_o.p(), "GET", "/o");

    let p = policy(&format!("{base}group_attribute: OU_else_O\n"));
    assert_eq!(p.group_attribute(), GroupAttribute::OuElseO);
    assert_eq!(p.groups_of(&with_o.p()), vec!["UnitGroup"]);
    assert_eq!(p.groups_of(&only_o.p()), vec!["OrgGroup"]);
    deny(&p, &with_o.p(), "GET", "/o");
    allow(&p, &only_o.p(), "GET", "/o");
    assert!(p.groups_of(&Principal::Anonymous).is_empty());

    let multi = Cert::new("x", &["B", "A", "B"]);
    assert_eq!(policy(base).groups_of(&multi.p()), vec!["B", "A", "B"]);

    for bad in ["ou", "Ou", "OU_ELSE_O", "CN"] {
        let e = policy_err(&format!("{base}group_attribute: {bad}\n"));
        let msg = e.to_string();
        assert!(
            msg.contains("group_attribute") && msg.contains("OU_else_O"),
            "{msg}"
        );
        assert_eq!(e.line(), Some(8), "{msg}");
    }
}

#[test]
fn mode_values() {
    assert_eq!(policy("permissions: {}\nmode: audit\n").mode(), Mode::Audit);
    assert_eq!(
        policy("permissions: {}\nmode: enforce\n").mode(),
        Mode::Enforce
    );
    assert_eq!(policy("permissions: {}\n").mode(), Mode::Enforce);
    let msg = policy_err("permissions: {}\nmode: Audit\n").to_string();
    assert!(msg.contains("mode") && msg.contains("audit"), "{msg}");
    assert_eq!(Mode::Audit.as_str(), "audit");
    assert_eq!(GroupAttribute::OuElseO.as_str(), "OU_else_O");
}

#[test]
fn trailing_slash_case_and_query_free_paths() {
    let p = policy(
        r#"
permissions:
  allowed: ["GET /allowed/", "GET /allowed/**"]
  vm: ["GET /api/v1/vm"]
authenticated: [allowed, vm]
"#,
    );
    let c = Cert::new("x", &[]);
    allow(&p, &c.p(), "GET", "/allowed");
    allow(&p, &c.p(), "GET", "/allowed/");
    allow(&p, &c.p(), "GET", "/api/v1/vm/");
    deny(&p, &c.p(), "GET", "/ALLOWED");
    deny(&p, &c.p(), "GET", "/api/v1/VM");
    deny(&p, &c.p(), "get", "/api/v1/vm");
    deny(&p, &c.p(), "GET", "/api/v1/vm/x");
}

#[test]
fn attack_strings_after_normalisation() {
    let p = policy(
        r#"
permissions:
  allowed: ["GET /allowed/**"]
  denied: ["GET /denied"]
authenticated: [allowed]
"#,
    );
    let c = Cert::new("x", &[]);
    let decide = |raw: &str| -> Result<bool, PathError> {
        let path = normalize_path(raw)?;
        Ok(p.decide(&c.p(), "GET", &path).is_allowed())
    };
    assert_eq!(decide("/allowed/x"), Ok(true));
    assert_eq!(decide("/allowed/../denied"), Ok(false));
    assert_eq!(decide("/allowed/%2e%2e/denied"), Ok(false));
    assert_eq!(decide("//denied"), Ok(false));
    assert_eq!(decide("/allowed/..%2fdenied"), Err(PathError::EncodedSlash));
    assert_eq!(decide("/allowed;/../denied"), Ok(false));
    assert_eq!(
        normalize_path("/allowed;/../denied").as_deref(),
        Ok("/denied")
    );
    assert_eq!(decide("/ALLOWED/x"), Ok(false));
    assert_eq!(
        decide("/allowed/%2E%2E/%2e%2e/x"),
        Err(PathError::EscapesRoot)
    );
    assert_eq!(decide("/allowed/y/%2E%2E/%2e%2e/denied"), Ok(false));
    assert_eq!(decide("/allowed/./x"), Ok(true));
    assert_eq!(decide("/%61llowed/x"), Ok(true));
    assert_eq!(decide("/../allowed"), Err(PathError::EscapesRoot));
}

#[test]
fn percent_encoded_route_literals_meet_normalised_paths() {
    let p = policy("permissions:\n  t: [\"GET /%7euser/a%3ab/c%20d\"]\nauthenticated: [t]\n");
    let c = Cert::new("x", &[]);
    for raw in [
        "/~user/a%3Ab/c%20d",
        "/%7Euser/a%3ab/c%20d",
        "/%7euser/a%3AB/c%20d",
    ] {
        let path = normalize_path(raw).map(|c| c.into_owned());
        let Ok(path) = path else { panic!("{raw}") };
        let ok = p.decide(&c.p(), "GET", &path).is_allowed();
        assert_eq!(ok, raw != "/%7euser/a%3AB/c%20d", "{raw} -> {path}");
    }
}

#[test]
fn empty_policy_denies_everything() {
    let p = policy("permissions: {}\n");
    assert_eq!(p.permission_count(), 0);
    let c = Cert::new("x", &["G"]);
    assert_eq!(
        deny(&p, &c.p(), "GET", "/"),
        "GET / is covered by no permission"
    );
    deny(&p, &Principal::Anonymous, "GET", "/x");
    let e = p.explain(&c.p(), "GET", "/");
    assert!(!e.allowed && e.held.is_empty() && e.covering.is_empty());
}

#[test]
fn star_grants_include_later_files_permissions() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(
        dir.path(),
        "cat.yaml",
        "permissions:\n  c1: [\"GET /c1\"]\n",
    );
    let main = write(
        dir.path(),
        "main.yaml",
        "include: [cat.yaml]\npermissions:\n  m1: [\"GET /m1\"]\ngroups:\n  A: [\"*\"]\n",
    );
    let p = load(&main);
    let a = Cert::new("x", &["A"]);
    assert_eq!(allow(&p, &a.p(), "GET", "/c1"), "c1");
    assert_eq!(allow(&p, &a.p(), "GET", "/m1"), "m1");
}

#[test]
fn more_than_inline_permissions_use_heap_bitsets() {
    let mut yaml = String::from("permissions:\n");
    for i in 0..2000 {
        yaml.push_str(&format!("  p{i}: [\"GET /r/{i}\", \"POST /r/{i}/**\"]\n"));
    }
    yaml.push_str("  last: [\"GET /r/*\"]\ngroups:\n  G: [p1999, last]\n  H: [\"*\"]\n");
    let p = policy(&yaml);
    assert_eq!(p.permission_count(), 2001);
    assert_eq!(p.route_count(), 4001);
    let g = Cert::new("x", &["G"]);
    assert_eq!(allow(&p, &g.p(), "GET", "/r/1999"), "p1999");
    assert_eq!(allow(&p, &g.p(), "GET", "/r/5"), "last");
    assert_eq!(
        deny(&p, &g.p(), "POST", "/r/5/a"),
        "POST /r/5/a requires one of: p5"
    );
    let h = Cert::new("x", &["H"]);
    assert_eq!(allow(&p, &h.p(), "POST", "/r/1500/x/y"), "p1500");
}

#[test]
fn policy_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<PolicyError>();
    assert_send_sync::<PathError>();
    assert_send_sync::<Explanation>();
}

#[test]
fn decide_tolerates_unnormalised_slashes() {
    // decide() expects a normalised path, but empty segments never widen what a route matches.
    let p = policy("permissions:\n  a: [\"GET /a/*\"]\nauthenticated: [a]\n");
    let c = Cert::new("x", &[]);
    allow(&p, &c.p(), "GET", "//a//b//");
    deny(&p, &c.p(), "GET", "/a//");
    deny(&p, &c.p(), "GET", "");
}
