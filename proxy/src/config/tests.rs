use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(
        text,
        Path::new("/etc/certgate/certgate.yaml"),
        |name| match name {
            "PORT" => Some("9443".into()),
            _ => None,
        },
    )
}

const MINIMAL: &str = "
tls:
  cert: certs/server.pem
  key: certs/server-key.pem
  client_ca: /abs/ca.pem
listeners:
  - name: controller
    listen: 127.0.0.1:${PORT}
    upstream: http://127.0.0.1:80
";

#[test]
fn minimal_config_gets_contract_defaults() {
    let c = load(MINIMAL).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.name, "controller");
    assert_eq!(l.listen, vec!["127.0.0.1:9443".parse().unwrap()]);
    assert_eq!(l.upstream.authority, "127.0.0.1:80");
    assert_eq!(l.tls.cert, PathBuf::from("/etc/certgate/certs/server.pem"));
    assert_eq!(l.tls.client_ca, Some(PathBuf::from("/abs/ca.pem")));
    assert_eq!(l.tls.client_auth, ClientAuth::Optional);
    assert_eq!(l.tls.min_version, TlsVersion::V1_2);
    assert_eq!(l.tls.max_version, TlsVersion::V1_3);
    assert_eq!(l.tls.alpn, vec![Alpn::H2, Alpn::Http11]);
    assert_eq!(l.headers, vec![Dialect::NginxIngress]);
    assert_eq!(l.timeouts.handshake, Duration::from_secs(10));
    assert_eq!(l.timeouts.read, Duration::from_secs(300));
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert!(c.admin.is_none());
    assert!(!l.forward_cert && l.proxy_protocol.is_none());
    assert_eq!(l.tls.session_lifetime, Some(DEFAULT_SESSION_LIFETIME));
    assert_eq!(c.upstream_keepalive, 128);
}

#[test]
fn session_resumption_can_be_turned_off_or_shortened_per_listener() {
    let text = format!("{MINIMAL}    tls:\n      session_resumption: false\n");
    assert_eq!(load(&text).unwrap().listeners[0].tls.session_lifetime, None);
    let text = format!("{MINIMAL}    tls:\n      session_lifetime: 90s\n");
    assert_eq!(
        load(&text).unwrap().listeners[0].tls.session_lifetime,
        Some(Duration::from_secs(90))
    );
}

#[test]
fn session_ticket_keys_is_a_file_the_reloader_watches() {
    let text = MINIMAL.replace("tls:\n", "tls:\n  session_ticket_keys: /abs/ticket.keys\n");
    let tls = &load(&text).unwrap().listeners[0].tls;
    let file = std::path::PathBuf::from("/abs/ticket.keys");
    assert_eq!(tls.session_ticket_keys.as_ref(), Some(&file));
    assert!(
        tls.files().contains(&file),
        "watched and reloaded like the other trust files"
    );
    let text = format!("{text}    tls:\n      session_resumption: false\n");
    let msg = error_of(&text);
    assert!(
        msg.contains("listeners[0].tls.session_ticket_keys")
            && msg.contains("remove session_ticket_keys"),
        "{msg}"
    );
}

#[test]
fn listener_tls_overrides_single_keys() {
    let text = format!(
        "{MINIMAL}    tls:\n      client_auth: required\n      min_version: \"1.3\"\n    timeouts: {{ connect: 500ms, idle: 5m }}\n"
    );
    let c = load(&text).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.tls.client_auth, ClientAuth::Required);
    assert_eq!(l.tls.min_version, TlsVersion::V1_3);
    assert_eq!(l.tls.cert, PathBuf::from("/etc/certgate/certs/server.pem"));
    assert_eq!(l.timeouts.connect, Duration::from_millis(500));
    assert_eq!(l.timeouts.idle, Duration::from_secs(300));
}

