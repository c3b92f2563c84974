//! SPIFFE IDs (`spiffe://trust-domain/path`) in client certificates, and the patterns of a
//! policy's `spiffe:` grants.
//!
//! A certificate's SPIFFE ID is read strictly, as the SPIFFE ID specification (and go-spiffe)
//! reads it, because the ID is matched segment by segment: an ID that another reader would split
//! differently (`..`, `%2F`, an empty segment) must not be granted anything. Matching allocates
//! nothing, since it runs for every request of a policy with `spiffe:` grants.

use std::fmt;

/// The SPIFFE ID specification caps the whole URI at 2048 bytes and the trust domain at 255.
const MAX_ID_BYTES: usize = 2048;
const MAX_TRUST_DOMAIN_BYTES: usize = 255;

const SCHEME: &str = "spiffe://";

/// A valid SPIFFE ID borrowed from a certificate's URI SAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpiffeId<'a> {
    /// The whole ID as written in the certificate.
    pub id: &'a str,
    /// The trust domain (lower-case by construction).
    pub trust_domain: &'a str,
    /// `""` for the trust domain's own ID, else `/seg/seg...`.
    pub path: &'a str,
}

impl<'a> SpiffeId<'a> {
    /// The path's segments (none for the trust domain's own ID).
    fn segments(&self) -> impl Iterator<Item = &'a str> {
        // `path` is "" or starts with '/', so the first piece of the split is always empty.
        self.path.split('/').skip(1)
    }
}

/// Why a certificate has no SPIFFE ID that grants anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoSpiffeId<'a> {
    /// No URI SAN with the `spiffe` scheme.
    Absent,
    /// More than one URI SAN with the `spiffe` scheme (an X.509-SVID carries exactly one).
    Several(usize),
    /// The one `spiffe` URI SAN is not a valid SPIFFE ID.
    Invalid(&'a str, &'static str),
}

impl fmt::Display for NoSpiffeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSpiffeId::Absent => f.write_str("no spiffe:// URI SAN"),
            NoSpiffeId::Several(n) => write!(
                f,
                "{n} spiffe URI SANs (an X.509-SVID has exactly one), so no spiffe grant applies"
            ),
            NoSpiffeId::Invalid(uri, why) => {
                write!(
                    f,
                    "{uri} is not a valid SPIFFE ID ({why}), so no spiffe grant applies"
                )
            }
        }
    }
}

/// Whether a URI's scheme is `spiffe`. Schemes are case-insensitive (RFC 3986), so `SPIFFE:`
/// counts towards "more than one SPIFFE ID" even though it is then refused as invalid.
fn has_spiffe_scheme(uri: &str) -> bool {
    uri.split_once(':')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("spiffe"))
}

/// The certificate's SPIFFE ID: its only URI SAN with the `spiffe` scheme, if that one is valid.
/// URI SANs with other schemes are ignored.
pub(crate) fn svid_id(uri_sans: &[String]) -> Result<SpiffeId<'_>, NoSpiffeId<'_>> {
    let mut spiffe = uri_sans
        .iter()
        .map(String::as_str)
        .filter(|u| has_spiffe_scheme(u));
    let Some(first) = spiffe.next() else {
        return Err(NoSpiffeId::Absent);
    };
    let more = spiffe.count();
    if more > 0 {
        return Err(NoSpiffeId::Several(more + 1));
    }
    parse_id(first).map_err(|why| NoSpiffeId::Invalid(first, why))
}

fn trust_domain_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

fn path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// Validates a SPIFFE ID per the SPIFFE ID specification: scheme exactly `spiffe://`, a
/// non-empty trust domain of `a-z 0-9 . - _` (so no upper case, port, userinfo), and path
/// segments that are non-empty, not `.` or `..`, of `A-Z a-z 0-9 . - _` only (so no
/// percent-encoding, query or fragment), and no trailing `/`.
pub(crate) fn parse_id(id: &str) -> Result<SpiffeId<'_>, &'static str> {
    if id.len() > MAX_ID_BYTES {
        return Err("longer than 2048 bytes");
    }
    let Some(rest) = id.strip_prefix(SCHEME) else {
        return Err("the scheme must be exactly spiffe://");
    };
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    check_trust_domain(trust_domain)?;
    if !path.is_empty() {
        for seg in path.split('/').skip(1) {
            check_segment(seg)?;
        }
    }
    Ok(SpiffeId {
        id,
        trust_domain,
        path,
    })
}

fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty trust domain");
    }
    if td.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err("trust domain longer than 255 bytes");
    }
    if td.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("upper case in the trust domain");
    }
    if !td.bytes().all(trust_domain_char) {
        return Err("the trust domain may hold only a-z 0-9 . - _");
    }
    Ok(())
}

fn check_segment(seg: &str) -> Result<(), &'static str> {
    if seg.is_empty() {
        return Err("empty path segment");
    }
    if seg == "." || seg == ".." {
        return Err("dot segment in the path");
    }
    if !seg.bytes().all(path_char) {
        return Err("a path segment may hold only A-Z a-z 0-9 . - _");
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `*`: exactly one segment.
    One,
}

