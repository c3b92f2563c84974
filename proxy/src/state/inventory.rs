//! The client certificates the proxy has seen, for `GET /clients` and
//! `certgate_client_cert_expiry_seconds`: who is connecting, and whose certificate is about to
//! expire (a node whose hand-issued certificate lapses otherwise drops out silently).
//!
//! A connection looks its entry up once (one short lock on the map) and keeps the `Arc`; each
//! of its requests then only writes atomics, so the hot path takes no shared lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics;
use crate::tls::identity::Identity;

/// How far back a certificate counts for `certgate_client_cert_expiry_seconds`: a node that
/// stopped connecting a day ago no longer holds its group's alert.
pub(crate) const METRIC_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Every client certificate seen, at most `max`, keyed by SHA-256 fingerprint.
pub struct Inventory {
    max: usize,
    /// Listener names by index: the per-request record writes an index, not a string.
    listeners: Vec<Arc<str>>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

/// One client certificate and how it has been used.
pub struct Client {
    pub fingerprint: String,
    pub user: Option<String>,
    /// As the policy of the listener that first saw it names groups (`group_attribute`).
    pub groups: Vec<String>,
    pub issuer: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix milliseconds.
    pub first_seen_ms: i64,
    last_seen_ms: AtomicI64,
    /// Last request per listener index (unix ms, 0 = never): the metric is per listener.
    seen_ms: Box<[AtomicI64]>,
    requests: AtomicU64,
    last_listener: AtomicUsize,
    /// Dropped from the map to keep the bound; a connection still holding it puts it back on
    /// its next request, so a client in use is never missing from `/clients`.
    evicted: AtomicBool,
}

/// A copy of one entry at one moment, for `/clients`.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub fingerprint: String,
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub issuer: String,
    pub serial: String,
    pub not_after: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub requests: u64,
    pub last_listener: Arc<str>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inventory {
    pub fn new(max: usize, listeners: Vec<Arc<str>>) -> Inventory {
        Inventory {
            max: max.max(1),
            listeners,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of `id`'s certificate, created on first sight. Called once per connection.
    pub fn client(&self, id: &Identity, groups: &[String]) -> Arc<Client> {
        let mut map = self.map();
        if let Some(c) = map.get(&id.fingerprint_sha256) {
            return c.clone();
        }
        let now = now_ms();
        let client = Arc::new(Client {
            fingerprint: id.fingerprint_sha256.clone(),
            user: id.user.clone(),
            groups: groups.to_vec(),
            issuer: id.issuer_dn.clone(),
            serial: id.serial_hex.clone(),
            not_after: id.not_after,
            first_seen_ms: now,
            last_seen_ms: AtomicI64::new(now),
            seen_ms: self.listeners.iter().map(|_| AtomicI64::new(0)).collect(),
            requests: AtomicU64::new(0),
            last_listener: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
        });
        self.insert(&mut map, client.clone());
        client
    }

    fn insert(&self, map: &mut HashMap<String, Arc<Client>>, client: Arc<Client>) {
        let fingerprint = client.fingerprint.clone();
        map.insert(fingerprint.clone(), client);
        if map.len() <= self.max {
            return;
        }
        // Down to 90% of the bound at once (exactly the bound below 10), so a fleet larger
        // than the bound costs one sort per tenth of it, not a scan per new certificate.
        let keep = self.max - self.max / 10;
        let mut by_age: Vec<(i64, String)> = map
            .iter()
            .filter(|(k, _)| **k != fingerprint)
            .map(|(k, c)| (c.last_seen_ms.load(Ordering::Relaxed), k.clone()))
            .collect();
        by_age.sort_unstable();
        let excess = map.len().saturating_sub(keep);
        for (_, k) in by_age.into_iter().take(excess) {
            if let Some(gone) = map.remove(&k) {
                gone.evicted.store(true, Ordering::Release);
            }
        }
    }

    /// One request of `client` on listener `listener` (an index into the names given to
    /// [`Inventory::new`]): atomics only, unless the entry was evicted meanwhile.
    pub fn record(&self, client: &Arc<Client>, listener: usize) {
        let now = now_ms();
        client.requests.fetch_add(1, Ordering::Relaxed);
        client.last_seen_ms.fetch_max(now, Ordering::Relaxed);
        if let Some(seen) = client.seen_ms.get(listener) {
            seen.fetch_max(now, Ordering::Relaxed);
        }
        client.last_listener.store(listener, Ordering::Relaxed);
        if client.evicted.swap(false, Ordering::AcqRel) {
            let mut map = self.map();
            // Another connection of the same certificate may have made a new entry since;
            // that one stays (this connection's later requests count in the old one).
            if !map.contains_key(&client.fingerprint) {
                self.insert(&mut map, client.clone());
            }
        }
    }

    fn entries(&self) -> Vec<Arc<Client>> {
        self.map().values().cloned().collect()
    }

    /// Every entry, sorted by notAfter (soonest first), then user and fingerprint.
    pub fn list(&self) -> Vec<ClientView> {
        let mut out: Vec<ClientView> = self
            .entries()
            .iter()
            .map(|c| ClientView {
                fingerprint: c.fingerprint.clone(),
                user: c.user.clone(),
                groups: c.groups.clone(),
                issuer: c.issuer.clone(),
                serial: c.serial.clone(),
                not_after: c.not_after,
                first_seen_ms: c.first_seen_ms,
                last_seen_ms: c.last_seen_ms.load(Ordering::Relaxed),
                requests: c.requests.load(Ordering::Relaxed),
                last_listener: self
                    .listeners
                    .get(c.last_listener.load(Ordering::Relaxed))
                    .cloned()
                    .unwrap_or_else(|| Arc::from("")),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.not_after, &a.user, &a.fingerprint).cmp(&(b.not_after, &b.user, &b.fingerprint))
        });
        out
    }

    /// Sets `certgate_client_cert_expiry_seconds`: per listener and group, the earliest
    /// notAfter among the certificates that made a request there within [`METRIC_WINDOW`].
    /// Rebuilt at each scrape, so a group whose clients all left drops out. A certificate
    /// without a group counts under `group=""`.
    pub fn update_metrics(&self) {
        let since = now_ms() - METRIC_WINDOW.as_millis() as i64;
        let mut earliest: BTreeMap<(usize, &str), i64> = BTreeMap::new();
        let entries = self.entries();
        for c in &entries {
            for (listener, seen) in c.seen_ms.iter().enumerate() {
                let seen = seen.load(Ordering::Relaxed);
                if seen == 0 || seen < since {
                    continue;
                }
                let groups: Vec<&str> = if c.groups.is_empty() {
                    vec![""]
                } else {
                    c.groups.iter().map(String::as_str).collect()
                };
                for g in groups {
                    let e = earliest.entry((listener, g)).or_insert(c.not_after);
                    *e = (*e).min(c.not_after);
                }
            }
        }
        metrics::CLIENT_CERT_EXPIRY.reset();
        for ((listener, group), not_after) in earliest {
            let name = self.listeners.get(listener).map_or("", |n| &**n);
            metrics::CLIENT_CERT_EXPIRY
                .with_label_values(&[name, group])
                .set(not_after as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(fp: &str, not_after: i64) -> Identity {
        Identity {
            fingerprint_sha256: fp.into(),
            user: Some(fp.to_uppercase()),
            not_after,
            ..Identity::default()
        }
    }

    #[test]
    fn the_bound_keeps_the_most_recently_seen_and_an_evicted_client_in_use_returns() {
        let inv = Inventory::new(2, vec![Arc::from("a"), Arc::from("b")]);
        let a = inv.client(&id("aa", 30), &[]);
        inv.record(&a, 0);
        let b = inv.client(&id("bb", 20), &[]);
        b.last_seen_ms.store(now_ms() + 10_000, Ordering::Relaxed);
        a.last_seen_ms.store(1, Ordering::Relaxed);
        let c = inv.client(&id("cc", 10), &["G".into()]);
        let fps: Vec<_> = inv.list().into_iter().map(|v| v.fingerprint).collect();
        assert_eq!(fps, ["cc", "bb"], "the least recently seen (aa) goes");
        inv.record(&a, 1);
        let listed = inv.list();
        assert_eq!(listed.len(), 2);
        assert!(listed
            .iter()
            .any(|v| v.fingerprint == "aa" && v.requests == 2 && &*v.last_listener == "b"));
        assert!(Arc::strong_count(&c) >= 1);
    }

    #[test]
    fn a_large_bound_drops_the_oldest_tenth_at_once() {
        let inv = Inventory::new(20, vec![Arc::from("a")]);
        for i in 0..20 {
            let c = inv.client(&id(&format!("{i:02}"), 1), &[]);
            c.last_seen_ms.store(i, Ordering::Relaxed);
        }
        inv.client(&id("new", 1), &[]);
        let mut left: Vec<_> = inv.list().into_iter().map(|v| v.fingerprint).collect();
        left.sort();
        let mut want: Vec<String> = (3..20).map(|i| format!("{i:02}")).collect();
        want.push("new".into());
        assert_eq!(left, want);
    }

    #[test]
    fn the_metric_holds_each_groups_earliest_expiry_seen_within_a_day() {
        let inv = Inventory::new(10, vec![Arc::from("m1"), Arc::from("m2")]);
        let soon = inv.client(&id("soon", 1_000), &["metric-g".into()]);
        let late = inv.client(&id("late", 5_000), &["metric-g".into()]);
        let gone = inv.client(&id("gone", 10), &["metric-g".into()]);
        inv.record(&soon, 0);
        inv.record(&late, 0);
        inv.record(&late, 1);
        inv.record(&gone, 0);
        let day_ago = now_ms() - METRIC_WINDOW.as_millis() as i64 - 1_000;
        gone.seen_ms[0].store(day_ago, Ordering::Relaxed);
        inv.update_metrics();
        let text = String::from_utf8(metrics::render()).unwrap();
        let sample = |listener: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("certgate_client_cert_expiry_seconds{")
                        && l.contains("group=\"metric-g\"")
                        && l.contains(&format!("listener=\"{listener}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_string)
        };
        assert_eq!(sample("m1").as_deref(), Some("1000"), "{text}");
        assert_eq!(sample("m2").as_deref(), Some("5000"), "{text}");
    }
}
