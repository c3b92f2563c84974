//! Identity headers in the formats upstreams already parse, byte for byte as each proxy sends them:
//! ingress-nginx, Envoy XFCC, Traefik `passTLSClientCert`, RFC 9440. Computed once per
//! connection from the [`Identity`]; every value is a valid HTTP header value (visible ASCII and
//! space only), whatever the certificate holds.

mod escape;
mod nginx;
mod rfc9440;
mod traefik;
mod xfcc;

pub use escape::{escape_pem, go_query_escape};
pub use xfcc::xfcc_quoted;

use crate::config::Dialect;
use crate::tls::identity::Identity;

/// The outcome of client-certificate verification, as NGINX's `$ssl_client_verify` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerify {
    Success,
    /// No certificate was presented.
    None,
    /// The OpenSSL `X509_verify_cert_error_string` text, e.g. `certificate has expired`.
    Failed(String),
}

/// Headers of the configured dialects, names lower-case, values valid HTTP header values
/// (visible ASCII + space only). Identity-bearing headers are only produced with an identity;
/// `ssl-client-verify` always (with `nginx-ingress`). A dialect listed twice is emitted once.
pub fn dialect_headers(
    dialects: &[Dialect],
    forward_cert: bool,
    verify: &ClientVerify,
    identity: Option<&Identity>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (i, dialect) in dialects.iter().enumerate() {
        if dialects[..i].contains(dialect) {
            continue;
        }
        match dialect {
            Dialect::NginxIngress => nginx::headers(&mut out, forward_cert, verify, identity),
            Dialect::Xfcc => xfcc::headers(&mut out, forward_cert, identity),
            Dialect::Traefik => traefik::headers(&mut out, forward_cert, identity),
            Dialect::Rfc9440 => rfc9440::headers(&mut out, forward_cert, identity),
        }
    }
    out
}

#[cfg(test)]
mod tests;
