//! The facts an operator checks: what each listener serves, which files it loaded (with their
//! hashes), when certificates and CRLs expire, what the policy holds, and what to worry about.
//! `certgate check` prints this and `/status` serves it, so the two always agree.

use serde::Serialize;

use crate::config::{ClientAuth, ListenerConfig};
use crate::policy::{Mode, Policy};
use crate::time::{asn1_unix, now_unix};
use crate::tls::dn::rfc2253;
use crate::tls::trust::{purpose, LoadedCrl, TrustState};

/// Certificates expiring sooner than this are warned about.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Serialize, Debug, Clone)]
pub(crate) struct CertSummary {
    pub subject: String,
    pub sans: Vec<String>,
    pub not_after: i64,
    pub not_after_text: String,
    pub days_left: i64,
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct CrlSummary {
    pub file: String,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub next_update_text: Option<String>,
    pub revoked: usize,
    pub expired: bool,
    /// `verified` (by a CA of the bundle at load, or by the issuer a client presented),
    /// `not yet verified` (its issuer is not in the bundle and no client presented it yet), or
    /// that it did not verify against a presented issuer.
    pub signature: &'static str,
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct FileSummary {
    pub path: String,
    /// Absent for private keys: a key's hash helps nobody who may read `/status` and tells an
    /// attacker holding a candidate key whether it is the one in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct TicketKeysSummary {
    pub file: String,
    pub keys: usize,
    pub loaded_at: String,
    pub age_seconds: u64,
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct PolicySummary {
    pub files: Vec<String>,
    pub sha256: String,
    pub mode: &'static str,
    pub permissions: usize,
    pub routes: usize,
    pub groups: usize,
    pub users: usize,
    /// `cn`, `uri_san`, `dns_san` or `email`.
    pub users_from: &'static str,
    /// `spiffe:` patterns.
    pub spiffe: usize,
}

#[derive(Serialize, Debug, Clone)]
pub(crate) struct ListenerReport {
    pub name: String,
    pub listen: Vec<String>,
    pub upstream: String,
    pub client_auth: &'static str,
    pub proxy_protocol: bool,
    pub server_certificate: CertSummary,
    pub client_cas: Vec<CertSummary>,
    pub crls: Vec<CrlSummary>,
    pub files: Vec<FileSummary>,
    pub policy: Option<PolicySummary>,
    /// `tls.session_ticket_keys`: how many keys and when the file was read, never the keys.
    pub session_ticket_keys: Option<TicketKeysSummary>,
    pub trust_generation: u64,
    pub warnings: Vec<String>,
    /// Facts worth knowing that need no action.
    pub notes: Vec<String>,
}

fn text_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn cert_summary(cert: &openssl::x509::X509Ref) -> CertSummary {
    let not_after = asn1_unix(cert.not_after());
    let sans = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.dnsname()
                        .map(|d| format!("DNS:{d}"))
                        .or_else(|| n.uri().map(|u| format!("URI:{u}")))
                        .or_else(|| n.email().map(|e| format!("email:{e}")))
                        .or_else(|| {
                            n.ipaddress().and_then(|ip| match ip.len() {
                                4 => <[u8; 4]>::try_from(ip)
                                    .ok()
                                    .map(|b| format!("IP:{}", std::net::Ipv4Addr::from(b))),
                                16 => <[u8; 16]>::try_from(ip)
                                    .ok()
                                    .map(|b| format!("IP:{}", std::net::Ipv6Addr::from(b))),
                                _ => None,
                            })
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    CertSummary {
        subject: rfc2253(cert.subject_name()),
        sans,
        not_after,
        not_after_text: text_time(not_after),
        days_left: (not_after - now_unix()).div_euclid(86_400),
    }
}

/// Group or other read/write permission on a private key file.
pub(crate) fn key_mode_warning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "key file {} is readable by group or others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        )
    })
}

pub(crate) fn listener_report(
    cfg: &ListenerConfig,
    trust: &TrustState,
    policy: Option<&Policy>,
) -> ListenerReport {
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let server_certificate = cert_summary(&trust.server.cert);
    if server_certificate.days_left < EXPIRY_WARNING_DAYS {
        warnings.push(format!(
            "server certificate {} expires in {} days ({})",
            server_certificate.subject,
            server_certificate.days_left,
            server_certificate.not_after_text
        ));
    }
    warnings.extend(purpose::server_cert_warning(
        &cfg.tls.cert,
        &trust.server.cert,
    ));
    warnings.extend(key_mode_warning(&cfg.tls.key));
    let session_ticket_keys = match (&trust.ticket_keys, &cfg.tls.session_ticket_keys) {
        (Some(keys), Some(file)) => {
            warnings.extend(key_mode_warning(file));
            Some(TicketKeysSummary {
                file: file.display().to_string(),
                keys: keys.len(),
                loaded_at: humantime::format_rfc3339_millis(keys.loaded_at).to_string(),
                age_seconds: keys.loaded_at.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            })
        }
        _ => None,
    };
    let mut client_cas = Vec::new();
    let mut crls = Vec::new();
    let now = now_unix();
    if let Some(client) = &trust.client {
        if let Some(file) = &cfg.tls.client_ca {
            warnings.extend(purpose::client_ca_warnings(file, &client.ca_certs));
        }
        for ca in &client.ca_certs {
            let s = cert_summary(ca);
            if s.days_left < EXPIRY_WARNING_DAYS {
                warnings.push(format!(
                    "client CA {} expires in {} days ({})",
                    s.subject, s.days_left, s.not_after_text
                ));
            }
            client_cas.push(s);
        }
        for crl in &client.crls {
            crls.push(crl_summary(crl, now, &mut warnings, &mut notes));
        }
        if !client.crls.is_empty() {
            // A certificate that is no CA issues nothing to check: it has its own warning.
            for ca in client
                .ca_certs
                .iter()
                .filter(|c| purpose::not_a_ca(c).is_none())
            {
                let dn = rfc2253(ca.subject_name());
                if !client.crls.iter().any(|c| c.issuer_dn == dn) {
                    warnings.push(format!("no CRL loaded for CA {dn}: certificates it issued are not checked for revocation"));
                }
            }
        }
    } else {
        warnings.push("no client_ca: every request is anonymous".into());
    }
    if cfg.policy.is_none() {
        warnings.push("no policy: every verified certificate may do everything".into());
    }
    // Each compiled warning starts with the policy file; "policy" says what kind of file it is
    // among the listener's other warnings.
    if let Some(p) = policy {
        warnings.extend(p.warnings().iter().map(|w| format!("policy {w}")));
    }
    let policy = policy.map(policy_summary);
    if policy.as_ref().is_some_and(|p| p.mode == "audit") {
        warnings.push("policy mode is audit: denials are logged and forwarded".into());
    }
    ListenerReport {
        name: cfg.name.clone(),
        listen: cfg.listen.iter().map(|a| a.to_string()).collect(),
        upstream: cfg.upstream.url.clone(),
        client_auth: match cfg.tls.client_auth {
            ClientAuth::Optional => "optional",
            ClientAuth::Required => "required",
        },
        proxy_protocol: cfg.proxy_protocol.is_some(),
        server_certificate,
        client_cas,
        crls,
        files: trust
            .files
            .iter()
            .map(|f| FileSummary {
                path: f.path.display().to_string(),
                sha256: (f.path != cfg.tls.key
                    && cfg.tls.session_ticket_keys.as_deref() != Some(f.path.as_path()))
                .then(|| f.sha256.clone()),
            })
            .collect(),
        policy,
        session_ticket_keys,
        trust_generation: trust.generation,
        warnings,
        notes,
    }
}

/// One loaded CRL, with what an operator should know about it.
fn crl_summary(
    crl: &LoadedCrl,
    now: i64,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> CrlSummary {
    let expired = crl.is_expired(now);
    if expired {
        warnings.push(format!(
            "CRL of {} in {} is past its nextUpdate",
            crl.issuer_dn, crl.source
        ));
    } else if crl.next_update.is_some_and(|n| n - now < 86_400) {
        warnings.push(format!(
            "CRL of {} in {} reaches its nextUpdate within 24 hours",
            crl.issuer_dn, crl.source
        ));
    }
    if crl.signature.is_deferred() {
        notes.push(format!(
            "the CRL of {0} in {1} is not signed by a CA of client_ca: verified when a client presents {0}",
            crl.issuer_dn,
            crl.source
        ));
    }
    CrlSummary {
        file: crl.source.to_string(),
        issuer: crl.issuer_dn.clone(),
        this_update: crl.this_update,
        next_update: crl.next_update,
        next_update_text: crl.next_update.map(text_time),
        revoked: crl.revoked_count,
        expired,
        signature: crl.signature.describe(),
    }
}

fn policy_summary(p: &Policy) -> PolicySummary {
    PolicySummary {
        files: p.files().iter().map(|f| f.display().to_string()).collect(),
        sha256: p.sha256_hex().to_string(),
        mode: match p.mode() {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        },
        permissions: p.permission_count(),
        routes: p.route_count(),
        groups: p.group_count(),
        users: p.user_count(),
        users_from: p.users_from().as_str(),
        spiffe: p.spiffe_count(),
    }
}
