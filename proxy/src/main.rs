//! certgate: mutual TLS in front of plain-HTTP services.

use clap::Parser;

fn main() -> std::process::ExitCode {
    certgate::cli::run(certgate::cli::Cli::parse())
}
