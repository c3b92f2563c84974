//! Test harness: real certificates made here, the real `certgate` binary on 127.0.0.1, the echo
//! upstream, and HTTP clients that present a client identity. No mocks.
#![allow(dead_code)]
// Each test crate includes this module and uses a different part of it: `pub` here means "for
// the tests", which `unreachable_pub` (a rule for the library) cannot see.
#![allow(unreachable_pub)]

pub mod crl_server;
pub mod h1_upstream;
pub mod ocsp_responder;
pub mod recording_upstream;
pub mod tunnel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certgate::pki::{self, CertSpec, Issued};
use openssl::x509::X509;

pub const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// A subject like `[("O","ci"),("CN","jenkins")]`, everything else at sane defaults.
pub fn spec(subject: &[(&str, &str)]) -> CertSpec {
    CertSpec::with_subject(subject)
}

pub fn ca(cn: &str) -> Issued {
    let mut s = spec(&[("O", "certgate tests"), ("CN", cn)]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    pki::self_signed_ca(&s).expect("CA")
}

pub fn intermediate(cn: &str, root: &Issued) -> Issued {
    let mut s = spec(&[("O", "certgate tests"), ("CN", cn)]);
    s.is_ca = true;
    s.client_auth = false;
    s.eku = false;
    pki::issue(&s, root).expect("intermediate")
}

pub fn client(subject: &[(&str, &str)], ca: &Issued) -> Issued {
    pki::issue(&spec(subject), ca).expect("client cert")
}

pub fn server(ca: &Issued) -> Issued {
    let mut s = spec(&[("CN", "localhost")]);
    s.client_auth = false;
    s.server_auth = true;
    s.dns_names = vec!["localhost".into()];
    s.ip_addrs = vec!["127.0.0.1".parse().unwrap()];
    pki::issue(&s, ca).expect("server cert")
}

pub fn cert_pem(i: &Issued) -> Vec<u8> {
    i.cert.to_pem().unwrap()
}

pub fn key_pem(i: &Issued) -> Vec<u8> {
    i.key.private_key_to_pem_pkcs8().unwrap()
}

/// The leaf's PEM followed by its intermediates', as a client sends its chain.
pub fn chain_pem(leaf: &Issued, chain: &[&Issued]) -> Vec<u8> {
    let mut pem = cert_pem(leaf);
    for c in chain {
        pem.extend(cert_pem(c));
    }
    pem
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A test's world: a temp dir with ca.pem, server.pem, server-key.pem, crl.pem (empty).
pub struct World {
    pub dir: tempfile::TempDir,
    pub ca: Issued,
    pub server: Issued,
    pub revoked: Vec<X509>,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("Test Root CA");
        let server = server(&ca);
        let w = World {
            dir,
            ca,
            server,
            revoked: vec![],
        };
        write(&w.path("ca.pem"), &cert_pem(&w.ca));
        write(&w.path("server.pem"), &cert_pem(&w.server));
        write(&w.path("server-key.pem"), &key_pem(&w.server));
        w.write_crl(30);
        w
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rewrites crl.pem (atomically) with every revoked cert, valid for `next_days` days.
    pub fn write_crl(&self, next_days: i64) {
        let revoked: Vec<&X509> = self.revoked.iter().collect();
        self.write_crl_of("crl.pem", &self.ca, &revoked, next_days);
    }

    /// Writes `name` (atomically) with a CRL of `issuer` revoking `revoked`, issued a day ago
    /// and valid for `next_days` days (negative: already past its nextUpdate).
    pub fn write_crl_of(&self, name: &str, issuer: &Issued, revoked: &[&X509], next_days: i64) {
        let this_days = if next_days < 0 { next_days - 2 } else { -1 };
        static NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let number = NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let crl = pki::make_crl(issuer, revoked, this_days, next_days, number).unwrap();
        let path = self.path(name);
        let tmp = path.with_extension("tmp-crl");
        std::fs::write(&tmp, crl.to_pem().unwrap()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    pub fn revoke(&mut self, cert: &X509) {
        self.revoked.push(cert.clone());
        self.write_crl(30);
    }

    /// Writes a client's cert and key as NAME.pem and NAME-key.pem.
    pub fn save(&self, name: &str, who: &Issued) {
        self.save_chain(name, who, &[]);
    }

    /// Like [`World::save`], with the intermediates `chain` after the leaf in NAME.pem.
    pub fn save_chain(&self, name: &str, who: &Issued, chain: &[&Issued]) {
        write(&self.path(&format!("{name}.pem")), &chain_pem(who, chain));
        write(&self.path(&format!("{name}-key.pem")), &key_pem(who));
    }

    /// Saves one client for each way a certificate is refused, plus one that is let in:
    /// `stranger` (another CA), `revoked` (on crl.pem), `expired`, and `good`.
    pub fn save_refused_clients(&mut self) {
        let stranger_ca = ca("Stranger CA");
        self.save("stranger", &client(&[("CN", "stranger")], &stranger_ca));
        let revoked = client(&[("CN", "revoked")], &self.ca);
        self.save("revoked", &revoked);
        self.revoke(&revoked.cert);
        let mut s = spec(&[("CN", "expired")]);
        s.not_before_days = -10;
        s.not_after_days = -1;
        self.save("expired", &pki::issue(&s, &self.ca).unwrap());
        self.save("good", &client(&[("O", "ci"), ("CN", "good")], &self.ca));
    }

    /// (NAME.pem, NAME-key.pem) as saved by [`World::save`].
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}-key.pem")),
        )
    }
}

/// A free port on 127.0.0.1, never the same one twice in this test process: tests run in
/// parallel, and the kernel may hand a just-released port to the next caller.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// The echo upstream on a fresh port.
pub fn upstream() -> SocketAddr {
    certgate::demo::echo::spawn("127.0.0.1:0").unwrap()
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

thread_local! {
    static READY_PATH: std::cell::Cell<&'static str> = const { std::cell::Cell::new("/readyz") };
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A running `certgate run`.
pub struct Proxy {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- certgate log ({}):\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Minimal listener config; `extra` is appended to the listener (indented 4 spaces), `tls` to the
/// top-level tls block (indented 2).
pub struct ProxyConfig<'a> {
    pub upstream: SocketAddr,
    pub client_auth: &'a str,
    /// The `tls.crl` value.
    pub crl: &'a str,
    pub tls_extra: &'a str,
    pub listener_extra: &'a str,
    pub top_extra: &'a str,
}

impl<'a> ProxyConfig<'a> {
    pub fn new(upstream: SocketAddr) -> Self {
        ProxyConfig {
            upstream,
            client_auth: "optional",
            crl: "[crl.pem]",
            tls_extra: "",
            listener_extra: "",
            top_extra: "",
        }
    }
}

impl Proxy {
    pub fn start(world: &World, cfg: &ProxyConfig<'_>) -> Proxy {
        // A port free_addr() saw free can be taken (another test binding port 0) before
        // certgate binds it: then certgate exits saying so, and it starts again on new ports.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_start(world, cfg) {
                Ok(p) => return p,
                Err(log) if attempts < 3 && log.contains("in use") => {
                    eprintln!("certgate could not bind, starting again on other ports:\n{log}");
                }
                Err(log) => panic!("certgate exited:\n{log}"),
            }
        }
    }

    fn try_start(world: &World, cfg: &ProxyConfig<'_>) -> Result<Proxy, String> {
        let addr = free_addr();
        let admin = free_addr();
        let text = format!(
            "admin:\n  listen: {admin}\nshutdown_grace: 5s\n{top}tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: {crl}\n  client_auth: {auth}\n{tls}listeners:\n  - name: test\n    listen: {addr}\n    upstream: http://{up}\n{extra}",
            top = cfg.top_extra,
            auth = cfg.client_auth,
            crl = cfg.crl,
            tls = cfg.tls_extra,
            up = cfg.upstream,
            extra = cfg.listener_extra,
        );
        Self::try_start_with(world.dir.path(), &text, addr, admin)
    }

    /// Like [`Proxy::start`], for configs under which `/readyz` stays 503 (an expired CRL):
    /// waits for `/healthz` instead.
    pub fn start_unready(world: &World, cfg: &ProxyConfig<'_>) -> Proxy {
        READY_PATH.with(|p| p.set("/healthz"));
        let p = Self::start(world, cfg);
        READY_PATH.with(|p| p.set("/readyz"));
        p
    }

    pub fn start_with(dir: &Path, config_text: &str, addr: SocketAddr, admin: SocketAddr) -> Proxy {
        Self::try_start_with(dir, config_text, addr, admin)
            .unwrap_or_else(|log| panic!("certgate exited:\n{log}"))
    }

    /// Starts certgate and waits until it is ready; `Err` with its log when it exits first.
    fn try_start_with(
        dir: &Path,
        config_text: &str,
        addr: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Proxy, String> {
        let config = dir.join("certgate.yaml");
        std::fs::write(&config, config_text).unwrap();
        let log = dir.join(format!("certgate-{}.log", addr.port()));
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("CERTGATE_TEST_LOG")
                    .unwrap_or_else(|_| "info,pingora_core::services::listening=off".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut p = Proxy {
            child: Some(child),
            addr,
            admin,
            log,
            config,
        };
        p.wait_ready()?;
        Ok(p)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let admin = self.admin;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("({status})\n{}", log_of(&self.log)));
                }
                // Another socket took the port between free_addr() and certgate's bind:
                // Pingora retries it for 30 s before certgate gives up; start again now.
                let log = log_of(&self.log);
                if log.contains("is in use, will try again") {
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(log);
                }
            }
            let path = READY_PATH.with(|p| p.get());
            // Ready, and it is ours: /status names our listener address (not another test's
            // certgate that happens to answer on this admin port).
            let ours = || {
                http_get(admin, "/status")
                    .is_some_and(|(_, body)| body.contains(&self.addr.to_string()))
            };
            if http_get(admin, path)
                .map(|(code, _)| code == 200)
                .unwrap_or(false)
                && ours()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "certgate not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        log_of(&self.log)
    }

    /// The first access log line containing `needle`, waited for (15 s at most).
    pub fn access_line(&self, needle: &str) -> String {
        wait_for("the access log line", Duration::from_secs(15), || {
            self.log_text()
                .lines()
                .find(|l| l.contains("certgate::access") && l.contains(needle))
                .map(str::to_string)
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

/// A plain HTTP/1.0 GET over a raw socket (admin endpoint): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// An HTTPS client trusting the world's CA, presenting `who` if given.
pub fn https(world: &World, proxy: &Proxy, who: Option<&Issued>) -> reqwest::Client {
    https_builder(world, proxy, who).build().unwrap()
}

pub fn https_builder(world: &World, proxy: &Proxy, who: Option<&Issued>) -> reqwest::ClientBuilder {
    https_chain_builder(world, proxy, who.map(|w| (w, &[][..])))
}

/// An HTTPS client presenting `leaf` and its intermediates `chain`.
pub fn https_chain(
    world: &World,
    proxy: &Proxy,
    leaf: &Issued,
    chain: &[&Issued],
) -> reqwest::Client {
    https_chain_builder(world, proxy, Some((leaf, chain)))
        .build()
        .unwrap()
}

pub fn https_chain_builder(
    world: &World,
    proxy: &Proxy,
    who: Option<(&Issued, &[&Issued])>,
) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert_pem(&world.ca)).unwrap())
        .resolve("localhost", proxy.addr)
        .timeout(Duration::from_secs(60));
    // CERTGATE_TEST_HTTP1=1 runs the suite's reqwest clients over HTTP/1.1 instead of the
    // HTTP/2 that ALPN picks, so its requests take certgate's own HTTP/1.1 forwarding.
    if std::env::var_os("CERTGATE_TEST_HTTP1").is_some() {
        b = b.http1_only();
    }
    if let Some((leaf, chain)) = who {
        let pem = chain_pem(leaf, chain);
        b = b.identity(reqwest::Identity::from_pkcs8_pem(&pem, &key_pem(leaf)).unwrap());
    }
    b
}

/// GET and parse the echo upstream's JSON (or our error JSON): (status, body as JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let r = client.get(url).send().await.unwrap();
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The values the upstream received for header `name`.
pub fn seen(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `openssl x509 -noout -subject -nameopt RFC2253` of a certificate, without `subject=`.
pub fn openssl_subject(world: &World, cert: &X509) -> String {
    let p = world.path("subject-probe.pem");
    std::fs::write(&p, cert.to_pem().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("subject=")
        .to_string()
}

/// `openssl s_client` handshake as `who`: (exit ok, combined output).
pub fn s_client(
    world: &World,
    proxy: &Proxy,
    who: Option<(&Path, &Path)>,
    extra: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-ign_eof",
        "-connect",
        &proxy.addr.to_string(),
        "-servername",
        "localhost",
        "-CAfile",
    ])
    .arg(world.path("ca.pem"))
    .args(extra);
    if let Some((cert, key)) = who {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let out = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut stdin) = c.stdin.take() {
                let _ = stdin.write_all(
                    b"GET /s_client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                );
            }
            c.wait_with_output()
        })
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `curl` against the proxy as `who` (cert file with its chain, key file): (exit code, stderr).
pub fn curl(
    world: &World,
    proxy: &Proxy,
    who: Option<(&Path, &Path)>,
    extra: &[&str],
) -> (i32, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "--max-time", "20", "--cacert"])
        .arg(world.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{}:127.0.0.1", proxy.addr.port()))
        .args(extra);
    if let Some((cert, key)) = who {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg(proxy.url("/curl")).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends SIGHUP to the proxy.
pub fn sighup(proxy: &Proxy) {
    let st = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -HUP");
}

/// `/status` as JSON.
pub fn status_json(proxy: &Proxy) -> serde_json::Value {
    serde_json::from_str(&http_get(proxy.admin, "/status").unwrap().1).unwrap()
}

/// The value of one sample line in Prometheus text, matched by a prefix like
/// `certgate_requests_total{code="200",decision="allow",listener="test"}`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TLS client context trusting the world's CA, presenting `who` if given, offering `alpn`
/// (wire format, e.g. `b"\x08http/1.1"`). For tests that need raw control of the bytes sent.
pub fn tls_connector(
    world: &World,
    who: Option<&Issued>,
    alpn: &[u8],
) -> openssl::ssl::SslConnector {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
    b.set_ca_file(world.path("ca.pem")).unwrap();
    if let Some(who) = who {
        b.set_certificate(&who.cert).unwrap();
        b.set_private_key(&who.key).unwrap();
    }
    if !alpn.is_empty() {
        b.set_alpn_protos(alpn).unwrap();
    }
    b.build()
}

/// An HTTP/2 connection to the proxy as `who`, on the h2 crate's client (for the control of
/// streams and frames that reqwest hides); the connection is driven by a task of its own.
pub async fn h2_connect(
    world: &World,
    proxy: &Proxy,
    who: Option<&Issued>,
) -> h2::client::SendRequest<bytes::Bytes> {
    h2_connect_with(world, proxy, who, h2::client::Builder::new()).await
}

/// An HTTP/2 connection as `who` whose client never grants the server any window: each of
/// its streams holds its upstream request until `timeouts.read` ends it.
pub async fn h2_zero_window(
    world: &World,
    proxy: &Proxy,
    who: &Issued,
) -> h2::client::SendRequest<bytes::Bytes> {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    h2_connect_with(world, proxy, Some(who), builder).await
}

/// [`h2_connect`] with the client's HTTP/2 settings in `builder`.
pub async fn h2_connect_with(
    world: &World,
    proxy: &Proxy,
    who: Option<&Issued>,
    builder: h2::client::Builder,
) -> h2::client::SendRequest<bytes::Bytes> {
    let ssl = tls_connector(world, who, b"\x02h2")
        .configure()
        .unwrap()
        .into_ssl("localhost")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    let (send, conn) = builder.handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// What a [`RawUpstream`] answers.
#[derive(Clone, Copy, Debug)]
pub enum RawReply {
    /// `200` with a 2-byte body, then close.
    Ok,
    /// `200` with this many body bytes, then close (a client that does not read holds it).
    Big(usize),
}

/// A plain-HTTP upstream on raw sockets that records every request head exactly as it arrived
/// (request line byte for byte) and counts the connections open at the same time.
pub struct RawUpstream {
    pub addr: SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    active: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_active: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RawUpstream {
    pub fn start(reply: RawReply) -> RawUpstream {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = RawUpstream {
            addr: listener.local_addr().unwrap(),
            heads: Arc::new(Mutex::new(Vec::new())),
            active: Arc::new(AtomicUsize::new(0)),
            max_active: Arc::new(AtomicUsize::new(0)),
        };
        let (heads, active, max_active) =
            (up.heads.clone(), up.active.clone(), up.max_active.clone());
        std::thread::spawn(move || {
            // The connections counted at the latest accept. A serving thread notices the
            // proxy's close only when it is next scheduled, so "at most" is counted from what
            // the kernel knows at each accept: connections whose peer has not closed.
            let mut open: Vec<std::net::TcpStream> = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (heads, active, max_active) =
                    (heads.clone(), active.clone(), max_active.clone());
                active.fetch_add(1, Ordering::SeqCst);
                open.retain(|c| !peer_closed(c));
                if let Ok(c) = conn.try_clone() {
                    open.push(c);
                }
                max_active.fetch_max(open.len(), Ordering::SeqCst);
                std::thread::spawn(move || {
                    raw_upstream_serve(&mut conn, reply, &heads);
                    // The accept loop's clone keeps the socket open: close it for the proxy.
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    /// Every request head received so far, request line first.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The request-target of every request received so far.
    pub fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .filter_map(|h| h.split(' ').nth(1).map(str::to_string))
            .collect()
    }

    /// Connections open now, and the most ever open at once (as the kernel knew it at each
    /// accept: a connection the proxy had closed no longer counts).
    pub fn active(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (
            self.active.load(Ordering::SeqCst),
            self.max_active.load(Ordering::SeqCst),
        )
    }
}

/// Whether the peer of `conn` has closed it (FIN or RST received), without reading from it or
/// waiting.
fn peer_closed(conn: &std::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: `conn` owns a valid socket for the duration of the call, and `byte` is a live
    // one-byte buffer; MSG_PEEK leaves any data in place and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Reads from `conn` into `buf` until `buf` holds a whole request head (up to and including the
/// empty line); returns the head's length, or `None` if the connection ended or failed first.
pub fn read_head(conn: &mut impl std::io::Read, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn raw_upstream_serve(
    conn: &mut std::net::TcpStream,
    reply: RawReply,
    heads: &std::sync::Mutex<Vec<String>>,
) {
    use std::io::{Read, Write};
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let Some(end) = read_head(conn, &mut buf) else {
        return;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let lower = head.to_ascii_lowercase();
    heads.lock().unwrap_or_else(|p| p.into_inner()).push(head);
    // Read the body (Content-Length or chunked) so the proxy never sees a reset mid-request.
    let mut body = buf[end..].to_vec();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    while (length.is_some_and(|n| body.len() < n))
        || (chunked && !body.windows(5).any(|w| w == b"0\r\n\r\n"))
    {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let size = match reply {
        RawReply::Ok => 2,
        RawReply::Big(n) => n,
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
    );
    let block = vec![b'x'; 16384];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len());
        if conn.write_all(&block[..n]).is_err() {
            return;
        }
        left -= n;
    }
    let _ = conn.flush();
    // Wait for the proxy to close, so `active` counts the connection for as long as it is held.
    let _ = conn.read(&mut chunk);
}

/// One request over a fresh HTTP/1.1 TLS connection as `who`, with the raw bytes given; the
/// whole response as text (until the proxy closes or 10 s pass).
pub fn raw_https(world: &World, proxy: &Proxy, who: Option<&Issued>, bytes: &[u8]) -> String {
    use std::io::Write;
    let tcp = std::net::TcpStream::connect(proxy.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = tls_connector(world, who, b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap();
    let _ = s.write_all(bytes);
    read_all(&mut s)
}

/// One HTTP/1.1 response (head and Content-Length body) from `s`, as text.
pub fn read_response(s: &mut impl std::io::Read) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return String::from_utf8_lossy(&out).into_owned();
            }
        }
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&out).into_owned();
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Everything `s` yields until it ends or fails, as text.
pub fn read_all(s: &mut impl std::io::Read) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON `reason` of an error response in `raw` HTTP text.
pub fn raw_reason(raw: &str) -> String {
    raw.split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The certgate process's resident memory in KiB (Linux `VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The certgate process's peak resident memory in KiB (Linux `VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