#[test]
fn tls_groups_default_to_hybrid_post_quantum_first_and_unknown_ones_are_named() {
    let l = &load(MINIMAL).unwrap().listeners[0];
    assert_eq!(l.tls.groups, ["X25519MLKEM768", "X25519", "P-256", "P-384"]);
    let text = format!("{MINIMAL}    tls:\n      groups: [P-384, X25519]\n");
    assert_eq!(
        load(&text).unwrap().listeners[0].tls.groups,
        ["P-384", "X25519"]
    );

    for (groups, at, why) in [
        ("[X25519, P-999]", "listeners[0].tls.groups[1]", "`P-999`"),
        (
            "[\"X25519:P-256\"]",
            "listeners[0].tls.groups[0]",
            "`X25519:P-256`",
        ),
        ("[\"?X25519\"]", "listeners[0].tls.groups[0]", "`?X25519`"),
        ("[\"X25519\\0\"]", "listeners[0].tls.groups[0]", "X25519"),
        ("[X25519, x25519]", "listeners[0].tls.groups[1]", "twice"),
        ("[]", "listeners[0].tls.groups", "empty"),
    ] {
        let msg = error_of(&MINIMAL.replace("tls:\n", &format!("tls:\n  groups: {groups}\n")));
        assert!(msg.starts_with("/etc/certgate/certgate.yaml: "), "{msg}");
        assert!(msg.contains(at) && msg.contains(why), "{groups}: {msg}");
        if why != "twice" {
            // The fix: what to write instead.
            assert!(
                msg.contains("X25519MLKEM768, X25519, P-256, P-384"),
                "{msg}"
            );
        }
    }
}

fn error_of(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let msg = error_of(&MINIMAL.replace("    upstream:", "    upstraem: x\n    upstream:"));
    assert!(msg.starts_with("/etc/certgate/certgate.yaml: "), "{msg}");
    assert!(msg.contains("upstraem"), "{msg}");
    assert!(msg.contains("line 9"), "{msg}");
}

#[test]
fn required_without_client_ca_is_an_error_with_the_fix() {
    let msg = error_of(
        "tls: {cert: a.pem, key: b.pem, client_auth: required}\nlisteners: [{name: a, listen: 127.0.0.1:1, upstream: http://127.0.0.1:2}]",
    );
    assert!(msg.contains("listeners[0].tls.client_auth"), "{msg}");
    assert!(msg.contains("client_ca"), "{msg}");
}

#[test]
fn bad_values_are_named() {
    for (text, key) in [
        (MINIMAL.replace("http://127.0.0.1:80", "https://127.0.0.1:80"), "listeners[0].upstream"),
        (MINIMAL.replace("127.0.0.1:${PORT}", "nowhere"), "listeners[0].listen"),
        (format!("{MINIMAL}    root_token: short\n"), "listeners[0].root_token"),
        (format!("{MINIMAL}    proxy_protocol_from: [10.0.0.0/33]\n"), "listeners[0].proxy_protocol_from"),
        (format!("{MINIMAL}    timeouts: {{read: fast}}\n"), "listeners[0].timeouts.read"),
        (format!("shutdown_grace: soon\n{MINIMAL}"), "shutdown_grace"),
        (format!("upstream_keepalive: 0\n{MINIMAL}"), "upstream_keepalive"),
        (MINIMAL.replace("tls:\n", "tls:\n  session_lifetime: 2d\n"), "listeners[0].tls.session_lifetime"),
        (MINIMAL.replace("tls:\n", "tls:\n  session_lifetime: 0s\n"), "listeners[0].tls.session_lifetime"),
        (format!("{MINIMAL}  - name: controller\n    listen: 127.0.0.1:1\n    upstream: http://a:1\n"), "listeners[1].name"),
    ] {
        let msg = error_of(&text);
        assert!(msg.contains(key), "expected {key} in: {msg}");
    }
}

#[test]
fn unset_variable_is_named() {
    let msg = error_of(&MINIMAL.replace("${PORT}", "${NOPE}"));
    assert!(msg.contains("NOPE") && msg.contains("line 8"), "{msg}");
}

#[test]
fn enum_values_are_checked() {
    let msg = error_of(&format!("{MINIMAL}    headers: [nginx]\n"));
    assert!(msg.contains("nginx-ingress"), "{msg}");
    let msg = error_of(&MINIMAL.replace(
        "client_ca: /abs/ca.pem",
        "client_ca: /abs/ca.pem\n  client_auth: maybe",
    ));
    assert!(
        msg.contains("optional") && msg.contains("required"),
        "{msg}"
    );
}

