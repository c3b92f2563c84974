//! Parity of certgate's two forwarding engines: its own (`proxy/src/proxy/forward/`, for plain
//! HTTP/1.1 requests and HTTP/2 streams) and Pingora's `HttpProxy` (everything unusual). One
//! table of request scenarios (`scenarios.rs`) goes through all four paths, HTTP/1.1 and HTTP/2
//! × direct and fallback (the fallback forced with `Expect: 100-continue`, which
//! `forward/eligible.rs` never lets through), and what each path produced must be the same: what the upstream
//! received, what the client saw, the access log line, and the request metrics' deltas. Only
//! what names the path is left out of the comparison, each exclusion justified where it is made
//! ([`Observation::record`] for a path's own traces, [`neutral`] for what names the HTTP version).
//!
//! A difference the engines are known to have is a [`KnownDifference`]: the test asserts it is
//! still there, so it fails once the difference is fixed (and the entry is then removed).

mod client_h1;
mod client_h2;
#[path = "../common/mod.rs"]
mod common;
mod observe;
mod scenarios;
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use certgate::pki::Issued;
use client_h1::*;
use client_h2::*;
use common::recording_upstream::{Received, RecordingUpstream, EARLY_BYTES};
use common::*;
use observe::*;
use scenarios::Expect::*;
use scenarios::*;
use world::*;

/// The four ways a request crosses certgate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    H1Direct,
    H1Fallback,
    H2Direct,
    H2Fallback,
}

impl Path {
    const ALL: [Path; 4] = [
        Path::H1Direct,
        Path::H1Fallback,
        Path::H2Direct,
        Path::H2Fallback,
    ];

    fn h2(self) -> bool {
        matches!(self, Path::H2Direct | Path::H2Fallback)
    }

    fn fallback(self) -> bool {
        matches!(self, Path::H1Fallback | Path::H2Fallback)
    }

    /// The path this one is compared with: a fallback with the direct path of its HTTP
    /// version (every field), HTTP/2's direct path with HTTP/1.1's (the fields that do not
    /// name the version, see [`neutral`]).
    fn reference(self) -> Path {
        match self {
            Path::H1Direct | Path::H1Fallback | Path::H2Direct => Path::H1Direct,
            Path::H2Fallback => Path::H2Direct,
        }
    }
}

/// One field on which a path differs from its reference.
#[derive(Debug)]
struct Difference {
    scenario: &'static str,
    path: Path,
    reference: Path,
    field: String,
    theirs: String,
    ours: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {:?} vs {:?}: {}\n    {:?}: {}\n    {:?}: {}",
            self.scenario,
            self.path,
            self.reference,
            self.field,
            self.reference,
            self.theirs,
            self.path,
            self.ours
        )
    }
}

fn compare(
    scenario: &'static str,
    path: Path,
    obs: &BTreeMap<Path, Observation>,
) -> Vec<Difference> {
    let reference = path.reference();
    let (ours, theirs) = (&obs[&path].fields, &obs[&reference].fields);
    let across = path.h2() != reference.h2();
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let missing = String::from("(none)");
        let (a, b) = (
            ours.get(key).unwrap_or(&missing),
            theirs.get(key).unwrap_or(&missing),
        );
        let (na, nb) = if across {
            (neutral(key, a), neutral(key, b))
        } else {
            (Some(a.clone()), Some(b.clone()))
        };
        if na != nb {
            out.push(Difference {
                scenario,
                path,
                reference,
                field: key.clone(),
                theirs: b.clone(),
                ours: a.clone(),
            });
        }
    }
    out
}

// ---- the test ------------------------------------------------------------------------------

#[test]
fn every_scenario_is_the_same_on_all_four_paths() {
    let b = Bench::start();
    let mut unexpected = Vec::new();
    let mut seen_known = Vec::new();
    let mut report = String::new();
    for s in SCENARIOS {
        let mut obs = BTreeMap::new();
        for path in Path::ALL {
            obs.insert(path, b.run(s, path));
        }
        let reference = &obs[&Path::H1Direct].fields;
        assert_eq!(
            reference["response.status"],
            s.status.to_string(),
            "[{}] the direct HTTP/1.1 answer: {reference:#?}",
            s.name
        );
        for e in s.expect {
            let (field, holds) = match *e {
                Is(f, v) => (f, reference.get(f).is_some_and(|x| x == v)),
                Has(f, v) => (f, reference.get(f).is_some_and(|x| x.contains(v))),
                Lacks(f, v) => (f, reference.get(f).is_some_and(|x| !x.contains(v))),
            };
            assert!(
                holds,
                "[{}] the direct HTTP/1.1 path: {e:?}, got {:?}",
                s.name,
                reference.get(field)
            );
        }
        // The fallback is another engine: its upstream connections are never the direct
        // path's (each engine pools its own).
        for (direct, fallback) in [
            (Path::H1Direct, Path::H1Fallback),
            (Path::H2Direct, Path::H2Fallback),
        ] {
            let shared: Vec<_> = obs[&direct]
                .upstream_conns
                .intersection(&obs[&fallback].upstream_conns)
                .collect();
            assert!(
                shared.is_empty(),
                "[{}] {direct:?} and {fallback:?} shared upstream connections {shared:?}",
                s.name
            );
        }
        for path in [Path::H1Fallback, Path::H2Direct, Path::H2Fallback] {
            for d in compare(s.name, path, &obs) {
                report.push_str(&format!("{d}\n"));
                match KNOWN
                    .iter()
                    .position(|k| k.scenario == s.name && k.path == path && k.covers(&d.field))
                {
                    Some(i) => seen_known.push(i),
                    None => unexpected.push(d.to_string()),
                }
            }
        }
        if std::env::var_os("CERTGATE_PARITY_DUMP").is_some() {
            for (path, o) in &obs {
                eprintln!("=== [{}] {path:?}", s.name);
                for (k, v) in &o.fields {
                    eprintln!("  {k} = {v}");
                }
            }
        }
    }
    eprintln!("--- differences from the reference paths:\n{report}");
    let fixed: Vec<_> = KNOWN
        .iter()
        .enumerate()
        .filter(|(i, _)| !seen_known.contains(i))
        .map(|(_, k)| format!("[{}] {:?}: {}", k.scenario, k.path, k.field))
        .collect();
    assert!(
        fixed.is_empty(),
        "known differences no longer seen (fixed? remove them from KNOWN): {fixed:#?}"
    );
    assert!(
        unexpected.is_empty(),
        "the paths differ:\n{}",
        unexpected.join("\n")
    );
}
