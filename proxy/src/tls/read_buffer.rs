//! How much OpenSSL reads from a client's socket at once. With read-ahead (the listener has no
//! read buffer of its own under TLS), one `recv` fills OpenSSL's record buffer; its default
//! holds one 16 KiB record, so a request body costs a system call per record. A larger buffer
//! takes several records per call. The buffer is still given back while a connection is idle
//! (`SSL_MODE_RELEASE_BUFFERS`), so idle connections pay nothing for its size.

use openssl::ssl::SslAcceptorBuilder;
use openssl_sys as ffi;

/// Four TLS records (and their overhead): one `recv` per 64 KiB of a request body.
pub const READ_BUFFER: usize = 4 * (16 * 1024 + 256);

extern "C" {
    fn SSL_CTX_set_default_read_buffer_len(ctx: *mut ffi::SSL_CTX, len: usize);
}

pub fn set(b: &mut SslAcceptorBuilder) {
    // SAFETY: the builder owns a valid SSL_CTX; the call only records a length in it.
    unsafe { SSL_CTX_set_default_read_buffer_len(b.as_ptr(), READ_BUFFER) }
}
