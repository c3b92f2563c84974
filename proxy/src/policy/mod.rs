//! The authorization policy: permissions name the requests they cover
//! (`METHODS PATH` routes); groups, users, `authenticated` and `anonymous` hold permissions; a
//! request is allowed when the identity holds a permission that covers it.
//!
//! Loading compiles every route into one segment trie ([`matcher`]) whose nodes carry a bitset
//! of permissions per method, and every grant into a bitset, so [`Policy::decide`] is a trie walk
//! plus a few word-wise ANDs whatever the number of permissions, and allocates nothing for
//! policies of up to 1,024 permissions unless it denies a covered route.
//!
//! Files: [`normalize`] (request paths), [`route`] (the route grammar), `matcher` (the trie),
//! `load` (YAML and includes), `error` (messages).

pub mod authorize;
mod digest;
mod error;
pub mod learn;
pub mod learn_yaml;
mod load;
mod matcher;
pub mod normalize;
pub mod route;
pub mod target;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use authorize::{authorize, Verdict};
pub use error::PolicyError;
pub use normalize::{normalize_path, PathError};
pub use route::{Route, RouteError};
pub use target::{parse_target, PathParams, RequestTarget, TargetError};

use matcher::{first_common, has_bit, is_empty, ones, or_into, set_bit, FxMap, Trie, INLINE_WORDS};

/// Which certificate subject values are the identity's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum GroupAttribute {
    /// Every `O=` value (Anka before 1.48).
    #[default]
    #[serde(rename = "O")]
    O,
    /// Every `OU=` value.
    #[serde(rename = "OU")]
    Ou,
    /// The `OU=` values when the certificate has any, else the `O=` values (Anka 1.48 and later).
    #[serde(rename = "OU_else_O")]
    OuElseO,
}

impl GroupAttribute {
    /// The group values under this attribute, from a subject's `O=` and `OU=` values (in
    /// whatever form the caller holds them: as read, or RFC 2253-escaped).
    pub fn select<'a, T>(self, organizations: &'a [T], org_units: &'a [T]) -> &'a [T] {
        match self {
            GroupAttribute::O => organizations,
            GroupAttribute::Ou => org_units,
            GroupAttribute::OuElseO if org_units.is_empty() => organizations,
            GroupAttribute::OuElseO => org_units,
        }
    }

    /// The spelling used in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupAttribute::O => "O",
            GroupAttribute::Ou => "OU",
            GroupAttribute::OuElseO => "OU_else_O",
        }
    }
}

/// What a denial does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum Mode {
    /// Denials are answered with 401/403.
    #[default]
    #[serde(rename = "enforce")]
    Enforce,
    /// Would-be denials are logged and counted (`audit_deny`), then forwarded.
    #[serde(rename = "audit")]
    Audit,
}

impl Mode {
    /// The spelling used in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// Who is asking, as read from a verified client certificate (values raw UTF-8, in certificate
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal<'a> {
    /// No valid certificate: holds only the policy's `anonymous` permissions.
    Anonymous,
    /// A verified certificate.
    Certificate {
        /// Subject CN (the last one if several).
        user: Option<&'a str>,
        /// Subject O values.
        organizations: &'a [String],
        /// Subject OU values.
        org_units: &'a [String],
    },
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'p> {
    /// Allowed by this permission (the first, in file order, that covers the request and is held).
    Allow {
        /// The permission's name.
        permission: &'p str,
    },
    /// Denied.
    Deny(Denial<'p>),
}

impl<'p> Decision<'p> {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The permission that allowed the request.
    pub fn permission(&self) -> Option<&'p str> {
        match self {
            Decision::Allow { permission } => Some(permission),
            Decision::Deny(_) => None,
        }
    }
}

/// Why a request was denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial<'p> {
    /// No permission has a route that matches.
    NotCovered,
    /// These permissions cover the request (file order); the identity holds none of them.
    Requires(Vec<&'p str>),
}

impl Denial<'_> {
    /// The 401/403 `reason`: `<METHOD> <path> requires one of: <p1>, <p2>` or
    /// `<METHOD> <path> is covered by no permission`.
    pub fn reason(&self, method: &str, path: &str) -> String {
        match self {
            Denial::NotCovered => format!("{method} {path} is covered by no permission"),
            Denial::Requires(perms) => {
                format!("{method} {path} requires one of: {}", perms.join(", "))
            }
        }
    }
}

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

