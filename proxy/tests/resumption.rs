//! TLS session resumption: tickets (TLS 1.3, TLS 1.2) and the TLS 1.2 session-ID cache resume,
//! and no resumption outlives a revocation or a CA change: the client gets a full handshake
//! and the verdict a new client would get.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certgate::pki::Issued;
use common::*;
use openssl::ssl::{
    SslConnector, SslMethod, SslOptions, SslSession, SslSessionCacheMode, SslStream, SslVersion,
};

/// A client that keeps the session the server issues, to offer it on its next connection.
struct Resumer {
    connector: SslConnector,
    issued: Arc<Mutex<Option<SslSession>>>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tls13Ticket,
    Tls12Ticket,
    Tls12SessionId,
}

const KINDS: [Kind; 3] = [Kind::Tls13Ticket, Kind::Tls12Ticket, Kind::Tls12SessionId];

impl Resumer {
    fn new(world: &World, who: &Issued, kind: Kind) -> Resumer {
        Self::with_chain(world, who, None, kind)
    }

    /// A client that also sends `intermediate` in its chain.
    fn with_chain(
        world: &World,
        who: &Issued,
        intermediate: Option<&Issued>,
        kind: Kind,
    ) -> Resumer {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_ca_file(world.path("ca.pem")).unwrap();
        b.set_certificate(&who.cert).unwrap();
        b.set_private_key(&who.key).unwrap();
        if let Some(i) = intermediate {
            b.add_extra_chain_cert(i.cert.clone()).unwrap();
        }
        b.set_alpn_protos(b"\x08http/1.1").unwrap();
        match kind {
            Kind::Tls13Ticket => {}
            Kind::Tls12Ticket => b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap(),
            Kind::Tls12SessionId => {
                b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
                b.set_options(SslOptions::NO_TICKET);
            }
        }
        b.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
        let issued: Arc<Mutex<Option<SslSession>>> = Arc::default();
        let slot = issued.clone();
        b.set_new_session_callback(move |_, s| *slot.lock().unwrap() = Some(s));
        Resumer {
            connector: b.build(),
            issued,
        }
    }

    /// Connects, offering `offer`; Err when the handshake (or the first read) is refused.
    fn connect(
        &self,
        addr: SocketAddr,
        offer: Option<&SslSession>,
    ) -> Result<SslStream<TcpStream>, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut ssl = self
            .connector
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        if let Some(s) = offer {
            // SAFETY: the session came from this connector's context.
            unsafe { ssl.set_session(s).unwrap() };
        }
        ssl.connect(tcp).map_err(|e| e.to_string())
    }

    /// One GET on a new connection: (resumed, status, body).
    fn get(
        &self,
        addr: SocketAddr,
        offer: Option<&SslSession>,
    ) -> Result<(bool, u16, String), String> {
        let mut s = self.connect(addr, offer)?;
        let resumed = s.ssl().session_reused();
        let (code, body) = request(&mut s, "/")?;
        // A client that drops a connection without close_notify marks its own session as not
        // resumable (OpenSSL's ssl_clear_bad_session); well-behaved clients shut down.
        let _ = s.shutdown();
        Ok((resumed, code, body))
    }

    /// The session the server issued on the last connection.
    fn session(&self) -> SslSession {
        self.issued
            .lock()
            .unwrap()
            .take()
            .expect("the server issued a session")
    }
}

/// One keep-alive HTTP/1.1 request: (status, body).
fn request(s: &mut SslStream<TcpStream>, path: &str) -> Result<(u16, String), String> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| format!("no content-length in {head}"))?;
            if buf.len() >= end + 4 + len {
                let code = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("no status in {head}"))?;
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return Ok((code, body));
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed before a response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn resumptions(p: &Proxy, result: &str) -> f64 {
    metric(
        &p.metrics(),
        "certgate_tls_resumptions_total",
        &[("result", result)],
    )
}

fn crl_reloads(p: &Proxy) -> f64 {
    metric(
        &p.metrics(),
        "certgate_reloads_total",
        &[("kind", "crl"), ("result", "ok")],
    )
}

