//! Closing a connection whose TLS handshake failed so that the client reads the alert.
//!
//! OpenSSL has written the alert by the time the handshake fails. Closing the socket at once
//! would throw away what the client still sends (a TLS 1.3 client sends its request right after
//! its Finished, before it reads the server's answer; a TLS 1.2 client's last flight may be
//! unread), and a close with unread data makes the kernel answer with a reset, which clients
//! then report instead of the alert (`curl: Connection reset by peer`). So the socket outlives
//! the TLS stream (Pingora drops that on failure; a duplicate of the descriptor keeps the
//! socket open), its write side is shut down after the alert, and what the client still sends
//! is read and dropped until it closes, for a short bounded time and amount.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The longest a refused client may keep the connection open after the alert. Clients close
/// as soon as they read it; this only bounds the ones that do not.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);
/// The most a refused client may still send before the connection is closed regardless.
pub const DRAIN_BYTES: usize = 256 * 1024;

/// A second handle on a connection's socket, taken before its handshake.
pub struct Linger(OwnedFd);

impl Linger {
    /// Duplicates the socket's descriptor; `None` if the process is out of descriptors (the
    /// connection then closes as before, with the alert but perhaps a reset after it).
    pub fn keep(io: &impl AsRawFd) -> Option<Linger> {
        // SAFETY: `io` owns the descriptor and is alive for this call; the duplicate is ours.
        let fd = unsafe { BorrowedFd::borrow_raw(io.as_raw_fd()) };
        fd.try_clone_to_owned().ok().map(Linger)
    }

    /// Sends FIN after what was written (the alert), then reads until the client closes,
    /// `DRAIN_TIME` passes or `DRAIN_BYTES` arrived; then closes.
    pub async fn close_after_alert(self) {
        // The descriptor shares the original's open file description, non-blocking included.
        let Ok(mut socket) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(self.0))
        else {
            return;
        };
        if socket.shutdown().await.is_err() {
            return;
        }
        drain(&mut socket).await;
    }
}

/// Reads and drops what the client still sends after certgate's last word, until it closes,
/// `DRAIN_TIME` passes or `DRAIN_BYTES` arrived: closing with unread data would reset the
/// connection and could destroy that word before the client reads it.
pub(super) async fn drain(io: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while drained < DRAIN_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}
