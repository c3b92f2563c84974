//! `limits.header_read` for HTTP/2: a client gets that long to send a whole header block (a
//! HEADERS frame and its CONTINUATIONs, from the HEADERS frame's first byte to the end of the
//! one carrying END_HEADERS). The h2 crate waits for a block's end without a bound, and no
//! other frame may come between its frames, so a client sending one slowly holds the
//! connection; the HTTP/1.1 header guard does not see HTTP/2 framing.
//!
//! The clock watches the frame headers of what the h2 layer reads. When it runs out, it answers
//! the stream whose block is late with the JSON 408 itself (HEADERS and DATA frames, written
//! between two of the server's own frames, the header block as HPACK literals that leave the
//! compression state alone), sends GOAWAY and ends the connection: the block can never be
//! finished on it. The answer is logged and counted as every other.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::outgoing::Outgoing;
use crate::proxy::access_log::{self, Early, RequestLine};
use crate::proxy::errors;

/// The client connection preface, before its first frame.
const PREFACE: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where a byte stream of frames stands: inside the frame header (`header` bytes of it seen)
/// or its payload (`left` bytes to go).
#[derive(Debug, Default)]
struct Frames {
    skip: usize,
    header: [u8; FRAME_HEADER],
    seen: usize,
    left: usize,
}

enum Event<'a> {
    Head(&'a FrameHead),
    End,
}

/// What one frame header said, once complete.
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
    length: usize,
}

impl Frames {
    /// Walks `data`, telling `on` of each frame header completed and each frame ended.
    fn walk(&mut self, mut data: &[u8], mut on: impl FnMut(Event<'_>)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            } else if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                if self.left == 0 {
                    on(Event::End);
                }
            } else {
                let n = (FRAME_HEADER - self.seen).min(data.len());
                self.header[self.seen..self.seen + n].copy_from_slice(&data[..n]);
                self.seen += n;
                data = &data[n..];
                if self.seen == FRAME_HEADER {
                    self.seen = 0;
                    let h = &self.header;
                    let head = FrameHead {
                        length: (usize::from(h[0]) << 16)
                            | (usize::from(h[1]) << 8)
                            | usize::from(h[2]),
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    };
                    self.left = head.length;
                    on(Event::Head(&head));
                    if head.length == 0 {
                        on(Event::End);
                    }
                }
            }
        }
    }

    /// Between two frames: something else can be written without splitting one.
    fn at_boundary(&self) -> bool {
        self.seen == 0 && self.left == 0
    }
}

enum State {
    Watching,
    /// Writing the 408, GOAWAY included; `usize` bytes of it written.
    Refusing,
    Done,
}

pub(crate) struct HeaderClock<S> {
    inner: S,
    listener: Arc<str>,
    client: Option<IpAddr>,
    hsts: Option<http::HeaderValue>,
    limit: Duration,
    read: Frames,
    written: Frames,
    /// The stream whose header block is being read, and whether the frame being read ends it.
    block: Option<(u32, bool)>,
    since: Option<Instant>,
    deadline: Option<Pin<Box<Sleep>>>,
    state: State,
    refusal: Outgoing,
}

impl<S> std::fmt::Debug for HeaderClock<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderClock")
            .field("block", &self.block)
            .finish()
    }
}

impl<S> HeaderClock<S> {
    pub(crate) fn new(
        inner: S,
        listener: Arc<str>,
        client: Option<IpAddr>,
        hsts: Option<http::HeaderValue>,
        limit: Duration,
    ) -> Self {
        HeaderClock {
            inner,
            listener,
            client,
            hsts,
            limit,
            read: Frames {
                skip: PREFACE,
                ..Frames::default()
            },
            written: Frames::default(),
            block: None,
            since: None,
            deadline: None,
            state: State::Watching,
            refusal: Outgoing::default(),
        }
    }

