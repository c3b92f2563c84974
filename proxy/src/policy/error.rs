//! Policy load errors. Every message names the file, the key, the YAML line where it is known,
//! what is wrong, and how to fix it:
//! `policies/x.yaml: groups.DevOps: unknown permission "list_vm" (line 12); known permissions
//! include "list_vms"; define it under permissions: or fix the name`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file could not be read (the main file; a missing include is [`PolicyError::Invalid`]
    /// naming the including file and its `include` key).
    #[error("{}: cannot read: {source}; {fix}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
        /// How to fix it.
        fix: String,
    },
    /// The file was read but is not a valid policy.
    #[error("{}", Located { file, key, line: *line, problem, fix })]
    Invalid {
        /// The file at fault.
        file: PathBuf,
        /// The key path, e.g. `groups.DevOps` (empty when the problem is the whole document).
        key: String,
        /// 1-based YAML line, where known.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

impl PolicyError {
    /// The file at fault.
    pub fn file(&self) -> &Path {
        match self {
            PolicyError::Read { file, .. } | PolicyError::Invalid { file, .. } => file,
        }
    }

    /// The 1-based YAML line, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { line, .. } => *line,
        }
    }

    /// The key path at fault (empty for a whole-file problem).
    pub fn key(&self) -> &str {
        match self {
            PolicyError::Read { .. } => "",
            PolicyError::Invalid { key, .. } => key,
        }
    }

    pub(crate) fn invalid(
        file: &Path,
        key: impl Into<String>,
        line: Option<usize>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Invalid {
            file: file.to_path_buf(),
            key: key.into(),
            line,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

struct Located<'a> {
    file: &'a Path,
    key: &'a str,
    line: Option<usize>,
    problem: &'a str,
    fix: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(self.problem)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// Levenshtein distance, for "did you mean" suggestions (names are short).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The names closest to `wanted` (at most three), best first, if any is reasonably close.
pub(crate) fn suggestions<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let limit = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = known
        .map(|k| (edit_distance(wanted, k), k))
        .filter(|(d, k)| *d <= limit || k.contains(wanted) || wanted.contains(*k))
        .collect();
    scored.sort_by_key(|(d, _)| *d);
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

/// Best-effort YAML line finder for errors found after parsing (serde does not keep positions):
/// finds the top-level key `keys[0]`, then each nested key after it, then `value` inside that
/// entry. Returns the 1-based line of the deepest item found.
pub(crate) fn find_line(text: &str, keys: &[&str], value: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().map(strip_comment).collect();
    let mut found: Option<usize> = None;
    let mut from = 0;
    let mut entry_indent = 0;
    for (depth, key) in keys.iter().enumerate() {
        let hit = lines.iter().enumerate().skip(from).find(|(_, line)| {
            if depth == 0 {
                !line.starts_with([' ', '\t']) && has_key(line, key)
            } else {
                has_key(line, key)
            }
        });
        let (i, line) = hit?;
        entry_indent = indent(line);
        found = Some(i);
        from = i;
    }
    if let Some(value) = value {
        let start = found.unwrap_or(0);
        for (i, line) in lines.iter().enumerate().skip(start) {
            if i > start
                && found.is_some()
                && !line.trim().is_empty()
                && indent(line) <= entry_indent
            {
                let t = line.trim_start();
                // A sibling key ends the entry; a block list item ("- x") at the same indent
                // still belongs to it.
                if !t.starts_with('-') {
                    break;
                }
            }
            if has_token(line, value) {
                return Some(i + 1);
            }
        }
    }
    found.map(|i| i + 1)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') => {
                return &line[..i];
            }
            None => {}
        }
    }
    line
}

fn is_open(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '[' | '{' | '-' | ':'),
    }
}

fn is_close(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']' | '}' | '#'),
    }
}

