//! What the last reload did, as `/status` shows it, and the words it is told in: the cause that
//! set it off and the kinds of file it reloaded.

use serde::{Serialize, Serializer};

/// What set a reload off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    FileChange,
    /// The operator asked: every kind counts as reloaded, changed or not, so the metric and
    /// `/status` show that the signal arrived.
    Sighup,
}

impl Cause {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Cause::FileChange => "file change",
            Cause::Sighup => "SIGHUP",
        }
    }
}

impl Serialize for Cause {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// The kinds of file a reload counts; the metric's label vocabulary.
pub(crate) use crate::metrics::ReloadKind as Kind;

/// The outcome of the last reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum ReloadStatus {
    /// None since the start.
    #[default]
    Never,
    Ok {
        at: String,
        cause: Cause,
        kinds: Vec<Kind>,
    },
    /// Rejected: the previous state kept serving.
    Failed {
        at: String,
        cause: Cause,
        kinds: Vec<Kind>,
        error: String,
    },
}

impl ReloadStatus {
    pub(crate) fn failed(&self) -> bool {
        matches!(self, ReloadStatus::Failed { .. })
    }
}

/// `/status` shows every field, null while there was no reload.
#[derive(Serialize)]
struct Shown<'a> {
    at: Option<&'a str>,
    cause: Option<Cause>,
    result: Option<&'static str>,
    kinds: &'a [Kind],
    error: Option<&'a str>,
}

impl Serialize for ReloadStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let shown = match self {
            ReloadStatus::Never => Shown {
                at: None,
                cause: None,
                result: None,
                kinds: &[],
                error: None,
            },
            ReloadStatus::Ok { at, cause, kinds } => Shown {
                at: Some(at),
                cause: Some(*cause),
                result: Some("ok"),
                kinds,
                error: None,
            },
            ReloadStatus::Failed {
                at,
                cause,
                kinds,
                error,
            } => Shown {
                at: Some(at),
                cause: Some(*cause),
                result: Some("error"),
                kinds,
                error: Some(error),
            },
        };
        shown.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_keeps_its_fields_in_every_state() {
        let never = serde_json::to_value(ReloadStatus::Never).unwrap();
        assert_eq!(
            never,
            serde_json::json!({"at": null, "cause": null, "result": null, "kinds": [], "error": null})
        );
        let ok = ReloadStatus::Ok {
            at: "2026-11-29T00:00:00Z".into(),
            cause: Cause::Sighup,
            kinds: vec![Kind::Ca, Kind::Policy],
        };
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"at": "2026-11-29T00:00:00Z", "cause": "SIGHUP", "result": "ok", "kinds": ["ca", "policy"], "error": null})
        );
        let failed = ReloadStatus::Failed {
            at: "t".into(),
            cause: Cause::FileChange,
            kinds: vec![Kind::Crl],
            error: "listener l: bad".into(),
        };
        assert!(failed.failed() && !ok.failed());
        assert_eq!(
            serde_json::to_value(&failed).unwrap()["result"],
            serde_json::json!("error")
        );
    }

    #[test]
    fn kinds_sort_as_their_labels() {
        let mut kinds = Kind::ALL;
        kinds.reverse();
        kinds.sort();
        let labels: Vec<_> = kinds.iter().map(|k| k.label()).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        assert_eq!(labels, sorted);
    }
}
