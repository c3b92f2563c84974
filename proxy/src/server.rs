//! `certgate run`: config → validated model → trust states and policies → one Pingora service
//! per listener, the admin endpoint, the reloader, and the signal handling that drains.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;

use crate::admin;
use crate::admin::metrics;
use crate::config::Config;
use crate::listener::ListenerApp;
use crate::policy::Policy;
use crate::proxy::{CertgateProxy, Listener};
use crate::tls::acceptor::ListenerTls;
use crate::tls::trust::TrustState;

/// Set once SIGTERM/SIGINT arrives; process-wide, as signals are.
static DRAINING: AtomicBool = AtomicBool::new(false);

pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}

/// Outcome of the last reload, for `/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub at: Option<String>,
    /// What set it off: `SIGHUP` or `file change`.
    pub cause: Option<String>,
    pub result: Option<String>,
    /// The kinds (`cert`, `ca`, `crl`, `policy`) it reloaded, as counted in the metric.
    pub kinds: Vec<String>,
    pub error: Option<String>,
}

/// What the running process shares between its proxy, admin endpoint and reloader.
pub struct Shared {
    pub config: Config,
    pub listeners: Vec<Arc<Listener>>,
    pub started: AtomicBool,
    /// Every listener address is bound (checked by `/readyz` until true).
    pub listening: AtomicBool,
    pub last_reload: Mutex<ReloadStatus>,
    /// Open client connections over all listeners, so a drain can end as soon as they are gone.
    pub open_connections: Arc<AtomicUsize>,
}

/// Loads the trust state and policy of every listener. Used at start and by `check`.
pub fn load_listeners(config: &Config) -> anyhow::Result<Vec<Arc<Listener>>> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let trust =
            TrustState::load(&l.tls, 1).map_err(|e| anyhow::anyhow!("listener {}: {e}", l.name))?;
        let policy = match &l.policy {
            Some(p) => Some(Arc::new(
                Policy::load(p).map_err(|e| anyhow::anyhow!("listener {}: {e}", l.name))?,
            )),
            None => None,
        };
        out.push(Arc::new(Listener {
            config: l.clone(),
            trust: Arc::new(ArcSwap::from_pointee(trust)),
            policy: Arc::new(ArcSwapOption::new(policy)),
        }));
    }
    Ok(out)
}

/// No read buffer under each client connection's TLS layer: Pingora's default is 64 KiB, which
/// an idle keep-alive connection would keep for its lifetime. OpenSSL reads ahead into its own
/// record buffer instead and releases it while the connection is idle (`tls/acceptor.rs`).
const L4_READ_BUFFER: usize = 0;
/// Write buffer (Pingora's default: about one MSS).
const L4_WRITE_BUFFER: usize = 1460;

/// Builds everything, then serves until SIGTERM/SIGINT. Returns after the drain.
pub fn run(config: Config) -> anyhow::Result<()> {
    metrics::init();
    // Cached fetched CRLs are part of the first trust states, before anything accepts.
    crate::tls::revocation::prepare(&config.listeners.iter().map(|l| &l.tls).collect::<Vec<_>>());
    let listeners = load_listeners(&config)?;
    let shared = Arc::new(Shared {
        listeners,
        started: AtomicBool::new(false),
        listening: AtomicBool::new(false),
        last_reload: Mutex::new(ReloadStatus::default()),
        open_connections: Arc::new(AtomicUsize::new(0)),
        config,
    });
    crate::reload::publish_gauges(&shared);
    for l in &shared.config.listeners {
        metrics::init_listener(&l.name);
    }

    let conf = ServerConf {
        threads: shared.config.threads,
        upstream_keepalive_pool_size: shared.config.upstream_keepalive,
        // Each worker thread runs its own event loop and new connections go to a random one:
        // no work-stealing queues and cross-thread wakeups on every request (28% more
        // keep-alive requests per core, measured in benches/).
        work_stealing: false,
        grace_period_seconds: Some(shared.config.shutdown_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();

    for listener in &shared.listeners {
        let cfg = &listener.config;
        let tls = ListenerTls::new(
            &cfg.name,
            &cfg.tls,
            cfg.timeouts.handshake,
            listener.trust.clone(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: listener {}: {e}",
                shared.config.path.display(),
                cfg.name
            )
        })?;
        let mut http =
            pingora::proxy::HttpProxy::new(CertgateProxy::new(listener.clone()), conf.clone());
        http.handle_init_modules();
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(cfg.timeouts.idle);
        http.server_options = Some(options);
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        // Large windows keep multi-GB registry transfers over HTTP/2 from crawling.
        h2.initial_window_size(8 << 20)
            .initial_connection_window_size(16 << 20);
        http.h2_options = Some(h2);
        let app = ListenerApp::new(cfg.clone(), tls, http, shared.open_connections.clone());
        let mut service = Service::new(format!("listener {}", cfg.name), app);
        for addr in &cfg.listen {
            service.add_listener(
                pingora::listeners::ListenerConfig::tcp(addr.to_string())
                    .l4_buffer(L4BufferSettings::new(L4_READ_BUFFER, L4_WRITE_BUFFER)),
            );
        }
        server.add_service(service);
    }

    if let Some(addr) = shared.config.admin {
        admin::spawn(addr, shared.clone())?;
    }
    crate::reload::spawn(shared.clone())?;
    crate::tls::revocation::spawn(
        shared
            .listeners
            .iter()
            .map(|l| crate::tls::revocation::Target {
                name: l.config.name.clone(),
                tls: l.config.tls.clone(),
                trust: l.trust.clone(),
            })
            .collect(),
    )?;
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
        DRAINING.store(true, Ordering::Release);
        let grace = self.shared.config.shutdown_grace;
        tracing::info!(signal = which, grace = ?grace, "draining: no new connections, in-flight requests may finish");
        let open = self.shared.open_connections.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + grace;
            // Pingora stops accepting right after this returns; give it a moment so a
            // connection accepted just before counts.
            std::thread::sleep(Duration::from_millis(100));
            while open.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            tracing::info!(open = open.load(Ordering::Acquire), "drained; exiting");
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}
