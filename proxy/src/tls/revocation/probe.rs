//! `certgate check`: each CRL URL a listener would fetch, asked once now, and whether what it
//! answers would be accepted; the OCSP settings. A URL that does not answer is a warning, as
//! it is at start (not fatal; `/readyz` waits for it).

use crate::config::{CrlCheck, HttpUrl, OcspMode, TlsConfig};
use crate::tls::dn::rfc2253;

use super::admit::{admit, CheckedLater};
use super::{discover, fetch};

/// The lines `check` prints for `tls`, each with whether it is a warning. `crl_issuers` are
/// the issuers of the CRL files loaded.
pub fn report(
    tls: &TlsConfig,
    ca_certs: &[openssl::x509::X509],
    crl_issuers: &[String],
) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut covered: Vec<String> = crl_issuers.to_vec();
    if let Some(f) = &tls.crl_fetch {
        let mut urls: Vec<(HttpUrl, &str)> =
            f.urls.iter().map(|u| (u.clone(), "configured")).collect();
        if f.from_certificates {
            for ca in ca_certs {
                for u in discover::cdp_urls(ca) {
                    if !urls.iter().any(|(x, _)| *x == u) {
                        urls.push((u, "CDP of a client CA"));
                    }
                }
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        for (url, origin) in urls {
            let answer = match (&rt, fetch::client()) {
                (Ok(rt), Ok(client)) => rt
                    .block_on(fetch::get(
                        &client,
                        &url,
                        None,
                        None,
                        f.timeout,
                        f.max_bytes,
                    ))
                    .map_err(|e| e.to_string()),
                (Err(e), _) => Err(e.to_string()),
                (_, Err(e)) => Err(e.to_string()),
            };
            out.push(match answer {
                Ok(fetch::Fetched::Body { bytes, .. }) => match admit(&bytes, &[], &CheckedLater) {
                    Ok(held) => {
                        covered.extend(held.iter().map(|h| h.issuer.clone()));
                        (
                        false,
                        format!(
                            "CRL URL {url} ({origin}): answers, {} bytes, issuer {}, {} revoked, nextUpdate {}",
                            bytes.len(),
                            held.iter().map(|h| h.issuer.as_str()).collect::<Vec<_>>().join(" + "),
                            held.iter().map(|h| h.revoked).sum::<usize>(),
                            held.iter().filter_map(|h| h.next_update).min()
                                .map(crate::time::unix_rfc3339)
                                .unwrap_or_else(|| "(none)".into())
                        ),
                    )},
                    Err(e) => (true, format!("CRL URL {url} ({origin}): answers, but the body is refused: {e}")),
                },
                Ok(fetch::Fetched::NotModified) => (true, format!("CRL URL {url} ({origin}): answered 304 to an unconditional request")),
                Err(e) => (true, format!("CRL URL {url} ({origin}): does not answer ({e}); certgate starts without it, /readyz waits for it")),
            });
        }
        if let Some(dir) = &f.cache_dir {
            out.push((false, format!("CRL cache: {}", dir.display())));
        }
    }
    out.extend(coverage(tls, ca_certs, &covered));
    if tls.ocsp.mode != OcspMode::Off {
        out.push((
            false,
            format!(
                "OCSP: {} mode, responder {}, timeout {:?}, max_age {:?}",
                if tls.ocsp.mode == OcspMode::Hard {
                    "hard"
                } else {
                    "soft"
                },
                tls.ocsp
                    .responder
                    .as_ref()
                    .map_or("from each certificate's AIA", HttpUrl::as_str),
                tls.ocsp.timeout,
                tls.ocsp.max_age
            ),
        ));
    }
    out
}

/// What `tls.crl_check` will refuse, as far as the files and URLs tell before any client comes.
fn coverage(
    tls: &TlsConfig,
    ca_certs: &[openssl::x509::X509],
    covered: &[String],
) -> Vec<(bool, String)> {
    let Some(check) = tls.crl_check else {
        if tls.client_ca.is_some() {
            return vec![(
                true,
                "no revocation source is configured (tls.crl, tls.crl_fetch or tls.ocsp): revoked client certificates are accepted".into(),
            )];
        }
        return Vec::new();
    };
    let mode = match check {
        CrlCheck::Chain => "chain",
        CrlCheck::Leaf => "leaf",
        CrlCheck::Available => return Vec::new(),
    };
    let discovered = tls.crl_fetch.as_ref().is_some_and(|f| f.from_certificates);
    let ocsp = tls.ocsp.mode != OcspMode::Off;
    let mut out = Vec::new();
    for ca in ca_certs {
        let dn = rfc2253(ca.subject_name());
        if covered.contains(&dn) {
            continue;
        }
        let mut line = format!(
            "client CA {dn} has no CRL (no tls.crl file and no crl_fetch URL that answers with one): under crl_check: {mode} the certificates it issues are refused with `revocation status unknown`; add its CRL"
        );
        if ocsp {
            line.push_str(" (leaf certificates it issues directly are covered by OCSP)");
        }
        if discovered {
            line.push_str(", or rely on from_certificates (clients are refused until the CRL their certificate names has loaded)");
        }
        if check == CrlCheck::Leaf {
            line.push_str("; under leaf only its leaf certificates need it");
        }
        out.push((true, line));
    }
    out.push((
        false,
        format!("revocation coverage: crl_check: {mode}; intermediates that clients send (not in client_ca) need their CRL too, and show in /status uncovered_issuers when it is missing"),
    ));
    out
}
