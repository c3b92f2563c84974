//! YAML out of a [`Proposal`]: the fragment `certgate policy learn` prints, and the whole policy
//! with the proposal merged (`--merged`).
//!
//! The merge edits the policy's text so its comments and layout survive review: new
//! permissions go at the end of `permissions:`, new grants at the end of their group, user or
//! `anonymous` list (a one-line `[a, b]` list is rewritten as a block list to take commented
//! items). [`expected`] is the same merge done on the parsed document; the command compares the
//! two and, for a layout the text edit does not handle (flow mappings, several documents), falls
//! back to [`canonical`], which writes the whole policy anew without the original comments.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::learn::{Grant, Grantee, Proposal, Seen};

/// A YAML scalar: plain when that is unambiguous, else a double-quoted (JSON) string.
pub fn quote(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::Value::String(s.to_string()).to_string()
    }
}

/// Text that goes into a `#` comment: names come from client certificates, so a newline in one
/// must not end the comment and inject YAML.
fn comment_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn seen_text(s: &Seen) -> String {
    let mut out = format!("{} request{}", s.count, if s.count == 1 { "" } else { "s" });
    if !s.users.is_empty() {
        let names: Vec<&str> = s.users.iter().take(8).map(String::as_str).collect();
        out.push_str(&format!(" by {}", names.join(", ")));
        if s.users.len() > 8 {
            out.push_str(&format!(" and {} more", s.users.len() - 8));
        }
    }
    match (&s.first, &s.last) {
        (Some(f), Some(l)) if f == l => out.push_str(&format!("; at {f}")),
        (Some(f), Some(l)) => out.push_str(&format!("; first {f}, last {l}")),
        _ => out.push_str("; no timestamps"),
    }
    comment_safe(&out)
}

fn grant_comments(g: &Grant, indent: &str) -> Vec<String> {
    g.routes
        .iter()
        .map(|(route, seen)| {
            let what = if g.learned { "learned" } else { "covers" };
            format!(
                "{indent}# {what} {}: {}",
                comment_safe(route),
                seen_text(seen)
            )
        })
        .collect()
}

fn items(g: &Grant, indent: &str) -> Vec<String> {
    let mut out = grant_comments(g, indent);
    out.push(format!("{indent}- {}", quote(&g.permission)));
    out
}

fn flow(list: &[String]) -> String {
    let q: Vec<String> = list.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// A list value as the policy loader reads it: a sequence, one string, or nothing.
fn names(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        Value::Null => Vec::new(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

type Sections<'a> = BTreeMap<&'static str, BTreeMap<String, Vec<&'a Grant>>>;

/// Grants by section (`groups`, `users`, `anonymous`) and key (empty for `anonymous`).
fn sections(p: &Proposal) -> Sections<'_> {
    let mut out: Sections<'_> = BTreeMap::new();
    for g in &p.grants {
        let (section, key) = match &g.grantee {
            Grantee::Group(k) => ("groups", k.clone()),
            Grantee::User(k) => ("users", k.clone()),
            Grantee::Anonymous => ("anonymous", String::new()),
        };
        out.entry(section)
            .or_default()
            .entry(key)
            .or_default()
            .push(g);
    }
    out
}

fn permission_lines(p: &Proposal, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for np in &p.permissions {
        out.push(format!("{indent}# {}", seen_text(&np.seen)));
        out.push(format!(
            "{indent}{}: [{}]",
            quote(&np.name),
            quote(&np.route)
        ));
    }
    out
}

fn get<'m>(m: &'m Mapping, key: &str) -> Option<&'m Value> {
    m.get(Value::String(key.into()))
}

