//! The JSON error answers (400, 401, 403, 408, 502, 503, 504), shaped like Anka's own envelope so its clients can
//! read them: `{"status":"FAIL","message":M,"reason":R}`. Every answer certgate gives itself has
//! the head [`head`] builds, whether written on a session ([`respond`]), as raw HTTP/1.1 bytes
//! below the parser ([`http1_bytes`]) or on an HTTP/2 stream.

use std::borrow::Cow;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::{slots, upstream};
use crate::metrics::UpstreamError;

/// The `message` for each status certgate answers itself.
pub fn message_for(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Authentication Required",
        403 => "Permission Denied",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Upstream Unavailable",
        503 => "Service Unavailable",
        504 => "Upstream Timeout",
        _ => "Error",
    }
}

pub fn body(code: u16, reason: &str) -> Bytes {
    let v = serde_json::json!({
        "status": "FAIL",
        "message": message_for(code),
        "reason": reason,
    });
    Bytes::from(v.to_string())
}

/// The head of every JSON error answer, for a body of `length` bytes. `hsts` is the listener's
/// header value, if any.
pub fn head(
    code: u16,
    length: usize,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(code, Some(5))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", length.to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if code == 401 {
        // Tells browsers and curl that a client certificate (or the root token) is wanted.
        resp.insert_header("www-authenticate", "Basic realm=\"certgate\"")?;
    }
    if let Some(h) = hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h.clone())?;
    }
    Ok(resp)
}

/// Writes a complete JSON error response. `hsts` is the listener's header value, if any.
pub async fn respond(
    session: &mut Session,
    code: u16,
    reason: &str,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    // A response already under way (its header sent, and not an interim one) cannot become
    // another: writing this one would append its bytes to that body. As in Pingora's
    // `write_error_response`, nothing is written; the connection ends instead.
    if let Some(written) = session.response_written() {
        if !written.status.is_informational() || written.status == 101 {
            return Ok(());
        }
    }
    let body = body(code, reason);
    let resp = head(code, body.len(), hsts)?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// A complete JSON error answer as HTTP/1.1 bytes, with the same head as [`respond`]'s and
/// `connection: close`, for a refusal written where no HTTP session exists (the header guard,
/// below Pingora's parser): the connection ends after it.
pub fn http1_bytes(code: u16, reason: &str, hsts: Option<&http::HeaderValue>) -> Vec<u8> {
    let body = body(code, reason);
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\n",
        http::StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or_else(|| message_for(code))
    )
    .into_bytes();
    // `head` fails only on a header value it could not hold; every value here is ASCII.
    if let Ok(resp) = head(code, body.len(), hsts) {
        for (name, value) in resp.headers.iter() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

/// An answer certgate gives itself: its status and the error body's `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: Cow<'static, str>,
}

impl Answer {
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Answer {
        Answer {
            status,
            reason: reason.into(),
        }
    }
}

/// What a failed attempt to proxy comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The answer owed to the client; none when the client is gone.
    pub answer: Option<Answer>,
    /// The upstream's part in it, for `certgate_upstream_errors_total`.
    pub upstream: Option<UpstreamError>,
}

/// The answer and upstream-error kind for a failed proxy attempt.
pub fn classify_error(e: &Error) -> Failure {
    let (status, reason, upstream): (u16, Cow<'static, str>, _) = classify(e);
    Failure {
        answer: (status > 0).then(|| Answer::new(status, reason)),
        upstream,
    }
}

fn classify(e: &Error) -> (u16, Cow<'static, str>, Option<UpstreamError>) {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => (*code, message_reason(*code).into(), None),
        Custom(slots::BUSY) => (
            503,
            "too many concurrent requests".into(),
            Some(UpstreamError::Busy),
        ),
        Custom(slots::CLIENT_BUSY) => (
            503,
            "too many concurrent requests from this client".into(),
            Some(UpstreamError::BusyClient),
        ),
        // The client's body stalled (`timeouts.request_body`): the client's doing, not the
        // upstream's.
        ReadTimedout if e.esource() == &pingora::ErrorSource::Downstream => {
            (408, "request body timeout".into(), None)
        }
        ConnectTimedout => (
            504,
            "connect timeout".into(),
            Some(UpstreamError::ConnectTimeout),
        ),
        ReadTimedout | WriteTimedout => {
            (504, "upstream timeout".into(), Some(UpstreamError::Timeout))
        }
        ConnectRefused => (
            502,
            "connection refused".into(),
            Some(UpstreamError::ConnectRefused),
        ),
        Custom(upstream::UNRESOLVED) => (
            502,
            "upstream name does not resolve".into(),
            Some(UpstreamError::ConnectError),
        ),
        ConnectNoRoute => (
            502,
            "no route to upstream".into(),
            Some(UpstreamError::ConnectError),
        ),
        ConnectError | BindError | SocketError => (
            502,
            "cannot connect to upstream".into(),
            Some(UpstreamError::ConnectError),
        ),
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => (
                502,
                "upstream closed the connection".into(),
                Some(UpstreamError::Protocol),
            ),
            pingora::ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => (0, "".into(), None),
                _ => (400, "malformed request".into(), None),
            },
            _ => (500, "internal error".into(), None),
        },
    }
}

/// The access log's `reason` for a failed attempt. certgate's own error types read as the
/// answer's reason followed by the detail, so the log says what the client was told; Pingora's
/// read as Pingora writes them, less the space it puts first for an error of no source.
pub fn log_reason(e: &Error) -> String {
    let ours = matches!(
        e.etype(),
        ErrorType::Custom(slots::BUSY | slots::CLIENT_BUSY | upstream::UNRESOLVED)
    );
    if let (true, Some(answer)) = (ours, classify_error(e).answer) {
        return match &e.context {
            Some(detail) => format!("{}: {detail}", answer.reason),
            None => answer.reason.into_owned(),
        };
    }
    e.to_string().trim_start().to_string()
}

