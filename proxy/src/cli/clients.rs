//! `certgate clients`: the admin endpoint's `/clients` as a table, for an operator at a shell
//! (who is connecting, and whose certificate expires soon).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::ConfigArg;
use crate::config::Config;

#[derive(Args, Debug)]
pub struct ClientsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only certificates whose notAfter is within this duration (e.g. 14d); expired ones too.
    #[arg(long, value_name = "DURATION")]
    pub expiring_within: Option<String>,
    /// Only certificates of this group.
    #[arg(long)]
    pub group: Option<String>,
}

/// How long the admin endpoint gets to answer: it is local and serves from memory.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn clients(args: &ClientsArgs) -> ExitCode {
    match fetch_and_format(args) {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn fetch_and_format(args: &ClientsArgs) -> anyhow::Result<String> {
    let path = args.config.path();
    let config = Config::load(&path)?;
    let Some(admin) = config.admin else {
        bail!(
            "{}: admin: the admin endpoint is disabled, and `clients` reads it; add `admin: {{listen: 127.0.0.1:9901}}` and restart certgate",
            config.path.display()
        );
    };
    let mut query = Vec::new();
    if let Some(d) = &args.expiring_within {
        humantime::parse_duration(d.trim()).map_err(|e| {
            anyhow!("--expiring-within: `{d}` is not a duration ({e}); write e.g. 14d or 36h")
        })?;
        query.push(format!("expiring_within={}", enc(d.trim())));
    }
    if let Some(g) = &args.group {
        query.push(format!("group={}", enc(g)));
    }
    let target = if query.is_empty() {
        "/clients".to_string()
    } else {
        format!("/clients?{}", query.join("&"))
    };
    let addr = reachable(admin);
    let (status, body) = get(addr, &target).map_err(|e| {
        anyhow!(
            "admin endpoint http://{addr} (admin.listen in {}) is unreachable: {e}; is certgate running with this config?",
            config.path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow!("http://{addr}{target} answered {status} with no JSON ({e})"))?;
    if status != 200 {
        let reason = json["reason"].as_str().unwrap_or("no reason given");
        bail!("http://{addr}{target} answered {status}: {reason}");
    }
    Ok(table(&json))
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// An admin endpoint bound to every address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// One HTTP/1.0 GET: the admin endpoint is plain HTTP and closes after answering, so the
/// body is what follows the header up to the end of the stream.
fn get(addr: SocketAddr, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

fn table(json: &serde_json::Value) -> String {
    let empty = Vec::new();
    let clients = json["clients"].as_array().unwrap_or(&empty);
    if clients.is_empty() {
        return "no client certificates seen (matching the filter)\n".into();
    }
    let mut rows = vec![[
        "USER".to_string(),
        "GROUPS".into(),
        "NOT AFTER".into(),
        "DAYS LEFT".into(),
        "LAST SEEN".into(),
        "ISSUER".into(),
    ]];
    for c in clients {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
        let groups: Vec<&str> = c["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        rows.push([
            s("user"),
            if groups.is_empty() {
                "-".into()
            } else {
                groups.join(",")
            },
            s("not_after"),
            c["days_left"]
                .as_i64()
                .map_or("-".into(), |d| d.to_string()),
            s("last_seen"),
            s("issuer"),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
