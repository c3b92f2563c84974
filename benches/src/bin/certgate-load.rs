//! End-to-end load with a client certificate, for certgate and the peers it is compared with
//! (`benches/run.sh`). Built on hyper's connection API and OpenSSL directly, so every TLS
//! handshake, resumption and connection is the one the scenario asks for and nothing is pooled
//! behind our back.
//!
//! ```text
//! certgate-load --url https://localhost:8443/bytes/64 --resolve 127.0.0.1:8443 \
//!     --ca ca.pem --cert client.pem --key client-key.pem --mode keepalive --connections 32
//! ```
//!
//! Modes:
//! - `keepalive`: each of `--connections` workers reuses one HTTP/1.1 connection;
//! - `new-conn`: every request on a fresh connection with a full handshake (no resumption);
//! - `resume`: like `new-conn`, but each worker offers the session of its previous connection;
//! - `http2`: one HTTP/2 connection, `--connections` concurrent streams;
//! - `download`: one GET of the URL, body counted (`mb_per_s`);
//! - `upload`: one POST of `--bytes` bytes to the URL (`mb_per_s`);
//! - `idle`: open `--connections` keep-alive connections, one request each, then hold them for
//!   `--duration` (touching `--ready-file` once all are open), to measure memory per connection.
//!
//! Prints requests/s and a latency histogram; `--json` prints one line for scripts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslConnector, SslFiletype, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Keepalive,
    NewConn,
    Resume,
    Http2,
    Download,
    Upload,
    Idle,
}

#[derive(Parser, Debug)]
#[command(about = "End-to-end HTTP(S) load with a client certificate")]
struct Args {
    /// https:// (or plain http://, to measure the upstream directly).
    #[arg(long)]
    url: String,
    /// CA bundle that signed the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) to present.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Connect to this address instead of resolving the URL's host (SNI stays the host).
    #[arg(long)]
    resolve: Option<SocketAddr>,
    /// Workers (connections; streams in http2 mode; connections held in idle mode).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    /// Upload size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Idle mode: created once every connection is open.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// One JSON line instead of text.
    #[arg(long)]
    json: bool,
}

/// Where and how to connect: address, SNI host, TLS settings.
struct Target {
    addr: SocketAddr,
    host: String,
    uri: hyper::Uri,
    tls: Option<SslConnector>,
    /// Slot the new-session callback fills, per SSL (ex data), for `resume` mode.
    session_slot: Index<Ssl, Arc<Mutex<Option<SslSession>>>>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected, handshaken stream and whether its TLS session was resumed.
struct Connected {
    io: Box<dyn Io>,
    resumed: bool,
}

impl Target {
    fn new(args: &Args) -> Result<Target> {
        let uri: hyper::Uri = args.url.parse().context("--url")?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("--url must start with http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("--url has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = match args.resolve {
            Some(a) => a,
            None => (host.as_str(), port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| anyhow!("{host} does not resolve"))?,
        };
        let session_slot = Ssl::new_ex_index::<Arc<Mutex<Option<SslSession>>>>()?;
        let tls = if https {
            let mut b = SslConnector::builder(SslMethod::tls_client())?;
            if let Some(ca) = &args.ca {
                b.set_ca_file(ca)
                    .with_context(|| format!("--ca {}", ca.display()))?;
            }
            if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
                b.set_certificate_chain_file(cert)
                    .with_context(|| format!("--cert {}", cert.display()))?;
                b.set_private_key_file(key, SslFiletype::PEM)
                    .with_context(|| format!("--key {}", key.display()))?;
            }
            b.set_verify(SslVerifyMode::PEER);
            // Classic key exchange only: the Debian peers' OpenSSL 3.0 has no ML-KEM, and a
            // hybrid key share would make certgate's handshakes dearer than theirs.
            b.set_groups_list("X25519:P-256")?;
            let alpn: &[u8] = if args.mode == Mode::Http2 {
                b"\x02h2"
            } else {
                b"\x08http/1.1"
            };
            b.set_alpn_protos(alpn)?;
            // Sessions go to the connection's own slot (TLS 1.3 tickets arrive after the
            // handshake), never to a shared cache: only `resume` mode offers one.
            b.set_session_cache_mode(
                SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL,
            );
            b.set_new_session_callback(move |ssl, session| {
                if let Some(slot) = ssl.ex_data(session_slot) {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
                }
            });
            Some(b.build())
        } else {
            None
        };
        Ok(Target {
            addr,
            host,
            uri,
            tls,
            session_slot,
        })
    }

    fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    fn authority(&self) -> &str {
        self.uri
            .authority()
            .map_or(self.host.as_str(), |a| a.as_str())
    }

