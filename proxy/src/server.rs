//! `certgate run`: config → validated model → trust states and policies → one Pingora service
//! per listener, the admin endpoint, the reloader, and the signal handling that drains.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use crate::admin;
use crate::config::Config;
use crate::listener::http2::Http;
use crate::listener::ListenerApp;
use crate::metrics;
use crate::proxy::forward::Forwarder;
use crate::proxy::CertgateProxy;
use crate::reload::Reloader;
use crate::state::{load_listeners, Listener, Shared};
use crate::tls::acceptor::ListenerTls;
use crate::tls::revocation::{Revocation, Target};

/// No read buffer under each client connection's TLS layer: Pingora's default is 64 KiB, which
/// an idle keep-alive connection would keep for its lifetime. OpenSSL reads ahead into its own
/// record buffer instead and releases it while the connection is idle (`tls/acceptor.rs`).
const L4_READ_BUFFER: usize = 0;
/// Write buffer (Pingora's default: about one MSS).
const L4_WRITE_BUFFER: usize = 1460;

/// How much free memory at the top of a malloc heap glibc keeps before giving it back to the
/// kernel (its default is 128 KiB). A transfer allocates and frees record and body buffers of
/// 16-64 KiB for every chunk it moves; with the default, each free could shrink the heap and the
/// next allocation fault the same pages back in: 10,000 to 73,000 page faults per GiB downloaded,
/// about 7% of the proxy's CPU there (benches/README.md). 2 MiB keeps those pages mapped; a
/// process keeps at most that much more per heap (idle RSS is unchanged).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_TRIM_THRESHOLD: libc::c_int = 2 << 20;

fn keep_freed_heap_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of glibc's allocator; it is called before the
    // runtime threads start and any value is valid for M_TRIM_THRESHOLD.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD);
    }
}

/// Gives the kernel back the heap pages freed during start-up, once, when the listeners are
/// up: the trim threshold above keeps them otherwise, as this thread's own malloc arena would
/// keep what it used reading `/proc` (0.2 MiB less anonymous memory at idle, measured).
fn release_freed_heap_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel; it takes
    // the arenas' locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Builds everything, then serves until SIGTERM/SIGINT. Returns after the drain.
pub(crate) fn run(config: Config) -> anyhow::Result<()> {
    keep_freed_heap_pages();
    check_listen_addresses(&config)?;
    metrics::init();
    // Fetched CRLs, discovery and OCSP answers: one value every listener shares.
    let revocation = Revocation::new();
    // Cached fetched CRLs are part of the first trust states, before anything accepts.
    revocation.prepare(&config.listeners.iter().map(|l| &l.tls).collect::<Vec<_>>());
    let listeners = load_listeners(&config, &revocation)?;
    let shared = Arc::new(Shared::new(config, listeners, revocation));
    crate::reload::publish_gauges(&shared);
    for l in &shared.config.listeners {
        metrics::init_listener(&l.name);
    }

    let mut server = Server::new_with_opt_and_conf(None, server_conf(&shared.config));
    server.bootstrap();
    let conf = server.configuration.clone();
    for listener in &shared.listeners {
        server.add_service(listener_service(&shared, listener, &conf)?);
    }

    let reloader = Reloader::new(shared.clone());
    if let Some(addr) = shared.config.admin {
        admin::spawn(addr, shared.clone(), reloader.clone())?;
    }
    crate::reload::spawn(reloader)?;
    shared.revocation.spawn(
        shared
            .listeners
            .iter()
            .map(|l| Target {
                name: l.config.name.clone(),
                tls: l.config.tls.clone(),
                trust: l.trust.clone(),
            })
            .collect(),
    )?;
    watch_binds(shared.clone())?;
    shared.started.store(true, Ordering::Release);
    tracing::info!(
        listeners = ?shared.config.listeners.iter().map(|l| (&l.name, &l.listen)).collect::<Vec<_>>(),
        admin = ?shared.config.admin,
        "certgate started"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainOnSignal {
            shared: shared.clone(),
        }),
    });
    Ok(())
}

/// Each listener address is bound once, and let go, before anything starts. Pingora binds them
/// later on its own threads: an address it cannot have (another process listens there, a port
/// below 1024 without the capability, an address of no interface) would panic its listener
/// thread and leave the process up without that listener, and one held by another process
/// would even read as bound to `/readyz`. Here it is an error that names the key and the fix.
fn check_listen_addresses(config: &Config) -> anyhow::Result<()> {
    let listeners = config.listeners.iter().enumerate().flat_map(|(i, l)| {
        l.listen
            .iter()
            .map(move |addr| (format!("listeners[{i}].listen"), *addr))
    });
    // The admin endpoint binds later too, after Pingora has started logging.
    let admin = config.admin.map(|addr| ("admin.listen".to_string(), addr));
    for (key, addr) in listeners.chain(admin) {
        // std sets SO_REUSEADDR as Pingora does: a port left in TIME_WAIT is no conflict.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            anyhow::bail!(
                "{}: {key}: cannot listen on {addr}: {e}{}",
                config.path.display(),
                crate::config::bind_fix(&e)
            );
        }
    }
    Ok(())
}

