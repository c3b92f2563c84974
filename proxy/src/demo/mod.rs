//! `certgate demo`: the whole product in one command. A throwaway PKI in a temp dir, the echo
//! upstream, certgate itself (as a child process, exactly as an operator runs it), and a tour
//! that shows each decision as it happens.

mod crl_point;
pub mod echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

const POLICY: &str = r#"# The demo's policy: CI tools may list and start VMs; any valid certificate may read status.
permissions:
  list_vms:   ["GET /api/v1/vm"]
  start_vm:   ["POST /api/v1/vm"]
  get_status: ["GET|HEAD /api/v1/status"]
  health:     ["GET /livez", "GET /readyz"]
groups:
  ci-tools: [list_vms, start_vm]
authenticated: [get_status]
anonymous: [health]
"#;

struct Demo {
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
    child: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Demo {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn setup() -> anyhow::Result<Demo> {
        let dir = tempfile::Builder::new()
            .prefix("certgate-demo-")
            .tempdir()?;
        let d = dir.path();
        println!("== certgate demo: throwaway PKI in {}", d.display());
        crate::pki::init(
            d,
            Some("certgate demo"),
            &["localhost".into(), "127.0.0.1".into()],
        )?;
        crate::pki::issue_client(
            d,
            "jenkins",
            &["ci-tools".into()],
            None,
            30,
            Some("jenkins"),
        )?;
        crate::pki::issue_client(d, "intern", &["visitors".into()], None, 30, Some("intern"))?;
        crate::pki::issue_client(
            d,
            "old-node",
            &["ci-tools".into()],
            None,
            30,
            Some("old-node"),
        )?;
        crate::pki::issue_client(d, "laptop", &["ci-tools".into()], None, 30, Some("laptop"))?;
        crate::pki::revoke(d, &d.join("old-node.pem"))?;
        println!(
            "   issued: jenkins (O=ci-tools), intern (O=visitors), laptop (O=ci-tools), old-node (O=ci-tools, revoked)"
        );
        let crl_point = crl_point::spawn(d.join("crl.pem"))?;
        let crl_url = format!("http://{crl_point}/ca.crl");
        println!("   the CA publishes its CRL at {crl_url}; certgate fetches it every second");
        std::fs::write(d.join("policy.yaml"), POLICY)?;
        let upstream = echo::spawn("127.0.0.1:0")?;
        println!(
            "   echo upstream on http://{upstream} (plain HTTP; it shows the headers it received)"
        );
        let proxy = free_port()?;
        let admin = free_port()?;
        let config = format!(
            "admin:\n  listen: {admin}\nshutdown_grace: 2s\nlog:\n  level: warn\ntls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl_fetch:\n    urls: [{crl_url}]\n    refresh: 1s\n  client_auth: optional\nlisteners:\n  - name: demo\n    listen: {proxy}\n    upstream: http://{upstream}\n    policy: policy.yaml\n"
        );
        std::fs::write(d.join("certgate.yaml"), config)?;
        Ok(Demo {
            dir,
            proxy,
            admin,
            child: None,
        })
    }

    fn start_proxy(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the certgate executable")?;
        let log = std::fs::File::create(self.path("certgate.log"))?;
        let child = Command::new(exe)
            .arg("run")
            .arg("-c")
            .arg(self.path("certgate.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start certgate run")?;
        self.child = Some(child);
        println!(
            "== certgate run -c {} (proxy https://localhost:{}, admin http://{})",
            self.path("certgate.yaml").display(),
            self.proxy.port(),
            self.admin
        );
        Ok(())
    }
}

/// What one step expects, and whether it got it.
struct Step {
    name: &'static str,
    ok: bool,
}

fn client(dir: &Path, proxy: SocketAddr, who: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem"))?)?;
    let mut b = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", proxy)
        .timeout(Duration::from_secs(10));
    if let Some(who) = who {
        let cert = std::fs::read(dir.join(format!("{who}.pem")))?;
        let key = std::fs::read(dir.join(format!("{who}-key.pem")))?;
        b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key)?);
    }
    Ok(b.build()?)
}