fn wait_crl_reloads(p: &Proxy, at_least: f64) {
    wait_for("the CRL reload", Duration::from_secs(10), || {
        (crl_reloads(p) >= at_least).then_some(())
    });
}

/// One client of each kind for `who`, and the session each got on a first full handshake.
fn first_sessions(w: &World, who: &Issued, p: &Proxy) -> (Vec<Resumer>, Vec<SslSession>) {
    let clients: Vec<Resumer> = KINDS.iter().map(|k| Resumer::new(w, who, *k)).collect();
    let mut sessions = Vec::new();
    for c in &clients {
        assert_eq!(c.get(p.addr, None).unwrap().1, 200);
        sessions.push(c.session());
    }
    (clients, sessions)
}

/// An `optional` listener, a client `CN=cn`, and the TLS 1.3 session of its first request.
fn tls13_session(w: &World, cn: &str) -> (Issued, Proxy, Resumer, SslSession) {
    let who = client(&[("O", "ci"), ("CN", cn)], &w.ca);
    let p = Proxy::start(w, &ProxyConfig::new(upstream()));
    let c = Resumer::new(w, &who, Kind::Tls13Ticket);
    assert_eq!(c.get(p.addr, None).unwrap().1, 200);
    let session = c.session();
    (who, p, c, session)
}

#[test]
fn every_kind_of_session_resumes_with_the_identity_intact() {
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "resumer")], &w.ca);
    let cfg = ProxyConfig {
        client_auth: "required",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    for kind in KINDS {
        let c = Resumer::new(&w, &who, kind);
        let (resumed, code, _) = c.get(p.addr, None).unwrap();
        assert_eq!((resumed, code), (false, 200), "{kind:?}: first handshake");
        let mut session = c.session();
        // Resume three times in a row, each time offering the newest session (TLS 1.3 issues a
        // fresh ticket on every resumption; TLS 1.2 keeps the one it has).
        for round in 0..3 {
            let (resumed, code, body) = c.get(p.addr, Some(&session)).unwrap();
            assert_eq!((resumed, code), (true, 200), "{kind:?}: resumption {round}");
            assert!(
                body.contains("CN=resumer"),
                "{kind:?}: identity headers on a resumed connection: {body}"
            );
            if let Some(fresh) = c.issued.lock().unwrap().take() {
                session = fresh;
            }
        }
    }
    assert_eq!(resumptions(&p, "resumed"), 9.0);
    assert_eq!(resumptions(&p, "refused"), 0.0);
}

