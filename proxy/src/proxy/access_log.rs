//! What each request leaves behind: the request metrics and, when something writes it, the
//! access log line (target `certgate::access`). The line's fields are [`AccessRecord`]'s: the
//! proxy writes one through `tracing`, `certgate policy learn` reads it back with serde, and both
//! use the one field list below.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

use pingora::proxy::Session;
use pingora::Error;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::exchange::{Exchange, Outcome};
use super::forward::headers as forward;
use super::{client_ip, conn_auth};
use crate::metrics;
use crate::policy::{RefusalKind, RequestTarget};

/// The `tracing` target of access log lines.
pub const TARGET: &str = "certgate::access";

/// Declares [`AccessRecord`] and the one `tracing` event that writes it from one field list, so
/// the names the proxy writes and the names `learn` reads are the same identifiers.
macro_rules! access_record {
    ($( $(#[$attr:meta])* $field:ident: $ty:ty, )*) => {
        /// One access log line. The proxy writes it with [`AccessRecord::write`] (field order
        /// as declared; `timestamp`, `level` and `target` are the log formatter's). Read back
        /// leniently: a missing field is empty, a value of the wrong type is empty, so a line
        /// from an older or newer certgate reads as far as it goes.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct AccessRecord<'a> {
            /// Written by the formatter (RFC 3339, UTC), not by [`AccessRecord::write`].
            #[serde(deserialize_with = "lenient_string")]
            pub timestamp: Cow<'a, str>,
            $( $(#[$attr])* pub $field: $ty, )*
        }

        impl AccessRecord<'_> {
            /// Writes the line: target [`TARGET`], level INFO.
            pub fn write(&self) {
                tracing::info!(target: "certgate::access", $( $field = LogValue::log_value(&self.$field) ),*);
            }
        }
    };
}

access_record! {
    #[serde(deserialize_with = "lenient_string")]
    listener: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    client: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    method: Cow<'a, str>,
    /// The path as matched and forwarded; the query never (it may hold secrets).
    #[serde(deserialize_with = "lenient_string")]
    path: Cow<'a, str>,
    /// 0 when no response was written. Read from a number or a numeric string.
    #[serde(deserialize_with = "lenient_status")]
    status: u16,
    #[serde(deserialize_with = "lenient_f64")]
    duration_ms: f64,
    /// The CN (`root` for the root token).
    #[serde(deserialize_with = "lenient_string")]
    user: Cow<'a, str>,
    /// The group values under the policy's `group_attribute`, as in `x-certgate-groups`.
    #[serde(deserialize_with = "lenient_string")]
    groups: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    spiffe_id: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    permission: Cow<'a, str>,
    /// `allow`, `deny` or `audit_deny`.
    #[serde(deserialize_with = "lenient_string")]
    decision: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    reason: Cow<'a, str>,
    #[serde(deserialize_with = "lenient_string")]
    vpce: Cow<'a, str>,
    /// The policy refusal this is (written `""` when none). The outer None: the line has no
    /// such field (written before certgate had it); `Some(None)`: not a policy refusal, or a
    /// kind this build does not know.
    #[serde(deserialize_with = "lenient_refusal", serialize_with = "write_refusal")]
    refusal: Option<Option<RefusalKind>>,
    /// The subject DN of the certificate the connection presented, verified or not (`user` is
    /// only ever a verified identity): who a refused certificate claimed to be.
    #[serde(deserialize_with = "lenient_string")]
    presented_subject: Cow<'a, str>,
}

/// A field value as `tracing` records it.
trait LogValue {
    fn log_value(&self) -> impl tracing::Value + '_;
}

impl LogValue for Cow<'_, str> {
    fn log_value(&self) -> impl tracing::Value + '_ {
        &**self
    }
}

impl LogValue for u16 {
    fn log_value(&self) -> impl tracing::Value + '_ {
        *self
    }
}

