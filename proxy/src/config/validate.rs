//! From the file as written to the validated model: every path made absolute, every duration
//! parsed, every listener given its complete TLS settings, and every error naming the key and
//! the fix.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{OneOrMany, RawConfig, RawLimits, RawListener, RawTimeouts, RawTls};
use super::*;

/// serde_yaml's messages already say `listeners[0]: unknown field \`x\`, expected one of ... at
/// line 5 column 3`; we add the fix for the common case.
pub(super) fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let msg = e.to_string();
    if msg.contains("unknown field") {
        format!("{msg}; remove the key or fix its spelling (see the config reference in README.md)")
    } else {
        msg
    }
}

pub(super) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

pub(super) struct Validator<'a> {
    pub(super) file: &'a Path,
    /// SHA-256 of the file's text as read (before `${VAR}` interpolation).
    pub(super) sha256: [u8; 32],
}

impl Validator<'_> {
    pub(super) fn err(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::at(self.file, key, message.to_string())
    }

    pub(super) fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or_else(|| Path::new("/")).join(p)
        }
    }

    pub(super) fn duration(
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

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let (admin, clients_max) = match raw.admin {
            Some(a) => (
                Some(self.socket_addr("admin.listen", &a.listen)?),
                a.clients_max,
            ),
            None => (None, None),
        };
        let clients_max = clients_max.unwrap_or(DEFAULT_CLIENTS_MAX);
        if !(1..=MAX_CLIENTS_MAX).contains(&clients_max) {
            return Err(self.err(
                "admin.clients_max",
                format!(
                    "must be between 1 and {MAX_CLIENTS_MAX} (client certificates kept for /clients); omit it for {DEFAULT_CLIENTS_MAX}"
                ),
            ));
        }
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
            sha256: self.sha256,
            admin,
            clients_max,
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
        self.listener_name(&key("name"), &l.name)?;
        let listen = self.listen(&key("listen"), l.listen)?;
        let upstream = self.upstream(&key("upstream"), &l.upstream)?;
        let tls = self.tls(&key("tls"), defaults, l.tls.unwrap_or_default())?;
        let timeouts = self.timeouts(&key, l.timeouts.unwrap_or_default())?;
        let limits = self.limits(&key, l.limits.unwrap_or_default())?;
        let root_token = match l.root_token.as_deref().map(RootToken::new) {
            None => None,
            Some(Ok(token)) => Some(token),
            Some(Err(fix)) => return Err(self.err(&key("root_token"), fix)),
        };
        let hsts = match l
            .hsts
            .as_deref()
            .map(|h| (h, http::HeaderValue::from_str(h)))
        {
            None => None,
            Some((h, Ok(value))) if !h.trim().is_empty() => Some(value),
            Some(_) => {
                return Err(self.err(
                    &key("hsts"),
                    "not a valid header value; write e.g. \"max-age=31536000\"",
                ))
            }
        };
        let proxy_protocol_from = l
            .proxy_protocol_from
            .unwrap_or_default()
            .iter()
            .map(|c| parse_cidr(c).map_err(|e| self.err(&key("proxy_protocol_from"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let proxy_protocol = l.proxy_protocol.unwrap_or(false).then_some(ProxyProtocol {
            from: proxy_protocol_from,
        });
        let mut headers = l.headers.unwrap_or_else(|| vec![Dialect::NginxIngress]);
        headers.dedup();
        let pass_client_headers =
            self.pass_client_headers(&key("pass_client_headers"), l.pass_client_headers)?;
        Ok(ListenerConfig {
            name: l.name,
            listen,
            upstream,
            policy: l.policy.as_deref().map(|p| self.path(p)),
            headers,
            forward_cert: l.forward_cert.unwrap_or(false),
            proxy_protocol,
            hsts,
            root_token,
            path_params: l.path_params.unwrap_or_default(),
            pass_client_headers,
            timeouts,
            limits,
            tls,
        })
    }

    fn listener_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if name.is_empty() || !name.chars().all(valid) {
            return Err(self.err(
                key,
                format!("`{name}` is not a valid name; use letters, digits, `-`, `_` or `.`"),
            ));
        }
        Ok(())
    }

    fn listen(&self, key: &str, listen: OneOrMany) -> Result<Vec<SocketAddr>, ConfigError> {
        match listen {
            OneOrMany::One(a) => Ok(vec![self.socket_addr(key, &a)?]),
            OneOrMany::Many(v) if v.is_empty() => {
                Err(self.err(key, "empty; give at least one HOST:PORT"))
            }
            OneOrMany::Many(v) => v.iter().map(|a| self.socket_addr(key, a)).collect(),
        }
    }

    fn timeouts(
        &self,
        key: &dyn Fn(&str) -> String,
        t: RawTimeouts,
    ) -> Result<Timeouts, ConfigError> {
        let d = Timeouts::default();
        let request_body = self.duration(
            &key("timeouts.request_body"),
            t.request_body.as_deref(),
            d.request_body,
        )?;
        if request_body.is_zero() {
            return Err(self.err(
                &key("timeouts.request_body"),
                "must be more than 0 (every request with a body would end with 408); omit it for 60s",
            ));
        }
        Ok(Timeouts {
            request_body,
            connect: self.duration(&key("timeouts.connect"), t.connect.as_deref(), d.connect)?,
            read: self.duration(&key("timeouts.read"), t.read.as_deref(), d.read)?,
            idle: self.duration(&key("timeouts.idle"), t.idle.as_deref(), d.idle)?,
            handshake: self.duration(
                &key("timeouts.handshake"),
                t.handshake.as_deref(),
                d.handshake,
            )?,
        })
    }

    fn limits(&self, key: &dyn Fn(&str) -> String, r: RawLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let mut limits = Limits {
            max_connections: r.max_connections.unwrap_or(d.max_connections),
            connections_per_ip: r.connections_per_ip.unwrap_or(d.connections_per_ip),
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
            upstream_per_client: 0,
        };
        // Half the listener's slots, so a second client always finds some; a listener with
        // one slot cannot be shared, and its one client gets it.
        let most_per_client = (limits.upstream_connections / 2).max(1);
        // Left out, the default follows a smaller `upstream_connections` down; written out, a
        // value above half is refused rather than quietly lowered.
        limits.upstream_per_client = match r.upstream_per_client {
            None => d.upstream_per_client.min(most_per_client),
            Some(0) => {
                return Err(self.err(
                    &key("limits.upstream_per_client"),
                    "must be at least 1 (0 would refuse every request)",
                ))
            }
            Some(n) if n > most_per_client => {
                return Err(self.err(
                    &key("limits.upstream_per_client"),
                    format!(
                        "{n} is more than half of limits.upstream_connections ({}): one client could take every upstream slot; use at most {most_per_client}, or omit it",
                        limits.upstream_connections
                    ),
                ))
            }
            Some(n) => n,
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
        if limits.connections_per_ip == 0 {
            return Err(self.err(
                &key("limits.connections_per_ip"),
                "must be at least 1 (0 would refuse every client); omit it for 256",
            ));
        }
        if limits.max_header_bytes < 1024 {
            return Err(self.err(&key("limits.max_header_bytes"), "must be at least 1024"));
        }
        Ok(limits)
    }

    /// The canonical spelling of each header the listener passes on; anything else is refused.
    fn pass_client_headers(
        &self,
        key: &str,
        names: Option<Vec<String>>,
    ) -> Result<Vec<String>, ConfigError> {
        names
            .unwrap_or_default()
            .iter()
            .map(|name| match passable_header(name) {
                Some(canonical) => Ok(canonical),
                None => Err(self.err(
                    key,
                    format!(
                        "`{name}` cannot be passed: only these may be (an entry ending in * also as one header it covers): {}; identity headers and certgate's own are always replaced",
                        HARDENING_STRIPPED.join(", ")
                    ),
                )),
            })
            .collect()
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
            literal: authority.parse().ok(),
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
        let groups = self.groups(&format!("{key}.groups"), merged.groups)?;
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
        let session_ticket_keys = merged.session_ticket_keys.as_deref().map(|p| self.path(p));
        if session_ticket_keys.is_some() && session_lifetime.is_none() {
            return Err(self.err(
                &format!("{key}.session_ticket_keys"),
                "has no use with session_resumption: false; remove session_ticket_keys or turn session_resumption on",
            ));
        }
        let crl_fetch = self.crl_fetch(key, merged.crl_fetch, client_ca.is_some())?;
        let ocsp = self.ocsp(key, merged.ocsp, client_ca.is_some())?;
        let has_source = !crl.is_empty() || crl_fetch.is_some() || ocsp.mode != OcspMode::Off;
        let crl_check = match (merged.crl_check, has_source) {
            (None, false) => None,
            (None, true) => Some(CrlCheck::Chain),
            (Some(c), true) => Some(c),
            (Some(_), false) => {
                return Err(self.err(
                    &format!("{key}.crl_check"),
                    "needs a revocation source to check against: add tls.crl, tls.crl_fetch or tls.ocsp, or remove crl_check",
                ))
            }
        };
        Ok(TlsConfig {
            cert: self.path(&cert),
            key: self.path(&key_file),
            client_ca,
            crl,
            crl_expired: merged.crl_expired.unwrap_or(CrlExpired::Reject),
            crl_check,
            client_auth,
            min_version,
            max_version,
            ciphers: merged.ciphers,
            ciphersuites: merged.ciphersuites,
            alpn,
            groups,
            session_lifetime,
            session_ticket_keys,
            crl_fetch,
            ocsp,
        })
    }

    /// The key exchange groups, each one OpenSSL knows by that name (an unknown one would fail
    /// every handshake that needs it, or the whole listener at start).
    fn groups(&self, key: &str, groups: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
        let Some(groups) = groups else {
            return Ok(DEFAULT_GROUPS.map(String::from).to_vec());
        };
        let fix = format!(
            "use OpenSSL group names such as {} (`openssl list -tls-groups` shows them), or omit the key for that default",
            DEFAULT_GROUPS.join(", ")
        );
        if groups.is_empty() {
            return Err(self.err(key, format!("empty; {fix}")));
        }
        let mut probe =
            openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::tls()).map_err(|e| {
                self.err(
                    key,
                    format!("cannot set up OpenSSL to check the groups: {e}"),
                )
            })?;
        for (i, name) in groups.iter().enumerate() {
            // OpenSSL reads `:`, `/`, `?`, `*` and a leading `-` as list syntax: one name each.
            let plain = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !plain || probe.set_groups_list(name).is_err() {
                return Err(self.err(
                    &format!("{key}[{i}]"),
                    format!("`{name}` is not a key exchange group this OpenSSL knows; {fix}"),
                ));
            }
            if groups[..i].iter().any(|g| g.eq_ignore_ascii_case(name)) {
                return Err(self.err(
                    &format!("{key}[{i}]"),
                    format!("`{name}` is listed twice; name each group once"),
                ));
            }
        }
        Ok(groups)
    }
}

/// A value that is neither a CIDR nor an address.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CIDR; write e.g. 10.0.0.0/8 or 192.0.2.7")]
pub struct NotACidr(pub String);

/// `10.0.0.0/8`, or a bare address meaning just that host.
pub fn parse_cidr(value: &str) -> Result<IpNet, NotACidr> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net);
    }
    value
        .parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| NotACidr(value.to_string()))
}