#[test]
fn a_revoked_certificate_cannot_resume() {
    let mut w = World::new();
    let who = client(&[("O", "ci"), ("CN", "soon-revoked")], &w.ca);
    let bystander = client(&[("O", "ci"), ("CN", "bystander")], &w.ca);
    let cfg = ProxyConfig {
        client_auth: "required",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    let (clients, mut sessions) = first_sessions(&w, &who, &p);

    // A reload that does not touch this certificate: the sessions still resume (re-verified).
    w.revoke(&bystander.cert);
    wait_crl_reloads(&p, 1.0);
    for (c, s) in clients.iter().zip(&mut sessions) {
        let (resumed, code, _) = c.get(p.addr, Some(s)).unwrap();
        assert_eq!((resumed, code), (true, 200));
        // TLS 1.3 issues a fresh ticket on resumption; TLS 1.2 keeps the session it had.
        if let Some(fresh) = c.issued.lock().unwrap().take() {
            *s = fresh;
        }
    }

    w.revoke(&who.cert);
    wait_crl_reloads(&p, 2.0);
    for (c, s) in clients.iter().zip(&sessions) {
        let refused = c.get(p.addr, Some(s));
        assert!(
            refused.is_err(),
            "a revoked certificate's session must not resume: {refused:?}"
        );
    }
    assert_eq!(resumptions(&p, "refused"), 3.0);
    // A failed handshake is counted after its alert was sent: the client can see it first.
    wait_for(
        "the full handshakes refusing the revoked certificate counted",
        Duration::from_secs(10),
        || {
            (metric(
                &p.metrics(),
                "certgate_handshakes_total",
                &[("result", "fail"), ("reason", "certificate_revoked")],
            ) >= 3.0)
                .then_some(())
        },
    );
}

#[test]
fn a_chain_through_an_intermediate_the_bundle_lacks_resumes_after_a_reload() {
    let mut w = World::new();
    // ca.pem holds only the root; the client sends its intermediate, which the ticket keeps
    // so the re-check after a reload can build the chain again.
    let mid = intermediate("Team CA", &w.ca);
    let who = client(&[("O", "ci"), ("CN", "via-intermediate")], &mid);
    let bystander = client(&[("O", "ci"), ("CN", "bystander")], &w.ca);
    // The intermediate has no CRL: this test is about rebuilding the chain, not coverage.
    let mut cfg = ProxyConfig::new(upstream());
    cfg.tls_extra = "  crl_check: available\n";
    let p = Proxy::start(&w, &cfg);
    for kind in KINDS {
        let c = Resumer::with_chain(&w, &who, Some(&mid), kind);
        let (resumed, code, body) = c.get(p.addr, None).unwrap();
        assert_eq!((resumed, code), (false, 200), "{kind:?}: {body}");
        let session = c.session();
        let reloads = crl_reloads(&p);
        w.revoke(&bystander.cert);
        wait_for("the CRL reload", Duration::from_secs(10), || {
            (crl_reloads(&p) > reloads).then_some(())
        });
        let (resumed, code, body) = c.get(p.addr, Some(&session)).unwrap();
        assert_eq!((resumed, code), (true, 200), "{kind:?}: {body}");
        assert!(body.contains("CN=via-intermediate"), "{body}");
    }
    assert_eq!(resumptions(&p, "resumed"), 3.0);
}

#[test]
fn an_optional_listener_answers_401_instead_of_resuming_a_revoked_session() {
    let mut w = World::new();
    let (who, p, c, session) = tls13_session(&w, "soon-revoked");
    w.revoke(&who.cert);
    wait_crl_reloads(&p, 1.0);
    let (resumed, code, body) = c.get(p.addr, Some(&session)).unwrap();
    assert_eq!((resumed, code), (false, 401), "{body}");
    assert!(body.contains("certificate revoked"), "{body}");
    assert_eq!(resumptions(&p, "refused"), 1.0);
}

#[test]
fn a_new_ca_bundle_ends_resumption_for_the_old_ca() {
    let w = World::new();
    let (_who, p, c, session) = tls13_session(&w, "old-ca");
    let other = ca("Other Root CA");
    // The server certificate stays signed by the old CA; only the client CA bundle changes.
    write(&w.path("ca.pem"), &cert_pem(&other));
    let crl = certgate::pki::make_crl(&other, &[], -1, 30, 1).unwrap();
    std::fs::write(w.path("crl.pem"), crl.to_pem().unwrap()).unwrap();
    wait_for("the CA reload", Duration::from_secs(10), || {
        (metric(&p.metrics(), "certgate_reloads_total", &[("result", "ok")]) >= 1.0).then_some(())
    });
    // The client still trusts the server (its own ca.pem copy is the connector's, loaded at
    // construction); the server no longer trusts the client.
    let (resumed, code, body) = c.get(p.addr, Some(&session)).unwrap();
    assert_eq!((resumed, code), (false, 401), "{body}");
    assert!(body.contains("unknown CA"), "{body}");
    assert_eq!(resumptions(&p, "refused"), 1.0);
}

#[test]
fn a_resumed_connection_is_rechecked_after_a_reload() {
    let mut w = World::new();
    let (who, p, c, session) = tls13_session(&w, "soon-revoked");
    let mut open = c.connect(p.addr, Some(&session)).unwrap();
    assert!(open.ssl().session_reused());
    assert_eq!(request(&mut open, "/").unwrap().0, 200);
    w.revoke(&who.cert);
    wait_crl_reloads(&p, 1.0);
    let (code, body) = request(&mut open, "/").unwrap();
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("certificate revoked"), "{body}");
}

