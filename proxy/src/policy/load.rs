//! Reading policy files: YAML → raw definitions, `include` resolution (relative to the including
//! file, recursive, cycles refused, a file reached twice merged once), and the checks that need
//! the source text for their line numbers.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::{find_line, suggestions, PolicyError};
use super::route::Route;
use super::{GroupAttribute, Mode, UsersFrom};

/// Includes deeper than this are refused (a cycle through symlinks or a runaway generator).
const MAX_INCLUDE_DEPTH: usize = 32;

const TOP_KEYS: &str = "include, permissions, groups, users, users_from, spiffe, authenticated, anonymous, group_attribute, mode";

/// A list of strings; a single string and an empty value (null) are accepted too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Names(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Names, E> {
                Ok(Names(vec![v.to_string()]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Names, E> {
                Ok(Names::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Names, E> {
                Ok(Names::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(Names(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping kept in file order, duplicates included (they are reported with the file's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ordered<T>(pub(crate) Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to lists")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Ordered<T>, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Ordered<T>, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One policy file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    #[serde(default)]
    pub(crate) include: Names,
    #[serde(default)]
    pub(crate) permissions: Ordered<Names>,
    pub(crate) groups: Option<Ordered<Names>>,
    pub(crate) users: Option<Ordered<Names>>,
    pub(crate) users_from: Option<UsersFrom>,
    pub(crate) spiffe: Option<Ordered<Names>>,
    pub(crate) authenticated: Option<Names>,
    pub(crate) anonymous: Option<Names>,
    pub(crate) group_attribute: Option<GroupAttribute>,
    pub(crate) mode: Option<Mode>,
}

/// A permission definition with where it came from.
#[derive(Debug)]
pub(crate) struct PermissionDef {
    pub(crate) name: String,
    pub(crate) routes: Vec<Route>,
    /// Index into `Loaded::files`.
    pub(crate) file: usize,
}

/// Everything read: files in load order, their bytes, the permissions in merge order, and the
/// main file's grants.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) texts: Vec<String>,
    pub(crate) permissions: Vec<PermissionDef>,
    pub(crate) main: RawPolicy,
}

impl Loaded {
    /// The main file's source text.
    pub(crate) fn main_text(&self) -> &str {
        self.texts.first().map(String::as_str).unwrap_or("")
    }
}

struct Loader {
    files: Vec<PathBuf>,
    texts: Vec<String>,
    /// Canonical paths of the files on the include stack (cycle detection).
    stack: Vec<PathBuf>,
    /// Canonical paths of every file loaded (a file reached twice is merged once).
    seen: HashSet<PathBuf>,
    permissions: Vec<PermissionDef>,
    names: std::collections::HashMap<String, usize>,
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads and merges a policy from text whose (possibly virtual) location is `origin`.
pub(crate) fn load_text(text: String, origin: &Path) -> Result<Loaded, PolicyError> {
    let mut loader = Loader {
        files: Vec::new(),
        texts: Vec::new(),
        stack: Vec::new(),
        seen: HashSet::new(),
        permissions: Vec::new(),
        names: std::collections::HashMap::new(),
    };
    let main = loader.file(origin, text, true)?;
    Ok(Loaded {
        files: loader.files,
        texts: loader.texts,
        permissions: loader.permissions,
        main,
    })
}

/// Policy files larger than this are refused (a policy is a few kilobytes; this keeps a wrong
/// path such as a log file or a device from being read whole).
pub(crate) const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a regular file of at most [`MAX_FILE_BYTES`] as UTF-8.
fn read_policy_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_FILE_BYTES / (1024 * 1024)),
        ));
    }
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "file grew while being read",
        ));
    }
    Ok(text)
}

/// Reads the main policy file.
pub(crate) fn read_main(path: &Path) -> Result<String, PolicyError> {
    read_policy_file(path).map_err(|source| PolicyError::Read {
        file: path.to_path_buf(),
        source,
        fix: "check the policy: path of the listener (relative paths are relative to the config file) and the file's permissions".into(),
    })
}

fn parse(file: &Path, text: &str) -> Result<RawPolicy, PolicyError> {
    if text.trim().is_empty()
        || text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        })
    {
        return Err(PolicyError::invalid(
            file,
            "",
            None,
            "file is empty",
            "write at least a permissions: mapping (an empty file is refused so that a half-written file never replaces a good policy)",
        ));
    }
    serde_yaml_ng::from_str::<RawPolicy>(text).map_err(|e| yaml_error(file, &e))
}

