//! Route grammar: `METHODS PATH`.
//!
//! - METHODS: one upper-case method token (`GET`), several joined by `|` (`GET|HEAD`), or `*`.
//! - PATH begins with `/`. A segment is a literal, `*` (exactly one non-empty segment), `{name}`
//!   (the same as `*`; the name is documentation), or `**` as the last segment (zero or more
//!   segments). A trailing slash is ignored. Matching is case-sensitive; the query string is
//!   never matched, so a `?` in a route is an error.
//! - Literal segments are percent-normalised like request paths (`%7e` is `~`, `%3a` is `%3A`),
//!   so a route and a request compare in the same form.

use super::normalize::{decode_segment_into, PathError};

/// The methods a route covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Methods {
    /// `*`: every method.
    Any,
    /// `GET`, `GET|HEAD`, ... in the order written, without duplicates.
    List(Vec<String>),
}

impl Methods {
    /// Whether `method` (case-sensitive) is covered.
    pub fn covers(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::List(list) => list.iter().any(|m| m == method),
        }
    }
}

/// One segment of a route path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this (normalised) segment.
    Literal(String),
    /// `*` or `{name}`: exactly one non-empty segment.
    Wildcard,
    /// `**` (last segment only): zero or more segments.
    Rest,
}

/// A parsed route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    text: String,
    methods: Methods,
    segments: Vec<Segment>,
}

/// Why a route string was refused: what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; {fix}")]
pub struct RouteError {
    /// What is wrong, e.g. `empty segment (//) in the path`.
    pub problem: String,
    /// How to fix it, e.g. `write each segment once, e.g. "GET /a/b"`.
    pub fix: String,
}

fn err(problem: impl Into<String>, fix: impl Into<String>) -> RouteError {
    RouteError {
        problem: problem.into(),
        fix: fix.into(),
    }
}

const EXAMPLE: &str =
    "write it as METHODS PATH, e.g. \"GET /api/v1/vm\" or \"GET|HEAD /api/v1/status\"";

impl Route {
    /// Parses `METHODS PATH`.
    pub fn parse(text: &str) -> Result<Route, RouteError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("empty route", EXAMPLE));
        }
        let mut parts = trimmed.split_whitespace();
        let (Some(methods), Some(path)) = (parts.next(), parts.next()) else {
            if trimmed.starts_with('/') {
                return Err(err(
                    "route has no method",
                    format!("put the method first, e.g. \"GET {trimmed}\" (or \"* {trimmed}\" for every method)"),
                ));
            }
            return Err(err("route has no path", EXAMPLE));
        };
        if parts.next().is_some() {
            return Err(err(
                "route has more than two parts (spaces are not allowed inside the path)",
                format!("{EXAMPLE}; encode a space in a path as %20"),
            ));
        }
        let methods = parse_methods(methods)?;
        let segments = parse_path(path)?;
        Ok(Route {
            text: trimmed.to_string(),
            methods,
            segments,
        })
    }

    /// The route as written (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The methods it covers.
    pub fn methods(&self) -> &Methods {
        &self.methods
    }

    /// Its path segments (a trailing slash is not represented).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Straightforward matcher (no trie): used by `explain` and as the reference in tests.
    /// `path` is a normalised request path; empty segments (a trailing slash) are ignored.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if !self.methods.covers(method) {
            return false;
        }
        let mut request = path.split('/').filter(|s| !s.is_empty());
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Rest => return i + 1 == self.segments.len(),
                Segment::Wildcard => {
                    if request.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if request.next() != Some(lit.as_str()) {
                        return false;
                    }
                }
            }
        }
        request.next().is_none()
    }
}

fn parse_methods(text: &str) -> Result<Methods, RouteError> {
    if text == "*" {
        return Ok(Methods::Any);
    }
    let mut list: Vec<String> = Vec::new();
    for token in text.split('|') {
        if token.is_empty() {
            return Err(err(
                format!("empty method in \"{text}\""),
                "join methods with a single |, e.g. \"GET|HEAD\"",
            ));
        }
        if token == "*" {
            return Err(err(
                format!("\"*\" combined with other methods in \"{text}\""),
                "write \"*\" alone for every method, or list the methods",
            ));
        }
        if token.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(err(
                format!("method \"{token}\" is not upper-case (methods are case-sensitive)"),
                format!("write \"{}\"", token.to_ascii_uppercase()),
            ));
        }
        let valid = token
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && token.bytes().next().is_some_and(|b| b.is_ascii_uppercase());
        if !valid {
            return Err(err(
                format!("\"{token}\" is not a method"),
                "a method is one upper-case word (GET, POST, ...); join several with |, e.g. \"GET|HEAD\", or write \"*\"",
            ));
        }
        if !list.iter().any(|m| m == token) {
            list.push(token.to_string());
        }
    }
    Ok(Methods::List(list))
}

