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
/// turns an allowed GET into a DELETE), the path (`X-Original-URL`), or to name the user
/// (`X-Remote-User`): stripped from client requests unless a listener lists them in
/// `pass_client_headers`.
pub const HARDENING_STRIPPED: [&str; 11] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
    "x-original-url",
    "x-rewrite-url",
    "x-remote-user",
    "remote-user",
    "x-forwarded-user",
    "x-ssl-client-dn",
    "x-client-cert",
    "ssl-client-s-dn",
];

/// The [`HARDENING_STRIPPED`] entry `name` spells (any case, `-` or `_`), if any.
pub fn passable_header(name: &str) -> Option<&'static str> {
    HARDENING_STRIPPED
        .iter()
        .copied()
        .find(|h| same_name(name.as_bytes(), h))
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
