//! `tls.ocsp`: the revocation status of a client's leaf certificate, asked of its CA's OCSP
//! responder with OpenSSL's OCSP types (request, response, signature and validity checks).
//!
//! Decided on each request, never inside the TLS handshake: OpenSSL's verify callback is
//! synchronous and must not wait for the network on the event loop. A connection's first
//! request waits (asynchronously) for the answer, so a refused certificate never reaches the
//! upstream; later requests find it in the cache. Answers are cached per (issuer, serial) until
//! their nextUpdate, at most `max_age`, and one query per certificate is in flight however many
//! connections ask. When a cached answer has expired the next request asks again, so a
//! revocation reaches open connections within `max_age`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use once_cell::sync::OnceCell;
use openssl::asn1::{Asn1GeneralizedTimeRef, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Ref, X509};

use super::fetch::FetchError;
use crate::config::{HttpUrl, OcspConfig, OcspMode};
use crate::metrics::OCSP_REQUESTS;
use crate::time::{asn1_unix, now_unix};
use crate::tls::trust::sha256_der;
use crate::tls::verify::AuthFailure;

/// How long an answer that is not `good` or `revoked` (unknown, an error, no responder) is
/// kept, and never longer than `max_age`: long enough that a dead responder does not cost
/// every request a timeout, short enough that `hard` mode recovers soon after the responder
/// does.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Slack for the responder's clock when checking thisUpdate/nextUpdate.
const CLOCK_SKEW_SECS: u32 = 300;
/// Cached answers kept at most; past it expired ones are dropped, then all.
const MAX_ENTRIES: usize = 100_000;
/// The largest OCSP response read.
const MAX_RESPONSE: u64 = 256 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked,
    Unknown,
    Error,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Revoked => "revoked",
            Status::Unknown => "unknown",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Answer {
    status: Status,
    expires: Instant,
}

type Key = ([u8; 32], Vec<u8>);
type Flight = Arc<tokio::sync::OnceCell<Answer>>;

#[derive(Default)]
struct Cache {
    answers: HashMap<Key, Answer>,
    in_flight: HashMap<Key, Flight>,
    hits: u64,
    misses: u64,
}

/// What OCSP keeps between handshakes and requests: the cached answers and queries in flight,
/// shared by every listener (a certificate is asked about once however many connections or
/// listeners see it), the HTTP client that asks, and the runtime queries run on once
/// [`super::Revocation::spawn`] started it. Part of the process's [`super::Revocation`], which
/// hands it to the acceptors, the proxies and `/status`.
#[derive(Default)]
pub struct Ocsp {
    cache: Mutex<Cache>,
    runtime: OnceCell<tokio::runtime::Handle>,
    /// Built on the first query (or the reason it could not be, given to every query).
    client: OnceCell<Result<reqwest::Client, Arc<FetchError>>>,
}

