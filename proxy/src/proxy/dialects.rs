//! STUB (replaced by the identity work).
use crate::tls::identity::Identity;
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect { NginxIngress, Xfcc, Traefik, Rfc9440 }
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerify { Success, None, Failed(String) }
pub fn dialect_headers(_d: &[Dialect], _f: bool, verify: &ClientVerify, identity: Option<&Identity>) -> Vec<(&'static str, String)> {
    let mut v = vec![("ssl-client-verify", match verify { ClientVerify::Success => "SUCCESS".to_string(), ClientVerify::None => "NONE".into(), ClientVerify::Failed(s) => format!("FAILED:{s}") })];
    if let Some(i) = identity { v.push(("ssl-client-subject-dn", i.subject_dn.clone())); v.push(("ssl-client-issuer-dn", i.issuer_dn.clone())); }
    v
}
pub fn escape_pem(pem: &str) -> String { pem.to_string() }
pub fn is_spoofable(name: &str) -> bool {
    let n = name.to_ascii_lowercase().replace('_', "-");
    matches!(n.as_str(), "ssl-client-verify" | "ssl-client-subject-dn" | "ssl-client-issuer-dn" | "ssl-client-cert" | "x-forwarded-client-cert" | "x-forwarded-tls-client-cert" | "x-forwarded-tls-client-cert-info" | "client-cert" | "client-cert-chain" | "x-real-ip" | "x-forwarded-for") || n.starts_with("x-certgate-")
}
