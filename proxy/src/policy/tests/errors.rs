//! Load errors: each names the file, the key and the fix; warnings.

use super::*;

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

#[test]
fn a_permission_only_anonymous_holds_is_warned_about() {
    let text = "permissions:\n  health: [\"GET /livez\"]\n  status: [\"GET /status\"]\nauthenticated: [status]\nanonymous: [health, status]\n";
    let p = policy(text);
    let w = p.warnings().join("\n");
    assert!(
        w.contains("anonymous: health held without a certificate but not through authenticated")
            && w.contains("add it to authenticated"),
        "{w}"
    );
    // The certificate holder of this policy is indeed refused what an anonymous request gets.
    deny(&p, &Cert::new("x", &["G"]).p(), "GET", "/livez");
    allow(&p, &Principal::Anonymous, "GET", "/livez");
    // Granted through authenticated (or `"*"` there): nothing to say.
    for authenticated in ["[status, health]", "[\"*\"]"] {
        let p = policy(&text.replace("[status]\n", &format!("{authenticated}\n")));
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    }
}