#[derive(Debug)]
struct Permission {
    name: String,
    routes: Vec<Route>,
    /// Index into `files`.
    file: usize,
}

/// A compiled grant list.
#[derive(Debug)]
struct Grant {
    bits: Box<[u64]>,
    /// Written with `"*"`.
    star: bool,
}

/// A loaded, compiled policy.
#[derive(Debug)]
pub struct Policy {
    files: Vec<PathBuf>,
    sha256: String,
    mode: Mode,
    group_attribute: GroupAttribute,
    permissions: Vec<Permission>,
    trie: Trie,
    groups: FxMap<String, Grant>,
    users: FxMap<String, Grant>,
    authenticated: Grant,
    anonymous: Grant,
    route_count: usize,
    warnings: Vec<String>,
}

impl Policy {
    /// Reads the file and its `include`s (relative to the including file, recursively; cycles
    /// are an error; a file reached twice is merged once).
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = load::read_main(path)?;
        Policy::compile(load::load_text(text, path)?)
    }

    /// The same from text (tests, fuzzing); includes are resolved relative to `origin`'s
    /// directory, and `origin` is reported as the file in errors and [`Policy::files`].
    pub fn from_yaml(yaml: &str, origin: &Path) -> Result<Policy, PolicyError> {
        Policy::compile(load::load_text(yaml.to_string(), origin)?)
    }

    fn compile(loaded: load::Loaded) -> Result<Policy, PolicyError> {
        let main_file = loaded.files.first().cloned().unwrap_or_default();
        let text = loaded.main_text().to_string();
        let permissions: Vec<Permission> = loaded
            .permissions
            .into_iter()
            .map(|p| Permission {
                name: p.name,
                routes: p.routes,
                file: p.file,
            })
            .collect();
        let n = permissions.len();
        let mut trie = Trie::new(n);
        let mut route_count = 0;
        for (i, p) in permissions.iter().enumerate() {
            for r in &p.routes {
                trie.insert(r, i);
                route_count += 1;
            }
        }
        let words = trie.words();
        let index: FxMap<&str, usize> = permissions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let known: Vec<&str> = permissions.iter().map(|p| p.name.as_str()).collect();
        let mut warnings = Vec::new();

        let compile = |keys: &[&str], names: &[String], warnings: &mut Vec<String>| {
            let mut bits = vec![0u64; words].into_boxed_slice();
            let mut star = false;
            let mut routeless: Vec<&str> = Vec::new();
            for name in names {
                if name == "*" {
                    star = true;
                    for i in 0..n {
                        set_bit(&mut bits, i);
                    }
                    continue;
                }
                let Some(&i) = index.get(name.as_str()) else {
                    return Err(load::unknown_permission(
                        &main_file, &text, keys, name, &known,
                    ));
                };
                set_bit(&mut bits, i);
                if permissions.get(i).is_some_and(|p| p.routes.is_empty()) {
                    routeless.push(name);
                }
            }
            if !routeless.is_empty() {
                warnings.push(format!(
                    "{}: {}: {} no routes, so {} nothing until routes are added: {}",
                    main_file.display(),
                    keys.join("."),
                    if routeless.len() == 1 {
                        "this permission has"
                    } else {
                        "these permissions have"
                    },
                    if routeless.len() == 1 {
                        "it allows"
                    } else {
                        "they allow"
                    },
                    routeless.join(", ")
                ));
            }
            Ok(Grant { bits, star })
        };

        let raw = loaded.main;
        let mut groups = FxMap::default();
        for (name, names) in raw.groups.unwrap_or_default().0 {
            let grant = compile(&["groups", &name], &names.0, &mut warnings)?;
            if groups.insert(name.clone(), grant).is_some() {
                return Err(PolicyError::invalid(
                    &main_file,
                    format!("groups.{name}"),
                    find_second_key(&text, "groups", &name),
                    format!("group \"{name}\" is listed twice"),
                    "merge the two lists into one entry",
                ));
            }
        }
        let mut users = FxMap::default();
        for (name, names) in raw.users.unwrap_or_default().0 {
            let grant = compile(&["users", &name], &names.0, &mut warnings)?;
            if users.insert(name.clone(), grant).is_some() {
                return Err(PolicyError::invalid(
                    &main_file,
                    format!("users.{name}"),
                    find_second_key(&text, "users", &name),
                    format!("user \"{name}\" is listed twice"),
                    "merge the two lists into one entry",
                ));
            }
        }
        let authenticated = compile(
            &["authenticated"],
            &raw.authenticated.unwrap_or_default().0,
            &mut warnings,
        )?;
        let anonymous = compile(
            &["anonymous"],
            &raw.anonymous.unwrap_or_default().0,
            &mut warnings,
        )?;
        if anonymous.star {
            warnings.push(format!(
                "{}: anonymous: \"*\" lets requests without a certificate do everything",
                main_file.display()
            ));
        }

        let mut all = Vec::new();
        for t in &loaded.texts {
            all.extend_from_slice(t.as_bytes());
        }
        Ok(Policy {
            files: loaded.files,
            sha256: digest::sha256_hex(&all),
            mode: raw.mode.unwrap_or_default(),
            group_attribute: raw.group_attribute.unwrap_or_default(),
            permissions,
            trie,
            groups,
            users,
            authenticated,
            anonymous,
            route_count,
            warnings,
        })
    }

    /// The policy file and every include, in load order (for the reload watcher).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Lower-case hex SHA-256 over the bytes of all files, in load order.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256
    }

    /// `enforce` or `audit`.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Which subject values are groups.
    pub fn group_attribute(&self) -> GroupAttribute {
        self.group_attribute
    }

    /// Things `check` should print: grants of permissions without routes, `"*"` for anonymous.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn group_values<'a>(&self, p: &Principal<'a>) -> &'a [String] {
        match *p {
            Principal::Anonymous => &[],
            Principal::Certificate {
                organizations,
                org_units,
                ..
            } => self.group_attribute.select(organizations, org_units),
        }
    }

    /// The group values that count for this principal under `group_attribute` (certificate
    /// order). Anonymous: empty.
    pub fn groups_of<'a>(&self, p: &Principal<'a>) -> Vec<&'a str> {
        self.group_values(p).iter().map(String::as_str).collect()
    }

    fn held_into(&self, p: &Principal<'_>, acc: &mut [u64]) {
        match *p {
            Principal::Anonymous => or_into(acc, &self.anonymous.bits),
            Principal::Certificate { user, .. } => {
                or_into(acc, &self.authenticated.bits);
                for g in self.group_values(p) {
                    if let Some(grant) = self.groups.get(g.as_str()) {
                        or_into(acc, &grant.bits);
                    }
                }
                if let Some(grant) = user.and_then(|u| self.users.get(u)) {
                    or_into(acc, &grant.bits);
                }
            }
        }
    }

    fn name(&self, i: usize) -> Option<&str> {
        self.permissions.get(i).map(|p| p.name.as_str())
    }

    /// Hot path, once per request. `path` is already normalised (no query string).
    pub fn decide(&self, p: &Principal<'_>, method: &str, path: &str) -> Decision<'_> {
        let words = self.trie.words();
        if words <= INLINE_WORDS {
            let mut held = [0u64; INLINE_WORDS];
            let mut covering = [0u64; INLINE_WORDS];
            self.decide_in(p, method, path, &mut held[..words], &mut covering[..words])
        } else {
            let mut held = vec![0u64; words];
            let mut covering = vec![0u64; words];
            self.decide_in(p, method, path, &mut held, &mut covering)
        }
    }

    fn decide_in(
        &self,
        p: &Principal<'_>,
        method: &str,
        path: &str,
        held: &mut [u64],
        covering: &mut [u64],
    ) -> Decision<'_> {
        self.trie.covering_into(method, path, covering);
        if is_empty(covering) {
            return Decision::Deny(Denial::NotCovered);
        }
        self.held_into(p, held);
        match first_common(held, covering).and_then(|i| self.name(i)) {
            Some(permission) => Decision::Allow { permission },
            None => Decision::Deny(Denial::Requires(
                ones(covering).filter_map(|i| self.name(i)).collect(),
            )),
        }
    }

    /// The permissions this principal holds, in file order.
    pub fn held_by(&self, p: &Principal<'_>) -> Vec<&str> {
        let mut held = vec![0u64; self.trie.words()];
        self.held_into(p, &mut held);
        ones(&held).filter_map(|i| self.name(i)).collect()
    }

    /// For `certgate explain`: everything behind a decision.
    pub fn explain(&self, p: &Principal<'_>, method: &str, path: &str) -> Explanation {
        let words = self.trie.words();
        let groups: Vec<String> = self.group_values(p).to_vec();
        let user = match *p {
            Principal::Certificate { user, .. } => user.map(str::to_string),
            Principal::Anonymous => None,
        };

        // Sources in the order an operator reads them: authenticated, groups, users.
        let mut sources: Vec<(String, &Grant)> = Vec::new();
        match *p {
            Principal::Anonymous => sources.push(("anonymous".into(), &self.anonymous)),
            Principal::Certificate { user, .. } => {
                sources.push(("authenticated".into(), &self.authenticated));
                for g in &groups {
                    if let Some(grant) = self.groups.get(g.as_str()) {
                        sources.push((format!("group {g}"), grant));
                    }
                }
                if let Some((u, grant)) = user.and_then(|u| self.users.get(u).map(|g| (u, g))) {
                    sources.push((format!("user {u}"), grant));
                }
            }
        }
        let mut held_bits = vec![0u64; words];
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
        let held_from: Vec<(String, String)> = from
            .into_iter()
            .filter_map(|(i, _, label)| self.name(i).map(|n| (n.to_string(), label)))
            .collect();
        let held: Vec<String> = ones(&held_bits)
            .filter_map(|i| self.name(i).map(str::to_string))
            .collect();

        let mut cov_bits = vec![0u64; words];
        self.trie.covering_into(method, path, &mut cov_bits);
        let covering: Vec<String> = ones(&cov_bits)
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

        let decision = self.decide(p, method, path);
        let anonymous = matches!(p, Principal::Anonymous);
        let status = if anonymous {
            "401 Authentication Required"
        } else {
            "403 Permission Denied"
        };
        let who = describe(p, &groups);
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
            Decision::Deny(d @ Denial::NotCovered) => format!(
                "denied ({status}): {}; whatever no permission covers is denied",
                d.reason(method, path)
            ),
            Decision::Deny(d @ Denial::Requires(_)) => {
                let holds = if held.is_empty() {
                    "nothing".to_string()
                } else {
                    held.join(", ")
                };
                format!(
                    "denied ({status}): {}; {who} holds none of them (it holds: {holds})",
                    d.reason(method, path)
                )
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
            held,
            held_from,
            covering,
            covering_routes,
            allowed: decision.is_allowed(),
            permission: decision.permission().map(str::to_string),
            rule,
        }
    }

    /// Number of permissions (all files).
    pub fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    /// Number of `groups` entries.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Number of `users` entries.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of routes over all permissions.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Permission names in file order (includes first).
    pub fn permission_names(&self) -> impl Iterator<Item = &str> {
        self.permissions.iter().map(|p| p.name.as_str())
    }

    /// The routes of a permission as written, and the file that defines it.
    pub fn permission(&self, name: &str) -> Option<(Vec<&str>, &Path)> {
        let p = self.permissions.iter().find(|p| p.name == name)?;
        let file = self.files.get(p.file).map(PathBuf::as_path)?;
        Some((p.routes.iter().map(Route::text).collect(), file))
    }

    /// The permissions with a route that matches the request, in file order, each with its first
    /// matching route (`certgate policy learn` picks among them).
    pub fn covering(&self, method: &str, path: &str) -> Vec<(&str, &Route)> {
        let mut bits = vec![0u64; self.trie.words()];
        self.trie.covering_into(method, path, &mut bits);
        ones(&bits)
            .filter_map(|i| {
                let p = self.permissions.get(i)?;
                let r = p.routes.iter().find(|r| r.matches(method, path))?;
                Some((p.name.as_str(), r))
            })
            .collect()
    }

    /// Whether the principal holds `permission` (unknown names: false).
    pub fn holds(&self, p: &Principal<'_>, permission: &str) -> bool {
        let Some(i) = self.permissions.iter().position(|x| x.name == permission) else {
            return false;
        };
        let mut held = vec![0u64; self.trie.words()];
        self.held_into(p, &mut held);
        has_bit(&held, i)
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

/// Line of the second occurrence of `name` as a key under `top` (for "listed twice").
fn find_second_key(text: &str, top: &str, name: &str) -> Option<usize> {
    let first = error::find_line(text, &[top, name], None)?;
    let forms = [
        format!("{name}:"),
        format!("\"{name}\":"),
        format!("'{name}':"),
    ];
    text.lines()
        .enumerate()
        .skip(first)
        .find(|(_, l)| {
            let t = l.trim_start();
            forms.iter().any(|f| t.starts_with(f.as_str()))
        })
        .map(|(i, _)| i + 1)
}
