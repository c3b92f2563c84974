//! The HTTP/1.1 keep-alive loop of a connection, in place of the one Pingora runs inside
//! `ServerApp::process_new`. Pingora starts reading the next request inside its request future:
//! between two requests an idle connection holds that whole future (the proxy's state machine
//! for every phase), the HTTP session and a 4 KiB header buffer. Here the connection waits for
//! its next bytes in a small future of its own with no buffer, and only then builds the session,
//! handing it the bytes already read. An idle keep-alive connection then costs its TLS state and
//! little else (measured in benches/README.md).

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use crate::proxy::forward::{eligible, Forwarder};

/// What Pingora reads a request header into first; the same size, so nothing changes for it.
const HEADER_BUFFER: usize = 4096;

/// Pingora's keep-alive on the first request of a connection (the proxy sets its own on every
/// request after that).
const FIRST_REQUEST_KEEPALIVE_SECS: u64 = 60;

/// Serves every HTTP/1.1 request of `stream` with `app`, waiting for each request's first bytes
/// itself, within the same bounds as Pingora: its 60 s for the first request, then `idle` (the
/// listener's idle timeout, which the proxy sets as the keep-alive of every request).
///
/// Pipelined requests (RFC 9112 §9.3.2) are answered in order on the connection: every session
/// has Pingora's pipelining on, so the bytes of a next request read along with this one are
/// handed to the next session instead of ending the connection.
pub(crate) async fn serve<A: HttpServerApp + Send + Sync + 'static>(
    app: &Arc<A>,
    direct: &Forwarder,
    stream: Stream,
    idle: Duration,
    shutdown: &ShutdownWatch,
) {
    let mut wait = Duration::from_secs(FIRST_REQUEST_KEEPALIVE_SECS);
    let mut next = Some((stream, Turn::First));
    // A connection waiting for its next request ends when the process drains, as it does in
    // Pingora's own loop: the drain then finishes as soon as in-flight requests have.
    let mut drain = shutdown.clone();
    while let Some((mut stream, turn)) = next.take() {
        let (turn, pipelined) = match turn {
            Turn::Pingora(settings) => {
                next = pingora(app, stream, settings, shutdown).await;
                wait = Duration::from_secs(idle.as_secs().max(1));
                continue;
            }
            Turn::Direct(settings, pipelined) => (Turn::Next(Some(settings)), pipelined),
            turn => (turn, None),
        };
        let read = async {
            let bytes = match pipelined {
                // Pingora's idle read hands on as little as one byte of a pipelined request.
                Some(bytes) => bytes,
                None => first_bytes(&mut stream).await?,
            };
            // The path is decided on the whole header when it fits Pingora's first read,
            // however its bytes arrived: a header Pingora's parser would refuse is then
            // answered here ([`eligible::malformed`]), logged and counted, not by `HttpProxy`.
            whole_header(&mut stream, bytes).await
        };
        let first = tokio::select! {
            biased;
            read = tokio::time::timeout(wait, read) => match read {
                Ok(Some(bytes)) => bytes,
                // Closed, failed or silent: nothing was asked, nothing to answer.
                Ok(None) | Err(_) => return,
            },
            _ = drain.wait_for(|draining| *draining) => return,
        };
        next = request(app, direct, stream, turn, first, shutdown).await;
        wait = Duration::from_secs(idle.as_secs().max(1));
    }
}

/// One request, served; the connection and what comes next when it can carry another.
type RequestFuture<'a> = Pin<Box<dyn Future<Output = Option<(Stream, Turn)>> + Send + 'a>>;

/// Which request of the connection comes next.
enum Turn {
    First,
    /// A later one, with what the previous request left for it (keep-alive settings).
    Next(Option<HttpPersistentSettings>),
    /// After certgate's forwarding: its settings, and the bytes of the next request it read.
    Direct(HttpPersistentSettings, Option<BytesMut>),
    /// After Pingora's `HttpProxy`: its settings, which may hold bytes of the next request that
    /// pingora-core keeps out of reach (they are applied to a session, never read back). The
    /// next request goes to `HttpProxy` too, which parses them first; waiting for it happens
    /// inside `HttpProxy` as in Pingora's own loop.
    Pingora(Option<HttpPersistentSettings>),
}

