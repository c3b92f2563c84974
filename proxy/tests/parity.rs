//! Parity of certgate's two forwarding engines: its own (`proxy/src/proxy/h1.rs`, for plain
//! HTTP/1.1 requests and HTTP/2 streams) and Pingora's `HttpProxy` (everything unusual). One
//! table of request scenarios goes through all four paths, HTTP/1.1 and HTTP/2 × direct and
//! fallback (the fallback forced with `Expect: 100-continue`, which neither `h1::eligible` nor
//! `h2::eligible` lets through), and what each path produced must be the same: what the upstream
//! received, what the client saw, the access log line, and the request metrics' deltas. Only
//! what names the path is left out of the comparison, each exclusion justified where it is made
//! ([`Observation::record`] for a path's own traces, [`neutral`] for what names the HTTP version).
//!
//! A difference the engines are known to have is a [`KnownDifference`]: the test asserts it is
//! still there, so it fails once the difference is fixed (and the entry is then removed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use certgate::pki::Issued;
use common::recording_upstream::{Received, RecordingUpstream, EARLY_BYTES};
use common::*;

/// The four ways a request crosses certgate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    H1Direct,
    H1Fallback,
    H2Direct,
    H2Fallback,
}

impl Path {
    const ALL: [Path; 4] = [
        Path::H1Direct,
        Path::H1Fallback,
        Path::H2Direct,
        Path::H2Fallback,
    ];

    fn h2(self) -> bool {
        matches!(self, Path::H2Direct | Path::H2Fallback)
    }

    fn fallback(self) -> bool {
        matches!(self, Path::H1Fallback | Path::H2Fallback)
    }

    /// The path this one is compared with: a fallback with the direct path of its HTTP
    /// version (every field), HTTP/2's direct path with HTTP/1.1's (the fields that do not
    /// name the version, see [`neutral`]).
    fn reference(self) -> Path {
        match self {
            Path::H1Direct | Path::H1Fallback | Path::H2Direct => Path::H1Direct,
            Path::H2Fallback => Path::H2Direct,
        }
    }
}

/// Who the client is.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// O=ci: the policy grants everything.
    Allowed,
    /// O=guests: a valid certificate the policy grants nothing (403).
    Guest,
    /// No certificate (401).
    Anonymous,
}

/// The request body and its framing.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    /// `content-length` and that many bytes (HTTP/2: the header and DATA frames).
    Length(usize),
    /// HTTP/1.1 `transfer-encoding: chunked` in these chunks; HTTP/2 DATA frames of these sizes
    /// with no `content-length`.
    Chunked(&'static [usize]),
    /// Announces 100 MB and sends [`EARLY_BYTES`] of it, then waits for the answer (the
    /// upstream's early 413) while still uploading, and leaves.
    Early,
}

/// How the request names its host. `{port}` stands for the listener's port.
#[derive(Clone, Copy, Debug)]
enum Host {
    /// HTTP/1.1 `Host: localhost:{port}`; HTTP/2 `:authority` the same and no `host` field.
    Plain,
    Odd {
        /// HTTP/1.1 header lines, as written (name and value).
        h1: &'static [&'static str],
        /// An HTTP/1.1 request-target in place of the scenario's (an absolute form).
        h1_target: Option<&'static str>,
        /// HTTP/2 `:authority`.
        authority: &'static str,
        /// HTTP/2 `host` fields besides `:authority`.
        h2_host: &'static [&'static str],
    },
}

/// One request, as each HTTP version writes it.
struct Scenario {
    name: &'static str,
    who: Who,
    method: &'static str,
    target: &'static str,
    host: Host,
    /// Header fields after the host, in order (HTTP/1.1 writes the names as given, HTTP/2 in
    /// lower case).
    headers: &'static [(&'static str, &'static str)],
    /// Header fields HTTP/1.1 alone has (connection-specific ones, which HTTP/2 forbids).
    h1_only: &'static [(&'static str, &'static str)],
    body: Body,
    /// Once this many response body bytes have reached the client, the test lets the upstream
    /// end its answer ([`RecordingUpstream::release`]).
    release_at: Option<usize>,
    /// The status the direct HTTP/1.1 path answers: parity of four wrong answers is no parity.
    status: u16,
    /// More of what the direct HTTP/1.1 path must show (fields of its [`Observation`]).
    expect: &'static [Expect],
}

/// A check of one observation field.
#[derive(Debug)]
enum Expect {
    Is(&'static str, &'static str),
    Has(&'static str, &'static str),
    Lacks(&'static str, &'static str),
}
use Expect::*;

/// A difference between a path and its [`Path::reference`] that is known and not fixed yet.
struct KnownDifference {
    scenario: &'static str,
    path: Path,
    /// The observation field or group of fields (see [`Observation`], [`KnownDifference::covers`]);
    /// the test fails if it no longer differs.
    field: &'static str,
    /// What differs, and why it is not fixed here.
    #[allow(dead_code)]
    why: &'static str,
}

impl KnownDifference {
    /// Whether this entry names `field`: the field itself, or a group of fields (`log` covers
    /// `log.count` and `log[0].status`).
    fn covers(&self, field: &str) -> bool {
        field
            .strip_prefix(self.field)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    }
}

