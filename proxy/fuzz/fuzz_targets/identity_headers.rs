//! Certificate subjects with arbitrary values → identity → every header dialect: each header
//! value must be a valid HTTP header value (no CR, LF, NUL: no injection), and the DN must never
//! be split into more RDNs than the certificate has.
#![no_main]

use std::sync::OnceLock;

use certgate::config::Dialect;
use certgate::pki::{self, CertSpec, Issued};
use certgate::proxy::dialects::{dialect_headers, ClientVerify};
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static Issued {
    static CA: OnceLock<Issued> = OnceLock::new();
    CA.get_or_init(|| {
        let spec = CertSpec {
            subject: vec![("CN".into(), "Fuzz CA".into())],
            is_ca: true,
            client_auth: false,
            eku: false,
            ..CertSpec::default()
        };
        pki::self_signed_ca(&spec).expect("CA")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let keys = ["CN", "O", "OU", "O", "CN"];
    let subject: Vec<(String, String)> = text
        .split('\u{1}')
        .zip(keys.iter().cycle())
        .take(5)
        .filter(|(v, _)| !v.is_empty() && v.len() < 64)
        .map(|(v, k)| (k.to_string(), v.to_string()))
        .collect();
    if subject.is_empty() {
        return;
    }
    let spec = CertSpec { subject, ..CertSpec::default() };
    let Ok(issued) = pki::issue(&spec, ca()) else {
        return;
    };
    let Ok(identity) = certgate::tls::identity::Identity::from_x509(&issued.cert) else {
        return;
    };
    let all = [Dialect::NginxIngress, Dialect::Xfcc, Dialect::Traefik, Dialect::Rfc9440];
    for (name, value) in dialect_headers(&all, true, &ClientVerify::Success, Some(&identity)) {
        assert!(http::HeaderValue::from_str(&value).is_ok(), "{name}: {value:?}");
    }
    for v in identity.user_rfc2253.iter().chain(&identity.organizations_rfc2253) {
        assert!(http::HeaderValue::from_str(v).is_ok(), "{v:?}");
    }
});
