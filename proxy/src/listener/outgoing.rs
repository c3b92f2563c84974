//! An answer written from inside a stream wrapper's read path (the header guard's 431/408, the
//! HTTP/2 header clock's 408), where no HTTP session exists yet to write it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// The bytes of one answer and how many of them are written.
#[derive(Default)]
pub(crate) struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
}

impl Outgoing {
    pub(crate) fn new(bytes: Vec<u8>) -> Outgoing {
        Outgoing { bytes, written: 0 }
    }

    /// Writes what is left, then flushes. Ready once all is sent, or once the connection
    /// failed: nothing more can be done for the answer then, and the stream ends either way.
    pub(crate) fn poll_send<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        while self.written < self.bytes.len() {
            match Pin::new(&mut *inner).poll_write(cx, &self.bytes[self.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.written += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(inner).poll_flush(cx).map(|_| ())
    }
}
