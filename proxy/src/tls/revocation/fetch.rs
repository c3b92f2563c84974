//! One HTTP(S) GET of a CRL: conditional on what the last good answer said, bounded in time and
//! in size. reqwest (already certgate's HTTP client in tests and tools) on the revocation
//! runtime, with its native-tls backend: OpenSSL, which certgate links anyway, verifying
//! https:// servers against the system roots.

use std::time::Duration;

use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use crate::config::HttpUrl;

/// What a fetch gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A 200 body within the size limit, with the validators to send next time.
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// 304: what we hold is still current.
    NotModified,
}

/// Why a fetch gave nothing usable. Logged with the URL and shown in `/status` as its text.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the body is {len} bytes, over max_bytes ({max})")]
    DeclaredTooLarge { len: u64, max: u64 },
    #[error("the body is over max_bytes ({0})")]
    TooLarge(u64),
    /// The connection, TLS or the HTTP exchange failed: reqwest's message with its causes.
    #[error("{0}")]
    Transport(String),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        FetchError::Transport(describe(&e))
    }
}

/// Redirects a CRL or OCSP fetch follows at most.
pub const MAX_REDIRECTS: usize = 3;

/// The client every fetch shares (connection reuse, one TLS configuration).
pub fn client() -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .user_agent(concat!("certgate/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect_policy())
        .build()
        .map_err(|e| FetchError::Client(describe(&e)))
}

/// A CDP behind a redirect is common (CDN, moved host), but whoever controls a CRL server must
/// not be able to make every sidecar of a fleet walk a chain of blind GETs, nor into other
/// schemes: a few redirects, http and https only.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if !matches!(attempt.url().scheme(), "http" | "https") {
            let scheme = attempt.url().scheme().to_string();
            attempt.error(format!(
                "a redirect to a `{scheme}:` URL (only http and https are followed)"
            ))
        } else {
            attempt.follow()
        }
    })
}

/// GET `url`, with `If-None-Match`/`If-Modified-Since` from the last good answer. The whole
/// exchange, body included, gets `timeout`; a body over `max_bytes` is refused as soon as it
/// says so or its bytes pass the limit.
pub async fn get(
    client: &reqwest::Client,
    url: &HttpUrl,
    etag: Option<&str>,
    last_modified: Option<&str>,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    match tokio::time::timeout(
        timeout,
        get_inner(client, url, etag, last_modified, max_bytes),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn get_inner(
    client: &reqwest::Client,
    url: &HttpUrl,
    etag: Option<&str>,
    last_modified: Option<&str>,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    let mut req = client.get(url.as_str());
    if let Some(e) = etag {
        req = req.header(IF_NONE_MATCH, e);
    }
    if let Some(lm) = last_modified {
        req = req.header(IF_MODIFIED_SINCE, lm);
    }
    let mut resp = req.send().await?;
    if resp.url().as_str() != url.as_str() {
        tracing::info!(url = url.as_str(), final_url = %resp.url(), "CRL fetch was redirected");
    }
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(FetchError::Status(status));
    }
    if let Some(len) = resp.content_length() {
        if len > max_bytes {
            return Err(FetchError::DeclaredTooLarge {
                len,
                max: max_bytes,
            });
        }
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
    let bytes = read_capped(&mut resp, max_bytes).await?;
    Ok(Fetched::Body {
        bytes,
        etag,
        last_modified,
    })
}

/// The body, refused once it passes `max_bytes`.
async fn read_capped(resp: &mut reqwest::Response, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// POST `body` (an OCSP request) and read a 200 answer of at most `max_bytes`.
pub async fn post(
    client: &reqwest::Client,
    url: &HttpUrl,
    content_type: &'static str,
    body: Vec<u8>,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut resp = client
        .post(url.as_str())
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await?;
    if resp.url().as_str() != url.as_str() {
        tracing::info!(url = url.as_str(), final_url = %resp.url(), "OCSP query was redirected");
    }
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status()));
    }
    read_capped(&mut resp, max_bytes).await
}

/// reqwest's message with its causes (the top level alone says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
