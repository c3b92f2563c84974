//! The learn module's tests, by concern: reading the logs (here), which records are policy
//! refusals ([`log`]), what is proposed ([`propose`]), the YAML written ([`yaml`]). The helpers
//! here are theirs.

mod log;
mod propose;
mod yaml;

use std::io::Write;

use super::*;
use crate::cli::learn::log::Refusal;

/// A policy the refusals below are read against.
const POLICY: &str = r#"
permissions:
  everything: ["* /api/**"]
  list_vms: ["GET /api/v1/vm"]
  node: ["GET /api/v1/node/{id}"]
  health: ["GET /livez"]
groups:
  admins: [everything]
  readers: [list_vms]
anonymous: []
"#;

/// One access-log line as `certgate run` writes it (JSON), for a `GET` of `path`.
fn record(
    decision: &str,
    status: u16,
    reason: &str,
    user: &str,
    groups: &str,
    path: &str,
) -> String {
    serde_json::json!({
        "timestamp": "2026-11-29T10:00:00.000001Z", "level": "INFO", "listener": "ctrl",
        "client": "127.0.0.1", "method": "GET", "path": path, "status": status,
        "duration_ms": 1.5, "user": user, "groups": groups, "permission": "",
        "decision": decision, "reason": reason, "vpce": "", "target": "certgate::access"
    })
    .to_string()
}

/// `line` read as a refusal, or the test fails.
fn refusal(line: &str) -> Refusal {
    match parse_line(line) {
        Line::Refusal(r) => r,
        other => panic!("not a refusal: {other:?} for {line}"),
    }
}

/// A refusal `learn` takes: 403 for a user, 401 (no certificate) without one.
fn refused(method: &str, path: &str, user: &str, groups: &str) -> String {
    let (status, reason) = if user.is_empty() {
        (401, "no certificate".to_string())
    } else {
        (403, format!("{method} {path} is covered by no permission"))
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&record("audit_deny", status, &reason, user, groups, path)).unwrap();
    v["method"] = method.into();
    v.to_string()
}

const LINE: &str = r#"{"timestamp":"2026-11-29T10:00:00Z","listener":"ctrl","method":"GET","path":"/livez","status":401,"user":"","groups":"","decision":"deny","reason":"no certificate","target":"certgate::access"}"#;

fn learn_from(bytes: &[u8], listener: Option<&str>) -> (Learner, Counts) {
    let (mut l, mut c) = (Learner::default(), Counts::default());
    read_log("test", bytes, listener, &mut l, &mut c).unwrap();
    (l, c)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

#[test]
fn plain_gzip_and_concatenated_gzip_read_the_same() {
    let plain = format!("not json\n{LINE}\n{LINE}");
    let (l, c) = learn_from(plain.as_bytes(), None);
    assert_eq!((c.lines, c.records, l.refusals), (3, 2, 2));
    let (l, c) = learn_from(&gzip(plain.as_bytes()), None);
    assert_eq!((c.lines, c.records, l.refusals), (3, 2, 2));
    // `cat a.gz b.gz` (rotated logs) is one stream of two gzip members.
    let mut two = gzip(format!("{LINE}\n").as_bytes());
    two.extend(gzip(format!("{LINE}\n").as_bytes()));
    assert_eq!(learn_from(&two, None).0.refusals, 2);
}

#[test]
fn listener_filter_and_broken_gzip() {
    let (l, c) = learn_from(format!("{LINE}\n").as_bytes(), Some("registry"));
    assert_eq!((l.refusals, c.other_listener), (0, 1));
    let mut broken = gzip(LINE.repeat(50).as_bytes());
    broken.truncate(broken.len() / 2);
    let err = read_log(
        "x.gz",
        &broken[..],
        None,
        &mut Learner::default(),
        &mut Counts::default(),
    );
    assert!(err.is_err_and(|e| e.to_string().starts_with("x.gz: cannot read")));
}
