//! `certgate explain`: the decision for one request, with everything behind it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use openssl::x509::X509;

use crate::cli::ConfigArg;
use crate::config::Config;
use crate::policy::{parse_target, Policy, Principal};
use crate::tls::identity::Identity;
use crate::tls::trust::TrustState;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["cert", "anonymous"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long)]
    pub listener: String,
    #[arg(long)]
    pub method: String,
    #[arg(long)]
    pub path: String,
    /// The client certificate (PEM; intermediates may follow the leaf).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// A request without a valid certificate.
    #[arg(long)]
    pub anonymous: bool,
}

const ALLOW: u8 = 0;
const DENY: u8 = 1;
const ERROR: u8 = 2;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(ERROR)
}

pub fn explain(args: &ExplainArgs) -> ExitCode {
    let config = match Config::load(&args.config.path()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(listener) = config.listeners.iter().find(|l| l.name == args.listener) else {
        let names: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        return fail(format!(
            "no listener `{}`; the config has: {}",
            args.listener,
            names.join(", ")
        ));
    };
    let method = args.method.to_ascii_uppercase();
    let query_free = args.path.split('?').next().unwrap_or("");
    // The proxy's own reading of a request target, with this listener's path_params.
    let path = match parse_target(query_free.as_bytes(), None, listener.path_params) {
        Ok(t) => t.path().to_string(),
        Err(e) => {
            println!("request: {method} {}", args.path);
            println!("decision: DENY (400 Bad Request: {})", e.reason());
            return ExitCode::from(DENY);
        }
    };
    println!(
        "listener: {} (upstream {})",
        listener.name, listener.upstream.url
    );
    println!(
        "request: {method} {path}{}",
        if path != query_free {
            format!("  (normalised from {query_free})")
        } else {
            String::new()
        }
    );

    let identity = match &args.cert {
        None => None,
        Some(file) => {
            let pem = match std::fs::read(file) {
                Ok(p) => p,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            let chain = match X509::stack_from_pem(&pem) {
                Ok(c) if !c.is_empty() => c,
                _ => return fail(format!("{}: no PEM certificate in it", file.display())),
            };
            let trust = match TrustState::load(&listener.tls, 1) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            let identity = match Identity::from_x509(&chain[0]) {
                Ok(i) => i,
                Err(e) => return fail(format!("{}: {e}", file.display())),
            };
            println!("certificate: {}", identity.subject_dn);
            println!("  issuer: {}", identity.issuer_dn);
            println!(
                "  serial: {}  sha256: {}",
                identity.serial_hex, identity.fingerprint_sha256
            );
            println!(
                "  user (CN): {}",
                identity.user.as_deref().unwrap_or("(none)")
            );
            println!(
                "  O: {:?}  OU: {:?}",
                identity.organizations, identity.org_units
            );
            match trust.reverify(&chain) {
                Ok(()) => {
                    println!(
                        "  verification: OK against {}",
                        listener
                            .tls
                            .client_ca
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    );
                    Some(identity)
                }
                Err(f) => {
                    println!(
                        "  verification: FAILED ({}): the request is anonymous",
                        f.reason()
                    );
                    None
                }
            }
        }
    };
    let principal = match &identity {
        Some(id) => Principal::Certificate {
            user: id.user.as_deref(),
            organizations: &id.organizations,
            org_units: &id.org_units,
        },
        None => Principal::Anonymous,
    };
    let Some(policy_file) = &listener.policy else {
        return if identity.is_some() {
            println!("policy: none on this listener: every verified certificate is allowed");
            println!("decision: ALLOW");
            ExitCode::from(ALLOW)
        } else {
            println!("policy: none on this listener: requests without a valid certificate get 401");
            println!("decision: DENY (401)");
            ExitCode::from(DENY)
        };
    };
    let policy = match Policy::load(policy_file) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let e = policy.explain(&principal, &method, &path);
    println!("policy: {}", policy_file.display());
    println!(
        "groups: {}",
        if e.groups.is_empty() {
            "(none)".into()
        } else {
            e.groups.join(", ")
        }
    );
    println!("held permissions:");
    if e.held_from.is_empty() {
        println!("  (none)");
    }
    for (perm, source) in &e.held_from {
        println!("  {perm}  (from {source})");
    }
    println!("permissions covering {method} {path}:");
    if e.covering_routes.is_empty() {
        println!("  (none)");
    }
    for (perm, route) in &e.covering_routes {
        println!("  {perm}  (route \"{route}\")");
    }
    let code = if e.allowed {
        ""
    } else if identity.is_some() {
        " (403)"
    } else {
        " (401)"
    };
    println!(
        "decision: {}{code}",
        if e.allowed { "ALLOW" } else { "DENY" }
    );
    println!("rule: {}", e.rule);
    ExitCode::from(if e.allowed { ALLOW } else { DENY })
}