/// Identity headers a client must never get through, in every spelling certgate strips.
const SPOOFED: &[(&str, &str)] = &[
    ("X-Certgate-User", "admin"),
    ("x_certgate_groups", "root"),
    ("x-certgate-permission", "root"),
    ("SSL-Client-Verify", "SUCCESS"),
    ("ssl_client_subject_dn", "CN=admin"),
    ("X-Forwarded-Client-Cert", "Hash=00;Subject=\"CN=admin\""),
    ("X-Forwarded-For", "10.9.9.9"),
    ("Forwarded", "for=10.9.9.9"),
    ("X-Real-IP", "10.9.9.9"),
    ("X-Remote-User", "admin"),
    ("X-Forwarded-Prefix", "/admin"),
];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "plain GET with a query",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/a?q=1&r=%20x",
        host: Host::Plain,
        headers: &[("Accept", "application/json"), ("User-Agent", "parity/1")],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[Is("upstream[0].line", "GET /plain/a?q=1&r=%20x HTTP/1.1")],
    },
    Scenario {
        name: "POST with a content-length body",
        who: Who::Allowed,
        method: "POST",
        target: "/upload",
        host: Host::Plain,
        headers: &[("Content-Type", "application/octet-stream")],
        h1_only: &[],
        release_at: None,
        body: Body::Length(10_000),
        status: 200,
        expect: &[Is("response.body", "\"{\\\"received\\\":10000}\"")],
    },
    Scenario {
        name: "PUT with a chunked body",
        who: Who::Allowed,
        method: "PUT",
        target: "/upload/chunked",
        host: Host::Plain,
        headers: &[("Content-Type", "text/plain")],
        h1_only: &[],
        release_at: None,
        body: Body::Chunked(&[5_000, 1, 3_000]),
        status: 200,
        expect: &[Is("response.body", "\"{\\\"received\\\":8001}\"")],
    },
    Scenario {
        name: "HEAD",
        who: Who::Allowed,
        method: "HEAD",
        target: "/head",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "204",
        who: Who::Allowed,
        method: "DELETE",
        target: "/status/204",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 204,
        expect: &[],
    },
    Scenario {
        name: "304",
        who: Who::Allowed,
        method: "GET",
        target: "/status/304",
        host: Host::Plain,
        headers: &[("If-None-Match", "\"v1\"")],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 304,
        expect: &[],
    },
    Scenario {
        name: "chunked response",
        who: Who::Allowed,
        method: "GET",
        target: "/chunked-reply",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "response ended by close",
        who: Who::Allowed,
        method: "GET",
        target: "/close-delimited",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "early 413 while uploading",
        who: Who::Allowed,
        method: "POST",
        target: "/early",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::Early,
        status: 413,
        expect: &[
            Is("response.body", "\"too big\""),
            Is("upstream.count", "1"),
        ],
    },
    Scenario {
        name: "hop-by-hop request headers",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/hop",
        host: Host::Plain,
        headers: &[
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Trailer", "x-checksum"),
            ("Accept", "*/*"),
        ],
        h1_only: &[
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
        ],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[
            Lacks("upstream[0].headers", "Proxy-"),
            Lacks("upstream[0].headers", "Keep-Alive"),
            Lacks("upstream[0].headers", "Trailer"),
            Lacks("upstream[0].headers", "trailers"),
            Lacks("upstream[0].headers", "Connection"),
        ],
    },
    Scenario {
        name: "client asks to close",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/close",
        host: Host::Plain,
        headers: &[],
        h1_only: &[("Connection", "close")],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "upstream asks to close",
        who: Who::Allowed,
        method: "GET",
        target: "/close-after",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "hop-by-hop response headers",
        who: Who::Allowed,
        method: "GET",
        target: "/hop-reply",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        // RFC 9110 §7.6.1: what the upstream's Connection names, Keep-Alive and
        // Proxy-Connection are about its connection to certgate, never forwarded.
        expect: &[
            Lacks("response.headers", "x-hop"),
            Lacks("response.headers", "keep-alive: timeout"),
            Lacks("response.headers", "proxy-connection"),
        ],
    },
    Scenario {
        name: "103 early hints",
        who: Who::Allowed,
        method: "GET",
        target: "/early-hints",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "upstream answers garbage",
        who: Who::Allowed,
        method: "GET",
        target: "/garbage",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 502,
        expect: &[],
    },
    Scenario {
        name: "upstream cuts its body short",
        who: Who::Allowed,
        method: "GET",
        target: "/truncated",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: Some(10),
        body: Body::None,
        status: 200,
        expect: &[
            Is("response.body", "\"0123456789\""),
            Is("response.error", "closed in a chunked body"),
        ],
    },
    Scenario {
        name: "refused 401, no certificate",
        who: Who::Anonymous,
        method: "GET",
        target: "/plain/b",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 401,
        expect: &[Is("upstream.count", "0")],
    },
    Scenario {
        name: "refused 403",
        who: Who::Guest,
        method: "GET",
        target: "/plain/c",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 403,
        expect: &[Is("upstream.count", "0")],
    },
    Scenario {
        name: "refused 403 with an unread body",
        who: Who::Guest,
        method: "POST",
        target: "/upload",
        host: Host::Plain,
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::Length(5_000),
        status: 403,
        expect: &[Is("upstream.count", "0")],
    },
    Scenario {
        name: "spoofed identity headers",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/d",
        host: Host::Plain,
        headers: SPOOFED,
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[
            Has("upstream[0].headers", "x-certgate-user: parity |"),
            Has(
                "upstream[0].headers",
                "ssl-client-subject-dn: CN=parity,O=ci |",
            ),
            Lacks("upstream[0].headers", "admin"),
            Lacks("upstream[0].headers", "groups: root"),
            Lacks("upstream[0].headers", "10.9.9.9"),
        ],
    },
    Scenario {
        name: "spoofed identity headers, anonymous",
        who: Who::Anonymous,
        method: "GET",
        target: "/plain/e",
        host: Host::Plain,
        headers: SPOOFED,
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 401,
        expect: &[Is("upstream.count", "0")],
    },
    Scenario {
        name: "Host in another case",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/f",
        host: Host::Odd {
            h1: &["host: LocalHost:{port}"],
            h1_target: None,
            authority: "LocalHost:{port}",
            h2_host: &[],
        },
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[],
    },
    Scenario {
        name: "Host naming another server",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/g",
        host: Host::Odd {
            h1: &["Host: backend.example:8443"],
            h1_target: None,
            authority: "backend.example:8443",
            h2_host: &[],
        },
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 200,
        expect: &[Has("upstream[0].headers", "Host: backend.example:8443")],
    },
    // The three below are never plain on HTTP/1.1 (`h1::eligible` wants one Host without
    // userinfo and an origin-form target): both HTTP/1.1 paths take the same route there, to
    // certgate's refusal of what Pingora's parser would refuse or to `HttpProxy`. On HTTP/2
    // Pingora's h2 layer stops them before either engine (see
    // `H2_AUTHORITY_REFUSED_BELOW_CERTGATE`).
    Scenario {
        name: "two Host headers",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/h",
        host: Host::Odd {
            h1: &["Host: localhost:{port}", "Host: other.example"],
            h1_target: None,
            authority: "localhost:{port}",
            h2_host: &["localhost:{port}", "other.example"],
        },
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 400,
        expect: &[],
    },
    Scenario {
        name: "host field disagreeing with the authority",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/i",
        host: Host::Odd {
            // HTTP/1.1's form of two names for the host: an absolute-form target and a Host
            // that disagrees (RFC 9112 §3.2.2 has the target win; Pingora refuses it).
            h1: &["Host: other.example"],
            h1_target: Some("https://localhost:{port}/plain/i"),
            authority: "localhost:{port}",
            h2_host: &["other.example"],
        },
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 400,
        expect: &[],
    },
    Scenario {
        name: "userinfo in the host",
        who: Who::Allowed,
        method: "GET",
        target: "/plain/j",
        host: Host::Odd {
            h1: &["Host: user@localhost:{port}"],
            h1_target: None,
            authority: "user@localhost:{port}",
            h2_host: &[],
        },
        headers: &[],
        h1_only: &[],
        release_at: None,
        body: Body::None,
        status: 400,
        expect: &[],
    },
];