impl Ocsp {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queries run on `runtime` from now on (set once; before, a request's own task asks).
    pub fn set_runtime(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// `/status` → `ocsp`: cache size and hit rate.
    pub fn status_json(&self) -> serde_json::Value {
        let c = self.cache();
        let total = c.hits + c.misses;
        serde_json::json!({
            "cached_answers": c.answers.len(),
            "in_flight": c.in_flight.len(),
            "hits": c.hits,
            "misses": c.misses,
            "hit_rate": if total == 0 { 0.0 } else { c.hits as f64 / total as f64 },
        })
    }

    /// The verdict for the chain (leaf first, then its issuer) of a request on `listener`.
    pub async fn check(
        &self,
        listener: &str,
        cfg: &OcspConfig,
        chain: &[X509],
    ) -> Result<(), AuthFailure> {
        if cfg.mode == OcspMode::Off {
            return Ok(());
        }
        let status = match chain {
            [leaf, issuer, ..] => self.status_of(listener, cfg, leaf, issuer).await,
            // A leaf that is itself a trust anchor has no issuer to ask about it.
            _ => Status::Unknown,
        };
        verdict(status, cfg.mode)
    }

    /// In the handshake, where nothing may wait: the cached verdict for `leaf` if there is a
    /// fresh one (`None` otherwise). A miss starts the query in the background, so the connection's
    /// first request usually finds the answer ready.
    pub fn handshake_verdict(
        self: &Arc<Self>,
        listener: &Arc<str>,
        cfg: &OcspConfig,
        leaf: &X509Ref,
        issuer: &X509Ref,
    ) -> Option<Result<(), AuthFailure>> {
        let key: Key = (sha256_der(issuer), serial_of(leaf));
        let cached = self.cache().answers.get(&key).copied();
        match cached {
            Some(a) if a.expires > Instant::now() => Some(verdict(a.status, cfg.mode)),
            _ => {
                if let Some(rt) = self.runtime.get() {
                    let (listener, cfg) = (listener.clone(), cfg.clone());
                    let (leaf, issuer) = (leaf.to_owned(), issuer.to_owned());
                    let ocsp = self.clone();
                    rt.spawn(async move { ocsp.status_of(&listener, &cfg, &leaf, &issuer).await });
                }
                None
            }
        }
    }
}

fn verdict(status: Status, mode: OcspMode) -> Result<(), AuthFailure> {
    match (status, mode) {
        (_, OcspMode::Off) | (Status::Good, _) => Ok(()),
        (Status::Revoked, _) => Err(AuthFailure::Revoked),
        (_, OcspMode::Hard) => Err(AuthFailure::RevocationUnknown),
        _ => Ok(()),
    }
}

fn serial_of(cert: &X509Ref) -> Vec<u8> {
    cert.serial_number()
        .to_bn()
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

impl Ocsp {
    /// The HTTP client queries use, built once.
    fn client(&self) -> Result<reqwest::Client, Arc<FetchError>> {
        self.client
            .get_or_init(|| super::fetch::client().map_err(Arc::new))
            .clone()
    }

    async fn status_of(
        &self,
        listener: &str,
        cfg: &OcspConfig,
        leaf: &X509,
        issuer: &X509,
    ) -> Status {
        let key: Key = (sha256_der(issuer), serial_of(leaf));
        let flight = {
            let mut c = self.cache();
            if let Some(a) = c.answers.get(&key).copied() {
                if a.expires > Instant::now() {
                    c.hits += 1;
                    drop(c);
                    OCSP_REQUESTS.with_label_values(&[listener, "cached"]).inc();
                    return a.status;
                }
            }
            c.misses += 1;
            c.in_flight.entry(key.clone()).or_default().clone()
        };
        let mut asked = false;
        let answer = *flight
        .get_or_init(|| {
            asked = true;
            let (cfg, leaf, issuer) = (cfg.clone(), leaf.clone(), issuer.clone());
            let listener = listener.to_string();
            async move {
                let client = self.client();
                let run = async move {
                    let status = match client {
                        Ok(client) => query(&client, &cfg, &leaf, &issuer).await,
                        Err(e) => Err(QueryError::Client(e)),
                    };
                    let (status, ttl) = match status {
                        Ok((s, ttl)) => (s, ttl),
                        Err(e) => {
                            tracing::warn!(listener, serial = %hex::encode(serial_of(&leaf)), error = %e, mode = ?cfg.mode, "OCSP: no answer");
                            (Status::Error, NEGATIVE_TTL.min(cfg.max_age))
                        }
                    };
                    if status == Status::Unknown {
                        tracing::warn!(listener, mode = ?cfg.mode, "OCSP: the responder does not know the certificate");
                    }
                    OCSP_REQUESTS
                        .with_label_values(&[&listener, status.label()])
                        .inc();
                    Answer {
                        status,
                        expires: Instant::now() + ttl,
                    }
                };
                // On the revocation runtime: the query outlives a request that gives up.
                match self.runtime.get() {
                    Some(h) => h.spawn(run).await.unwrap_or(Answer {
                        status: Status::Error,
                        expires: Instant::now(),
                    }),
                    None => run.await,
                }
            }
        })
        .await;
        if !asked {
            OCSP_REQUESTS.with_label_values(&[listener, "cached"]).inc();
        }
        let mut c = self.cache();
        if c.in_flight
            .get(&key)
            .is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            c.in_flight.remove(&key);
            if c.answers.len() >= MAX_ENTRIES {
                let now = Instant::now();
                c.answers.retain(|_, a| a.expires > now);
                if c.answers.len() >= MAX_ENTRIES {
                    c.answers.clear();
                }
            }
            c.answers.insert(key, answer);
        }
        answer.status
    }
}

/// The responder to ask: the configured one, else the leaf's AIA OCSP URL.
fn responder(cfg: &OcspConfig, leaf: &X509Ref) -> Option<HttpUrl> {
    cfg.responder.clone().or_else(|| {
        leaf.ocsp_responders()
            .ok()?
            .iter()
            .find_map(|s| HttpUrl::parse(s).ok())
    })
}

fn generalized_unix(t: &Asn1GeneralizedTimeRef) -> i64 {
    // SAFETY: ASN1_GENERALIZEDTIME and ASN1_TIME are the same C type (ASN1_STRING); OpenSSL's
    // time functions take either. The reference lives as long as `t`.
    let t = unsafe { Asn1TimeRef::from_ptr(t.as_ptr() as *mut openssl_sys::ASN1_TIME) };
    asn1_unix(t)
}

/// Why a query gave no answer; its text is the `error` of the "OCSP: no answer" log line.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no responder: set tls.ocsp.responder or issue certificates with an AIA OCSP URL")]
    NoResponder,
    /// Building the request (cert ID, nonce, DER) failed in OpenSSL.
    #[error("{0}")]
    Request(#[from] openssl::error::ErrorStack),
    #[error("cannot add a nonce: {0}")]
    Nonce(openssl::error::ErrorStack),
    /// The shared HTTP client could not be built.
    #[error("{0}")]
    Client(Arc<FetchError>),
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: HttpUrl, timeout: Duration },
    #[error("{url}: {source}")]
    Fetch {
        url: HttpUrl,
        source: super::fetch::FetchError,
    },
    #[error("{url}: {source}")]
    Answer { url: HttpUrl, source: AnswerError },
}

/// Why a response is not taken as an answer.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("not an OCSP response ({0})")]
    NotOcsp(openssl::error::ErrorStack),
    #[error("responder status {0}")]
    ResponderStatus(libc::c_int),
    #[error("no basic response ({0})")]
    NoBasic(openssl::error::ErrorStack),
    /// Building the store to verify against failed in OpenSSL.
    #[error("{0}")]
    Store(#[from] openssl::error::ErrorStack),
    #[error("the response does not verify against the issuer ({0})")]
    Signature(openssl::error::ErrorStack),
    #[error("the response's nonce is not the request's")]
    NonceMismatch,
    #[error("the response does not cover this certificate")]
    NotCovered,
    #[error("outside its validity window ({0})")]
    Validity(openssl::error::ErrorStack),
    #[error(
        "stale answer: `good` as of {} with no nextUpdate, older than max_age ({max_age:?}); a replayed old answer is no answer",
        crate::time::unix_rfc3339(*.this_update)
    )]
    Stale { this_update: i64, max_age: Duration },
}

