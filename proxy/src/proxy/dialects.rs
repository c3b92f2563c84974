//! Identity headers in the formats upstreams already parse, byte for byte as each proxy sends them:
//! ingress-nginx, Envoy XFCC, Traefik `passTLSClientCert`, RFC 9440. Computed once per
//! connection from the [`Identity`]; every value is a valid HTTP header value (visible ASCII and
//! space only), whatever the certificate holds.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Kept at its old path; it is defined with the config.
pub use crate::config::Dialect;
use crate::tls::identity::Identity;

/// The outcome of client-certificate verification, as NGINX's `$ssl_client_verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerify {
    Success,
    /// No certificate was presented.
    None,
    /// The OpenSSL `X509_verify_cert_error_string` text, e.g. `certificate has expired`.
    Failed(String),
}

/// Headers of the configured dialects, names lower-case, values valid HTTP header values
/// (visible ASCII + space only). Identity-bearing headers are only produced with an identity;
/// `ssl-client-verify` always (with `nginx-ingress`). A dialect listed twice is emitted once.
pub fn dialect_headers(
    dialects: &[Dialect],
    forward_cert: bool,
    verify: &ClientVerify,
    identity: Option<&Identity>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (i, dialect) in dialects.iter().enumerate() {
        if dialects[..i].contains(dialect) {
            continue;
        }
        match dialect {
            Dialect::NginxIngress => {
                out.push(("ssl-client-verify", client_verify(verify)));
                if let Some(id) = identity {
                    out.push(("ssl-client-subject-dn", header_safe_dn(&id.subject_dn)));
                    out.push(("ssl-client-issuer-dn", header_safe_dn(&id.issuer_dn)));
                    if forward_cert {
                        out.push(("ssl-client-cert", escape_pem(&id.pem())));
                    }
                }
            }
            Dialect::Xfcc => {
                if let Some(id) = identity {
                    out.push(("x-forwarded-client-cert", xfcc(id, forward_cert)));
                }
            }
            Dialect::Traefik => {
                if let Some(id) = identity {
                    if forward_cert {
                        out.push(("x-forwarded-tls-client-cert", b64(&id.der)));
                    }
                    out.push(("x-forwarded-tls-client-cert-info", traefik_info(id)));
                }
            }
            Dialect::Rfc9440 => {
                if let (Some(id), true) = (identity, forward_cert) {
                    out.push(("client-cert", format!(":{}:", b64(&id.der))));
                }
            }
        }
    }
    out
}

/// `SUCCESS`, `NONE` or `FAILED:<reason>` (no space, as NGINX writes it).
fn client_verify(verify: &ClientVerify) -> String {
    match verify {
        ClientVerify::Success => "SUCCESS".into(),
        ClientVerify::None => "NONE".into(),
        ClientVerify::Failed(reason) => format!("FAILED:{}", percent_unsafe(reason.trim())),
    }
}

/// Every byte but `A-Za-z0-9-._~` (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// NGINX `$ssl_client_escaped_cert` / Envoy `Cert=`: every byte but `A-Za-z0-9-._~` as
/// upper-case `%XX`.
pub fn escape_pem(pem: &str) -> String {
    utf8_percent_encode(pem, UNRESERVED).to_string()
}

fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Bytes that may not appear in a header value (controls, DEL, non-ASCII).
fn not_header_byte(b: u8) -> bool {
    !(b == b' ' || b.is_ascii_graphic())
}

/// Defensive: `%XX` for any byte that may not appear in a header value; the identity's own
/// fields never need it, but [`Identity`] has public fields.
fn percent_unsafe(s: &str) -> String {
    escape_unsafe(s, '%')
}

/// A DN is already ASCII without controls when it comes from OpenSSL's RFC 2253 printer; should
/// anything else slip in, it is written with the RFC 2253 `\XX` hex escape.
fn header_safe_dn(dn: &str) -> String {
    escape_unsafe(dn, '\\')
}