/// Pingora's HTTP/2 layer (pingora-core's h2 accept loop, `invalid_request_authority`) answers a
/// stream whose `host` fields disagree with `:authority`, or whose authority has userinfo, with a
/// bare 400 of its own before certgate sees the request: no JSON envelope, no HSTS, no access
/// log line, not counted. HTTP/1.1's same request gets certgate's logged, counted JSON 400. The
/// same on both HTTP/2 paths (the stream never reaches either engine), so HTTP/2's direct path
/// differs from HTTP/1.1's; fixing it needs a hook below the application (the listener's h2
/// accept), outside `proxy/src/proxy/`.
const H2_AUTHORITY_REFUSED_BELOW_CERTGATE: &str = "pingora-core's h2 accept answers a bare 400";

/// Differences still there (see the report of issue 24).
const KNOWN: &[KnownDifference] = &[
    // Pingora's HTTP/2 session drops every interim (1xx) response (pingora-core's h2
    // `write_response_header`: the h2 crate lets a response be sent once), on both engines: an
    // HTTP/2 client never sees the upstream's 103 (nor a 100 Continue).
    KnownDifference {
        scenario: "103 early hints",
        path: Path::H2Direct,
        field: "response.interim",
        why: "pingora-core's h2 session ignores 1xx responses",
    },
    KnownDifference {
        scenario: "two Host headers",
        path: Path::H2Direct,
        field: "response.headers",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "two Host headers",
        path: Path::H2Direct,
        field: "response.body",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "two Host headers",
        path: Path::H2Direct,
        field: "log",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "two Host headers",
        path: Path::H2Direct,
        field: "metrics",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "host field disagreeing with the authority",
        path: Path::H2Direct,
        field: "response.headers",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "host field disagreeing with the authority",
        path: Path::H2Direct,
        field: "response.body",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "host field disagreeing with the authority",
        path: Path::H2Direct,
        field: "log",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "host field disagreeing with the authority",
        path: Path::H2Direct,
        field: "metrics",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "userinfo in the host",
        path: Path::H2Direct,
        field: "response.headers",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "userinfo in the host",
        path: Path::H2Direct,
        field: "response.body",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "userinfo in the host",
        path: Path::H2Direct,
        field: "log",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
    KnownDifference {
        scenario: "userinfo in the host",
        path: Path::H2Direct,
        field: "metrics",
        why: H2_AUTHORITY_REFUSED_BELOW_CERTGATE,
    },
];

/// A path's traces of one request, as named fields (`upstream[0].headers`, `response.status`,
/// `log[0].reason`, `metrics.certgate_requests_total{…}`, …) so that differences can be named
/// precisely.
#[derive(Debug, Default)]
struct Observation {
    fields: BTreeMap<String, String>,
    /// The upstream connections its requests came on.
    upstream_conns: BTreeSet<usize>,
}

/// What the client saw.
#[derive(Debug, Default)]
struct Answer {
    /// Interim (1xx) statuses before the final one.
    interim: Vec<u16>,
    status: u16,
    /// Header fields in order, names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How the body was delimited as the client saw it.
    framing: String,
    /// What went wrong reading it, if anything.
    error: String,
}

fn show_body(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if body.len() <= 200 => format!("{text:?}"),
        _ => format!(
            "{} bytes, sha256 {}",
            body.len(),
            hex::encode(openssl::sha::sha256(body))
        ),
    }
}