/// Asks the responder about `leaf` with `client` and verifies the answer: (status, how long to
/// keep it).
async fn query(
    client: &reqwest::Client,
    cfg: &OcspConfig,
    leaf: &X509,
    issuer: &X509,
) -> Result<(Status, Duration), QueryError> {
    let url = responder(cfg, leaf).ok_or(QueryError::NoResponder)?;
    let id = || OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer);
    let mut req = OcspRequest::new()?;
    req.add_id(id()?)?;
    nonce::add(&mut req).map_err(QueryError::Nonce)?;
    let body = req.to_der()?;
    let resp = match tokio::time::timeout(
        cfg.timeout,
        super::fetch::post(client, &url, "application/ocsp-request", body, MAX_RESPONSE),
    )
    .await
    {
        Err(_) => {
            return Err(QueryError::Timeout {
                url,
                timeout: cfg.timeout,
            })
        }
        Ok(Err(source)) => return Err(QueryError::Fetch { url, source }),
        Ok(Ok(resp)) => resp,
    };
    let id = id()?;
    verify(&resp, issuer, &id, Some(&req))
        .and_then(|answer| lifetime(answer, cfg.max_age, now_unix()))
        .map_err(|source| QueryError::Answer { url, source })
}

/// How long a verified answer is kept, or why it is not taken.
///
/// A response without nonce can be replayed by anyone who recorded it; one without nextUpdate
/// says nothing of how long it stays true. So such an answer lives `max_age` counted from its
/// own thisUpdate, not from when it arrived: a recorded `good` replayed later is stale, and a
/// stale `good` is no answer at all. A `revoked` is never undone by age (revocation is
/// final), it is only asked again soon.
fn lifetime(
    answer: Answered,
    max_age: Duration,
    now: i64,
) -> Result<(Status, Duration), AnswerError> {
    let max_age_secs = max_age.as_secs() as i64;
    let secs = |s: i64| Duration::from_secs(s.max(0) as u64);
    match answer.status {
        Status::Good => {
            let until = match answer.next_update {
                Some(n) => n.min(now + max_age_secs),
                None => answer.this_update + max_age_secs,
            };
            if until <= now {
                return Err(AnswerError::Stale {
                    this_update: answer.this_update,
                    max_age,
                });
            }
            Ok((Status::Good, secs(until - now)))
        }
        Status::Revoked => {
            let until = answer
                .next_update
                .map_or(now + max_age_secs, |n| n.min(now + max_age_secs));
            Ok((
                Status::Revoked,
                secs(until - now).max(NEGATIVE_TTL.min(max_age)),
            ))
        }
        s => Ok((s, NEGATIVE_TTL.min(max_age))),
    }
}

