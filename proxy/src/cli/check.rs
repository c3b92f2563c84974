//! `certgate check`: everything `run` would load, loaded and reported, without serving.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::report::{listener_report, ListenerReport};
use crate::state::load_listener;
use crate::tls::acceptor::ListenerTls;
use crate::tls::revocation::Revocation;

pub(crate) fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("config {}: OK", config.path.display());
    if let Some(admin) = config.admin {
        println!("admin http://{admin} (/healthz /readyz /status /metrics /clients)");
    }
    let mut failed = false;
    // `check` fetches nothing and never handshakes: revocation state of its own, never used.
    let revocation = Revocation::new();
    for l in &config.listeners {
        // What `run` loads, loaded once: the report reads the same trust state the acceptor
        // was built on. `check` fetches nothing, so no fetched CRL is part of it.
        let listener = match load_listener(l, &[], &revocation) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        if let Err(e) = ListenerTls::new(
            &l.name,
            &l.tls,
            l.timeouts.handshake,
            listener.trust.clone(),
            revocation.clone(),
        ) {
            eprintln!("error: {}: listener {}: {e}", config.path.display(), l.name);
            failed = true;
            continue;
        }
        let policy = listener.policy.load_full();
        let trust = listener.trust.load();
        print_report(&listener_report(l, &trust, policy.as_deref()));
        let cas = trust.client.as_ref().map_or(&[][..], |c| &c.ca_certs[..]);
        let crl_issuers: Vec<String> = trust
            .client
            .as_ref()
            .map(|c| c.crls.iter().map(|crl| crl.issuer_dn.clone()).collect())
            .unwrap_or_default();
        for (warning, line) in crate::tls::revocation::probe::report(&l.tls, cas, &crl_issuers) {
            println!("  {}{line}", if warning { "warning: " } else { "" });
        }
    }
    if failed {
        eprintln!("check failed");
        ExitCode::from(1)
    } else {
        println!("check passed");
        ExitCode::SUCCESS
    }
}

fn print_report(r: &ListenerReport) {
    println!();
    println!(
        "listener {}: {} -> {}",
        r.name,
        r.listen.join(", "),
        r.upstream
    );
    println!(
        "  client_auth: {}{}",
        r.client_auth,
        if r.proxy_protocol {
            ", PROXY protocol"
        } else {
            ""
        }
    );
    let s = &r.server_certificate;
    println!("  server certificate: {}", s.subject);
    println!(
        "    SANs: {}",
        if s.sans.is_empty() {
            "(none)".into()
        } else {
            s.sans.join(", ")
        }
    );
    println!(
        "    notAfter: {} ({} days left)",
        s.not_after_text, s.days_left
    );
    for ca in &r.client_cas {
        println!(
            "  client CA: {} (notAfter {}, {} days left)",
            ca.subject, ca.not_after_text, ca.days_left
        );
    }
    for crl in &r.crls {
        println!(
            "  CRL: {} from {}: {} revoked, nextUpdate {}{}, signature {}",
            crl.issuer,
            crl.file,
            crl.revoked,
            crl.next_update_text.as_deref().unwrap_or("(none)"),
            if crl.expired { " (EXPIRED)" } else { "" },
            crl.signature
        );
    }
    if let Some(k) = &r.session_ticket_keys {
        println!(
            "  session ticket keys: {} from {} (the first encrypts)",
            k.keys, k.file
        );
    }
    match &r.policy {
        Some(p) => println!(
            "  policy: {} ({}): {} permissions, {} routes, {} groups, {} users{}, {} spiffe patterns, sha256 {}",
            p.files.first().map(String::as_str).unwrap_or(""),
            p.mode,
            p.permissions,
            p.routes,
            p.groups,
            p.users,
            if p.users_from == "cn" {
                String::new()
            } else {
                format!(" (from {})", p.users_from)
            },
            p.spiffe,
            &p.sha256[..p.sha256.len().min(16)]
        ),
        None => println!("  policy: none (every verified certificate is allowed)"),
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
}