fn show_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    headers
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Observation {
    /// Records one path's traces, less what names the path.
    fn record(
        path: Path,
        upstream: &[Received],
        answer: &Answer,
        after: &str,
        log: &[serde_json::Map<String, serde_json::Value>],
        metrics: &BTreeMap<String, f64>,
    ) -> Observation {
        let mut o = Observation::default();
        let mut put = |k: String, v: String| {
            o.fields.insert(k, v);
        };
        put("upstream.count".into(), upstream.len().to_string());
        for (i, r) in upstream.iter().enumerate() {
            put(format!("upstream[{i}].line"), r.line.clone());
            // The `expect` field is the one this test adds to force the fallback; Pingora
            // forwards it as an HTTP/1.1 proxy does (and certgate's path never sees one).
            let mut headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .filter(|(n, _)| !(path.fallback() && n.eq_ignore_ascii_case("expect")))
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            // Compared in name order, fields of one name in their order (RFC 9110 §5.3: only
            // that order means something). Where the others land is not the engines' choice:
            // removing a field (a hop-by-hop or spoofed one) moves the last field into its
            // slot in the header map, so positions depend on which fields were present, the
            // `expect` added here among them.
            headers.sort_by_key(|(n, _)| n.to_ascii_lowercase());
            put(
                format!("upstream[{i}].headers"),
                show_headers(headers.into_iter()),
            );
            put(format!("upstream[{i}].body"), show_body(&r.body));
        }
        // A `100 Continue` is the upstream's answer to the `Expect` this test added; only a
        // fallback request carries one.
        let interim: Vec<String> = answer
            .interim
            .iter()
            .filter(|s| !(path.fallback() && **s == 100))
            .map(u16::to_string)
            .collect();
        put("response.interim".into(), interim.join(","));
        put("response.status".into(), answer.status.to_string());
        // The order of fields with different names means nothing (RFC 9110 §5.3): sorted by
        // name, same-name fields kept in their order. `date` is the clock's: only its presence
        // is compared.
        let mut headers: Vec<(&str, &str)> = answer
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), if n == "date" { "<date>" } else { v.as_str() }))
            .collect();
        headers.sort_by_key(|(n, _)| *n);
        put("response.headers".into(), show_headers(headers.into_iter()));
        put("response.body".into(), show_body(&answer.body));
        put("response.framing".into(), answer.framing.clone());
        put("response.error".into(), answer.error.clone());
        put("connection.after".into(), after.to_string());
        put("log.count".into(), log.len().to_string());
        for (i, line) in log.iter().enumerate() {
            for (k, v) in line {
                // When the line was written and how long the request took are the clock's.
                if k == "timestamp" || k == "duration_ms" {
                    continue;
                }
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                put(format!("log[{i}].{k}"), v);
            }
        }
        for (sample, delta) in metrics {
            put(format!("metrics.{sample}"), format!("{delta:+}"));
        }
        o.upstream_conns = upstream.iter().map(|r| r.conn).collect();
        o
    }
}

/// A field as compared across HTTP versions; `None`: the field is the version itself.
fn neutral(field: &str, value: &str) -> Option<String> {
    match field {
        // HTTP/1.1 delimits a body with its length, chunks or the close; HTTP/2 with frames.
        "response.framing" => None,
        // Whether the connection carries on after a refusal with an unread body, say, is
        // HTTP/1.1's question: an HTTP/2 stream ends alone.
        "connection.after" => None,
        // HTTP/2 field names are lower case on the wire (RFC 9113 §8.2.1): names are compared
        // without case.
        f if f.starts_with("upstream[") && f.ends_with(".headers") => Some(lower_names(value)),
        // A response cut short shows as the transport ends it: a close on HTTP/1.1, a reset
        // stream on HTTP/2. That it was cut short is compared.
        "response.error" => Some(if value.is_empty() { "" } else { "cut short" }.to_string()),
        // A client that leaves mid-request is a closed connection on HTTP/1.1 and a reset stream
        // on HTTP/2; the reason logged is that transport's error text.
        f if f.starts_with("log[")
            && f.ends_with("].reason")
            && value.starts_with("Downstream ") =>
        {
            Some("Downstream: the client left".into())
        }
        // Connection-specific fields do not exist in HTTP/2 (RFC 9113 §8.2.2): an HTTP/1.1
        // response's `connection`, `keep-alive`, `proxy-connection` and `transfer-encoding`
        // are its framing (whether they should reach an HTTP/1.1 client is the same question
        // on both engines, compared on each version).
        "response.headers" => Some(
            value
                .split(" | ")
                .filter(|h| {
                    let name = h.split(':').next().unwrap_or_default();
                    !matches!(
                        name,
                        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding"
                    )
                })
                .collect::<Vec<_>>()
                .join(" | "),
        ),
        _ => Some(value.to_string()),
    }
}