fn yaml_error(file: &Path, e: &serde_yaml_ng::Error) -> PolicyError {
    let line = e.location().map(|l| l.line());
    let mut msg = e.to_string();
    // serde_yaml_ng appends " at line L column C"; the line is reported our own way.
    if let Some(pos) = msg.find(" at line ") {
        let tail = &msg[pos + " at line ".len()..];
        if tail.contains(" column ") {
            let rest = tail
                .find(',')
                .map(|i| tail[i..].to_string())
                .unwrap_or_default();
            msg.truncate(pos);
            msg.push_str(&rest);
        }
    }
    msg = msg.replace(
        "struct RawPolicy",
        "a mapping of policy keys (permissions:, groups:, ...)",
    );
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        return PolicyError::invalid(
            file,
            name,
            line,
            "unknown key",
            format!("the keys of a policy file are: {TOP_KEYS}; check the spelling"),
        );
    }
    let fix = if msg.contains("unknown variant") {
        "use one of the values listed (they are case-sensitive)"
    } else if msg.contains("invalid type") {
        "permissions, groups, users and spiffe map names to lists (e.g. `list_vms: [\"GET /api/v1/vm\"]`, `DevOps: [list_vms]`, `\"spiffe://example.org/ns/ci/sa/*\": [list_vms]`); include, authenticated and anonymous are lists"
    } else if msg.contains("more than one document") {
        "keep one YAML document per file (remove the extra ---)"
    } else {
        "fix the YAML syntax"
    };
    // serde_yaml_ng prefixes nested errors with their key path ("groups.DevOps: invalid type").
    let (key, problem) = match msg.split_once(": ") {
        Some((k, p)) if !k.contains(' ') && !k.is_empty() => (k.to_string(), p.to_string()),
        _ => (String::new(), msg.clone()),
    };
    PolicyError::invalid(file, key, line, problem, fix)
}

