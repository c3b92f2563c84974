//! Bounds on HTTP/1.1 request headers that Pingora does not expose: a client gets
//! `limits.header_read` to send a complete request header (a slowloris sending a byte a second
//! is cut off) and `limits.max_header_bytes` for its size (beyond it: 431). The guard wraps the
//! TLS stream and watches the bytes Pingora reads: from the first byte of a request (empty
//! lines before the request line included, which the HTTP parser skips) until the empty line
//! that ends its header, found by the parser's own rule (a line ending in LF or CR LF after the
//! request line). The proxy re-arms it when a response is done, so every request of a
//! keep-alive connection is bounded, not only the first. HTTP/2 has its own limits (h2 settings).
//!
//! The guard also counts the header's Host fields: Pingora's parser refuses a request with two
//! (RFC 9112 §3.2) before any proxy phase runs, with a bare 400; the guard answers it first,
//! with the JSON error body and an access-log line like every other 400.
//!
//! A refusal is answered here, in the read path, with the same JSON error answer as every other
//! (`crate::proxy::errors`: its head, `cache-control: no-store`, the listener's HSTS), then
//! the connection ends: the request never reaches the proxy phases. It is logged and counted as
//! any request is (`crate::proxy::access_log::early`), with the client, the method and path its
//! request line gave so far, and the time since its first byte.
//!
//! Being the proxy's one wrapper around the client's TLS stream, the guard also holds an
//! HTTP/1.1 response head back to leave with its body's first piece (`super::coalesce`).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use pingora::protocols::Ssl;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::coalesce::Coalesce;
use super::outgoing::Outgoing;
use crate::proxy::access_log::{self, Early, RequestLine};
use crate::proxy::errors;
use crate::state::HeaderGuardHandle;

fn aborted() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection closed by certgate: access withdrawn",
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request header: `seen` bytes so far, the last 2 kept to find the empty line.
    Header,
    /// The header is complete; body and response bytes pass untouched.
    Body,
    /// Writing our refusal.
    Refusing,
    Done,
}

pub struct HeaderGuard<S> {
    inner: S,
    handle: Arc<HeaderGuardHandle>,
    listener: Arc<str>,
    phase: Phase,
    seen: usize,
    /// A byte other than CR or LF has arrived: the request line has begun, so the next empty
    /// line ends the header (before it, empty lines are skipped by the parser, and counted here).
    started: bool,
    tail: [u8; 2],
    /// How much of `host:` the current header line has begun with; None once it differs (and
    /// for the request line).
    host_prefix: Option<usize>,
    /// Host fields of the current header.
    hosts: usize,
    max: usize,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    refusal: Outgoing,
    /// For a refusal's answer and log line: the client address and the listener's HSTS value.
    client: Option<IpAddr>,
    hsts: Option<http::HeaderValue>,
    /// The first bytes of a header that spans reads (its request line, for the log line), and
    /// when its first byte came. A header read whole in one read (the usual case) needs neither.
    line: Vec<u8>,
    since: Option<Instant>,
    /// A response head held back to leave with its body (see [`super::coalesce`]).
    out: Coalesce,
}

/// How much of a header's start is kept for the log line: a request line's method and path.
const LINE_KEPT: usize = 600;

impl<S> std::fmt::Debug for HeaderGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderGuard")
            .field("phase", &self.phase)
            .field("seen", &self.seen)
            .finish()
    }
}

impl<S> HeaderGuard<S> {
    pub fn new(
        inner: S,
        handle: Arc<HeaderGuardHandle>,
        listener: Arc<str>,
        max: usize,
        limit: Duration,
        client: Option<IpAddr>,
        hsts: Option<http::HeaderValue>,
    ) -> Self {
        HeaderGuard {
            inner,
            handle,
            listener,
            phase: Phase::Header,
            seen: 0,
            started: false,
            tail: [0; 2],
            host_prefix: None,
            hosts: 0,
            max,
            limit,
            // The first request's clock starts with the connection.
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            refusal: Outgoing::default(),
            client,
            hsts,
            line: Vec::new(),
            since: None,
            out: Coalesce::default(),
        }
    }