fn lower_names(headers: &str) -> String {
    headers
        .split(" | ")
        .map(|h| match h.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => h.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One field on which a path differs from its reference.
#[derive(Debug)]
struct Difference {
    scenario: &'static str,
    path: Path,
    reference: Path,
    field: String,
    theirs: String,
    ours: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {:?} vs {:?}: {}\n    {:?}: {}\n    {:?}: {}",
            self.scenario,
            self.path,
            self.reference,
            self.field,
            self.reference,
            self.theirs,
            self.path,
            self.ours
        )
    }
}

fn compare(
    scenario: &'static str,
    path: Path,
    obs: &BTreeMap<Path, Observation>,
) -> Vec<Difference> {
    let reference = path.reference();
    let (ours, theirs) = (&obs[&path].fields, &obs[&reference].fields);
    let across = path.h2() != reference.h2();
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let missing = String::from("(none)");
        let (a, b) = (
            ours.get(key).unwrap_or(&missing),
            theirs.get(key).unwrap_or(&missing),
        );
        let (na, nb) = if across {
            (neutral(key, a), neutral(key, b))
        } else {
            (Some(a.clone()), Some(b.clone()))
        };
        if na != nb {
            out.push(Difference {
                scenario,
                path,
                reference,
                field: key.clone(),
                theirs: b.clone(),
                ours: a.clone(),
            });
        }
    }
    out
}

// ---- the world: certgate, the upstream, the clients ----------------------------------------

const POLICY: &str = "permissions:\n  everything: [\"* /**\"]\ngroups:\n  ci: [everything]\n";

/// Fields drop in order: the proxy (which prints its log on a failure) before the world's
/// directory that holds the log.
struct Bench {
    p: Proxy,
    w: World,
    up: RecordingUpstream,
    allowed: Issued,
    guest: Issued,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn start() -> Bench {
        let w = World::new();
        let up = RecordingUpstream::start();
        std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
        let mut cfg = ProxyConfig::new(up.addr);
        cfg.listener_extra = "    policy: policy.yaml\n    headers: [nginx-ingress, xfcc]\n    hsts: \"max-age=63072000\"\n";
        // JSON lines, read back field by field. One worker: each engine's idle upstream
        // connection is then found by its next request (see `forward_h1.rs`).
        cfg.top_extra = "log:\n  format: json\nthreads: 1\n";
        let p = Proxy::start(&w, &cfg);
        let allowed = client(&[("O", "ci"), ("CN", "parity")], &w.ca);
        let guest = client(&[("O", "guests"), ("CN", "visitor")], &w.ca);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Bench {
            w,
            p,
            up,
            allowed,
            guest,
            rt,
        }
    }

    fn who(&self, who: Who) -> Option<&Issued> {
        match who {
            Who::Allowed => Some(&self.allowed),
            Who::Guest => Some(&self.guest),
            Who::Anonymous => None,
        }
    }

    fn port(&self, text: &str) -> String {
        text.replace("{port}", &self.p.addr.port().to_string())
    }

    /// Every access log line so far, parsed.
    fn access_lines(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.p
            .log_text()
            .lines()
            .filter(|l| l.contains("certgate::access"))
            .map(|l| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l)
                    .unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .collect()
    }

