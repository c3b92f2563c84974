//! Which engine serves a request: certgate's direct forwarding ([`super::Forwarder`]) for a
//! plain exchange, Pingora's `HttpProxy` for anything unusual (an upgrade, `Expect`, HTTP/1.0,
//! CONNECT, a target not in origin form, connection-specific headers), or a refusal before
//! either parses it. The one rule, `plain`, judges both HTTP versions; each version only
//! reads its request head into the same shape first.

use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;

/// Header lines read from an HTTP/1.1 request's first bytes; a request with more goes to
/// `HttpProxy`.
const MAX_HEADERS: usize = 64;

/// The HTTP version a request arrived in, as far as the rule cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    Http11,
    Http2,
}

/// Whether a request head can take the direct path: not CONNECT (extended CONNECT, with
/// `:protocol`, is one too), a target in origin form, no `Expect` or upgrade, a `Connection`
/// header naming nothing but `keep-alive` or `close`, not both Content-Length and
/// Transfer-Encoding (and on HTTP/2 no Transfer-Encoding at all, a connection-specific header
/// there), and Host as the version requires it (exactly one on HTTP/1.1, at most one on HTTP/2
/// beside `:authority`), without userinfo. Those keep the hop-by-hop rewriting of the direct
/// path as small as `HttpProxy`'s is for them.
fn plain<'h>(
    version: Version,
    method: &str,
    target: &[u8],
    headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
) -> bool {
    if method.eq_ignore_ascii_case("CONNECT") || target.first() != Some(&b'/') {
        return false;
    }
    let (mut hosts, mut length, mut chunked) = (0, false, false);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if value.contains(&b'@') {
                return false;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !tokens(value)
                .all(|t| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close"))
            {
                return false;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"http2-settings")
        {
            return false;
        }
    }
    match version {
        Version::Http11 => hosts == 1 && !(length && chunked),
        Version::Http2 => hosts <= 1 && !chunked,
    }
}

/// Whether the HTTP/1.1 request whose first bytes are `first` can take the direct path: its
/// header complete in `first`, HTTP/1.1, and `plain`.
pub fn http1(first: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(first), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let (Some(1), Some(method), Some(path)) = (req.version, req.method, req.path) else {
        return false;
    };
    plain(
        Version::Http11,
        method,
        path.as_bytes(),
        req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
    )
}

/// Whether an HTTP/2 stream's request (its header read by Pingora's h2 loop) can take the
/// direct path: `plain`.
pub fn http2(req: &RequestHeader) -> bool {
    plain(
        Version::Http2,
        req.method.as_str(),
        req.raw_path(),
        req.headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )
}

/// Whether `first` holds the start of a request header and not yet its end.
pub fn partial(first: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    matches!(req.parse(first), Ok(httparse::Status::Partial))
}

/// Whether Pingora's parser is certain to refuse the request whose first bytes are `first`:
/// httparse refuses a header name, value or line ending in them. Pingora parses with the same
/// httparse and retries only token and version errors (escaping the request line), and with
/// more header lines than `MAX_HEADERS`: those stay Pingora's to decide.
pub fn malformed(first: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    matches!(
        req.parse(first),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine)
    )
}

/// Whether Pingora's checks after parsing are certain to refuse the request whose complete
/// header is in `first`, with the same function Pingora runs ([`validate_request_authority`]:
/// two Host fields, userinfo in Host or target, a target authority Host disagrees with).
/// Only asked of requests [`http1`] turned away; a direct one meets the same checks in
/// [`super::Forwarder::serve`].
pub fn authority_refused(first: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(first), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return false;
    };
    let Ok(mut header) = RequestHeader::build(method, path.as_bytes(), Some(req.headers.len()))
    else {
        // Pingora builds the same header and fails the same way.
        return true;
    };
    for h in req.headers.iter() {
        if header.append_header(h.name.to_string(), h.value).is_err() {
            return false;
        }
    }
    validate_request_authority(&header).is_err()
}

/// The comma-separated tokens of a header value.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        r.set_version(http::Version::HTTP_2);
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn h1(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!("{method} {path} HTTP/1.1\r\n");
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    #[test]
    fn plain_requests_take_the_direct_path_on_both_versions() {
        let host = [("host", "a")];
        assert!(http1(&h1("GET", "/a?b=c", &host)));
        assert!(http2(&h2("GET", "/a?b=c", &[])));
        let up = [("host", "a"), ("content-length", "5")];
        assert!(http1(&h1("POST", "/up", &up)));
        assert!(http2(&h2("POST", "/up", &up[1..])));
        assert!(http1(&h1(
            "GET",
            "/",
            &[("host", "a"), ("connection", "close")]
        )));
        assert!(http2(&h2("HEAD", "/", &[("te", "trailers")])));
    }

    #[test]
    fn unusual_requests_go_to_httpproxy_on_both_versions() {
        for name in ["expect", "upgrade", "http2-settings"] {
            let hs = [("host", "a"), (name, "x")];
            assert!(!http1(&h1("GET", "/", &hs)), "{name}");
            assert!(!http2(&h2("GET", "/", &hs[1..])), "{name}");
        }
        for (method, path) in [("CONNECT", "/chat"), ("OPTIONS", "*"), ("GET", "http://a/")] {
            assert!(
                !http1(&h1(method, path, &[("host", "a")])),
                "{method} {path}"
            );
            assert!(!http2(&h2(method, path, &[])), "{method} {path}");
        }
        let upgrade = [("host", "a"), ("connection", "upgrade")];
        assert!(!http1(&h1("GET", "/", &upgrade)));
        assert!(!http2(&h2("GET", "/", &upgrade[1..])));
        let userinfo = [("host", "u@a")];
        assert!(!http1(&h1("GET", "/", &userinfo)));
        assert!(!http2(&h2("GET", "/", &userinfo)));
    }

    #[test]
    fn each_version_keeps_its_own_framing_and_host_rules() {
        // HTTP/1.1: exactly one Host; chunked alone is fine, with a length it is not.
        assert!(!http1(&h1("GET", "/", &[])));
        assert!(!http1(&h1("GET", "/", &[("host", "a"), ("host", "b")])));
        let chunked = [("host", "a"), ("transfer-encoding", "chunked")];
        assert!(http1(&h1("POST", "/", &chunked)));
        let both = [chunked[0], chunked[1], ("content-length", "3")];
        assert!(!http1(&h1("POST", "/", &both)));
        // HTTP/2: `:authority` may stand alone; Transfer-Encoding is connection-specific.
        assert!(http2(&h2("GET", "/", &[])));
        assert!(!http2(&h2("POST", "/", &chunked[1..])));
        // HTTP/1.0 is always HttpProxy's.
        assert!(!http1(b"GET / HTTP/1.0\r\nhost: a\r\n\r\n"));
        // An incomplete header is not judged.
        assert!(!http1(b"GET / HTTP/1.1\r\nhost: a\r\n"));
        assert!(partial(b"GET / HTTP/1.1\r\nhost: a\r\n"));
    }
}
