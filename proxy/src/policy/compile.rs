//! From the loaded files to the compiled policy: every route into the segment trie, every
//! grant into a bitset of permissions, and the warnings `check` prints.

use std::path::PathBuf;

use super::matcher::{has_bit, set_bit, FxMap, Trie};
use super::spiffe::SpiffePattern;
use super::{digest, error, load, Grant, Permission, Policy, PolicyError};

/// What compiling a grant list needs: the permissions by name, and where to report errors.
struct Grants<'a> {
    main_file: PathBuf,
    text: &'a str,
    permissions: &'a [Permission],
    index: FxMap<&'a str, usize>,
    words: usize,
    warnings: Vec<String>,
}

impl Grants<'_> {
    /// One grant list (`keys` is where it is in the file, for errors and warnings).
    fn compile(&mut self, keys: &[&str], names: &[String]) -> Result<Grant, PolicyError> {
        let mut bits = vec![0u64; self.words].into_boxed_slice();
        let mut star = false;
        let mut routeless: Vec<&str> = Vec::new();
        for name in names {
            if name == "*" {
                star = true;
                for i in 0..self.permissions.len() {
                    set_bit(&mut bits, i);
                }
                continue;
            }
            let Some(&i) = self.index.get(name.as_str()) else {
                let known: Vec<&str> = self.permissions.iter().map(|p| p.name.as_str()).collect();
                return Err(load::unknown_permission(
                    &self.main_file,
                    self.text,
                    keys,
                    name,
                    &known,
                ));
            };
            set_bit(&mut bits, i);
            if self.permissions.get(i).is_some_and(|p| p.routes.is_empty()) {
                routeless.push(name);
            }
        }
        if !routeless.is_empty() {
            let one = routeless.len() == 1;
            self.warnings.push(format!(
                "{}: {}: {} no routes, so {} nothing until routes are added: {}",
                self.main_file.display(),
                keys.join("."),
                if one {
                    "this permission has"
                } else {
                    "these permissions have"
                },
                if one { "it allows" } else { "they allow" },
                routeless.join(", ")
            ));
        }
        Ok(Grant { bits, star })
    }

    /// The grants of `groups` or `users`, each name once.
    fn named(
        &mut self,
        top: &str,
        what: &str,
        lists: Vec<(String, Vec<String>)>,
    ) -> Result<FxMap<String, Grant>, PolicyError> {
        let mut out = FxMap::default();
        for (name, names) in lists {
            let grant = self.compile(&[top, &name], &names)?;
            if out.insert(name.clone(), grant).is_some() {
                return Err(PolicyError::invalid(
                    &self.main_file,
                    format!("{top}.{name}"),
                    find_second_key(self.text, top, &name),
                    format!("{what} \"{name}\" is listed twice"),
                    "merge the two lists into one entry",
                ));
            }
        }
        Ok(out)
    }

    /// The `spiffe:` grants in file order, each pattern checked and listed once.
    fn spiffe(
        &mut self,
        lists: Vec<(String, Vec<String>)>,
    ) -> Result<Vec<(SpiffePattern, Grant)>, PolicyError> {
        let mut out: Vec<(SpiffePattern, Grant)> = Vec::new();
        for (key, names) in lists {
            let pattern = SpiffePattern::parse(&key).map_err(|e| {
                PolicyError::invalid(
                    &self.main_file,
                    format!("spiffe.{key}"),
                    error::find_line(self.text, &["spiffe", &key], None),
                    e.problem,
                    e.fix,
                )
            })?;
            if out.iter().any(|(p, _)| p.text() == key) {
                return Err(PolicyError::invalid(
                    &self.main_file,
                    format!("spiffe.{key}"),
                    find_second_key(self.text, "spiffe", &key),
                    format!("spiffe pattern \"{key}\" is listed twice"),
                    "merge the two lists into one entry",
                ));
            }
            let grant = self.compile(&["spiffe", &key], &names)?;
            out.push((pattern, grant));
        }
        Ok(out)
    }
}

impl Policy {
    pub(super) fn compile(loaded: load::Loaded) -> Result<Policy, PolicyError> {
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
        let mut trie = Trie::new(permissions.len());
        let mut route_count = 0;
        for (i, p) in permissions.iter().enumerate() {
            for r in &p.routes {
                trie.insert(r, i);
                route_count += 1;
            }
        }
        let mut grants = Grants {
            main_file: loaded.files.first().cloned().unwrap_or_default(),
            text: &text,
            permissions: &permissions,
            index: permissions
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i))
                .collect(),
            words: trie.words(),
            warnings: Vec::new(),
        };
        let raw = loaded.main;
        let groups = grants.named(
            "groups",
            "group",
            raw.groups
                .unwrap_or_default()
                .0
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )?;
        let users = grants.named(
            "users",
            "user",
            raw.users
                .unwrap_or_default()
                .0
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )?;
        let spiffe = grants.spiffe(
            raw.spiffe
                .unwrap_or_default()
                .0
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        )?;
        let authenticated =
            grants.compile(&["authenticated"], &raw.authenticated.unwrap_or_default().0)?;
        let anonymous = grants.compile(&["anonymous"], &raw.anonymous.unwrap_or_default().0)?;
        if anonymous.star {
            grants.warnings.push(format!(
                "{}: anonymous: \"*\" lets requests without a certificate do everything",
                grants.main_file.display()
            ));
        }
        // A certificate holder does not hold `anonymous` (contract: anonymous XOR
        // authenticated + groups + user), so a permission only anonymous requests hold can be
        // refused (403) to a client that presents a valid certificate.
        let only_anonymous: Vec<&str> = permissions
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                has_bit(&anonymous.bits, *i)
                    && !authenticated.star
                    && !has_bit(&authenticated.bits, *i)
            })
            .map(|(_, p)| p.name.as_str())
            .collect();
        if !only_anonymous.is_empty() {
            grants.warnings.push(format!(
                "{}: anonymous: {} held without a certificate but not through authenticated: a client presenting a valid certificate holds {} only through its groups or user, and may get 403 where one without a certificate gets 200; add {} to authenticated if every client may have {}",
                grants.main_file.display(),
                only_anonymous.join(", "),
                if only_anonymous.len() == 1 { "it" } else { "them" },
                if only_anonymous.len() == 1 { "it" } else { "them" },
                if only_anonymous.len() == 1 { "it" } else { "them" },
            ));
        }
        let warnings = grants.warnings;

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
            users_from: raw.users_from.unwrap_or_default(),
            spiffe,
            authenticated,
            anonymous,
            route_count,
            warnings,
        })
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
