//! Policy loading, decisions, explanations and errors; the shipped policies.

use super::*;
use proptest::prelude::*;
use std::fs;

const CONTRACT_EXAMPLE: &str = r#"
permissions:                               # permission name -> the requests it covers
  list_vms:   ["GET /api/v1/vm"]
  start_vm:   ["POST /api/v1/vm"]
  view_logs:  ["GET /api/v1/logs/**"]
  get_status: ["GET|HEAD /api/v1/status"]
groups:                                    # certificate O= value -> permissions ("*" = all)
  DevOps: ["*"]
  MyOrgName: [list_vms, start_vm]
users:                                     # certificate CN= value -> permissions
  Jenkins: [list_vms]
authenticated: [get_status]                # held by every valid certificate
anonymous: []                              # held by requests without a valid certificate
group_attribute: O                         # O | OU | OU_else_O
mode: enforce                              # enforce | audit
"#;

fn policy(yaml: &str) -> Policy {
    match Policy::from_yaml(yaml, Path::new("test.yaml")) {
        Ok(p) => p,
        Err(e) => panic!("policy refused: {e}"),
    }
}

fn policy_err(yaml: &str) -> PolicyError {
    match Policy::from_yaml(yaml, Path::new("policies/x.yaml")) {
        Ok(_) => panic!("policy accepted:\n{yaml}"),
        Err(e) => e,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Cert {
    cn: Option<String>,
    o: Vec<String>,
    ou: Vec<String>,
}

impl Cert {
    fn new(cn: &str, o: &[&str]) -> Cert {
        Cert {
            cn: Some(cn.to_string()),
            o: strings(o),
            ou: Vec::new(),
        }
    }
    fn ou(mut self, ou: &[&str]) -> Cert {
        self.ou = strings(ou);
        self
    }
    fn p(&self) -> Principal<'_> {
        Principal::Certificate {
            user: self.cn.as_deref(),
            organizations: &self.o,
            org_units: &self.ou,
            sans: Default::default(),
        }
    }
}

fn allow(p: &Policy, who: &Principal<'_>, m: &str, path: &str) -> String {
    match p.decide(who, m, path) {
        Decision::Allow { permission } => permission.to_string(),
        Decision::Deny(d) => panic!("{m} {path} denied: {}", d.reason(m, path)),
    }
}

fn deny(p: &Policy, who: &Principal<'_>, m: &str, path: &str) -> String {
    match p.decide(who, m, path) {
        Decision::Allow { permission } => panic!("{m} {path} allowed by {permission}"),
        Decision::Deny(d) => d.reason(m, path),
    }
}

// ---------------------------------------------------------------- decisions

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

// ---------------------------------------------------------------- explain

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

// ---------------------------------------------------------------- errors

#[test]
fn unknown_permission_message_matches_the_brief() {
    let yaml = "permissions:\n  list_vms: [\"GET /api/v1/vm\"]\n  start_vm: [\"POST /api/v1/vm\"]\n\n\n\n\n\n\n\ngroups:\n  DevOps: [start_vm, list_vm]\n";
    let e = policy_err(yaml);
    assert_eq!(
        e.to_string(),
        "policies/x.yaml: groups.DevOps: unknown permission \"list_vm\" (line 12); known permissions include \"list_vms\"; define it under permissions: or fix the name"
    );
    assert_eq!(e.key(), "groups.DevOps");
}

#[test]
fn unknown_permission_everywhere() {
    let perms = "permissions:\n  list_vms: [\"GET /api/v1/vm\"]\n";
    for (grant, key, line) in [
        ("users:\n  Jenkins: [list_vm]\n", "users.Jenkins", 4),
        ("authenticated: [list_vm]\n", "authenticated", 3),
        ("anonymous:\n  - list_vm\n", "anonymous", 4),
        (
            "groups:\n  \"My Org\":\n    - list_vms\n    - list_vm\n",
            "groups.My Org",
            6,
        ),
    ] {
        let e = policy_err(&format!("{perms}{grant}"));
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "policies/x.yaml: {key}: unknown permission \"list_vm\" (line {line});"
            )),
            "{msg}"
        );
        assert!(msg.contains("\"list_vms\""), "{msg}");
    }
    // Nothing close: list some known names.
    let msg = policy_err(&format!("{perms}authenticated: [zzzzzzzzzz]\n")).to_string();
    assert!(msg.contains("known permissions: \"list_vms\""), "{msg}");
    let msg = policy_err("permissions: {}\nauthenticated: [x]\n").to_string();
    assert!(msg.contains("no permissions are defined"), "{msg}");
}