/// A `spiffe:` key: `spiffe://trust-domain` then literal segments, `*` (exactly one segment)
/// and, last only, `**` (zero or more segments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SpiffePattern {
    text: String,
    trust_domain: String,
    segments: Vec<Seg>,
    /// Ends with `**`.
    rest: bool,
}

/// Why a `spiffe:` key is refused: (what is wrong, how to fix it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PatternError {
    pub problem: String,
    pub fix: &'static str,
}

fn pattern_error(problem: impl Into<String>, fix: &'static str) -> PatternError {
    PatternError {
        problem: problem.into(),
        fix,
    }
}

impl SpiffePattern {
    pub(crate) fn parse(text: &str) -> Result<SpiffePattern, PatternError> {
        const SHAPE: &str = "write spiffe://trust-domain/segment/..., where a segment is a literal, * (one segment) or, last, ** (the rest)";
        let Some(rest) = text.strip_prefix(SCHEME) else {
            return Err(pattern_error(
                "a spiffe pattern must start with spiffe:// (lower case)",
                SHAPE,
            ));
        };
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.contains('*') {
            return Err(pattern_error(
                format!("wildcard in the trust domain \"{td}\""),
                "name the trust domain exactly (one spiffe: entry per trust domain); wildcards are allowed only in the path",
            ));
        }
        if td.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(pattern_error(
                format!("upper case in the trust domain \"{td}\""),
                "write the trust domain in lower case: SPIFFE trust domains are lower-case, so this pattern could never match",
            ));
        }
        check_trust_domain(td).map_err(|why| {
            pattern_error(
                format!("invalid trust domain \"{td}\": {why}"),
                "use the trust domain exactly as in the workloads' SPIFFE IDs",
            )
        })?;
        let mut segments = Vec::new();
        let mut rest = false;
        if !path.is_empty() {
            let parts: Vec<&str> = path.split('/').skip(1).collect();
            let last = parts.len().saturating_sub(1);
            for (i, seg) in parts.into_iter().enumerate() {
                match seg {
                    "**" if i == last => rest = true,
                    "**" => {
                        return Err(pattern_error(
                            "** is allowed only as the last segment",
                            "use * for one segment in the middle, or end the pattern with **",
                        ))
                    }
                    "*" => segments.push(Seg::One),
                    s if s.contains('*') => {
                        return Err(pattern_error(
                            format!("segment \"{s}\" mixes * with other characters"),
                            "a wildcard stands for a whole segment: write * or ** alone between slashes",
                        ))
                    }
                    s => {
                        check_segment(s).map_err(|why| {
                            pattern_error(
                                format!("segment \"{s}\": {why}"),
                                "SPIFFE ID paths have non-empty segments of A-Z a-z 0-9 . - _ (no trailing /, no %-encoding)",
                            )
                        })?;
                        segments.push(Seg::Literal(s.to_string()));
                    }
                }
            }
        }
        Ok(SpiffePattern {
            text: text.to_string(),
            trust_domain: td.to_string(),
            segments,
            rest,
        })
    }

    /// The pattern as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Trust domain exactly equal, then segment by segment; `**` takes whatever is left.
    pub(crate) fn matches(&self, id: &SpiffeId<'_>) -> bool {
        if id.trust_domain != self.trust_domain {
            return false;
        }
        let mut segs = id.segments();
        for want in &self.segments {
            let Some(got) = segs.next() else {
                return false;
            };
            if let Seg::Literal(lit) = want {
                if lit != got {
                    return false;
                }
            }
        }
        self.rest || segs.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(p: &str) -> SpiffePattern {
        SpiffePattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    fn hit(p: &str, id: &str) -> bool {
        let id = parse_id(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        pat(p).matches(&id)
    }

    #[test]
    fn star_is_exactly_one_non_empty_segment() {
        let p = "spiffe://example.org/ns/ci/sa/*";
        assert!(hit(p, "spiffe://example.org/ns/ci/sa/builder"));
        assert!(!hit(p, "spiffe://example.org/ns/ci/sa"));
        assert!(!hit(p, "spiffe://example.org/ns/ci/sa/builder/extra"));
        assert!(!hit(p, "spiffe://example.org/ns/prod/sa/builder"));
        assert!(hit(
            "spiffe://example.org/ns/*/sa/db",
            "spiffe://example.org/ns/x/sa/db"
        ));
        assert!(!hit(
            "spiffe://example.org/ns/*/sa/db",
            "spiffe://example.org/ns/x/sa/web"
        ));
    }

    #[test]
    fn double_star_takes_zero_or_more_segments() {
        let p = "spiffe://example.org/ns/ci/**";
        assert!(hit(p, "spiffe://example.org/ns/ci"));
        assert!(hit(p, "spiffe://example.org/ns/ci/sa/builder"));
        assert!(!hit(p, "spiffe://example.org/ns/cix/sa/builder"));
        assert!(!hit(p, "spiffe://example.org/ns"));
        assert!(hit("spiffe://example.org/**", "spiffe://example.org"));
        assert!(hit("spiffe://example.org/**", "spiffe://example.org/a/b/c"));
    }

    #[test]
    fn literals_are_exact_and_case_sensitive_in_the_path() {
        let p = "spiffe://example.org/ns/ci/sa/builder";
        assert!(hit(p, "spiffe://example.org/ns/ci/sa/builder"));
        assert!(!hit(p, "spiffe://example.org/ns/ci/sa/Builder"));
        assert!(!hit(p, "spiffe://example.org/ns/ci/sa/builder/x"));
        assert!(hit("spiffe://example.org", "spiffe://example.org"));
        assert!(!hit("spiffe://example.org", "spiffe://example.org/a"));
    }

    #[test]
    fn the_trust_domain_must_match_exactly() {
        let p = "spiffe://example.org/**";
        assert!(!hit(p, "spiffe://example.org.evil.com/ns/ci"));
        assert!(!hit(p, "spiffe://sub.example.org/ns/ci"));
        assert!(!hit(p, "spiffe://examplexorg/ns/ci"));
    }

    #[test]
    fn invalid_certificate_ids_are_refused() {
        for (id, why) in [
            ("spiffe://example.org/ns/../sa/x", "dot segment in the path"),
            ("spiffe://example.org/ns/./x", "dot segment in the path"),
            ("spiffe://example.org/ns//x", "empty path segment"),
            ("spiffe://example.org/ns/x/", "empty path segment"),
            (
                "spiffe://example.org/ns/a%2Fb",
                "a path segment may hold only A-Z a-z 0-9 . - _",
            ),
            (
                "spiffe://example.org/ns/x?q=1",
                "a path segment may hold only A-Z a-z 0-9 . - _",
            ),
            (
                "spiffe://example.org/ns/x#f",
                "a path segment may hold only A-Z a-z 0-9 . - _",
            ),
            (
                "spiffe://Example.org/ns/x",
                "upper case in the trust domain",
            ),
            (
                "spiffe://example.org:443/x",
                "the trust domain may hold only a-z 0-9 . - _",
            ),
            (
                "spiffe://user@example.org/x",
                "the trust domain may hold only a-z 0-9 . - _",
            ),
            ("spiffe:///x", "empty trust domain"),
            (
                "SPIFFE://example.org/x",
                "the scheme must be exactly spiffe://",
            ),
            (
                "spiffe:example.org/x",
                "the scheme must be exactly spiffe://",
            ),
        ] {
            assert_eq!(parse_id(id), Err(why), "{id}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(parse_id(&long).is_err());
    }

    #[test]
    fn a_certificate_has_at_most_one_spiffe_id() {
        let sans = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let one = sans(&["https://example.org/x", "spiffe://example.org/ns/ci/sa/b"]);
        assert_eq!(
            svid_id(&one).map(|i| i.id),
            Ok("spiffe://example.org/ns/ci/sa/b")
        );
        let two = sans(&["spiffe://example.org/a", "spiffe://example.org/b"]);
        assert_eq!(svid_id(&two), Err(NoSpiffeId::Several(2)));
        // A differently-cased scheme still counts as a second SPIFFE ID.
        let cased = sans(&["spiffe://example.org/a", "SPIFFE://example.org/b"]);
        assert_eq!(svid_id(&cased), Err(NoSpiffeId::Several(2)));
        assert_eq!(svid_id(&sans(&["https://x/y"])), Err(NoSpiffeId::Absent));
        assert_eq!(svid_id(&[]), Err(NoSpiffeId::Absent));
        let bad = sans(&["spiffe://example.org/a/../b"]);
        assert!(matches!(svid_id(&bad), Err(NoSpiffeId::Invalid(_, _))));
    }

    #[test]
    fn patterns_are_checked_at_load() {
        let err = |p: &str| SpiffePattern::parse(p).expect_err(p).problem;
        assert!(err("spiffe://Example.org/x").contains("upper case in the trust domain"));
        assert!(err("spiffe://*.example.org/x").contains("wildcard in the trust domain"));
        assert!(err("spiffe://**/x").contains("wildcard in the trust domain"));
        assert!(err("https://example.org/x").contains("must start with spiffe://"));
        assert!(err("SPIFFE://example.org/x").contains("must start with spiffe://"));
        assert!(err("spiffe://example.org/**/x").contains("only as the last segment"));
        assert!(err("spiffe://example.org/sa-*").contains("mixes *"));
        assert!(err("spiffe://example.org/ns/").contains("empty path segment"));
        assert!(err("spiffe://example.org/ns/../x").contains("dot segment"));
        assert!(err("spiffe://example.org/a%20b").contains("A-Z a-z 0-9"));
        assert!(err("spiffe://example.org:8443/x").contains("invalid trust domain"));
        assert_eq!(
            pat("spiffe://example.org/ns/*/sa/**").text(),
            "spiffe://example.org/ns/*/sa/**"
        );
    }
}