/// `key` used as a mapping key on this line: `key:`, `"key":`, `'key' :`.
fn has_key(line: &str, key: &str) -> bool {
    if key.is_empty() {
        return false;
    }
    let mut start = 0;
    while let Some(pos) = line[start..].find(key) {
        let at = start + pos;
        let before = line[..at].chars().next_back();
        let after = &line[at + key.len()..];
        let after = after.strip_prefix(['"', '\'']).unwrap_or(after);
        if is_open(before) && after.trim_start().starts_with(':') {
            return true;
        }
        start = at + key.len().max(1);
        if start > line.len() {
            break;
        }
    }
    false
}

/// `value` as a whole token (a list item or scalar) on this line.
fn has_token(line: &str, value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    let mut start = 0;
    while let Some(pos) = line[start..].find(value) {
        let at = start + pos;
        let before = line[..at].chars().next_back();
        let after = line[at + value.len()..].chars().next();
        if is_open(before) && is_close(after) {
            return true;
        }
        start = at + value.len().max(1);
        if start > line.len() {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let e = PolicyError::invalid(
            Path::new("policies/x.yaml"),
            "groups.DevOps",
            Some(12),
            "unknown permission \"list_vm\"",
            "known permissions include \"list_vms\"; define it under permissions: or fix the name",
        );
        assert_eq!(
            e.to_string(),
            "policies/x.yaml: groups.DevOps: unknown permission \"list_vm\" (line 12); known permissions include \"list_vms\"; define it under permissions: or fix the name"
        );
        assert_eq!(e.line(), Some(12));
        assert_eq!(e.key(), "groups.DevOps");
        assert_eq!(e.file(), Path::new("policies/x.yaml"));
        let e = PolicyError::invalid(Path::new("p.yaml"), "", None, "file is empty", "");
        assert_eq!(e.to_string(), "p.yaml: file is empty");
        let e = PolicyError::Read {
            file: PathBuf::from("p.yaml"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
            fix: "check the path".into(),
        };
        assert_eq!(e.to_string(), "p.yaml: cannot read: gone; check the path");
        assert_eq!(e.line(), None);
    }

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(edit_distance("list_vm", "list_vms"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let known = ["list_vms", "start_vm", "terminate_vm", "list_nodes"];
        assert_eq!(
            suggestions("list_vm", known.iter().copied()),
            vec!["list_vms"]
        );
        assert_eq!(
            suggestions("start", known.iter().copied()),
            vec!["start_vm"]
        );
        assert!(suggestions("zzzzzzzzzz", known.iter().copied()).is_empty());
    }

    #[test]
    fn line_finder_block_style() {
        let text = "\
# comment with groups: inside
include: [a.yaml]
permissions:
  list_vms: [\"GET /api/v1/vm\"]
  start_vm:
    - POST /api/v1/vm
    - GET /a/b
groups:
  DevOps:
    - list_vms
    - list_vm   # typo
  \"My Org\": [start_vm, list_vm]
users:
  Jenkins: [list_vm]
";
        assert_eq!(find_line(text, &["groups"], None), Some(8));
        assert_eq!(find_line(text, &["groups", "DevOps"], None), Some(9));
        assert_eq!(
            find_line(text, &["groups", "DevOps"], Some("list_vm")),
            Some(11)
        );
        assert_eq!(
            find_line(text, &["groups", "My Org"], Some("list_vm")),
            Some(12)
        );
        assert_eq!(
            find_line(text, &["users", "Jenkins"], Some("list_vm")),
            Some(14)
        );
        assert_eq!(
            find_line(text, &["permissions", "start_vm"], Some("GET /a/b")),
            Some(7)
        );
        assert_eq!(
            find_line(text, &["permissions", "start_vm"], Some("GET /a")),
            Some(5)
        );
        assert_eq!(find_line(text, &["include"], Some("a.yaml")), Some(2));
        assert_eq!(find_line(text, &["nothing"], None), None);
    }

    #[test]
    fn line_finder_flow_style() {
        let text = "groups: {DevOps: [list_vms, list_vm], Ops: [x]}\nanonymous: [health]\n";
        assert_eq!(
            find_line(text, &["groups", "DevOps"], Some("list_vm")),
            Some(1)
        );
        assert_eq!(find_line(text, &["anonymous"], Some("health")), Some(2));
    }
}