    /// Follows header blocks through newly read bytes, starting and stopping the clock;
    /// true when the block being read is late.
    fn scan(&mut self, data: &[u8]) -> bool {
        let (mut block, mut since) = (self.block, self.since);
        let began = std::cell::Cell::new(false);
        self.read.walk(data, |event| match event {
            Event::Head(head) if head.kind == HEADERS => {
                block = Some((head.stream, head.flags & END_HEADERS != 0));
                since = Some(Instant::now());
                began.set(true);
            }
            Event::Head(head) if head.kind == CONTINUATION => {
                if let Some((stream, _)) = block {
                    block = Some((stream, head.flags & END_HEADERS != 0));
                }
            }
            Event::Head(_) => {}
            Event::End => {
                if let Some((_, true)) = block {
                    block = None;
                }
            }
        });
        self.block = block;
        let Some(since) = since.filter(|_| block.is_some()) else {
            self.deadline = None;
            self.since = None;
            return false;
        };
        self.since = Some(since);
        if began.get() || self.deadline.is_none() {
            let at = tokio::time::Instant::from_std(since + self.limit);
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        // A block sent a byte at a time keeps reads coming: the clock is read on each.
        since.elapsed() >= self.limit
    }

    fn refuse(&mut self, stream: u32) {
        let reason = "request header not received in time";
        self.refusal = Outgoing::new(answer(stream, 408, reason, self.hsts.as_ref()));
        self.state = State::Refusing;
        self.deadline = None;
        access_log::early(&Early {
            listener: &self.listener,
            client: self.client,
            request: &RequestLine::default(),
            status: 408,
            reason,
            start: self.since.unwrap_or_else(Instant::now),
        });
    }
}

/// An HPACK integer with an `n`-bit prefix after the `first` bits (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal field without indexing, its name from the static table (RFC 7541 §6.2.2): the
/// decoder's table is left as it was.
fn hpack_field(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    hpack_int(out, 0x00, 4, index);
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// The JSON error answer on `stream` (the head of every error answer, see
/// [`errors::head`]), then GOAWAY naming it as the last stream.
fn answer(stream: u32, code: u16, reason: &str, hsts: Option<&http::HeaderValue>) -> Vec<u8> {
    let body = errors::body(code, reason);
    let mut block = Vec::new();
    // Static table indexes: :status 8, content-length 28, content-type 31, and the others by
    // their names below.
    hpack_field(&mut block, 8, code.to_string().as_bytes());
    if let Ok(head) = errors::head(code, body.len(), hsts) {
        for (name, value) in head.headers.iter() {
            let index = match name.as_str() {
                "content-type" => 31,
                "content-length" => 28,
                "cache-control" => 24,
                "www-authenticate" => 61,
                "strict-transport-security" => 56,
                _ => continue,
            };
            hpack_field(&mut block, index, value.as_bytes());
        }
    }
    let mut out = Vec::new();
    frame(&mut out, HEADERS, END_HEADERS, stream, &block);
    frame(&mut out, 0x0, 0x1, stream, &body);
    let mut goaway = stream.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    frame(&mut out, 0x7, 0, 0, &goaway);
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeaderClock<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Refusing => {
                    ready!(this.refusal.poll_send(&mut this.inner, cx));
                    this.state = State::Done;
                }
                State::Watching => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let late = this.scan(&buf.filled()[before..]);
                            if let (true, Some((stream, _)), true) =
                                (late, this.block, this.written.at_boundary())
                            {
                                // The connection ends: the h2 layer never sees these bytes.
                                buf.set_filled(before);
                                this.refuse(stream);
                                continue;
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            let late = match (this.deadline.as_mut(), this.block) {
                                (Some(d), Some((stream, _))) => {
                                    d.as_mut().poll(cx).is_ready().then_some(stream)
                                }
                                _ => None,
                            };
                            match late {
                                // Our frames go between two of the server's: wait for the
                                // h2 layer to finish the one it is writing.
                                Some(stream) if this.written.at_boundary() => this.refuse(stream),
                                _ => return Poll::Pending,
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeaderClock<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if !matches!(this.state, State::Watching) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed by certgate: header block not received in time",
            )));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            this.written.walk(&data[..n], |_| {});
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// Everything else a Pingora stream does is the wrapped stream's.
crate::listener::delegate_stream_traits!(HeaderClock);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_followed_however_the_bytes_are_split() {
        let mut bytes = vec![b'P'; PREFACE];
        frame(&mut bytes, 0x4, 0, 0, &[]);
        frame(&mut bytes, HEADERS, 0, 1, b"abc");
        frame(&mut bytes, CONTINUATION, END_HEADERS, 1, b"de");
        for split in [1, 2, 5, bytes.len()] {
            let mut f = Frames {
                skip: PREFACE,
                ..Frames::default()
            };
            let mut heads = Vec::new();
            let mut ends = 0;
            for chunk in bytes.chunks(split) {
                f.walk(chunk, |e| match e {
                    Event::Head(h) => heads.push((h.kind, h.flags, h.stream, h.length)),
                    Event::End => ends += 1,
                });
            }
            assert_eq!(
                heads,
                vec![
                    (0x4, 0, 0, 0),
                    (HEADERS, 0, 1, 3),
                    (CONTINUATION, END_HEADERS, 1, 2)
                ]
            );
            assert_eq!(ends, 3);
            assert!(f.at_boundary());
        }
    }

    #[test]
    fn hpack_integers_follow_rfc_7541() {
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 4, 56);
        assert_eq!(out, [0x0f, 41]);
    }
}
