//! A listener's connections, from accept to HTTP: connection limits (the listener's, then each
//! client address's), PROXY protocol, TLS handshake (with its own timeout and failure reasons;
//! plain HTTP where the ClientHello should be gets a 400, see `plain_http`),
//! then HTTP: HTTP/1.1 requests from our own keep-alive loop (`http1`), HTTP/2 streams from
//! Pingora's h2 loop (`http2`). Plain requests of either are forwarded by certgate
//! (`crate::proxy::forward`), the rest by Pingora's HTTP proxy. Doing the handshake here rather than
//! in Pingora's listener lets us count failed handshakes by reason and bound the handshake time
//! per listener.

/// Implements every Pingora stream trait but the I/O ones for a wrapper `$ty<S>` whose field
/// `inner: S` is the stream it watches: the header guard and the HTTP/2 header clock change how
/// bytes are read and written, nothing else about the connection.
macro_rules! delegate_stream_traits {
    ($ty:ident) => {
        #[async_trait::async_trait]
        impl<S: pingora::protocols::Shutdown + Send> pingora::protocols::Shutdown for $ty<S> {
            async fn shutdown(&mut self) {
                self.inner.shutdown().await
            }
        }

        impl<S: pingora::protocols::UniqueID> pingora::protocols::UniqueID for $ty<S> {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                self.inner.id()
            }
        }

        impl<S: pingora::protocols::Ssl> pingora::protocols::Ssl for $ty<S> {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }
            fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }
            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl<S: pingora::protocols::GetTimingDigest> pingora::protocols::GetTimingDigest
            for $ty<S>
        {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                self.inner.get_timing_digest()
            }
        }

        impl<S: pingora::protocols::GetProxyDigest> pingora::protocols::GetProxyDigest for $ty<S> {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                self.inner.get_proxy_digest()
            }
        }

        impl<S: pingora::protocols::GetSocketDigest> pingora::protocols::GetSocketDigest
            for $ty<S>
        {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                self.inner.get_socket_digest()
            }
        }

        #[async_trait::async_trait]
        impl<S: Send> pingora::protocols::Peek for $ty<S> {}
    };
}
pub(crate) use delegate_stream_traits;

pub mod alert_close;
mod coalesce;
mod h2_clock;
pub mod header_guard;
mod http1;
pub mod http2;
mod outgoing;
mod per_ip;
mod plain_http;
pub mod proxy_protocol;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::SocketDigest;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use std::os::fd::AsRawFd;

use crate::config::{ListenerConfig, ProxyProtocol};
use crate::metrics;
use crate::state::Connection;
use crate::state::Drain;
use crate::tls::acceptor::{HandshakeFailure, ListenerTls};
use crate::tls::identity::Presented;
use crate::tls::verify::AuthFailure;
use header_guard::HeaderGuard;
use http2::Http;
use pingora::protocols::{Ssl, ALPN};

pub struct ListenerApp {
    config: ListenerConfig,
    name: Arc<str>,
    tls: ListenerTls,
    /// Pingora's HTTP proxy and certgate's own forwarding (see [`http2`]).
    http: Arc<Http>,
    connections: AtomicUsize,
    /// Open connections per client address (`limits.connections_per_ip`).
    per_ip: per_ip::PerIp,
    /// Counts this listener's connections into the process-wide drain.
    drain: Arc<Drain>,
}

/// Decrements the open-connection count however the connection ends.
struct ConnectionSlot<'a> {
    app: &'a ListenerApp,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
        self.app.drain.connection_closed();
        metrics::CONNECTIONS_ACTIVE
            .with_label_values(&[&self.app.config.name])
            .dec();
    }
}

impl ListenerApp {
    pub fn new(config: ListenerConfig, tls: ListenerTls, http: Http, drain: Arc<Drain>) -> Self {
        ListenerApp {
            name: Arc::from(config.name.as_str()),
            per_ip: per_ip::PerIp::new(config.limits.connections_per_ip),
            config,
            tls,
            http: Arc::new(http),
            connections: AtomicUsize::new(0),
            drain,
        }
    }

