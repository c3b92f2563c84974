//! How a request reaches the upstream. Plain requests (HTTP/1.1, and HTTP/2 streams) take the
//! direct path, [`Forwarder`]: certgate's own forwarding on pingora-core's HTTP sessions and
//! HTTP/1 connection pool, in place of pingora-proxy's `HttpProxy` (which runs a request as two
//! halves joined by channels, with its cache and module machinery around them). Anything
//! unusual stays on `HttpProxy`; [`eligible`] is the one rule that chooses. Both engines take
//! the same steps of `proxy/exchange.rs`, and the head the upstream receives is
//! `headers`' on both; what `HttpProxy` does to a plain exchange privately is mirrored in
//! `pingora_mirror`.

pub mod eligible;
pub(crate) mod framing;
pub mod h2;
pub(crate) mod headers;
mod pingora_mirror;

use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::protocols::http::{HttpTask, ServerSession};
use pingora::protocols::Stream;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType};

use super::access_log::{self, Early, RequestLine};
use super::errors::Answer;
use super::{client_ip, conn_auth, CertgateProxy, Exchange};

/// Forwards eligible requests (HTTP/1.1, and HTTP/2 streams); one per listener, sharing the
/// proxy's state.
pub struct Forwarder {
    proxy: CertgateProxy,
    connector: Connector,
    max_retries: usize,
}

/// How one attempt at the upstream ended.
struct Attempt {
    /// The client connection can carry another request.
    reuse: bool,
    /// The error that ended the attempt, if one did.
    error: Option<Box<Error>>,
}

/// A client connection ready for its next request: what this request left for it (keep-alive
/// settings) and, apart, the bytes of the next request already read (a pipelining client's,
/// RFC 9112 §9.3.2), so the keep-alive loop can decide that request's path from them.
pub struct Next {
    pub stream: Stream,
    pub settings: HttpPersistentSettings,
    pub pipelined: Option<BytesMut>,
}

impl Next {
    /// For Pingora's loop, which takes the bytes inside the settings.
    pub fn into_reused(self) -> ReusedHttpStream {
        let mut settings = self.settings;
        if let Some(bytes) = self.pipelined {
            settings.set_pipelined_prefix(bytes);
        }
        ReusedHttpStream::new(self.stream, Some(settings))
    }
}

impl Forwarder {
    pub fn new(proxy: CertgateProxy, conf: &ServerConf) -> Forwarder {
        Forwarder {
            proxy,
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
            max_retries: conf.max_retries,
        }
    }

