//! Reading the access log for `certgate policy learn`: which records are policy refusals, and
//! who was refused (the grantees). Reading files is the command's job ([`super`]).
//!
//! Whoever sends requests writes the log, so every field of a record is treated as hostile.

use serde::Deserialize;

use crate::policy::Denial;
pub(super) use crate::policy::RefusalKind;
use crate::proxy::access_log::{self, AccessRecord};
use crate::tls::verify::AuthFailure;

/// Who a learned grant goes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Grantee {
    /// A group value (under the policy's `group_attribute`).
    Group(String),
    /// A certificate CN, for identities without a group.
    User(String),
    /// Requests without a certificate.
    Anonymous,
}

/// One refused request read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub listener: String,
    pub method: String,
    /// The path as logged.
    pub path: String,
    /// One grantee per group, else the user, else anonymous.
    pub grantees: Vec<Grantee>,
    pub user: Option<String>,
    pub timestamp: Option<String>,
}

/// What one log line is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A request the policy refused (or, in audit mode, would have refused).
    Refusal(Refusal),
    /// An access record that is not a policy refusal: allowed, a 400, a certificate failure, an
    /// upstream error, or a certificate with neither group nor CN.
    Ignored,
    /// Not an access-log record (another log line, text, garbage).
    NotAccess,
}

/// Reads one line: a certgate JSON access record, also inside a CRI log prefix
/// (`<time> stdout F {...}`) or Docker's json-file wrapper (`{"log":"{...}\n",...}`).
pub(super) fn parse_line(line: &str) -> Line {
    let Some(start) = line.find('{') else {
        return Line::NotAccess;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line[start..].trim_end()) else {
        return Line::NotAccess;
    };
    if v.get("target").is_some_and(|t| t != access_log::TARGET) {
        return Line::NotAccess;
    }
    let Ok(record) = AccessRecord::deserialize(&v) else {
        return Line::NotAccess;
    };
    if let Some(inner) = v.get("log").and_then(|l| l.as_str()) {
        if record.method.is_empty() && inner.trim_start().starts_with('{') {
            return parse_line(inner);
        }
    }
    classify(record)
}

/// The record carries no typed refusal kind (it was written before the `refusal` field), only
/// the reason text, so the text is matched. It is built here by the very functions the proxy
/// writes it with ([`AuthFailure::reason`], [`Denial::reason`]) for this record's method and
/// path: a rewording of the proxy's reasons changes both sides at once, and a reason about
/// another request than the record's does not count. The unit test
/// `reasons_are_the_ones_the_proxy_writes` runs them through `authorize`. Never
/// [`RefusalKind::BadCertificate`]: a refused certificate is nothing `learn` can grant.
pub(super) fn refusal_kind(method: &str, path: &str, reason: &str) -> Option<RefusalKind> {
    if reason == AuthFailure::NoCertificate.reason() {
        return Some(RefusalKind::NoCertificate);
    }
    let requires = Denial::Requires(Vec::new()).reason(method, path);
    if reason == Denial::NotCovered.reason(method, path) || reason.starts_with(&requires) {
        return Some(RefusalKind::NotPermitted);
    }
    None
}

/// Which policy refusal a record is: its typed `refusal` field, or for a record written before
/// that field existed, its reason text ([`refusal_kind`]). The one place that chooses.
pub(super) fn record_refusal(r: &AccessRecord) -> Option<RefusalKind> {
    match r.refusal {
        Some(typed) => typed,
        None => refusal_kind(&r.method, &r.path, &r.reason),
    }
}

fn classify(r: AccessRecord) -> Line {
    if r.method.is_empty() || !r.path.starts_with('/') || r.decision.is_empty() {
        return Line::NotAccess;
    }
    // In audit mode the request was forwarded, so the status is the upstream's: the refusal
    // alone says what certgate would have answered.
    let audit = match &*r.decision {
        "audit_deny" => true,
        "deny" => false,
        _ => return Line::Ignored,
    };
    let status = r.status;
    let user = Some(r.user.to_string()).filter(|u| !u.is_empty());
    let grantees = match record_refusal(&r) {
        Some(RefusalKind::NoCertificate) if audit || status == 401 => vec![Grantee::Anonymous],
        Some(RefusalKind::NotPermitted) if audit || status == 403 => {
            let groups = split_groups(&r.groups);
            if !groups.is_empty() {
                groups.into_iter().map(Grantee::Group).collect()
            } else if let Some(u) = &user {
                vec![Grantee::User(u.clone())]
            } else {
                return Line::Ignored;
            }
        }
        _ => return Line::Ignored,
    };
    Line::Refusal(Refusal {
        listener: r.listener.into_owned(),
        method: r.method.into_owned(),
        path: r.path.into_owned(),
        grantees,
        user,
        timestamp: Some(r.timestamp.into_owned()).filter(|t| !t.is_empty()),
    })
}

/// The log's `groups` field: values written as in `x-certgate-groups` (RFC 2253 escapes, so a
/// comma inside a value is `\,`), joined by `,`.
pub(super) fn split_groups(field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut bytes = field.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                let Some(n) = bytes.next() else { break };
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(n), bytes.peek().copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        bytes.next();
                        cur.push((h * 16 + l) as u8);
                    }
                    _ => cur.push(n),
                }
            }
            b',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .filter(|v| !v.is_empty())
        .collect()
}
