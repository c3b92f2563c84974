//! Live reload of trust material and policy, without a restart and never into a broken state.
//!
//! Every directory holding a file the config names is watched (not the files: atomic renames
//! and Kubernetes `..data` symlink swaps replace inodes). Any create/modify/remove event there,
//! or SIGHUP, schedules a reload after a short quiet period. A reload builds the new trust state
//! and policy of every listener first and swaps only if all of it is valid; otherwise the old
//! state keeps serving and the error is logged, counted and shown in `/status`.

mod status;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::config::TlsConfig;
use crate::metrics;
use crate::policy::Policy;
use crate::report::listener_report;
use crate::state::Shared;
use crate::time::{asn1_unix, now_rfc3339, now_unix};
use crate::tls::dn::rfc2253;
use crate::tls::trust::{LoadedFile, Source, TrustState};
pub(crate) use status::{Cause, Kind, ReloadStatus};

/// Quiet time after the last file event before reloading (editors and `kubectl` write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a reload waits for events to settle.
const MAX_DELAY: Duration = Duration::from_millis(1000);

/// Sets the expiry gauges from what is loaded now.
pub(crate) fn publish_gauges(shared: &Shared) {
    for l in &shared.listeners {
        let trust = l.trust.load();
        metrics::CERT_NOT_AFTER
            .with_label_values(&["server", &rfc2253(trust.server.cert.subject_name())])
            .set(asn1_unix(trust.server.cert.not_after()) as f64);
        if let Some(client) = &trust.client {
            for ca in &client.ca_certs {
                metrics::CERT_NOT_AFTER
                    .with_label_values(&["ca", &rfc2253(ca.subject_name())])
                    .set(asn1_unix(ca.not_after()) as f64);
            }
            for crl in &client.crls {
                if let Some(next) = crl.next_update {
                    metrics::CRL_NEXT_UPDATE
                        .with_label_values(&[&crl.issuer_dn])
                        .set(next as f64);
                }
            }
        }
    }
}

/// The reload kind a failing file belongs to, for `certgate_reloads_total{kind}`.
fn kind_of(shared: &Shared, file: &Path) -> Kind {
    kind_in(shared.listeners.iter().map(|l| &l.config.tls), file)
}

/// The reload kind of a trust error's origin. A fetched CRL is no file of the config, so it
/// counts as `policy`, as it did when its URL stood in for a path.
fn kind_of_origin(shared: &Shared, origin: &Source) -> Kind {
    match origin {
        Source::File(file) => kind_of(shared, file),
        Source::Url(_) => Kind::Policy,
    }
}

/// The kind `file` has for these listeners' TLS settings; a file none of them names is a
/// policy (or one of its includes).
fn kind_in<'a>(listeners: impl IntoIterator<Item = &'a TlsConfig>, file: &Path) -> Kind {
    for tls in listeners {
        if tls.cert == file || tls.key == file {
            return Kind::Cert;
        }
        if tls.client_ca.as_deref() == Some(file) {
            return Kind::Ca;
        }
        if tls.crl.iter().any(|c| c == file) {
            return Kind::Crl;
        }
        if tls.session_ticket_keys.as_deref() == Some(file) {
            return Kind::TicketKeys;
        }
    }
    Kind::Policy
}

/// One listener's freshly built state.
struct Candidate {
    trust: Option<TrustState>,
    trust_kinds: Vec<Kind>,
    policy: Option<Option<Arc<Policy>>>,
}

/// Which kinds changed between two trust states' files: a file new, or with new contents.
fn changed_kinds(
    old: &[LoadedFile],
    new: &[LoadedFile],
    kind_of: impl Fn(&Path) -> Kind,
) -> Vec<Kind> {
    let same = |f: &LoadedFile| old.iter().any(|o| o.path == f.path && o.sha256 == f.sha256);
    let mut kinds: Vec<Kind> = new
        .iter()
        .filter(|f| !same(f))
        .map(|f| kind_of(&f.path))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Changed,
    Unchanged,
    Failed,
}

/// The kinds some listener's config names files of.
fn configured_kinds(shared: &Shared) -> BTreeSet<Kind> {
    let mut kinds = BTreeSet::from([Kind::Cert]);
    for l in &shared.listeners {
        let tls = &l.config.tls;
        if tls.client_ca.is_some() {
            kinds.insert(Kind::Ca);
        }
        if !tls.crl.is_empty() {
            kinds.insert(Kind::Crl);
        }
        if tls.session_ticket_keys.is_some() && tls.session_lifetime.is_some() {
            kinds.insert(Kind::TicketKeys);
        }
        if l.config.policy.is_some() {
            kinds.insert(Kind::Policy);
        }
    }
    kinds
}

