//! deploy/monitoring checked by the real thing: `promtool check rules` and `promtool test rules`
//! (a unit test for every alert), then Debian's Prometheus server on 127.0.0.1 scraping a real
//! certgate under a short generated load, with the rules loaded; every dashboard panel's query
//! and every dashboard variable must return data through Prometheus' HTTP API, and the reload
//! error the test causes must fire CertgateReloadFailed.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// promtool/prometheus from Debian's `prometheus` package; missing means the test cannot run,
/// which is a failure with the fix, never a silent skip.
fn tool(name: &str) -> &str {
    match Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => name,
        _ => panic!(
            "`{name}` is not on PATH: install Debian's prometheus package \
             (`apt-get install --no-install-recommends prometheus`; proxy/bootstrap.sh test does it)"
        ),
    }
}

fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(tool("promtool"))
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn yaml(name: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(monitoring_dir().join(name)).unwrap()).unwrap()
}

fn alert_names() -> BTreeSet<String> {
    let rules = yaml("certgate.rules.yml");
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn rules_pass_promtool_and_every_alert_has_a_firing_unit_test() {
    let checked = run_promtool(&["check", "rules", "certgate.rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    run_promtool(&["test", "rules", "certgate.rules.test.yml"]);
    let tests = yaml("certgate.rules.test.yml");
    let fired: BTreeSet<String> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
        .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["alertname"].as_str().map(str::to_string))
        .collect();
    let alerts = alert_names();
    assert!(alerts.len() >= 12, "{alerts:?}");
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts without a unit test that fires them: {untested:?}"
    );
}

/// Prometheus on 127.0.0.1 with a temp storage dir, stopped on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = monitoring_dir().join("certgate.rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{:?}]\nscrape_configs:\n  - job_name: certgate\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.canonicalize().unwrap()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = free_addr();
        let child = Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = format!("http://{}{path}", self.addr);
        match reqwest::Client::new().get(&url).query(query).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn query(&self, q: &str) -> Value {
        self.api("/api/v1/query", &[("query", q)]).await
    }
}

/// At least one sample, and a number (a quantile over no requests is NaN: no data to show).
fn has_data(v: &Value) -> bool {
    v["status"] == "success"
        && v["data"]["result"].as_array().is_some_and(|r| {
            r.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            })
        })
}

/// A dashboard expression as Grafana would send it with "All" selected.
fn substitute(expr: &str) -> String {
    let q = expr
        .replace("$__rate_interval", "20s")
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$listener", ".*");
    assert!(!q.contains('$'), "unknown variable in {expr}");
    q
}

/// (panel title, expression) for every target of every panel, and the variable queries as
/// `count by (label) (metric)`.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("certgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap().to_string();
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource variable"
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{title}: wider than the grid"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            out.push((title.clone(), substitute(t["expr"].as_str().unwrap())));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .unwrap();
            let (metric, label) = inner.rsplit_once(',').unwrap();
            out.push((
                format!("variable {}", v["name"].as_str().unwrap()),
                substitute(&format!("count by ({}) ({metric})", label.trim())),
            ));
        }
    }
    out
}