#[test]
fn malformed_routes_name_permission_route_and_line() {
    let e =
        policy_err("permissions:\n  a: [\"GET /ok\"]\n  bad:\n    - GET /fine\n    - GET /a//b\n");
    assert_eq!(
        e.to_string(),
        "policies/x.yaml: permissions.bad: bad route \"GET /a//b\": empty segment (//) in \"/a//b\" (line 5); write a single / between segments"
    );
    for (route, want) in [
        ("get /x", "not upper-case"),
        ("GET /x?id=1", "query string"),
        ("GET /**/x", "not the last segment"),
        ("GET /a/../b", "\"..\" segment"),
        ("/x", "no method"),
        ("GET x", "does not begin with /"),
    ] {
        let msg = policy_err(&format!("permissions:\n  p: [\"{route}\"]\n")).to_string();
        assert!(
            msg.contains("permissions.p: bad route") && msg.contains(want),
            "{msg}"
        );
        assert!(msg.contains("(line 2)"), "{msg}");
    }
}

#[test]
fn unknown_keys_are_errors() {
    let e = policy_err("permissions: {}\ngroup: {}\n");
    assert_eq!(
        e.to_string(),
        "policies/x.yaml: group: unknown key (line 2); the keys of a policy file are: include, permissions, groups, users, users_from, spiffe, authenticated, anonymous, group_attribute, mode; check the spelling"
    );
    assert_eq!(e.line(), Some(2));
}

#[test]
fn yaml_shape_and_syntax_errors() {
    let e = policy_err("permissions:\n  a: 5\n");
    let msg = e.to_string();
    assert!(
        msg.contains("(line 2)") && msg.contains("invalid type"),
        "{msg}"
    );
    let msg = policy_err("permissions: [a, b]\n").to_string();
    assert!(
        msg.contains("invalid type") && msg.contains("(line 1)"),
        "{msg}"
    );
    let msg = policy_err("permissions:\n  a: [\"GET /x\"\n").to_string();
    assert!(
        msg.contains("fix the YAML syntax") && msg.contains("line"),
        "{msg}"
    );
    let msg = policy_err("- a\n- b\n").to_string();
    assert!(msg.contains("invalid type"), "{msg}");
    assert!(
        msg.contains("expected a mapping of policy keys") && !msg.contains("RawPolicy"),
        "{msg}"
    );
    let msg = policy_err("permissions: {}\n---\npermissions: {}\n").to_string();
    assert!(msg.contains("one YAML document"), "{msg}");
    let msg = policy_err("groups:\n  A: {x: y}\n").to_string();
    assert!(
        msg.contains("invalid type") && msg.contains("(line 2)"),
        "{msg}"
    );
}

#[test]
fn empty_files_are_refused() {
    for text in ["", "   \n", "# only a comment\n", "---\n", "\n---\n...\n"] {
        let e = policy_err(text);
        assert!(e.to_string().contains("file is empty"), "{text:?}: {e}");
    }
}