async fn wait_ready(admin: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://{admin}/readyz");
    let c = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = c.get(&url).send().await {
            if r.status() == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("certgate did not become ready within 30 s")
}

async fn tour(demo: &Demo) -> anyhow::Result<Vec<Step>> {
    let dir = demo.dir.path();
    let base = format!("https://localhost:{}", demo.proxy.port());
    let mut steps = Vec::new();
    let mut step = |name: &'static str, ok: bool, detail: String| {
        println!(
            "   {} {name}\n       {detail}",
            if ok { "PASS" } else { "FAIL" }
        );
        steps.push(Step { name, ok });
    };

    println!("\n== the tour");
    let r = client(dir, demo.proxy, None)?
        .get(format!("{base}/api/v1/vm"))
        .send()
        .await?;
    let (code, body) = (r.status().as_u16(), r.text().await?);
    step(
        "no certificate -> 401",
        code == 401 && body.contains("no certificate"),
        format!("{code} {body}"),
    );

    let r = client(dir, demo.proxy, Some("jenkins"))?
        .get(format!("{base}/api/v1/vm"))
        .send()
        .await?;
    let code = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let h = |n: &str| v["headers"][n][0].as_str().unwrap_or("").to_string();
    step(
        "jenkins (O=ci-tools) GET /api/v1/vm -> 200, identity echoed by the upstream",
        code == 200 && h("x-certgate-user") == "jenkins" && h("x-certgate-permission") == "list_vms",
        format!(
            "{code}; upstream saw x-certgate-user={} x-certgate-groups={} x-certgate-permission={} ssl-client-verify={} ssl-client-subject-dn={}",
            h("x-certgate-user"), h("x-certgate-groups"), h("x-certgate-permission"), h("ssl-client-verify"), h("ssl-client-subject-dn")
        ),
    );

    let r = client(dir, demo.proxy, Some("jenkins"))?
        .get(format!("{base}/api/v1/status"))
        .header("ssl-client-subject-dn", "CN=root,O=admins")
        .header("X_Certgate_User", "root")
        .send()
        .await?;
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let dn = v["headers"]["ssl-client-subject-dn"].clone();
    step(
        "spoofed identity headers are stripped",
        dn.as_array()
            .is_some_and(|a| a.len() == 1 && !a[0].as_str().unwrap_or("").contains("root")),
        format!("client sent ssl-client-subject-dn: CN=root,O=admins; upstream saw {dn}"),
    );

    let r = client(dir, demo.proxy, Some("intern"))?
        .get(format!("{base}/api/v1/vm"))
        .send()
        .await?;
    let (code, body) = (r.status().as_u16(), r.text().await?);
    step(
        "intern (O=visitors) GET /api/v1/vm -> 403",
        code == 403 && body.contains("list_vms"),
        format!("{code} {body}"),
    );

    let r = client(dir, demo.proxy, Some("jenkins"))?
        .get(format!("{base}/api/v1/vm/%2e%2e/node"))
        .send()
        .await?;
    let (code, body) = (r.status().as_u16(), r.text().await?);
    step(
        "jenkins GET /api/v1/vm/%2e%2e/node is matched as /api/v1/node -> 403",
        code == 403 && body.contains("/api/v1/node"),
        format!("{code} {body}"),
    );

    let r = client(dir, demo.proxy, Some("old-node"))?
        .get(format!("{base}/api/v1/vm"))
        .send()
        .await?;
    let (code, body) = (r.status().as_u16(), r.text().await?);
    step(
        "old-node (revoked) -> 401 certificate revoked",
        code == 401 && body.contains("certificate revoked"),
        format!("{code} {body}"),
    );

    // The CA revokes a laptop that has a connection open: certgate fetches the new CRL from
    // the distribution point and refuses the laptop's next request on that same connection.
    let laptop = client(dir, demo.proxy, Some("laptop"))?;
    let first = laptop
        .get(format!("{base}/api/v1/vm"))
        .send()
        .await?
        .status();
    crate::pki::revoke(dir, &dir.join("laptop.pem"))?;
    let published = Instant::now();
    let mut last = (0, String::new());
    while published.elapsed() < Duration::from_secs(10) {
        let r = laptop.get(format!("{base}/api/v1/vm")).send().await?;
        last = (r.status().as_u16(), r.text().await?);
        if last.0 == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step(
        "laptop revoked at the CA's HTTP distribution point -> 401 on its open connection",
        first == 200 && last.0 == 401 && last.1.contains("certificate revoked"),
        format!(
            "{first} before; CRL republished, fetched over HTTP, {} {} {:.1}s later",
            last.0,
            last.1,
            published.elapsed().as_secs_f64()
        ),
    );

    Ok(steps)
}

fn print_try_it(demo: &Demo) {
    let d = demo.dir.path().display();
    let p = demo.proxy.port();
    println!("\n== try it yourself");
    println!("   curl --cacert {d}/ca.pem https://localhost:{p}/api/v1/vm");
    println!("   curl --cacert {d}/ca.pem --cert {d}/jenkins.pem --key {d}/jenkins-key.pem https://localhost:{p}/api/v1/vm");
    println!("   curl --cacert {d}/ca.pem --cert {d}/intern.pem --key {d}/intern-key.pem https://localhost:{p}/api/v1/vm");
    println!("   certgate explain -c {d}/certgate.yaml --listener demo --method GET --path /api/v1/vm --cert {d}/intern.pem");
    println!("   curl http://{}/metrics", demo.admin);
    println!("   config, policy and certificates: {d}; log: {d}/certgate.log");
}

pub fn run(once: bool) -> ExitCode {
    match run_inner(once) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(once: bool) -> anyhow::Result<bool> {
    let mut demo = Demo::setup()?;
    demo.start_proxy()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let steps = rt.block_on(async {
        wait_ready(demo.admin).await?;
        tour(&demo).await
    });
    let steps = match steps {
        Ok(s) => s,
        Err(e) => {
            let log = std::fs::read_to_string(demo.path("certgate.log")).unwrap_or_default();
            anyhow::bail!("{e:#}\ncertgate log:\n{log}");
        }
    };
    let failed: Vec<_> = steps.iter().filter(|s| !s.ok).map(|s| s.name).collect();
    println!();
    if failed.is_empty() {
        println!("== all {} steps behaved as expected", steps.len());
    } else {
        println!(
            "== {} of {} steps did not behave as expected: {}",
            failed.len(),
            steps.len(),
            failed.join("; ")
        );
    }
    if once {
        return Ok(failed.is_empty());
    }
    print_try_it(&demo);
    println!("\n   certgate keeps running; press Ctrl-C to stop (the temp dir is removed).");
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    Ok(failed.is_empty())
}
