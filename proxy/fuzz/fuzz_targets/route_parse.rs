//! The route parser and the policy loader on arbitrary text: never panic; what parses behaves.
#![no_main]

use std::path::Path;

use certgate::policy::{normalize_path, Policy, Principal, Route};
use libfuzzer_sys::fuzz_target;

const REQUESTS: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/api/v1/vm"),
    ("POST", "/a/b/c/"),
    ("DELETE", "/x"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // The whole input, and each line, as a route.
    for candidate in std::iter::once(text).chain(text.lines().take(8)) {
        if let Ok(route) = Route::parse(candidate) {
            // Parsing what it prints gives the same route.
            match Route::parse(route.text()) {
                Ok(again) => assert_eq!(again, route, "{candidate:?}"),
                Err(e) => panic!("{candidate:?} re-parse failed: {e}"),
            }
            for (m, p) in REQUESTS {
                let _ = route.matches(m, p);
            }
            // A route with only literal segments matches its own path.
            if let Some(path) = literal_path(&route) {
                if let certgate::policy::route::Methods::List(methods) = route.methods() {
                    if let Some(m) = methods.first() {
                        if let Ok(norm) = normalize_path(&path) {
                            assert!(route.matches(m, &norm), "{candidate:?} vs {path:?}");
                        }
                    }
                }
            }
        }
    }

    // The whole input as a policy file (includes resolve under a directory that does not exist).
    let origin = Path::new("/nonexistent/certgate-fuzz/policy.yaml");
    if let Ok(policy) = Policy::from_yaml(text, origin) {
        exercise(&policy);
    }
    // And the first line as the route of a one-permission policy.
    let first = text.lines().next().unwrap_or("");
    let yaml = format!(
        "permissions:\n  p: [{}]\nauthenticated: [p]\n",
        serde_json_like_quote(first)
    );
    if let Ok(policy) = Policy::from_yaml(&yaml, origin) {
        exercise(&policy);
    }
});

fn literal_path(route: &Route) -> Option<String> {
    use certgate::policy::route::Segment;
    let mut path = String::new();
    for seg in route.segments() {
        match seg {
            Segment::Literal(l) => {
                path.push('/');
                path.push_str(l);
            }
            _ => return None,
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Some(path)
}

fn exercise(policy: &Policy) {
    let orgs = vec!["DevOps".to_string(), "ci-tools".to_string()];
    let units: Vec<String> = Vec::new();
    let who = [
        Principal::Anonymous,
        Principal::Certificate {
            user: Some("Jenkins"),
            organizations: &orgs,
            org_units: &units,
            sans: Default::default(),
        },
    ];
    for p in &who {
        for (m, path) in REQUESTS {
            let d = policy.decide(p, m, path);
            let e = policy.explain(p, m, path);
            assert_eq!(d.is_allowed(), e.allowed);
            if let certgate::policy::Decision::Deny(denial) = d {
                let _ = denial.reason(m, path);
            }
        }
    }
    let _ = policy.permission_names().count();
    let _ = policy.sha256_hex();
}

/// A YAML double-quoted scalar holding `s`.
fn serde_json_like_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
