//! Which access-log records are policy refusals, and what `learn` reads from them: the lines
//! the proxy writes, the older lines without the typed refusal, container log wrappers.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::{record, refusal, POLICY};
use crate::cli::learn::log::*;
use crate::proxy::access_log::AccessRecord;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines `record.write()` leaves under the JSON format `certgate run` sets up
/// (`cli::init_logging`), or the text format.
fn written(record: &AccessRecord, json: bool) -> String {
    let buf = Buf::default();
    let out = buf.clone();
    let builder = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || out.clone());
    if json {
        let sub = builder.json().flatten_event(true).finish();
        tracing::subscriber::with_default(sub, || record.write());
    } else {
        let sub = builder
            .fmt_fields(crate::cli::log_text::QuotedFields)
            .finish();
        tracing::subscriber::with_default(sub, || record.write());
    }
    let bytes = buf.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

fn denied(refusal: Option<Option<RefusalKind>>) -> AccessRecord<'static> {
    AccessRecord {
        listener: "ctrl".into(),
        client: "10.0.0.7".into(),
        method: "GET".into(),
        path: "/api/v1/vm/42".into(),
        status: 403,
        duration_ms: 1.25,
        user: "jenkins".into(),
        groups: "ci,a\\,b".into(),
        spiffe_id: "spiffe://example.org/ns/ci/sa/builder".into(),
        permission: "".into(),
        decision: "deny".into(),
        reason: "GET /api/v1/vm/42 requires one of: list_vms".into(),
        vpce: "vpce-0123".into(),
        refusal,
        ..AccessRecord::default()
    }
}

