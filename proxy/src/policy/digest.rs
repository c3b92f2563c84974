//! SHA-256 of the policy bytes (the policy hash shown in `/status`). One line to swap.

/// Lower-case hex SHA-256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}
