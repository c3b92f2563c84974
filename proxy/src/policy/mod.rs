//! The authorization policy: permissions name the requests they cover
//! (`METHODS PATH` routes); groups, users, SPIFFE ID patterns, `authenticated` and `anonymous`
//! hold permissions; a request is allowed when the identity holds a permission that covers it.
//!
//! Loading compiles every route into one segment trie (`matcher`) whose nodes carry a bitset
//! of permissions per method, and every grant into a bitset, so [`Policy::decide`] is a trie walk
//! plus a few word-wise ANDs whatever the number of permissions, and allocates nothing for
//! policies of up to 1,024 permissions unless it denies a covered route.
//!
//! Files: `normalize` (request paths), [`route`] (the route grammar), `matcher` (the trie),
//! `load` (YAML and includes), `error` (messages), `spiffe` (SPIFFE IDs and `spiffe:`
//! patterns).

pub(crate) mod authorize;
mod compile;
mod digest;
mod error;
mod explain;
mod load;
mod matcher;
pub(crate) mod normalize;
pub mod route;
pub(crate) mod spiffe;
pub(crate) mod target;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use authorize::{authorize, AllowedBy, Asker, Refusal, RefusalKind, Unauthenticated, Verdict};
pub use error::PolicyError;
pub use explain::Explanation;
pub use normalize::{normalize_path, PathError};
pub use route::{Route, RouteError};
pub use target::{parse_target, RequestTarget, TargetError};

use spiffe::SpiffePattern;

use matcher::{first_common, has_bit, is_empty, ones, or_into, FxMap, Trie, INLINE_WORDS};

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

/// Which certificate field names the user that `users:` keys match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum UsersFrom {
    /// The subject CN (the last one if several).
    #[default]
    #[serde(rename = "cn")]
    Cn,
    /// Every URI SAN.
    #[serde(rename = "uri_san")]
    UriSan,
    /// Every DNS SAN.
    #[serde(rename = "dns_san")]
    DnsSan,
    /// Every email (rfc822Name) SAN.
    #[serde(rename = "email")]
    Email,
}

impl UsersFrom {
    /// The spelling used in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            UsersFrom::Cn => "cn",
            UsersFrom::UriSan => "uri_san",
            UsersFrom::DnsSan => "dns_san",
            UsersFrom::Email => "email",
        }
    }
}

/// A certificate's subject alternative names, in certificate order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sans<'a> {
    pub dns: &'a [String],
    pub uri: &'a [String],
    pub email: &'a [String],
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
        /// SANs: `users_from` other than `cn` reads users from them, `spiffe:` the URI SANs.
        sans: Sans<'a>,
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
    users_from: UsersFrom,
    /// `spiffe:` patterns in file order.
    spiffe: Vec<(SpiffePattern, Grant)>,
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

    /// Which certificate field `users:` keys match.
    pub fn users_from(&self) -> UsersFrom {
        self.users_from
    }

    /// The values of this principal that `users:` keys are matched against (certificate order;
    /// several only for SAN kinds). Anonymous: none.
    fn user_keys<'a>(&self, p: &Principal<'a>) -> impl Iterator<Item = &'a str> {
        let (cn, list): (Option<&'a str>, &'a [String]) = match *p {
            Principal::Anonymous => (None, &[]),
            Principal::Certificate { user, sans, .. } => match self.users_from {
                UsersFrom::Cn => (user, &[]),
                UsersFrom::UriSan => (None, sans.uri),
                UsersFrom::DnsSan => (None, sans.dns),
                UsersFrom::Email => (None, sans.email),
            },
        };
        cn.into_iter().chain(list.iter().map(String::as_str))
    }

    /// The `spiffe:` patterns (with their grants) that the principal's SPIFFE ID matches, in
    /// file order; none when it has no single valid SPIFFE ID.
    fn spiffe_matches<'s, 'a: 's>(
        &'s self,
        p: &Principal<'a>,
    ) -> impl Iterator<Item = &'s (SpiffePattern, Grant)> + 's {
        let id = match *p {
            Principal::Certificate { sans, .. } if !self.spiffe.is_empty() => {
                spiffe::svid_id(sans.uri).ok()
            }
            _ => None,
        };
        self.spiffe
            .iter()
            .filter(move |(pattern, _)| id.as_ref().is_some_and(|id| pattern.matches(id)))
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
            Principal::Certificate { .. } => {
                or_into(acc, &self.authenticated.bits);
                for g in self.group_values(p) {
                    if let Some(grant) = self.groups.get(g.as_str()) {
                        or_into(acc, &grant.bits);
                    }
                }
                for key in self.user_keys(p) {
                    if let Some(grant) = self.users.get(key) {
                        or_into(acc, &grant.bits);
                    }
                }
                for (_, grant) in self.spiffe_matches(p) {
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

    /// Number of `spiffe` entries.
    pub fn spiffe_count(&self) -> usize {
        self.spiffe.len()
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

    /// Every route of every permission, in file order, with its permission's name.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.permissions
            .iter()
            .flat_map(|p| p.routes.iter().map(move |r| (p.name.as_str(), r)))
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