/// Writes every byte that may not appear in a header value as `<prefix>XX`.
fn escape_unsafe(s: &str, prefix: char) -> String {
    if !s.bytes().any(not_header_byte) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if not_header_byte(b) {
            let _ = write!(out, "{prefix}{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

/// An HTTP quoted-string (Envoy's XFCC, RFC 7239 `Forwarded`): `"` and `\` backslash-escaped
/// inside double quotes.
pub fn xfcc_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A SAN value: bare unless it holds `,` `;` `=` `"` `\` or a space, then quoted.
fn xfcc_value(value: &str) -> String {
    let value = percent_unsafe(value);
    if value.contains([',', ';', '=', '"', '\\', ' ']) {
        xfcc_quoted(&value)
    } else {
        value
    }
}

/// `Hash=<sha256>;Cert="<pem>";Subject="<dn>";URI=<uri>;DNS=<dns>` in Envoy's key order
/// (`By` is not sent: it names our own server certificate's URI SAN, which upstreams of a
/// sidecar do not need). Envoy writes `URI=` even when there is no URI SAN; so do we.
fn xfcc(id: &Identity, forward_cert: bool) -> String {
    let mut parts = vec![format!("Hash={}", id.fingerprint_sha256)];
    if forward_cert {
        parts.push(format!("Cert=\"{}\"", escape_pem(&id.pem())));
    }
    parts.push(format!(
        "Subject={}",
        xfcc_quoted(&header_safe_dn(&id.subject_dn))
    ));
    if id.uri_sans.is_empty() {
        parts.push("URI=".into());
    }
    for uri in &id.uri_sans {
        parts.push(format!("URI={}", xfcc_value(uri)));
    }
    for dns in &id.dns_sans {
        parts.push(format!("DNS={}", xfcc_value(dns)));
    }
    parts.join(";")
}

/// Go's `url.QueryEscape`: `A-Za-z0-9-_.~` kept, space as `+`, every other byte `%XX`.
pub fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's `net.IP.String()`: IPv4-mapped IPv6 addresses print as dotted IPv4.
fn go_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The subject / issuer sub-fields as Traefik writes them: `DC` (every value, encoding order),
/// then every `C`, `ST`, `L`, `O`, (subject only) `OU`, then the last `SN` (serialNumber
/// attribute) and the last `CN`; each `K=V,`, raw and unescaped, empty values skipped, the final
/// `,` trimmed. Values are read from the DER (Go's `pkix.Name` sees the same values).
fn traefik_dn(name: &openssl::x509::X509NameRef, with_ou: bool) -> String {
    use openssl::nid::Nid;
    let vals = |nid: Nid| -> Vec<String> {
        name.entries_by_nid(nid)
            .filter_map(|e| e.data().to_string().ok())
            .collect()
    };
    let mut out = String::new();
    // Go's pkix.Name keeps DC only in `Names`, which Traefik prints with %s (empty ones too).
    for v in vals(Nid::DOMAINCOMPONENT) {
        let _ = write!(out, "DC={v},");
    }
    // Go's writePart: empty values are skipped.
    let mut put = |key: &str, values: Vec<String>| {
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            let _ = write!(out, "{key}={v},");
        }
    };
    put("C", vals(Nid::COUNTRYNAME));
    put("ST", vals(Nid::STATEORPROVINCENAME));
    put("L", vals(Nid::LOCALITYNAME));
    put("O", vals(Nid::ORGANIZATIONNAME));
    if with_ou {
        put("OU", vals(Nid::ORGANIZATIONALUNITNAME));
    }
    // Go keeps only the last serialNumber and CN (even an empty one, which is then skipped).
    put("SN", vals(Nid::SERIALNUMBER).pop().into_iter().collect());
    put("CN", vals(Nid::COMMONNAME).pop().into_iter().collect());
    out.strip_suffix(',').map(str::to_string).unwrap_or(out)
}

/// `x-forwarded-tls-client-cert-info` with every field on, for the leaf:
/// `QueryEscape(Subject="…";Issuer="…";SerialNumber="…";NB="…";NA="…";SAN="…")`.
fn traefik_info(id: &Identity) -> String {
    let mut values = Vec::new();
    // Subject and issuer need the attribute structure, which the identity keeps only in DER.
    if let Ok(cert) = openssl::x509::X509::from_der(&id.der) {
        let subject = traefik_dn(cert.subject_name(), true);
        if !subject.is_empty() {
            values.push(format!("Subject=\"{subject}\""));
        }
        let issuer = traefik_dn(cert.issuer_name(), false);
        if !issuer.is_empty() {
            values.push(format!("Issuer=\"{issuer}\""));
        }
    }
    if !id.serial_decimal.is_empty() {
        values.push(format!("SerialNumber=\"{}\"", id.serial_decimal));
    }
    // Go: uint64(t.Unix()) — a pre-1970 time wraps, as there.
    values.push(format!("NB=\"{}\"", id.not_before as u64));
    values.push(format!("NA=\"{}\"", id.not_after as u64));
    let sans: Vec<String> = id
        .dns_sans
        .iter()
        .cloned()
        .chain(id.email_sans.iter().cloned())
        .chain(id.ip_sans.iter().map(go_ip))
        .chain(id.uri_sans.iter().cloned())
        .collect();
    if !sans.is_empty() {
        values.push(format!("SAN=\"{}\"", sans.join(",")));
    }
    go_query_escape(&values.join(";"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, CertSpec, Issued};

    fn spec(subject: &[(&str, &str)]) -> CertSpec {
        CertSpec::with_subject(subject)
    }

    fn ca() -> Issued {
        let mut s = spec(&[
            ("DC", "org"),
            ("C", "US"),
            ("O", "Test Org"),
            ("OU", "PKI"),
            ("CN", "Test CA"),
        ]);
        s.is_ca = true;
        s.eku = false;
        pki::self_signed_ca(&s).expect("ca")
    }

    fn identity(s: &CertSpec, ca: &Issued) -> Identity {
        let c = pki::issue(s, ca).expect("issue");
        Identity::from_x509(&c.cert).expect("identity")
    }

    /// What `http::HeaderValue::from_str` accepts, minus tab: visible ASCII and space.
    fn assert_header_safe(headers: &[(&'static str, String)]) {
        for (name, value) in headers {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
            assert!(
                value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{name}: {value:?}"
            );
            assert!(
                http::HeaderValue::from_str(value).is_ok(),
                "{name}: {value:?}"
            );
            assert!(
                http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{name}"
            );
        }
    }

    fn get<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn nginx_ingress() {
        let ca = ca();
        let id = identity(
            &spec(&[
                ("O", "Veertu"),
                ("O", "Anka Build, Inc."),
                ("CN", "node1 \"q\""),
            ]),
            &ca,
        );
        let h = dialect_headers(
            &[Dialect::NginxIngress],
            false,
            &ClientVerify::Success,
            Some(&id),
        );
        assert_eq!(
            h,
            vec![
                ("ssl-client-verify", "SUCCESS".to_string()),
                (
                    "ssl-client-subject-dn",
                    r#"CN=node1 \"q\",O=Anka Build\, Inc.,O=Veertu"#.to_string()
                ),
                (
                    "ssl-client-issuer-dn",
                    "CN=Test CA,OU=PKI,O=Test Org,C=US,DC=org".to_string()
                ),
            ]
        );
        let h = dialect_headers(
            &[Dialect::NginxIngress],
            true,
            &ClientVerify::Success,
            Some(&id),
        );
        let cert = get(&h, "ssl-client-cert").expect("cert");
        assert!(
            cert.starts_with("-----BEGIN%20CERTIFICATE-----%0AMI"),
            "{cert}"
        );
        assert!(
            cert.ends_with("%0A-----END%20CERTIFICATE-----%0A"),
            "{cert}"
        );
        assert!(cert
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        let decoded = percent_encoding::percent_decode_str(cert)
            .decode_utf8()
            .expect("utf8");
        assert_eq!(decoded, id.pem());
        assert_header_safe(&h);

        let none = dialect_headers(&[Dialect::NginxIngress], true, &ClientVerify::None, None);
        assert_eq!(none, vec![("ssl-client-verify", "NONE".to_string())]);
        let failed = dialect_headers(
            &[Dialect::NginxIngress],
            true,
            &ClientVerify::Failed("certificate has expired".into()),
            None,
        );
        assert_eq!(
            failed,
            vec![(
                "ssl-client-verify",
                "FAILED:certificate has expired".to_string()
            )]
        );
    }

    #[test]
    fn escape_pem_matches_nginx() {
        assert_eq!(
            escape_pem("-----BEGIN CERTIFICATE-----\nAB+/=\n"),
            "-----BEGIN%20CERTIFICATE-----%0AAB%2B%2F%3D%0A"
        );
        assert_eq!(escape_pem("a.b_c~d-e ü"), "a.b_c~d-e%20%C3%BC");
    }

    #[test]
    fn xfcc() {
        let ca = ca();
        let mut s = spec(&[("O", "a,b"), ("CN", r#"x "y" \z"#)]);
        s.uris = vec![
            "spiffe://td/ns/a".into(),
            "https://x.example/p?q=1;r".into(),
        ];
        s.dns_names = vec!["a.example".into(), "b.example".into()];
        let id = identity(&s, &ca);
        let h = dialect_headers(&[Dialect::Xfcc], false, &ClientVerify::Success, Some(&id));
        let want = format!(
            r#"Hash={};Subject="CN=x \\\"y\\\" \\\\z,O=a\\,b";URI=spiffe://td/ns/a;URI="https://x.example/p?q=1;r";DNS=a.example;DNS=b.example"#,
            id.fingerprint_sha256
        );
        assert_eq!(h, vec![("x-forwarded-client-cert", want)]);
        assert_header_safe(&h);

        let h = dialect_headers(&[Dialect::Xfcc], true, &ClientVerify::Success, Some(&id));
        let v = get(&h, "x-forwarded-client-cert").expect("xfcc");
        let cert = format!(";Cert=\"{}\";", escape_pem(&id.pem()));
        assert!(v.contains(&cert), "{v}");
        assert!(v.starts_with(&format!("Hash={};Cert=", id.fingerprint_sha256)));

        // Without URI SANs Envoy still writes `URI=`; without DNS SANs nothing.
        let plain = identity(&spec(&[("CN", "plain")]), &ca);
        let h = dialect_headers(
            &[Dialect::Xfcc],
            false,
            &ClientVerify::Success,
            Some(&plain),
        );
        assert_eq!(
            h[0].1,
            format!(
                "Hash={};Subject=\"CN=plain\";URI=",
                plain.fingerprint_sha256
            )
        );
        // No identity, no header.
        assert!(dialect_headers(&[Dialect::Xfcc], true, &ClientVerify::None, None).is_empty());
    }

    /// The same value Go's url.QueryUnescape would give back.
    fn query_unescape(s: &str) -> String {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8()
            .expect("utf8")
            .into_owned()
    }

    #[test]
    fn traefik() {
        let ca = ca();
        let mut s = spec(&[
            ("DC", "org"),
            ("DC", "cheese"),
            ("C", "FR"),
            ("C", "US"),
            ("ST", "Ile-de-France"),
            ("L", "Paris"),
            ("O", "Cheese"),
            ("O", "Cheese 2"),
            ("OU", "Simple Team"),
            ("serialNumber", "42"),
            ("CN", "first"),
            ("CN", "*.example.com"),
        ]);
        s.dns_names = vec!["*.example.org".into(), "*.example.net".into()];
        s.emails = vec!["test@example.org".into()];
        s.ip_addrs = vec![
            "10.0.1.2".parse().expect("ip"),
            "::ffff:10.0.1.3".parse().expect("ip"),
        ];
        s.uris = vec!["spiffe://td/a b".into()];
        let id = identity(&s, &ca);
        let h = dialect_headers(&[Dialect::Traefik], true, &ClientVerify::Success, Some(&id));
        assert_header_safe(&h);
        assert_eq!(
            get(&h, "x-forwarded-tls-client-cert"),
            Some(b64(&id.der).as_str())
        );
        let info = get(&h, "x-forwarded-tls-client-cert-info").expect("info");
        let want = format!(
            "Subject=\"DC=org,DC=cheese,C=FR,C=US,ST=Ile-de-France,L=Paris,O=Cheese,O=Cheese 2,OU=Simple Team,SN=42,CN=*.example.com\";\
             Issuer=\"DC=org,C=US,O=Test Org,CN=Test CA\";SerialNumber=\"{}\";NB=\"{}\";NA=\"{}\";\
             SAN=\"*.example.org,*.example.net,test@example.org,10.0.1.2,10.0.1.3,spiffe://td/a b\"",
            id.serial_decimal, id.not_before, id.not_after
        );
        assert_eq!(query_unescape(info), want);
        assert!(
            info.starts_with("Subject%3D%22DC%3Dorg%2CDC%3Dcheese%2CC%3DFR"),
            "{info}"
        );
        assert!(info.contains("O%3DCheese+2"), "space as +: {info}");
        assert!(info
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%+".contains(&b)));

        // Without forward_cert only the info header; without SANs no SAN field.
        let plain = identity(&spec(&[("CN", "plain")]), &ca);
        let h = dialect_headers(
            &[Dialect::Traefik],
            false,
            &ClientVerify::Success,
            Some(&plain),
        );
        assert_eq!(h.len(), 1);
        assert_eq!(
            query_unescape(&h[0].1),
            format!(
                "Subject=\"CN=plain\";Issuer=\"DC=org,C=US,O=Test Org,CN=Test CA\";SerialNumber=\"{}\";NB=\"{}\";NA=\"{}\"",
                plain.serial_decimal, plain.not_before, plain.not_after
            )
        );
        assert!(dialect_headers(&[Dialect::Traefik], true, &ClientVerify::None, None).is_empty());
    }

    #[test]
    fn go_query_escape_matches_go() {
        // Values from Go's net/url tests (TestQueryEscape).
        assert_eq!(go_query_escape(""), "");
        assert_eq!(go_query_escape("abc"), "abc");
        assert_eq!(go_query_escape("one two"), "one+two");
        assert_eq!(go_query_escape("10%"), "10%25");
        assert_eq!(
            go_query_escape(" ?&=#+%!<>#\"{}|\\^[]`☺\t:/@$'()*,;"),
            "+%3F%26%3D%23%2B%25%21%3C%3E%23%22%7B%7D%7C%5C%5E%5B%5D%60%E2%98%BA%09%3A%2F%40%24%27%28%29%2A%2C%3B"
        );
    }

    #[test]
    fn rfc9440() {
        let ca = ca();
        let id = identity(&spec(&[("CN", "x")]), &ca);
        let h = dialect_headers(&[Dialect::Rfc9440], true, &ClientVerify::Success, Some(&id));
        assert_eq!(h, vec![("client-cert", format!(":{}:", b64(&id.der)))]);
        assert!(dialect_headers(
            &[Dialect::Rfc9440],
            false,
            &ClientVerify::Success,
            Some(&id)
        )
        .is_empty());
        assert!(dialect_headers(&[Dialect::Rfc9440], true, &ClientVerify::None, None).is_empty());
    }

    #[test]
    fn all_dialects_in_order_and_once() {
        let ca = ca();
        let id = identity(&spec(&[("CN", "x")]), &ca);
        let all = [
            Dialect::Rfc9440,
            Dialect::NginxIngress,
            Dialect::Xfcc,
            Dialect::Traefik,
            Dialect::Xfcc,
        ];
        let h = dialect_headers(&all, true, &ClientVerify::Success, Some(&id));
        let names: Vec<_> = h.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "client-cert",
                "ssl-client-verify",
                "ssl-client-subject-dn",
                "ssl-client-issuer-dn",
                "ssl-client-cert",
                "x-forwarded-client-cert",
                "x-forwarded-tls-client-cert",
                "x-forwarded-tls-client-cert-info",
            ]
        );
        assert!(
            names.iter().all(|n| crate::proxy::forward::is_spoofable(n)),
            "every header we set is stripped from clients"
        );
        assert_header_safe(&h);
    }

    #[test]
    fn injection_attempts_are_refused_or_escaped() {
        let ca = ca();
        // NUL: refused by Identity.
        for subject in [vec![("CN", "a\0b")], vec![("CN", "a"), ("O", "x\0")]] {
            let c = pki::issue(&spec(&subject), &ca).expect("issue");
            assert!(Identity::from_x509(&c.cert).is_err());
        }
        // CR, LF, tab, DEL, non-ASCII, quotes and separators: escaped in every dialect.
        let mut s = spec(&[
            ("O", "evil\r\nX-Certgate-User: root"),
            ("OU", "tab\there"),
            ("CN", "Müller\u{7f}\";URI=spiffe://admin,\\"),
        ]);
        s.uris = vec!["spiffe://td/x".into()];
        s.dns_names = vec!["ok.example".into()];
        let id = identity(&s, &ca);
        let all = [
            Dialect::NginxIngress,
            Dialect::Xfcc,
            Dialect::Traefik,
            Dialect::Rfc9440,
        ];
        let h = dialect_headers(
            &all,
            true,
            &ClientVerify::Failed("bad\r\nthing".into()),
            Some(&id),
        );
        assert_header_safe(&h);
        let subject = get(&h, "ssl-client-subject-dn").expect("dn");
        assert!(
            subject.contains(r"O=evil\0D\0AX-Certgate-User: root"),
            "{subject}"
        );
        assert!(subject.contains(r"OU=tab\09here"), "{subject}");
        let xfcc = get(&h, "x-forwarded-client-cert").expect("xfcc");
        // The forged `;URI=` stays inside the quoted Subject: parsed by the grammar, the pairs
        // are exactly ours and Subject unquotes to the DN.
        let pairs = parse_xfcc_element(xfcc);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Hash", "Cert", "Subject", "URI", "DNS"], "{xfcc}");
        assert_eq!(pairs[2].1, id.subject_dn);
        assert_eq!(pairs[3].1, "spiffe://td/x");
        assert_eq!(pairs[4].1, "ok.example");
        assert_eq!(get(&h, "ssl-client-verify"), Some("FAILED:bad%0D%0Athing"));
        let info = query_unescape(get(&h, "x-forwarded-tls-client-cert-info").expect("info"));
        assert!(
            info.contains("O=evil\r\nX-Certgate-User: root"),
            "raw once decoded, as Traefik: {info:?}"
        );

        // A hand-made identity with raw controls everywhere still yields valid header values.
        let forged = Identity {
            subject_dn: "CN=a\r\nb\u{80}".into(),
            issuer_dn: "CN=\0".into(),
            dns_sans: vec!["a\nb".into(), "c d".into()],
            uri_sans: vec!["x\u{7f}".into()],
            ..id.clone()
        };
        let h = dialect_headers(&all, true, &ClientVerify::Success, Some(&forged));
        assert_header_safe(&h);
        assert_eq!(get(&h, "ssl-client-subject-dn"), Some(r"CN=a\0D\0Ab\C2\80"));
        let xfcc = get(&h, "x-forwarded-client-cert").expect("xfcc");
        assert!(xfcc.ends_with(r#";URI=x%7F;DNS=a%0Ab;DNS="c d""#), "{xfcc}");
    }

    /// One XFCC element split by its grammar: `;` between pairs outside quotes, `\` escapes
    /// inside quotes.
    fn parse_xfcc_element(s: &str) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                assert!(
                    matches!(chars.next(), None | Some(';')),
                    "junk after a quoted value in {s}"
                );
            } else {
                value = chars.by_ref().take_while(|c| *c != ';').collect();
            }
            pairs.push((key, value));
            if chars.peek().is_none() {
                return pairs;
            }
        }
    }

    #[test]
    fn xfcc_round_trips_through_its_grammar() {
        let ca = ca();
        let mut s = spec(&[("O", "a;b=c,d"), ("CN", r#"q"uote\back"#)]);
        s.uris = vec!["spiffe://td/a;b".into()];
        s.dns_names = vec!["x.example".into()];
        let id = identity(&s, &ca);
        let h = dialect_headers(&[Dialect::Xfcc], true, &ClientVerify::Success, Some(&id));
        let pairs = parse_xfcc_element(&h[0].1);
        let want = [
            ("Hash", id.fingerprint_sha256.clone()),
            ("Cert", escape_pem(&id.pem())),
            ("Subject", id.subject_dn.clone()),
            ("URI", "spiffe://td/a;b".to_string()),
            ("DNS", "x.example".to_string()),
        ];
        let got: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert_eq!(got, want);
    }
}
