//! The configuration file: YAML text → environment interpolation → raw serde model → a
//! validated [`Config`] in which every path is absolute, every duration parsed and every
//! listener carries its complete TLS settings (defaults merged with its own overrides).
//!
//! Errors name the file, the YAML line where known, the key and the fix, because the operator
//! reading them is usually in the middle of a deployment.

pub(crate) mod env;
mod headers;
mod raw;
pub(crate) mod revocation;
mod root_token;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub(crate) use headers::same_name;
pub use headers::{hardening_entry, is_passed, passable_header, Dialect, HARDENING_STRIPPED};
use raw::RawConfig;
pub use revocation::{CrlFetchConfig, HttpUrl, OcspConfig, OcspMode, UrlError};
pub use root_token::RootToken;
use validate::{absolute, yaml_message, Validator};
pub use validate::{parse_cidr, NotACidr};

/// What a config error says: where, which key, what is wrong and how to fix it (the problem
/// text ends with the fix).
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    /// The key at fault, e.g. `listeners[0].upstream`; none when it is the whole file.
    pub key: Option<String>,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    pub problem: String,
}

impl ConfigError {
    fn new(file: &Path, problem: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            key: None,
            line: None,
            problem: problem.into(),
        }
    }

    fn at(file: &Path, key: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            key: Some(key.to_string()),
            ..ConfigError::new(file, problem)
        }
    }
}

/// What the operator can do when a configured address (a listener's, the admin endpoint's)
/// cannot be bound, where there is one thing to do.
pub fn bind_fix(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; another process listens there: stop it or choose another port"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root or CAP_NET_BIND_SERVICE: grant it or choose a port above 1023"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; no interface of this host has that address: use one of its addresses, or 0.0.0.0 or [::] for all"
        }
        _ => "",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Optional,
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlExpired {
    Reject,
    Allow,
}

/// `tls.crl_check`: which certificates of a verified client chain need a revocation answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlCheck {
    /// Every certificate below the trust anchor (as NGINX, HAProxy and Envoy do).
    Chain,
    /// Only the leaf (Envoy's `only_verify_leaf_cert_crl`).
    Leaf,
    /// Whatever has a CRL is checked; an issuer without one is reported, not refused.
    Available,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Alpn {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

/// What a `;` inside a path segment means (listener key `path_params`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathParams {
    /// Refused with 400: Java servlet containers (Tomcat, Jetty, Spring) strip `;params`
    /// before routing, so `/allowed/..;/admin` reaches `/admin` there.
    #[default]
    Reject,
    /// Kept as ordinary characters, for upstreams that use them (matrix parameters).
    Keep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// TLS settings of one listener, defaults already merged in.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub crl_expired: CrlExpired,
    /// `None` when no revocation source is configured: then nothing is checked (and `check`
    /// says so). Otherwise `chain` unless the config says else.
    pub crl_check: Option<CrlCheck>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    pub alpn: Vec<Alpn>,
    /// Key exchange groups in preference order, OpenSSL's names (`tls.groups`), each known to
    /// the OpenSSL certgate runs on.
    pub groups: Vec<String>,
    /// TLS session resumption (tickets and a session-ID cache), each resumption re-checked
    /// against the current CA bundle and CRLs; `None` when `session_resumption: false`.
    pub session_lifetime: Option<Duration>,
    /// `tls.session_ticket_keys`: a ticket key file shared by the replicas of a fleet, so a
    /// session resumes on whichever replica the next connection lands on.
    pub session_ticket_keys: Option<PathBuf>,
    /// CRLs fetched over HTTP(S); `None` when `crl_fetch` is absent.
    pub crl_fetch: Option<CrlFetchConfig>,
    pub ocsp: OcspConfig,
}

impl TlsConfig {
    /// Every file this TLS config reads, for `check`, `/status` and the reload watcher.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone()];
        files.extend(self.client_ca.iter().cloned());
        files.extend(self.crl.iter().cloned());
        files.extend(self.session_ticket_keys.iter().cloned());
        files
    }
}

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
    pub handshake: Duration,
    /// Longest a request body may go without a byte arriving; then the request ends with 408
    /// and gives back its upstream slots.
    pub request_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(300),
            idle: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
            request_body: Duration::from_secs(60),
        }
    }
}