/// The reloads of one process: its shared state and what the last reload did.
pub(crate) struct Reloader {
    shared: Arc<Shared>,
    last: Mutex<ReloadStatus>,
}

impl Reloader {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Reloader> {
        Arc::new(Reloader {
            shared,
            last: Mutex::new(ReloadStatus::Never),
        })
    }

    /// The outcome of the last reload, for `/status`.
    pub(crate) fn last(&self) -> ReloadStatus {
        self.last
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_last(&self, status: ReloadStatus) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Builds everything new, then swaps all of it or none. Each kind reloaded counts once.
    pub(crate) fn reload(&self, cause: Cause) -> Outcome {
        reload(self, cause)
    }
}

fn reload(reloader: &Reloader, cause: Cause) -> Outcome {
    let shared = &*reloader.shared;
    // Fetched CRLs build trust states too: one builder at a time sees one consistent view.
    let _build = shared.revocation.build_lock();
    let mut candidates = Vec::new();
    for l in &shared.listeners {
        let old = l.trust.load();
        let fetched = shared.revocation.fetched_for(&l.config.tls);
        let trust = match old.reload(&l.config.tls, &fetched) {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    reloader,
                    cause,
                    &l.config.name,
                    kind_of_origin(shared, &e.origin),
                    &e,
                )
            }
        };
        let kinds = changed_kinds(&old.files, &trust.files, |f| kind_of(shared, f));
        let policy = match &l.config.policy {
            None => None,
            Some(path) => match Policy::load(path) {
                Ok(p) => {
                    let same = l
                        .policy
                        .load()
                        .as_ref()
                        .is_some_and(|cur| cur.sha256_hex() == p.sha256_hex());
                    (!same).then(|| Some(Arc::new(p)))
                }
                Err(e) => return fail(reloader, cause, &l.config.name, Kind::Policy, &e),
            },
        };
        candidates.push(Candidate {
            trust: (!kinds.is_empty()).then_some(trust),
            trust_kinds: kinds,
            policy,
        });
    }
    let mut reloaded = BTreeSet::new();
    for (l, c) in shared.listeners.iter().zip(candidates) {
        if let Some(trust) = c.trust {
            tracing::info!(listener = %l.config.name, kinds = ?c.trust_kinds, generation = trust.generation, "trust material reloaded");
            reloaded.extend(c.trust_kinds);
            l.trust.store(Arc::new(trust));
        }
        if let Some(policy) = c.policy {
            tracing::info!(listener = %l.config.name, sha256 = policy.as_ref().map(|p| p.sha256_hex()).unwrap_or(""), "policy reloaded");
            reloaded.insert(Kind::Policy);
            l.policy.store(policy);
        }
    }
    let outcome = if reloaded.is_empty() {
        Outcome::Unchanged
    } else {
        publish_gauges(shared);
        Outcome::Changed
    };
    if cause == Cause::Sighup {
        if outcome == Outcome::Unchanged {
            tracing::info!(cause = cause.label(), "reloaded; nothing changed");
        }
        // An operator used to NGINX sends SIGHUP after editing the config itself: say that
        // those edits wait for a restart instead of letting the old config serve unannounced.
        if shared.config.changed_on_disk() == Some(true) {
            tracing::warn!(
                config = %shared.config.path.display(),
                "the config file changed since start; a reload re-reads only the files it names (certificates, key, CA bundle, CRLs, policies, ticket keys): restart certgate to apply the config's own changes"
            );
        }
        reloaded.extend(configured_kinds(shared));
    }
    for kind in &reloaded {
        metrics::RELOADS
            .with_label_values(&[kind.label(), "ok"])
            .inc();
    }
    // The files match what is serving after a failed reload: say so rather than leave an old
    // error standing.
    if !reloaded.is_empty() || reloader.last().failed() {
        reloader.set_last(ReloadStatus::Ok {
            at: now_rfc3339(),
            cause,
            kinds: reloaded.into_iter().collect(),
        });
    }
    outcome
}