    /// Waits for an access log line after the first `from`; false if none came within 20 s
    /// (a request certgate answered and did not log: a difference, recorded as `log.count`).
    fn wait_line(&self, from: usize) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.access_lines().len() <= from {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The request metrics' samples now: every counter a request moves, and the request
    /// duration's count. Gauges (connections open, readiness, certificate expiry) say what is,
    /// not what a request did; the duration's buckets and sum are the clock's.
    fn request_metrics(&self) -> BTreeMap<String, f64> {
        const NAMES: [&str; 5] = [
            "certgate_requests_total",
            "certgate_authz_decisions_total",
            "certgate_upstream_errors_total",
            "certgate_tunnels_closed_total",
            "certgate_request_duration_seconds_count",
        ];
        self.p
            .metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (sample, value) = l.rsplit_once(' ')?;
                let name = sample.split('{').next()?;
                NAMES
                    .contains(&name)
                    .then(|| (sample.to_string(), value.parse().unwrap_or(f64::NAN)))
            })
            .collect()
    }

    /// Sends `s` on `path` on a fresh connection and observes everything it left.
    fn run(&self, s: &Scenario, path: Path) -> Observation {
        let (lines_before, received_before) = (self.access_lines().len(), self.up.received().len());
        let metrics_before = self.request_metrics();

        let mut client = if path.h2() {
            Client::H2(self.rt.block_on(H2Client::connect(self, s.who)))
        } else {
            Client::H1(H1Client::connect(self, s.who))
        };
        let answer = client.send(self, s, path.fallback());
        // An upload the client stops: it leaves (closes its connection, resets its stream),
        // which is what ends the request.
        let leaves = matches!(s.body, Body::Early);
        if leaves {
            client.leave(self);
        }
        // Every answer certgate writes or forwards carries the listener's HSTS header: one
        // without it was written below certgate (Pingora's HTTP/2 layer refuses a malformed
        // stream itself), never reached its phases, and leaves no line to wait for. A line
        // that came anyway would be counted in the next request's lines, and differ there.
        if answer
            .headers
            .iter()
            .any(|(n, _)| n == "strict-transport-security")
        {
            self.wait_line(lines_before);
        }
        let metrics_after = self.request_metrics();
        let upstream = self.up.received()[received_before..].to_vec();
        let after = if leaves {
            "left".to_string()
        } else {
            let after = client.probe(self);
            if after.starts_with("reused") {
                // The probe's own line, so that it is no later request's.
                wait_for("the probe's line", Duration::from_secs(20), || {
                    self.access_lines()[lines_before..]
                        .iter()
                        .any(is_probe)
                        .then_some(())
                });
            }
            after
        };
        drop(client);
        // Every line of the request (a second one would be a difference too), not the probe's.
        let log: Vec<_> = self.access_lines()[lines_before..]
            .iter()
            .filter(|l| !is_probe(l))
            .cloned()
            .collect();
        let mut deltas = BTreeMap::new();
        let samples: BTreeSet<&String> =
            metrics_before.keys().chain(metrics_after.keys()).collect();
        for sample in samples {
            let d = metrics_after.get(sample).copied().unwrap_or(0.0)
                - metrics_before.get(sample).copied().unwrap_or(0.0);
            if d != 0.0 {
                deltas.insert(sample.clone(), d);
            }
        }
        Observation::record(path, &upstream, &answer, &after, &log, &deltas)
    }
}

fn is_probe(line: &serde_json::Map<String, serde_json::Value>) -> bool {
    line.get("path").and_then(|p| p.as_str()) == Some("/probe")
}

enum Client {
    H1(H1Client),
    H2(H2Client),
}

impl Client {
    fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        match self {
            Client::H1(c) => c.send(b, s, fallback),
            Client::H2(c) => b.rt.block_on(c.send(b, s, fallback)),
        }
    }

    fn leave(&mut self, b: &Bench) {
        match self {
            Client::H1(c) => c.leave(),
            Client::H2(c) => b.rt.block_on(c.leave()),
        }
    }

    /// Another request on the same connection after the answer: whether the connection still
    /// carries one.
    fn probe(&mut self, b: &Bench) -> String {
        match self {
            Client::H1(c) => c.probe(b),
            Client::H2(c) => b.rt.block_on(c.probe(b)),
        }
    }
}

/// The body bytes of a request: a repeating alphabet, so a misplaced byte shows.
fn body_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

// ---- HTTP/1.1: raw bytes on TLS, so every header goes out as written -----------------------

struct H1Client {
    s: openssl::ssl::SslStream<TcpStream>,
    buf: Vec<u8>,
}