fn valid_permission_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl Loader {
    fn file(&mut self, path: &Path, text: String, main: bool) -> Result<RawPolicy, PolicyError> {
        let canon = canonical(path);
        self.seen.insert(canon.clone());
        self.stack.push(canon);
        self.files.push(path.to_path_buf());
        self.texts.push(text);
        let index = self.texts.len() - 1;
        let text = self.texts.get(index).cloned().unwrap_or_default();
        let mut raw = parse(path, &text)?;
        if !main {
            self.only_permissions(path, &text, &raw)?;
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for inc in std::mem::take(&mut raw.include.0) {
            self.include(path, &text, &base, &inc)?;
        }
        for (name, routes) in std::mem::take(&mut raw.permissions.0) {
            self.permission(path, &text, index, name, routes)?;
        }
        self.stack.pop();
        Ok(raw)
    }

    /// An included file holds permissions and includes only: grants belong to the main file.
    fn only_permissions(
        &self,
        path: &Path,
        text: &str,
        raw: &RawPolicy,
    ) -> Result<(), PolicyError> {
        let grants = [
            ("groups", raw.groups.is_some()),
            ("users", raw.users.is_some()),
            ("users_from", raw.users_from.is_some()),
            ("spiffe", raw.spiffe.is_some()),
            ("authenticated", raw.authenticated.is_some()),
            ("anonymous", raw.anonymous.is_some()),
            ("group_attribute", raw.group_attribute.is_some()),
            ("mode", raw.mode.is_some()),
        ];
        if let Some((key, _)) = grants.iter().find(|(_, present)| *present) {
            let includer = self
                .files
                .first()
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            return Err(PolicyError::invalid(
                path,
                *key,
                find_line(text, &[key], None),
                "an included file may only contain permissions: and include:",
                format!("move {key}: to the file that includes it ({includer})"),
            ));
        }
        Ok(())
    }

    /// Loads the file `inc` names (relative to `base`), unless it was loaded already.
    fn include(
        &mut self,
        path: &Path,
        text: &str,
        base: &Path,
        inc: &str,
    ) -> Result<(), PolicyError> {
        let line = find_line(text, &["include"], Some(inc));
        if inc.trim().is_empty() {
            return Err(PolicyError::invalid(
                path,
                "include",
                line,
                "empty file name",
                "name a policy file, relative to this file's directory",
            ));
        }
        let target = base.join(inc);
        let canon = canonical(&target);
        if self.stack.contains(&canon) {
            let mut chain: Vec<String> = self
                .stack
                .iter()
                .skip_while(|p| **p != canon)
                .map(|p| p.display().to_string())
                .collect();
            chain.push(canon.display().to_string());
            return Err(PolicyError::invalid(
                path,
                "include",
                line,
                format!("include cycle: {}", chain.join(" -> ")),
                format!("remove \"{inc}\" from include: (or another link of the cycle)"),
            ));
        }
        if self.seen.contains(&canon) {
            // Reached twice without a cycle (A includes B and C, both include D): its
            // permissions are already merged.
            return Ok(());
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(PolicyError::invalid(
                path,
                "include",
                line,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} files"),
                "flatten the includes",
            ));
        }
        let inc_text = read_policy_file(&target).map_err(|e| {
            PolicyError::invalid(
                path,
                "include",
                line,
                format!("cannot read \"{inc}\" ({}): {e}", target.display()),
                "fix the name (relative to this file's directory) or remove it from include:",
            )
        })?;
        self.file(&target, inc_text, false)?;
        Ok(())
    }

    /// One permission of the file at `index`: a valid, unique name and routes that parse.
    fn permission(
        &mut self,
        path: &Path,
        text: &str,
        index: usize,
        name: String,
        routes: Names,
    ) -> Result<(), PolicyError> {
        let key = format!("permissions.{name}");
        if !valid_permission_name(&name) {
            let problem = if name == "*" {
                "\"*\" cannot be a permission name (it means every permission in grants)"
                    .to_string()
            } else {
                format!("invalid permission name \"{name}\"")
            };
            return Err(PolicyError::invalid(
                path,
                key,
                find_line(text, &["permissions", &name], None),
                problem,
                "use letters, digits, _ - . : (at most 128), e.g. list_vms",
            ));
        }
        if let Some(&prev) = self.names.get(&name) {
            let prev_file = self
                .permissions
                .get(prev)
                .and_then(|p| self.files.get(p.file))
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let here = self.files.get(index).map(|f| f.display().to_string());
            let same = here.as_deref() == Some(prev_file.as_str());
            return Err(PolicyError::invalid(
                path,
                key,
                find_line(text, &["permissions", &name], None),
                if same {
                    format!("permission \"{name}\" is defined twice in this file")
                } else {
                    format!("permission \"{name}\" is already defined in {prev_file}")
                },
                "permission names must be unique across a policy and its includes: rename or remove one",
            ));
        }
        let mut parsed = Vec::with_capacity(routes.0.len());
        for r in &routes.0 {
            let route = Route::parse(r).map_err(|e| {
                PolicyError::invalid(
                    path,
                    key.clone(),
                    find_line(text, &["permissions", &name], Some(r.trim())),
                    format!("bad route \"{r}\": {}", e.problem),
                    e.fix,
                )
            })?;
            parsed.push(route);
        }
        self.names.insert(name.clone(), self.permissions.len());
        self.permissions.push(PermissionDef {
            name,
            routes: parsed,
            file: index,
        });
        Ok(())
    }
}

/// The error for a grant naming a permission that no file defines, with the closest names.
pub(crate) fn unknown_permission(
    file: &Path,
    text: &str,
    keys: &[&str],
    name: &str,
    known: &[&str],
) -> PolicyError {
    let near = suggestions(name, known.iter().copied());
    let hint = if near.is_empty() {
        if known.is_empty() {
            "no permissions are defined".to_string()
        } else {
            let first: Vec<String> = known.iter().take(5).map(|k| format!("\"{k}\"")).collect();
            let more = if known.len() > 5 { ", ..." } else { "" };
            format!("known permissions: {}{more}", first.join(", "))
        }
    } else {
        let near: Vec<String> = near.iter().map(|k| format!("\"{k}\"")).collect();
        format!("known permissions include {}", near.join(", "))
    };
    PolicyError::invalid(
        file,
        keys.join("."),
        find_line(text, keys, Some(name)),
        format!("unknown permission \"{name}\""),
        format!("{hint}; define it under permissions: or fix the name"),
    )
}