/// The parsed policy with the proposal merged: what the merged text must parse to.
pub fn expected(original: &Mapping, p: &Proposal) -> Mapping {
    let mut m = original.clone();
    let key = |k: &str| Value::String(k.into());
    if !p.permissions.is_empty() {
        let perms = m
            .entry(key("permissions"))
            .or_insert(Value::Mapping(Mapping::new()));
        if perms.is_null() {
            *perms = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(perms) = perms {
            for np in &p.permissions {
                perms.insert(key(&np.name), Value::Sequence(vec![key(&np.route)]));
            }
        }
    }
    for (section, entries) in sections(p) {
        let add = |v: &mut Value, grants: &[&Grant]| {
            let mut list = names(v);
            list.extend(grants.iter().map(|g| g.permission.clone()));
            *v = Value::Sequence(list.into_iter().map(Value::String).collect());
        };
        let slot = m.entry(key(section)).or_insert(Value::Null);
        if section == "anonymous" {
            add(slot, entries.get("").map(Vec::as_slice).unwrap_or(&[]));
            continue;
        }
        if !slot.is_mapping() {
            *slot = Value::Mapping(Mapping::new());
        }
        if let Value::Mapping(map) = slot {
            for (k, grants) in &entries {
                add(map.entry(key(k)).or_insert(Value::Null), grants);
            }
        }
    }
    m
}

/// The whole policy written anew (original entries first, in the loader's key order), or, from
/// an empty mapping, the fragment.
pub fn canonical(original: &Mapping, p: &Proposal) -> String {
    let mut out: Vec<String> = Vec::new();
    let secs = sections(p);
    let list_of = |k: &str| get(original, k).map(names).unwrap_or_default();
    if let Some(v) = get(original, "include") {
        out.push(format!("include: {}", flow(&names(v))));
    }
    let perms = get(original, "permissions").and_then(Value::as_mapping);
    if perms.is_some_and(|m| !m.is_empty()) || !p.permissions.is_empty() {
        out.push("permissions:".into());
        for (k, v) in perms.into_iter().flatten() {
            let k = scalar(k).unwrap_or_default();
            out.push(format!("  {}: {}", quote(&k), flow(&names(v))));
        }
        out.extend(permission_lines(p, "  "));
    }
    for section in ["groups", "users"] {
        let old = get(original, section).and_then(Value::as_mapping);
        let new = secs.get(section);
        if old.is_none_or(|m| m.is_empty()) && new.is_none() {
            continue;
        }
        out.push(format!("{section}:"));
        let mut done: Vec<String> = Vec::new();
        for (k, v) in old.into_iter().flatten() {
            let k = scalar(k).unwrap_or_default();
            let add = new.and_then(|n| n.get(&k));
            match add {
                None => out.push(format!("  {}: {}", quote(&k), flow(&names(v)))),
                Some(grants) => {
                    out.push(format!("  {}:", quote(&k)));
                    out.extend(names(v).iter().map(|n| format!("    - {}", quote(n))));
                    grants.iter().for_each(|g| out.extend(items(g, "    ")));
                    done.push(k.clone());
                }
            }
        }
        for (k, grants) in new.into_iter().flatten() {
            if !done.contains(k) {
                out.push(format!("  {}:", quote(k)));
                grants.iter().for_each(|g| out.extend(items(g, "    ")));
            }
        }
    }
    if get(original, "authenticated").is_some() {
        out.push(format!(
            "authenticated: {}",
            flow(&list_of("authenticated"))
        ));
    }
    match secs.get("anonymous").and_then(|a| a.get("")) {
        None if get(original, "anonymous").is_some() => {
            out.push(format!("anonymous: {}", flow(&list_of("anonymous"))))
        }
        None => {}
        Some(grants) => {
            out.push("anonymous:".into());
            out.extend(
                list_of("anonymous")
                    .iter()
                    .map(|n| format!("  - {}", quote(n))),
            );
            grants.iter().for_each(|g| out.extend(items(g, "  ")));
        }
    }
    for k in ["group_attribute", "mode"] {
        if let Some(v) = get(original, k).and_then(scalar) {
            out.push(format!("{k}: {}", quote(&v)));
        }
    }
    out.join("\n") + "\n"
}

#[path = "learn_splice.rs"]
mod splice;
pub use splice::merge_text;

#[cfg(test)]
#[path = "learn_yaml_tests.rs"]
mod tests;
