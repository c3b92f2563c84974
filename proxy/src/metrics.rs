//! Prometheus metrics, under the names in the README's table. One registry of our own, so nothing another library puts
//! into the default registry can collide with or hide our families.

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub(crate) static REGISTRY: Lazy<Registry> = Lazy::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

pub(crate) static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_requests_total",
        "Requests answered, by listener, status code and authorization decision.",
        &["listener", "code", "decision"],
    )
});

pub(crate) static REQUEST_DURATION: Lazy<HistogramVec> = Lazy::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "certgate_request_duration_seconds",
            "Time from request header to the end of the response.",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]),
        &["listener"],
    )
    .expect("static metric definition");
    REGISTRY
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
});

pub(crate) static HANDSHAKES: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_handshakes_total",
        "TLS handshakes by result (ok/fail) and client-certificate reason.",
        &["listener", "result", "reason"],
    )
});

pub(crate) static RESUMPTIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_tls_resumptions_total",
        "TLS session resumptions offered by clients: resumed, or refused by the trust re-check (full handshake).",
        &["listener", "result"],
    )
});

pub(crate) static AUTHZ_DECISIONS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_authz_decisions_total",
        "Policy decisions by decision and the permission that made it.",
        &["listener", "decision", "permission"],
    )
});

pub(crate) static RELOADS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_reloads_total",
        "Reloads of trust material and policy, by kind and result.",
        &["kind", "result"],
    )
});

pub(crate) static CERT_NOT_AFTER: Lazy<GaugeVec> = Lazy::new(|| {
    gauge(
        "certgate_certificate_not_after_seconds",
        "notAfter of the server certificates and client CAs, unix seconds.",
        &["kind", "subject"],
    )
});

pub(crate) static CRL_NEXT_UPDATE: Lazy<GaugeVec> = Lazy::new(|| {
    gauge(
        "certgate_crl_next_update_seconds",
        "nextUpdate of each loaded CRL, unix seconds.",
        &["issuer"],
    )
});

/// `certgate_crl_uncovered_total{issuer}`: certificates checked whose issuer had no CRL.
pub(crate) static CRL_UNCOVERED: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_crl_uncovered_total",
        "Client certificates checked whose issuer had no loaded CRL (refused under tls.crl_check chain or leaf).",
        &["issuer"],
    )
});

/// `certgate_crl_fetches_total{url,result}`: `ok`, `not_modified` or `error`.
pub(crate) static CRL_FETCHES: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_crl_fetches_total",
        "CRL fetches by URL and result (ok, not_modified, error).",
        &["url", "result"],
    )
});

/// `certgate_ocsp_requests_total{listener,result}`: `good`, `revoked`, `unknown`, `error`,
/// `cached`.
pub(crate) static OCSP_REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_ocsp_requests_total",
        "OCSP answers for client certificates by listener and result (good, revoked, unknown, error, cached).",
        &["listener", "result"],
    )
});

pub(crate) static CLIENT_CERT_EXPIRY: Lazy<GaugeVec> = Lazy::new(|| {
    gauge(
        "certgate_client_cert_expiry_seconds",
        "Earliest notAfter (unix seconds) of the client certificates of a group seen on a listener in the last 24 h.",
        &["listener", "group"],
    )
});

pub(crate) static UPSTREAM_ERRORS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_upstream_errors_total",
        "Failures talking to the upstream, by kind.",
        &["listener", "kind"],
    )
});

pub(crate) static CONNECTIONS_ACTIVE: Lazy<IntGaugeVec> = Lazy::new(|| {
    let g = IntGaugeVec::new(
        Opts::new(
            "certgate_connections_active",
            "Client connections open now.",
        ),
        &["listener"],
    )
    .expect("static metric definition");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
});

pub(crate) static CONNECTIONS_REFUSED: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_connections_refused_total",
        "Connections closed before TLS: limits and PROXY protocol.",
        &["listener", "reason"],
    )
});

