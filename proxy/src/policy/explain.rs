//! `certgate explain`'s view of a decision: the groups that count, every way each permission
//! is held, the routes covering the request, and the rule that decided, in one sentence.

use serde::Serialize;

use super::matcher::{ones, or_into};
use super::{spiffe, Decision, Denial, Grant, Mode, Policy, Principal, UsersFrom};

/// Everything behind a decision, for `certgate explain`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The group values that count under `group_attribute`, in certificate order (whether or
    /// not the policy names them).
    pub groups: Vec<String>,
    /// The CN.
    pub user: Option<String>,
    /// The policy's `users_from` (`cn`, `uri_san`, `dns_san`, `email`).
    pub users_from: String,
    /// The certificate values `users:` keys are matched against (certificate order).
    pub user_keys: Vec<String>,
    /// The certificate's single valid SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// Why the certificate has no SPIFFE ID that `spiffe:` patterns are matched against, when
    /// it has `spiffe` URI SANs (several, or an invalid one).
    pub spiffe_note: Option<String>,
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
        let user_keys: Vec<String> = self.user_keys(p).map(str::to_string).collect();
        let (spiffe_id, spiffe_note) = match *p {
            Principal::Certificate { sans, .. } => match spiffe::svid_id(sans.uri) {
                Ok(id) => (Some(id.id.to_string()), None),
                Err(spiffe::NoSpiffeId::Absent) => (None, None),
                Err(why) => (None, Some(why.to_string())),
            },
            Principal::Anonymous => (None, None),
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
            Decision::Deny(d) => {
                let who = describe(p, &groups, self.users_from, spiffe_id.as_deref());
                denial_rule(p, d, &who, &held, method, path)
            }
        };
        if self.mode == Mode::Audit && !decision.is_allowed() {
            rule.push_str(
                "; the policy is in audit mode, so the request would be forwarded and logged as audit_deny",
            );
        }
        Explanation {
            groups,
            user,
            users_from: self.users_from.as_str().to_string(),
            user_keys,
            spiffe_id,
            spiffe_note,
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
        // Sources in the order an operator reads them: authenticated, groups, users, spiffe.
        let mut sources: Vec<(String, &Grant)> = Vec::new();
        match *p {
            Principal::Anonymous => sources.push(("anonymous".into(), &self.anonymous)),
            Principal::Certificate { .. } => {
                sources.push(("authenticated".into(), &self.authenticated));
                for g in groups {
                    if let Some(grant) = self.groups.get(g.as_str()) {
                        sources.push((format!("group {g}"), grant));
                    }
                }
                for u in self.user_keys(p) {
                    if let Some(grant) = self.users.get(u) {
                        let label = match self.users_from {
                            UsersFrom::Cn => format!("user {u}"),
                            other => format!("user {u} ({})", other.as_str()),
                        };
                        sources.push((label, grant));
                    }
                }
                for (pattern, grant) in self.spiffe_matches(p) {
                    sources.push((format!("spiffe pattern \"{}\"", pattern.text()), grant));
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
    who: &str,
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
                who
            )
        }
    }
}

fn describe(
    p: &Principal<'_>,
    groups: &[String],
    users_from: UsersFrom,
    spiffe_id: Option<&str>,
) -> String {
    match *p {
        Principal::Anonymous => "an anonymous request".to_string(),
        Principal::Certificate { user, sans, .. } => {
            let (kind, values): (&str, &[String]) = match users_from {
                UsersFrom::Cn => ("", &[]),
                UsersFrom::UriSan => ("URI SAN", sans.uri),
                UsersFrom::DnsSan => ("DNS SAN", sans.dns),
                UsersFrom::Email => ("email SAN", sans.email),
            };
            let user = match (users_from, user, values) {
                (UsersFrom::Cn, Some(u), _) => format!("user \"{u}\""),
                (UsersFrom::Cn, None, _) => "a certificate without CN".into(),
                (_, _, []) => format!("a certificate without {kind}"),
                (_, _, v) => {
                    let v: Vec<String> = v.iter().map(|u| format!("\"{u}\"")).collect();
                    format!("user {} ({kind})", v.join(", "))
                }
            };
            let user = match spiffe_id {
                Some(id) => format!("{user}, SPIFFE ID \"{id}\""),
                None => user,
            };
            if groups.is_empty() {
                format!("{user} (no groups)")
            } else {
                let g: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
                format!("{user} (groups {})", g.join(", "))
            }
        }
    }
}