    /// TCP connect plus TLS handshake, offering `session` if given; the new session the server
    /// issues lands in `slot`.
    async fn connect(
        &self,
        session: Option<&SslSession>,
        slot: &Arc<Mutex<Option<SslSession>>>,
    ) -> Result<Connected> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Connected {
                io: Box::new(tcp),
                resumed: false,
            });
        };
        let mut ssl = tls.configure()?.into_ssl(&self.host)?;
        ssl.set_ex_data(self.session_slot, slot.clone());
        if let Some(s) = session {
            // SAFETY: the session comes from this same connector's context.
            unsafe { ssl.set_session(s)? };
        }
        let mut stream = SslStream::new(ssl, tcp)?;
        Pin::new(&mut stream).connect().await?;
        let resumed = stream.ssl().session_reused();
        Ok(Connected {
            io: Box::new(stream),
            resumed,
        })
    }
}

type Http1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http1(io: Box<dyn Io>) -> Result<Http1> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// An HTTP/1.1 GET in origin form (`GET /path HTTP/1.1` plus `Host`).
fn get(target: &Target) -> Result<hyper::Request<Empty<Bytes>>> {
    Ok(hyper::Request::get(target.path())
        .header(hyper::header::HOST, target.authority())
        .body(Empty::new())?)
}

/// An HTTP/2 GET: the absolute URI gives `:scheme`, `:authority` and `:path`.
fn get_h2(target: &Target) -> Result<hyper::Request<Empty<Bytes>>> {
    Ok(hyper::Request::get(target.uri.clone()).body(Empty::new())?)
}

/// Sends one GET and drains the body; returns the body size.
async fn fetch(sender: &mut Http1, target: &Target) -> Result<u64> {
    sender.ready().await?;
    let resp = sender.send_request(get(target)?).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
        }
    }
    if !status.is_success() {
        bail!("answered {status}");
    }
    Ok(n)
}

/// What a worker measured.
struct Tally {
    latency: Histogram<u64>,
    errors: u64,
    resumed: u64,
    bytes: u64,
    /// The first error seen, to say why a run failed.
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // Microseconds, 1 µs to 60 s, 3 significant figures.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds"),
            errors: 0,
            resumed: 0,
            bytes: 0,
            first_error: None,
        }
    }

    fn record(&mut self, t: Instant) {
        let us = t.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        let _ = self.latency.record(us);
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
        self.resumed += other.resumed;
        self.bytes += other.bytes;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// Keep-alive: one connection per worker, reopened only after an error.
async fn keepalive(target: Arc<Target>, end: Instant) -> Tally {
    let mut tally = Tally::new();
    let slot = Arc::default();
    let mut sender: Option<Http1> = None;
    while Instant::now() < end {
        let t = Instant::now();
        if sender.is_none() {
            match target.connect(None, &slot).await {
                Ok(c) => match http1(c.io).await {
                    Ok(s) => sender = Some(s),
                    Err(e) => tally.error(e),
                },
                Err(e) => tally.error(e),
            }
        }
        let Some(s) = sender.as_mut() else {
            continue;
        };
        match fetch(s, &target).await {
            Ok(n) => {
                tally.record(t);
                tally.bytes += n;
            }
            Err(e) => {
                tally.error(e);
                sender = None;
            }
        }
    }
    tally
}

/// A connection (and handshake) per request; `resume` offers the previous session.
async fn new_conn(target: Arc<Target>, end: Instant, resume: bool) -> Tally {
    let mut tally = Tally::new();
    let slot: Arc<Mutex<Option<SslSession>>> = Arc::default();
    while Instant::now() < end {
        let t = Instant::now();
        // The newest session the server issued (a TLS 1.3 ticket per connection; a TLS 1.2
        // session is reused until the server replaces it).
        let offer = if resume {
            slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            None
        };
        let result = async {
            let c = target.connect(offer.as_ref(), &slot).await?;
            let resumed = c.resumed;
            let mut s = http1(c.io).await?;
            let n = fetch(&mut s, &target).await?;
            Ok::<_, anyhow::Error>((resumed, n))
        }
        .await;
        match result {
            Ok((resumed, n)) => {
                tally.record(t);
                tally.bytes += n;
                tally.resumed += u64::from(resumed);
            }
            Err(e) => tally.error(e),
        }
        if !resume {
            slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }
    tally
}

/// HTTP/2: `streams` workers share one connection.
async fn http2(target: Arc<Target>, end: Instant, streams: usize) -> Result<Tally> {
    let c = target.connect(None, &Arc::default()).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(c.io)).await?;
    tokio::spawn(conn);
    let mut workers = Vec::new();
    for _ in 0..streams {
        let mut sender = sender.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < end {
                let t = Instant::now();
                let result = async {
                    sender.ready().await?;
                    let resp = sender.send_request(get_h2(&target)?).await?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    if !status.is_success() {
                        bail!("answered {status}");
                    }
                    Ok(body.len() as u64)
                }
                .await;
                match result {
                    Ok(n) => {
                        tally.record(t);
                        tally.bytes += n;
                    }
                    Err(e) => tally.error(e),
                }
            }
            tally
        }));
    }
    let mut all = Tally::new();
    for w in workers {
        all.merge(w.await?);
    }
    Ok(all)
}

