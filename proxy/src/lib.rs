//! certgate: a reverse-proxy sidecar on Pingora that puts mutual TLS in front of plain-HTTP
//! services. Data flows one way: connection ([`listener`]) → identity ([`tls`]) → decision
//! ([`policy`]) → upstream ([`proxy`]); `reload` swaps trust and policy underneath, `admin`
//! shows what is going on. Modules that the binary, the integration tests, the benches and the
//! fuzz targets do not use are private.
//!
//! Where a request is
//! - authenticated: `tls::verify` checks the chain at the handshake, `state::connection` keeps
//!   the identity with the connection and re-checks it against the trust state current at each
//!   request ([`proxy::Exchange`]'s decide step asks it);
//! - decided: [`policy::authorize`] gives the one [`policy::Verdict`], called from the decide
//!   step of `proxy/exchange.rs` (and by the tunnel re-check and `certgate explain`);
//! - forwarded: [`proxy::forward`], the direct path and the rule choosing it over Pingora's
//!   `HttpProxy`; what the upstream receives is `proxy::forward::headers`.
//!
//! Unit tests are the `#[cfg(test)] mod tests` of the module they test, written at the end of
//! its file, or, for a directory module whose tests run long, in `tests.rs` beside its `mod.rs`
//! (or `tests/`, one file per concern, each well under 500 lines).

mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod listener;
mod metrics;
pub mod pki;
pub mod policy;
pub mod proxy;
mod reload;
mod report;
mod server;
mod state;
mod status;
pub mod time;
pub mod tls;