pub(crate) static READY: Lazy<prometheus::IntGauge> = Lazy::new(|| {
    let g = prometheus::IntGauge::new(
        "certgate_ready",
        "1 when /readyz answers 200, else 0 (set at each scrape).",
    )
    .expect("static metric definition");
    REGISTRY
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
});

pub(crate) static TUNNELS_CLOSED: Lazy<IntCounterVec> = Lazy::new(|| {
    counter(
        "certgate_tunnels_closed_total",
        "Upgraded connections (WebSocket) closed because a reload withdrew their access.",
        &["listener", "reason"],
    )
});

/// Touches every family so a scrape shows them all from the start (dashboards and alerts can
/// tell "zero" from "missing").
pub(crate) fn init() {
    Lazy::force(&REQUESTS);
    Lazy::force(&REQUEST_DURATION);
    Lazy::force(&HANDSHAKES);
    Lazy::force(&AUTHZ_DECISIONS);
    Lazy::force(&RELOADS);
    Lazy::force(&CERT_NOT_AFTER);
    Lazy::force(&CRL_NEXT_UPDATE);
    Lazy::force(&CLIENT_CERT_EXPIRY);
    Lazy::force(&UPSTREAM_ERRORS);
    Lazy::force(&CONNECTIONS_ACTIVE);
    Lazy::force(&CONNECTIONS_REFUSED);
    Lazy::force(&READY);
    Lazy::force(&TUNNELS_CLOSED);
    for kind in ReloadKind::ALL {
        for result in ["ok", "error"] {
            RELOADS.with_label_values(&[kind.label(), result]);
        }
    }
}

/// Zero series for a listener, so every family is present from the first scrape.
pub(crate) fn init_listener(name: &str) {
    for kind in UpstreamError::ALL {
        UPSTREAM_ERRORS.with_label_values(&[name, kind.label()]);
    }
    CONNECTIONS_ACTIVE.with_label_values(&[name]);
    REQUEST_DURATION.with_label_values(&[name]);
}

/// Why a request could not be proxied to the upstream: `certgate_upstream_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    ConnectRefused,
    ConnectTimeout,
    /// Reading from or writing to the upstream timed out.
    Timeout,
    ConnectError,
    /// The upstream closed the connection or answered something that is not HTTP.
    Protocol,
    /// No free upstream slot within the connect timeout.
    Busy,
    /// The client had `limits.upstream_per_client` requests at the upstream for the whole
    /// connect timeout.
    BusyClient,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 7] = [
        UpstreamError::ConnectRefused,
        UpstreamError::ConnectTimeout,
        UpstreamError::Timeout,
        UpstreamError::ConnectError,
        UpstreamError::Protocol,
        UpstreamError::Busy,
        UpstreamError::BusyClient,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused => "connect_refused",
            UpstreamError::ConnectTimeout => "connect_timeout",
            UpstreamError::Timeout => "timeout",
            UpstreamError::ConnectError => "connect_error",
            UpstreamError::Protocol => "protocol",
            UpstreamError::Busy => "busy",
            UpstreamError::BusyClient => "busy_client",
        }
    }
}

/// The kinds of file a reload counts, `certgate_reloads_total{kind}`. Ordered as their labels
/// sort, so a set of kinds lists them alphabetically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ReloadKind {
    Ca,
    Cert,
    Crl,
    Policy,
    /// `tls.session_ticket_keys`.
    TicketKeys,
}

impl ReloadKind {
    pub(crate) const ALL: [ReloadKind; 5] = [
        ReloadKind::Ca,
        ReloadKind::Cert,
        ReloadKind::Crl,
        ReloadKind::Policy,
        ReloadKind::TicketKeys,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            ReloadKind::Ca => "ca",
            ReloadKind::Cert => "cert",
            ReloadKind::Crl => "crl",
            ReloadKind::Policy => "policy",
            ReloadKind::TicketKeys => "ticket_keys",
        }
    }
}

impl serde::Serialize for ReloadKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// The text exposition of every family.
pub(crate) fn render() -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding our own well-formed families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut out);
    out
}