/// One large GET; the body is counted, not kept.
async fn download(target: Arc<Target>) -> Result<Tally> {
    let mut tally = Tally::new();
    let t = Instant::now();
    let c = target.connect(None, &Arc::default()).await?;
    let mut s = http1(c.io).await?;
    tally.bytes = fetch(&mut s, &target).await?;
    tally.record(t);
    Ok(tally)
}

/// One large POST of `size` bytes, streamed in 64 KiB chunks of one shared buffer.
async fn upload(target: Arc<Target>, size: u64) -> Result<Tally> {
    const CHUNK: usize = 64 * 1024;
    let mut tally = Tally::new();
    let t = Instant::now();
    let c = target.connect(None, &Arc::default()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(c.io)).await?;
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = (0..size.div_ceil(CHUNK as u64)).map(move |i| {
        let left = size - i * CHUNK as u64;
        Ok::<_, std::convert::Infallible>(Frame::data(
            chunk.slice(..left.min(CHUNK as u64) as usize),
        ))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = hyper::Request::post(target.path())
        .header(hyper::header::HOST, target.authority())
        .header(hyper::header::CONTENT_LENGTH, size)
        .body(body)?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if !status.is_success() {
        bail!("upload answered {status}");
    }
    tally.bytes = size;
    tally.record(t);
    Ok(tally)
}

/// Opens `n` keep-alive connections (one request each) and holds them until `hold` is over.
async fn idle(target: Arc<Target>, n: usize, hold: Duration, ready: Option<PathBuf>) -> Tally {
    let mut tally = Tally::new();
    let mut held = Vec::with_capacity(n);
    // Open in batches so the server's accept queue is never the thing measured.
    for batch in (0..n).collect::<Vec<_>>().chunks(50) {
        let opened = futures_util::future::join_all(batch.iter().map(|_| {
            let target = target.clone();
            async move {
                let t = Instant::now();
                let c = target.connect(None, &Arc::default()).await?;
                let mut s = http1(c.io).await?;
                fetch(&mut s, &target).await?;
                Ok::<_, anyhow::Error>((s, t))
            }
        }))
        .await;
        for r in opened {
            match r {
                Ok((s, t)) => {
                    tally.record(t);
                    held.push(s);
                }
                Err(e) => tally.error(e),
            }
        }
    }
    if let Some(path) = ready {
        let _ = std::fs::write(path, format!("{}\n", held.len()));
    }
    tokio::time::sleep(hold).await;
    drop(held);
    tally
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let target = Arc::new(Target::new(&args)?);
    let start = Instant::now();
    let end = start + args.duration;
    let tally = match args.mode {
        Mode::Keepalive | Mode::NewConn | Mode::Resume => {
            let workers: Vec<_> = (0..args.connections)
                .map(|_| {
                    let target = target.clone();
                    match args.mode {
                        Mode::Keepalive => tokio::spawn(keepalive(target, end)),
                        m => tokio::spawn(new_conn(target, end, m == Mode::Resume)),
                    }
                })
                .collect();
            let mut all = Tally::new();
            for w in workers {
                all.merge(w.await?);
            }
            all
        }
        Mode::Http2 => http2(target, end, args.connections).await?,
        Mode::Download => download(target).await?,
        Mode::Upload => upload(target, args.bytes).await?,
        Mode::Idle => {
            idle(
                target,
                args.connections,
                args.duration,
                args.ready_file.clone(),
            )
            .await
        }
    };
    let seconds = match args.mode {
        Mode::Download | Mode::Upload => start.elapsed().as_secs_f64(),
        _ => args.duration.as_secs_f64(),
    };
    let h = &tally.latency;
    let requests = h.len();
    let rps = requests as f64 / seconds;
    let mb_per_s = tally.bytes as f64 / 1e6 / seconds;
    let mode = args
        .mode
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    let mode = mode.unwrap_or_default();
    if args.json {
        println!(
            "{{\"mode\":\"{mode}\",\"connections\":{},\"requests\":{requests},\"errors\":{},\"seconds\":{seconds:.3},\"rps\":{rps:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"bytes\":{},\"mb_per_s\":{mb_per_s:.1},\"resumed\":{}}}",
            args.connections,
            tally.errors,
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            h.max() as f64 / 1e3,
            tally.bytes,
            tally.resumed,
        );
    } else {
        println!(
            "{mode}, {} connections, {seconds:.1} s: {requests} requests, {} errors, {rps:.0} req/s, {mb_per_s:.1} MB/s, {} resumed",
            args.connections, tally.errors, tally.resumed
        );
        println!("latency (ms):");
        for q in [0.5, 0.75, 0.9, 0.99, 0.999] {
            println!("  p{:<5} {:>9.3}", q * 100.0, ms(h, q));
        }
        println!("  max    {:>9.3}", h.max() as f64 / 1e3);
    }
    if let Some(e) = &tally.first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}
