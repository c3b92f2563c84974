//! What the upstream receives: the decided request target, the request with every spoofable
//! identity header removed and ours added. The upstream trusts these headers completely, so
//! removal happens for every spelling, whatever dialects are configured.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::ListenerConfig;
use crate::config::{hardening_entry, is_passed, same_name};
use crate::policy::{GroupAttribute, RequestTarget};
use crate::proxy::dialects::{dialect_headers, xfcc_quoted, ClientVerify};
use crate::tls::identity::Identity;
use crate::tls::verify::AuthFailure;

pub(crate) struct ForwardInfo<'a> {
    pub config: &'a ListenerConfig,
    pub client_ip: Option<IpAddr>,
    /// The verified identity's headers ([`identity_headers`], built once per connection).
    pub identity_headers: Option<&'a [(HeaderName, HeaderValue)]>,
    pub failure: Option<AuthFailure>,
    pub permission: Option<&'a str>,
    /// The target the policy decided on; the only request-target the upstream ever sees.
    pub target: Option<&'a RequestTarget>,
}

/// Everything the upstream learns about a verified client: `x-certgate-user`,
/// `x-certgate-groups`, `x-certgate-spiffe-id` and the configured dialects. The same for every request of a connection
/// (until a policy reload changes `group_attribute`), so the proxy builds it once per connection.
pub(crate) fn identity_headers(
    config: &ListenerConfig,
    id: &Identity,
    group_attribute: Option<GroupAttribute>,
) -> pingora::Result<Vec<(HeaderName, HeaderValue)>> {
    let value = |v: String| {
        HeaderValue::try_from(v).map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "identity header", e)
        })
    };
    let mut out = Vec::with_capacity(4 + config.headers.len() * 2);
    if let Some(user) = &id.user_rfc2253 {
        out.push((
            HeaderName::from_static("x-certgate-user"),
            value(user.clone())?,
        ));
    }
    out.push((
        HeaderName::from_static("x-certgate-groups"),
        value(groups_rfc2253(id, group_attribute).join(","))?,
    ));
    // Only a certificate whose one spiffe URI SAN is a valid SPIFFE ID gets the header, so an
    // upstream can trust it to be the workload's identity without parsing SANs itself.
    if let Ok(spiffe) = crate::policy::spiffe::svid_id(&id.uri_sans) {
        out.push((
            HeaderName::from_static("x-certgate-spiffe-id"),
            value(spiffe.id.to_string())?,
        ));
    }
    for (name, v) in dialect_headers(
        &config.headers,
        config.forward_cert,
        &ClientVerify::Success,
        Some(id),
    ) {
        out.push((HeaderName::from_static(name), value(v)?));
    }
    Ok(out)
}

/// The RFC 2253-escaped group values under `attribute`, in certificate order.
pub(crate) fn groups_rfc2253(identity: &Identity, attribute: Option<GroupAttribute>) -> &[String] {
    attribute
        .unwrap_or(GroupAttribute::O)
        .select(&identity.organizations_rfc2253, &identity.org_units_rfc2253)
}

