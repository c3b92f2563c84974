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

use super::log::Grantee;
use super::propose::{Grant, Proposal, Seen};

/// Characters never written as they are, in scalars or in comments. YAML reads U+0085, U+2028
/// and U+2029 as line breaks, exactly like `\n`: raw, they would end a comment (what follows
/// becomes YAML) or fold inside a quoted scalar. Other control characters, the byte-order mark
/// and U+FFFE/U+FFFF make the document unreadable. The invisible format characters (bidi
/// overrides and isolates, zero-width characters, the soft hyphen, the tag characters that can
/// spell hidden text) are legal YAML, but they let a line read differently to the reviewer
/// than to the parser.
pub(super) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{fffe}'
                | '\u{ffff}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// The YAML double-quoted escape of `c` (`\n`, `\x85`, `\u2028`, `\U000E0001`).
fn push_escape(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if u32::from(c) <= 0xff => write!(out, "\\x{:02X}", u32::from(c)),
        c if u32::from(c) <= 0xffff => write!(out, "\\u{:04X}", u32::from(c)),
        c => write!(out, "\\U{:08X}", u32::from(c)),
    };
}

/// A scalar that reads back as `s` wherever this module writes one: a block mapping key, a
/// block list item, an item of a one-line `[..]` list. Plain when that is unambiguous, else
/// double-quoted with every character of [`needs_escape`] escaped, so it is always one line.
///
/// serde_yaml_ng's serializer is not used for this: it picks the style for a top-level block
/// value (a plain `GET /a/{id}`, which a `[..]` list would split at `{`), writes a string with
/// `\n` as a multi-line `|-` block, and keeps U+2028 raw (a line break) inside single quotes.
/// Its parser checks the result instead: the unit tests over every character of the first two
/// planes, and the command, which reads its whole output back before printing it.
pub(super) fn quote(s: &str) -> String {
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
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => push_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a `#` comment: everything in one comes from the log or from certificates, so no
/// character in it may end the comment ([`needs_escape`]). A backslash is doubled so that an
/// escape written here cannot be confused with the same characters typed by a client.
pub(super) fn comment_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => push_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// The traffic behind a route, for a comment (not yet [`comment_safe`]).
pub(super) fn seen_text(s: &Seen) -> String {
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
    // The paths themselves, not only the route: `{id}` hides what was asked for.
    if !s.paths.is_empty() {
        out.push_str(&format!(
            "; path{} {}{}",
            if s.paths.len() == 1 { "" } else { "s" },
            s.paths.join(" "),
            if s.more_paths { " ..." } else { "" }
        ));
    }
    out
}

fn grant_comments(g: &Grant, indent: &str) -> Vec<String> {
    g.routes
        .iter()
        .map(|(route, seen)| {
            let what = if g.learned { "learned" } else { "covers" };
            let text = format!("{what} {route}: {}", seen_text(seen));
            format!("{indent}# {}", comment_safe(&text))
        })
        .collect()
}

pub(super) fn items(g: &Grant, indent: &str) -> Vec<String> {
    let mut out = grant_comments(g, indent);
    out.push(format!("{indent}- {}", quote(&g.permission)));
    out
}

fn flow(list: &[String]) -> String {
    let q: Vec<String> = list.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// A list value as the policy loader reads it: a sequence, one string, or nothing.
pub(super) fn names(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s.iter().filter_map(scalar).collect(),
        Value::Null => Vec::new(),
        other => scalar(other).into_iter().collect(),
    }
}

pub(super) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) type Sections<'a> = BTreeMap<&'static str, BTreeMap<String, Vec<&'a Grant>>>;

/// Grants by section (`groups`, `users`, `anonymous`) and key (empty for `anonymous`).
pub(super) fn sections(p: &Proposal) -> Sections<'_> {
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

pub(super) fn permission_lines(p: &Proposal, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for np in &p.permissions {
        out.push(format!("{indent}# {}", comment_safe(&seen_text(&np.seen))));
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
pub(super) fn expected(original: &Mapping, p: &Proposal) -> Mapping {
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
pub(super) fn canonical(original: &Mapping, p: &Proposal) -> String {
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
