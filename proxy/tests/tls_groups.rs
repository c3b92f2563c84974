//! `tls.groups`, through the real binary: the hybrid post-quantum group is offered by default
//! and negotiated with a client that offers only it; a client offering only groups certgate
//! leaves out (secp521r1, X448, finite-field) fails the handshake, in TLS 1.3 and in TLS 1.2
//! (where DHE suites would bring finite-field key exchange back); a configured list replaces
//! the default; an unknown name is a config error.
//!
//! The clients are built on the OpenSSL certgate links (vendored 3.x with ML-KEM): the system
//! `openssl` CLI may predate ML-KEM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use certgate::pki::{self, Issued, KeyKind};
use common::*;
use openssl::ssl::{SslConnector, SslMethod, SslRef, SslStream, SslVersion};

/// What a client offering only `groups` (OpenSSL's list syntax), up to TLS `max`, gets: the
/// negotiated group after one request answered 200, or the handshake error.
fn handshake(
    w: &World,
    p: &Proxy,
    who: &Issued,
    groups: &str,
    max: SslVersion,
    ciphers: Option<&str>,
) -> Result<String, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_ca_file(w.path("ca.pem")).map_err(|e| e.to_string())?;
    b.set_certificate(&who.cert).map_err(|e| e.to_string())?;
    b.set_private_key(&who.key).map_err(|e| e.to_string())?;
    b.set_alpn_protos(b"\x08http/1.1")
        .map_err(|e| e.to_string())?;
    b.set_max_proto_version(Some(max))
        .map_err(|e| e.to_string())?;
    // Security level 0 on the client: whatever is refused, certgate refused it.
    b.set_security_level(0);
    if let Some(c) = ciphers {
        b.set_cipher_list(c).map_err(|e| e.to_string())?;
    }
    b.set_groups_list(groups)
        .map_err(|e| format!("this OpenSSL cannot offer {groups}: {e}"))?;
    let tcp = TcpStream::connect(p.addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut s: SslStream<TcpStream> = b
        .build()
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())?;
    let group = negotiated_group(s.ssl());
    s.write_all(b"GET /groups HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{groups}: {resp}");
    Ok(group)
}

/// The key exchange group of the handshake, by OpenSSL's name for it.
fn negotiated_group(ssl: &SslRef) -> String {
    use foreign_types::ForeignTypeRef;
    // SAFETY: `ssl` is a live connection; OpenSSL returns a static string or NULL.
    let name = unsafe { openssl_sys::SSL_get0_group_name(ssl.as_ptr()) };
    if name.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL, NUL-terminated and static (see above).
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// A world whose server and clients have RSA keys: in TLS 1.2, OpenSSL refuses an ECDSA
/// certificate (either side's) on a curve the peer did not offer, which would fail a handshake
/// for its certificate rather than for its key exchange. RSA also makes the DHE-RSA suites
/// usable, so TLS 1.2 shows whether finite-field key exchange is still possible.
fn rsa_world() -> World {
    let w = World::new();
    let mut s = spec(&[("CN", "localhost")]);
    s.key = KeyKind::Rsa2048;
    s.client_auth = false;
    s.server_auth = true;
    s.dns_names = vec!["localhost".into()];
    let server = pki::issue(&s, &w.ca).unwrap();
    write(&w.path("server.pem"), &cert_pem(&server));
    write(&w.path("server-key.pem"), &key_pem(&server));
    w
}

fn rsa_client(cn: &str, w: &World) -> Issued {
    let mut s = spec(&[("O", "ci"), ("CN", cn)]);
    s.key = KeyKind::Rsa2048;
    pki::issue(&s, &w.ca).unwrap()
}

/// TLS 1.2 suites offering DHE first, then ECDHE: a server with DHE takes the DHE one.
const DHE_FIRST: &str =
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256";

#[test]
fn hybrid_post_quantum_is_negotiated_and_left_out_groups_fail() {
    let w = rsa_world();
    let up = upstream();
    let who = rsa_client("pq", &w);
    let p = Proxy::start(&w, &ProxyConfig::new(up));
    let (tls13, tls12) = (SslVersion::TLS1_3, SslVersion::TLS1_2);

    assert_eq!(
        handshake(&w, &p, &who, "X25519MLKEM768", tls13, None).as_deref(),
        Ok("X25519MLKEM768")
    );
    // A client that offers it among others gets it too: it comes first.
    assert_eq!(
        handshake(&w, &p, &who, "X25519MLKEM768:X25519", tls13, None).as_deref(),
        Ok("X25519MLKEM768")
    );
    // The classical ones still serve clients without ML-KEM, in TLS 1.3 and 1.2 (OpenSSL
    // reports them by their other names).
    for (group, reported) in [
        ("X25519", "x25519"),
        ("P-256", "secp256r1"),
        ("P-384", "secp384r1"),
    ] {
        for (max, ciphers) in [(tls13, None), (tls12, Some(DHE_FIRST))] {
            assert_eq!(
                handshake(&w, &p, &who, group, max, ciphers).as_deref(),
                Ok(reported),
                "{group} up to {max:?}"
            );
        }
    }
    for group in ["secp521r1", "X448", "ffdhe2048", "ffdhe3072"] {
        for (max, ciphers) in [(tls13, None), (tls12, Some(DHE_FIRST))] {
            let r = handshake(&w, &p, &who, group, max, ciphers);
            assert!(r.is_err(), "{group} up to {max:?} was accepted: {r:?}");
        }
    }
    // A failed handshake is counted after its alert was sent: the client can see the last one
    // fail before it is counted.
    let failed = |m: &str| {
        metric(
            m,
            "certgate_handshakes_total",
            &[("result", "fail"), ("reason", "protocol")],
        )
    };
    let m = wait_for(
        "the failed handshakes counted",
        Duration::from_secs(10),
        || {
            let m = p.metrics();
            (failed(&m) >= 8.0).then_some(m)
        },
    );
    assert_eq!(failed(&m), 8.0, "{m}");
}

#[test]
fn configured_groups_replace_the_default_and_unknown_ones_are_refused() {
    let w = World::new();
    let up = upstream();
    let who = client(&[("O", "ci"), ("CN", "p384")], &w.ca);
    // TLS 1.3 only below: an ECDSA client certificate is fine there whatever the groups.
    let mut cfg = ProxyConfig::new(up);
    cfg.tls_extra = "  groups: [P-384]\n";
    let p = Proxy::start(&w, &cfg);
    assert_eq!(
        handshake(&w, &p, &who, "P-384", SslVersion::TLS1_3, None).as_deref(),
        Ok("secp384r1")
    );
    for group in ["X25519MLKEM768", "X25519"] {
        let r = handshake(&w, &p, &who, group, SslVersion::TLS1_3, None);
        assert!(r.is_err(), "{group} accepted with groups: [P-384]: {r:?}");
    }

    let text = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace("groups: [P-384]", "groups: [P-384, X25519Kyber9000]");
    let bad = w.path("bad-groups.yaml");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad-groups.yaml")
            && err.contains("tls.groups[1]")
            && err.contains("X25519Kyber9000")
            && err.contains("openssl list -tls-groups"),
        "{err}"
    );
}