fn parse_path(path: &str) -> Result<Vec<Segment>, RouteError> {
    check_shape(path)?;
    let body = path.strip_suffix('/').unwrap_or(path);
    if body.is_empty() {
        // "/" itself.
        return Ok(Vec::new());
    }
    let raw: Vec<&str> = body.split('/').skip(1).collect();
    let count = raw.len();
    raw.into_iter()
        .enumerate()
        .map(|(i, seg)| parse_segment(seg, i + 1 == count, path))
        .collect()
}

/// An absolute path without query or fragment.
fn check_shape(path: &str) -> Result<(), RouteError> {
    if !path.starts_with('/') {
        return Err(err(
            format!("path \"{path}\" does not begin with /"),
            EXAMPLE,
        ));
    }
    if path.contains('?') {
        return Err(err(
            "a route cannot contain a query string (?)",
            "remove the ? and what follows: the query string is never matched",
        ));
    }
    if path.contains('#') {
        return Err(err(
            "a route cannot contain a fragment (#)",
            "remove the # and what follows, or encode it as %23",
        ));
    }
    Ok(())
}

/// One segment of `path`; `last` allows `**`.
fn parse_segment(seg: &str, last: bool, path: &str) -> Result<Segment, RouteError> {
    Ok(match seg {
        "" => {
            return Err(err(
                format!("empty segment (//) in \"{path}\""),
                "write a single / between segments",
            ))
        }
        "." | ".." => {
            return Err(err(
                format!("\"{seg}\" segment in \"{path}\""),
                "routes cannot contain . or .. segments: write the path they stand for",
            ))
        }
        "**" if last => Segment::Rest,
        "**" => {
            return Err(err(
                format!("\"**\" is not the last segment of \"{path}\""),
                "\"**\" may only end a route; use \"*\" for exactly one segment in the middle",
            ))
        }
        "*" => Segment::Wildcard,
        s if s.len() > 2
            && s.starts_with('{')
            && s.ends_with('}')
            && !s[1..s.len() - 1].contains(['{', '}']) =>
        {
            Segment::Wildcard
        }
        s if s.contains('*') => {
            return Err(err(
                format!("\"*\" inside the segment \"{s}\" of \"{path}\""),
                "\"*\" and \"**\" must be whole segments (\"/a/*/b\", \"/a/**\"); partial wildcards are not supported",
            ))
        }
        s if s.contains(['{', '}']) => {
            return Err(err(
                format!("\"{{\" or \"}}\" inside the segment \"{s}\" of \"{path}\""),
                "a parameter is a whole segment with a name, e.g. \"/group/{name}/resources\"",
            ))
        }
        s => literal_segment(s, path)?,
    })
}

