//! HTTP/2 request streams on the direct path ([`super::Forwarder`], which always speaks
//! HTTP/1.1 upstream) instead of pingora-proxy's `HttpProxy`. Pingora still runs the
//! connection: its h2 accept loop (malformed-stream budget, graceful shutdown, idle timeout)
//! parses each stream's request header and hands over the stream; only what happens to one
//! plain request changes. Which streams: [`super::eligible::http2`].

use std::io::Cursor;

use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;

/// The size of an HTTP/2 request's header block counted as its HTTP/1.1 form would be (request
/// line, a Host line for `:authority`, each field as `name: value` with its CRLF, the empty
/// line), so `limits.max_header_bytes` means the same on both versions.
pub fn header_bytes(req: &RequestHeader) -> usize {
    const CRLF: usize = 2;
    let line = req.method.as_str().len() + 1 + req.raw_path().len() + " HTTP/1.1".len() + CRLF;
    let host = req
        .uri
        .authority()
        .map_or(0, |a| "host: ".len() + a.as_str().len() + CRLF);
    let fields: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + CRLF)
        .sum();
    line + host + fields + CRLF
}

/// The proxy session for one HTTP/2 stream. pingora-proxy builds a `Session` around an HTTP/2
/// stream only inside `HttpProxy`; outside it, its one public constructor takes an HTTP/1
/// stream, so the session is built on an empty placeholder whose HTTP/1 half is then replaced
/// by the stream. The placeholder never reads or writes anything.
pub fn session(stream: ServerSession) -> Session {
    let mut session = Session::new_h1(Box::new(Cursor::new(Vec::<u8>::new())));
    *session.downstream_session = stream;
    session
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        r.set_version(http::Version::HTTP_2);
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn a_header_block_counts_as_its_http1_form() {
        let r = req("GET", "/a", &[("x-a", "bc")]);
        // "GET /a HTTP/1.1\r\n" + "x-a: bc\r\n" + "\r\n"
        assert_eq!(header_bytes(&r), 17 + 9 + 2);
    }
}
