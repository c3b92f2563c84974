//! The configuration file: YAML text → environment interpolation → raw serde model → a
//! validated [`Config`] in which every path is absolute, every duration parsed and every
//! listener carries its complete TLS settings (defaults merged with its own overrides).
//!
//! Errors name the file, the YAML line where known, the key and the fix, because the operator
//! reading them is usually in the middle of a deployment.

pub mod env;
mod raw;
pub mod revocation;
mod root_token;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use crate::policy::target::PathParams;
pub use crate::proxy::dialects::Dialect;
use raw::{OneOrMany, RawConfig, RawListener, RawTls};
pub use revocation::{CrlFetchConfig, OcspConfig, OcspMode};
pub use root_token::RootToken;

/// What a config error says: where, which key, what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl ConfigError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            message: message.into(),
        }
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
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    pub alpn: Vec<Alpn>,
    /// TLS session resumption (tickets and a session-ID cache), each resumption re-checked
    /// against the current CA bundle and CRLs; `None` when `session_resumption: false`.
    pub session_lifetime: Option<Duration>,
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
        files
    }
}

#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub idle: Duration,
    pub handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(300),
            idle: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Protection against misbehaving clients (the `limits` keys in the README).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most simultaneous client connections on this listener; further ones are closed at once.
    pub max_connections: usize,
    /// Largest request header block (request line + headers), answered with 431 beyond it.
    pub max_header_bytes: usize,
    /// Time a client gets to send its complete request header (slowloris).
    pub header_read: Duration,
    /// Requests of one client connection talking to the upstream at the same time (an HTTP/2
    /// connection carries many); further ones wait for a slot.
    pub upstream_per_connection: usize,
    /// Requests of the whole listener talking to the upstream at the same time.
    pub upstream_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            header_read: Duration::from_secs(10),
            upstream_per_connection: 32,
            upstream_connections: 1024,
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
}

#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub upstream: Upstream,
    pub policy: Option<PathBuf>,
    pub headers: Vec<Dialect>,
    pub forward_cert: bool,
    pub proxy_protocol: bool,
    pub proxy_protocol_from: Vec<IpNet>,
    pub hsts: Option<String>,
    pub root_token: Option<RootToken>,
    /// `;` in a path segment: refused (default) or kept.
    pub path_params: PathParams,
    /// Headers of the default-stripped hardening list this listener's upstream still receives
    /// from clients (lower-case, `_` written `-`).
    pub pass_client_headers: Vec<String>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tls: TlsConfig,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from (absolute).
    pub path: PathBuf,
    pub admin: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub log: LogConfig,
    /// Worker threads per listener; defaults to the number of cores.
    pub threads: usize,
    /// Idle upstream connections kept for reuse (per process).
    pub upstream_keepalive: usize,
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
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
        let text =
            env::interpolate(text, env).map_err(|e| ConfigError::new(&path, e.to_string()))?;
        let raw: RawConfig = serde_yaml_ng::from_str(&text)
            .map_err(|e| ConfigError::new(&path, yaml_message(&e)))?;
        Validator { file: &path }.config(raw)
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