impl H1Client {
    fn connect(b: &Bench, who: Who) -> H1Client {
        let tcp = TcpStream::connect(b.p.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let s = tls_connector(&b.w, b.who(who), b"\x08http/1.1")
            .connect("localhost", tcp)
            .unwrap();
        H1Client { s, buf: Vec::new() }
    }

    fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        let target = match s.host {
            Host::Odd {
                h1_target: Some(t), ..
            } => b.port(t),
            _ => s.target.to_string(),
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", s.method);
        match s.host {
            Host::Plain => head.push_str(&b.port("Host: localhost:{port}\r\n")),
            Host::Odd { h1, .. } => {
                for line in h1 {
                    head.push_str(&b.port(line));
                    head.push_str("\r\n");
                }
            }
        }
        for (n, v) in s.headers.iter().chain(s.h1_only) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let mut body = Vec::new();
        match s.body {
            Body::None => {}
            Body::Length(n) => {
                head.push_str(&format!("Content-Length: {n}\r\n"));
                body = body_bytes(n);
            }
            Body::Chunked(pieces) => {
                head.push_str("Transfer-Encoding: chunked\r\n");
                let all = body_bytes(pieces.iter().sum());
                let mut at = 0;
                for n in pieces {
                    body.extend(format!("{n:x}\r\n").bytes());
                    body.extend(&all[at..at + n]);
                    body.extend(b"\r\n");
                    at += n;
                }
                body.extend(b"0\r\n\r\n");
            }
            Body::Early => {
                head.push_str("Content-Length: 100000000\r\n");
                body = body_bytes(EARLY_BYTES);
            }
        }
        if fallback {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        // All at once: a client may send the body without waiting for `100 Continue`.
        let mut bytes = head.into_bytes();
        bytes.extend(body);
        let _ = self.s.write_all(&bytes);
        self.answer(s.method == "HEAD", s.release_at.map(|at| (at, &b.up)))
    }

    fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.more() {
                return None;
            }
        }
    }

    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One response: interim ones, then the final head and its body, read by its framing
    /// (whatever arrived, if the connection ends first). `release`: see [`Scenario::release_at`].
    fn answer(
        &mut self,
        head_request: bool,
        mut release: Option<(usize, &RecordingUpstream)>,
    ) -> Answer {
        let mut a = Answer::default();
        loop {
            let Some(status_line) = self.line() else {
                a.error = "closed before a response".into();
                return a;
            };
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut headers = Vec::new();
            loop {
                let Some(h) = self.line() else {
                    a.error = "closed in the response head".into();
                    return a;
                };
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap_or((&h, ""));
                headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
            if (100..200).contains(&status) && status != 101 {
                a.interim.push(status);
                continue;
            }
            a.status = status;
            a.headers = headers;
            break;
        }
        let get = |name: &str| {
            a.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (length, te) = (get("content-length"), get("transfer-encoding"));
        if head_request || matches!(a.status, 204 | 304) {
            a.framing = "no body".into();
        } else if te.is_some_and(|t| t.contains("chunked")) {
            a.framing = "chunked".into();
            loop {
                let Some(size) = self.line() else {
                    a.error = "closed in a chunked body".into();
                    return a;
                };
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .unwrap_or(0);
                if size == 0 {
                    while self.line().is_some_and(|l| !l.is_empty()) {}
                    break;
                }
                match self.exact(size + 2) {
                    Some(mut chunk) => {
                        chunk.truncate(size);
                        a.body.extend(chunk);
                        if let Some((_, up)) = release.take_if(|(at, _)| a.body.len() >= *at) {
                            up.release();
                        }
                    }
                    None => {
                        a.error = "closed in a chunk".into();
                        return a;
                    }
                }
            }
        } else if let Some(n) = length.and_then(|l| l.parse::<usize>().ok()) {
            a.framing = "content-length".into();
            loop {
                let take = self.buf.len().min(n - a.body.len());
                a.body.extend(self.buf.drain(..take));
                if a.body.len() == n {
                    break;
                }
                if !self.more() {
                    a.error = "closed before content-length bytes".into();
                    break;
                }
            }
        } else {
            a.framing = "until close".into();
            while self.more() {}
            a.body = std::mem::take(&mut self.buf);
        }
        a
    }

    fn leave(&mut self) {
        let _ = self.s.shutdown();
        let _ = self.s.get_ref().shutdown(std::net::Shutdown::Both);
    }

    fn probe(&mut self, b: &Bench) -> String {
        let probe = b.port("GET /probe HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
        if self.s.write_all(probe.as_bytes()).is_err() {
            return "closed".into();
        }
        let a = self.answer(false, None);
        if a.status == 0 {
            "closed".into()
        } else {
            format!("reused (probe {})", a.status)
        }
    }
}

// ---- HTTP/2: the h2 crate, for control of every field ----------------------------------------

struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    stream: Option<h2::SendStream<Bytes>>,
}

impl H2Client {
    async fn connect(b: &Bench, who: Who) -> H2Client {
        H2Client {
            send: h2_connect(&b.w, &b.p, b.who(who)).await,
            stream: None,
        }
    }

    async fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        let (authority, hosts): (String, Vec<String>) = match s.host {
            Host::Plain => (b.port("localhost:{port}"), vec![]),
            Host::Odd {
                authority, h2_host, ..
            } => (
                b.port(authority),
                h2_host.iter().map(|h| b.port(h)).collect(),
            ),
        };
        let mut req = http::Request::builder()
            .method(s.method)
            .uri(format!("https://{authority}{}", s.target));
        for h in &hosts {
            req = req.header("host", h.as_str());
        }
        for (n, v) in s.headers {
            req = req.header(n.to_ascii_lowercase(), *v);
        }
        let pieces: Vec<Vec<u8>> = match s.body {
            Body::None => vec![],
            Body::Length(n) => {
                req = req.header("content-length", n.to_string());
                vec![body_bytes(n)]
            }
            Body::Chunked(sizes) => {
                let all = body_bytes(sizes.iter().sum());
                let mut at = 0;
                sizes
                    .iter()
                    .map(|n| {
                        at += n;
                        all[at - n..at].to_vec()
                    })
                    .collect()
            }
            Body::Early => {
                req = req.header("content-length", "100000000");
                vec![body_bytes(EARLY_BYTES)]
            }
        };
        if fallback {
            req = req.header("expect", "100-continue");
        }
        let req = req.body(()).unwrap();
        let mut a = Answer::default();
        let mut send = match self.send.clone().ready().await {
            Ok(s) => s,
            Err(e) => {
                a.error = format!("connection: {e}");
                return a;
            }
        };
        let (resp, mut stream) = match send.send_request(req, pieces.is_empty()) {
            Ok(r) => r,
            Err(e) => {
                a.error = format!("send: {e}");
                return a;
            }
        };
        let ends = !matches!(s.body, Body::Early);
        for (i, piece) in pieces.iter().enumerate() {
            let last = ends && i + 1 == pieces.len();
            if let Err(e) = stream.send_data(Bytes::copy_from_slice(piece), last) {
                a.error = format!("send data: {e}");
            }
        }
        self.stream = Some(stream);
        let mut resp = resp;
        let answer = async {
            // Interim (1xx) answers come before the final one, which ends them.
            while let Some(Ok(interim)) =
                std::future::poll_fn(|cx| resp.poll_informational(cx)).await
            {
                a.interim.push(interim.status().as_u16());
            }
            resp.await
        };
        let resp = match tokio::time::timeout(Duration::from_secs(20), answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                a.error = format!("response: {e}");
                return a;
            }
            Err(_) => {
                a.error = "no response in 20 s".into();
                return a;
            }
        };
        let (parts, mut body) = resp.into_parts();
        a.status = parts.status.as_u16();
        a.headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // Whether the HEADERS frame itself ended the stream: nothing about it is pending.
        a.framing = if body.is_end_stream() {
            "headers end the stream".into()
        } else {
            "data frames".into()
        };
        let mut released = false;
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    a.body.extend_from_slice(&chunk);
                    if !released && s.release_at.is_some_and(|at| a.body.len() >= at) {
                        released = true;
                        b.up.release();
                    }
                }
                Err(e) => {
                    a.error = format!("body: {e}");
                    break;
                }
            }
        }
        a
    }

    async fn leave(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.send_reset(h2::Reason::CANCEL);
        }
    }

    async fn probe(&mut self, b: &Bench) -> String {
        let req = http::Request::builder()
            .method("GET")
            .uri(b.port("https://localhost:{port}/probe"))
            .body(())
            .unwrap();
        let Ok(mut send) = self.send.clone().ready().await else {
            return "closed".into();
        };
        let Ok((resp, _)) = send.send_request(req, true) else {
            return "closed".into();
        };
        match tokio::time::timeout(Duration::from_secs(20), resp).await {
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                let mut body = r.into_body();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                format!("reused (probe {status})")
            }
            Ok(Err(e)) => format!("closed ({e})"),
            Err(_) => "no answer in 20 s".into(),
        }
    }
}

