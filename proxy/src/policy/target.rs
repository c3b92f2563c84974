//! The request target, read once: the bytes the client wrote become the normalised path the
//! policy decides on and, from the same string, the target the upstream receives. Nothing the
//! client wrote reaches the upstream's request line except through this value.
//!
//! Accepted forms:
//! - origin-form, `/path?query`;
//! - absolute-form, `http://host/path?query` or `https://…`, only when its authority is the
//!   request's `Host` (when there is one); it is forwarded in origin-form.
//!
//! Everything else is refused: HTTP parsers disagree about targets such as `foo:/admin/x`,
//! `admin/x` or `*` (some route them to `/admin/x`, some to `/`), so a decision about one of
//! them cannot be trusted to hold for the upstream. The query is forwarded as written and not
//! matched.

use http::uri::PathAndQuery;

use super::normalize::{normalize_path, PathError};
use crate::config::PathParams;

/// Why a request target was refused; [`TargetError::reason`] is the 400 response's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TargetError {
    #[error("{}", .0.reason())]
    Path(#[from] PathError),
    /// Neither origin-form nor absolute-form (`*`, `foo:/x`, `x/y`, authority-form, empty).
    #[error("request target must be a path or an absolute http(s) URL")]
    Form,
    /// Absolute-form whose authority is not the request's Host, or has userinfo.
    #[error("request target authority does not match Host")]
    Authority,
    /// A `;` in a path segment under `path_params: reject`.
    #[error("path parameter (;) in path")]
    PathParameter,
    /// Bytes that are not UTF-8, or that a URI cannot carry unchanged.
    #[error("invalid character in request target")]
    Character,
}

impl TargetError {
    /// The exact `reason` string of the 400 response body.
    pub fn reason(&self) -> &'static str {
        match self {
            TargetError::Path(p) => p.reason(),
            TargetError::Form => "request target must be a path or an absolute http(s) URL",
            TargetError::Authority => "request target authority does not match Host",
            TargetError::PathParameter => "path parameter (;) in path",
            TargetError::Character => "invalid character in request target",
        }
    }
}

/// A decided request target: the normalised path, then `?query` when there was one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTarget {
    /// `path` or `path?query`, exactly the upstream's request-target.
    forward: PathAndQuery,
    path_len: usize,
}

impl RequestTarget {
    /// The normalised path: what the policy matches and what the upstream receives.
    pub fn path(&self) -> &str {
        &self.forward.as_str()[..self.path_len]
    }

    /// The query as the client wrote it, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.forward.as_str().get(self.path_len + 1..)
    }

    /// The upstream request-target: [`Self::path`] followed by `?` and [`Self::query`].
    pub fn forward(&self) -> &PathAndQuery {
        &self.forward
    }

    /// The upstream request-target as a URI (origin-form).
    pub fn uri(&self) -> http::Uri {
        http::Uri::from(self.forward.clone())
    }
}

