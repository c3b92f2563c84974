//! Header names the config refers to: the identity header dialects an upstream may ask for,
//! and the client headers certgate strips unless a listener passes them on.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// `nginx-ingress` (default): `ssl-client-verify`, `ssl-client-subject-dn`,
    /// `ssl-client-issuer-dn`, `ssl-client-cert`.
    NginxIngress,
    /// `xfcc`: Envoy's `x-forwarded-client-cert`.
    Xfcc,
    /// `traefik`: `x-forwarded-tls-client-cert-info`, `x-forwarded-tls-client-cert`.
    Traefik,
    /// `rfc9440`: `client-cert` (only with `forward_cert`).
    Rfc9440,
}

impl Dialect {
    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::NginxIngress => "nginx-ingress",
            Dialect::Xfcc => "xfcc",
            Dialect::Traefik => "traefik",
            Dialect::Rfc9440 => "rfc9440",
        }
    }
}

/// Headers that some upstream frameworks trust to change the method (`X-HTTP-Method-Override`
/// turns an allowed GET into a DELETE), the path or mount point (`X-Original-URL`,
/// `X-Forwarded-Prefix`), or to name the user (`X-Remote-User`, and what other auth proxies
/// such as oauth2-proxy send: `X-Forwarded-User`, `X-Auth-Request-*`): stripped from client
/// requests unless a listener lists them in `pass_client_headers`. An entry ending in `*` is
/// every header that begins with the rest.
pub const HARDENING_STRIPPED: [&str; 18] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-remote-user",
    "remote-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-auth-request-*",
    "x-ssl-client-dn",
    "x-client-cert",
    "ssl-client-s-dn",
];

/// The [`HARDENING_STRIPPED`] entry that covers `name` (any case, `-` or `_`), if any.
pub fn hardening_entry(name: &str) -> Option<&'static str> {
    HARDENING_STRIPPED
        .iter()
        .copied()
        .find(|entry| covers(entry, name))
}

/// How `pass_client_headers` writes `name`, if it may be passed: the entry itself for a whole
/// entry (`x-auth-request-*` included), else one header under a `*` entry, lower-case with
/// `-` (`X_Auth_Request_Email` → `x-auth-request-email`).
pub fn passable_header(name: &str) -> Option<String> {
    if let Some(entry) = HARDENING_STRIPPED
        .iter()
        .find(|entry| same_name(name.as_bytes(), entry))
    {
        return Some(entry.to_string());
    }
    let token = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    hardening_entry(name)
        .filter(|_| token)
        .map(|_| name.to_ascii_lowercase().replace('_', "-"))
}

/// Whether a listener passing `passed` (as [`passable_header`] wrote them) lets `name` through.
pub fn is_passed(passed: &[String], name: &str) -> bool {
    passed.iter().any(|p| covers(p, name))
}

/// `entry` (lower-case, `-`-separated, perhaps ending in `*`) covers the header `name`.
fn covers(entry: &str, name: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => {
            name.len() >= prefix.len() && same_name(&name.as_bytes()[..prefix.len()], prefix)
        }
        None => same_name(name.as_bytes(), entry),
    }
}

/// `a` spells the lower-case, `-`-separated name `b`, in any case and with `_` for `-`.
pub(crate) fn same_name(a: &[u8], b: &str) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.bytes()).all(|(x, y)| {
            let x = if *x == b'_' {
                b'-'
            } else {
                x.to_ascii_lowercase()
            };
            x == y
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_names_deserialize() {
        let d: Vec<Dialect> =
            serde_json::from_str(r#"["nginx-ingress","xfcc","traefik","rfc9440"]"#).expect("json");
        assert_eq!(
            d,
            [
                Dialect::NginxIngress,
                Dialect::Xfcc,
                Dialect::Traefik,
                Dialect::Rfc9440
            ]
        );
        assert!(serde_json::from_str::<Dialect>(r#""nginx""#).is_err());
        assert!(d.iter().all(
            |x| serde_json::from_str::<Dialect>(&format!("\"{}\"", x.name())).ok() == Some(*x)
        ));
    }
}
