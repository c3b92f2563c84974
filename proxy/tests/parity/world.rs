//! The world each scenario runs in: certgate, the recording upstream, and the clients.

use super::*;

pub(crate) const POLICY: &str =
    "permissions:\n  everything: [\"* /**\"]\ngroups:\n  ci: [everything]\n";

/// Fields drop in order: the proxy (which prints its log on a failure) before the world's
/// directory that holds the log.
pub(crate) struct Bench {
    pub(crate) p: Proxy,
    pub(crate) w: World,
    pub(crate) up: RecordingUpstream,
    pub(crate) allowed: Issued,
    pub(crate) guest: Issued,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl Bench {
    pub(crate) fn start() -> Bench {
        let w = World::new();
        let up = RecordingUpstream::start();
        std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
        let mut cfg = ProxyConfig::new(up.addr);
        cfg.listener_extra = "    policy: policy.yaml\n    headers: [nginx-ingress, xfcc]\n    hsts: \"max-age=63072000\"\n";
        // JSON lines, read back field by field. One worker: each engine's idle upstream
        // connection is then found by its next request (see `forward_h1.rs`).
        cfg.top_extra = "log:\n  format: json\nthreads: 1\n";
        let p = Proxy::start(&w, &cfg);
        let allowed = client(&[("O", "ci"), ("CN", "parity")], &w.ca);
        let guest = client(&[("O", "guests"), ("CN", "visitor")], &w.ca);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Bench {
            w,
            p,
            up,
            allowed,
            guest,
            rt,
        }
    }

    pub(crate) fn who(&self, who: Who) -> Option<&Issued> {
        match who {
            Who::Allowed => Some(&self.allowed),
            Who::Guest => Some(&self.guest),
            Who::Anonymous => None,
        }
    }

    pub(crate) fn port(&self, text: &str) -> String {
        text.replace("{port}", &self.p.addr.port().to_string())
    }

    /// Every access log line so far, parsed.
    pub(crate) fn access_lines(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.p
            .log_text()
            .lines()
            .filter(|l| l.contains("certgate::access"))
            .map(|l| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(l)
                    .unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .collect()
    }

    /// Waits for an access log line after the first `from`; false if none came within 20 s
    /// (a request certgate answered and did not log: a difference, recorded as `log.count`).
    pub(crate) fn wait_line(&self, from: usize) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.access_lines().len() <= from {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The request metrics' samples now: every counter a request moves, and the request
    /// duration's count. Gauges (connections open, readiness, certificate expiry) say what is,
    /// not what a request did; the duration's buckets and sum are the clock's.
    pub(crate) fn request_metrics(&self) -> BTreeMap<String, f64> {
        const NAMES: [&str; 5] = [
            "certgate_requests_total",
            "certgate_authz_decisions_total",
            "certgate_upstream_errors_total",
            "certgate_tunnels_closed_total",
            "certgate_request_duration_seconds_count",
        ];
        self.p
            .metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (sample, value) = l.rsplit_once(' ')?;
                let name = sample.split('{').next()?;
                NAMES
                    .contains(&name)
                    .then(|| (sample.to_string(), value.parse().unwrap_or(f64::NAN)))
            })
            .collect()
    }

    /// Sends `s` on `path` on a fresh connection and observes everything it left.
    pub(crate) fn run(&self, s: &Scenario, path: Path) -> Observation {
        let (lines_before, received_before) = (self.access_lines().len(), self.up.received().len());
        let metrics_before = self.request_metrics();

        let mut client = if path.h2() {
            Client::H2(self.rt.block_on(H2Client::connect(self, s.who)))
        } else {
            Client::H1(H1Client::connect(self, s.who))
        };
        let answer = client.send(self, s, path.fallback());
        // An upload the client stops: it leaves (closes its connection, resets its stream),
        // which is what ends the request.
        let leaves = matches!(s.body, Body::Early);
        if leaves {
            client.leave(self);
        }
        // Every answer certgate writes or forwards carries the listener's HSTS header: one
        // without it was written below certgate (Pingora's HTTP/2 layer refuses a malformed
        // stream itself), never reached its phases, and leaves no line to wait for. A line
        // that came anyway would be counted in the next request's lines, and differ there.
        if answer
            .headers
            .iter()
            .any(|(n, _)| n == "strict-transport-security")
        {
            self.wait_line(lines_before);
        }
        let metrics_after = self.request_metrics();
        let upstream = self.up.received()[received_before..].to_vec();
        let after = if leaves {
            "left".to_string()
        } else {
            let after = client.probe(self);
            if after.starts_with("reused") {
                // The probe's own line, so that it is no later request's.
                wait_for("the probe's line", Duration::from_secs(20), || {
                    self.access_lines()[lines_before..]
                        .iter()
                        .any(is_probe)
                        .then_some(())
                });
            }
            after
        };
        drop(client);
        // Every line of the request (a second one would be a difference too), not the probe's.
        let log: Vec<_> = self.access_lines()[lines_before..]
            .iter()
            .filter(|l| !is_probe(l))
            .cloned()
            .collect();
        let mut deltas = BTreeMap::new();
        let samples: BTreeSet<&String> =
            metrics_before.keys().chain(metrics_after.keys()).collect();
        for sample in samples {
            let d = metrics_after.get(sample).copied().unwrap_or(0.0)
                - metrics_before.get(sample).copied().unwrap_or(0.0);
            if d != 0.0 {
                deltas.insert(sample.clone(), d);
            }
        }
        Observation::record(path, &upstream, &answer, &after, &log, &deltas)
    }
}

pub(crate) fn is_probe(line: &serde_json::Map<String, serde_json::Value>) -> bool {
    line.get("path").and_then(|p| p.as_str()) == Some("/probe")
}

pub(crate) enum Client {
    H1(H1Client),
    H2(H2Client),
}

impl Client {
    pub(crate) fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        match self {
            Client::H1(c) => c.send(b, s, fallback),
            Client::H2(c) => b.rt.block_on(c.send(b, s, fallback)),
        }
    }

    pub(crate) fn leave(&mut self, b: &Bench) {
        match self {
            Client::H1(c) => c.leave(),
            Client::H2(c) => b.rt.block_on(c.leave()),
        }
    }

    /// Another request on the same connection after the answer: whether the connection still
    /// carries one.
    pub(crate) fn probe(&mut self, b: &Bench) -> String {
        match self {
            Client::H1(c) => c.probe(b),
            Client::H2(c) => b.rt.block_on(c.probe(b)),
        }
    }
}

/// The body bytes of a request: a repeating alphabet, so a misplaced byte shows.
pub(crate) fn body_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}