#[test]
fn session_resumption_false_turns_it_off() {
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "no-resume")], &w.ca);
    let cfg = ProxyConfig {
        tls_extra: "  session_resumption: false\n",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    for kind in [Kind::Tls13Ticket, Kind::Tls12SessionId] {
        let c = Resumer::new(&w, &who, kind);
        assert_eq!(c.get(p.addr, None).unwrap().1, 200);
        // TLS 1.3 clients get no ticket at all; a TLS 1.2 session ID is not cached.
        let session = c.issued.lock().unwrap().take();
        match (kind, session) {
            (Kind::Tls13Ticket, s) => assert!(s.is_none(), "no TLS 1.3 ticket is issued"),
            (_, Some(s)) => {
                let (resumed, code, _) = c.get(p.addr, Some(&s)).unwrap();
                assert_eq!((resumed, code), (false, 200), "{kind:?}");
            }
            (_, None) => {}
        }
    }
    assert_eq!(resumptions(&p, "resumed"), 0.0);
}

#[test]
fn an_intermediate_crl_the_bundle_cannot_verify_at_load_still_ends_resumption() {
    // ca.pem holds only the root; the intermediate's CRL is verified against the intermediate
    // the client presents, and the resumption re-check applies it like any other CRL.
    let w = World::new();
    let mid = intermediate("Issuing CA", &w.ca);
    let who = client(&[("O", "ci"), ("CN", "via-intermediate")], &mid);
    let bystander = client(&[("O", "ci"), ("CN", "bystander")], &mid);
    w.write_crl_of("mid-crl.pem", &mid, &[], 30);
    let cfg = ProxyConfig {
        client_auth: "required",
        crl: "[crl.pem, mid-crl.pem]",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    let c = Resumer::with_chain(&w, &who, Some(&mid), Kind::Tls13Ticket);
    assert_eq!(c.get(p.addr, None).unwrap().1, 200);
    let mut session = c.session();

    // A reload that revokes someone else: re-verified against the new state, still resumes.
    w.write_crl_of("mid-crl.pem", &mid, &[&bystander.cert], 30);
    wait_crl_reloads(&p, 1.0);
    let (resumed, code, body) = c.get(p.addr, Some(&session)).unwrap();
    assert_eq!((resumed, code), (true, 200), "{body}");
    if let Some(fresh) = c.issued.lock().unwrap().take() {
        session = fresh;
    }

    w.write_crl_of("mid-crl.pem", &mid, &[&bystander.cert, &who.cert], 30);
    wait_crl_reloads(&p, 2.0);
    let refused = c.get(p.addr, Some(&session));
    assert!(
        refused.is_err(),
        "revoked by the intermediate's CRL: {refused:?}"
    );
    assert_eq!(resumptions(&p, "refused"), 1.0);
}

#[test]
fn a_certificate_revoked_by_a_fetched_crl_cannot_resume() {
    use common::crl_server::CrlServer;
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "fetched-revoked")], &w.ca);
    let srv = CrlServer::start();
    let crl = |revoked: &[&openssl::x509::X509], n| {
        certgate::pki::make_crl(&w.ca, revoked, -1, 30, n)
            .unwrap()
            .to_der()
            .unwrap()
    };
    srv.publish("/ca.crl", crl(&[], 1));
    let tls = format!(
        "  crl_fetch:\n    urls: [{}]\n    refresh: 1s\n",
        srv.url("/ca.crl")
    );
    let cfg = ProxyConfig {
        client_auth: "required",
        crl: "[]",
        tls_extra: &tls,
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    let (clients, sessions) = first_sessions(&w, &who, &p);
    srv.publish("/ca.crl", crl(&[&who.cert], 2));
    wait_for("the fetched CRL", Duration::from_secs(15), || {
        (status_json(&p)["crl_fetch"][0]["revoked"] == 1).then_some(())
    });
    for (c, s) in clients.iter().zip(&sessions) {
        let refused = c.get(p.addr, Some(s));
        assert!(
            refused.is_err(),
            "a session of a certificate a fetched CRL revokes must not resume: {refused:?}"
        );
    }
    assert_eq!(resumptions(&p, "refused"), 3.0);
}

// ---- tls.session_ticket_keys: keys shared by the replicas of a fleet ----

/// 80 random bytes: one ticket key in either file format.
fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 80];
    openssl::rand::rand_bytes(&mut k).unwrap();
    k
}

