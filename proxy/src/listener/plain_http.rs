//! Plain HTTP sent to a TLS listener (`curl http://` to the mTLS port). OpenSSL would fail such
//! a handshake without a word the client understands (curl: "Empty reply from server"), so the
//! connection's first bytes are looked at before the handshake: a TLS client's start with a
//! record header (0x16), an HTTP/1 client's with a method token and a space. The latter get
//! NGINX's answer in certgate's error shape. The bytes read to tell them apart are put back for
//! OpenSSL, so a TLS client's handshake sees the stream it sent.

use pingora::protocols::l4::stream::Stream as TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::alert_close;
use crate::proxy::errors;

/// The 400's `reason`.
pub(super) const REASON: &str = "plain HTTP sent to the TLS port; use https://";

/// The longest method token looked for. The longest registered method (`BASELINE-CONTROL`) has
/// 16 characters; past this many the bytes are no request line and OpenSSL may judge them.
const METHOD_MAX: usize = 20;

/// What a connection's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum First {
    /// Anything but a plain HTTP request line, TLS included: the handshake decides.
    Other,
    /// A plain HTTP request line with this method (ASCII, at most `METHOD_MAX` bytes).
    PlainHttp(String),
    /// Nothing telling arrived before the handshake's deadline.
    TimedOut,
}

/// Reads the first bytes of `io` (at most `METHOD_MAX` + 1, until `deadline`), puts them back
/// and says what they are.
pub(super) async fn sniff(io: &mut TcpStream, deadline: Instant) -> First {
    let mut buf = [0u8; METHOD_MAX + 1];
    let mut have = 0;
    let first = loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf[have..])).await {
            Err(_) => break First::TimedOut,
            // The end or an error: the handshake meets it and fails as it always did.
            Ok(Ok(0)) | Ok(Err(_)) => break First::Other,
            Ok(Ok(n)) => have += n,
        }
        if let Some(first) = judge(&buf[..have]) {
            break first;
        }
    };
    io.rewind(&buf[..have]);
    first
}

/// What `prefix` is, or None while it could still be either.
fn judge(prefix: &[u8]) -> Option<First> {
    // Methods are case-sensitive and every registered one is upper case; a TLS record starts
    // with its type (0x16 for a ClientHello), never a letter.
    if !prefix.first()?.is_ascii_uppercase() {
        return Some(First::Other);
    }
    for (i, &b) in prefix.iter().enumerate() {
        match b {
            b' ' => {
                return Some(First::PlainHttp(
                    String::from_utf8_lossy(&prefix[..i]).into_owned(),
                ))
            }
            _ if i >= METHOD_MAX => return Some(First::Other),
            b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return Some(First::Other),
        }
    }
    None
}

/// Answers the plain request with a 400 and `connection: close`, then ends the connection as a
/// refused handshake ends (write side shut, what the client still sends read and dropped, for
/// a bounded time and amount), so the client reads the answer rather than a reset.
pub(super) async fn refuse(mut io: TcpStream, deadline: Instant) {
    // No HSTS: a server must not send it over plain HTTP (RFC 6797 §7.2).
    let answer = errors::http1_bytes(400, REASON, None);
    let written = tokio::time::timeout_at(deadline, async {
        io.write_all(&answer).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    alert_close::drain(&mut io).await;
}

#[cfg(test)]
mod tests {
    use super::{judge, First};

    #[test]
    fn tls_and_plain_http_are_told_apart_from_their_first_bytes() {
        let plain = |m: &str| Some(First::PlainHttp(m.to_string()));
        assert_eq!(judge(b"\x16\x03\x01\x02\x00\x01"), Some(First::Other));
        assert_eq!(judge(b"GET / HTTP/1.1\r\n"), plain("GET"));
        assert_eq!(judge(b"POST "), plain("POST"));
        assert_eq!(judge(b"BASELINE-CONTROL /x"), plain("BASELINE-CONTROL"));
        assert_eq!(judge(b"PRI * HTTP/2.0\r\n"), plain("PRI"));
        // Not yet decidable: a method still arriving.
        assert_eq!(judge(b""), None);
        assert_eq!(judge(b"GE"), None);
        assert_eq!(judge(b"OPTIONS"), None);
        // Not a request line: left to the handshake, which fails it as before.
        assert_eq!(judge(b"get / HTTP/1.1"), Some(First::Other));
        assert_eq!(judge(b" GET /"), Some(First::Other));
        assert_eq!(judge(b"GET\r\n"), Some(First::Other));
        assert_eq!(judge(b"G\x00T /"), Some(First::Other));
        assert_eq!(judge(b"SSH-2.0-OpenSSH_9.2"), Some(First::Other));
        assert_eq!(judge(&[b'A'; 21]), Some(First::Other));
        assert_eq!(judge(&[b'A'; 20]), None);
        let mut long = vec![b'A'; 20];
        long.push(b' ');
        assert_eq!(judge(&long), plain(&"A".repeat(20)));
    }
}
