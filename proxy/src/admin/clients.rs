//! `GET /clients`: the client certificates seen, soonest expiry first, with the filters
//! `expiring_within=<duration>` and `group=<name>` (combinable).

use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::state::inventory::ClientView;
use crate::state::Inventory;
use crate::time::{now_unix, unix_rfc3339};

/// What a `/clients` query keeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Certificates whose notAfter is at most this far from now (already expired included).
    pub expiring_within: Option<Duration>,
    pub group: Option<String>,
}

/// Why a `/clients` query was refused; the text is the 400 answer's `reason`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterError {
    #[error("{0}: the value is not UTF-8")]
    NotUtf8(String),
    #[error("expiring_within: `{value}` is not a duration ({reason}); write e.g. 7d, 36h or 30m")]
    NotADuration { value: String, reason: String },
    #[error("group: give a group name, e.g. group=DevOps")]
    EmptyGroup,
    #[error("unknown parameter `{0}`; use expiring_within=<duration> and/or group=<name>")]
    UnknownParameter(String),
}

impl Filter {
    /// Reads the query string; the error says which parameter is wrong and how to write it.
    pub(crate) fn parse(query: Option<&str>) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(&value.replace('+', " "))
                .decode_utf8()
                .map_err(|_| FilterError::NotUtf8(key.to_string()))?
                .into_owned();
            match key {
                "expiring_within" => {
                    let d = humantime::parse_duration(value.trim()).map_err(|e| {
                        FilterError::NotADuration {
                            reason: e.to_string(),
                            value: value.clone(),
                        }
                    })?;
                    f.expiring_within = Some(d);
                }
                "group" if value.is_empty() => return Err(FilterError::EmptyGroup),
                "group" => f.group = Some(value),
                other => return Err(FilterError::UnknownParameter(other.to_string())),
            }
        }
        Ok(f)
    }

    fn keeps(&self, c: &ClientView, now: i64) -> bool {
        let within = self.expiring_within.is_none_or(|d| {
            c.not_after.saturating_sub(now) <= i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
        });
        let group = self
            .group
            .as_ref()
            .is_none_or(|g| c.groups.iter().any(|cg| cg == g));
        within && group
    }
}

fn ms_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The `/clients` body for `filter`.
pub(crate) fn clients(inventory: &Inventory, filter: &Filter) -> Value {
    let now = now_unix();
    let list: Vec<Value> = inventory
        .list()
        .into_iter()
        .filter(|c| filter.keeps(c, now))
        .map(|c| {
            json!({
                "fingerprint": c.fingerprint,
                "user": c.user,
                "groups": c.groups,
                "issuer": c.issuer,
                "serial": c.serial,
                "not_after": unix_rfc3339(c.not_after),
                "not_after_unix": c.not_after,
                "days_left": (c.not_after - now).div_euclid(86_400),
                "first_seen": ms_rfc3339(c.first_seen_ms),
                "last_seen": ms_rfc3339(c.last_seen_ms),
                "requests": c.requests,
                "last_listener": &*c.last_listener,
            })
        })
        .collect();
    json!({"count": list.len(), "clients": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_bad_ones_say_how_to_write_them() {
        let f = Filter::parse(Some("expiring_within=7d&group=Dev%20Ops")).unwrap();
        assert_eq!(f.expiring_within, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(f.group.as_deref(), Some("Dev Ops"));
        assert_eq!(Filter::parse(None).unwrap(), Filter::default());
        let soon = Filter::parse(Some("expiring_within=soon")).unwrap_err();
        assert!(matches!(soon, FilterError::NotADuration { .. }));
        assert!(soon
            .to_string()
            .starts_with("expiring_within: `soon` is not a duration ("));
        assert!(soon.to_string().ends_with("); write e.g. 7d, 36h or 30m"));
        assert_eq!(
            Filter::parse(Some("user=x")).unwrap_err().to_string(),
            "unknown parameter `user`; use expiring_within=<duration> and/or group=<name>"
        );
        assert_eq!(
            Filter::parse(Some("group=")).unwrap_err().to_string(),
            "group: give a group name, e.g. group=DevOps"
        );
        assert_eq!(
            Filter::parse(Some("group=%FF")).unwrap_err().to_string(),
            "group: the value is not UTF-8"
        );
    }
}
