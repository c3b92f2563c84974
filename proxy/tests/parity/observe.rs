//! What one path produced, and which of its fields name the path or the HTTP version.

use super::*;

/// A path's traces of one request, as named fields (`upstream[0].headers`, `response.status`,
/// `log[0].reason`, `metrics.certgate_requests_total{…}`, …) so that differences can be named
/// precisely.
#[derive(Debug, Default)]
pub(crate) struct Observation {
    pub(crate) fields: BTreeMap<String, String>,
    /// The upstream connections its requests came on.
    pub(crate) upstream_conns: BTreeSet<usize>,
}

/// What the client saw.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// Interim (1xx) statuses before the final one.
    pub(crate) interim: Vec<u16>,
    pub(crate) status: u16,
    /// Header fields in order, names in lower case.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// How the body was delimited as the client saw it.
    pub(crate) framing: String,
    /// What went wrong reading it, if anything.
    pub(crate) error: String,
}

pub(crate) fn show_body(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if body.len() <= 200 => format!("{text:?}"),
        _ => format!(
            "{} bytes, sha256 {}",
            body.len(),
            hex::encode(openssl::sha::sha256(body))
        ),
    }
}

pub(crate) fn show_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    headers
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Observation {
    /// Records one path's traces, less what names the path.
    pub(crate) fn record(
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
pub(crate) fn neutral(field: &str, value: &str) -> Option<String> {
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

pub(crate) fn lower_names(headers: &str) -> String {
    headers
        .split(" | ")
        .map(|h| match h.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => h.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