/// A HAProxy-style key file: one base64 key per line, the first encrypting.
fn key_lines(keys: &[&[u8]]) -> Vec<u8> {
    use base64::Engine;
    keys.iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k) + "\n")
        .collect::<String>()
        .into_bytes()
}

/// Replaces `path` atomically, as a config-management tool would.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-keys");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Publishes `bytes` as `dir/ticket.keys` the way the kubelet updates a mounted Secret: a new
/// `..<version>` directory, then one rename of the `..data` symlink onto it.
fn publish_secret(dir: &std::path::Path, version: &str, bytes: &[u8]) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir.join(format!("..{version}"))).unwrap();
    write(&dir.join(format!("..{version}/ticket.keys")), bytes);
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("ticket.keys");
    if std::fs::symlink_metadata(&link).is_err() {
        symlink("..data/ticket.keys", &link).unwrap();
    }
}

fn key_reloads(p: &Proxy, result: &str) -> f64 {
    metric(
        &p.metrics(),
        "certgate_reloads_total",
        &[("kind", "ticket_keys"), ("result", result)],
    )
}

fn wait_key_reloads(p: &Proxy, result: &str, at_least: f64) {
    wait_for("the ticket key reload", Duration::from_secs(10), || {
        (key_reloads(p, result) >= at_least).then_some(())
    });
}

fn keys_loaded(p: &Proxy) -> serde_json::Value {
    status_json(p)["listeners"][0]["session_ticket_keys"].clone()
}

const SHARED: &str = "  session_ticket_keys: ticket.keys\n";
const TICKETS: [Kind; 2] = [Kind::Tls13Ticket, Kind::Tls12Ticket];

#[test]
fn a_session_from_one_replica_resumes_on_the_other_with_shared_keys() {
    let w = World::new();
    // NGINX's format: one raw 80-byte key.
    write(&w.path("ticket.keys"), &random_key());
    let who = client(&[("O", "ci"), ("CN", "roaming")], &w.ca);
    let cfg = ProxyConfig {
        client_auth: "required",
        tls_extra: SHARED,
        ..ProxyConfig::new(upstream())
    };
    let (a, b) = (Proxy::start(&w, &cfg), Proxy::start(&w, &cfg));
    for kind in TICKETS {
        let c = Resumer::new(&w, &who, kind);
        let (resumed, code, _) = c.get(a.addr, None).unwrap();
        assert_eq!((resumed, code), (false, 200), "{kind:?}: first handshake");
        let mut session = c.session();
        for (from, to) in [(&a, &b), (&b, &a)] {
            let (resumed, code, body) = c.get(to.addr, Some(&session)).unwrap();
            assert_eq!(
                (resumed, code),
                (true, 200),
                "{kind:?}: a session of {} resumes on {}: {body}",
                from.addr,
                to.addr
            );
            assert!(body.contains("CN=roaming"), "{kind:?}: identity: {body}");
            if let Some(fresh) = c.issued.lock().unwrap().take() {
                session = fresh;
            }
        }
    }
    for p in [&a, &b] {
        assert_eq!(resumptions(p, "resumed"), 2.0);
        assert_eq!(resumptions(p, "refused"), 0.0);
        let keys = keys_loaded(p);
        assert_eq!(keys["keys"], 1, "{keys}");
        assert!(keys["age_seconds"].is_u64(), "{keys}");
    }
}