#[test]
fn lenient_shapes() {
    // A single route, a null list, numeric and boolean-looking keys.
    let p = policy(
        "permissions:\n  a: GET /a\n  b:\n  c: []\ngroups:\n  123: [a]\n  true: a\n  Nobody:\nanonymous:\n",
    );
    assert_eq!(p.route_count(), 1);
    assert_eq!(p.group_count(), 3);
    allow(&p, &Cert::new("x", &["123"]).p(), "GET", "/a");
    allow(&p, &Cert::new("x", &["true"]).p(), "GET", "/a");
    deny(&p, &Cert::new("x", &["Nobody"]).p(), "GET", "/a");
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

#[test]
fn warnings_for_routeless_grants_and_anonymous_star() {
    let p = policy(
        "permissions:\n  a: []\n  b: [\"GET /b\"]\ngroups:\n  G: [a, b]\nanonymous: [\"*\"]\n",
    );
    let w = p.warnings().join("\n");
    assert!(
        w.contains("groups.G: this permission has no routes, so it allows nothing until routes are added: a"),
        "{w}"
    );
    assert!(w.contains("anonymous: \"*\""), "{w}");
}

#[test]
fn permission_names_are_checked() {
    let msg = policy_err("permissions:\n  \"*\": [\"GET /\"]\n").to_string();
    assert!(msg.contains("\"*\" cannot be a permission name"), "{msg}");
    let msg = policy_err("permissions:\n  \"list vms\": [\"GET /\"]\n").to_string();
    assert!(
        msg.contains("invalid permission name \"list vms\"") && msg.contains("(line 2)"),
        "{msg}"
    );
    let msg = policy_err("permissions:\n  \"\": [\"GET /\"]\n").to_string();
    assert!(msg.contains("invalid permission name"), "{msg}");
}

#[test]
fn duplicates_in_one_file() {
    let e = policy_err("permissions:\n  a: [\"GET /a\"]\n  b: []\n  a: [\"GET /b\"]\n");
    let msg = e.to_string();
    assert!(
        msg.contains("permissions.a: permission \"a\" is defined twice in this file"),
        "{msg}"
    );
    let msg =
        policy_err("permissions:\n  a: []\ngroups:\n  G: [a]\n  H: []\n  G: []\n").to_string();
    assert!(
        msg.contains("groups.G: group \"G\" is listed twice (line 6)"),
        "{msg}"
    );
    let msg = policy_err("permissions:\n  a: []\nusers:\n  U: [a]\n  U: [a]\n").to_string();
    assert!(
        msg.contains("users.U: user \"U\" is listed twice (line 5)"),
        "{msg}"
    );
}

// ---------------------------------------------------------------- files and includes

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn load(path: &Path) -> Policy {
    Policy::load(path).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(path: &Path) -> PolicyError {
    match Policy::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn includes_relative_depth_first_and_hashed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let a = "include: [deep/b.yaml]\npermissions:\n  a: [\"GET /a\"]\n";
    let b = "permissions:\n  b: [\"GET /b\"]\n";
    let c = "include: [../common/a.yaml]\npermissions:\n  c: [\"GET /c\"]\n";
    let main = "include: [common/a.yaml, other/c.yaml]\npermissions:\n  m: [\"GET /m\"]\ngroups:\n  G: [\"*\"]\n";
    write(d, "common/a.yaml", a);
    write(d, "common/deep/b.yaml", b);
    write(d, "other/c.yaml", c);
    let main_path = write(d, "main.yaml", main);
    let p = load(&main_path);
    // Includes first, depth-first, in include order; a file reached twice is merged once.
    assert_eq!(
        p.permission_names().collect::<Vec<_>>(),
        vec!["b", "a", "c", "m"]
    );
    assert_eq!(
        p.files(),
        &[
            main_path.clone(),
            d.join("common/a.yaml"),
            d.join("common/deep/b.yaml"),
            d.join("other/c.yaml"),
        ]
    );
    let mut all = String::new();
    for t in [main, a, b, c] {
        all.push_str(t);
    }
    assert_eq!(p.sha256_hex(), digest::sha256_hex(all.as_bytes()));
    assert_eq!(p.sha256_hex().len(), 64);
    assert_eq!(
        p.permission("b").map(|(r, f)| (r, f.to_path_buf())),
        Some((vec!["GET /b"], d.join("common/deep/b.yaml")))
    );
    let g = Cert::new("x", &["G"]);
    assert_eq!(allow(&p, &g.p(), "GET", "/b"), "b");

    // from_yaml resolves relative to origin's directory and lists origin first.
    let p = Policy::from_yaml(main, &d.join("virtual.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.files().first(), Some(&d.join("virtual.yaml")));
    assert_eq!(p.permission_count(), 4);

    // The hash changes when an include changes.
    let before = load(&main_path).sha256_hex().to_string();
    write(
        d,
        "common/deep/b.yaml",
        "permissions:\n  b: [\"GET /b2\"]\n",
    );
    assert_ne!(load(&main_path).sha256_hex(), before);
}

#[test]
fn missing_include() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let main = write(
        dir.path(),
        "main.yaml",
        "permissions: {}\ninclude:\n  - nothere.yaml\n",
    );
    let e = load_err(&main);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: include: cannot read \"nothere.yaml\" (",
            main.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(
            "(line 3); fix the name (relative to this file's directory) or remove it from include:"
        ),
        "{msg}"
    );
    assert_eq!(e.file(), main.as_path());
}

#[test]
fn includes_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    fs::create_dir_all(dir.path().join("sub")).unwrap_or_else(|e| panic!("{e}"));
    let main = write(dir.path(), "main.yaml", "include: [sub]\npermissions: {}\n");
    let msg = load_err(&main).to_string();
    assert!(
        msg.contains("not a regular file") && msg.contains("(line 1)"),
        "{msg}"
    );
    #[cfg(unix)]
    {
        let main = write(
            dir.path(),
            "dev.yaml",
            "include: [/dev/zero]\npermissions: {}\n",
        );
        let msg = load_err(&main).to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }
    let msg = load_err(dir.path()).to_string();
    assert!(msg.contains("cannot read: not a regular file"), "{msg}");
}

#[test]
fn missing_main_file() {
    let e = load_err(Path::new("/nonexistent/certgate/policy.yaml"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("/nonexistent/certgate/policy.yaml: cannot read: "),
        "{msg}"
    );
    assert!(matches!(e, PolicyError::Read { .. }));
}

#[test]
fn include_cycles() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    write(d, "a.yaml", "include: [b.yaml]\npermissions: {}\n");
    write(d, "b.yaml", "include: [a.yaml]\npermissions:\n  x: []\n");
    let main = write(d, "main.yaml", "include: [a.yaml]\npermissions: {}\n");
    let msg = load_err(&main).to_string();
    assert!(msg.contains("b.yaml: include: include cycle: "), "{msg}");
    assert!(
        msg.contains("a.yaml -> ") && msg.contains("remove \"a.yaml\""),
        "{msg}"
    );
    let selfie = write(d, "self.yaml", "include: [self.yaml]\npermissions: {}\n");
    let msg = load_err(&selfie).to_string();
    assert!(msg.contains("include cycle"), "{msg}");
}

#[test]
fn included_files_hold_no_grants() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    for (key, body) in [
        ("groups", "groups:\n  G: [x]\n"),
        ("users", "users: {U: [x]}\n"),
        ("authenticated", "authenticated: [x]\n"),
        ("anonymous", "anonymous: []\n"),
        ("mode", "mode: audit\n"),
        ("group_attribute", "group_attribute: OU\n"),
    ] {
        let inc = write(d, "inc.yaml", &format!("permissions:\n  x: []\n{body}"));
        let main = write(d, "main.yaml", "include: [inc.yaml]\npermissions: {}\n");
        let msg = load_err(&main).to_string();
        assert_eq!(
            msg,
            format!(
                "{}: {key}: an included file may only contain permissions: and include: (line 3); move {key}: to the file that includes it ({})",
                inc.display(),
                main.display()
            )
        );
    }
}

