//! Policy files and `include:`: order, hashing, missing and cyclic files.

use super::*;

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
