//! `certgate demo`: the whole product in one command (filled in below).
pub mod echo;

pub fn run(_once: bool) -> std::process::ExitCode {
    std::process::ExitCode::from(1)
}
