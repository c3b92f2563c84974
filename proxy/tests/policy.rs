//! The policy through the real proxy: every rule of the route grammar, the decision, path
//! normalisation with its 400 forms, attempts to reach a denied route through an allowed one,
//! audit mode and the root token. Requests go out on raw TLS sockets so the path is sent exactly
//! as written (HTTP client libraries normalise dot segments themselves).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;

const POLICY: &str = r#"
permissions:
  list_vms:     ["GET /api/v1/vm"]
  start_vm:     ["POST /api/v1/vm"]
  view_logs:    ["GET /api/v1/logs/**"]
  get_status:   ["GET|HEAD /api/v1/status"]
  node_by_id:   ["GET /api/v1/node/{id}"]
  any_group:    ["* /api/v1/group/*"]
  allowed_area: ["GET /allowed/**"]
  health:       ["GET /livez"]
groups:
  DevOps: ["*"]
  MyOrgName: [list_vms, start_vm]
  Logs: [view_logs]
  Nodes: [node_by_id]
  Area: [any_group, allowed_area]
users:
  Jenkins: [list_vms]
authenticated: [get_status]
anonymous: [health]
"#;

struct Fixture {
    w: World,
    p: Proxy,
}

fn fixture(policy: &str, extra: &str) -> Fixture {
    let w = World::new();
    let up = upstream();
    std::fs::write(w.path("policy.yaml"), policy).unwrap();
    let mut cfg = ProxyConfig::new(up);
    let listener_extra = format!("    policy: policy.yaml\n{extra}");
    cfg.listener_extra = &listener_extra;
    let p = Proxy::start(&w, &cfg);
    Fixture { w, p }
}

impl Fixture {
    /// Sends `METHOD PATH` verbatim on a fresh TLS connection: (status, body, upstream JSON if any).
    fn send(
        &self,
        who: Option<&certgate::pki::Issued>,
        method: &str,
        path: &str,
        headers: &str,
    ) -> (u16, serde_json::Value) {
        let tcp = TcpStream::connect(self.p.addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut s = tls_connector(&self.w, who, b"\x08http/1.1")
            .connect("localhost", tcp)
            .unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        // The echo upstream and our errors answer with a content-length body (no chunking).
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
        )
    }

    fn code(&self, who: Option<&certgate::pki::Issued>, method: &str, path: &str) -> u16 {
        self.send(who, method, path, "").0
    }
}

#[test]
fn route_grammar_and_decision() {
    let f = fixture(POLICY, "");
    let ca = &f.w.ca;
    let org = client(&[("O", "MyOrgName"), ("CN", "ci1")], ca);
    let devops = client(&[("O", "DevOps"), ("CN", "ops")], ca);
    let logs_and_org = client(&[("O", "Logs"), ("O", "MyOrgName"), ("CN", "both")], ca);
    let nodes = client(&[("O", "Nodes"), ("CN", "n")], ca);
    let area = client(&[("O", "Area"), ("CN", "a")], ca);
    let jenkins = client(&[("CN", "Jenkins")], ca);
    let nobody = client(&[("O", "Visitors"), ("CN", "v")], ca);

    // exact + method, trailing slash ignored, query ignored
    assert_eq!(f.code(Some(&org), "GET", "/api/v1/vm"), 200);
    assert_eq!(f.code(Some(&org), "GET", "/api/v1/vm/"), 200);
    assert_eq!(f.code(Some(&org), "GET", "/api/v1/vm?id=42"), 200);
    assert_eq!(f.code(Some(&org), "POST", "/api/v1/vm"), 200);
    assert_eq!(f.code(Some(&org), "DELETE", "/api/v1/vm"), 403);
    // "*" grants everything
    assert_eq!(
        f.code(Some(&devops), "DELETE", "/api/v1/anything/at/all"),
        403,
        "covered by no permission"
    );
    assert_eq!(f.code(Some(&devops), "GET", "/api/v1/logs/x"), 200);
    // ** matches zero or more segments
    assert_eq!(f.code(Some(&logs_and_org), "GET", "/api/v1/logs"), 200);
    assert_eq!(
        f.code(Some(&logs_and_org), "GET", "/api/v1/logs/a/b/c"),
        200
    );
    // union over several groups
    assert_eq!(f.code(Some(&logs_and_org), "POST", "/api/v1/vm"), 200);
    // {id} and * are exactly one non-empty segment
    assert_eq!(f.code(Some(&nodes), "GET", "/api/v1/node/5"), 200);
    assert_eq!(f.code(Some(&nodes), "GET", "/api/v1/node"), 403);
    assert_eq!(f.code(Some(&nodes), "GET", "/api/v1/node/5/x"), 403);
    assert_eq!(
        f.code(Some(&area), "PATCH", "/api/v1/group/7"),
        200,
        "* method"
    );
    assert_eq!(f.code(Some(&area), "GET", "/api/v1/group"), 403);
    // GET|HEAD, authenticated
    assert_eq!(f.code(Some(&nobody), "GET", "/api/v1/status"), 200);
    assert_eq!(f.code(Some(&nobody), "HEAD", "/api/v1/status"), 200);
    // users by CN
    assert_eq!(f.code(Some(&jenkins), "GET", "/api/v1/vm"), 200);
    let (code, v) = f.send(Some(&jenkins), "POST", "/api/v1/vm", "");
    assert_eq!(code, 403);
    assert_eq!(
        v,
        serde_json::json!({"status": "FAIL", "message": "Permission Denied", "reason": "POST /api/v1/vm requires one of: start_vm"})
    );
    let (_, v) = f.send(Some(&nobody), "POST", "/api/v1/status", "");
    assert_eq!(
        v["reason"],
        "POST /api/v1/status is covered by no permission"
    );
    // anonymous holds only `anonymous`; denial is 401 with the certificate reason
    assert_eq!(f.code(None, "GET", "/livez"), 200);
    let (code, v) = f.send(None, "GET", "/api/v1/status", "");
    assert_eq!((code, v["reason"].as_str()), (401, Some("no certificate")));
    // case-sensitive
    assert_eq!(f.code(Some(&area), "GET", "/ALLOWED/x"), 403);

    // the permission that allowed the request reaches the upstream
    let (_, v) = f.send(
        Some(&logs_and_org),
        "GET",
        "/api/v1/vm",
        "X-Certgate-Permission: start_vm\r\n",
    );
    assert_eq!(seen(&v, "x-certgate-permission"), ["list_vms"]);
    let m = f.p.metrics();
    assert!(
        metric(
            &m,
            "certgate_authz_decisions_total",
            &[("decision", "allow"), ("permission", "list_vms")]
        ) >= 1.0,
        "{m}"
    );
}

