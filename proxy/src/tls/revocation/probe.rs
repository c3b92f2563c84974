//! `certgate check`: each CRL URL a listener would fetch, asked once now, and whether what it
//! answers would be accepted; the OCSP settings. A URL that does not answer is a warning, as
//! it is at start (not fatal; `/readyz` waits for it).

use crate::config::{OcspMode, TlsConfig};

use super::{discover, fetch, schedule};

/// The lines `check` prints for `tls`, each with whether it is a warning.
pub fn report(tls: &TlsConfig, ca_certs: &[openssl::x509::X509]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    if let Some(f) = &tls.crl_fetch {
        let mut urls: Vec<(String, &str)> =
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
                Ok(fetch::Fetched::Body { bytes, .. }) => match schedule::facts(&bytes) {
                    Ok(facts) => (
                        false,
                        format!(
                            "CRL URL {url} ({origin}): answers, {} bytes, issuer {}, {} revoked, nextUpdate {}",
                            bytes.len(),
                            facts.issuers.join(" + "),
                            facts.revoked,
                            facts
                                .next_update
                                .map(crate::time::unix_rfc3339)
                                .unwrap_or_else(|| "(none)".into())
                        ),
                    ),
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
                    .as_deref()
                    .unwrap_or("from each certificate's AIA"),
                tls.ocsp.timeout,
                tls.ocsp.max_age
            ),
        ));
    }
    out
}
