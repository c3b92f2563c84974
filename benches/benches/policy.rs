//! Policy decision cost: `normalize_path` + `Policy::decide` on the shipped Anka Controller
//! policy and on a synthetic 1,000-permission catalog. Target: < 1 µs per decision.
//!
//! Run: `cargo bench -p certgate-benches --bench policy` (results in benches/README.md).

use std::hint::black_box;
use std::path::{Path, PathBuf};

use certgate::policy::{normalize_path, Policy, Principal};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn load(name: &str) -> Policy {
    let path = policies_dir().join(name);
    match Policy::load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// 1,000 permissions over 100 resource kinds × 10 API versions, each with several routes
/// (literal, `{id}` and `**` forms), 20 groups of 50 permissions.
fn synthetic_yaml() -> String {
    let mut yaml = String::from("permissions:\n");
    for i in 0..1000 {
        let kind = i % 100;
        let version = i / 100;
        let route = match i % 4 {
            0 => format!("GET|HEAD /api/v{version}/kind{kind}"),
            1 => format!("POST /api/v{version}/kind{kind}"),
            2 => format!("GET /api/v{version}/kind{kind}/{{id}}/items"),
            _ => format!("* /api/v{version}/kind{kind}/{{id}}/logs/**"),
        };
        yaml.push_str(&format!(
            "  perm{i}: [\"{route}\", \"DELETE /api/v{version}/kind{kind}/{{id}}\"]\n"
        ));
    }
    yaml.push_str("groups:\n");
    for g in 0..20 {
        let names: Vec<String> = (0..50).map(|k| format!("perm{}", g * 50 + k)).collect();
        yaml.push_str(&format!("  team{g}: [{}]\n", names.join(", ")));
    }
    yaml.push_str("authenticated: [perm0]\n");
    yaml
}

fn bench_normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize_path");
    for (name, path) in [
        ("normal", "/api/v1/registry/vm/distribute"),
        ("dot_segments", "/api/v1/./vm/../vm//x/%2e%2e"),
        ("percent", "/api/v1/%76m/%7euser/a%3ab"),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), path, |b, p| {
            b.iter(|| normalize_path(black_box(p)).map(|c| c.len()))
        });
    }
    g.finish();
}

fn bench_anka_controller(c: &mut Criterion) {
    let policy = load("anka-controller.yaml");
    let ci_o = vec!["ci-tools".to_string()];
    let node_o = vec!["build-nodes".to_string()];
    let none: Vec<String> = Vec::new();
    let ci = Principal::Certificate {
        user: Some("jenkins"),
        organizations: &ci_o,
        org_units: &none,
        sans: Default::default(),
    };
    let node = Principal::Certificate {
        user: Some("node-1"),
        organizations: &node_o,
        org_units: &none,
        sans: Default::default(),
    };
    let cases: [(&str, &Principal<'_>, &str, &str); 6] = [
        ("ci_allow_list_vms", &ci, "GET", "/api/v1/vm"),
        ("ci_allow_registry", &ci, "GET", "/api/v1/registry/vm"),
        (
            "node_allow_queue",
            &node,
            "POST",
            "/queue/v1/controller/task",
        ),
        ("anonymous_livez", &Principal::Anonymous, "GET", "/livez"),
        ("ci_deny_covered", &ci, "DELETE", "/api/v1/node"),
        ("ci_deny_uncovered", &ci, "GET", "/not/mapped/anywhere"),
    ];
    for (name, who, method, path) in cases {
        let allowed = policy.decide(who, method, path).is_allowed();
        assert_eq!(
            allowed,
            name.contains("allow") || name.contains("livez"),
            "{name}"
        );
    }
    let mut g = c.benchmark_group("decide_anka_controller");
    for (name, who, method, path) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                policy
                    .decide(black_box(who), black_box(method), black_box(path))
                    .is_allowed()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("normalize_and_decide_anka_controller");
    g.bench_function("ci_get_vm_with_dots", |b| {
        b.iter(|| {
            let path = normalize_path(black_box("/api/v1/x/../vm")).map(|p| p.into_owned());
            path.map(|p| policy.decide(&ci, "GET", &p).is_allowed())
        })
    });
    g.bench_function("ci_get_vm_normal", |b| {
        b.iter(|| {
            normalize_path(black_box("/api/v1/vm"))
                .map(|p| policy.decide(&ci, "GET", &p).is_allowed())
        })
    });
    g.finish();
}

fn bench_synthetic(c: &mut Criterion) {
    let yaml = synthetic_yaml();
    let policy = match Policy::from_yaml(&yaml, Path::new("synthetic.yaml")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(policy.permission_count(), 1000);
    let orgs: Vec<String> = vec!["team3".into(), "team17".into(), "unknown".into()];
    let none: Vec<String> = Vec::new();
    let who = Principal::Certificate {
        user: Some("svc"),
        organizations: &orgs,
        org_units: &none,
        sans: Default::default(),
    };
    let cases = [
        ("allow_literal", "GET", "/api/v1/kind52"),
        ("allow_param", "GET", "/api/v8/kind54/123/items"),
        ("allow_rest", "PATCH", "/api/v1/kind55/9/logs/a/b/c"),
        ("deny_covered", "POST", "/api/v0/kind1"),
        ("deny_uncovered", "GET", "/api/v11/kind1"),
    ];
    for (name, method, path) in cases {
        let allowed = policy.decide(&who, method, path).is_allowed();
        assert_eq!(allowed, name.starts_with("allow"), "{name}");
    }
    let mut g = c.benchmark_group("decide_synthetic_1000");
    for (name, method, path) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                policy
                    .decide(black_box(&who), black_box(method), black_box(path))
                    .is_allowed()
            })
        });
    }
    g.finish();

    c.bench_function("load_synthetic_1000", |b| {
        b.iter(|| Policy::from_yaml(black_box(&yaml), Path::new("synthetic.yaml")).is_ok())
    });
}

criterion_group!(
    benches,
    bench_normalize,
    bench_anka_controller,
    bench_synthetic
);
criterion_main!(benches);
