//! The command line, as the README's command table documents it. `main` parses it and calls [`run`]; each command is a small
//! function that returns the process exit code.

mod check;
mod clients;
mod explain;
pub(crate) mod learn;
pub(crate) mod log_text;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use self::output::{printing, ClosedPipe};
use crate::config::{Config, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "certgate",
    version,
    about = "mTLS reverse-proxy sidecar: client certificates in, identity headers and per-route permissions out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Config file [env: CERTGATE_CONFIG; default ./certgate.yaml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| std::env::var_os("CERTGATE_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("certgate.yaml"))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve until SIGTERM/SIGINT (graceful drain).
    Run(ConfigArg),
    /// Validate config, policies and every certificate, key and CRL; print a summary.
    Check(ConfigArg),
    /// List the client certificates a running certgate has seen (its admin /clients), soonest expiry first.
    Clients(clients::ClientsArgs),
    /// Show why a request would be allowed or denied.
    Explain(explain::ExplainArgs),
    /// Throwaway PKI, an echo upstream, the proxy, and a scripted tour.
    Demo {
        /// Exit after the tour: 0 if every step behaved as expected.
        #[arg(long)]
        once: bool,
    },
    /// Development PKI: a CA, server and client certificates, a CRL.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Policy tools: learn grants from the access log.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// A plain-HTTP echo server (the demo's upstream; handy as a stand-in in compose files).
    #[command(hide = true)]
    Echo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Propose the grants that would allow the requests the policy refused (JSON access logs).
    Learn(learn::LearnArgs),
}

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Root CA (ca.pem, ca-key.pem), server certificate (server.pem, server-key.pem), empty CRL (crl.pem).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// O= of the CA and server certificate.
        #[arg(long)]
        org: Option<String>,
        /// DNS name or IP address of the server (repeat for several); default localhost and 127.0.0.1.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Client certificate with the clientAuth EKU (NAME.pem, NAME-key.pem).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cn: String,
        /// O= value, one group each (repeat for several).
        #[arg(long = "org")]
        orgs: Vec<String>,
        #[arg(long)]
        ou: Option<String>,
        /// URI SAN, e.g. a SPIFFE ID spiffe://example.org/ns/ci/sa/builder (repeat for several).
        #[arg(long = "uri")]
        uris: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// File name stem (default: the CN).
        #[arg(long)]
        out: Option<String>,
    },
    /// Add a certificate to the CA's CRL and rewrite crl.pem.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cert: PathBuf,
    },
}

/// Logging for commands other than `run`: warnings to stderr, RUST_LOG wins.
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging for `run`, from the config's `log:` section.
pub fn init_logging(format: LogFormat, level: &str) {
    // Pingora logs at error level what certgate logs and counts itself, with the request and
    // client it concerns: every failed downstream handshake (listening), every failed request
    // (proxy), and a pooled upstream connection it found busy before opening a new one
    // (connectors) in the middle of ordinary keep-alive traffic. RUST_LOG brings them back.
    let default = format!(
        "{level},pingora_core::services::listening=off,pingora_proxy=off,pingora_core::connectors=off"
    );
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.fmt_fields(log_text::QuotedFields).try_init(),
    };
}

fn load_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(&arg.path()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(arg) => {
            let config = match load_config(&arg) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(config.log.format, &config.log.level);
            match crate::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check(arg) => {
            init_cli_logging();
            printing(1, ClosedPipe::Die, || check::check(&arg.path()))
        }
        Command::Clients(args) => {
            init_cli_logging();
            printing(2, ClosedPipe::Die, || clients::clients(&args))
        }
        Command::Explain(args) => {
            init_cli_logging();
            printing(2, ClosedPipe::Die, || explain::explain(&args))
        }
        Command::Demo { once } => {
            init_cli_logging();
            printing(1, ClosedPipe::CleanUpThenDie, || crate::demo::run(once))
        }
        Command::Echo { listen } => {
            init_cli_logging();
            match crate::demo::echo::serve_blocking(&listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Policy(PolicyCommand::Learn(args)) => {
            init_cli_logging();
            printing(2, ClosedPipe::Die, || learn::learn(&args))
        }
        Command::Pki(cmd) => {
            init_cli_logging();
            printing(1, ClosedPipe::Die, || pki(cmd))
        }
    }
}

fn pki(cmd: PkiCommand) -> ExitCode {
    let result = match cmd {
        PkiCommand::Init { dir, org, names } => crate::pki::init(&dir, org.as_deref(), &names),
        PkiCommand::Issue {
            dir,
            cn,
            orgs,
            ou,
            uris,
            days,
            out,
        } => crate::pki::issue_client_with_uris(
            &dir,
            &cn,
            &orgs,
            ou.as_deref(),
            &uris,
            days,
            out.as_deref(),
        )
        .map(|_| ()),
        PkiCommand::Revoke { dir, cert } => crate::pki::revoke(&dir, &cert),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