fn message_reason(code: u16) -> String {
    message_for(code).to_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn body_is_the_contract_envelope() {
        let b = super::body(403, "GET /x is covered by no permission");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], "FAIL");
        assert_eq!(v["message"], "Permission Denied");
        assert_eq!(v["reason"], "GET /x is covered by no permission");
    }

    use super::*;

    #[test]
    fn the_guard_bytes_carry_the_head_of_every_error_answer() {
        let hsts = http::HeaderValue::from_static("max-age=63072000");
        let raw = String::from_utf8(http1_bytes(431, "too big", Some(&hsts))).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{raw}"
        );
        for line in [
            "content-type: application/json\r\n",
            "cache-control: no-store\r\n",
            "strict-transport-security: max-age=63072000\r\n",
            "connection: close\r\n\r\n",
        ] {
            assert!(raw.contains(line), "{line}: {raw}");
        }
        let (_, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            raw.contains(&format!("content-length: {}\r\n", body.len())),
            "{raw}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["reason"], "too big");
    }

    #[test]
    fn classify_error_maps_each_upstream_failure_to_status_reason_and_kind() {
        let cases = [
            (
                ErrorType::ConnectRefused,
                502,
                Some(UpstreamError::ConnectRefused),
            ),
            (
                ErrorType::ConnectTimedout,
                504,
                Some(UpstreamError::ConnectTimeout),
            ),
            (ErrorType::ReadTimedout, 504, Some(UpstreamError::Timeout)),
            (ErrorType::WriteTimedout, 504, Some(UpstreamError::Timeout)),
            (
                ErrorType::ConnectNoRoute,
                502,
                Some(UpstreamError::ConnectError),
            ),
            (
                ErrorType::Custom(upstream::UNRESOLVED),
                502,
                Some(UpstreamError::ConnectError),
            ),
            (
                ErrorType::ConnectError,
                502,
                Some(UpstreamError::ConnectError),
            ),
            (
                ErrorType::SocketError,
                502,
                Some(UpstreamError::ConnectError),
            ),
            (
                ErrorType::Custom(slots::BUSY),
                503,
                Some(UpstreamError::Busy),
            ),
            (
                ErrorType::Custom(slots::CLIENT_BUSY),
                503,
                Some(UpstreamError::BusyClient),
            ),
            (ErrorType::HTTPStatus(413), 413, None),
        ];
        for (etype, status, kind) in cases {
            let failure = classify_error(&Error::new(etype.clone()));
            let answer = failure.answer.expect("answered");
            assert_eq!(
                (answer.status, failure.upstream),
                (status, kind),
                "{etype:?}"
            );
            assert!(!answer.reason.is_empty(), "{etype:?}");
        }
        let failure = classify_error(&Error::new(ErrorType::HTTPStatus(413)));
        assert_eq!(failure.answer, Some(Answer::new(413, "payload too large")));
    }

    #[test]
    fn classify_error_tells_upstream_from_client_failures() {
        let answer = |answer: Option<Answer>, upstream| Failure { answer, upstream };
        let upstream = Error::new_up(ErrorType::InvalidHTTPHeader);
        assert_eq!(
            classify_error(&upstream),
            answer(
                Some(Answer::new(502, "upstream closed the connection")),
                Some(UpstreamError::Protocol)
            )
        );
        // The client went away: nothing to answer, nothing counted against the upstream.
        let gone = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(classify_error(&gone), answer(None, None));
        let malformed = Error::new_down(ErrorType::InvalidHTTPHeader);
        assert_eq!(
            classify_error(&malformed),
            answer(Some(Answer::new(400, "malformed request")), None)
        );
        // A stalled request body is the client's: 408, not the upstream's 504.
        let stalled = Error::new_down(ErrorType::ReadTimedout);
        assert_eq!(
            classify_error(&stalled),
            answer(Some(Answer::new(408, "request body timeout")), None)
        );
        let ours = Error::new_in(ErrorType::InternalError);
        let status = classify_error(&ours).answer.map(|a| a.status);
        assert_eq!(status, Some(500));
    }

    #[test]
    fn an_upstream_name_that_does_not_resolve_is_told_apart_from_no_route() {
        let unresolved = Error::explain(
            ErrorType::Custom(upstream::UNRESOLVED),
            "no-such-host.invalid:80: failed to lookup address information",
        );
        let answer = classify_error(&unresolved).answer;
        assert_eq!(
            answer,
            Some(Answer::new(502, "upstream name does not resolve"))
        );
        assert_eq!(
            log_reason(&unresolved),
            "upstream name does not resolve: no-such-host.invalid:80: failed to lookup address information"
        );
        let no_route = classify_error(&Error::new(ErrorType::ConnectNoRoute)).answer;
        assert_eq!(no_route, Some(Answer::new(502, "no route to upstream")));
    }

    #[test]
    fn the_log_reason_of_an_error_without_source_has_no_leading_space() {
        let e = Error::explain(ErrorType::ConnectNoRoute, "10.0.0.1:80");
        assert_eq!(log_reason(&e), "ConnectNoRoute context: 10.0.0.1:80");
        let busy = Error::explain(ErrorType::Custom(slots::BUSY), "no free upstream slot");
        assert_eq!(
            log_reason(&busy),
            "too many concurrent requests: no free upstream slot"
        );
    }

    #[test]
    fn every_upstream_error_kind_has_its_own_label() {
        let mut labels: Vec<_> = UpstreamError::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), UpstreamError::ALL.len());
    }
}