#[test]
fn normalisation_rejects_and_cannot_be_used_to_reach_denied_routes() {
    let f = fixture(POLICY, "");
    let area = client(&[("O", "Area"), ("CN", "a")], &f.w.ca);
    for (path, reason) in [
        ("/allowed/..%2fdenied", "encoded slash in path"),
        ("/allowed/%2F", "encoded slash in path"),
        ("/allowed/%5c..", "encoded slash in path"),
        ("/allowed/%00", "control character in path"),
        ("/allowed/%0d%0aX:%20y", "control character in path"),
        ("/allowed/%zz", "invalid percent-encoding"),
        ("/allowed/%4", "invalid percent-encoding"),
        ("/allowed/../../etc", "path escapes root"),
        // `;` starts a path parameter for servlet containers: refused by default.
        ("/allowed;/../denied", "path parameter (;) in path"),
    ] {
        let (code, v) = f.send(Some(&area), "GET", path, "");
        assert_eq!(code, 400, "{path}: {v}");
        assert_eq!(v["message"], "Bad Request");
        assert_eq!(v["reason"], reason, "{path}");
    }
    for path in [
        "/allowed/../denied",
        "/allowed/%2e%2e/denied",
        "/allowed/%2E%2E/denied",
        "//denied",
        "/allowed/./../denied",
    ] {
        let (code, v) = f.send(Some(&area), "GET", path, "");
        assert_eq!(code, 403, "{path} must be judged as /denied: {v}");
        assert_eq!(
            v["reason"], "GET /denied is covered by no permission",
            "{path}"
        );
    }
    // What is matched is what is forwarded.
    let (code, v) = f.send(Some(&area), "GET", "/allowed//a/./b/%7Euser/../c?q=%2F", "");
    assert_eq!(code, 200);
    assert_eq!(v["path"], "/allowed/a/b/c");
    assert_eq!(v["query"], "q=%2F");
    let (code, v) = f.send(Some(&area), "GET", "/allowed/%7euser", "");
    assert_eq!((code, v["path"].as_str()), (200, Some("/allowed/~user")));
}