    /// One request of `session` (for HTTP/1.1, its first bytes already handed to it; an HTTP/2
    /// stream's header is read already), start to end; returns the HTTP/1.1 connection when it
    /// can carry another request (an HTTP/2 stream never can: the connection is Pingora's).
    pub async fn serve(&self, mut session: Session, shutdown: &ShutdownWatch) -> Option<Next> {
        let p = &self.proxy;
        let start = std::time::Instant::now();
        match session.downstream_session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // A header Pingora refuses (its framing checks, after the first bytes parsed)
                // gets the JSON 400, logged and counted; a broken connection gets nothing.
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    self.refuse_parsed_malformed(session, start).await;
                } else {
                    session.downstream_session.shutdown().await;
                }
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let mut ex = Exchange::new();
        match p.decide(&mut session, &mut ex).await {
            Ok(true) => return self.finish(session, &ex, true, None).await,
            Ok(false) => {}
            Err(e) => {
                p.refuse_failure(&mut session, &e).await;
                p.finish(&session, Some(&e), &ex);
                return None;
            }
        }
        if !session.is_body_empty() {
            // Kept (up to Pingora's bound) so a retry on a fresh upstream connection can send
            // the body again; beyond the bound the request is not retried.
            session.downstream_session.enable_retry_buffering();
        }
        let mut attempt = Attempt {
            reuse: false,
            error: None,
        };
        for _ in 0..self.max_retries {
            attempt = self.forward(&mut session, &mut ex).await;
            if !attempt.error.as_ref().is_some_and(|e| e.retry()) {
                break;
            }
        }
        if let Some(e) = &attempt.error {
            p.refuse_failure(&mut session, e).await;
        }
        self.finish(session, &ex, attempt.reuse, attempt.error)
            .await
    }

    /// An HTTP/2 stream whose header block is beyond `limits.max_header_bytes` (counted as on
    /// HTTP/1.1, [`h2::header_bytes`]) is answered here with the JSON 431, logged and
    /// counted, and never forwarded; any other comes back to be served.
    pub async fn bound_h2_header(&self, session: ServerSession) -> Option<ServerSession> {
        let max = self.proxy.listener.config.limits.max_header_bytes;
        let size = h2::header_bytes(session.req_header());
        if size <= max {
            return Some(session);
        }
        let start = std::time::Instant::now();
        let req = session.req_header();
        let request = RequestLine {
            method: req.method.as_str().to_string(),
            path: String::from_utf8_lossy(req.raw_path())
                .split('?')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        let mut session = h2::session(session);
        let answer = Answer::new(431, "request header too large");
        self.refuse_early(&mut session, answer, &request, start)
            .await;
        None
    }

    /// A request whose header Pingora's checks refuse ([`eligible::authority_refused`]): its parser gives
    /// the error, answered with the logged JSON 400. Were the request accepted after all, it is
    /// refused the same and never forwarded: it did not take the forwarding path's checks.
    pub async fn refuse_unparsable(&self, mut session: Session) {
        let start = std::time::Instant::now();
        match session.downstream_session.read_request().await {
            Ok(false) => return,
            Err(e) if !matches!(e.etype(), ErrorType::InvalidHTTPHeader) => {
                session.downstream_session.shutdown().await;
                return;
            }
            _ => {}
        }
        self.refuse_parsed_malformed(session, start).await;
    }

    /// The logged JSON 400 for a request whose header Pingora read and refused, named in the
    /// log as Pingora's summary gives it ("METHOD path, Host: h", the method `-` when unparsed).
    async fn refuse_parsed_malformed(&self, mut session: Session, start: std::time::Instant) {
        let summary = session.downstream_session.request_summary();
        let line = summary.split(", Host:").next().unwrap_or_default();
        let request = RequestLine::parse(line.as_bytes());
        let answer = Answer::new(400, "malformed request");
        self.refuse_early(&mut session, answer, &request, start)
            .await;
    }

    /// A request whose first bytes hold a header Pingora's parser would refuse (see
    /// [`eligible::malformed`]): answered with the JSON 400 before anything parses it.
    pub async fn refuse_malformed(&self, mut session: Session, request: RequestLine) {
        let start = std::time::Instant::now();
        let answer = Answer::new(400, "malformed request");
        self.refuse_early(&mut session, answer, &request, start)
            .await;
    }

    /// An answer before a request could be decided: the JSON error (the connection closes
    /// after it), then the access log line and the request metrics.
    async fn refuse_early(
        &self,
        session: &mut Session,
        answer: Answer,
        request: &RequestLine,
        start: std::time::Instant,
    ) {
        session.set_keepalive(None);
        if let Err(e) = self.proxy.refuse(session, &answer).await {
            tracing::debug!(error = %e, "could not send the error response");
        }
        access_log::early(&Early {
            listener: &self.proxy.listener.config.name,
            client: client_ip(session),
            request,
            status: answer.status,
            reason: &answer.reason,
            start,
        });
        // An HTTP/2 stream ended with the answer; only the stream was refused, not its
        // connection.
        if !session.downstream_session.is_http2() {
            session.downstream_session.shutdown().await;
        }
    }

    /// The exchange's last step, then the connection for the next request if it can carry
    /// one.
    async fn finish(
        &self,
        session: Session,
        ex: &Exchange,
        reuse: bool,
        error: Option<Box<Error>>,
    ) -> Option<Next> {
        self.proxy.finish(&session, error.as_deref(), ex);
        if !reuse {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        let (stream, pipelined) = session
            .downstream_session
            .finish()
            .await
            .ok()
            .flatten()?
            .into_parts();
        Some(Next {
            stream,
            settings,
            pipelined,
        })
    }

    /// One attempt: an upstream connection (pooled when one is idle), the exchange, and the
    /// connection back to the pool when it can carry another request.
    async fn forward(&self, session: &mut Session, ex: &mut Exchange) -> Attempt {
        let p = &self.proxy;
        let failed = |e| Attempt {
            reuse: false,
            error: Some(e),
        };
        let peer = match p.peer(session, ex).await {
            Ok(peer) => peer,
            Err(e) => return failed(e),
        };
        let (mut up, reused) = match self.connector.get_http_session(&*peer).await {
            Ok(s) => s,
            Err(e) => return failed(e.into_up()),
        };
        up.read_timeout = peer.options.read_timeout;
        up.write_timeout = peer.options.write_timeout;
        let (reuse, up_reuse, error) = self.exchange(session, &mut up, ex).await;
        if up_reuse {
            self.connector
                .release_http_session(up, &*peer, peer.idle_timeout())
                .await;
        }
        // Pingora's own account of the failure (the peer named, retry only on a reused
        // connection), as `HttpProxy` gives it.
        let error = error.map(|e| p.error_while_proxy(&peer, session, e, ex, reused));
        Attempt { reuse, error }
    }

    /// The request upstream and the response back: (client reusable, upstream reusable, error).
    /// The request body and the response move at the same time, in one task: a response may
    /// come (a 413, say) while the client is still sending, and is forwarded at once; the body
    /// keeps going to the upstream after it, as with `HttpProxy`.
    async fn exchange(
        &self,
        session: &mut Session,
        up: &mut Upstream,
        ex: &mut Exchange,
    ) -> (bool, bool, Option<Box<Error>>) {
        let has_body = !session.is_body_empty();
        let req = match self.upstream_request(session, ex, has_body) {
            Ok(r) => r,
            // Nothing was written: the upstream connection is still clean.
            Err(e) => return (false, true, Some(e)),
        };
        if let Err(e) = up.write_request_header(req).await {
            return (false, false, Some(e.into_up()));
        }
        let mut body = BodyState {
            client_done: session.is_body_done(),
            sent: !has_body,
            send_error: None,
        };
        if has_body {
            // A retried attempt first sends what the client sent to the failed one.
            if let Some(again) = session.downstream_session.get_retry_buffer() {
                body.send(up, Some(&again)).await;
            }
            if body.client_done {
                body.send(up, None).await;
            }
        }
        let mut response_done = false;
        // A body that makes no progress for `request_body` ends the request with 408 and
        // frees its slots: without it one byte now and then would hold them up to `read` (the
        // HTTP/2 stream has no read timeout of its own). Re-armed after each piece is passed
        // on, so a slow upstream does not count against the client.
        let stall_limit = self.proxy.listener.config.timeouts.request_body;
        let stall = tokio::time::sleep(stall_limit);
        tokio::pin!(stall);
        while !(body.sent && response_done) {
            // The client's side: body to forward, or (once it is all read) watched for closing.
            let watch_client = if body.client_done {
                !response_done
            } else {
                body.send_error.is_none()
            };
            tokio::select! {
                biased;
                task = up.read_response_task(), if !response_done => {
                    let task = match task {
                        Ok(t) => t,
                        Err(e) => return (false, false, Some(body.send_error.unwrap_or(e).into_up())),
                    };
                    match self.deliver(session, ex, task).await {
                        Ok(done) => response_done = done,
                        Err(e) => return (false, false, Some(e)),
                    }
                }
                read = session.downstream_session.read_body_or_idle(body.client_done), if watch_client => {
                    let chunk = match read {
                        Ok(chunk) => chunk,
                        Err(e) => return (false, false, Some(e.into_down())),
                    };
                    if chunk.is_some() {
                        body.send(up, chunk.as_deref()).await;
                    }
                    if chunk.is_none() || session.is_body_done() {
                        body.client_done = true;
                        body.send(up, None).await;
                    }
                    stall.as_mut().reset(tokio::time::Instant::now() + stall_limit);
                }
                _ = &mut stall, if !body.client_done && body.send_error.is_none() => {
                    let e = Error::explain(
                        ErrorType::ReadTimedout,
                        format!("request body made no progress for {stall_limit:?}"),
                    );
                    return (false, false, Some(e.into_down()));
                }
                else => break,
            }
        }
        let reuse = session.downstream_session.finish_body().await.is_ok();
        (reuse, body.send_error.is_none(), None)
    }

    /// One piece of the upstream's response to the client; true once the response is complete.
    async fn deliver(
        &self,
        session: &mut Session,
        ex: &mut Exchange,
        task: HttpTask,
    ) -> pingora::Result<bool> {
        match task {
            HttpTask::Header(mut resp, end) => {
                if !session.downstream_session.is_http2() {
                    let head = session.req_header().method == http::Method::HEAD;
                    pingora_mirror::chunk_close_delimited(&mut resp, head, end)?;
                }
                self.proxy.rewrite_response(session, &mut resp, ex)?;
                match &mut *session.downstream_session {
                    // With `end`, the HEADERS frame itself ends the stream, as `HttpProxy`
                    // sends it: an empty DATA frame after it would contradict the
                    // Content-Length of a HEAD answer. The connection-specific headers an
                    // HTTP/1.1 upstream may send are dropped by the HTTP/2 session.
                    ServerSession::H2(stream) => stream
                        .write_response_header(resp, end)
                        .map_err(|e| e.into_down())?,
                    _ => {
                        if !end && !resp.status.is_informational() {
                            // The head leaves with the body's first piece, in one TLS record.
                            if let Some(conn) = conn_auth(session) {
                                conn.header_guard.hold_next_write();
                            }
                        }
                        session
                            .write_response_header(resp, end)
                            .await
                            .map_err(|e| e.into_down())?
                    }
                }
                Ok(end)
            }
            HttpTask::Body(data, end) => {
                session
                    .downstream_session
                    .write_response_body(data.unwrap_or_default(), end)
                    .await
                    .map_err(|e| e.into_down())?;
                Ok(end)
            }
            HttpTask::Failed(e) => Err(e),
            // Forwarded to an HTTP/2 client (Pingora's HTTP/1 upstream session reads none
            // today), not over HTTP/1 (as in `HttpProxy`).
            HttpTask::Trailer(Some(trailers)) => {
                session
                    .downstream_session
                    .write_response_trailers(*trailers)
                    .await
                    .map_err(|e| e.into_down())?;
                Ok(true)
            }
            // An upgraded body cannot happen on this path, which takes no upgrade.
            HttpTask::Done | HttpTask::Trailer(None) | HttpTask::UpgradedBody(..) => Ok(true),
        }
    }

    /// The request header the upstream gets: the client's, less hop-by-hop headers (as
    /// `HttpProxy` strips them) and as the exchange writes it, framed for its body.
    fn upstream_request(
        &self,
        session: &Session,
        ex: &Exchange,
        has_body: bool,
    ) -> pingora::Result<Box<RequestHeader>> {
        let client = session.req_header();
        let hop_by_hop = pingora_mirror::HopByHop::of(client);
        let mut req = Box::new(self.proxy.upstream_head(session, client, ex, |name| {
            hop_by_hop.as_ref().is_some_and(|h| h.drops(name))
        })?);
        // The upstream speaks HTTP/1.1 whatever the client spoke; an HTTP/2 client's
        // `:authority` becomes the Host header (`headers::upstream_head`).
        req.set_version(http::Version::HTTP_11);
        validate_request_authority(&req).map_err(|e| e.into_in())?;
        pingora_mirror::frame_request_body(&mut req, has_body)?;
        Ok(req)
    }
}

/// Where the request body stands: read from the client, sent to the upstream.
struct BodyState {
    /// The client's body is all read.
    client_done: bool,
    /// The upstream has the whole body, or will get no more of it (`send_error`).
    sent: bool,
    /// Writing to the upstream failed: the rest of the body is not sent, the upstream
    /// connection is not reused, and the response, if one comes, is still forwarded.
    send_error: Option<Box<Error>>,
}

impl BodyState {
    /// Sends `chunk`, or with `None` ends the body; a failure is kept rather than returned.
    async fn send(&mut self, up: &mut Upstream, chunk: Option<&[u8]>) {
        // An empty write would be read as the last chunk of a chunked body.
        if self.sent || chunk.is_some_and(<[u8]>::is_empty) {
            return;
        }
        let result = match chunk {
            Some(c) => up.write_body(c).await.map(|_| ()),
            None => up.finish_body().await.map(|_| ()),
        };
        match result {
            Ok(()) if chunk.is_none() => self.sent = true,
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "request body not sent to the upstream");
                self.send_error = Some(e);
                self.sent = true;
            }
        }
    }
}