#[test]
fn after_a_rotation_old_tickets_resume_until_their_key_leaves_the_file() {
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "rotating")], &w.ca);
    let secret = w.path("secret");
    let (k1, k2, k3) = (random_key(), random_key(), random_key());
    publish_secret(&secret, "v1", &key_lines(&[&k1]));
    let cfg = ProxyConfig {
        tls_extra: "  session_ticket_keys: secret/ticket.keys\n",
        ..ProxyConfig::new(upstream())
    };
    let (a, b) = (Proxy::start(&w, &cfg), Proxy::start(&w, &cfg));
    // Two tickets per kind under k1, from a: one to resume after the rotation, one after k1 is
    // gone (a ticket is offered once: TLS 1.3 clients use each once).
    let clients: Vec<Resumer> = TICKETS.iter().map(|k| Resumer::new(&w, &who, *k)).collect();
    let mut under_k1 = Vec::new();
    for c in &clients {
        let mut two = Vec::new();
        for _ in 0..2 {
            assert_eq!(c.get(a.addr, None).unwrap().1, 200);
            two.push(c.session());
        }
        under_k1.push(two);
    }

    // Rotation: the new key first (it encrypts from now on), the old one second.
    let first_load = keys_loaded(&a)["loaded_at"].clone();
    publish_secret(&secret, "v2", &key_lines(&[&k2, &k1]));
    for p in [&a, &b] {
        wait_key_reloads(p, "ok", 1.0);
        assert_eq!(keys_loaded(p)["keys"], 2);
    }
    assert_ne!(
        keys_loaded(&a)["loaded_at"],
        first_load,
        "the new file's load time"
    );
    let mut under_k2 = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let kind = TICKETS[i];
        let (resumed, code, _) = c.get(b.addr, Some(&under_k1[i][0])).unwrap();
        assert_eq!(
            (resumed, code),
            (true, 200),
            "{kind:?}: a k1 ticket on b after the rotation"
        );
        let _ = c.issued.lock().unwrap().take();
        assert_eq!(c.get(b.addr, None).unwrap().1, 200);
        under_k2.push(c.session());
    }

    // k1 leaves the file: its tickets get a full handshake, k2's still resume.
    publish_secret(&secret, "v3", &key_lines(&[&k3, &k2]));
    for p in [&a, &b] {
        wait_key_reloads(p, "ok", 2.0);
    }
    for (i, c) in clients.iter().enumerate() {
        let kind = TICKETS[i];
        let (resumed, code, _) = c.get(a.addr, Some(&under_k1[i][1])).unwrap();
        assert_eq!((resumed, code), (false, 200), "{kind:?}: k1 is gone");
        let (resumed, code, _) = c.get(a.addr, Some(&under_k2[i])).unwrap();
        assert_eq!(
            (resumed, code),
            (true, 200),
            "{kind:?}: a k2 ticket from b on a"
        );
    }

    // /status tells how many keys and since when, never the keys.
    let text = http_get(a.admin, "/status").unwrap().1;
    for k in [&k1, &k2, &k3] {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert!(!text.contains(&b64[..20]) && !text.contains(&hex::encode(&k[..16])));
    }
    let keys = keys_loaded(&a);
    assert_eq!(keys["keys"], 2, "{keys}");
    assert!(
        keys["loaded_at"].is_string() && keys["age_seconds"].is_u64(),
        "{keys}"
    );
}

#[test]
fn a_broken_key_file_keeps_the_old_keys_and_is_reported() {
    let w = World::new();
    let who = client(&[("O", "ci"), ("CN", "steady")], &w.ca);
    replace(&w.path("ticket.keys"), &key_lines(&[&random_key()]));
    let cfg = ProxyConfig {
        tls_extra: SHARED,
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);
    let c = Resumer::new(&w, &who, Kind::Tls13Ticket);
    assert_eq!(c.get(p.addr, None).unwrap().1, 200);
    let session = c.session();
    // 48 bytes: an AES-128 key, which certgate refuses.
    replace(&w.path("ticket.keys"), &[7u8; 48]);
    wait_key_reloads(&p, "error", 1.0);
    // A failed reload is counted before /status records it.
    let status = wait_for(
        "/status to show the failed reload",
        Duration::from_secs(10),
        || {
            let s = status_json(&p);
            (s["last_reload"]["result"] != serde_json::Value::Null).then_some(s)
        },
    );
    let last = &status["last_reload"];
    assert_eq!(last["result"], "error", "{last}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ticket.keys")
            && error.contains("48-byte")
            && error.contains("openssl rand 80"),
        "names the file, what is wrong and the fix: {error}"
    );
    assert_eq!(status["listeners"][0]["session_ticket_keys"]["keys"], 1);
    let (resumed, code, _) = c.get(p.addr, Some(&session)).unwrap();
    assert_eq!((resumed, code), (true, 200), "the old key still serves");
}