/// serde_yaml's messages already say `listeners[0]: unknown field \`x\`, expected one of ... at
/// line 5 column 3`; we add the fix for the common case.
fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    if msg.contains("unknown field") {
        format!("{msg}; remove the key or fix its spelling (see the config reference in README.md)")
    } else {
        msg
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(self.file, format!("{key}: {message}"))
    }

    fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or_else(|| Path::new("/")).join(p)
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.trim()).map_err(|e| {
                self.err(
                    key,
                    format!("`{v}` is not a duration ({e}); write e.g. 500ms, 10s or 5m"),
                )
            }),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let admin = match raw.admin {
            Some(a) => Some(self.socket_addr("admin.listen", &a.listen)?),
            None => None,
        };
        let shutdown_grace = self.duration(
            "shutdown_grace",
            raw.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        )?;
        let log = LogConfig {
            format: raw.log.as_ref().and_then(|l| l.format).unwrap_or_default(),
            level: raw
                .log
                .as_ref()
                .and_then(|l| l.level.clone())
                .unwrap_or_else(|| "info".into()),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            return Err(self.err(
                "log.level",
                format!(
                    "`{}` is not a level or filter ({e}); use error, warn, info, debug or trace",
                    log.level
                ),
            ));
        }
        let threads = match raw.threads {
            Some(0) => {
                return Err(self.err("threads", "must be at least 1; omit it to use one per core"))
            }
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let upstream_keepalive = match raw.upstream_keepalive {
            Some(0) => return Err(self.err(
                "upstream_keepalive",
                "must be at least 1 (idle upstream connections kept for reuse); omit it for 128",
            )),
            Some(n) => n,
            None => 128,
        };
        if raw.listeners.is_empty() {
            return Err(self.err(
                "listeners",
                "no listener configured; add at least one with name, listen, upstream",
            ));
        }
        let defaults = raw.tls.unwrap_or_default();
        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.into_iter().enumerate() {
            let listener = self.listener(i, l, &defaults)?;
            if listeners
                .iter()
                .any(|o: &ListenerConfig| o.name == listener.name)
            {
                return Err(self.err(
                    &format!("listeners[{i}].name"),
                    format!(
                        "`{}` is used twice; listener names must be unique",
                        listener.name
                    ),
                ));
            }
            for addr in &listener.listen {
                if listeners
                    .iter()
                    .any(|o: &ListenerConfig| o.listen.contains(addr))
                    || admin == Some(*addr)
                {
                    return Err(self.err(
                        &format!("listeners[{i}].listen"),
                        format!("{addr} is already used by another listener or the admin endpoint"),
                    ));
                }
            }
            listeners.push(listener);
        }
        Ok(Config {
            path: self.file.to_path_buf(),
            admin,
            shutdown_grace,
            log,
            threads,
            upstream_keepalive,
            listeners,
        })
    }

    fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        let mut addrs = value.to_socket_addrs().map_err(|e| {
            self.err(
                key,
                format!("`{value}` is not an address ({e}); write HOST:PORT, e.g. 0.0.0.0:8443"),
            )
        })?;
        addrs
            .next()
            .ok_or_else(|| self.err(key, format!("`{value}` resolves to no address")))
    }

    fn listener(
        &self,
        i: usize,
        l: RawListener,
        defaults: &RawTls,
    ) -> Result<ListenerConfig, ConfigError> {
        let key = |k: &str| format!("listeners[{i}].{k}");
        if l.name.is_empty()
            || !l
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(self.err(
                &key("name"),
                format!(
                    "`{}` is not a valid name; use letters, digits, `-`, `_` or `.`",
                    l.name
                ),
            ));
        }
        let listen = match l.listen {
            OneOrMany::One(a) => vec![self.socket_addr(&key("listen"), &a)?],
            OneOrMany::Many(v) if v.is_empty() => {
                return Err(self.err(&key("listen"), "empty; give at least one HOST:PORT"))
            }
            OneOrMany::Many(v) => v
                .iter()
                .map(|a| self.socket_addr(&key("listen"), a))
                .collect::<Result<_, _>>()?,
        };
        let upstream = self.upstream(&key("upstream"), &l.upstream)?;
        let tls = self.tls(&key("tls"), defaults, l.tls.unwrap_or_default())?;
        let timeouts = {
            let t = l.timeouts.unwrap_or_default();
            let d = Timeouts::default();
            Timeouts {
                connect: self.duration(
                    &key("timeouts.connect"),
                    t.connect.as_deref(),
                    d.connect,
                )?,
                read: self.duration(&key("timeouts.read"), t.read.as_deref(), d.read)?,
                idle: self.duration(&key("timeouts.idle"), t.idle.as_deref(), d.idle)?,
                handshake: self.duration(
                    &key("timeouts.handshake"),
                    t.handshake.as_deref(),
                    d.handshake,
                )?,
            }
        };
        let limits = {
            let r = l.limits.unwrap_or_default();
            let d = Limits::default();
            let limits = Limits {
                max_connections: r.max_connections.unwrap_or(d.max_connections),
                max_header_bytes: r.max_header_bytes.unwrap_or(d.max_header_bytes),
                header_read: self.duration(
                    &key("limits.header_read"),
                    r.header_read.as_deref(),
                    d.header_read,
                )?,
                upstream_per_connection: r
                    .upstream_per_connection
                    .unwrap_or(d.upstream_per_connection),
                upstream_connections: r.upstream_connections.unwrap_or(d.upstream_connections),
            };
            if limits.upstream_per_connection == 0 {
                return Err(self.err(&key("limits.upstream_per_connection"), "must be at least 1"));
            }
            if limits.upstream_connections < limits.upstream_per_connection {
                return Err(self.err(
                    &key("limits.upstream_connections"),
                    "must be at least limits.upstream_per_connection",
                ));
            }
            if limits.max_connections == 0 {
                return Err(self.err(&key("limits.max_connections"), "must be at least 1"));
            }
            if limits.max_header_bytes < 1024 {
                return Err(self.err(&key("limits.max_header_bytes"), "must be at least 1024"));
            }
            limits
        };
        let root_token = match l.root_token.as_deref().map(RootToken::new) {
            None => None,
            Some(Ok(token)) => Some(token),
            Some(Err(fix)) => return Err(self.err(&key("root_token"), fix)),
        };
        if let Some(hsts) = &l.hsts {
            if http::HeaderValue::from_str(hsts).is_err() || hsts.trim().is_empty() {
                return Err(self.err(
                    &key("hsts"),
                    "not a valid header value; write e.g. \"max-age=31536000\"",
                ));
            }
        }
        let proxy_protocol_from = l
            .proxy_protocol_from
            .unwrap_or_default()
            .iter()
            .map(|c| parse_cidr(c).map_err(|e| self.err(&key("proxy_protocol_from"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = l.headers.unwrap_or_else(|| vec![Dialect::NginxIngress]);
        headers.dedup();
        let mut pass_client_headers = Vec::new();
        for name in l.pass_client_headers.unwrap_or_default() {
            let Some(canonical) = crate::proxy::dialects::passable_header(&name) else {
                return Err(self.err(
                    &key("pass_client_headers"),
                    format!(
                        "`{name}` cannot be passed: only these may be: {}; identity headers and certgate's own are always replaced",
                        crate::proxy::dialects::HARDENING_STRIPPED.join(", ")
                    ),
                ));
            };
            pass_client_headers.push(canonical.to_string());
        }
        Ok(ListenerConfig {
            name: l.name,
            listen,
            upstream,
            policy: l.policy.as_deref().map(|p| self.path(p)),
            headers,
            forward_cert: l.forward_cert.unwrap_or(false),
            proxy_protocol: l.proxy_protocol.unwrap_or(false),
            proxy_protocol_from,
            hsts: l.hsts,
            root_token,
            path_params: l.path_params.unwrap_or_default(),
            pass_client_headers,
            timeouts,
            limits,
            tls,
        })
    }

    fn upstream(&self, key: &str, value: &str) -> Result<Upstream, ConfigError> {
        let uri: http::Uri = value.parse().map_err(|e| {
            self.err(
                key,
                format!("`{value}` is not a URL ({e}); write e.g. http://127.0.0.1:80"),
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(self.err(
                    key,
                    format!("scheme `{other}` is not supported: certgate forwards plain HTTP; write http://HOST:PORT"),
                ))
            }
            None => return Err(self.err(key, format!("`{value}` has no scheme; write http://{value}"))),
        }
        let Some(host) = uri.host() else {
            return Err(self.err(key, format!("`{value}` has no host")));
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(self.err(
                key,
                "a path or query is not supported on the upstream; requests keep their own path",
            ));
        }
        let port = uri.port_u16().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            url: value.to_string(),
            authority,
        })
    }

    fn tls(&self, key: &str, defaults: &RawTls, own: RawTls) -> Result<TlsConfig, ConfigError> {
        let merged = own.or(defaults);
        let cert = merged.cert.ok_or_else(|| {
            self.err(&format!("{key}.cert"), "missing; set tls.cert (top level or in the listener) to the server certificate PEM")
        })?;
        let key_file = merged.key.ok_or_else(|| {
            self.err(
                &format!("{key}.key"),
                "missing; set tls.key to the server private key PEM",
            )
        })?;
        let client_auth = merged.client_auth.unwrap_or(ClientAuth::Optional);
        let client_ca = merged.client_ca.as_deref().map(|p| self.path(p));
        if client_auth == ClientAuth::Required && client_ca.is_none() {
            return Err(self.err(
                &format!("{key}.client_auth"),
                "`required` needs tls.client_ca (the CA bundle that signs client certificates); set client_ca or use client_auth: optional",
            ));
        }
        let crl: Vec<PathBuf> = match merged.crl {
            None => vec![],
            Some(OneOrMany::One(p)) => vec![self.path(&p)],
            Some(OneOrMany::Many(v)) => v.iter().map(|p| self.path(p)).collect(),
        };
        if !crl.is_empty() && client_ca.is_none() {
            return Err(self.err(
                &format!("{key}.crl"),
                "CRLs without tls.client_ca make no sense; set client_ca",
            ));
        }
        let min_version = merged.min_version.unwrap_or(TlsVersion::V1_2);
        let max_version = merged.max_version.unwrap_or(TlsVersion::V1_3);
        if min_version > max_version {
            return Err(self.err(
                &format!("{key}.min_version"),
                "is above max_version; use min_version \"1.2\" or raise max_version",
            ));
        }
        let alpn = merged.alpn.unwrap_or_else(|| vec![Alpn::H2, Alpn::Http11]);
        if alpn.is_empty() {
            return Err(self.err(
                &format!("{key}.alpn"),
                "empty; use [h2, http/1.1] or [http/1.1]",
            ));
        }
        let lifetime = self.duration(
            &format!("{key}.session_lifetime"),
            merged.session_lifetime.as_deref(),
            DEFAULT_SESSION_LIFETIME,
        )?;
        if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(24 * 3600) {
            return Err(self.err(
                &format!("{key}.session_lifetime"),
                "must be between 1s and 24h; 5m is the usual choice",
            ));
        }
        let session_lifetime = merged
            .session_resumption
            .unwrap_or(true)
            .then_some(lifetime);
        let crl_fetch = self.crl_fetch(key, merged.crl_fetch, client_ca.is_some())?;
        let ocsp = self.ocsp(key, merged.ocsp, client_ca.is_some())?;
        Ok(TlsConfig {
            cert: self.path(&cert),
            key: self.path(&key_file),
            client_ca,
            crl,
            crl_expired: merged.crl_expired.unwrap_or(CrlExpired::Reject),
            client_auth,
            min_version,
            max_version,
            ciphers: merged.ciphers,
            ciphersuites: merged.ciphersuites,
            alpn,
            session_lifetime,
            crl_fetch,
            ocsp,
        })
    }
}

/// How long a resumable TLS session (and a ticket key) lives unless `tls.session_lifetime` says.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(300);

/// `10.0.0.0/8`, or a bare address meaning just that host.
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net);
    }
    value
        .parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{value}` is not a CIDR; write e.g. 10.0.0.0/8 or 192.0.2.7"))
}

#[cfg(test)]
mod tests;