/// A verified response's word on one certificate.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub status: Status,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// Parses and verifies a response: signed by `issuer` or by a certificate it issued for
/// OCSP signing, within its validity window, about `id`.
pub fn verify(
    der: &[u8],
    issuer: &X509,
    id: &openssl::ocsp::OcspCertIdRef,
    request: Option<&OcspRequest>,
) -> Result<Answered, AnswerError> {
    let resp = OcspResponse::from_der(der).map_err(AnswerError::NotOcsp)?;
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(AnswerError::ResponderStatus(resp.status().as_raw()));
    }
    let basic = resp.basic().map_err(AnswerError::NoBasic)?;
    let mut store = X509StoreBuilder::new()?;
    store.add_cert(issuer.clone())?;
    // The issuer may be an intermediate: it is the anchor here, its own chain was verified in
    // the handshake.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
    let store = store.build();
    let mut certs = Stack::new()?;
    certs.push(issuer.clone())?;
    basic
        .verify(&certs, &store, OcspFlag::empty())
        .map_err(AnswerError::Signature)?;
    if let Some(req) = request {
        nonce::check(req, &basic)?;
    }
    let status = basic.find_status(id).ok_or(AnswerError::NotCovered)?;
    status
        .check_validity(CLOCK_SKEW_SECS, None)
        .map_err(AnswerError::Validity)?;
    let s = match status.status {
        OcspCertStatus::GOOD => Status::Good,
        OcspCertStatus::REVOKED => Status::Revoked,
        _ => Status::Unknown,
    };
    Ok(Answered {
        status: s,
        this_update: generalized_unix(status.this_update),
        next_update: status.next_update().map(generalized_unix),
    })
}

/// The request nonce (RFC 8954): OpenSSL has the functions, the openssl crate no binding.
mod nonce {
    use foreign_types::ForeignType;
    use openssl::error::ErrorStack;
    use openssl::ocsp::{OcspBasicResponse, OcspRequest};
    use openssl_sys::{OCSP_BASICRESP, OCSP_REQUEST};

    use super::AnswerError;

    extern "C" {
        fn OCSP_request_add1_nonce(
            req: *mut OCSP_REQUEST,
            val: *mut libc::c_uchar,
            len: libc::c_int,
        ) -> libc::c_int;
        fn OCSP_check_nonce(req: *mut OCSP_REQUEST, bs: *mut OCSP_BASICRESP) -> libc::c_int;
    }

    /// Adds a random 16-byte nonce.
    pub(crate) fn add(req: &mut OcspRequest) -> Result<(), ErrorStack> {
        // SAFETY: `req` is a valid OCSP_REQUEST we own; a null value with length -1 asks
        // OpenSSL for a random nonce of its default length (16 bytes), which it copies in.
        let ok = unsafe { OCSP_request_add1_nonce(req.as_ptr(), std::ptr::null_mut(), -1) };
        if ok == 1 {
            Ok(())
        } else {
            Err(ErrorStack::get())
        }
    }

