//! The JSON error answers (400, 401, 403, 502, 503, 504), shaped like Anka's own envelope so its clients can
//! read them: `{"status":"FAIL","message":M,"reason":R}`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

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

/// Writes a complete JSON error response. `hsts` is the listener's header value, if any.
pub async fn respond(
    session: &mut Session,
    code: u16,
    reason: &str,
    hsts: Option<&str>,
) -> pingora::Result<()> {
    let body = body(code, reason);
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    if code == 401 {
        // Tells browsers and curl that a client certificate (or the root token) is wanted.
        resp.insert_header("www-authenticate", "Basic realm=\"certgate\"")?;
    }
    if let Some(h) = hsts {
        resp.insert_header("strict-transport-security", h)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
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
}