/// Reads a request target (`raw`, the bytes of the request line or of `:path`), checks an
/// absolute-form authority against `host`, and normalises the path.
pub fn parse_target(
    raw: &[u8],
    host: Option<&[u8]>,
    params: PathParams,
) -> Result<RequestTarget, TargetError> {
    let raw = std::str::from_utf8(raw).map_err(|_| TargetError::Character)?;
    let rest = if raw.starts_with('/') {
        raw
    } else if let Some(after) = strip_http_scheme(raw) {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        let matches_host = host.is_none_or(|h| h.eq_ignore_ascii_case(authority.as_bytes()));
        if authority.is_empty() || authority.contains(['@', '\\']) || !matches_host {
            return Err(TargetError::Authority);
        }
        &after[end..]
    } else {
        return Err(TargetError::Form);
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // `http://host?q` has an empty path, which means `/`.
    let path = if path.is_empty() { "/" } else { path };
    if params == PathParams::Reject && path.contains(';') {
        return Err(TargetError::PathParameter);
    }
    let normal = normalize_path(path)?;
    let path_len = normal.len();
    let mut forward = normal.into_owned();
    if let Some(q) = query {
        forward.push('?');
        forward.push_str(q);
    }
    // The URI type must carry the string unchanged (it would, for instance, drop a `#...`).
    let pq = PathAndQuery::try_from(forward.as_str()).map_err(|_| TargetError::Character)?;
    if pq.as_str() != forward {
        return Err(TargetError::Character);
    }
    Ok(RequestTarget {
        forward: pq,
        path_len,
    })
}

/// The rest of `raw` after `http://` or `https://` (scheme case-insensitive).
fn strip_http_scheme(raw: &str) -> Option<&str> {
    let (scheme, rest) = raw.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(raw: &str) -> Result<String, TargetError> {
        parse_target(
            raw.as_bytes(),
            Some(&b"localhost:8443"[..]),
            PathParams::Reject,
        )
        .map(|t| t.forward().as_str().to_string())
    }

    #[test]
    fn origin_form_is_normalised_and_keeps_its_query() {
        assert_eq!(t("/a/../b?x=1&y=/../z"), Ok("/b?x=1&y=/../z".into()));
        assert_eq!(t("/"), Ok("/".into()));
        assert_eq!(t("/?"), Ok("/?".into()));
        assert_eq!(t("//api//v1"), Ok("/api/v1".into()));
        let target = parse_target(b"/x/%2e%2e/y?q", None, PathParams::Reject).unwrap();
        assert_eq!(target.path(), "/y");
        assert_eq!(target.query(), Some("q"));
        assert_eq!(target.uri().to_string(), "/y?q");
    }

    #[test]
    fn targets_that_are_not_paths_are_refused() {
        for raw in [
            "foo:/admin/x",
            "x:/api/v1/vm",
            "admin/x",
            "foo:/a/../../admin/x",
            "*",
            "",
            "localhost:8443",
            "ftp://localhost:8443/admin",
            "?x",
            "http:/admin",
            "\\admin",
        ] {
            assert_eq!(t(raw), Err(TargetError::Form), "{raw:?}");
        }
    }

    #[test]
    fn absolute_form_must_name_the_host() {
        assert_eq!(t("https://localhost:8443/a/./b?q"), Ok("/a/b?q".into()));
        assert_eq!(t("HTTP://LOCALHOST:8443"), Ok("/".into()));
        assert_eq!(t("http://localhost:8443?q=1"), Ok("/?q=1".into()));
        for raw in [
            "https://evil.example/admin",
            "https://localhost/admin",
            "https://u@localhost:8443/admin",
            "https:///admin",
            "https://localhost:8443\\@evil/admin",
        ] {
            assert_eq!(t(raw), Err(TargetError::Authority), "{raw:?}");
        }
        // Without a Host header the authority is taken as given.
        let no_host = parse_target(b"http://a.example/x", None, PathParams::Reject).unwrap();
        assert_eq!(no_host.path(), "/x");
    }

    #[test]
    fn path_parameters() {
        assert_eq!(
            t("/api/v1/logs/..;/..;/admin/x"),
            Err(TargetError::PathParameter)
        );
        assert_eq!(t("/a;b"), Err(TargetError::PathParameter));
        // A `;` in the query is not a path parameter.
        assert_eq!(t("/a?b;c"), Ok("/a?b;c".into()));
        let keep = parse_target(b"/a/..;/b", None, PathParams::Keep).unwrap();
        assert_eq!(keep.path(), "/a/..;/b");
        assert_eq!(
            TargetError::PathParameter.reason(),
            "path parameter (;) in path"
        );
    }

    #[test]
    fn path_errors_keep_their_reasons() {
        assert_eq!(t("/a%2fb"), Err(TargetError::Path(PathError::EncodedSlash)));
        assert_eq!(
            TargetError::Path(PathError::EscapesRoot).reason(),
            "path escapes root"
        );
        assert_eq!(
            parse_target(b"/a\xff", None, PathParams::Keep),
            Err(TargetError::Character)
        );
        assert_eq!(t("/a#b"), Err(TargetError::Character));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

        #[test]
        fn decided_path_is_the_forwarded_path(raw in proptest::collection::vec(any::<u8>(), 0..64), keep in any::<bool>()) {
            let params = if keep { PathParams::Keep } else { PathParams::Reject };
            check_forward_invariant(&raw, params);
            let mut rooted = b"/".to_vec();
            rooted.extend_from_slice(&raw);
            check_forward_invariant(&rooted, params);
        }
    }

    /// The invariant the fuzz target checks too.
    fn check_forward_invariant(raw: &[u8], params: PathParams) {
        if let Ok(target) = parse_target(raw, None, params) {
            let forward = target.forward().as_str();
            let (path, _) = forward.split_once('?').unwrap_or((forward, ""));
            assert_eq!(path, target.path(), "{raw:?}");
            // Forwarding it again decides the same path.
            let again = parse_target(forward.as_bytes(), None, params).expect("re-parse");
            assert_eq!(again, target, "{raw:?}");
        }
    }
}
