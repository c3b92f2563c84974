//! TLS termination and client identity: the acceptor, the trust store it verifies against, and
//! the identity read from a verified certificate.

pub mod acceptor;
pub mod coverage;
pub mod dn;
pub mod identity;
pub mod read_buffer;
pub mod resumption;
pub mod revocation;
pub mod trust;
pub mod verify;