/// One request's session, set up as Pingora's own loop does (the first request of a connection
/// gets Pingora's keep-alive, a later one what the previous request left), served by certgate's
/// own forwarding when its first bytes show a plain request ([`eligible::http1`]), refused by
/// certgate when they show a header Pingora would refuse ([`eligible::malformed`],
/// [`eligible::authority_refused`]), and by Pingora's
/// `HttpProxy` otherwise. Not async: the session moves into the boxed request future and never
/// takes room in the caller's future, which a waiting connection keeps.
fn request<'a, A: HttpServerApp + Send + Sync + 'static>(
    app: &'a Arc<A>,
    direct: &'a Forwarder,
    stream: Stream,
    turn: Turn,
    first: BytesMut,
    shutdown: &'a ShutdownWatch,
) -> RequestFuture<'a> {
    if eligible::http1(&first) {
        let mut session = Session::new_h1(stream);
        prepare(&mut session, app, turn, first, shutdown);
        return Box::pin(async move {
            let next = direct.serve(session, shutdown).await?;
            Some((next.stream, Turn::Direct(next.settings, next.pipelined)))
        });
    }
    if eligible::malformed(&first) {
        let asked = crate::proxy::access_log::RequestLine::parse(&first);
        let session = Session::new_h1(stream);
        return Box::pin(async move {
            direct.refuse_malformed(session, asked).await;
            None
        });
    }
    if eligible::authority_refused(&first) {
        let mut session = Session::new_h1(stream);
        prepare(&mut session, app, turn, first, shutdown);
        return Box::pin(async move {
            direct.refuse_unparsable(session).await;
            None
        });
    }
    let mut session = ServerSession::new_http1(stream);
    prepare(&mut session, app, turn, first, shutdown);
    Box::pin(async move {
        let (stream, settings) = app.process_new_http(session, shutdown).await?.consume();
        Some((stream, Turn::Pingora(settings)))
    })
}

/// A request that follows one `HttpProxy` served: `HttpProxy` again, on a session carrying what
/// the last one left (see [`Turn::Pingora`]).
fn pingora<'a, A: HttpServerApp + Send + Sync + 'static>(
    app: &'a Arc<A>,
    stream: Stream,
    settings: Option<HttpPersistentSettings>,
    shutdown: &'a ShutdownWatch,
) -> RequestFuture<'a> {
    let mut session = ServerSession::new_http1(stream);
    if let Some(settings) = settings {
        settings.apply_to_session(&mut session);
    }
    session.set_pipelining_enabled(true);
    Box::pin(async move {
        let (stream, settings) = app.process_new_http(session, shutdown).await?.consume();
        Some((stream, Turn::Pingora(settings)))
    })
}

/// Keep-alive settings and the bytes already read, onto a request's session.
fn prepare<A: HttpServerApp>(
    session: &mut ServerSession,
    app: &Arc<A>,
    turn: Turn,
    first: BytesMut,
    shutdown: &ShutdownWatch,
) {
    match turn {
        Turn::Next(Some(settings)) => settings.apply_to_session(session),
        // Pingora's loop applies nothing when a request left no settings.
        Turn::Next(None) | Turn::Direct(..) | Turn::Pingora(_) => {}
        Turn::First => {
            let keepalive = (!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE_SECS);
            session.set_keepalive(keepalive);
            session.set_keepalive_reuses_remaining(
                app.server_options().and_then(|o| o.keepalive_request_limit),
            );
        }
    }
    // Off by default in Pingora: the bytes of a next request read with this one would end the
    // connection after this answer.
    session.set_pipelining_enabled(true);
    session.set_pipelined_prefix(first);
}

/// The next bytes the client sends, read into a buffer of Pingora's header size. The buffer
/// exists only while a read is being tried: a waiting connection holds none. `None` when the
/// client closed the connection or reading failed.
async fn first_bytes(stream: &mut Stream) -> Option<BytesMut> {
    poll_fn(|cx| {
        let mut buf = BytesMut::with_capacity(HEADER_BUFFER);
        // `read_buf` is cancel-safe: dropping it while pending loses nothing.
        let read = pin!(stream.read_buf(&mut buf)).poll(cx);
        match read {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(_)) => Poll::Ready(Some(buf)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// `bytes` (the start of a request), read on until they hold its whole header or
/// Pingora's first read would be full; `None` when the client closed or reading failed.
async fn whole_header(stream: &mut Stream, mut bytes: BytesMut) -> Option<BytesMut> {
    while bytes.len() < HEADER_BUFFER && eligible::partial(&bytes) {
        bytes.reserve(HEADER_BUFFER - bytes.len());
        match stream.read_buf(&mut bytes).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    Some(bytes)
}