    fn admit(&self) -> Option<ConnectionSlot<'_>> {
        let before = self.connections.fetch_add(1, Ordering::AcqRel);
        if before >= self.config.limits.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.drain.connection_opened();
        metrics::CONNECTIONS_ACTIVE
            .with_label_values(&[&self.config.name])
            .inc();
        Some(ConnectionSlot { app: self })
    }

    fn refused(&self, reason: &str) {
        metrics::CONNECTIONS_REFUSED
            .with_label_values(&[&self.config.name, reason])
            .inc();
    }

    /// Reads the PROXY header and makes its source the connection's client address.
    /// Returns the AWS VPC endpoint id when the header carried one.
    async fn proxy_protocol(
        &self,
        rule: &ProxyProtocol,
        io: &mut TcpStream,
    ) -> Result<Option<Arc<str>>, proxy_protocol::ProxyProtocolError> {
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        if let Some(ip) = peer {
            if !proxy_protocol::source_allowed(&rule.from, ip) {
                return Err(proxy_protocol::ProxyProtocolError::UntrustedSource(ip));
            }
        }
        let header = proxy_protocol::read_header(io, self.config.timeouts.handshake).await?;
        tracing::debug!(listener = %self.config.name, ?header, "PROXY header");
        if let (Some(source), Some(old)) = (header.source, io.get_socket_digest()) {
            let digest = SocketDigest::from_raw_fd(io.as_raw_fd());
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(source)));
            if let Some(local) = old.local_addr() {
                let _ = digest.local_addr.set(Some(local.clone()));
            }
            io.set_socket_digest(digest);
        }
        Ok(header.vpce_id.map(Arc::from))
    }
}

/// A connection ready for HTTP: its stream (header-guarded for HTTP/1.1), which HTTP, and its
/// place in its client address's count, held as long as the connection.
struct Accepted<'a> {
    stream: Stream,
    http1: bool,
    _per_ip: Option<per_ip::IpSlot<'a>>,
}

