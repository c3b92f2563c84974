//! Properties: `decide` against a direct reading of the rules; the loader never panics.

use super::*;
use proptest::prelude::*;

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