/// Protection against misbehaving clients (the `limits` keys in the README).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most simultaneous client connections on this listener; further ones are closed at once.
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (the PROXY header's source with
    /// PROXY protocol), counted from accept; further ones are closed at once.
    pub connections_per_ip: usize,
    /// Largest request header block (request line + headers), answered with 431 beyond it.
    pub max_header_bytes: usize,
    /// Time a client gets to send its complete request header (slowloris).
    pub header_read: Duration,
    /// Requests of one client connection talking to the upstream at the same time (an HTTP/2
    /// connection carries many); further ones wait for a slot.
    pub upstream_per_connection: usize,
    /// Requests of the whole listener talking to the upstream at the same time.
    pub upstream_connections: usize,
    /// Requests of one client (a verified certificate, else an address) talking to the
    /// upstream at the same time, over all its connections; at most half of
    /// `upstream_connections`, so one client can never hold every slot.
    pub upstream_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            connections_per_ip: 256,
            max_header_bytes: 64 * 1024,
            header_read: Duration::from_secs(10),
            upstream_per_connection: 32,
            upstream_connections: 1024,
            upstream_per_client: 128,
        }
    }
}

/// The plain-HTTP service behind a listener.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// As written, for messages (`http://127.0.0.1:80`).
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// The address itself when the host is an IP literal (never resolved).
    pub literal: Option<SocketAddr>,
}

/// PROXY protocol on a listener: every connection starts with the header, sent by a peer in
/// `from` (any peer when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub from: Vec<IpNet>,
}

#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub upstream: Upstream,
    pub policy: Option<PathBuf>,
    pub headers: Vec<Dialect>,
    pub forward_cert: bool,
    /// `proxy_protocol: true`, with its `proxy_protocol_from`.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The `strict-transport-security` value, checked to be a valid header value.
    pub hsts: Option<http::HeaderValue>,
    pub root_token: Option<RootToken>,
    /// `;` in a path segment: refused (default) or kept.
    pub path_params: PathParams,
    /// Headers of the default-stripped hardening list this listener's upstream still receives
    /// from clients (lower-case, `_` written `-`; `x-auth-request-*` passes every one it covers).
    pub pass_client_headers: Vec<String>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tls: TlsConfig,
}

/// `admin.clients_max` when omitted: a fleet of thousands of nodes fits.
pub const DEFAULT_CLIENTS_MAX: usize = 10_000;
/// The largest `admin.clients_max`: each entry holds a few hundred bytes, so this bounds the
/// inventory's memory at a few hundred MB.
pub const MAX_CLIENTS_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from (absolute).
    pub path: PathBuf,
    /// SHA-256 of that file's text as read: a reload re-reads the files the config names, not
    /// the config itself, and tells the operator when the config changed since (see `reload`).
    pub sha256: [u8; 32],
    pub admin: Option<SocketAddr>,
    /// Client certificates `/clients` keeps, the most recently seen (`admin.clients_max`).
    pub clients_max: usize,
    pub shutdown_grace: Duration,
    pub log: LogConfig,
    /// Worker threads per listener; defaults to the number of cores.
    pub threads: usize,
    /// Idle upstream connections kept for reuse (per process).
    pub upstream_keepalive: usize,
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
    /// Whether the config file now differs from the text this was built from (`None` when it
    /// cannot be read: a reload reports that through the files it names).
    pub fn changed_on_disk(&self) -> Option<bool> {
        let text = std::fs::read(&self.path).ok()?;
        Some(openssl::sha::sha256(&text) != self.sha256)
    }

    /// Reads, interpolates, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                format!("cannot read the config file: {e}; pass the right file with -c or set CERTGATE_CONFIG"),
            )
        })?;
        Self::from_yaml(&text, path, |name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its directory).
    pub fn from_yaml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = absolute(path);
        let original = text;
        let text = env::interpolate(text, env).map_err(|e| ConfigError {
            line: Some(e.line),
            ..ConfigError::new(&path, e.to_string())
        })?;
        let raw: RawConfig = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError {
            line: e.location().map(|l| l.line()),
            ..ConfigError::new(&path, yaml_message(&e))
        })?;
        Validator {
            file: &path,
            sha256: openssl::sha::sha256(original.as_bytes()),
        }
        .config(raw)
    }

    /// Every file named by the config (certificates, keys, CAs, CRLs, policies; not includes).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for listener in &self.listeners {
            for f in listener
                .tls
                .files()
                .into_iter()
                .chain(listener.policy.clone())
            {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        files
    }
}

/// `tls.groups` unless configured: the hybrid post-quantum group first (clients that offer it
/// get it), then the classical ones every current client has. No finite-field groups (slow,
/// and with a server-chosen size), no secp521r1 or X448 (rarely offered, slow).
pub const DEFAULT_GROUPS: [&str; 4] = ["X25519MLKEM768", "X25519", "P-256", "P-384"];

/// How long a resumable TLS session (and a ticket key) lives unless `tls.session_lifetime` says.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests;
