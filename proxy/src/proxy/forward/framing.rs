//! The body framing sent upstream is certgate's own, never the client's spelling of it: one
//! `Content-Length` (duplicates that agree are merged, disagreeing ones refused), and
//! `Transfer-Encoding` only as `chunked`. A transfer-coding certgate does not implement is
//! refused with 501 rather than dropped, as HTTP/1.1 requires: forwarding the body without it
//! would hand the upstream different bytes from the ones the client meant.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FramingError {
    /// Content-Length values that are not one non-negative number.
    ContentLength,
    /// A coding other than `chunked`, or `chunked` twice or not last.
    TransferCoding(String),
}

impl FramingError {
    pub(crate) fn status(&self) -> u16 {
        match self {
            FramingError::ContentLength => 400,
            FramingError::TransferCoding(_) => 501,
        }
    }

    pub(crate) fn reason(&self) -> String {
        match self {
            FramingError::ContentLength => "conflicting or invalid content-length".into(),
            FramingError::TransferCoding(c) => {
                format!("transfer-coding {c:?} not implemented (only chunked)")
            }
        }
    }
}

/// Checks a request's framing headers; returns the single Content-Length to send, if any.
pub(crate) fn check(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut chunked = false;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let text = value.to_str().map_err(|_| {
            FramingError::TransferCoding(String::from_utf8_lossy(value.as_bytes()).into())
        })?;
        for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") || chunked {
                return Err(FramingError::TransferCoding(coding.to_string()));
            }
            chunked = true;
        }
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| FramingError::ContentLength)?;
        for v in text.split(',').map(str::trim) {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FramingError::ContentLength);
            }
            let n: u64 = v.parse().map_err(|_| FramingError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(FramingError::ContentLength);
            }
            length = Some(n);
        }
    }
    if chunked && length.is_some() {
        // Both framings at once is the shape of request smuggling.
        return Err(FramingError::ContentLength);
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn content_length_merged_or_refused() {
        assert_eq!(check(&h(&[])), Ok(None));
        assert_eq!(check(&h(&[("content-length", "5")])), Ok(Some(5)));
        assert_eq!(check(&h(&[("content-length", "5, 5")])), Ok(Some(5)));
        assert_eq!(
            check(&h(&[("content-length", "5"), ("content-length", "5")])),
            Ok(Some(5))
        );
        for bad in [
            vec![("content-length", "5, 6")],
            vec![("content-length", "5"), ("content-length", "6")],
            vec![("content-length", "-1")],
            vec![("content-length", "+5")],
            vec![("content-length", "")],
            vec![("content-length", "5,")],
            vec![("content-length", "99999999999999999999999")],
        ] {
            assert_eq!(check(&h(&bad)), Err(FramingError::ContentLength), "{bad:?}");
        }
    }

    #[test]
    fn only_chunked_is_a_transfer_coding() {
        assert_eq!(check(&h(&[("transfer-encoding", "chunked")])), Ok(None));
        assert_eq!(check(&h(&[("transfer-encoding", "Chunked")])), Ok(None));
        for (te, coding) in [
            ("gzip, chunked", "gzip"),
            ("chunked, chunked", "chunked"),
            ("xchunked", "xchunked"),
            ("identity", "identity"),
            ("chunked, gzip", "gzip"),
        ] {
            let e = check(&h(&[("transfer-encoding", te)])).unwrap_err();
            assert_eq!(e, FramingError::TransferCoding(coding.into()), "{te}");
            assert_eq!(e.status(), 501);
        }
        assert_eq!(
            check(&h(&[
                ("transfer-encoding", "chunked"),
                ("content-length", "3")
            ])),
            Err(FramingError::ContentLength)
        );
    }
}