#[test]
fn a_line_the_proxy_writes_reads_back_as_the_same_record() {
    let record = denied(Some(Some(RefusalKind::NotPermitted)));
    let line = written(&record, true);
    assert_eq!(line.lines().count(), 1, "{line}");
    // The contract's fields, in the order they have always been written, then `refusal`.
    let mut at = 0;
    for field in [
        "timestamp",
        "level",
        "listener",
        "client",
        "method",
        "path",
        "status",
        "duration_ms",
        "user",
        "groups",
        "spiffe_id",
        "permission",
        "decision",
        "reason",
        "vpce",
        "refusal",
        "target",
    ] {
        let pos = line[at..]
            .find(&format!("\"{field}\":"))
            .unwrap_or_else(|| panic!("{field} missing or out of order in {line}"));
        at += pos;
    }
    assert!(
        line.contains(r#""status":403,"duration_ms":1.25,"#),
        "{line}"
    );
    assert!(line.contains(r#""refusal":"not_permitted","#), "{line}");
    assert!(line.contains(r#""target":"certgate::access""#), "{line}");

    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let back = AccessRecord::deserialize(&v).unwrap();
    assert!(!back.timestamp.is_empty());
    assert_eq!(
        back,
        AccessRecord {
            timestamp: back.timestamp.clone(),
            ..record.clone()
        }
    );
    let Line::Refusal(r) = parse_line(&line) else {
        panic!("not a refusal: {line}")
    };
    assert_eq!(
        (r.listener.as_str(), r.method.as_str(), r.path.as_str()),
        ("ctrl", "GET", "/api/v1/vm/42")
    );
    assert_eq!(
        r.grantees,
        vec![Grantee::Group("ci".into()), Grantee::Group("a,b".into())]
    );
    assert_eq!(r.user.as_deref(), Some("jenkins"));
    assert_eq!(r.timestamp, Some(back.timestamp.into_owned()));

    // Not a refusal: written as "", read back as "no kind" (not as an older line's missing field).
    let allowed = AccessRecord {
        decision: "allow".into(),
        status: 200,
        refusal: Some(None),
        ..denied(None)
    };
    let line = written(&allowed, true);
    assert!(line.contains(r#""refusal":"""#), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(AccessRecord::deserialize(&v).unwrap().refusal, Some(None));

    // The text format writes the same fields, quoted.
    let text = written(&record, false);
    assert!(
        text.contains(r#"listener="ctrl" client="10.0.0.7" method="GET" path="/api/v1/vm/42" status="403" duration_ms="1.25" user="jenkins""#),
        "{text}"
    );
    assert!(
        text.contains(r#"vpce="vpce-0123" refusal="not_permitted""#),
        "{text}"
    );
}

#[test]
fn the_typed_refusal_wins_over_the_reason_text() {
    let line = |r: &AccessRecord| {
        let mut v = serde_json::to_value(r).unwrap();
        v["target"] = "certgate::access".into();
        v.to_string()
    };
    // The reason reads as a 403 the policy gave, but the typed field says otherwise.
    let mut r = denied(Some(None));
    assert_eq!(parse_line(&line(&r)), Line::Ignored);
    r.refusal = Some(Some(RefusalKind::BadCertificate));
    assert_eq!(parse_line(&line(&r)), Line::Ignored);
    // A reason in words learn does not know, typed as a refusal: taken.
    r.refusal = Some(Some(RefusalKind::NotPermitted));
    r.reason = "reworded: nobody may".into();
    assert!(matches!(parse_line(&line(&r)), Line::Refusal(_)));
    assert_eq!(record_refusal(&r), Some(RefusalKind::NotPermitted));
    r.status = 401;
    r.refusal = Some(Some(RefusalKind::NoCertificate));
    let Line::Refusal(x) = parse_line(&line(&r)) else {
        panic!("not a refusal")
    };
    assert_eq!(x.grantees, vec![Grantee::Anonymous]);
    // A kind from a newer certgate: not one learn knows.
    let mut v = serde_json::to_value(&r).unwrap();
    v["refusal"] = "rate_limited".into();
    assert_eq!(parse_line(&v.to_string()), Line::Ignored);
    // No field at all (an older log): the reason text decides.
    let mut old = denied(None);
    let mut v = serde_json::to_value(&old).unwrap();
    v.as_object_mut().unwrap().remove("refusal");
    assert!(matches!(parse_line(&v.to_string()), Line::Refusal(_)));
    old.reason = "reworded: nobody may".into();
    let mut v = serde_json::to_value(&old).unwrap();
    v.as_object_mut().unwrap().remove("refusal");
    assert_eq!(parse_line(&v.to_string()), Line::Ignored);
}

#[test]
fn the_typed_refusal_and_the_older_lines_reading_agree_on_what_the_proxy_refuses() {
    use crate::pki::{self, CertSpec};
    use crate::policy::{authorize, Policy, Verdict};
    use crate::state::asker::asker;
    use crate::tls::identity::Identity;
    use crate::tls::verify::AuthFailure;
    let mut ca = CertSpec::with_subject(&[("CN", "Log Test CA")]);
    ca.is_ca = true;
    ca.eku = false;
    let ca = pki::self_signed_ca(&ca).unwrap();
    let leaf = pki::issue(&CertSpec::with_subject(&[("O", "g"), ("CN", "u")]), &ca).unwrap();
    let id = Identity::from_x509(&leaf.cert).unwrap();
    let policy = Policy::from_yaml(
        "permissions:\n  vms: [\"GET /vm\"]\ngroups:\n  other: [vms]\n",
        std::path::Path::new("p.yaml"),
    )
    .unwrap();
    let cases = [
        (
            Err(AuthFailure::NoCertificate),
            "/vm",
            Some(RefusalKind::NoCertificate),
        ),
        (
            Err(AuthFailure::Expired),
            "/vm",
            Some(RefusalKind::BadCertificate),
        ),
        (Ok(&id), "/vm", Some(RefusalKind::NotPermitted)),
        (Ok(&id), "/nowhere", Some(RefusalKind::NotPermitted)),
    ];
    for (who, path, want) in cases {
        let verdict = authorize(asker(who), Some(&policy), false, "GET", path);
        let Verdict::Deny(refusal) = &verdict else {
            panic!("{path} is not denied")
        };
        let reason = refusal.reason();
        assert_eq!(Some(refusal.kind()), want, "{reason}");
        // Without the field, the reason says the same, except that a refused certificate is
        // nothing learn grants (no kind at all).
        let old = refusal_kind("GET", path, reason);
        let learnable = want.filter(|k| *k != RefusalKind::BadCertificate);
        assert_eq!(old, learnable, "{reason}");
    }
    let root = authorize(asker(Ok(&id)), Some(&policy), true, "GET", "/vm");
    assert_eq!(root.refusal(), None);
}

#[test]
fn only_policy_refusals_are_taken() {
    let r = refusal(&record(
        "deny",
        403,
        "GET /api/v1/vm requires one of: list_vms",
        "jenkins",
        "ci,build",
        "/api/v1/vm",
    ));
    assert_eq!(
        r.grantees,
        vec![Grantee::Group("ci".into()), Grantee::Group("build".into())]
    );
    assert_eq!(r.user.as_deref(), Some("jenkins"));
    let r = refusal(&record(
        "audit_deny",
        200,
        "GET /x/7 is covered by no permission",
        "bot",
        "",
        "/x/7",
    ));
    assert_eq!(r.grantees, vec![Grantee::User("bot".into())]);
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/x/7"));
    let r = refusal(&record("deny", 401, "no certificate", "", "", "/livez"));
    assert_eq!(r.grantees, vec![Grantee::Anonymous]);
    let r = refusal(&record(
        "audit_deny",
        204,
        "no certificate",
        "",
        "",
        "/livez",
    ));
    assert_eq!(r.grantees, vec![Grantee::Anonymous]);

    for ignored in [
        record("allow", 200, "", "jenkins", "ci", "/api/v1/vm"),
        record("deny", 400, "encoded slash in path", "", "", "/a"),
        record("deny", 401, "certificate revoked", "", "", "/a"),
        record("audit_deny", 200, "unknown CA", "", "", "/a"),
        record("deny", 502, "connection refused", "jenkins", "ci", "/a"),
        // A certificate with neither group nor CN cannot be granted anything.
        record(
            "deny",
            403,
            "GET /a is covered by no permission",
            "",
            "",
            "/a",
        ),
        // A reason about another request than the record's.
        record(
            "deny",
            403,
            "GET /b is covered by no permission",
            "u",
            "g",
            "/a",
        ),
    ] {
        assert_eq!(parse_line(&ignored), Line::Ignored, "{ignored}");
    }
    for other in [
        "plain text line",
        "",
        r#"{"timestamp":"x","level":"WARN","fields":{"message":"audit"},"target":"certgate::proxy"}"#,
        r#"{"level":"INFO","message":"reloaded","target":"certgate::reload"}"#,
        "{not json",
    ] {
        assert_eq!(parse_line(other), Line::NotAccess, "{other}");
    }
}

#[test]
fn container_log_wrappers_are_unwrapped() {
    let inner = record("deny", 401, "no certificate", "", "", "/livez");
    let cri = format!("2026-11-29T10:00:00.1Z stdout F {inner}");
    assert!(matches!(parse_line(&cri), Line::Refusal(_)));
    let docker = serde_json::json!({"log": format!("{inner}\n"), "stream": "stderr"}).to_string();
    assert!(matches!(parse_line(&docker), Line::Refusal(_)));
}

#[test]
fn groups_field_splits_on_unescaped_commas() {
    assert_eq!(
        split_groups("ci,Acme\\, Inc.,caf\\C3\\A9"),
        ["ci", "Acme, Inc.", "café"]
    );
    assert_eq!(split_groups(""), Vec::<String>::new());
    assert_eq!(split_groups("a\\\\b"), ["a\\b"]);
}

#[test]
fn reasons_are_the_ones_the_proxy_writes() {
    use crate::pki::{self, CertSpec};
    use crate::policy::{authorize, Policy, Verdict};
    use crate::state::asker::asker;
    use crate::tls::identity::Identity;
    use crate::tls::verify::AuthFailure;
    let mut ca = CertSpec::with_subject(&[("CN", "Learn Test CA")]);
    ca.is_ca = true;
    ca.eku = false;
    let ca = pki::self_signed_ca(&ca).unwrap();
    let leaf = pki::issue(&CertSpec::with_subject(&[("O", "g"), ("CN", "u")]), &ca).unwrap();
    let id = Identity::from_x509(&leaf.cert).unwrap();
    let policy = Policy::from_yaml(POLICY, std::path::Path::new("p.yaml")).unwrap();
    // Anonymous (401), covered but not held (403 "requires one of"), covered by none (403).
    let cases = [
        (Err(AuthFailure::NoCertificate), "/api/v1/vm", 401),
        (Ok(&id), "/api/v1/vm", 403),
        (Ok(&id), "/nowhere", 403),
    ];
    for (who, path, want) in cases {
        let Verdict::Deny(refused) = authorize(asker(who), Some(&policy), false, "GET", path)
        else {
            panic!("{path} is not denied");
        };
        let (status, reason) = (refused.status(), refused.reason());
        assert_eq!(status, want);
        let line = record("deny", status, reason, "u", "g", path);
        let r = refusal(&line);
        let kind = refusal_kind("GET", path, reason);
        if status == 401 {
            assert_eq!(kind, Some(RefusalKind::NoCertificate), "{reason}");
            assert_eq!(r.grantees, vec![Grantee::Anonymous]);
        } else {
            assert_eq!(kind, Some(RefusalKind::NotPermitted), "{reason}");
            assert_eq!(r.grantees, vec![Grantee::Group("g".into())]);
        }
    }
    // The other 401 reasons are certificate failures: never learned.
    let expired = authorize(
        asker(Err(AuthFailure::Expired)),
        Some(&policy),
        false,
        "GET",
        "/a",
    );
    let Verdict::Deny(refused) = expired else {
        panic!("not denied")
    };
    assert_eq!(refusal_kind("GET", "/a", refused.reason()), None);
}