const POLICY: &str =
    "permissions:\n  echo: [\"GET /echo/**\"]\n  other: [\"GET /other\"]\ngroups:\n  ops: [echo]\n";

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_certgate_and_every_panel_shows_data() {
    tool("promtool");
    let w = World::new();
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    let (addr, dead_addr, admin, closed) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = format!(
        "admin:\n  listen: {admin}\nshutdown_grace: 5s\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem]\n  client_auth: optional\nlisteners:\n  - name: test\n    listen: {addr}\n    upstream: http://{up}\n    policy: policy.yaml\n  - name: dead\n    listen: {dead_addr}\n    upstream: http://{closed}\n    limits:\n      max_connections: 1\n",
        up = upstream()
    );
    let proxy = Proxy::start_with(w.dir.path(), &config, addr, admin);
    let prom = Prometheus::start(admin);

    // Load until the queries are done: allowed, 403, 401, a foreign CA (a failed handshake
    // reason in optional mode), and 502s from the listener whose upstream is closed.
    let ops = client(&[("O", "ops"), ("CN", "op1")], &w.ca);
    let foreign = client(&[("O", "ops"), ("CN", "x")], &ca("Foreign CA"));
    let clients = [
        https(&w, &proxy, Some(&ops)),
        https(&w, &proxy, None),
        https(&w, &proxy, Some(&foreign)),
    ];
    let dead_client = https_builder(&w, &proxy, Some(&ops))
        .resolve("localhost", dead_addr)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let (base, dead) = (
            proxy.url(""),
            format!("https://localhost:{}", dead_addr.port()),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (c, path) in [
                    (&clients[0], "/echo/a"),
                    (&clients[0], "/other"),
                    (&clients[1], "/echo/b"),
                    (&clients[2], "/echo/c"),
                ] {
                    let _ = c.get(format!("{base}{path}")).send().await;
                }
                let _ = dead_client.get(format!("{dead}/x")).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Counters must be scraped at 0 before their events, or `increase()` sees no change.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !has_data(
        &prom
            .query(r#"certgate_reloads_total{job="certgate",kind="policy",result="error"} == 0"#)
            .await,
    ) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped certgate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Events: a session resumption, a refused connection, a good and a refused policy reload.
    let (cert, key) = (w.path("ops.pem"), w.path("ops-key.pem"));
    w.save("ops", &ops);
    let sess = w.path("session.pem");
    let sess = sess.to_str().unwrap();
    s_client(
        &w,
        &proxy,
        Some((cert.as_path(), key.as_path())),
        &["-sess_out", sess],
    );
    let (_, resumed) = s_client(
        &w,
        &proxy,
        Some((cert.as_path(), key.as_path())),
        &["-sess_in", sess],
    );
    assert!(resumed.contains("Reused"), "{resumed}");
    let holder = std::net::TcpStream::connect(dead_addr).unwrap();
    wait_for("a refused connection", Duration::from_secs(20), || {
        let _ = std::net::TcpStream::connect(dead_addr);
        (metric(
            &proxy.metrics(),
            "certgate_connections_refused_total",
            &[("reason", "max_connections")],
        ) > 0.0)
            .then_some(())
    });
    drop(holder);
    let reloads = |result: &str| {
        metric(
            &proxy.metrics(),
            "certgate_reloads_total",
            &[("kind", "policy"), ("result", result)],
        )
    };
    std::fs::write(w.path("policy.yaml"), format!("{POLICY}# reloaded\n")).unwrap();
    wait_for("a policy reload", Duration::from_secs(20), || {
        (reloads("ok") > 0.0).then_some(())
    });
    std::fs::write(w.path("policy.yaml"), "permissions: [\n").unwrap();
    wait_for("a refused reload", Duration::from_secs(20), || {
        (reloads("error") > 0.0).then_some(())
    });
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    // A client whose certificate expires in 3 days (its request is refused by the policy, and
    // still counts: it holds a valid certificate); ops's is good for 30.
    let mut short = spec(&[("O", "fleet"), ("CN", "node7")]);
    short.not_after_days = 3;
    let short = certgate::pki::issue(&short, &w.ca).unwrap();
    let (code, _) = get_json(&https(&w, &proxy, Some(&short)), &proxy.url("/echo/n")).await;
    assert_eq!(code, 403);

    // Every panel and variable, until each has data (scrapes every second).
    let queries = dashboard_queries();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<(String, String, Value)> = queries
        .iter()
        .map(|(t, q)| (t.clone(), q.clone(), Value::Null))
        .collect();
    while !missing.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (title, q, _) in missing {
            let v = prom.query(&q).await;
            if !has_data(&v) {
                still.push((title, q, v));
            }
        }
        missing = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(missing.is_empty(), "panels without data:\n{missing:#?}");
    eprintln!("{} dashboard queries returned data", queries.len());

    // The rules loaded and evaluate; the reload error fired its alert, nothing is down.
    let rules = prom.api("/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .collect();
    assert_eq!(loaded.len(), alert_names().len(), "{rules}");
    let firing = |alerts: &Value, name: &str| {
        alerts["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == name && x["state"] == "firing")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prom.api("/api/v1/alerts", &[]).await;
        let expiring = |group: &str| {
            alerts["data"]["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alertname"] == "CertgateClientCertExpiringSoon"
                        && x["labels"]["group"] == group
                        && x["labels"]["listener"] == "test"
                        && x["state"] == "firing"
                })
            })
        };
        if firing(&alerts, "CertgateReloadFailed") && expiring("fleet") {
            assert!(!expiring("ops"), "ops's certificate has 30 days: {alerts}");
            for quiet in [
                "CertgateDown",
                "CertgateNotReady",
                "CertgateCRLExpired",
                "CertgateCertificateExpired",
            ] {
                assert!(!firing(&alerts, quiet), "{quiet} fires: {alerts}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CertgateReloadFailed or CertgateClientCertExpiringSoon (fleet) did not fire: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for l in &loaded {
        assert_eq!(
            l["health"], "ok",
            "rule {} does not evaluate: {l}",
            l["name"]
        );
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
}

#[test]
fn certgate_ready_follows_readyz() {
    let w = World::new();
    let up = upstream();
    let ready = Proxy::start(&w, &ProxyConfig::new(up));
    assert_eq!(metric(&ready.metrics(), "certgate_ready", &[]), 1.0);
    drop(ready);
    // A CRL past its nextUpdate: /readyz 503, and the gauge says so at the same scrape.
    let crl = certgate::pki::make_crl(&w.ca, &[], -3, -1, 2).unwrap();
    std::fs::write(w.path("crl.pem"), crl.to_pem().unwrap()).unwrap();
    let stale = Proxy::start_unready(&w, &ProxyConfig::new(up));
    assert_eq!(http_get(stale.admin, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(metric(&stale.metrics(), "certgate_ready", &[]), 0.0);
}
