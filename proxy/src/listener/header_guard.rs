//! Bounds on HTTP/1.1 request headers that Pingora does not expose: a client gets
//! `limits.header_read` to send a complete request header (a slowloris sending a byte a second
//! is cut off) and `limits.max_header_bytes` for its size (beyond it: 431). The guard wraps the
//! TLS stream and watches the bytes Pingora reads: from the start of a request until the blank
//! line ending its header. The proxy re-arms it when a response is done, so every request of a
//! keep-alive connection is bounded, not only the first. HTTP/2 has its own limits (h2 settings).
//!
//! A refusal is answered here, in the read path, with the JSON error body, then the connection
//! ends: the request never reaches the proxy phases.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::admin::metrics;

/// Shared between the guard and the proxy's logging phase, which re-arms it.
#[derive(Debug, Default)]
pub struct HeaderGuardHandle {
    rearm: AtomicBool,
}

impl HeaderGuardHandle {
    /// The response of the current request is complete; the next bytes start a new header.
    pub fn rearm(&self) {
        self.rearm.store(true, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request header: `seen` bytes so far, the last 3 kept to find the blank line.
    Header,
    /// The header is complete; body and response bytes pass untouched.
    Body,
    /// Writing our refusal; `usize` bytes of it already written.
    Refusing(usize),
    Done,
}

pub struct HeaderGuard<S> {
    inner: S,
    handle: Arc<HeaderGuardHandle>,
    listener: Arc<str>,
    phase: Phase,
    seen: usize,
    tail: [u8; 3],
    max: usize,
    limit: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    refusal: Vec<u8>,
}

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
    ) -> Self {
        HeaderGuard {
            inner,
            handle,
            listener,
            phase: Phase::Header,
            seen: 0,
            tail: [0; 3],
            max,
            limit,
            // The first request's clock starts with the connection.
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            refusal: Vec::new(),
        }
    }

    fn refuse(&mut self, code: u16, reason: &str) {
        let body = crate::proxy::errors::body(code, reason);
        let head = format!(
            "HTTP/1.1 {code} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            crate::proxy::errors::message_for(code),
            body.len()
        );
        self.refusal = [head.as_bytes(), &body].concat();
        self.phase = Phase::Refusing(0);
        self.deadline = None;
        tracing::info!(target: "certgate::access", listener = %self.listener, status = code, decision = "deny", reason, "request refused before its header was complete");
        metrics::REQUESTS
            .with_label_values(&[&*self.listener, &code.to_string(), "deny"])
            .inc();
    }

    /// Scans newly read header bytes; returns true when the blank line ending the header is in.
    fn scan(&mut self, data: &[u8]) -> bool {
        for (i, &b) in data.iter().enumerate() {
            let [a, b1, c] = self.tail;
            self.tail = [b1, c, b];
            // A request header ends with CRLFCRLF; bare LF LF is tolerated by parsers, so count it too.
            if (a == b'\r' && b1 == b'\n' && c == b'\r' && b == b'\n') || (c == b'\n' && b == b'\n')
            {
                self.seen += i + 1;
                return true;
            }
        }
        self.seen += data.len();
        false
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeaderGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.handle.rearm.swap(false, Ordering::AcqRel) && this.phase == Phase::Body {
            this.phase = Phase::Header;
            this.seen = 0;
            this.tail = [0; 3];
            this.deadline = None;
        }
        loop {
            match this.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Body => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Refusing(written) => {
                    if written < this.refusal.len() {
                        match Pin::new(&mut this.inner).poll_write(cx, &this.refusal[written..]) {
                            Poll::Ready(Ok(n)) if n > 0 => {
                                this.phase = Phase::Refusing(written + n)
                            }
                            Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => this.phase = Phase::Done,
                            Poll::Pending => return Poll::Pending,
                        }
                        continue;
                    }
                    return match Pin::new(&mut this.inner).poll_flush(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(_) => {
                            this.phase = Phase::Done;
                            // EOF to Pingora: the connection ends without another response.
                            Poll::Ready(Ok(()))
                        }
                    };
                }
                Phase::Header => {
                    let before = buf.filled().len();
                    match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let new = &buf.filled()[before..];
                            if new.is_empty() {
                                return Poll::Ready(Ok(()));
                            }
                            if this.scan(new) {
                                // Most headers arrive whole in one read: no timer is armed.
                                this.phase = Phase::Body;
                                this.deadline = None;
                            } else if this.seen > this.max {
                                buf.set_filled(before);
                                this.refuse(431, "request header too large");
                                continue;
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
                                    this.refuse(408, "request header not received in time");
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
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl<S: Shutdown + Send> Shutdown for HeaderGuard<S> {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl<S: UniqueID> UniqueID for HeaderGuard<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<S: Ssl> Ssl for HeaderGuard<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<S: GetTimingDigest> GetTimingDigest for HeaderGuard<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl<S: GetProxyDigest> GetProxyDigest for HeaderGuard<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl<S: GetSocketDigest> GetSocketDigest for HeaderGuard<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl<S: Send> Peek for HeaderGuard<S> {}