impl LogValue for f64 {
    fn log_value(&self) -> impl tracing::Value + '_ {
        *self
    }
}

impl LogValue for Option<Option<RefusalKind>> {
    fn log_value(&self) -> impl tracing::Value + '_ {
        self.flatten().map_or("", RefusalKind::as_str)
    }
}

fn write_refusal<S: Serializer>(r: &Option<Option<RefusalKind>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.flatten().map_or("", RefusalKind::as_str))
}

fn lenient_string<'de, 'a, D: Deserializer<'de>>(d: D) -> Result<Cow<'a, str>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => Cow::Owned(s),
        _ => Cow::Borrowed(""),
    })
}

fn lenient_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        serde_json::Value::String(t) => t.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(u16::try_from(n).unwrap_or(0))
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_f64()
        .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
        .unwrap_or(0.0))
}

fn lenient_refusal<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<RefusalKind>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(Some(RefusalKind::deserialize(v).ok()))
}

/// Counts the finished request and writes its access log line.
pub(super) fn record(name: &str, session: &Session, e: Option<&Error>, ex: &Exchange) {
    let code = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let outcome = &ex.outcome;
    let permission = outcome.permission().unwrap_or("");
    let ended = count(name, code, outcome.label(), permission, ex.start);
    // The access log line is built only when something will write it.
    let Some(duration_ms) = ended else {
        return;
    };
    let conn = conn_auth(session);
    let vpce = conn.and_then(|c| c.vpce_id.clone());
    let req = session.req_header();
    let identity = ex.identity();
    // The groups the policy saw (its group_attribute), written as in x-certgate-groups, so
    // `certgate policy learn` can grant them back and a comma inside a value stays `\,`.
    let groups = identity
        .map(|id| {
            forward::groups_rfc2253(id, ex.policy.as_ref().map(|p| p.group_attribute())).join(",")
        })
        .unwrap_or_default();
    let reason = match (outcome.reason(), e) {
        (Some(r), _) => r.to_string(),
        (None, Some(e)) => super::errors::log_reason(e),
        (None, None) => String::new(),
    };
    let refusal = match outcome {
        Outcome::Decided(v) => v.refusal().map(|r| r.kind()),
        Outcome::Undecided | Outcome::Unusable(_) => None,
    };
    AccessRecord {
        timestamp: Cow::Borrowed(""),
        listener: name.into(),
        client: client_ip(session)
            .map(|ip| ip.to_string())
            .unwrap_or_default()
            .into(),
        method: req.method.as_str().into(),
        // The path as matched and forwarded; the query stays out of the log (it may hold secrets).
        path: logged_path(ex.target.as_ref(), req.raw_path()).into(),
        status: code,
        duration_ms,
        user: if outcome.root() {
            "root"
        } else {
            identity.and_then(|i| i.user.as_deref()).unwrap_or("")
        }
        .into(),
        groups: groups.into(),
        // Workload certificates often have no CN: without this their lines would name no one.
        spiffe_id: identity
            .and_then(|i| crate::policy::spiffe::svid_id(&i.uri_sans).ok())
            .map_or("", |s| s.id)
            .into(),
        permission: permission.into(),
        decision: outcome.label().into(),
        reason: reason.into(),
        vpce: vpce.as_deref().unwrap_or("").into(),
        refusal: Some(refusal),
        presented_subject: conn.map_or("", |c| c.auth.presented_subject()).into(),
    }
    .write();
}

/// Counts one finished request in the request metrics; its duration in milliseconds when an
/// access-log line will be written (the line is built only then).
fn count(
    listener: &str,
    status: u16,
    decision: &str,
    permission: &str,
    start: Instant,
) -> Option<f64> {
    let elapsed = start.elapsed();
    let mut code = itoa::Buffer::new();
    metrics::REQUESTS
        .with_label_values(&[listener, code.format(status), decision])
        .inc();
    metrics::REQUEST_DURATION
        .with_label_values(&[listener])
        .observe(elapsed.as_secs_f64());
    metrics::AUTHZ_DECISIONS
        .with_label_values(&[listener, decision, permission])
        .inc();
    tracing::enabled!(target: TARGET, tracing::Level::INFO).then(|| elapsed.as_secs_f64() * 1000.0)
}