impl ListenerApp {
    /// PROXY header, TLS handshake and the handshake metric, up to a stream ready for HTTP.
    /// Runs boxed from `process_new`: its state (the TCP and TLS streams before boxing, the
    /// handshake) is freed once done instead of sizing the future an idle connection keeps.
    async fn accept(&self, mut io: TcpStream) -> Option<Accepted<'_>> {
        let name = &self.config.name;
        let mut vpce_id = None;
        if let Some(rule) = &self.config.proxy_protocol {
            match self.proxy_protocol(rule, &mut io).await {
                Ok(v) => vpce_id = v,
                Err(e) => {
                    tracing::info!(listener = %name, error = %e, "connection refused");
                    self.refused(e.label());
                    return None;
                }
            }
        }
        // After the PROXY header, whose source is the client; before TLS, which is the work a
        // flood from one address would make us do.
        let client = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let per_ip = match client {
            Some(ip) => match self.per_ip.admit(ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(listener = %name, client = %ip, "connection refused: connections_per_ip reached");
                    self.refused("connections_per_ip");
                    return None;
                }
            },
            None => None,
        };
        // What is read before the ClientHello counts against the handshake's timeout too.
        let deadline = self.tls.handshake_deadline(tokio::time::Instant::now());
        let fail = |failure: HandshakeFailure| {
            metrics::HANDSHAKES
                .with_label_values(&[name, "fail", failure.label()])
                .inc();
        };
        match plain_http::sniff(&mut io, deadline).await {
            plain_http::First::Other => {}
            plain_http::First::TimedOut => {
                fail(HandshakeFailure::Timeout);
                return None;
            }
            plain_http::First::PlainHttp(method) => {
                fail(HandshakeFailure::PlainHttp);
                tracing::info!(
                    listener = %name,
                    client = %client_text(client),
                    method,
                    "plain HTTP sent to the TLS port; answered 400"
                );
                plain_http::refuse(io, deadline).await;
                return None;
            }
        }
        // Outlives a failed handshake, so the client reads the alert rather than a reset.
        let linger = alert_close::Linger::keep(&io);
        let attach = move |auth| -> Arc<dyn std::any::Any + Send + Sync> {
            Arc::new(Connection::new(auth, vpce_id.clone()))
        };
        let tls = match self.tls.handshake(io, &attach, deadline).await {
            Ok(tls) => tls,
            Err(failed) => {
                fail(failed.failure);
                if let HandshakeFailure::Client(f) = failed.failure {
                    // Rendered here, on the refusal only. The DNs are the client's own text:
                    // structured fields, which both log formats escape, never the message.
                    let presented = failed.presented.as_deref().map(Presented::of);
                    let presented = presented.as_ref();
                    tracing::info!(
                        listener = %name,
                        reason = f.reason(),
                        client = %client_text(client),
                        subject = presented.map(|p| p.subject_dn.as_str()),
                        issuer = presented.map(|p| p.issuer_dn.as_str()),
                        serial = presented.map(|p| p.serial_hex.as_str()),
                        "client certificate refused in the handshake"
                    );
                }
                if let (Some(linger), false) = (linger, failed.failure == HandshakeFailure::Timeout)
                {
                    linger.close_after_alert().await;
                }
                return None;
            }
        };
        drop(linger);
        let digest = tls.ssl_digest();
        let conn = digest.as_deref().and_then(Connection::of);
        let (result, reason) = match conn.map(|c| c.auth.verdict.as_ref().err().copied()) {
            Some(None) => ("ok", "verified"),
            Some(Some(AuthFailure::NoCertificate)) | None => ("ok", "no_certificate"),
            Some(Some(f)) => ("fail", f.label()),
        };
        metrics::HANDSHAKES
            .with_label_values(&[name, result, reason])
            .inc();

        Some(match conn {
            Some(conn) if tls.selected_alpn_proto() != Some(ALPN::H2) => Accepted {
                stream: Box::new(HeaderGuard::new(
                    tls,
                    conn.header_guard.clone(),
                    self.name.clone(),
                    self.config.limits.max_header_bytes,
                    self.config.limits.header_read,
                    client,
                    self.config.hsts.clone(),
                )),
                http1: true,
                _per_ip: per_ip,
            },
            Some(_) => Accepted {
                stream: Box::new(h2_clock::HeaderClock::new(
                    tls,
                    self.name.clone(),
                    client,
                    self.config.hsts.clone(),
                    self.config.limits.header_read,
                )),
                http1: false,
                _per_ip: per_ip,
            },
            None => Accepted {
                stream: Box::new(tls),
                http1: false,
                _per_ip: per_ip,
            },
        })
    }
}

/// The client address as the log lines write it (the PROXY header's source when one was used),
/// empty when unknown, as in the access log.
fn client_text(client: Option<std::net::IpAddr>) -> String {
    client.map(|ip| ip.to_string()).unwrap_or_default()
}

#[async_trait]
impl ServerApp for ListenerApp {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Our listeners are plain TCP to Pingora; TLS is ours to run (see the module docs).
        let Ok(io) = io.into_any().downcast::<TcpStream>() else {
            tracing::error!(listener = %self.config.name, "unexpected stream type; closing");
            return None;
        };
        let Some(_slot) = self.admit() else {
            self.refused("max_connections");
            return None;
        };
        let accepted = Box::pin(self.accept(*io)).await?;
        if accepted.http1 {
            // HTTP/1.1 (ALPN or none): our keep-alive loop, see `http1`.
            http1::serve(
                &self.http.proxy,
                &self.http.direct,
                accepted.stream,
                self.config.timeouts.idle,
                shutdown,
            )
            .await;
            return None;
        }
        // HTTP/2: Pingora's own loop, which multiplexes the connection's streams and hands each
        // to `http2::Http`.
        let mut next: Option<Stream> = Some(accepted.stream);
        while let Some(stream) = next.take() {
            next = self.http.process_new(stream, shutdown).await;
        }
        None
    }

    /// Ends the connections waiting inside `HttpProxy` for their next request (those whose last
    /// request it served, see `http1`) when the listener stops accepting, as Pingora's own
    /// `ServerApp` for an `HttpProxy` does.
    async fn cleanup(&self) {
        self.http.http_cleanup().await
    }
}