fn fail(
    reloader: &Reloader,
    cause: Cause,
    listener: &str,
    kind: Kind,
    e: &dyn std::fmt::Display,
) -> Outcome {
    let message = format!("listener {listener}: {e}");
    tracing::error!(kind = kind.label(), cause = cause.label(), error = %message, "reload rejected; the previous state keeps serving");
    metrics::RELOADS
        .with_label_values(&[kind.label(), "error"])
        .inc();
    reloader.set_last(ReloadStatus::Failed {
        at: now_rfc3339(),
        cause,
        kinds: vec![kind],
        error: message,
    });
    Outcome::Failed
}

/// Every file the listeners read now (certificates, keys, CAs, CRLs, policies and includes).
fn watched_files(shared: &Shared) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for l in &shared.listeners {
        files.extend(l.config.tls.files());
        if let Some(p) = l.policy.load().as_ref() {
            files.extend(p.files().iter().cloned());
        } else if let Some(p) = &l.config.policy {
            files.push(p.clone());
        }
    }
    // A file that is a symlink into another directory changes there: watch that one too.
    let resolved: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    files.extend(resolved);
    files
}

/// What the watcher listens to: the directories of the files, and which names in them matter.
#[derive(Default, Clone, PartialEq, Eq)]
struct WatchSet {
    dirs: BTreeSet<PathBuf>,
    names: BTreeSet<std::ffi::OsString>,
}

impl WatchSet {
    fn of(shared: &Shared) -> WatchSet {
        let files = watched_files(shared);
        WatchSet {
            dirs: files
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .collect(),
            names: files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
                .collect(),
        }
    }

    /// Our files, or Kubernetes' `..data` / `..2026_…` entries. Anything else in the same
    /// directory (our own log file, editor swap files) is not a reason to reload.
    fn concerns(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| {
            self.names.contains(n) || n.to_str().is_some_and(|n| n.starts_with(".."))
        })
    }
}

/// Logs what an operator should act on: expiring certificates, CRLs near nextUpdate, loose
/// key permissions. Run at start, daily, and after each reload.
pub(crate) fn log_warnings(shared: &Shared) {
    for l in &shared.listeners {
        let policy = l.policy.load_full();
        for w in listener_report(&l.config, &l.trust.load(), policy.as_deref()).warnings {
            tracing::warn!(listener = %l.config.name, "{w}");
        }
    }
}

/// Starts the watcher and the SIGHUP handler on a thread of their own.
pub(crate) fn spawn(reloader: Arc<Reloader>) -> anyhow::Result<()> {
    let shared = reloader.shared.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Cause>();
    let fs_tx = tx.clone();
    let set = Arc::new(std::sync::RwLock::new(WatchSet::of(&shared)));
    let filter = set.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Only changes count: our own reads would otherwise produce access events and a loop.
        if let Ok(ev) = ev {
            let relevant = match ev.kind {
                EventKind::Create(_) | EventKind::Remove(_) => true,
                EventKind::Modify(m) => !matches!(m, notify::event::ModifyKind::Metadata(_)),
                _ => false,
            };
            let ours = filter
                .read()
                .map(|set| ev.paths.iter().any(|p| set.concerns(p)))
                .unwrap_or(true);
            if relevant && ours {
                let _ = fs_tx.send(Cause::FileChange);
            }
        }
    })?;
    let dirs = set.read().map(|s| s.dirs.clone()).unwrap_or_default();
    for d in &dirs {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch; SIGHUP still reloads");
        }
    }
    // Installed before the server runs: SIGHUP's default action would end the process.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let hup = rt
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    std::thread::Builder::new()
        .name("certgate-reload".into())
        .spawn(move || {
            rt.block_on(run_loop(reloader, watcher, set, rx, tx, hup));
        })?;
    Ok(())
}

