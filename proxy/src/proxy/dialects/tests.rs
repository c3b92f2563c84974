//! The dialects against what each proxy sends, and against header injection.

use super::super::forward::headers::is_spoofable;
use super::escape::b64;
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
        names.iter().all(|n| is_spoofable(n)),
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
