//! Clock readings and certificate times in one place, so every report, metric and check counts
//! seconds the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;

/// Seconds since the epoch, now (0 if the clock is before 1970, which nothing here relies on).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, as RFC 3339 UTC to the second (`/status` and logs).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A unix time as RFC 3339 UTC to the second (times before 1970 print as the epoch).
pub fn unix_rfc3339(unix: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Seconds since the epoch of an ASN.1 time, or why OpenSSL could not tell.
pub fn asn1_unix_checked(t: &Asn1TimeRef) -> Result<i64, ErrorStack> {
    let d = Asn1Time::from_unix(0)?.diff(t)?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Seconds since the epoch of an ASN.1 time already accepted by a load (0 if unreadable).
pub fn asn1_unix(t: &Asn1TimeRef) -> i64 {
    asn1_unix_checked(t).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_count_seconds_from_the_epoch() {
        let t = Asn1Time::from_unix(1_700_000_123).unwrap();
        assert_eq!(asn1_unix(&t), 1_700_000_123);
        let now = now_unix();
        assert!((asn1_unix(&Asn1Time::days_from_now(0).unwrap()) - now).abs() <= 2);
        assert!(now_rfc3339().ends_with('Z'));
    }
}