/// How long Pingora's listener binds are waited for: it retries an address in use once a
/// second, 30 times, and then gives up in a panic that leaves the process up without it.
const BIND_DEADLINE: Duration = Duration::from_secs(35);

/// Waits until every listener address is listened on by this process (Pingora binds them on
/// its own threads once the server runs). Another process can still take an address between
/// `check_listen_addresses` and that bind; then certgate says which and exits rather than stay
/// up without the listener.
fn watch_binds(shared: Arc<Shared>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("certgate-binds".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + BIND_DEADLINE;
            loop {
                let Some(addr) = crate::status::unbound_listener(&shared) else {
                    shared.listening.store(true, Ordering::Release);
                    release_freed_heap_pages();
                    return;
                };
                if std::time::Instant::now() >= deadline {
                    tracing::error!(%addr, "a listener address could not be bound in {BIND_DEADLINE:?}: another process listens there; exiting");
                    eprintln!(
                        "error: {}: cannot listen on {addr}{}",
                        shared.config.path.display(),
                        crate::config::bind_fix(&std::io::Error::from(
                            std::io::ErrorKind::AddrInUse
                        ))
                    );
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })?;
    Ok(())
}

/// Pingora's settings from ours.
fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.threads,
        upstream_keepalive_pool_size: config.upstream_keepalive,
        // Each worker thread runs its own event loop and new connections go to a random one:
        // no work-stealing queues and cross-thread wakeups on every request (28% more
        // keep-alive requests per core, measured in benches/).
        work_stealing: false,
        grace_period_seconds: Some(config.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    }
}

/// One listener as a Pingora service: our TLS and connection handling around its HTTP proxy.
fn listener_service(
    shared: &Shared,
    listener: &Arc<Listener>,
    conf: &Arc<ServerConf>,
) -> anyhow::Result<Service<ListenerApp>> {
    let cfg = &listener.config;
    let tls = ListenerTls::new(
        &cfg.name,
        &cfg.tls,
        cfg.timeouts.handshake,
        listener.trust.clone(),
        shared.revocation.clone(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: listener {}: {e}",
            shared.config.path.display(),
            cfg.name
        )
    })?;
    let index = shared
        .listeners
        .iter()
        .position(|l| Arc::ptr_eq(l, listener))
        .unwrap_or(0);
    let proxy = CertgateProxy::new(
        listener.clone(),
        shared.drain.clone(),
        shared.inventory.clone(),
        shared.revocation.ocsp().clone(),
        index,
    );
    let direct = Forwarder::new(proxy.clone(), conf);
    let mut http = pingora::proxy::HttpProxy::new(proxy, conf.clone());
    http.handle_init_modules();
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(cfg.timeouts.idle);
    http.server_options = Some(options);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    // Large windows keep multi-GB registry transfers over HTTP/2 from crawling.
    h2.initial_window_size(8 << 20)
        .initial_connection_window_size(16 << 20);
    // `limits.max_header_bytes` is checked on each stream's header, as on HTTP/1.1, and
    // answered with a logged 431 (`Forwarder::bound_h2_header`). h2's own bound, in its own
    // measure (32 bytes more per field), is set well beyond it: a block that passes it reaches
    // that check; one beyond it gets h2's bare 431 without ever being decoded whole.
    let h2_list = cfg.limits.max_header_bytes.saturating_mul(4).max(64 << 10);
    h2.max_header_list_size(u32::try_from(h2_list).unwrap_or(u32::MAX));
    http.h2_options = Some(h2);
    let http = Http {
        proxy: Arc::new(http),
        direct,
    };
    let app = ListenerApp::new(cfg.clone(), tls, http, shared.drain.clone());
    let mut service = Service::new(format!("listener {}", cfg.name), app);
    for addr in &cfg.listen {
        service.add_listener(
            pingora::listeners::ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::new(L4_READ_BUFFER, L4_WRITE_BUFFER)),
        );
    }
    Ok(service)
}

/// SIGTERM and SIGINT both drain (Pingora's default makes SIGINT a fast stop). The drain ends
/// when the last connection closes or `shutdown_grace` runs out, whichever comes first.
struct DrainOnSignal {
    shared: Arc<Shared>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnSignal {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers; stop certgate with SIGKILL");
            return std::future::pending().await;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        self.shared.drain.start();
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(signal = which, grace = ?grace, "draining: no new connections, in-flight requests may finish");
        let drain = self.shared.drain.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + grace;
            // Pingora stops accepting right after this returns; give it a moment so a
            // connection accepted just before counts.
            std::thread::sleep(Duration::from_millis(100));
            while drain.open() > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::info!(open = drain.open(), "drained; exiting");
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}