/// The path for the access log: the decided one, or what the client wrote when it was refused
/// before a decision (the query never: it may hold secrets).
fn logged_path(target: Option<&RequestTarget>, raw: &[u8]) -> String {
    match target {
        Some(t) => t.path().to_string(),
        None => {
            let raw = String::from_utf8_lossy(raw);
            raw.split('?').next().unwrap_or_default().to_string()
        }
    }
}

/// The method and path of a request refused before Pingora parsed it, as its request line gives
/// them (for the access log only; the query left out, each bounded in length).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub path: String,
}

/// Longest method or path kept from an unparsed request line.
const LINE_PART: usize = 256;

impl RequestLine {
    /// From the first bytes of a request (empty lines before the request line skipped, as the
    /// parser does); empty parts when they hold no request line yet.
    pub fn parse(bytes: &[u8]) -> RequestLine {
        let line = bytes
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .find(|l| !l.is_empty())
            .unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ').filter(|p| !p.is_empty());
        let mut part = || {
            let p = parts.next().unwrap_or_default();
            String::from_utf8_lossy(&p[..p.len().min(LINE_PART)]).into_owned()
        };
        let method = part();
        let path = part();
        let mut path = path.split('?').next().unwrap_or_default().to_string();
        // An absolute-form target's userinfo stays out of the log, as the query does.
        if let Some((scheme, rest)) = path.split_once("://") {
            let end = rest.find('/').unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                path = format!("{scheme}://{}", &rest[at + 1..]);
            }
        }
        RequestLine { method, path }
    }
}

/// An answer certgate gave a request that never reached the proxy phases (a header Pingora's
/// parser refuses, the header limits of either HTTP version): what is known of it.
pub struct Early<'a> {
    pub listener: &'a str,
    pub client: Option<IpAddr>,
    pub request: &'a RequestLine,
    pub status: u16,
    pub reason: &'a str,
    /// When the request began (its first byte, or the stream's header).
    pub start: Instant,
}

/// Counts an [`Early`] answer and writes its access log line, with the fields of every other
/// request's (no identity was looked at: user, groups and permission stay empty).
pub fn early(answer: &Early<'_>) {
    // Refused before a decision, as an unusable request is.
    let decision = Outcome::REFUSED;
    let Some(duration_ms) = count(answer.listener, answer.status, decision, "", answer.start)
    else {
        return;
    };
    AccessRecord {
        listener: answer.listener.into(),
        client: answer
            .client
            .map(|ip| ip.to_string())
            .unwrap_or_default()
            .into(),
        method: answer.request.method.as_str().into(),
        path: answer.request.path.as_str().into(),
        status: answer.status,
        duration_ms,
        decision: decision.into(),
        reason: answer.reason.into(),
        refusal: Some(None),
        ..AccessRecord::default()
    }
    .write();
}

#[cfg(test)]
mod tests {
    use super::RequestLine;

    #[test]
    fn a_request_line_gives_method_and_path_without_query() {
        let line = RequestLine::parse(b"\r\nPOST /a/b?token=s HTTP/1.1\r\nBad Header: x\r\n");
        assert_eq!((line.method.as_str(), line.path.as_str()), ("POST", "/a/b"));
        assert_eq!(RequestLine::parse(b""), RequestLine::default());
        let abs = RequestLine::parse(b"GET http://u:pw@h/x?q HTTP/1.1\r\n");
        assert_eq!(abs.path, "http://h/x");
        let long = format!("GET /{} HTTP/1.1\r\n", "x".repeat(1000));
        assert_eq!(RequestLine::parse(long.as_bytes()).path.len(), 256);
    }
}
