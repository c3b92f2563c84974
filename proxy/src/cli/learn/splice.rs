//! The text edit behind `--merged`: the proposal spliced into the policy's own lines, so every
//! comment and the layout stay. Handles block-style sections and one-line `[..]` lists; returns
//! None for anything else (the caller then writes the policy anew).

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::propose::{Grant, Proposal};
use super::yaml::{canonical, items, names, permission_lines, quote, scalar, sections};

/// A top-level key and its lines: `line` is the key's, the block ends before `end`.
struct Block {
    key: String,
    line: usize,
    end: usize,
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

fn is_content(l: &str) -> bool {
    let t = l.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// The line after the last content line in `from..to`, or `from`.
fn content_end(lines: &[&str], from: usize, to: usize) -> usize {
    (from..to)
        .rev()
        .find(|&i| is_content(lines[i]))
        .map_or(from, |i| i + 1)
}

/// `value  # comment` -> (`value`, `# comment`), quotes respected.
fn split_comment(s: &str) -> (&str, &str) {
    let (mut quote, mut prev_space) = (None, true);
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return (s[..i].trim(), s[i..].trim()),
            None => {}
        }
        prev_space = c == ' ';
    }
    (s.trim(), "")
}

/// The value written on a key's own line (`key: value`), comment removed.
fn inline_value(line: &str) -> (&str, &str) {
    line.split_once(':')
        .map_or(("", ""), |(_, rest)| split_comment(rest))
}

fn top_blocks(lines: &[&str]) -> Option<Vec<Block>> {
    let mut out: Vec<Block> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("---") || l.starts_with("...") {
            if i == 0 && l.trim() == "---" {
                continue;
            }
            return None;
        }
        // `- item` at column 0 belongs to the list above it.
        if !is_content(l) || l.starts_with([' ', '\t', '-']) {
            continue;
        }
        if l.starts_with(['{', '[', '"', '\'']) {
            return None;
        }
        let (key, _) = l.split_once(':')?;
        if let Some(prev) = out.last_mut() {
            prev.end = i;
        }
        out.push(Block {
            key: key.trim().to_string(),
            line: i,
            end: lines.len(),
        });
    }
    Some(out)
}

/// Pending edits: lines inserted before a line index, or a line replaced.
#[derive(Default)]
struct Edits {
    insert: BTreeMap<usize, Vec<String>>,
    replace: BTreeMap<usize, Vec<String>>,
}

impl Edits {
    fn insert(&mut self, at: usize, lines: Vec<String>) {
        self.insert.entry(at).or_default().extend(lines);
    }

    fn apply(self, lines: &[&str], tail: Vec<String>) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut insert = self.insert;
        for (i, l) in lines.iter().enumerate() {
            out.extend(insert.remove(&i).unwrap_or_default());
            match self.replace.get(&i) {
                Some(r) => out.extend(r.iter().cloned()),
                None => out.push(l.to_string()),
            }
        }
        out.extend(insert.into_values().flatten());
        if !tail.is_empty() {
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.extend(tail);
        }
        out.join("\n") + "\n"
    }
}

/// The child indentation of a block: its first content line's, else two spaces.
fn child_indent(lines: &[&str], b: &Block) -> usize {
    (b.line + 1..b.end)
        .find(|&i| is_content(lines[i]))
        .map_or(2, |i| indent_of(lines[i]))
}

/// A `key: [..]` line rewritten as `key:` and a block list with the old items and the new ones.
fn to_block(key: &str, pad: &str, old: &[String], comment: &str, new: &[&Grant]) -> Vec<String> {
    let mut out = Vec::new();
    if !comment.is_empty() {
        out.push(format!("{pad}{comment}"));
    }
    out.push(format!("{pad}{key}:"));
    let item_pad = format!("{pad}  ");
    out.extend(old.iter().map(|n| format!("{item_pad}- {}", quote(n))));
    new.iter().for_each(|g| out.extend(items(g, &item_pad)));
    out
}

fn parse_value(text: &str) -> Option<Value> {
    if text.is_empty() {
        return Some(Value::Null);
    }
    serde_yaml_ng::from_str(text).ok()
}

/// A block list (`- item` lines) under a key: append the new items after its last content line.
fn append_list(
    lines: &[&str],
    from: usize,
    to: usize,
    pad_default: usize,
    new: &[&Grant],
    e: &mut Edits,
) {
    let pad = (from..to)
        .find(|&i| lines[i].trim_start().starts_with('-'))
        .map_or(pad_default, |i| indent_of(lines[i]));
    let pad = " ".repeat(pad);
    let mut add = Vec::new();
    new.iter().for_each(|g| add.extend(items(g, &pad)));
    e.insert(content_end(lines, from, to), add);
}

