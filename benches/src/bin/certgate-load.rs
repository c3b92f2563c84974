//! End-to-end load with a client certificate: `certgate-load --url https://localhost:8443/x
//! --ca ca.pem --cert client.pem --key client-key.pem --connections 32 --duration 10s`.
//! Modes: keep-alive (each worker reuses its connection), new-conn (a fresh TLS handshake per
//! request), and HTTP/2 (all workers share one connection, one stream each). Prints requests/s
//! and latency percentiles; `--json` for scripts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Keepalive,
    NewConn,
    Http2,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Resolve the URL's host to this address (the certificate names `localhost`).
    #[arg(long)]
    resolve: Option<SocketAddr>,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    duration: Duration,
    #[arg(long, value_enum, default_value_t = Mode::Keepalive)]
    mode: Mode,
    #[arg(long)]
    json: bool,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration {s}")),
    }
}

fn client(args: &Args) -> reqwest::Client {
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&read(&args.ca)).expect("CA PEM"))
        .identity(
            reqwest::Identity::from_pkcs8_pem(&read(&args.cert), &read(&args.key))
                .expect("client identity (PKCS#8 key)"),
        );
    b = match args.mode {
        Mode::Keepalive => b.http1_only(),
        Mode::NewConn => b.http1_only().pool_max_idle_per_host(0),
        Mode::Http2 => b.http2_prior_knowledge(),
    };
    if let Some(addr) = args.resolve {
        let host = reqwest::Url::parse(&args.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        b = b.resolve(&host, addr);
    }
    b.build().expect("client")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let shared = client(&args);
    let end = Instant::now() + args.duration;
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let c = match args.mode {
            Mode::Http2 => shared.clone(),
            _ => client(&args),
        };
        let url = args.url.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                let t = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        if let Ok((lat, e)) = w.await {
            all.extend(lat);
            errors += e;
        }
    }
    all.sort();
    let pct = |p: usize| {
        all.get(all.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    let rps = all.len() as f64 / args.duration.as_secs_f64();
    if args.json {
        println!(
            "{{\"mode\":\"{:?}\",\"connections\":{},\"requests\":{},\"errors\":{},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
            args.mode,
            args.connections,
            all.len(),
            errors,
            rps,
            pct(50).as_secs_f64() * 1e3,
            pct(99).as_secs_f64() * 1e3
        );
    } else {
        println!(
            "{:?}, {} connections, {:?}: {} requests, {} errors, {rps:.0} req/s, p50 {:?}, p99 {:?}",
            args.mode,
            args.connections,
            args.duration,
            all.len(),
            errors,
            pct(50),
            pct(99)
        );
    }
}