    /// A responder that echoes the nonce must echo ours; one that sends none (precomputed
    /// responses, as large CAs serve) is accepted.
    pub(crate) fn check(req: &OcspRequest, basic: &OcspBasicResponse) -> Result<(), AnswerError> {
        // SAFETY: both pointers are valid, owned by the callers' handles for this call;
        // OCSP_check_nonce only reads them.
        let r = unsafe { OCSP_check_nonce(req.as_ptr(), basic.as_ptr()) };
        match r {
            0 => Err(AnswerError::NonceMismatch),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_maps_to_the_verdict_of_its_mode() {
        use AuthFailure::{RevocationUnknown, Revoked};
        for (status, soft, hard) in [
            (Status::Good, Ok(()), Ok(())),
            (Status::Revoked, Err(Revoked), Err(Revoked)),
            (Status::Unknown, Ok(()), Err(RevocationUnknown)),
            (Status::Error, Ok(()), Err(RevocationUnknown)),
        ] {
            assert_eq!(verdict(status, OcspMode::Soft), soft, "{status:?}");
            assert_eq!(verdict(status, OcspMode::Hard), hard, "{status:?}");
            assert_eq!(verdict(status, OcspMode::Off), Ok(()), "{status:?}");
        }
    }

    #[test]
    fn an_answer_without_next_update_lives_max_age_from_its_this_update() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        let good = |this_update, next_update| Answered {
            status: Status::Good,
            this_update,
            next_update,
        };
        // Fresh: lives max_age from thisUpdate, not from arrival.
        assert_eq!(
            lifetime(good(now - 600, None), hour, now).unwrap(),
            (Status::Good, Duration::from_secs(3000))
        );
        // Replayed a day later (or 30 days old): stale, no answer.
        let e = lifetime(good(now - 86_400, None), hour, now).unwrap_err();
        assert!(e.to_string().contains("stale"), "{e}");
        // With a nextUpdate: until then, at most max_age.
        assert_eq!(
            lifetime(good(now - 600, Some(now + 60)), hour, now)
                .unwrap()
                .1,
            Duration::from_secs(60)
        );
        assert_eq!(
            lifetime(good(now, Some(now + 86_400)), hour, now)
                .unwrap()
                .1,
            hour
        );
        // An old `revoked` stays revoked; failures are kept at most max_age.
        let revoked = Answered {
            status: Status::Revoked,
            ..good(now - 86_400, None)
        };
        assert_eq!(lifetime(revoked, hour, now).unwrap().0, Status::Revoked);
        let unknown = Answered {
            status: Status::Unknown,
            ..good(now, None)
        };
        let second = Duration::from_secs(1);
        assert_eq!(lifetime(unknown, second, now).unwrap().1, second);
    }

    #[test]
    fn garbage_and_unsuccessful_responses_are_refused() {
        let mut s = crate::pki::CertSpec::with_subject(&[("CN", "OCSP unit CA")]);
        s.is_ca = true;
        let ca = crate::pki::self_signed_ca(&s).unwrap();
        let leaf =
            crate::pki::issue(&crate::pki::CertSpec::with_subject(&[("CN", "l")]), &ca).unwrap();
        let id = OcspCertId::from_cert(MessageDigest::sha1(), &leaf.cert, &ca.cert).unwrap();
        let e = verify(b"<html>", &ca.cert, &id, None).unwrap_err();
        assert!(e.to_string().contains("not an OCSP response"), "{e}");
        let try_later = OcspResponse::create(OcspResponseStatus::TRY_LATER, None)
            .unwrap()
            .to_der()
            .unwrap();
        let e = verify(&try_later, &ca.cert, &id, None).unwrap_err();
        assert!(e.to_string().contains("responder status 3"), "{e}");
    }

    #[test]
    fn the_handshake_never_waits_and_a_miss_is_no_verdict() {
        let mut s = crate::pki::CertSpec::with_subject(&[("CN", "OCSP miss CA")]);
        s.is_ca = true;
        let ca = crate::pki::self_signed_ca(&s).unwrap();
        let leaf =
            crate::pki::issue(&crate::pki::CertSpec::with_subject(&[("CN", "m")]), &ca).unwrap();
        let cfg = OcspConfig {
            mode: OcspMode::Hard,
            ..OcspConfig::default()
        };
        let name: Arc<str> = Arc::from("unit");
        let ocsp = Arc::new(Ocsp::default());
        assert_eq!(
            ocsp.handshake_verdict(&name, &cfg, &leaf.cert, &ca.cert),
            None
        );
    }
}