/// Adds the grants of `groups:` or `users:` (a block mapping of name -> list).
fn merge_mapping(
    lines: &[&str],
    b: &Block,
    new: &BTreeMap<String, Vec<&Grant>>,
    e: &mut Edits,
) -> Option<()> {
    let (inline, _) = inline_value(lines[b.line]);
    let child = child_indent(lines, b);
    let pad = " ".repeat(child);
    match inline {
        "" => {}
        "{}" => {
            e.replace.insert(b.line, vec![format!("{}:", b.key)]);
        }
        _ => return None,
    }
    // The entries at the child indentation and where each one's lines end.
    let starts: Vec<usize> = (b.line + 1..b.end)
        .filter(|&i| {
            is_content(lines[i])
                && indent_of(lines[i]) == child
                && !lines[i].trim_start().starts_with('-')
        })
        .collect();
    let mut found: Vec<&str> = Vec::new();
    for (n, &i) in starts.iter().enumerate() {
        let next = starts.get(n + 1).copied().unwrap_or(b.end);
        let (key_text, rest) = lines[i].trim_start().split_once(':')?;
        let key = scalar(&parse_value(key_text.trim())?)?;
        let Some((k, grants)) = new.get_key_value(&key) else {
            continue;
        };
        found.push(k);
        let (value, comment) = split_comment(rest);
        match parse_value(value)? {
            Value::Null => append_list(lines, i + 1, next, child + 2, grants, e),
            v @ (Value::Sequence(_) | Value::String(_)) => {
                let block = to_block(&quote(k), &pad, &names(&v), comment, grants);
                e.replace.insert(i, block);
            }
            _ => return None,
        }
    }
    let mut add = Vec::new();
    for (k, grants) in new {
        if !found.contains(&k.as_str()) {
            add.push(format!("{pad}{}:", quote(k)));
            let item_pad = format!("{pad}  ");
            grants.iter().for_each(|g| add.extend(items(g, &item_pad)));
        }
    }
    e.insert(content_end(lines, b.line + 1, b.end), add);
    Some(())
}

/// The policy text with the proposal spliced in, or None when its layout is not one this edit
/// handles. The caller checks the result against [`super::yaml::expected`].
pub(super) fn merge_text(text: &str, p: &Proposal) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let blocks = top_blocks(&lines)?;
    let find = |k: &str| blocks.iter().find(|b| b.key == k);
    let mut e = Edits::default();
    let mut tail: Vec<String> = Vec::new();
    if !p.permissions.is_empty() {
        match find("permissions") {
            None => {
                tail.push("permissions:".into());
                tail.extend(permission_lines(p, "  "));
            }
            Some(b) => {
                let (inline, _) = inline_value(lines[b.line]);
                let pad = " ".repeat(child_indent(&lines, b));
                match inline {
                    "" => e.insert(
                        content_end(&lines, b.line + 1, b.end),
                        permission_lines(p, &pad),
                    ),
                    "{}" => {
                        let mut r = vec!["permissions:".to_string()];
                        r.extend(permission_lines(p, "  "));
                        e.replace.insert(b.line, r);
                    }
                    _ => return None,
                }
            }
        }
    }
    for (section, entries) in sections(p) {
        match (section, find(section)) {
            ("anonymous", Some(b)) => {
                let new = entries.get("").map(Vec::as_slice).unwrap_or(&[]);
                let (inline, comment) = inline_value(lines[b.line]);
                if inline.is_empty() {
                    append_list(&lines, b.line + 1, b.end, 2, new, &mut e);
                } else {
                    let old = names(&parse_value(inline)?);
                    e.replace
                        .insert(b.line, to_block("anonymous", "", &old, comment, new));
                }
            }
            ("anonymous", None) => {
                let new = entries.get("").map(Vec::as_slice).unwrap_or(&[]);
                tail.extend(to_block("anonymous", "", &[], "", new));
            }
            (_, Some(b)) => merge_mapping(&lines, b, &entries, &mut e)?,
            (_, None) => {
                let only = Proposal {
                    grants: entries.values().flatten().map(|g| (*g).clone()).collect(),
                    ..Default::default()
                };
                let text = canonical(&Mapping::new(), &only);
                tail.extend(text.lines().map(str::to_string));
            }
        }
    }
    Some(e.apply(&lines, tail))
}