// ---- the test ------------------------------------------------------------------------------

#[test]
fn every_scenario_is_the_same_on_all_four_paths() {
    let b = Bench::start();
    let mut unexpected = Vec::new();
    let mut seen_known = Vec::new();
    let mut report = String::new();
    for s in SCENARIOS {
        let mut obs = BTreeMap::new();
        for path in Path::ALL {
            obs.insert(path, b.run(s, path));
        }
        let reference = &obs[&Path::H1Direct].fields;
        assert_eq!(
            reference["response.status"],
            s.status.to_string(),
            "[{}] the direct HTTP/1.1 answer: {reference:#?}",
            s.name
        );
        for e in s.expect {
            let (field, holds) = match *e {
                Is(f, v) => (f, reference.get(f).is_some_and(|x| x == v)),
                Has(f, v) => (f, reference.get(f).is_some_and(|x| x.contains(v))),
                Lacks(f, v) => (f, reference.get(f).is_some_and(|x| !x.contains(v))),
            };
            assert!(
                holds,
                "[{}] the direct HTTP/1.1 path: {e:?}, got {:?}",
                s.name,
                reference.get(field)
            );
        }
        // The fallback is another engine: its upstream connections are never the direct
        // path's (each engine pools its own).
        for (direct, fallback) in [
            (Path::H1Direct, Path::H1Fallback),
            (Path::H2Direct, Path::H2Fallback),
        ] {
            let shared: Vec<_> = obs[&direct]
                .upstream_conns
                .intersection(&obs[&fallback].upstream_conns)
                .collect();
            assert!(
                shared.is_empty(),
                "[{}] {direct:?} and {fallback:?} shared upstream connections {shared:?}",
                s.name
            );
        }
        for path in [Path::H1Fallback, Path::H2Direct, Path::H2Fallback] {
            for d in compare(s.name, path, &obs) {
                report.push_str(&format!("{d}\n"));
                match KNOWN
                    .iter()
                    .position(|k| k.scenario == s.name && k.path == path && k.covers(&d.field))
                {
                    Some(i) => seen_known.push(i),
                    None => unexpected.push(d.to_string()),
                }
            }
        }
        if std::env::var_os("CERTGATE_PARITY_DUMP").is_some() {
            for (path, o) in &obs {
                eprintln!("=== [{}] {path:?}", s.name);
                for (k, v) in &o.fields {
                    eprintln!("  {k} = {v}");
                }
            }
        }
    }
    eprintln!("--- differences from the reference paths:\n{report}");
    let fixed: Vec<_> = KNOWN
        .iter()
        .enumerate()
        .filter(|(i, _)| !seen_known.contains(i))
        .map(|(_, k)| format!("[{}] {:?}: {}", k.scenario, k.path, k.field))
        .collect();
    assert!(
        fixed.is_empty(),
        "known differences no longer seen (fixed? remove them from KNOWN): {fixed:#?}"
    );
    assert!(
        unexpected.is_empty(),
        "the paths differ:\n{}",
        unexpected.join("\n")
    );
}
