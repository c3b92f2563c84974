//! The file as written. Every struct rejects unknown keys so a typo is an error, not a silent
//! default; every field is optional where the README's configuration table gives a default.

use serde::Deserialize;

use super::revocation::{RawCrlFetch, RawOcsp};
use super::{Alpn, ClientAuth, CrlCheck, CrlExpired, Dialect, LogFormat, PathParams, TlsVersion};

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub shutdown_grace: Option<String>,
    pub log: Option<RawLog>,
    pub threads: Option<usize>,
    pub upstream_keepalive: Option<usize>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: String,
    pub clients_max: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub crl: Option<OneOrMany>,
    pub crl_expired: Option<CrlExpired>,
    pub crl_check: Option<CrlCheck>,
    pub client_auth: Option<ClientAuth>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    pub alpn: Option<Vec<Alpn>>,
    pub groups: Option<Vec<String>>,
    pub session_resumption: Option<bool>,
    pub session_lifetime: Option<String>,
    pub session_ticket_keys: Option<String>,
    pub crl_fetch: Option<RawCrlFetch>,
    pub ocsp: Option<RawOcsp>,
}

impl RawTls {
    /// A listener's own keys win; the rest come from the top-level defaults.
    pub(crate) fn or(self, defaults: &RawTls) -> RawTls {
        let d = defaults.clone();
        RawTls {
            cert: self.cert.or(d.cert),
            key: self.key.or(d.key),
            client_ca: self.client_ca.or(d.client_ca),
            crl: self.crl.or(d.crl),
            crl_expired: self.crl_expired.or(d.crl_expired),
            crl_check: self.crl_check.or(d.crl_check),
            client_auth: self.client_auth.or(d.client_auth),
            min_version: self.min_version.or(d.min_version),
            max_version: self.max_version.or(d.max_version),
            ciphers: self.ciphers.or(d.ciphers),
            ciphersuites: self.ciphersuites.or(d.ciphersuites),
            alpn: self.alpn.or(d.alpn),
            groups: self.groups.or(d.groups),
            session_resumption: self.session_resumption.or(d.session_resumption),
            session_lifetime: self.session_lifetime.or(d.session_lifetime),
            session_ticket_keys: self.session_ticket_keys.or(d.session_ticket_keys),
            crl_fetch: self.crl_fetch.or(d.crl_fetch),
            ocsp: self.ocsp.or(d.ocsp),
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub connect: Option<String>,
    pub read: Option<String>,
    pub idle: Option<String>,
    pub handshake: Option<String>,
    pub request_body: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_connections: Option<usize>,
    pub connections_per_ip: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub header_read: Option<String>,
    pub upstream_per_connection: Option<usize>,
    pub upstream_connections: Option<usize>,
    pub upstream_per_client: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: String,
    pub listen: OneOrMany,
    pub upstream: String,
    pub policy: Option<String>,
    pub headers: Option<Vec<Dialect>>,
    pub forward_cert: Option<bool>,
    pub proxy_protocol: Option<bool>,
    pub proxy_protocol_from: Option<Vec<String>>,
    pub hsts: Option<String>,
    pub root_token: Option<String>,
    pub path_params: Option<PathParams>,
    pub pass_client_headers: Option<Vec<String>>,
    pub timeouts: Option<RawTimeouts>,
    pub limits: Option<RawLimits>,
    pub tls: Option<RawTls>,
}
