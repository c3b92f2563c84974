//! A listener's HTTP application: Pingora's `HttpProxy` and certgate's own forwarding side by
//! side. An HTTP/2 connection runs Pingora's h2 accept loop (through the blanket `ServerApp` of
//! an `HttpServerApp`), which hands each request stream to [`Http::process_new_http`] with its
//! header already read: a plain request goes to certgate's forwarding
//! ([`crate::proxy::forward::eligible::http2`]), anything else to `HttpProxy`. Every HTTP/2 setting (window
//! sizes, header limits, idle timeout) is `HttpProxy`'s, so nothing about the connection
//! changes.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::proxy::forward::{eligible, h2, Forwarder};
use crate::proxy::CertgateProxy;

pub struct Http {
    pub proxy: Arc<HttpProxy<CertgateProxy>>,
    /// certgate's own forwarding (see [`crate::proxy::forward`]), for HTTP/1.1 and HTTP/2.
    pub direct: Forwarder,
}

#[async_trait]
impl HttpServerApp for Http {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let session = if session.is_http2() {
            self.direct.bound_h2_header(session).await?
        } else {
            session
        };
        if session.is_http2() && eligible::http2(session.req_header()) {
            // Never `Some`: an HTTP/2 stream does not hand back its connection.
            return self
                .direct
                .serve(h2::session(session), shutdown)
                .await
                .map(|next| next.into_reused());
        }
        self.proxy.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.proxy.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.proxy
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}
