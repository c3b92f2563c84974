//! What `HttpProxy` does to a plain exchange in code pingora-proxy 0.9.1 keeps private,
//! mirrored for the direct path so both engines send the same bytes. Each item names the
//! function it mirrors; the `=0.9.1` pin in Cargo.toml keeps them in step, and
//! `tests/forward_h1.rs` (`hop_by_hop_headers_and_close_delimited_bodies_alike_on_both_engines`)
//! sends the same requests through both engines and fails if Pingora starts doing otherwise.

use http::header;
use pingora::http::{RequestHeader, ResponseHeader};

use super::eligible::tokens;

/// The hop-by-hop headers `HttpProxy` removes before the request filters
/// (pingora-proxy 0.9.1, `proxy_common::strip_standard_hop_by_hop_headers`).
const HOP_BY_HOP: [&str; 10] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "connection",
    "upgrade",
    "http2-settings",
];

/// What `HttpProxy` removes before the request filters (pingora-proxy 0.9.1,
/// `proxy_common::sanitize_h1_upstream_request`): the headers `Connection` names (only
/// `keep-alive` and `close` reach the direct path, see [`super::eligible`]) and the hop-by-hop
/// headers. The direct path leaves them out as it copies the client's head.
pub(super) struct HopByHop {
    names_close: bool,
}

impl HopByHop {
    /// `None` for a request that carries none (most): one pass over its names.
    pub(super) fn of(req: &RequestHeader) -> Option<HopByHop> {
        if !req.headers.keys().any(|n| HOP_BY_HOP.contains(&n.as_str())) {
            return None;
        }
        let names_close = req
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")));
        Some(HopByHop { names_close })
    }

    pub(super) fn drops(&self, name: &header::HeaderName) -> bool {
        HOP_BY_HOP.contains(&name.as_str()) || (self.names_close && name.as_str() == "close")
    }
}

/// A request with a body but neither framing header goes upstream chunked (pingora-proxy
/// 0.9.1, `proxy_common::finalize_h1_upstream_request_framing`): an HTTP/2 client's body has
/// no length of its own.
pub(super) fn frame_request_body(req: &mut RequestHeader, has_body: bool) -> pingora::Result<()> {
    if has_body
        && !req.headers.contains_key(header::CONTENT_LENGTH)
        && !req.headers.contains_key(header::TRANSFER_ENCODING)
    {
        req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// A response framed by the upstream closing is sent to an HTTP/1.1 client chunked, so the
/// client connection survives it (pingora-proxy 0.9.1, `proxy_h1`'s response header task:
/// "Convert HTTP 1.0 style response to chunked encoding"). `end`: the header is the whole
/// response. HTTP/2 frames every body itself.
pub(super) fn chunk_close_delimited(
    resp: &mut ResponseHeader,
    head_request: bool,
    end: bool,
) -> pingora::Result<()> {
    let no_body = head_request || matches!(resp.status.as_u16(), 204 | 304);
    if !no_body
        && !end
        && !resp.status.is_informational()
        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
        && !resp.headers.contains_key(header::CONTENT_LENGTH)
    {
        resp.set_version(http::Version::HTTP_11);
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_what_connection_names_are_removed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-kept", "v").unwrap();
        assert!(HopByHop::of(&req).is_none());
        for name in HOP_BY_HOP.iter().chain(&["close"]) {
            req.append_header(name.to_string(), "v").unwrap();
        }
        req.insert_header("connection", "close").unwrap();
        let hop = HopByHop::of(&req).expect("hop-by-hop headers");
        let left: Vec<_> = req
            .headers
            .keys()
            .filter(|n| !hop.drops(n))
            .map(|n| n.as_str())
            .collect();
        assert_eq!(left, ["x-kept"]);
        // `close` is dropped only when Connection names it.
        let mut named = RequestHeader::build("GET", b"/", None).unwrap();
        named.insert_header("te", "trailers").unwrap();
        let hop = HopByHop::of(&named).expect("te");
        assert!(!hop.drops(&header::HeaderName::from_static("close")));
    }

    #[test]
    fn only_a_close_delimited_body_is_chunked() {
        let chunked = |status: u16, head: bool, end: bool, length: bool| {
            let mut resp = ResponseHeader::build(status, None).unwrap();
            if length {
                resp.insert_header("content-length", "0").unwrap();
            }
            chunk_close_delimited(&mut resp, head, end).unwrap();
            resp.headers.contains_key(header::TRANSFER_ENCODING)
        };
        assert!(chunked(200, false, false, false));
        assert!(!chunked(200, false, false, true));
        assert!(!chunked(200, false, true, false));
        assert!(!chunked(200, true, false, false));
        assert!(!chunked(204, false, false, false));
        assert!(!chunked(304, false, false, false));
        assert!(!chunked(101, false, false, false));
    }

    #[test]
    fn a_body_without_framing_goes_chunked() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        frame_request_body(&mut req, false).unwrap();
        assert!(!req.headers.contains_key(header::TRANSFER_ENCODING));
        frame_request_body(&mut req, true).unwrap();
        assert_eq!(req.headers[header::TRANSFER_ENCODING], "chunked");
        let mut sized = RequestHeader::build("POST", b"/", None).unwrap();
        sized.insert_header("content-length", "3").unwrap();
        frame_request_body(&mut sized, true).unwrap();
        assert!(!sized.headers.contains_key(header::TRANSFER_ENCODING));
    }
}
