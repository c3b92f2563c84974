//! `certgate explain`'s view of a decision: the groups that count, every way each permission
//! is held, the routes covering the request, and the rule that decided, in one sentence.

use serde::Serialize;

use super::matcher::{ones, or_into};
use super::{Decision, Denial, Grant, Mode, Policy, Principal};

/// Everything behind a decision, for `certgate explain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The group values that count under `group_attribute`, in certificate order (whether or
    /// not the policy names them).
    pub groups: Vec<String>,
    /// The CN.
    pub user: Option<String>,
    /// The permissions held, in file order.
    pub held: Vec<String>,
    /// (permission, source) for each way a permission is held: `anonymous`, `authenticated`,
    /// `group DevOps`, `user Jenkins`, with ` (*)` when granted through `"*"`. Permission file
    /// order, then source order.
    pub held_from: Vec<(String, String)>,
    /// The permissions that cover the request, in file order.
    pub covering: Vec<String>,
    /// (permission, route as written) for each matching route.
    pub covering_routes: Vec<(String, String)>,
    /// The decision (the policy's; in audit mode a denial is still forwarded).
    pub allowed: bool,
    /// The permission that allowed it.
    pub permission: Option<String>,
    /// One sentence: which rule made the decision.
    pub rule: String,
}

impl Policy {
    /// For `certgate explain`: everything behind a decision.
    pub fn explain(&self, p: &Principal<'_>, method: &str, path: &str) -> Explanation {
        let groups: Vec<String> = self.group_values(p).to_vec();
        let user = match *p {
            Principal::Certificate { user, .. } => user.map(str::to_string),
            Principal::Anonymous => None,
        };
        let (held, held_from) = self.held_from(p, &groups);
        let (covering, covering_routes) = self.covering_routes(method, path);
        let decision = self.decide(p, method, path);
        let mut rule = match &decision {
            Decision::Allow { permission } => {
                let via = held_from
                    .iter()
                    .find(|(perm, _)| perm == permission)
                    .map(|(_, src)| src.as_str())
                    .unwrap_or("?");
                let route = covering_routes
                    .iter()
                    .find(|(perm, _)| perm == permission)
                    .map(|(_, r)| r.as_str())
                    .unwrap_or("?");
                format!(
                    "allowed: permission \"{permission}\" (held through {via}) covers {method} {path} by its route \"{route}\""
                )
            }
            Decision::Deny(d) => denial_rule(p, d, &groups, &held, method, path),
        };
        if self.mode == Mode::Audit && !decision.is_allowed() {
            rule.push_str(
                "; the policy is in audit mode, so the request would be forwarded and logged as audit_deny",
            );
        }
        Explanation {
            groups,
            user,
            held,
            held_from,
            covering,
            covering_routes,
            allowed: decision.is_allowed(),
            permission: decision.permission().map(str::to_string),
            rule,
        }
    }

    /// The permissions held, and (permission, source) for each way one is held.
    fn held_from(
        &self,
        p: &Principal<'_>,
        groups: &[String],
    ) -> (Vec<String>, Vec<(String, String)>) {
        // Sources in the order an operator reads them: authenticated, groups, users.
        let mut sources: Vec<(String, &Grant)> = Vec::new();
        match *p {
            Principal::Anonymous => sources.push(("anonymous".into(), &self.anonymous)),
            Principal::Certificate { user, .. } => {
                sources.push(("authenticated".into(), &self.authenticated));
                for g in groups {
                    if let Some(grant) = self.groups.get(g.as_str()) {
                        sources.push((format!("group {g}"), grant));
                    }
                }
                if let Some((u, grant)) = user.and_then(|u| self.users.get(u).map(|g| (u, g))) {
                    sources.push((format!("user {u}"), grant));
                }
            }
        }
        let mut held_bits = vec![0u64; self.trie.words()];
        let mut from: Vec<(usize, usize, String)> = Vec::new();
        for (order, (label, grant)) in sources.iter().enumerate() {
            or_into(&mut held_bits, &grant.bits);
            for i in ones(&grant.bits) {
                let label = if grant.star {
                    format!("{label} (*)")
                } else {
                    label.clone()
                };
                from.push((i, order, label));
            }
        }
        from.sort_by_key(|(i, order, _)| (*i, *order));
        let held_from = from
            .into_iter()
            .filter_map(|(i, _, label)| self.name(i).map(|n| (n.to_string(), label)))
            .collect();
        let held = ones(&held_bits)
            .filter_map(|i| self.name(i).map(str::to_string))
            .collect();
        (held, held_from)
    }

    /// The permissions covering `method path`, and (permission, route) for each matching route.
    fn covering_routes(&self, method: &str, path: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut cov_bits = vec![0u64; self.trie.words()];
        self.trie.covering_into(method, path, &mut cov_bits);
        let covering = ones(&cov_bits)
            .filter_map(|i| self.name(i).map(str::to_string))
            .collect();
        let mut covering_routes = Vec::new();
        for i in ones(&cov_bits) {
            if let Some(perm) = self.permissions.get(i) {
                for r in perm.routes.iter().filter(|r| r.matches(method, path)) {
                    covering_routes.push((perm.name.clone(), r.text().to_string()));
                }
            }
        }
        (covering, covering_routes)
    }
}

/// The rule behind a denial, naming the status the proxy answers.
fn denial_rule(
    p: &Principal<'_>,
    d: &Denial<'_>,
    groups: &[String],
    held: &[String],
    method: &str,
    path: &str,
) -> String {
    let status = match p {
        Principal::Anonymous => "401 Authentication Required",
        Principal::Certificate { .. } => "403 Permission Denied",
    };
    match d {
        Denial::NotCovered => format!(
            "denied ({status}): {}; whatever no permission covers is denied",
            d.reason(method, path)
        ),
        Denial::Requires(_) => {
            let holds = if held.is_empty() {
                "nothing".to_string()
            } else {
                held.join(", ")
            };
            format!(
                "denied ({status}): {}; {} holds none of them (it holds: {holds})",
                d.reason(method, path),
                describe(p, groups)
            )
        }
    }
}

fn describe(p: &Principal<'_>, groups: &[String]) -> String {
    match *p {
        Principal::Anonymous => "an anonymous request".to_string(),
        Principal::Certificate { user, .. } => {
            let user = user
                .map(|u| format!("user \"{u}\""))
                .unwrap_or_else(|| "a certificate without CN".into());
            if groups.is_empty() {
                format!("{user} (no groups)")
            } else {
                let g: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
                format!("{user} (groups {})", g.join(", "))
            }
        }
    }
}