#[test]
fn hardening_keys() {
    let l = &load(MINIMAL).unwrap().listeners[0];
    assert_eq!(l.path_params, PathParams::Reject);
    assert!(l.pass_client_headers.is_empty());
    assert_eq!(l.limits.upstream_per_connection, 32);
    assert_eq!(l.limits.upstream_connections, 1024);
    assert_eq!(l.limits.connections_per_ip, 256);

    let text = format!(
        "{MINIMAL}    path_params: keep\n    pass_client_headers: [X_HTTP_Method_Override, remote-user]\n    limits: {{ upstream_per_connection: 2, upstream_connections: 4 }}\n"
    );
    let l = &load(&text).unwrap().listeners[0];
    assert_eq!(l.path_params, PathParams::Keep);
    assert_eq!(
        l.pass_client_headers,
        ["x-http-method-override", "remote-user"]
    );
    assert_eq!(l.limits.upstream_per_connection, 2);
    let text = format!("{MINIMAL}    limits: {{ connections_per_ip: 3 }}\n");
    assert_eq!(
        load(&text).unwrap().listeners[0].limits.connections_per_ip,
        3
    );
    let e = load(&format!(
        "{MINIMAL}    limits: {{ connections_per_ip: 0 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listeners[0].limits.connections_per_ip") && e.contains("omit it for 256"),
        "{e}"
    );

    let e = load(&format!(
        "{MINIMAL}    pass_client_headers: [ssl-client-verify]\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listeners[0].pass_client_headers") && e.contains("ssl-client-verify"),
        "{e}"
    );
    let e = load(&format!("{MINIMAL}    path_params: strip\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("path_params"), "{e}");
    let e = load(&format!(
        "{MINIMAL}    limits: {{ upstream_per_connection: 8, upstream_connections: 4 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("limits.upstream_connections"), "{e}");
}

#[test]
fn admin_clients_max_defaults_and_is_bounded() {
    assert_eq!(load(MINIMAL).unwrap().clients_max, DEFAULT_CLIENTS_MAX);
    let with = |n: &str| format!("admin:\n  listen: 127.0.0.1:9901\n  clients_max: {n}\n{MINIMAL}");
    assert_eq!(load(&with("2")).unwrap().clients_max, 2);
    for bad in ["0", "1000001"] {
        let e = load(&with(bad)).unwrap_err().to_string();
        assert!(
            e.contains("certgate.yaml") && e.contains("admin.clients_max") && e.contains("omit it"),
            "{e}"
        );
    }
}

#[test]
fn upstream_per_client_is_at_most_half_the_listener_and_request_body_is_checked() {
    let l = &load(MINIMAL).unwrap().listeners[0];
    assert_eq!(l.limits.upstream_per_client, 128);
    assert_eq!(l.timeouts.request_body, std::time::Duration::from_secs(60));

    // Left out, the default follows a small pool down to half of it.
    let text = format!("{MINIMAL}    limits: {{ upstream_connections: 64 }}\n");
    assert_eq!(
        load(&text).unwrap().listeners[0].limits.upstream_per_client,
        32
    );
    let text =
        format!("{MINIMAL}    limits: {{ upstream_per_connection: 1, upstream_connections: 1 }}\n");
    assert_eq!(
        load(&text).unwrap().listeners[0].limits.upstream_per_client,
        1
    );
    let text = format!(
        "{MINIMAL}    limits: {{ upstream_connections: 64, upstream_per_client: 8 }}\n    timeouts: {{ request_body: 1s }}\n"
    );
    let l = &load(&text).unwrap().listeners[0];
    assert_eq!(l.limits.upstream_per_client, 8);
    assert_eq!(l.timeouts.request_body, std::time::Duration::from_secs(1));

    // Written out above half, it is refused with the key and the largest allowed value.
    let e = load(&format!(
        "{MINIMAL}    limits: {{ upstream_connections: 64, upstream_per_client: 33 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listeners[0].limits.upstream_per_client") && e.contains("at most 32"),
        "{e}"
    );
    let e = load(&format!(
        "{MINIMAL}    limits: {{ upstream_per_client: 0 }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("limits.upstream_per_client"), "{e}");
    let e = load(&format!("{MINIMAL}    timeouts: {{ request_body: 0s }}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listeners[0].timeouts.request_body") && e.contains("omit it for 60s"),
        "{e}"
    );
}
