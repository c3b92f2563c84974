//! Every shipped example and deploy config passes `certgate check`, and the manifests agree
//! with the configs they mount (ports, paths, probes).

mod common;

use common::BIN;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "pki" {
                copy_tree(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn pki_init(dir: &Path) {
    let st = Command::new(BIN)
        .args(["pki", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn check(config: &Path) {
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(config)
        .env("ANKA_ROOT_TOKEN", "a-root-token-for-tests")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed check:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of the repository's shipped files, with a PKI wherever a config expects one.
fn staged() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for d in ["examples", "deploy", "policies"] {
        copy_tree(&repo().join(d), &t.path().join(d));
    }
    t
}

#[test]
fn examples_and_relative_path_configs_pass_check() {
    let t = staged();
    for cfg in [
        "examples/quickstart",
        "examples/anka",
        "examples/generic",
        "deploy/aws-nlb",
    ] {
        let dir = t.path().join(cfg);
        pki_init(&dir.join("pki"));
        check(&dir.join("certgate.yaml"));
    }
}

#[test]
fn compose_and_kubernetes_configs_pass_check() {
    let t = staged();
    let etc = t.path().join("etc-certgate");
    // compose mounts ./pki at /etc/certgate/pki and ../policies at /etc/certgate/policies
    pki_init(&etc.join("pki"));
    copy_tree(&repo().join("policies"), &etc.join("policies"));
    for name in ["certgate-controller.yaml", "certgate-registry.yaml"] {
        let text = std::fs::read_to_string(t.path().join("deploy/compose").join(name)).unwrap();
        let path = etc.join(name);
        std::fs::write(
            &path,
            text.replace("/etc/certgate/", &format!("{}/", etc.display())),
        )
        .unwrap();
        check(&path);
    }
    // kubernetes: the Secret/ConfigMap keys under /etc/certgate/tls, config under /etc/certgate/config
    let tls = etc.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    for (from, to) in [
        ("server.pem", "tls.crt"),
        ("server-key.pem", "tls.key"),
        ("ca.pem", "ca.crt"),
        ("crl.pem", "ca.crl"),
    ] {
        std::fs::copy(etc.join("pki").join(from), tls.join(to)).unwrap();
    }
    let config = etc.join("config");
    copy_tree(&t.path().join("deploy/kubernetes"), &config);
    let text = std::fs::read_to_string(config.join("certgate.yaml")).unwrap();
    std::fs::write(
        config.join("certgate.yaml"),
        text.replace("/etc/certgate/", &format!("{}/", etc.display())),
    )
    .unwrap();
    check(&config.join("certgate.yaml"));
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

fn port_of(listen: &Value) -> u16 {
    listen
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn kubernetes_manifests_agree_with_the_config_they_mount() {
    let cfg = yaml("deploy/kubernetes/certgate.yaml");
    let https_port = port_of(&cfg["listeners"][0]["listen"]);
    let admin_port = port_of(&cfg["admin"]["listen"]);
    let dep = yaml("deploy/kubernetes/deployment.yaml");
    let containers = dep["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let cg = containers.iter().find(|c| c["name"] == "certgate").unwrap();
    let ports: Vec<(String, u64)> = cg["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        ports.contains(&("https".into(), https_port as u64)),
        "{ports:?}"
    );
    assert!(
        ports.contains(&("admin".into(), admin_port as u64)),
        "{ports:?}"
    );
    assert_eq!(cg["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(cg["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(cg["readinessProbe"]["httpGet"]["port"], "admin");
    let args: Vec<&str> = cg["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "-c").unwrap() + 1];
    let mounts = cg["volumeMounts"].as_sequence().unwrap();
    let mounted = |path: &str| {
        mounts
            .iter()
            .any(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
    };
    assert!(mounted(config_path), "config {config_path} is mounted");
    for key in ["cert", "key", "client_ca"] {
        let p = cfg["tls"][key].as_str().unwrap();
        assert!(mounted(p), "{key} {p} is mounted");
    }
    assert!(mounted(cfg["listeners"][0]["policy"].as_str().unwrap()));
    assert!(
        mounts.iter().all(|m| m.get("subPath").is_none()),
        "no subPath: the ..data swap must reach certgate"
    );
    // the app listens on loopback only, and is the upstream
    let app = containers.iter().find(|c| c["name"] == "app").unwrap();
    let app_args = format!("{:?}", app["args"]);
    assert!(app_args.contains("127.0.0.1:8080"), "{app_args}");
    assert_eq!(cfg["listeners"][0]["upstream"], "http://127.0.0.1:8080");
    let grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let shutdown = humantime::parse_duration(cfg["shutdown_grace"].as_str().unwrap())
        .unwrap()
        .as_secs();
    assert!(
        grace > shutdown,
        "terminationGracePeriodSeconds {grace} > shutdown_grace {shutdown}"
    );
    let svc = yaml("deploy/kubernetes/service.yaml");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "https");
    let np = yaml("deploy/kubernetes/networkpolicy.yaml");
    assert!(format!("{np:?}").contains(&https_port.to_string()));
    let kust = yaml("deploy/kubernetes/kustomization.yaml");
    for f in kust["configMapGenerator"][0]["files"]
        .as_sequence()
        .unwrap()
    {
        assert!(
            repo()
                .join("deploy/kubernetes")
                .join(f.as_str().unwrap())
                .exists(),
            "{f:?}"
        );
    }
}

#[test]
fn compose_ports_and_mounts_agree_with_the_sidecar_configs() {
    let compose = yaml("deploy/docker-compose.yml");
    for (svc, cfg_file) in [
        (
            "controller-sidecar",
            "deploy/compose/certgate-controller.yaml",
        ),
        ("registry-sidecar", "deploy/compose/certgate-registry.yaml"),
    ] {
        let s = &compose["services"][svc];
        let text = std::fs::read_to_string(repo().join(cfg_file)).unwrap();
        let https_port = text
            .lines()
            .find(|l| l.trim_start().starts_with("listen: 0.0.0.0:84"))
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let admin_port = text
            .lines()
            .find(|l| l.trim_start().starts_with("listen: 0.0.0.0:99"))
            .unwrap()
            .split('#')
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let ports = format!("{:?}", s["ports"]);
        assert!(
            ports.contains(&format!("{https_port}:{https_port}")),
            "{svc}: {ports}"
        );
        assert!(
            ports.contains(&format!("127.0.0.1:{admin_port}:{admin_port}")),
            "{svc}: admin only on loopback: {ports}"
        );
        let vols = format!("{:?}", s["volumes"]);
        assert!(
            vols.contains(&format!(
                "{}:/etc/certgate/certgate.yaml:ro",
                cfg_file
                    .trim_start_matches("deploy/")
                    .replace("compose/", "./compose/")
            )),
            "{vols}"
        );
        assert!(vols.contains("/etc/certgate/pki:ro"), "{vols}");
    }
    // the upstream stand-ins sit only on the internal network
    assert_eq!(compose["networks"]["app"]["internal"], true);
    for app in ["controller", "registry"] {
        assert!(
            compose["services"][app].get("ports").is_none(),
            "{app} publishes no port"
        );
    }
    // `docker compose config` where the command exists
    if Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        let out = Command::new("docker")
            .args(["compose", "-f"])
            .arg(repo().join("deploy/docker-compose.yml"))
            .arg("config")
            .env("ANKA_ROOT_TOKEN", "a-root-token-for-tests")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("docker compose not installed: skipped `docker compose config`");
    }
}

/// The value of `key = value` on the first line of `block` (an HCL resource or variable header)
/// onwards, quotes and trailing comments removed. Terraform itself cannot run here (it fetches
/// its AWS provider from the network), so the .tf files are read as text.
fn tf_value(text: &str, block: &str, key: &str) -> String {
    let start = text
        .find(block)
        .unwrap_or_else(|| panic!("no `{block}` in the .tf file"));
    text[start..]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| {
                v.split('#')
                    .next()
                    .unwrap()
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
        })
        .unwrap_or_else(|| panic!("no `{key}` after `{block}`"))
}

#[test]
fn nlb_terraform_agrees_with_its_certgate_config() {
    let dir = repo().join("deploy/aws-nlb");
    let main = std::fs::read_to_string(dir.join("main.tf")).unwrap();
    let vars = std::fs::read_to_string(dir.join("variables.tf")).unwrap();
    // proxy_protocol_from defaults to the same CIDR as the module's vpc_cidr (the config is read
    // with that default substituted: `[${VAR:-...}]` is not YAML before substitution).
    let cidr = tf_value(&vars, r#"variable "vpc_cidr""#, "default");
    let text = std::fs::read_to_string(dir.join("certgate.yaml")).unwrap();
    let from = format!("proxy_protocol_from: [${{VPC_CIDR:-{cidr}}}]");
    assert!(text.contains(&from), "certgate.yaml has `{from}`");
    let cfg: Value =
        serde_yaml_ng::from_str(&text.replace(&from, &format!("proxy_protocol_from: [{cidr}]")))
            .unwrap();
    let listener = &cfg["listeners"][0];
    let tg = r#"resource "aws_lb_target_group" "certgate""#;
    assert_eq!(
        tf_value(&main, tg, "port"),
        port_of(&listener["listen"]).to_string(),
        "target group port = the listener's"
    );
    assert_eq!(tf_value(&main, tg, "protocol"), "TCP", "TLS passes through");
    assert_eq!(tf_value(&main, tg, "proxy_protocol_v2"), "true");
    assert_eq!(listener["proxy_protocol"], true);
    assert_eq!(
        tf_value(&main, tg, "preserve_client_ip"),
        "false",
        "the PROXY header must come from the NLB's own addresses"
    );
    let hc = "health_check {";
    assert_eq!(
        tf_value(&main, hc, "port"),
        port_of(&cfg["admin"]["listen"]).to_string()
    );
    assert_eq!(tf_value(&main, hc, "path"), "/readyz");
    let attach = r#"resource "aws_lb_target_group_attachment" "certgate""#;
    assert_eq!(
        tf_value(&main, attach, "port"),
        port_of(&listener["listen"]).to_string()
    );
    // certgate finishes draining before the NLB deregisters the target, and closes idle
    // connections before the NLB forgets them.
    let secs = |v: &Value| {
        humantime::parse_duration(v.as_str().unwrap())
            .unwrap()
            .as_secs()
    };
    let dereg: u64 = tf_value(&vars, r#"variable "deregistration_delay""#, "default")
        .parse()
        .unwrap();
    assert!(secs(&cfg["shutdown_grace"]) < dereg);
    let nlb_idle: u64 = tf_value(&vars, r#"variable "tcp_idle_timeout_seconds""#, "default")
        .parse()
        .unwrap();
    assert!(secs(&listener["timeouts"]["idle"]) < nlb_idle);
    assert!(secs(&listener["timeouts"]["read"]) < nlb_idle);
}
