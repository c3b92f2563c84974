//! What `/readyz` and `/status` report about the running process: readiness with its reason,
//! each listener's report, the drain and the last reload. The admin endpoint serves it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::reload::{ReloadStatus, Reloader};
use crate::report;
use crate::state::Shared;

/// Where `/status` reads the last reload from: the [`Reloader`], named here so the admin endpoint
/// (which only serves what this module reports) does not depend on the reload machinery.
pub(crate) trait LastReload: Send + Sync {
    fn last(&self) -> ReloadStatus;
}

impl LastReload for Reloader {
    fn last(&self) -> ReloadStatus {
        Reloader::last(self)
    }
}

/// Why the process is not ready, or None.
pub(crate) fn not_ready_reason(shared: &Shared) -> Option<String> {
    if shared.drain.is_draining() {
        return Some("draining".into());
    }
    if !shared.started.load(Ordering::Acquire) {
        return Some("starting".into());
    }
    if !shared.listening.load(Ordering::Acquire) {
        // Pingora binds the listener sockets after start-up, on its own threads.
        match unbound_listener(shared) {
            Some(addr) => return Some(format!("listener {addr} not bound yet")),
            None => shared.listening.store(true, Ordering::Release),
        }
    }
    if let Some(reason) = shared.revocation.not_ready_reason() {
        return Some(reason);
    }
    for l in &shared.listeners {
        if l.trust.load().has_expired_crl() {
            return Some(format!(
                "listener {}: a loaded CRL is past its nextUpdate",
                l.config.name
            ));
        }
    }
    None
}

/// The first listener address that no socket of this process listens on yet.
pub(crate) fn unbound_listener(shared: &Shared) -> Option<SocketAddr> {
    let ours = own_listening();
    shared
        .listeners
        .iter()
        .flat_map(|l| &l.config.listen)
        .find(|a| !ours(a))
        .copied()
}

/// Which TCP addresses this process's own sockets listen on, asked of the kernel: another
/// process that took an address while Pingora retried its bind must not read as this one (a
/// probe connection would be accepted and counted as a failed handshake). Where `/proc` cannot
/// be read, an address counts once it cannot be bound.
fn own_listening() -> impl Fn(&SocketAddr) -> bool {
    #[cfg(target_os = "linux")]
    if let Some(ours) = linux::listening_sockets() {
        return Box::new(move |a: &SocketAddr| ours.contains(a))
            as Box<dyn Fn(&SocketAddr) -> bool>;
    }
    Box::new(
        |a: &SocketAddr| matches!(std::net::TcpListener::bind(a), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse),
    )
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use procfs::net::TcpState;
    use procfs::process::{FDTarget, Process};

    /// The local addresses of this process's listening TCP sockets (its open socket inodes
    /// matched against the kernel's socket tables).
    pub(super) fn listening_sockets() -> Option<HashSet<SocketAddr>> {
        let inodes: HashSet<u64> = Process::myself()
            .ok()?
            .fd()
            .ok()?
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect();
        let v4 = procfs::net::tcp().ok()?;
        let v6 = procfs::net::tcp6().unwrap_or_default();
        Some(
            v4.into_iter()
                .chain(v6)
                .filter(|e| e.state == TcpState::Listen && inodes.contains(&e.inode))
                .map(|e| e.local_address)
                .collect(),
        )
    }

    #[cfg(test)]
    mod tests {
        use std::net::SocketAddr;

        use super::listening_sockets;

        #[test]
        fn only_this_processs_listening_sockets_are_its_own() {
            let mine = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = mine.local_addr().expect("addr");
            assert!(listening_sockets().expect("/proc").contains(&addr));
            // Held by another process: taken, but not ours.
            let probe = "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)";
            let mut child = std::process::Command::new("python3")
                .args(["-c", probe])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
                &mut line,
            )
            .expect("port");
            let theirs: SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().expect("port");
            let ours = listening_sockets().expect("/proc");
            let _ = child.kill();
            let _ = child.wait();
            assert!(!ours.contains(&theirs), "{theirs} is another process's");
            drop(mine);
            assert!(!listening_sockets().expect("/proc").contains(&addr));
        }
    }
}

/// The `/status` document: the process, each listener's report and the last reload.
pub(crate) fn status(shared: &Shared, last_reload: &ReloadStatus) -> serde_json::Value {
    let listeners: Vec<_> = shared
        .listeners
        .iter()
        .map(|l| {
            let policy = l.policy.load_full();
            report::listener_report(&l.config, &l.trust.load(), policy.as_deref())
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": shared.config.path.display().to_string(),
        // A reload does not apply the config's own edits: true until a restart does.
        "config_changed_since_start": shared.config.changed_on_disk(),
        "ready": not_ready_reason(shared).is_none(),
        "not_ready_reason": not_ready_reason(shared),
        "draining": shared.drain.is_draining(),
        "listeners": listeners,
        "last_reload": last_reload,
        "crl_fetch": shared.revocation.status_json(),
        "uncovered_issuers": shared
            .listeners
            .iter()
            .flat_map(|l| l.trust.load().seen.status_json())
            .collect::<Vec<_>>(),
        "ocsp": shared.revocation.ocsp().status_json(),
    })
}