#[test]
fn group_attribute_variants() {
    let policy = |attr: &str| {
        format!("permissions:\n  p: [\"GET /x\"]\ngroups:\n  Team: [p]\ngroup_attribute: {attr}\n")
    };
    let w_o = fixture(&policy("O"), "");
    let o_only = client(&[("O", "Team"), ("CN", "a")], &w_o.w.ca);
    let ou_team = client(&[("O", "Other"), ("OU", "Team"), ("CN", "b")], &w_o.w.ca);
    assert_eq!(w_o.code(Some(&o_only), "GET", "/x"), 200);
    assert_eq!(w_o.code(Some(&ou_team), "GET", "/x"), 403);
    drop(w_o);
    let w_ou = fixture(&policy("OU"), "");
    let o_only = client(&[("O", "Team"), ("CN", "a")], &w_ou.w.ca);
    let ou_team = client(&[("O", "Other"), ("OU", "Team"), ("CN", "b")], &w_ou.w.ca);
    assert_eq!(w_ou.code(Some(&o_only), "GET", "/x"), 403);
    let (code, v) = w_ou.send(Some(&ou_team), "GET", "/x", "");
    assert_eq!(code, 200);
    assert_eq!(
        seen(&v, "x-certgate-groups"),
        ["Team"],
        "groups header follows group_attribute"
    );
    drop(w_ou);
    let w_else = fixture(&policy("OU_else_O"), "");
    let o_only = client(&[("O", "Team"), ("CN", "a")], &w_else.w.ca);
    let ou_other = client(&[("O", "Team"), ("OU", "Other"), ("CN", "b")], &w_else.w.ca);
    assert_eq!(
        w_else.code(Some(&o_only), "GET", "/x"),
        200,
        "no OU: O counts"
    );
    assert_eq!(
        w_else.code(Some(&ou_other), "GET", "/x"),
        403,
        "OU present: O ignored (Anka >= 1.48)"
    );
}

#[test]
fn audit_mode_forwards_and_counts() {
    let f = fixture(&format!("{POLICY}mode: audit\n"), "");
    let nobody = client(&[("O", "Visitors"), ("CN", "v")], &f.w.ca);
    let (code, _) = f.send(Some(&nobody), "DELETE", "/api/v1/vm", "");
    assert_eq!(code, 200, "audit forwards");
    let m = f.p.metrics();
    assert_eq!(
        metric(&m, "certgate_requests_total", &[("decision", "audit_deny")]),
        1.0,
        "{m}"
    );
    let line = wait_for("audit log", std::time::Duration::from_secs(5), || {
        f.p.log_text()
            .lines()
            .find(|l| l.contains("audit_deny"))
            .map(str::to_string)
    });
    assert!(
        line.contains("DELETE /api/v1/vm is covered by no permission"),
        "{line}"
    );
}

#[test]
fn root_token_is_root_everywhere_and_forwarded_unchanged() {
    let f = fixture(POLICY, "    root_token: s3cret-root-token\n");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let good = format!("Authorization: Basic {}\r\n", b64("root:s3cret-root-token"));
    let (code, v) = f.send(None, "DELETE", "/api/v1/vm", &good);
    assert_eq!(code, 200);
    assert_eq!(seen(&v, "x-certgate-permission"), ["root"]);
    assert_eq!(
        seen(&v, "authorization"),
        [format!("Basic {}", b64("root:s3cret-root-token"))]
    );
    for bad in [
        b64("root:s3cret-root-tokeX"),
        b64("admin:s3cret-root-token"),
        b64("root:s3cret-root-token-longer"),
        "not-base64!".into(),
    ] {
        let (code, _) = f.send(
            None,
            "DELETE",
            "/api/v1/vm",
            &format!("Authorization: Basic {bad}\r\n"),
        );
        assert_eq!(code, 401, "{bad}");
    }
    let (code, out, err) = {
        let path = f.w.path("short.yaml");
        std::fs::write(
            &path,
            std::fs::read_to_string(&f.p.config)
                .unwrap()
                .replace("s3cret-root-token", "short"),
        )
        .unwrap();
        let o = std::process::Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("root_token") && err.contains("10 characters"),
        "{err}"
    );
}

