//! How much OpenSSL reads from a client's socket at once, and how much of it one read hands on.
//! With read-ahead (the listener has no read buffer of its own under TLS), one `recv` fills
//! OpenSSL's record buffer; its default holds one 16 KiB record, so a request body costs a
//! system call per record. A larger buffer takes several records per call. The buffer is still
//! given back while a connection is idle (`SSL_MODE_RELEASE_BUFFERS`), so idle connections pay
//! nothing for its size.
//!
//! One `SSL_read` returns one record, though: without [`poll_read_records`] a 64 KiB read of a
//! request body would carry 16 KiB, and each 16 KiB would become its own write to the upstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslAcceptorBuilder;
use openssl_sys as ffi;
use pingora::protocols::Ssl;
use tokio::io::{AsyncRead, ReadBuf};

/// Four TLS records (and their overhead): one `recv` per 64 KiB of a request body.
pub const READ_BUFFER: usize = 4 * (16 * 1024 + 256);

extern "C" {
    fn SSL_CTX_set_default_read_buffer_len(ctx: *mut ffi::SSL_CTX, len: usize);
    fn SSL_has_pending(ssl: *const ffi::SSL) -> std::os::raw::c_int;
}

pub fn set(b: &mut SslAcceptorBuilder) {
    // SAFETY: the builder owns a valid SSL_CTX; the call only records a length in it.
    unsafe { SSL_CTX_set_default_read_buffer_len(b.as_ptr(), READ_BUFFER) }
}

/// Reads from a TLS stream into `buf`, then goes on reading while OpenSSL already holds more of
/// the client's bytes (records that arrived in the same `recv`), until `buf` is full. A later
/// read that cannot complete from what is held ends the loop with the bytes already read: it
/// found nothing to add, and the error or wait it met comes back on the next call (OpenSSL's
/// errors on a connection are lasting, and a pending read has registered its wake-up).
pub fn poll_read_records<S>(
    inner: &mut S,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<std::io::Result<()>>
where
    S: AsyncRead + Ssl + Unpin,
{
    let start = buf.filled().len();
    let first = Pin::new(&mut *inner).poll_read(cx, buf);
    if !matches!(first, Poll::Ready(Ok(()))) || buf.filled().len() == start {
        return first;
    }
    while buf.remaining() > 0 && holds_more(inner) {
        let before = buf.filled().len();
        match Pin::new(&mut *inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {}
            _ => break,
        }
    }
    Poll::Ready(Ok(()))
}

/// OpenSSL holds bytes of this connection that a read can return without the socket: decrypted
/// ones, or records read ahead and not yet processed.
fn holds_more<S: Ssl>(stream: &S) -> bool {
    stream.get_ssl().is_some_and(|ssl| {
        // SAFETY: `ssl` is a live SSL owned by the stream; the call only reads its buffers.
        unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self_signed_ca, CertSpec};
    use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
    use pingora::protocols::tls::SslStream;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    const RECORD: usize = 16 * 1024;

    /// A TLS server stream with this module's read buffer, and a client that has already sent
    /// four full records and closed, so every byte is waiting in the socket.
    async fn four_records_sent() -> SslStream<TcpStream> {
        let server = self_signed_ca(&CertSpec {
            subject: vec![("CN".into(), "localhost".into())],
            ..CertSpec::default()
        })
        .expect("certificate");
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("ctx");
        acceptor.set_certificate(&server.cert).expect("cert");
        acceptor.set_private_key(&server.key).expect("key");
        // As the listener's acceptor does: read ahead, into this module's buffer.
        acceptor.set_read_ahead(true);
        set(&mut acceptor);
        let acceptor = acceptor.build();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut c = SslConnector::builder(SslMethod::tls()).expect("client ctx");
            c.set_verify(SslVerifyMode::NONE);
            let ssl = c
                .build()
                .configure()
                .expect("cfg")
                .into_ssl("localhost")
                .expect("ssl");
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = SslStream::new(ssl, tcp).expect("client stream");
            std::pin::Pin::new(&mut tls)
                .connect()
                .await
                .expect("client handshake");
            for i in 0..4u8 {
                tls.write_all(&[i; RECORD]).await.expect("write");
            }
            tls.shutdown().await.expect("close");
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let ssl = openssl::ssl::Ssl::new(acceptor.context()).expect("ssl");
        let mut tls = SslStream::new(ssl, tcp).expect("server stream");
        std::pin::Pin::new(&mut tls)
            .accept()
            .await
            .expect("handshake");
        client.await.expect("client");
        tls
    }

    #[tokio::test]
    async fn one_read_returns_every_record_already_received() {
        let mut tls = four_records_sent().await;
        let mut space = vec![0u8; 4 * RECORD];
        let mut buf = ReadBuf::new(&mut space);
        poll_fn(|cx| poll_read_records(&mut tls, cx, &mut buf))
            .await
            .expect("read");
        // A plain read stops after the first record; this one takes all four.
        assert_eq!(buf.filled().len(), 4 * RECORD);
        assert!(buf.filled()[3 * RECORD..].iter().all(|b| *b == 3));
    }

    #[tokio::test]
    async fn a_plain_read_returns_one_record() {
        // The behaviour poll_read_records exists for: if this starts returning more, it can go.
        let mut tls = four_records_sent().await;
        let mut space = vec![0u8; 4 * RECORD];
        let mut buf = ReadBuf::new(&mut space);
        poll_fn(|cx| Pin::new(&mut tls).poll_read(cx, &mut buf))
            .await
            .expect("read");
        assert_eq!(buf.filled().len(), RECORD);
    }

    #[tokio::test]
    async fn the_end_of_the_stream_still_reads_as_zero_bytes() {
        let mut tls = four_records_sent().await;
        let mut space = vec![0u8; 4 * RECORD];
        let mut total = 0;
        loop {
            let mut buf = ReadBuf::new(&mut space);
            poll_fn(|cx| poll_read_records(&mut tls, cx, &mut buf))
                .await
                .expect("read");
            if buf.filled().is_empty() {
                break;
            }
            total += buf.filled().len();
        }
        assert_eq!(total, 4 * RECORD);
    }
}