    /// Keeps the start of a header that spans reads, from its first byte on.
    fn keep(&mut self, data: &[u8]) {
        self.since.get_or_insert_with(Instant::now);
        let room = LINE_KEPT.saturating_sub(self.line.len());
        self.line.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn refuse(&mut self, code: u16, reason: &str, why: &str) {
        self.refusal = Outgoing::new(errors::http1_bytes(code, reason, self.hsts.as_ref()));
        self.phase = Phase::Refusing;
        self.deadline = None;
        tracing::debug!(listener = %self.listener, status = code, "request refused {why}");
        access_log::early(&Early {
            listener: &self.listener,
            client: self.client,
            request: &RequestLine::parse(&self.line),
            status: code,
            reason,
            start: self.since.unwrap_or_else(Instant::now),
        });
        self.line = Vec::new();
    }

    /// Scans newly read header bytes; returns true when the empty line ending the header is in.
    fn scan(&mut self, data: &[u8]) -> bool {
        const HOST: &[u8] = b"host:";
        for (i, &b) in data.iter().enumerate() {
            if !self.started {
                self.started = b != b'\r' && b != b'\n';
            } else if b == b'\n' {
                // LF LF, or LF CR LF: an empty line (CR LF CR LF included), as httparse reads it.
                let [before, last] = self.tail;
                if last == b'\n' || (last == b'\r' && before == b'\n') {
                    self.seen += i + 1;
                    return true;
                }
                self.host_prefix = Some(0);
            } else if let Some(n) = self.host_prefix.filter(|n| *n < HOST.len()) {
                // The parser takes no space before the colon: `host:` in any case is the field.
                self.host_prefix = (b.to_ascii_lowercase() == HOST[n]).then_some(n + 1);
                if self.host_prefix == Some(HOST.len()) {
                    self.hosts += 1;
                }
            }
            self.tail = [self.tail[1], b];
        }
        self.seen += data.len();
        false
    }
}

impl<S: AsyncRead + AsyncWrite + Ssl + Unpin> AsyncRead for HeaderGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.handle.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        let signal = this.handle.take_signal();
        if signal == crate::state::connection::RECEIVED && this.phase == Phase::Header {
            // Parsed from bytes read with the previous request: what comes now is its body.
            this.phase = Phase::Body;
            this.deadline = None;
            this.line = Vec::new();
            this.since = None;
        }
        if signal == crate::state::connection::REARM && this.phase == Phase::Body {
            this.phase = Phase::Header;
            this.seen = 0;
            this.started = false;
            this.tail = [0; 2];
            this.host_prefix = None;
            this.hosts = 0;
            this.deadline = None;
            this.line = Vec::new();
            this.since = None;
        }
        loop {
            match this.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Body => {
                    // Several records per read: a request body moves upstream in large writes.
                    let poll = crate::tls::read_buffer::poll_read_records(&mut this.inner, cx, buf);
                    if poll.is_pending() {
                        this.handle.park(cx);
                        // A close between the check above and parking would not wake us.
                        if this.handle.is_closed() {
                            return Poll::Ready(Err(aborted()));
                        }
                    }
                    return poll;
                }
                Phase::Refusing => {
                    ready!(this.refusal.poll_send(&mut this.inner, cx));
                    // Done reads as EOF to Pingora: the connection ends without another response.
                    this.phase = Phase::Done;
                }
                Phase::Header => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let new = &buf.filled()[before..];
                            if new.is_empty() {
                                return Poll::Ready(Ok(()));
                            }
                            let complete = this.scan(new);
                            if !complete || this.seen > this.max || this.hosts > 1 {
                                this.keep(new);
                            }
                            if this.seen > this.max {
                                // Also when the header ends in the read that crossed the limit.
                                buf.set_filled(before);
                                this.refuse(
                                    431,
                                    "request header too large",
                                    "before its header was complete",
                                );
                                continue;
                            }
                            if complete && this.hosts > 1 {
                                // Pingora would refuse it with a bare 400; none of it reaches
                                // the parser.
                                buf.set_filled(before);
                                this.refuse(400, "more than one Host header", "for its header");
                                continue;
                            }
                            if complete {
                                // Most headers arrive whole in one read: no timer is armed.
                                this.phase = Phase::Body;
                                this.deadline = None;
                            } else if this.deadline.is_none() {
                                // The clock runs from the first byte of a partial header.
                                this.deadline = Some(Box::pin(tokio::time::sleep(this.limit)));
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if let Some(d) = this.deadline.as_mut() {
                                if d.as_mut().poll(cx).is_ready() {
                                    if this.seen == 0 {
                                        // Nothing of a request yet: an idle connection, close quietly.
                                        this.phase = Phase::Done;
                                        return Poll::Ready(Ok(()));
                                    }
                                    this.refuse(
                                        408,
                                        "request header not received in time",
                                        "before its header was complete",
                                    );
                                    continue;
                                }
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeaderGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.handle.is_closed() {
            return Poll::Ready(Err(aborted()));
        }
        let this = &mut *self;
        let hold = this.handle.take_hold();
        this.out.poll_write(&mut this.inner, cx, data, hold)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.out.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(this.out.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

// Everything else a Pingora stream does is the wrapped stream's.
crate::listener::delegate_stream_traits!(HeaderGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> HeaderGuard<()> {
        HeaderGuard::new(
            (),
            Arc::default(),
            Arc::from("t"),
            1024,
            Duration::from_secs(10),
            None,
            None,
        )
    }

    #[tokio::test]
    async fn the_header_ends_where_the_parser_says() {
        for (input, end) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY"[..], 27),
            (b"GET / HTTP/1.1\nHost: x\n\nBODY", 24),
            (b"GET / HTTP/1.1\nHost: x\n\r\nBODY", 25),
            (b"\r\n\r\n\n\nGET / HTTP/1.1\r\n\r\n", 24),
        ] {
            let mut g = guard();
            assert!(g.scan(input), "{input:?}");
            assert_eq!(g.seen, end, "{input:?}");
        }
    }

    #[tokio::test]
    async fn host_fields_are_counted_in_any_case_wherever_the_reads_split() {
        for (input, hosts) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], 1),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n", 2),
            (b"GET / HTTP/1.1\nhost:a\nX-Host: b\nhostname: c\n\n", 1),
            (b"GET /host: HTTP/1.1\r\nX: host:\r\n\r\n", 0),
            (b"\r\nGET / HTTP/1.1\r\nhoSt: a\r\nhost: a\r\n\r\n", 2),
        ] {
            let mut g = guard();
            assert!(g.scan(input));
            assert_eq!(g.hosts, hosts, "{}", String::from_utf8_lossy(input));
            // Byte by byte: the same count.
            let mut g = guard();
            for b in input {
                g.scan(&[*b]);
            }
            assert_eq!(g.hosts, hosts, "{}", String::from_utf8_lossy(input));
        }
    }

    #[tokio::test]
    async fn empty_lines_before_the_request_line_count_and_do_not_end_it() {
        let mut g = guard();
        assert!(!g.scan(b"\r\n\r\n\r\n"));
        assert_eq!(g.seen, 6);
        assert!(!g.scan(b"GET / HTTP/1.1\r\nX-A: "));
        // Byte by byte, split anywhere.
        let mut g = guard();
        let input = b"\n\r\nGET / HTTP/1.1\r\nA: b\r\n\r\n";
        let ends: Vec<bool> = input.iter().map(|b| g.scan(&[*b])).collect();
        assert_eq!(ends.iter().position(|e| *e), Some(input.len() - 1));
    }
}
