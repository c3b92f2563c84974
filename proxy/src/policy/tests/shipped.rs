//! The policies shipped in `policies/`: they load, and decide as documented.

use super::*;

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
