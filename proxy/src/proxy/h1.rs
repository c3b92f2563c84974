//! certgate's own forwarding of a plain HTTP/1.1 request, on pingora-core's HTTP/1 sessions and
//! connection pool, in place of pingora-proxy's `HttpProxy` (which runs a request as two halves
//! joined by channels, with its cache and module machinery around them). The decisions are the
//! same phases of [`CertgateProxy`], called in the order `HttpProxy` calls them, so both paths
//! decide, forward, answer, count and log alike. Anything unusual (an upgrade, `Expect`, HTTP/1.0,
//! a header not complete in the first bytes) stays on `HttpProxy`: see [`eligible`].

use bytes::Bytes;
use http::header;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;
use pingora::protocols::http::v1::client::HttpSession as Upstream;
use pingora::protocols::http::HttpTask;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType};

use super::{CertgateProxy, RequestCtx};

/// Header lines read from the first bytes; a request with more goes to `HttpProxy`.
const MAX_HEADERS: usize = 64;

/// Whether the request whose first bytes are `first` can take this path: an HTTP/1.1 request
/// whose header is complete in `first`, in origin form with one Host, with no upgrade, no
/// `Expect`, and a `Connection` header naming nothing but `keep-alive` or `close`. Those keep the
/// hop-by-hop rewriting here as small as `HttpProxy`'s is for them.
pub fn eligible(first: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(first), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    if req.version != Some(1)
        || req.method == Some("CONNECT")
        || !req.path.is_some_and(|p| p.starts_with('/'))
    {
        return false;
    }
    let (mut hosts, mut length, mut chunked) = (0, false, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if h.value.contains(&b'@') {
                return false;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !tokens(h.value).all(|t| {
                t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
            }) {
                return false;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"http2-settings")
        {
            return false;
        }
    }
    hosts == 1 && !(length && chunked)
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Forwards eligible HTTP/1.1 requests; one per listener, sharing the proxy's state.
pub struct Forwarder {
    proxy: CertgateProxy,
    connector: Connector,
    max_retries: usize,
}

/// Whether the client connection can carry another request, and the error that ended this one.
type Outcome = (bool, Option<Box<Error>>);

impl Forwarder {
    pub fn new(proxy: CertgateProxy, conf: &ServerConf) -> Forwarder {
        Forwarder {
            proxy,
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))),
            max_retries: conf.max_retries,
        }
    }

    /// One request of `session` (its first bytes already handed to it), start to end; returns
    /// the connection when it can carry another request.
    pub async fn serve(
        &self,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let p = &self.proxy;
        match session.downstream_session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(_) => {
                // As `HttpProxy` does: a header Pingora refuses gets its plain 400.
                let _ = session.downstream_session.respond_error(400).await;
                session.downstream_session.shutdown().await;
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let mut ctx = p.new_ctx();
        match p.request_filter(&mut session, &mut ctx).await {
            Ok(true) => return self.finish(session, &mut ctx, true, None).await,
            Ok(false) => {}
            Err(e) => {
                p.fail_to_proxy(&mut session, &e, &mut ctx).await;
                p.logging(&mut session, Some(&e), &mut ctx).await;
                return None;
            }
        }
        let (mut reuse, mut error) = (false, None);
        for _ in 0..self.max_retries {
            (reuse, error) = self.forward(&mut session, &mut ctx).await;
            if !error.as_ref().is_some_and(|e| e.retry()) {
                break;
            }
        }
        if let Some(e) = &error {
            p.fail_to_proxy(&mut session, e, &mut ctx).await;
        }
        self.finish(session, &mut ctx, reuse, error).await
    }

    /// `logging`, then the connection for the next request if it can carry one.
    async fn finish(
        &self,
        mut session: Session,
        ctx: &mut RequestCtx,
        reuse: bool,
        error: Option<Box<Error>>,
    ) -> Option<ReusedHttpStream> {
        self.proxy
            .logging(&mut session, error.as_deref(), ctx)
            .await;
        if !reuse {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        let stream = session.downstream_session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }

    /// One attempt: an upstream connection (pooled when one is idle), the exchange, and the
    /// connection back to the pool when it can carry another request.
    async fn forward(&self, session: &mut Session, ctx: &mut RequestCtx) -> Outcome {
        let p = &self.proxy;
        let peer = match p.upstream_peer(session, ctx).await {
            Ok(peer) => peer,
            Err(e) => return (false, Some(e)),
        };
        let (mut up, reused) = match self.connector.get_http_session(&*peer).await {
            Ok(s) => s,
            Err(e) => return (false, Some(e.into_up())),
        };
        up.read_timeout = peer.options.read_timeout;
        up.write_timeout = peer.options.write_timeout;
        let (reuse, up_reuse, error) = self.exchange(session, &mut up, ctx).await;
        if up_reuse {
            self.connector
                .release_http_session(up, &*peer, peer.idle_timeout())
                .await;
        }
        let error = error.map(|e| p.error_while_proxy(&peer, session, e, ctx, reused));
        (reuse, error)
    }

    /// The request upstream and the response back: (client reusable, upstream reusable, error).
    async fn exchange(
        &self,
        session: &mut Session,
        up: &mut Upstream,
        ctx: &mut RequestCtx,
    ) -> (bool, bool, Option<Box<Error>>) {
        let has_body = !session.is_body_empty();
        let req = match self.upstream_request(session, ctx, has_body).await {
            Ok(r) => r,
            Err(e) => return (false, true, Some(e)),
        };
        if let Err(e) = up.write_request_header(req).await {
            return (false, false, Some(e.into_up()));
        }
        if has_body {
            if let Err(e) = send_body(session, up).await {
                return (false, false, Some(e));
            }
        }
        match self.respond(session, up, ctx).await {
            Ok(()) => {}
            Err(e) => return (false, false, Some(e)),
        }
        let reuse = session.downstream_session.finish_body().await.is_ok();
        (reuse, true, None)
    }

    /// The request header the upstream gets: the client's, less hop-by-hop headers (as
    /// `HttpProxy` strips them), through `upstream_request_filter`, framed for its body.
    async fn upstream_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        has_body: bool,
    ) -> pingora::Result<Box<RequestHeader>> {
        let mut req = Box::new(session.req_header().clone());
        strip_hop_by_hop(&mut req);
        self.proxy
            .upstream_request_filter(session, &mut req, ctx)
            .await?;
        validate_request_authority(&req).map_err(|e| e.into_in())?;
        if has_body
            && !req.headers.contains_key(header::CONTENT_LENGTH)
            && !req.headers.contains_key(header::TRANSFER_ENCODING)
        {
            req.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(req)
    }

    /// Reads the response from the upstream and writes it to the client, watching the client
    /// meanwhile: a client that closes the connection ends the request.
    async fn respond(
        &self,
        session: &mut Session,
        up: &mut Upstream,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        loop {
            let task = tokio::select! {
                biased;
                task = up.read_response_task() => task.map_err(|e| e.into_up())?,
                gone = session.downstream_session.read_body_or_idle(true) => {
                    return Err(gone.err().unwrap_or_else(|| {
                        Error::new(ErrorType::ConnectionClosed)
                    }).into_down());
                }
            };
            match task {
                HttpTask::Header(mut resp, end) => {
                    let no_body = session.req_header().method == http::Method::HEAD
                        || matches!(resp.status.as_u16(), 204 | 304);
                    // A response framed by the upstream closing is sent chunked, so the client
                    // connection survives it (as `HttpProxy` does).
                    if !no_body
                        && !end
                        && !resp.status.is_informational()
                        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
                        && !resp.headers.contains_key(header::CONTENT_LENGTH)
                    {
                        resp.set_version(http::Version::HTTP_11);
                        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
                    }
                    self.proxy.response_filter(session, &mut resp, ctx).await?;
                    session
                        .write_response_header(resp, end)
                        .await
                        .map_err(|e| e.into_down())?;
                    if end {
                        return Ok(());
                    }
                }
                HttpTask::Body(data, end) => {
                    let data = data.unwrap_or_default();
                    write_body(session, data, end).await?;
                    if end {
                        return Ok(());
                    }
                }
                HttpTask::Done => return Ok(()),
                HttpTask::Failed(e) => return Err(e),
                HttpTask::Trailer(_) | HttpTask::UpgradedBody(..) => return Ok(()),
            }
        }
    }
}

async fn write_body(session: &mut Session, data: Bytes, end: bool) -> pingora::Result<()> {
    session
        .downstream_session
        .write_response_body(data, end)
        .await
        .map_err(|e| e.into_down())
}

/// The client's request body to the upstream, as it arrives.
async fn send_body(session: &mut Session, up: &mut Upstream) -> pingora::Result<()> {
    while let Some(chunk) = session
        .downstream_session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
    {
        up.write_body(&chunk).await.map_err(|e| e.into_up())?;
    }
    up.finish_body().await.map_err(|e| e.into_up())?;
    Ok(())
}

/// What `HttpProxy` removes before the request filters: the headers `Connection` names (only
/// `keep-alive` and `close` on this path) and the hop-by-hop headers.
fn strip_hop_by_hop(req: &mut RequestHeader) {
    let names_close = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close")));
    if names_close {
        req.remove_header("close");
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "connection",
        "upgrade",
        "http2-settings",
    ] {
        req.remove_header(name);
    }
}