#[test]
fn duplicate_permission_across_files_names_both() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let cat = write(
        d,
        "cat.yaml",
        "permissions:\n  list_vms: [\"GET /api/v1/vm\"]\n",
    );
    let main = write(
        d,
        "main.yaml",
        "include: [cat.yaml]\npermissions:\n  health: []\n  list_vms: [\"GET /x\"]\n",
    );
    let msg = load_err(&main).to_string();
    assert_eq!(
        msg,
        format!(
            "{}: permissions.list_vms: permission \"list_vms\" is already defined in {} (line 4); permission names must be unique across a policy and its includes: rename or remove one",
            main.display(),
            cat.display()
        )
    );
}

#[test]
fn include_errors_name_the_included_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let inc = write(d, "inc.yaml", "permissions:\n  x: [\"GET /a//b\"]\n");
    let main = write(d, "main.yaml", "include: inc.yaml\npermissions: {}\n");
    let e = load_err(&main);
    assert_eq!(e.file(), inc.as_path());
    assert_eq!(e.line(), Some(2));
    let inc = write(d, "inc.yaml", "permissions:\n  x: []\nbogus: 1\n");
    let e = load_err(&main);
    assert_eq!(e.file(), inc.as_path());
    assert_eq!(e.key(), "bogus");
}

// ---------------------------------------------------------------- shipped policies

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

