//! An HTTP/1.1 response head held back to leave with the first piece of its body: Pingora
//! writes the head and the body in separate writes, and each write to a TLS stream is a TLS
//! record of its own (its own encryption, its own `SSL_write`). A small response then costs two
//! records where one does, as NGINX's and HAProxy's output buffers send it. Held only when the
//! proxy says a body follows, and only until the next write (or a flush): a streamed body is
//! never delayed beyond the head.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// The most held back: one TLS record's worth of plaintext.
const MAX_HELD: usize = 16 * 1024;

#[derive(Debug, Default)]
pub(super) struct Coalesce {
    /// The held bytes; empty (no memory) while nothing is held.
    held: Vec<u8>,
    /// How much of `held` has been written.
    sent: usize,
    /// `held` is being written out; nothing more joins it.
    sending: bool,
}

impl Coalesce {
    /// Writes `data` to `inner`: held when `hold` (the head), joined to what is held and sent
    /// with it otherwise. Bytes accepted into the held buffer count as written, as with any
    /// buffered writer; whatever the socket did not take goes out before the next write, and on
    /// flush or shutdown.
    pub(super) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        data: &[u8],
        hold: bool,
    ) -> Poll<io::Result<usize>> {
        if self.sending {
            ready!(self.poll_drain(inner, cx))?;
        }
        if self.held.is_empty() {
            if hold && !data.is_empty() && data.len() <= MAX_HELD {
                self.held.extend_from_slice(data);
                return Poll::Ready(Ok(data.len()));
            }
            return Pin::new(inner).poll_write(cx, data);
        }
        if self.held.len() + data.len() > MAX_HELD {
            // Too much to join: the held head goes first, then `data` as it is.
            ready!(self.poll_drain(inner, cx))?;
            return Pin::new(inner).poll_write(cx, data);
        }
        self.held.extend_from_slice(data);
        match self.poll_drain(inner, cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Accepted either way: the rest leaves before anything else is written.
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(data.len())),
        }
    }

    /// Writes out whatever is held.
    pub(super) fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.sending = !self.held.is_empty();
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Released, not kept: an idle connection holds no buffer.
        *self = Coalesce::default();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// Records each write as one piece, as a TLS stream makes each write a record.
    #[derive(Default)]
    struct Records(Vec<Vec<u8>>);

    impl AsyncWrite for Records {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write(c: &mut Coalesce, out: &mut Records, data: &[u8], hold: bool) -> usize {
        poll_fn(|cx| c.poll_write(out, cx, data, hold))
            .await
            .expect("write")
    }

    #[tokio::test]
    async fn a_held_head_leaves_with_the_first_body_piece_in_one_write() {
        let (mut c, mut out) = (Coalesce::default(), Records::default());
        assert_eq!(write(&mut c, &mut out, b"HEAD\r\n\r\n", true).await, 8);
        assert!(out.0.is_empty());
        assert_eq!(write(&mut c, &mut out, b"body", false).await, 4);
        assert_eq!(write(&mut c, &mut out, b"more", false).await, 4);
        assert_eq!(out.0, [b"HEAD\r\n\r\nbody".to_vec(), b"more".to_vec()]);
        assert_eq!(c.held.capacity(), 0, "nothing kept once sent");
    }

    #[tokio::test]
    async fn a_flush_sends_a_held_head_and_a_large_body_goes_after_it_alone() {
        let (mut c, mut out) = (Coalesce::default(), Records::default());
        write(&mut c, &mut out, b"HEAD", true).await;
        poll_fn(|cx| c.poll_drain(&mut out, cx))
            .await
            .expect("drain");
        assert_eq!(out.0, [b"HEAD".to_vec()]);

        let (mut c, mut out) = (Coalesce::default(), Records::default());
        write(&mut c, &mut out, b"HEAD", true).await;
        let big = vec![b'x'; MAX_HELD];
        assert_eq!(write(&mut c, &mut out, &big, false).await, MAX_HELD);
        assert_eq!(out.0, [b"HEAD".to_vec(), big]);
    }

    /// A socket that takes at most 3 bytes a write, and nothing every other call.
    struct Slow {
        got: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Slow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = data.len().min(3);
            self.got.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_lose_and_reorder_nothing() {
        let mut c = Coalesce::default();
        let mut out = Slow {
            got: Vec::new(),
            calls: 0,
        };
        let mut sent = Vec::new();
        for (data, hold) in [
            (&b"HTTP/1.1 200 OK\r\n\r\n"[..], true),
            (b"0123456789", false),
            (b"abc", false),
        ] {
            let mut rest = data;
            while !rest.is_empty() {
                let n = poll_fn(|cx| c.poll_write(&mut out, cx, rest, hold))
                    .await
                    .expect("write");
                sent.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
        poll_fn(|cx| c.poll_drain(&mut out, cx))
            .await
            .expect("drain");
        assert_eq!(out.got, sent);
    }
}