#[test]
fn explain_names_the_rule() {
    let f = fixture(POLICY, "");
    let org = client(&[("O", "MyOrgName"), ("CN", "ci1")], &f.w.ca);
    f.w.save("org", &org);
    let run = |args: &[&str]| {
        let o = std::process::Command::new(BIN)
            .args(["explain", "-c"])
            .arg(&f.p.config)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let cert = f.w.path("org.pem");
    let cert = cert.to_str().unwrap();
    let (code, out) = run(&[
        "--listener",
        "test",
        "--method",
        "POST",
        "--path",
        "/api/v1/vm",
        "--cert",
        cert,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("start_vm") && out.contains("MyOrgName") && out.contains("ALLOW"),
        "{out}"
    );
    let (code, out) = run(&[
        "--listener",
        "test",
        "--method",
        "DELETE",
        "--path",
        "/api/v1/vm",
        "--cert",
        cert,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DENY"), "{out}");
    let (code, out) = run(&[
        "--listener",
        "test",
        "--method",
        "GET",
        "--path",
        "/livez",
        "--anonymous",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&[
        "--listener",
        "nope",
        "--method",
        "GET",
        "--path",
        "/",
        "--anonymous",
    ]);
    assert_eq!(code, Some(2), "{out}");
}

/// `certgate explain` for one request: (exit code, stdout, stderr).
fn explain(f: &Fixture, args: &[&str]) -> (Option<i32>, String, String) {
    let o = std::process::Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&f.p.config)
        .args(["--listener", "test"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn explain_decides_every_method_as_the_proxy_does() {
    let f = fixture(POLICY, "");
    let org = client(&[("O", "MyOrgName"), ("CN", "ci1")], &f.w.ca);
    f.w.save("org", &org);
    let cert = f.w.path("org.pem");
    let cert = cert.to_str().unwrap();
    let path = "/api/v1/vm";
    // Methods are case-sensitive (RFC 9110 §9.1): the proxy allows GET and POST only as written.
    let mut statuses = Vec::new();
    for method in ["GET", "get", "Get", "POST", "post", "DELETE", "PURGE"] {
        let (status, body) = f.send(Some(&org), method, path, "");
        statuses.push((method, status));
        let (code, out, err) = explain(&f, &["--method", method, "--path", path, "--cert", cert]);
        let want = match status {
            200 => 0,
            403 => 1,
            other => panic!("{method}: the proxy answered {other}: {body}"),
        };
        assert_eq!(code, Some(want), "{method}: proxy {status}\n{out}{err}");
        if status == 403 {
            let reason = body["reason"].as_str().unwrap_or_default();
            assert!(
                out.contains(reason) && out.contains("decision: DENY (403)"),
                "{method}: the proxy's reason {reason:?} is not explain's:\n{out}"
            );
        }
        let hint = format!("did you mean {}?", method.to_ascii_uppercase());
        assert_eq!(
            out.contains(&hint),
            method != method.to_ascii_uppercase(),
            "{method}:\n{out}"
        );
    }
    assert_eq!(
        statuses,
        [
            ("GET", 200),
            ("get", 403),
            ("Get", 403),
            ("POST", 200),
            ("post", 403),
            ("DELETE", 403),
            ("PURGE", 403),
        ]
    );
}

#[test]
fn explain_refuses_a_method_no_request_line_could_carry() {
    let f = fixture(POLICY, "");
    for (method, says) in [
        (
            "",
            "--method is empty: give the request's method, e.g. --method GET",
        ),
        ("G ET", "--method \"G ET\" is not an HTTP method"),
        ("GET\n", "--method \"GET\\n\" is not an HTTP method"),
        ("GÉT", "--method \"GÉT\" is not an HTTP method"),
        ("(GET)", "--method \"(GET)\" is not an HTTP method"),
    ] {
        let (code, out, err) =
            explain(&f, &["--method", method, "--path", "/livez", "--anonymous"]);
        assert_eq!(code, Some(2), "{method:?}: {out}{err}");
        assert!(
            err.starts_with(&format!("error: {says}")),
            "{method:?}: {err}"
        );
        assert!(out.is_empty(), "{method:?}: {out}");
    }
}

#[test]
fn explain_under_required_says_the_handshake_refuses_as_the_proxy_does() {
    let mut w = World::new();
    let up = upstream();
    std::fs::write(w.path("policy.yaml"), POLICY).unwrap();
    let gone = client(&[("O", "DevOps"), ("CN", "gone")], &w.ca);
    w.save("gone", &gone);
    w.revoke(&gone.cert);
    let mut cfg = ProxyConfig::new(up);
    cfg.client_auth = "required";
    cfg.listener_extra = "    policy: policy.yaml\n";
    let p = Proxy::start(&w, &cfg);
    let f = Fixture { w, p };
    let gone_pem = f.w.path("gone.pem");
    for (args, who, alert, reason) in [
        (
            vec!["--anonymous"],
            None,
            "alert certificate required",
            "`no certificate`",
        ),
        (
            vec!["--cert", gone_pem.to_str().unwrap()],
            Some(f.w.files("gone")),
            "alert certificate revoked",
            "`certificate revoked`",
        ),
    ] {
        // `GET /livez` is granted to anonymous requests: only the handshake can refuse it.
        let mut all = vec!["--method", "GET", "--path", "/livez"];
        all.extend(args);
        let (code, out, err) = explain(&f, &all);
        assert_eq!(code, Some(1), "{out}{err}");
        assert!(
            out.contains("decision: DENY (in the TLS handshake, client_auth: required")
                && out.contains(&format!("`{}`", alert.trim_start_matches("alert ")))
                && out.contains(reason)
                && out.contains("rule: client_auth: required refuses")
                && !out.contains("rule: allowed"),
            "{out}"
        );
        let (ok, seen) = s_client(
            &f.w,
            &f.p,
            who.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            &["-tls1_3"],
        );
        assert!(!ok && seen.contains(alert), "the proxy: {seen}");
    }
}