#[test]
fn shipped_policies_load() {
    let dir = policies_dir();
    let mut seen = 0;
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let p = load(&path);
        assert!(p.permission_count() > 0, "{}", path.display());
        assert!(p.route_count() > 0, "{}", path.display());
        assert!(!p.files().is_empty());
        if !path.to_string_lossy().contains(".catalog.") {
            assert!(p.group_count() > 0, "{}", path.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected the four shipped policy files in {}",
        dir.display()
    );
}

#[test]
fn shipped_catalogs_name_every_documented_permission() {
    let dir = policies_dir();
    let controller = load(&dir.join("anka-controller.catalog.yaml"));
    let names: Vec<&str> = controller.permission_names().collect();
    for n in [
        "list_vms",
        "start_vm",
        "terminate_vm",
        "update_vm",
        "save_image",
        "get_registry_files",
        "view_logs",
        "get_registry_disk_info",
        "registry_list",
        "registry_delete",
        "list_nodes",
        "delete_node",
        "change_node_config",
        "create_group",
        "get_groups",
        "update_group",
        "delete_group",
        "add_node_to_group",
        "remove_group_from_node",
        "registry_distribute",
        "registry_distribute_status",
        "get_config",
        "change_config",
        "view_permissions",
        "view_prmission_groups",
        "update_permission_groups",
        "delete_permission_groups",
        "mac_address",
        "create_api_key",
        "get_api_key",
        "update_api_key",
        "delete_api_key",
        "list_images",
    ] {
        assert!(names.contains(&n), "controller catalog lacks {n}");
    }
    let registry = load(&dir.join("anka-registry.catalog.yaml"));
    let names: Vec<&str> = registry.permission_names().collect();
    for n in [
        "index",
        "get_disk_info",
        "list_vms",
        "head_push_vm",
        "push_vm",
        "pull_vm",
        "download_vm",
        "delete_vm",
        "revert",
        "upload_file",
        "download_file",
        "get_streamer",
        "stream_log",
        "get_log_archive",
        "send_log_event",
        "send_log",
        "view_permissions",
        "view_prmission_groups",
        "update_permission_groups",
        "delete_permission_groups",
        "create_api_key",
        "get_api_key",
        "update_api_key",
        "delete_api_key",
    ] {
        assert!(names.contains(&n), "registry catalog lacks {n}");
    }
}

#[test]
fn shipped_controller_policy_decisions() {
    let p = load(&policies_dir().join("anka-controller.yaml"));
    assert_eq!(p.files().len(), 2);
    let anon = Principal::Anonymous;
    allow(&p, &anon, "GET", "/livez");
    allow(&p, &anon, "GET", "/readyz");
    deny(&p, &anon, "GET", "/api/v1/status");
    let stranger = Cert::new("someone", &["Strangers"]);
    allow(&p, &stranger.p(), "GET", "/api/v1/status");
    deny(&p, &stranger.p(), "GET", "/api/v1/vm");
    let ci = Cert::new("jenkins", &["ci-tools"]);
    for (m, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/vm"),
        ("POST", "/api/v1/vm"),
        ("PUT", "/api/v1/vm"),
        ("DELETE", "/api/v1/vm"),
        ("GET", "/api/v1/group"),
        ("GET", "/api/v1/node"),
        ("GET", "/api/v1/registry/vm"),
        ("GET", "/api/v1/registry/disk"),
        ("POST", "/api/v1/image"),
        ("GET", "/api/v1/image"),
    ] {
        allow(&p, &ci.p(), m, path);
    }
    deny(&p, &ci.p(), "DELETE", "/api/v1/node");
    deny(&p, &ci.p(), "POST", "/api/v1/group");
    let admin = Cert::new("root-ish", &["anka-admins"]);
    allow(&p, &admin.p(), "DELETE", "/api/v1/node");
    allow(
        &p,
        &admin.p(),
        "POST",
        "/admin/api/v1/permission/group/DevOps/resources",
    );
    let node = Cert::new("node-1", &["build-nodes"]);
    allow(&p, &node.p(), "GET", "/api/v1/status");
    allow(&p, &node.p(), "POST", "/queue/v1/controller/task");
    deny(&p, &node.p(), "POST", "/api/v1/vm");
}

#[test]
fn shipped_registry_policy_decisions() {
    let p = load(&policies_dir().join("anka-registry.yaml"));
    let anon = Principal::Anonymous;
    allow(&p, &anon, "GET", "/livez");
    deny(&p, &anon, "GET", "/registry/status");
    let any = Cert::new("x", &["Nobody"]);
    allow(&p, &any.p(), "GET", "/registry/status");
    let node = Cert::new("node-1", &["build-nodes"]);
    allow(&p, &node.p(), "GET", "/registry/v2/vm");
    deny(&p, &node.p(), "DELETE", "/registry/vm");
    let admin = Cert::new("a", &["anka-admins"]);
    allow(&p, &admin.p(), "DELETE", "/registry/vm");
}

// ---------------------------------------------------------------- properties

/// (YAML, permissions with their routes, groups as permission indices).
type ArbPolicy = (String, Vec<(String, Vec<String>)>, Vec<Vec<usize>>);

fn arb_policy() -> impl Strategy<Value = ArbPolicy> {
    let seg = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("*".to_string()),
        Just("{id}".to_string())
    ];
    let route = (
        prop_oneof![Just("GET"), Just("POST"), Just("GET|POST"), Just("*")],
        proptest::collection::vec(seg, 0..4),
        any::<bool>(),
    )
        .prop_map(|(m, segs, rest)| {
            let mut p: String = segs.iter().map(|s| format!("/{s}")).collect();
            if rest {
                p.push_str("/**");
            }
            if p.is_empty() {
                p.push('/');
            }
            format!("{m} {p}")
        });
    let perms = proptest::collection::vec(proptest::collection::vec(route, 0..3), 1..10);
    (
        perms,
        proptest::collection::vec(proptest::collection::vec(0usize..10, 0..4), 0..3),
    )
        .prop_map(|(routes, groups)| {
            let perms: Vec<(String, Vec<String>)> = routes
                .into_iter()
                .enumerate()
                .map(|(i, r)| (format!("p{i}"), r))
                .collect();
            let n = perms.len();
            let groups: Vec<Vec<usize>> = groups
                .into_iter()
                .map(|g| g.into_iter().map(|i| i % n).collect())
                .collect();
            let mut yaml = String::from("permissions:\n");
            for (name, routes) in &perms {
                let quoted: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
                yaml.push_str(&format!("  {name}: [{}]\n", quoted.join(", ")));
            }
            yaml.push_str("groups:\n");
            for (gi, g) in groups.iter().enumerate() {
                let names: Vec<String> = g.iter().map(|i| format!("p{i}")).collect();
                yaml.push_str(&format!("  g{gi}: [{}]\n", names.join(", ")));
            }
            (yaml, perms, groups)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    /// decide() agrees with a direct reading of the contract's decision rules.
    #[test]
    fn decide_matches_reference(
        (yaml, perms, groups) in arb_policy(),
        member in proptest::collection::vec(any::<bool>(), 3),
        method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
        path in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 0..5),
    ) {
        let p = policy(&yaml);
        let orgs: Vec<String> = (0..groups.len()).filter(|i| member.get(*i).copied().unwrap_or(false)).map(|i| format!("g{i}")).collect();
        let who = Principal::Certificate { user: None, organizations: &orgs, org_units: &[], sans: Default::default() };
        let path = format!("/{}", path.join("/"));
        let parsed: Vec<Vec<Route>> = perms.iter().map(|(_, rs)| rs.iter().filter_map(|r| Route::parse(r).ok()).collect()).collect();
        let covering: Vec<usize> = (0..perms.len()).filter(|&i| parsed[i].iter().any(|r| r.matches(method, &path))).collect();
        let held: Vec<usize> = (0..perms.len()).filter(|i| groups.iter().enumerate().any(|(gi, g)| member.get(gi).copied().unwrap_or(false) && g.contains(i))).collect();
        let expected = covering.iter().find(|i| held.contains(i));
        match p.decide(&who, method, &path) {
            Decision::Allow { permission } => {
                let Some(i) = expected else { return Err(TestCaseError::fail(format!("allowed by {permission}"))) };
                prop_assert_eq!(permission, format!("p{i}"));
            }
            Decision::Deny(Denial::NotCovered) => prop_assert!(covering.is_empty()),
            Decision::Deny(Denial::Requires(list)) => {
                prop_assert!(expected.is_none());
                let want: Vec<String> = covering.iter().map(|i| format!("p{i}")).collect();
                prop_assert_eq!(list, want);
            }
        }
        let e = p.explain(&who, method, &path);
        prop_assert_eq!(e.allowed, expected.is_some());
        prop_assert_eq!(e.covering.len(), covering.len());
        prop_assert_eq!(e.held.len(), held.len());
    }

    /// Arbitrary text never panics the loader.
    #[test]
    fn from_yaml_never_panics(text in ".{0,200}") {
        let _ = Policy::from_yaml(&text, Path::new("/nonexistent/fuzz.yaml"));
    }

    #[test]
    fn from_yaml_never_panics_on_policy_like_text(
        lines in proptest::collection::vec(prop_oneof![
            Just("permissions:".to_string()), Just("groups:".to_string()), Just("include: [x.yaml]".to_string()),
            Just("  a: [\"GET /a\"]".to_string()), Just("  b: [a, \"*\"]".to_string()), Just("  - GET /x/**".to_string()),
            Just("authenticated: [a]".to_string()), Just("mode: audit".to_string()), "[ -~]{0,20}",
        ], 0..10)
    ) {
        let _ = Policy::from_yaml(&lines.join("\n"), Path::new("/nonexistent/fuzz.yaml"));
    }
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
