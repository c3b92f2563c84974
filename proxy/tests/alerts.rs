//! `client_auth: required`: the client reads the alert that names why its certificate was
//! refused, in TLS 1.3 and TLS 1.2, never a connection reset (certgate shuts its side down
//! after the alert and reads what the client still sends before closing).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn curl_reads_each_alert_five_times_in_both_versions_and_never_a_reset() {
    let mut w = World::new();
    w.save_refused_clients();
    let cfg = ProxyConfig {
        client_auth: "required",
        ..ProxyConfig::new(upstream())
    };
    let p = Proxy::start(&w, &cfg);

    let (good, good_key) = w.files("good");
    assert_eq!(curl(&w, &p, Some((&good, &good_key)), &["-f"]).0, 0);

    // `-v`: curl's trace names every alert it receives ("TLS alert, certificate expired").
    const TLS13: &[&str] = &["-v", "--tlsv1.3"];
    const TLS12: &[&str] = &["-v", "--tls-max", "1.2"];
    // (who, TLS 1.3, TLS 1.2): what curl prints. Its error line names the alert, except for
    // certificate_expired in TLS 1.2, which curl 7.88 reports as "SSL certificate verification
    // failed" (it takes that alert for a problem with the server's certificate); its trace
    // line still shows the alert. TLS 1.2 has no certificate_required alert.
    let cases = [
        (
            None,
            "alert certificate required",
            "alert handshake failure",
        ),
        (Some("stranger"), "alert unknown ca", "alert unknown ca"),
        (
            Some("revoked"),
            "alert certificate revoked",
            "alert certificate revoked",
        ),
        (
            Some("expired"),
            "alert certificate expired",
            "(IN), TLS alert, certificate expired",
        ),
    ];
    let mut runs = 0;
    for (who, alert13, alert12) in cases {
        let files = who.map(|n| w.files(n));
        let who_ref = files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        for (version, alert) in [(TLS13, alert13), (TLS12, alert12)] {
            for run in 1..=5 {
                let (code, err) = curl(&w, &p, who_ref, version);
                assert_ne!(code, 0, "{who:?} {version:?} run {run} was let in");
                assert!(
                    err.contains(alert) && !err.to_lowercase().contains("reset"),
                    "{who:?} {version:?} run {run}: expected `{alert}`, no reset; curl said (exit {code}): {err}"
                );
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 40);
    // A refused handshake is counted after its alert is written: the last curl may have read
    // its alert (and exited) before the count. Wait for all 40, then check there are no more.
    let m = wait_for(
        "the 40 refused handshakes counted",
        Duration::from_secs(15),
        || {
            let m = p.metrics();
            (metric(&m, "certgate_handshakes_total", &[("result", "fail")]) >= 40.0).then_some(m)
        },
    );
    assert_eq!(
        metric(&m, "certgate_handshakes_total", &[("result", "fail")]),
        40.0,
        "{m}"
    );
}