/// A literal segment, percent-decoded as request paths are.
fn literal_segment(s: &str, path: &str) -> Result<Segment, RouteError> {
    let mut decoded = String::with_capacity(s.len());
    decode_segment_into(s, &mut decoded).map_err(|e| {
        let fix = match e {
            PathError::EncodedSlash => {
                "requests with an encoded / or \\ are refused before matching, so a route cannot name one"
            }
            PathError::ControlCharacter => "remove the control character",
            PathError::InvalidPercentEncoding => {
                "a % must be followed by two hex digits (write %25 for a literal %)"
            }
            PathError::NotAbsolute | PathError::EscapesRoot => "fix the segment",
        };
        err(format!("segment \"{s}\" of \"{path}\": {}", e.reason()), fix)
    })?;
    if decoded == "." || decoded == ".." {
        return Err(err(
            format!("segment \"{s}\" of \"{path}\" decodes to \"{decoded}\""),
            "routes cannot contain . or .. segments: write the path they stand for",
        ));
    }
    Ok(Segment::Literal(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Route {
        match Route::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    fn parse_err(s: &str) -> RouteError {
        match Route::parse(s) {
            Ok(r) => panic!("{s:?} parsed as {r:?}"),
            Err(e) => e,
        }
    }

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.to_string())
    }

    #[test]
    fn simple_routes() {
        let r = parse("GET /api/v1/vm");
        assert_eq!(r.methods(), &Methods::List(vec!["GET".into()]));
        assert_eq!(r.segments(), &[lit("api"), lit("v1"), lit("vm")]);
        assert_eq!(r.text(), "GET /api/v1/vm");
        let r = parse("  GET|HEAD   /api/v1/status/  ");
        assert_eq!(
            r.methods(),
            &Methods::List(vec!["GET".into(), "HEAD".into()])
        );
        assert_eq!(r.segments(), &[lit("api"), lit("v1"), lit("status")]);
        assert_eq!(r.text(), "GET|HEAD   /api/v1/status/");
        assert_eq!(parse("* /").segments(), &[] as &[Segment]);
        assert_eq!(parse("* /").methods(), &Methods::Any);
        assert_eq!(
            parse("GET|GET /x").methods(),
            &Methods::List(vec!["GET".into()])
        );
        assert_eq!(
            parse("M-SEARCH|X_Y2 /x").methods(),
            &Methods::List(vec!["M-SEARCH".into(), "X_Y2".into()])
        );
    }

    #[test]
    fn wildcards() {
        assert_eq!(
            parse("GET /a/*/b/{name}/**").segments(),
            &[
                lit("a"),
                Segment::Wildcard,
                lit("b"),
                Segment::Wildcard,
                Segment::Rest
            ]
        );
        assert_eq!(parse("GET /**").segments(), &[Segment::Rest]);
        assert_eq!(parse("GET /**/").segments(), &[Segment::Rest]);
    }

    #[test]
    fn literals_are_percent_normalised() {
        assert_eq!(
            parse("GET /%7euser/a%3ab").segments(),
            &[lit("~user"), lit("a%3Ab")]
        );
        assert_eq!(
            parse("GET /a;b/c\\d").segments(),
            &[lit("a;b"), lit("c\\d")]
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty route"),
            ("   ", "empty route"),
            ("/api/v1/vm", "route has no method"),
            ("GET", "route has no path"),
            ("GET /a b", "more than two parts"),
            ("get /a", "not upper-case"),
            ("Get /a", "not upper-case"),
            ("GET|post /a", "not upper-case"),
            ("GET||POST /a", "empty method"),
            ("GET| /a", "empty method"),
            ("*|GET /a", "combined"),
            ("GET,POST /a", "is not a method"),
            ("1GET /a", "is not a method"),
            ("GET api/v1", "does not begin with /"),
            ("GET /a//b", "empty segment"),
            ("GET //", "empty segment"),
            ("GET /a/./b", "\".\" segment"),
            ("GET /a/../b", "\"..\" segment"),
            ("GET /a/%2e%2E", "decodes to"),
            ("GET /**/a", "not the last segment"),
            ("GET /a/**/**", "not the last segment"),
            ("GET /a*", "inside the segment"),
            ("GET /***", "inside the segment"),
            ("GET /a/{x", "inside the segment"),
            ("GET /a/{}", "inside the segment"),
            ("GET /a/{a}{b}", "inside the segment"),
            ("GET /a/x}", "inside the segment"),
            ("GET /a?id=1", "query string"),
            ("GET /a/?", "query string"),
            ("GET /a#x", "fragment"),
            ("GET /a%2Fb", "encoded slash"),
            ("GET /a%5c", "encoded slash"),
            ("GET /a%00", "control character"),
            ("GET /a%zz", "invalid percent-encoding"),
            ("GET /a%", "invalid percent-encoding"),
        ];
        for (route, want) in cases {
            let e = parse_err(route);
            assert!(
                e.problem.contains(want),
                "{route:?}: expected {want:?} in {:?}",
                e.problem
            );
            assert!(!e.fix.is_empty());
        }
    }

    #[test]
    fn error_display_has_problem_and_fix() {
        let e = parse_err("GET /a//b");
        assert_eq!(
            e.to_string(),
            "empty segment (//) in \"/a//b\"; write a single / between segments"
        );
        let e = parse_err("get /a");
        assert!(e.to_string().contains("write \"GET\""), "{e}");
    }

    #[test]
    fn reference_matcher() {
        let r = parse("GET /api/v1/vm");
        assert!(r.matches("GET", "/api/v1/vm"));
        assert!(r.matches("GET", "/api/v1/vm/"));
        assert!(!r.matches("POST", "/api/v1/vm"));
        assert!(!r.matches("get", "/api/v1/vm"));
        assert!(!r.matches("GET", "/api/v1/VM"));
        assert!(!r.matches("GET", "/api/v1/vm/x"));
        assert!(!r.matches("GET", "/api/v1"));

        let r = parse("* /a/*/c");
        assert!(r.matches("PATCH", "/a/b/c"));
        assert!(!r.matches("GET", "/a/c"));
        assert!(!r.matches("GET", "/a/b/b/c"));

        let r = parse("GET /logs/**");
        assert!(r.matches("GET", "/logs"));
        assert!(r.matches("GET", "/logs/"));
        assert!(r.matches("GET", "/logs/a/b/c"));
        assert!(!r.matches("GET", "/log"));
        assert!(!r.matches("GET", "/"));

        let r = parse("GET /**");
        assert!(r.matches("GET", "/"));
        assert!(r.matches("GET", "/anything/at/all"));

        let r = parse("GET /");
        assert!(r.matches("GET", "/"));
        assert!(!r.matches("GET", "/a"));

        let r = parse("GET /admin/api/v1/permission/group/{groupName}/resources");
        assert!(r.matches("GET", "/admin/api/v1/permission/group/DevOps/resources"));
        assert!(!r.matches("GET", "/admin/api/v1/permission/group/resources"));
    }
}