#[test]
fn a_revoked_clients_ticket_gets_a_full_handshake_and_401_on_either_replica() {
    let mut w = World::new();
    let who = client(&[("O", "ci"), ("CN", "soon-revoked")], &w.ca);
    write(&w.path("ticket.keys"), &key_lines(&[&random_key()]));
    // b was rolled out later, with a CRL that already revokes the client; a still has the old
    // one. Both are at trust generation 1: a's "nothing changed since generation 1" must not
    // let a's ticket skip b's check.
    w.write_crl_of("crl-b.pem", &w.ca, &[&who.cert], 30);
    let a = Proxy::start(
        &w,
        &ProxyConfig {
            tls_extra: SHARED,
            ..ProxyConfig::new(upstream())
        },
    );
    let b = Proxy::start(
        &w,
        &ProxyConfig {
            tls_extra: SHARED,
            crl: "[crl-b.pem]",
            ..ProxyConfig::new(upstream())
        },
    );
    let mut later = Vec::new();
    for kind in TICKETS {
        let c = Resumer::new(&w, &who, kind);
        assert_eq!(c.get(a.addr, None).unwrap().1, 200);
        let first = c.session();
        assert_eq!(c.get(a.addr, None).unwrap().1, 200);
        later.push((c.session(), kind));
        let (resumed, code, body) = c.get(b.addr, Some(&first)).unwrap();
        assert_eq!((resumed, code), (false, 401), "{kind:?} on b: {body}");
        assert!(body.contains("certificate revoked"), "{body}");
    }
    assert_eq!(resumptions(&b, "refused"), 2.0);
    assert_eq!(resumptions(&b, "resumed"), 0.0);

    // Now a learns of the revocation too: its own tickets stop resuming there.
    let keys_before = keys_loaded(&a);
    w.revoke(&who.cert);
    wait_crl_reloads(&a, 1.0);
    // A CRL reload leaves the (unchanged) keys as they were, with their age.
    assert_eq!(keys_loaded(&a)["loaded_at"], keys_before["loaded_at"]);
    for (session, kind) in &later {
        let c = Resumer::new(&w, &who, *kind);
        let (resumed, code, body) = c.get(a.addr, Some(session)).unwrap();
        assert_eq!((resumed, code), (false, 401), "{kind:?} on a: {body}");
        assert!(body.contains("certificate revoked"), "{body}");
    }
    assert_eq!(resumptions(&a, "refused"), 2.0);
}

/// Of `n` connections alternating between `a` and `b`, each offering the last session the
/// client got, how many resumed.
fn alternating(c: &Resumer, a: &Proxy, b: &Proxy, n: usize) -> usize {
    let mut last: Option<SslSession> = None;
    let mut resumed = 0;
    for i in 0..n {
        let p = if i % 2 == 0 { a } else { b };
        let (r, code, body) = c.get(p.addr, last.as_ref()).unwrap();
        assert_eq!(code, 200, "{body}");
        resumed += usize::from(r);
        if let Some(fresh) = c.issued.lock().unwrap().take() {
            last = Some(fresh);
        }
    }
    resumed
}

#[test]
fn resumption_rate_across_two_replicas_with_and_without_shared_keys() {
    let w = World::new();
    write(
        &w.path("ticket.keys"),
        &key_lines(&[&random_key(), &random_key()]),
    );
    let who = client(&[("O", "ci"), ("CN", "behind-nlb")], &w.ca);
    let own = ProxyConfig::new(upstream());
    let shared = ProxyConfig {
        tls_extra: SHARED,
        ..ProxyConfig::new(upstream())
    };
    let (a, b) = (Proxy::start(&w, &own), Proxy::start(&w, &own));
    let (sa, sb) = (Proxy::start(&w, &shared), Proxy::start(&w, &shared));
    const N: usize = 100;
    for kind in TICKETS {
        let c = Resumer::new(&w, &who, kind);
        let without = alternating(&c, &a, &b, N);
        let c = Resumer::new(&w, &who, kind);
        let with = alternating(&c, &sa, &sb, N);
        eprintln!("{kind:?}: {N} connections alternating between two replicas: resumed {without} with per-process keys, {with} with shared keys");
        // Only the very first connection needs a full handshake with shared keys; with keys of
        // its own, each replica can decrypt none of the other's tickets.
        assert_eq!((without, with), (0, N - 1), "{kind:?}");
    }
}
