//! What the upstream receives: the request with every spoofable identity header removed and
//! ours added (contract §5). The upstream trusts these headers completely, so removal happens
//! for every spelling, whatever dialects are configured.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::ListenerConfig;
use crate::policy::GroupAttribute;
use crate::proxy::dialects::{dialect_headers, is_spoofable, ClientVerify};
use crate::tls::identity::Identity;
use crate::tls::verify::AuthFailure;

pub struct ForwardInfo<'a> {
    pub config: &'a ListenerConfig,
    pub client_ip: Option<IpAddr>,
    /// The verified identity's headers ([`identity_headers`], built once per connection).
    pub identity_headers: Option<&'a [(HeaderName, HeaderValue)]>,
    pub failure: Option<AuthFailure>,
    pub permission: Option<&'a str>,
    pub forward_path: Option<&'a str>,
}

/// Everything the upstream learns about a verified client: `x-certgate-user`,
/// `x-certgate-groups` and the configured dialects. The same for every request of a connection
/// (until a policy reload changes `group_attribute`), so the proxy builds it once per connection.
pub fn identity_headers(
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
pub fn groups_rfc2253(identity: &Identity, attribute: Option<GroupAttribute>) -> &[String] {
    match attribute.unwrap_or(GroupAttribute::O) {
        GroupAttribute::O => &identity.organizations_rfc2253,
        GroupAttribute::Ou => &identity.org_units_rfc2253,
        GroupAttribute::OuElseO if !identity.org_units_rfc2253.is_empty() => {
            &identity.org_units_rfc2253
        }
        GroupAttribute::OuElseO => &identity.organizations_rfc2253,
    }
}

pub fn rewrite_request(req: &mut RequestHeader, info: &ForwardInfo<'_>) -> pingora::Result<()> {
    let spoofed: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| is_spoofable(name.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        req.remove_header(&name);
    }

    if let Some(path) = info.forward_path {
        if req.uri.path_and_query().map(|pq| pq.as_str()) != Some(path) {
            let uri = http::Uri::builder()
                .path_and_query(path)
                .build()
                .map_err(|e| {
                    pingora::Error::because(pingora::ErrorType::InternalError, "normalised path", e)
                })?;
            req.set_uri(uri);
        }
    }

    // HTTP/2 clients send :authority instead of Host; an HTTP/1.1 upstream needs Host.
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()));
    if let Some(host) = &host {
        if req.headers.get(http::header::HOST).is_none() {
            req.insert_header(http::header::HOST, host.as_str())?;
        }
        req.insert_header("x-forwarded-host", host.as_str())?;
    }
    if let Some(ip) = info.client_ip {
        let ip = ip.to_canonical().to_string();
        req.insert_header("x-forwarded-for", ip.as_str())?;
        req.insert_header("x-real-ip", ip.as_str())?;
    }
    req.insert_header("x-forwarded-proto", "https")?;

    if let Some(headers) = info.identity_headers {
        for (name, value) in headers {
            req.insert_header(name.clone(), value.clone())?;
        }
    }
    if let Some(p) = info.permission {
        req.insert_header("x-certgate-permission", p)?;
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
            req.insert_header(name, value)?;
        }
    }
    Ok(())
}