/// The head the upstream receives, built from the client's in one pass: the decided target,
/// the client's headers less every spoofable one (and any `drop` names), then ours. Built as
/// plain `http` parts with room for every header, so nothing is looked up, parsed or grown
/// twice; header names go upstream in their canonical spelling (title case for the standard
/// ones, lower case for the rest), as HAProxy and Envoy send them.
pub(crate) fn upstream_head(
    client: &RequestHeader,
    info: &ForwardInfo<'_>,
    drop: impl Fn(&HeaderName) -> bool,
) -> pingora::Result<RequestHeader> {
    const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
    const X_CERTGATE_PERMISSION: HeaderName = HeaderName::from_static("x-certgate-permission");
    let invalid = |what: &str, e: http::header::InvalidHeaderValue| {
        pingora::Error::because(pingora::ErrorType::InternalError, what.to_string(), e)
    };

    // Always replaced, even when it looks unchanged: the client's bytes may differ from what
    // the URI shows (a target that is not origin-form keeps its raw bytes otherwise).
    let Some(target) = info.target else {
        return Err(pingora::Error::explain(
            pingora::ErrorType::InternalError,
            "no decided request target",
        ));
    };
    let identity = info.identity_headers.unwrap_or_default();
    let mut headers =
        http::HeaderMap::with_capacity(client.headers.len() + 8 + identity.len().max(4));

    let passed = &info.config.pass_client_headers;
    for (name, value) in &client.headers {
        let spoofed = is_spoofable(name.as_str())
            || (hardening_entry(name.as_str()).is_some() && !is_passed(passed, name.as_str()));
        // Ours replaces the client's: never two values, whatever the client sent.
        if spoofed || name == X_FORWARDED_HOST || name == X_FORWARDED_PROTO || drop(name) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }

    // HTTP/2 clients send :authority instead of Host; an HTTP/1.1 upstream needs Host.
    let host = match client.headers.get(http::header::HOST) {
        Some(h) if h.to_str().is_ok() => Some(h.clone()),
        _ => client
            .uri
            .authority()
            .map(|a| HeaderValue::from_str(a.as_str()))
            .transpose()
            .map_err(|e| invalid("authority", e))?,
    };
    if let Some(host) = &host {
        if !headers.contains_key(http::header::HOST) {
            headers.insert(http::header::HOST, host.clone());
        }
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    let address = info.client_ip.map(|ip| {
        let ip = ip.to_canonical();
        (ip.is_ipv6(), ip.to_string())
    });
    if let Some((_, text)) = &address {
        let text = HeaderValue::from_str(text).map_err(|e| invalid("client address", e))?;
        headers.insert(X_FORWARDED_FOR, text.clone());
        headers.insert(X_REAL_IP, text);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    let host_text = host.as_ref().and_then(|h| h.to_str().ok());
    let address = address.as_ref().map(|(v6, text)| (*v6, text.as_str()));
    headers.insert(
        FORWARDED,
        HeaderValue::try_from(forwarded(address, host_text))
            .map_err(|e| invalid("forwarded", e))?,
    );

    for (name, value) in identity {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(p) = info.permission {
        headers.insert(
            X_CERTGATE_PERMISSION,
            HeaderValue::from_str(p).map_err(|e| invalid("permission", e))?,
        );
    }
    if info.identity_headers.is_none() {
        // Without a verified identity only the verification outcome is sent (ssl-client-verify).
        let verify = match info.failure {
            None | Some(AuthFailure::NoCertificate) => ClientVerify::None,
            Some(f) => ClientVerify::Failed(f.openssl_text()),
        };
        for (name, value) in dialect_headers(
            &info.config.headers,
            info.config.forward_cert,
            &verify,
            None,
        ) {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::try_from(value).map_err(|e| invalid(name, e))?,
            );
        }
    }

    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = client.method.clone();
    parts.uri = target.uri();
    parts.version = client.version;
    parts.headers = headers;
    parts.extensions = client.extensions.clone();
    Ok(RequestHeader::from(parts))
}

/// The upstream's hop-by-hop response headers, which are about its connection to certgate and
/// never the client's (RFC 9110 §7.6.1): every header its `Connection` names, `Keep-Alive` and
/// `Proxy-Connection`. `Connection` itself is the client session's to write. Not for 1xx
/// answers: a 101 needs its `Upgrade` and `Connection` as they are.
pub(crate) fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    if resp.status.is_informational() {
        return;
    }
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|n| n != http::header::CONNECTION && n != http::header::TRANSFER_ENCODING)
        .collect();
    for name in named {
        resp.remove_header(&name);
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// RFC 7239 `Forwarded` from what certgate knows: the client address (whether it is IPv6, and
/// its canonical text), the Host, and https.
fn forwarded(client: Option<(bool, &str)>, host: Option<&str>) -> String {
    let mut out = String::with_capacity(64);
    match client {
        Some((false, v4)) => {
            out.push_str("for=");
            out.push_str(v4);
            out.push(';');
        }
        Some((true, v6)) => {
            out.push_str("for=\"[");
            out.push_str(v6);
            out.push_str("]\";");
        }
        None => out.push_str("for=unknown;"),
    }
    if let Some(host) = host {
        out.push_str("host=");
        out.push_str(&xfcc_quoted(host));
        out.push(';');
    }
    out.push_str("proto=https");
    out
}

/// Every header the proxy must strip from client requests: case-insensitive, `-` and `_`
/// equivalent. certgate writes its own value of each (or none) afterwards.
pub(crate) fn is_spoofable(name: &str) -> bool {
    const EXACT: [&str; 12] = [
        "ssl-client-verify",
        "ssl-client-subject-dn",
        "ssl-client-issuer-dn",
        "ssl-client-cert",
        "x-forwarded-client-cert",
        "x-forwarded-tls-client-cert",
        "x-forwarded-tls-client-cert-info",
        "client-cert",
        "client-cert-chain",
        "x-real-ip",
        "x-forwarded-for",
        "forwarded",
    ];
    const PREFIX: &str = "x-certgate-";
    let n = name.as_bytes();
    EXACT.iter().any(|e| same_name(n, e))
        || (n.len() >= PREFIX.len() && same_name(&n[..PREFIX.len()], PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HARDENING_STRIPPED;

    #[test]
    fn forwarded_values() {
        assert_eq!(
            super::forwarded(Some((false, "203.0.113.7")), Some("ctrl.example.com:8443")),
            "for=203.0.113.7;host=\"ctrl.example.com:8443\";proto=https"
        );
        assert_eq!(
            super::forwarded(Some((true, "2001:db8::1")), Some("a\"b")),
            "for=\"[2001:db8::1]\";host=\"a\\\"b\";proto=https"
        );
        assert_eq!(super::forwarded(None, None), "for=unknown;proto=https");
    }

    #[test]
    fn an_ipv4_mapped_client_is_forwarded_as_ipv4() {
        let config = listener("");
        let decided = crate::policy::parse_target(b"/", None, config.path_params).expect("target");
        let client = request("/", &[("host", "h")]);
        for (ip, xff, fwd) in [
            (
                "::ffff:10.0.0.1",
                "10.0.0.1",
                "for=10.0.0.1;host=\"h\";proto=https",
            ),
            (
                "2001:db8::1",
                "2001:db8::1",
                "for=\"[2001:db8::1]\";host=\"h\";proto=https",
            ),
        ] {
            let info = ForwardInfo {
                client_ip: ip.parse().ok(),
                ..anonymous(&config, Some(&decided))
            };
            let req = upstream_head(&client, &info, |_| false).expect("rewrite");
            assert_eq!(values(&req, "x-forwarded-for"), [xff]);
            assert_eq!(values(&req, "x-real-ip"), [xff]);
            assert_eq!(values(&req, "forwarded"), [fwd]);
        }
    }

    #[test]
    fn spoofable_names() {
        for n in [
            "ssl-client-verify",
            "SSL_CLIENT_VERIFY",
            "Ssl-Client-Subject-Dn",
            "ssl_client_issuer-dn",
            "ssl-client-cert",
            "X-Forwarded-Client-Cert",
            "x_forwarded_tls_client_cert",
            "X-Forwarded-Tls-Client-Cert-Info",
            "client-cert",
            "Client_Cert_Chain",
            "x-certgate-user",
            "X_CERTGATE_GROUPS",
            "x-certgate-",
            "x-certgate-anything-else",
            "X-Real-IP",
            "x_real_ip",
            "X-Forwarded-For",
            "x_forwarded_for",
            "Forwarded",
        ] {
            assert!(is_spoofable(n), "{n}");
        }
        for n in [
            "ssl-client-verifyx",
            "x-certgate",
            "x-certgatex-user",
            "client-certs",
            "x-forwarded-host",
            "x-forwarded-proto",
            "authorization",
            "host",
            "",
            "x-forwarded-client-cert-info",
            "ssl-client-cert-chain",
        ] {
            assert!(!is_spoofable(n), "{n}");
        }
    }

    #[test]
    fn hardening_names() {
        use crate::config::passable_header;
        let passable = |n: &str| passable_header(n);
        assert_eq!(
            passable("X_HTTP_Method_Override").as_deref(),
            Some("x-http-method-override")
        );
        assert_eq!(
            passable("SSL-Client-S-DN").as_deref(),
            Some("ssl-client-s-dn")
        );
        assert_eq!(
            passable("X-Auth-Request-*").as_deref(),
            Some("x-auth-request-*")
        );
        assert_eq!(
            passable("X_Auth_Request_Email").as_deref(),
            Some("x-auth-request-email")
        );
        for n in [
            "x-certgate-user",
            "forwarded",
            "x-http-method-overrides",
            "x-auth-request",
            "x-auth-request-a*",
            "x-auth-request-a:b",
            "",
        ] {
            assert_eq!(passable(n), None, "{n}");
        }
        // The two lists never overlap: an always-stripped header cannot be passed.
        assert!(HARDENING_STRIPPED.iter().all(|h| !is_spoofable(h)));
    }

    #[test]
    fn look_alike_identity_and_mount_headers_are_hardening_headers_in_every_spelling() {
        for n in [
            "X-Forwarded-Prefix",
            "x_forwarded_port",
            "X-Original-URI",
            "x-original-url",
            "X_Rewrite_URL",
            "X-Auth-Request-User",
            "x_auth_request_email",
            "X-AUTH-REQUEST-GROUPS",
            "x-auth-request-access-token",
            "x-auth-request-",
            "X-Forwarded-User",
            "x_forwarded_email",
            "X-Forwarded-Groups",
            "X_Forwarded_Preferred_Username",
            "X-Remote-User",
            "remote_user",
        ] {
            assert!(hardening_entry(n).is_some(), "{n}");
        }
        for n in [
            "x-auth-request",
            "x-auth-requests-user",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-users",
            "x-forwarded-ports",
            "remote-users",
        ] {
            assert_eq!(hardening_entry(n), None, "{n}");
        }
        let passed = ["x-auth-request-email".to_string()];
        assert!(is_passed(&passed, "X_Auth_Request_Email"));
        assert!(!is_passed(&passed, "x-auth-request-user"));
        let all = ["x-auth-request-*".to_string()];
        assert!(is_passed(&all, "x-auth-request-user"));
        assert!(!is_passed(&all, "x-forwarded-user"));
    }

    fn listener(extra: &str) -> ListenerConfig {
        let yaml = format!(
            "tls:\n  cert: /c.pem\n  key: /k.pem\nlisteners:\n  - name: l\n    listen: 127.0.0.1:9443\n    upstream: http://127.0.0.1:80\n{extra}"
        );
        crate::config::Config::from_yaml(&yaml, std::path::Path::new("/certgate.yaml"), |_| None)
            .expect("config")
            .listeners
            .remove(0)
    }

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    /// A request without identity or permission, from no known address.
    fn anonymous<'a>(
        config: &'a ListenerConfig,
        target: Option<&'a RequestTarget>,
    ) -> ForwardInfo<'a> {
        ForwardInfo {
            config,
            client_ip: None,
            identity_headers: None,
            failure: None,
            permission: None,
            target,
        }
    }

    fn values<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    #[test]
    fn upstream_head_strips_every_spoofed_identity_header_and_writes_its_own() {
        let config = listener("");
        let decided = crate::policy::parse_target(b"/vms/../api?x=1", None, config.path_params)
            .expect("target");
        let client = request(
            "/vms/../api?x=1",
            &[
                ("host", "anka.example"),
                ("SSL_Client_Verify", "SUCCESS"),
                ("ssl-client-subject-dn", "CN=admin"),
                ("X-Certgate-User", "admin"),
                ("x-certgate-groups", "root"),
                ("x-forwarded-for", "10.9.9.9"),
                ("forwarded", "for=10.9.9.9"),
                ("x-http-method-override", "DELETE"),
                ("X-Forwarded-Host", "evil.example"),
                ("x-forwarded-proto", "http"),
                ("accept", "application/json"),
                ("te", "trailers"),
            ],
        );
        let info = ForwardInfo {
            config: &config,
            client_ip: "192.0.2.7".parse().ok(),
            identity_headers: None,
            failure: Some(AuthFailure::NoCertificate),
            permission: Some("list"),
            target: Some(&decided),
        };
        let req = upstream_head(&client, &info, |n| n == "te").expect("rewrite");
        // The decided target is what goes upstream, not the client's bytes.
        assert_eq!(req.uri.path(), decided.path());
        assert_eq!(req.uri.query(), Some("x=1"));
        // Nothing the client wrote under an identity name survives.
        assert!(values(&req, "ssl-client-subject-dn").is_empty());
        assert!(values(&req, "x-certgate-user").is_empty());
        assert!(values(&req, "x-certgate-groups").is_empty());
        assert!(values(&req, "x-http-method-override").is_empty());
        // Ours replace theirs.
        assert_eq!(values(&req, "ssl-client-verify"), ["NONE"]);
        assert_eq!(values(&req, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(values(&req, "x-real-ip"), ["192.0.2.7"]);
        assert_eq!(values(&req, "x-certgate-permission"), ["list"]);
        assert_eq!(values(&req, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&req, "x-forwarded-host"), ["anka.example"]);
        assert_eq!(values(&req, "forwarded").len(), 1);
        assert!(!values(&req, "forwarded")[0].contains("10.9.9.9"));
        // Everything else passes untouched, but what the engine drops.
        assert_eq!(values(&req, "accept"), ["application/json"]);
        assert!(values(&req, "te").is_empty());
        // On the wire, each header once: the client's look-alikes are gone, not added to.
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).expect("ascii");
        assert_eq!(wire.matches("x-forwarded-host: ").count(), 1, "{wire}");
        assert_eq!(wire.matches("x-forwarded-proto: ").count(), 1, "{wire}");
        assert!(!wire.contains("evil.example"), "{wire}");
    }

    #[test]
    fn upstream_head_adds_the_connection_identity_headers_once() {
        let config = listener("");
        let decided = crate::policy::parse_target(b"/", None, config.path_params).expect("target");
        let client = request("/", &[("host", "a.example"), ("X-Certgate-User", "root")]);
        let ours = [
            (
                HeaderName::from_static("x-certgate-user"),
                HeaderValue::from_static("alice"),
            ),
            (
                HeaderName::from_static("ssl-client-verify"),
                HeaderValue::from_static("SUCCESS"),
            ),
        ];
        let info = ForwardInfo {
            identity_headers: Some(&ours),
            ..anonymous(&config, Some(&decided))
        };
        let req = upstream_head(&client, &info, |_| false).expect("rewrite");
        assert_eq!(values(&req, "x-certgate-user"), ["alice"]);
        assert_eq!(values(&req, "ssl-client-verify"), ["SUCCESS"]);
        assert_eq!(values(&req, "host"), ["a.example"]);
    }

    #[test]
    fn upstream_head_passes_only_the_listed_hardening_headers() {
        let config = listener("    pass_client_headers: [X-Remote-User, X_Auth_Request_Email]\n");
        let decided = crate::policy::parse_target(b"/", None, config.path_params).expect("target");
        let client = request(
            "/",
            &[
                ("x-remote-user", "alice"),
                ("x-original-url", "/admin"),
                ("x_auth_request_email", "alice@example.com"),
                ("x-auth-request-user", "admin"),
                ("x-forwarded-prefix", "/admin"),
            ],
        );
        let info = anonymous(&config, Some(&decided));
        let req = upstream_head(&client, &info, |_| false).expect("rewrite");
        assert_eq!(values(&req, "x-remote-user"), ["alice"]);
        assert_eq!(values(&req, "x_auth_request_email"), ["alice@example.com"]);
        assert!(values(&req, "x-original-url").is_empty());
        assert!(values(&req, "x-auth-request-user").is_empty());
        assert!(values(&req, "x-forwarded-prefix").is_empty());
        assert!(values(&req, "x-certgate-permission").is_empty());
    }

    #[test]
    fn upstream_head_without_a_decided_target_forwards_nothing() {
        let config = listener("");
        let client = request("/x", &[]);
        let info = anonymous(&config, None);
        assert!(upstream_head(&client, &info, |_| false).is_err());
    }

    #[test]
    fn hop_by_hop_response_headers_stay_with_the_upstream() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("connection", "keep-alive, X-Hop, close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-hop", "secret"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ] {
            resp.append_header(n, v).unwrap();
        }
        strip_response_hop_by_hop(&mut resp);
        let mut left: Vec<_> = resp.headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "transfer-encoding", "x-kept"]);

        let mut upgrade = ResponseHeader::build(101, None).unwrap();
        upgrade.append_header("connection", "upgrade").unwrap();
        upgrade.append_header("upgrade", "websocket").unwrap();
        strip_response_hop_by_hop(&mut upgrade);
        assert_eq!(upgrade.headers.len(), 2);
    }
}
