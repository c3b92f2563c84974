//! `certgate explain`: the decision for one request, with everything behind it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use openssl::x509::X509;

use crate::cli::ConfigArg;
use crate::config::{ClientAuth, Config, ListenerConfig};
use crate::policy::{authorize, parse_target, Explanation, Policy, Principal};
use crate::tls::identity::Identity;
use crate::tls::revocation::Revocation;
use crate::tls::trust::TrustState;
use crate::tls::verify::AuthFailure;

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

pub(crate) fn explain(args: &ExplainArgs) -> ExitCode {
    let method = match request_method(&args.method) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
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
    if let Some(upper) = case_hint(method) {
        println!(
            "note: methods are case-sensitive (RFC 9110 §9.1), so the proxy decides on {method} as written: did you mean {upper}?"
        );
    }

    let identity = match &args.cert {
        None => Err(AuthFailure::NoCertificate),
        Some(file) => match certificate(file, listener) {
            Ok(identity) => identity,
            Err(code) => return code,
        },
    };
    let policy = match &listener.policy {
        None => None,
        Some(file) => match Policy::load(file) {
            Ok(p) => Some((file, p)),
            Err(e) => return fail(e),
        },
    };
    // The proxy's own verdict (explain has no root token to offer).
    let verdict = authorize(
        crate::state::asker::asker(identity.as_ref().map_err(|f| *f)),
        policy.as_ref().map(|(_, p)| p),
        false,
        method,
        &path,
    );
    let rule = match &policy {
        None if identity.is_ok() => {
            println!("policy: none on this listener: every verified certificate is allowed");
            None
        }
        None => {
            println!("policy: none on this listener: requests without a valid certificate get 401");
            None
        }
        Some((file, policy)) => {
            let principal = identity
                .as_ref()
                .map_or(Principal::Anonymous, crate::state::asker::principal);
            let e = policy.explain(&principal, method, &path);
            print_explanation(file, &e, method, &path);
            Some(e.rule)
        }
    };
    // Audit mode forwards a denial, but the policy's decision is what explain reports.
    let allowed = match (verdict.refusal(), &identity) {
        // Under `required` a client without a valid certificate never reaches the policy (not
        // even its anonymous grants): the handshake fails.
        (_, Err(failure)) if listener.tls.client_auth == ClientAuth::Required => {
            println!(
                "decision: DENY (in the TLS handshake, client_auth: required: the client gets the alert {}, logged and counted as `{}`)",
                handshake_alert(*failure),
                failure.reason()
            );
            false
        }
        (None, _) => {
            println!("decision: ALLOW");
            true
        }
        (Some(refusal), _) => {
            println!("decision: DENY ({})", refusal.status());
            false
        }
    };
    let refused_in_handshake =
        identity.is_err() && listener.tls.client_auth == ClientAuth::Required;
    if refused_in_handshake {
        println!("rule: client_auth: required refuses a client without a valid certificate in the handshake, before any policy rule");
    } else if let Some(rule) = rule {
        println!("rule: {rule}");
    }
    ExitCode::from(if allowed { ALLOW } else { DENY })
}

/// The method exactly as the proxy would see it on the request line: never case-folded, since
/// Pingora hands the proxy the method as sent and routes match it case-sensitively, so `get`
/// is denied where `GET` is allowed. A value no request line could carry is an error.
fn request_method(arg: &str) -> Result<&str, String> {
    if arg.is_empty() {
        return Err("--method is empty: give the request's method, e.g. --method GET".into());
    }
    match http::Method::from_bytes(arg.as_bytes()) {
        Ok(_) => Ok(arg),
        Err(_) => Err(format!(
            "--method {arg:?} is not an HTTP method: a method is one token of letters, digits and !#$%&'*+-.^_`|~ (RFC 9110 §9.1), e.g. --method GET"
        )),
    }
}

/// The upper-case spelling of a method written with lower-case letters, which the operator
/// most likely meant.
fn case_hint(method: &str) -> Option<String> {
    let upper = method.to_ascii_uppercase();
    (upper != method).then_some(upper)
}

/// Reads the client certificate and verifies it against the listener's trust state, printing
/// what it holds. The identity when it verifies, else why not; the exit code on an error.
fn certificate(
    file: &Path,
    listener: &ListenerConfig,
) -> Result<Result<Identity, AuthFailure>, ExitCode> {
    let pem = std::fs::read(file).map_err(|e| fail(format!("{}: {e}", file.display())))?;
    let chain = match X509::stack_from_pem(&pem) {
        Ok(c) if !c.is_empty() => c,
        _ => {
            return Err(fail(format!(
                "{}: no PEM certificate in it",
                file.display()
            )))
        }
    };
    // `explain` fetches nothing: the trust state of the files alone, with revocation state of
    // its own that is never used.
    let trust =
        TrustState::load(&listener.tls, &listener.name, &[], &Revocation::new()).map_err(fail)?;
    let identity =
        Identity::from_x509(&chain[0]).map_err(|e| fail(format!("{}: {e}", file.display())))?;
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
    if !(identity.uri_sans.is_empty()
        && identity.dns_sans.is_empty()
        && identity.email_sans.is_empty())
    {
        println!(
            "  URI SANs: {:?}  DNS SANs: {:?}  email SANs: {:?}",
            identity.uri_sans, identity.dns_sans, identity.email_sans
        );
    }
    Ok(match trust.reverify(&chain) {
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
            Ok(identity)
        }
        Err(f) => {
            println!(
                "  verification: FAILED ({}): the request is anonymous",
                f.reason()
            );
            Err(f)
        }
    })
}

/// The policy's side: groups, held permissions and the routes covering the request.
/// The TLS alert OpenSSL sends for `failure` when `client_auth: required` refuses it in the
/// handshake (its mapping of the verify code certgate sets, `AuthFailure::verify_code`).
fn handshake_alert(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::NoCertificate => {
            "`certificate required` (TLS 1.3; `handshake failure` on TLS 1.2)"
        }
        AuthFailure::UnknownCa => "`unknown ca`",
        AuthFailure::Expired | AuthFailure::CrlExpired => "`certificate expired`",
        AuthFailure::Revoked => "`certificate revoked`",
        AuthFailure::NotYetValid => "`bad certificate`",
        AuthFailure::RevocationUnknown | AuthFailure::BadCertificate => "`handshake failure`",
    }
}

fn print_explanation(file: &Path, e: &Explanation, method: &str, path: &str) {
    println!("policy: {}", file.display());
    println!(
        "groups: {}",
        if e.groups.is_empty() {
            "(none)".into()
        } else {
            e.groups.join(", ")
        }
    );
    if e.users_from != "cn" {
        println!(
            "users from {}: {}",
            e.users_from,
            if e.user_keys.is_empty() {
                "(none)".into()
            } else {
                e.user_keys.join(", ")
            }
        );
    }
    if let Some(id) = &e.spiffe_id {
        println!("SPIFFE ID: {id}");
    }
    if let Some(note) = &e.spiffe_note {
        println!("SPIFFE ID: none: {note}");
    }
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
}