async fn run_loop(
    reloader: Arc<Reloader>,
    mut watcher: notify::RecommendedWatcher,
    set: Arc<std::sync::RwLock<WatchSet>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Cause>,
    tx: tokio::sync::mpsc::UnboundedSender<Cause>,
    mut hup: tokio::signal::unix::Signal,
) {
    let shared = reloader.shared.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.send(Cause::Sighup);
        }
    });
    log_warnings(&shared);
    let mut daily = tokio::time::interval(Duration::from_secs(24 * 3600));
    daily.tick().await;
    let mut crl_check = tokio::time::interval(Duration::from_secs(600));
    loop {
        let cause = tokio::select! {
            c = rx.recv() => match c { Some(c) => c, None => return },
            _ = daily.tick() => { log_warnings(&shared); continue; }
            _ = crl_check.tick() => { warn_crl_freshness(&shared); continue; }
        };
        // Debounce: wait until events stop for DEBOUNCE, but never longer than MAX_DELAY, so a
        // steady trickle of events cannot postpone a reload.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        let mut cause = cause;
        while let Ok(Some(c)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            if c == Cause::Sighup {
                cause = c;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        tracing::debug!(cause = cause.label(), "reloading");
        if reloader.reload(cause) == Outcome::Changed {
            log_warnings(&shared);
        }
        let now = WatchSet::of(&shared);
        let added: Vec<PathBuf> = match set.write() {
            Ok(mut current) => {
                let added = now.dirs.difference(&current.dirs).cloned().collect();
                *current = now;
                added
            }
            Err(_) => Vec::new(),
        };
        // Not under the lock: `watch` waits for notify's event thread, and that thread may be
        // in the event handler waiting for the read lock (an event arriving just then, such as
        // the next Secret rotation): a deadlock that stopped every later reload.
        for d in &added {
            let _ = watcher.watch(d, RecursiveMode::NonRecursive);
        }
    }
}

/// From 24 hours before a CRL's nextUpdate, say so (every 10 minutes) until a new one arrives.
fn warn_crl_freshness(shared: &Shared) {
    let now = now_unix();
    for l in &shared.listeners {
        if let Some(client) = &l.trust.load().client {
            for crl in &client.crls {
                if let Some(next) = crl.next_update {
                    if next < now {
                        tracing::error!(listener = %l.config.name, issuer = %crl.issuer_dn, file = %crl.source, "CRL is past its nextUpdate; publish a new one");
                    } else if next - now < 86_400 {
                        tracing::warn!(listener = %l.config.name, issuer = %crl.issuer_dn, file = %crl.source, hours_left = (next - now) / 3600, "CRL reaches its nextUpdate soon; publish a new one");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsConfig {
        let yaml = "tls:\n  cert: /t/server.pem\n  key: /t/server-key.pem\n  client_ca: /t/ca.pem\n  crl: [/t/a.crl, /t/b.crl]\n  session_ticket_keys: /t/ticket.keys\nlisteners:\n  - name: l\n    listen: 127.0.0.1:9443\n    upstream: http://127.0.0.1:80\n";
        crate::config::Config::from_yaml(yaml, Path::new("/t/certgate.yaml"), |_| None)
            .expect("config")
            .listeners
            .remove(0)
            .tls
    }

    fn file(path: &str, sha256: &str) -> LoadedFile {
        LoadedFile {
            path: PathBuf::from(path),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn each_file_has_the_kind_its_key_gives_it() {
        let tls = tls();
        let kind = |f: &str| kind_in([&tls], Path::new(f));
        assert_eq!(kind("/t/server.pem"), Kind::Cert);
        assert_eq!(kind("/t/server-key.pem"), Kind::Cert);
        assert_eq!(kind("/t/ca.pem"), Kind::Ca);
        assert_eq!(kind("/t/b.crl"), Kind::Crl);
        assert_eq!(kind("/t/ticket.keys"), Kind::TicketKeys);
        assert_eq!(kind("/t/policy.yaml"), Kind::Policy);
    }

    #[test]
    fn changed_kinds_names_new_and_changed_files_once_each() {
        let tls = tls();
        let kind = |f: &Path| kind_in([&tls], f);
        let old = [
            file("/t/server.pem", "1"),
            file("/t/server-key.pem", "2"),
            file("/t/ca.pem", "3"),
            file("/t/a.crl", "4"),
        ];
        assert!(changed_kinds(&old, &old, kind).is_empty());
        let new = [
            file("/t/server.pem", "1"),
            file("/t/server-key.pem", "2"),
            file("/t/ca.pem", "3x"),
            file("/t/a.crl", "4y"),
            file("/t/b.crl", "5"),
        ];
        assert_eq!(changed_kinds(&old, &new, kind), [Kind::Ca, Kind::Crl]);
        // A file that went away is not a change of what is loaded now.
        assert!(changed_kinds(&old, &old[..2], kind).is_empty());
        let both = [file("/t/server.pem", "9"), file("/t/server-key.pem", "9")];
        assert_eq!(changed_kinds(&old, &both, kind), [Kind::Cert]);
    }
}
