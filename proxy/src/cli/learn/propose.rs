//! The analysis behind `certgate policy learn`: how refused paths generalise (`/vm/42` and
//! `/vm/97` are both `/vm/{id}`), who should be granted what, and whether an existing permission
//! already covers the route. Reading records is [`super::log`]'s job; writing YAML is
//! [`super::yaml`]'s.
//!
//! Whoever sends requests writes the log, so every field of a record is treated as hostile: only
//! identities that held a verified certificate are granted anything unless the operator asks for
//! anonymous grants, a route is never wider than the paths requested except through the `{id}`
//! rule, and that rule never reaches into routes of permissions the policy already has.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::log::{Grantee, Refusal};
use crate::policy::route::{Methods, Segment};
use crate::policy::{GroupAttribute, Policy, Principal, Route, UsersFrom};

/// The methods `learn` writes routes for. Anything else a client can put on the request line
/// reads differently in a route: `*` is every method, `GET|DELETE|PUT` is three, `get` is an
/// error, and an extension method is rarely what a reviewer expects to grant.
pub(super) const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// How many distinct requested paths a route's comment shows.
pub(super) const PATH_SAMPLES: usize = 3;

/// How many examples a "skipped" comment names.
const SKIP_SAMPLES: usize = 5;

/// A request as it will be written in a route: method and path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct RouteKey {
    pub path: String,
    pub method: String,
}

impl RouteKey {
    /// `METHOD /path`, the route grammar's form.
    pub(super) fn text(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The same request with its id-like segments as `{id}`.
    pub(super) fn generalized(&self) -> RouteKey {
        RouteKey {
            method: self.method.clone(),
            path: generalize(&self.path),
        }
    }
}

/// The path with empty segments (repeated and trailing slashes) removed, as a route writes it.
pub(super) fn tidy(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// Replaces id-like segments with `{id}`; see [`is_id_like`].
pub(super) fn generalize(path: &str) -> String {
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| if is_id_like(s) { "{id}" } else { s })
        .collect();
    format!("/{}", segs.join("/"))
}

/// Decimal numbers, UUIDs (8-4-4-4-12 hex digits of any version, as Anka writes its template
/// and instance ids, in either case), hex strings of 8 or more digits (a digest or object id;
/// `deadbeef` counts too: the rule is the hex shape, not whether it reads as a word), each
/// optionally followed by a file extension (`<uuid>.yaml`).
pub(super) fn is_id_like(seg: &str) -> bool {
    let core = match seg.rsplit_once('.') {
        Some((core, ext))
            if !core.is_empty()
                && (1..=8).contains(&ext.len())
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            core
        }
        _ => seg,
    };
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let decimal = !core.is_empty() && core.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = core.split('-').collect();
    let uuid = parts.len() == 5
        && parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| hex(p));
    let long_hex = core.len() >= 8 && hex(core);
    decimal || uuid || long_hex
}

/// A requested path segment that the route grammar would read as a wildcard or refuse: `*`,
/// `**`, `{name}`, or anything else with `*`, `{` or `}`.
///
/// Such a path is skipped, not proposed. The grammar has no literal spelling for these
/// characters: a route's `%2A` or `%7B` stays percent-encoded (they are not unreserved), so it
/// matches a request that wrote `%2A`, never the raw `*` this request wrote. The only routes
/// that would match the raw segment are wildcards, which match every other segment too.
pub(super) fn is_route_syntax(seg: &str) -> bool {
    seg.contains(['*', '{', '}'])
}

/// How often a (grantee, route) pair was seen, by whom, when, and on which paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Seen {
    pub count: u64,
    pub users: BTreeSet<String>,
    pub first: Option<String>,
    pub last: Option<String>,
    /// Up to [`PATH_SAMPLES`] distinct paths as requested, in the order first seen.
    pub paths: Vec<String>,
    /// More distinct paths were requested than `paths` holds.
    pub more_paths: bool,
}

fn stamp(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(t).ok()
}

fn earlier(a: &str, b: &str) -> bool {
    match (stamp(a), stamp(b)) {
        (Some(x), Some(y)) => x < y,
        _ => a < b,
    }
}

impl Seen {
    fn add(&mut self, user: Option<&str>, timestamp: Option<&str>, path: &str) {
        self.count += 1;
        if let Some(u) = user {
            self.users.insert(u.to_string());
        }
        if let Some(t) = timestamp {
            self.note_time(t);
        }
        self.note_path(path);
    }

    fn note_time(&mut self, t: &str) {
        if self.first.as_deref().is_none_or(|f| earlier(t, f)) {
            self.first = Some(t.to_string());
        }
        if self.last.as_deref().is_none_or(|l| earlier(l, t)) {
            self.last = Some(t.to_string());
        }
    }

    fn note_path(&mut self, path: &str) {
        if self.paths.iter().any(|p| p == path) {
            return;
        }
        if self.paths.len() < PATH_SAMPLES {
            self.paths.push(path.to_string());
        } else {
            self.more_paths = true;
        }
    }

    /// Adds another count of the same route (several requested paths behind one `{id}` route).
    pub(super) fn merge(&mut self, other: &Seen) {
        self.count += other.count;
        self.users.extend(other.users.iter().cloned());
        for t in other.first.iter().chain(&other.last) {
            self.note_time(t);
        }
        for p in &other.paths {
            self.note_path(p);
        }
        self.more_paths |= other.more_paths;
    }
}

/// Refusals left out before any route is considered, with a few examples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Skipped {
    pub count: u64,
    /// Up to a few distinct examples.
    pub examples: Vec<String>,
}

impl Skipped {
    fn add(&mut self, example: String) {
        self.count += 1;
        if self.examples.len() < SKIP_SAMPLES && !self.examples.contains(&example) {
            self.examples.push(example);
        }
    }
}

/// Every refusal, counted per (grantee, requested route).
#[derive(Debug, Default)]
pub(super) struct Learner {
    /// Keyed by the route as requested (method, tidy path); generalisation is decided in
    /// [`propose`], where the policy is known.
    pub pairs: BTreeMap<(Grantee, RouteKey), Seen>,
    /// Per route, each request once (a client with two groups makes two pairs); the flag is
    /// true for anonymous requests, counted apart because they are granted only on request.
    pub routes: BTreeMap<(bool, RouteKey), Seen>,
    pub refusals: u64,
    pub listeners: BTreeSet<String>,
    /// Requests whose method is none of [`METHODS`]; examples are the methods.
    pub bad_method: Skipped,
    /// Requests with a path segment that is route syntax; examples are `METHOD path`.
    pub route_syntax: Skipped,
}

impl Learner {
    pub(super) fn add(&mut self, r: &Refusal) {
        self.refusals += 1;
        self.listeners.insert(r.listener.clone());
        if !METHODS.contains(&r.method.as_str()) {
            self.bad_method.add(r.method.clone());
            return;
        }
        if r.path.split('/').any(is_route_syntax) {
            self.route_syntax.add(format!("{} {}", r.method, r.path));
            return;
        }
        let route = RouteKey {
            method: r.method.clone(),
            path: tidy(&r.path),
        };
        let (user, time) = (r.user.as_deref(), r.timestamp.as_deref());
        let anonymous = r.grantees.contains(&Grantee::Anonymous);
        self.routes
            .entry((anonymous, route.clone()))
            .or_default()
            .add(user, time, &r.path);
        for g in &r.grantees {
            self.pairs
                .entry((g.clone(), route.clone()))
                .or_default()
                .add(user, time, &r.path);
        }
    }
}

/// A permission to add: its name, its one route, and the traffic behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NewPermission {
    pub name: String,
    pub route: String,
    pub seen: Seen,
}

/// A permission to grant, with the routes (and their traffic) that made it needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Grant {
    pub grantee: Grantee,
    pub permission: String,
    /// Learned in this run (else it exists in the policy).
    pub learned: bool,
    pub routes: Vec<(String, Seen)>,
}

/// A generalised route proposed as the paths requested instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeptLiteral {
    /// The `{id}` route that was not proposed.
    pub route: String,
    /// The existing permissions with a route it would have covered too.
    pub permissions: Vec<String>,
}

/// How `learn` was asked to propose.
#[derive(Clone, Copy, Debug)]
pub(super) struct Options {
    /// Leave out (grantee, route) pairs seen fewer times than this.
    pub min_count: u64,
    /// Also propose grants for requests without a certificate.
    pub anonymous: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_count: 1,
            anonymous: false,
        }
    }
}

/// What `learn` proposes.
#[derive(Debug, Default)]
pub(super) struct Proposal {
    pub permissions: Vec<NewPermission>,
    pub grants: Vec<Grant>,
    /// Pairs the policy allows by now (granted since the log was written).
    pub already_allowed: u64,
    /// Pairs seen fewer than `--min-count` times.
    pub below_min: u64,
    /// Pairs of users (by CN, all the log names) left out because the policy's `users_from`
    /// is not `cn`: a `users:` grant by CN would allow nothing there.
    pub users_not_by_cn: u64,
    /// Routes the route grammar cannot express, with the reason.
    pub unroutable: Vec<String>,
    /// Anonymous refusals that were not proposed (no `--anonymous`): route and traffic.
    pub anonymous: Vec<(String, Seen)>,
    /// Generalised routes proposed literally, so as not to reach into existing permissions.
    pub kept_literal: Vec<KeptLiteral>,
}

/// The principal a grantee stands for, to ask the policy whether it is allowed already.
fn principal<'a>(g: &'a Grantee, attr: GroupAttribute, one: &'a [String]) -> Principal<'a> {
    match g {
        Grantee::Anonymous => Principal::Anonymous,
        Grantee::User(u) => Principal::Certificate {
            user: Some(u.as_str()),
            organizations: &[],
            org_units: &[],
            sans: Default::default(),
        },
        Grantee::Group(_) => Principal::Certificate {
            user: None,
            organizations: if attr == GroupAttribute::O { one } else { &[] },
            org_units: if attr == GroupAttribute::O { &[] } else { one },
            sans: Default::default(),
        },
    }
}

/// How narrowly a route covers: the most literal segments, no `**`, the fewest methods (any
/// method is the widest, hence None).
fn specificity(r: &Route) -> (usize, bool, Option<Reverse<usize>>) {
    let literals = r
        .segments()
        .iter()
        .filter(|s| matches!(s, Segment::Literal(_)))
        .count();
    let no_rest = !r.segments().iter().any(|s| matches!(s, Segment::Rest));
    let methods = match r.methods() {
        Methods::Any => None,
        Methods::List(l) => Some(Reverse(l.len())),
    };
    (literals, no_rest, methods)
}

/// `learned_<method>_<path words>`, made unique against `taken`.
pub(super) fn learned_name(route: &RouteKey, taken: &BTreeSet<String>) -> String {
    let mut words = String::new();
    for c in route.path.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            words.push(c);
        } else if !words.ends_with('_') {
            words.push('_');
        }
    }
    let mut words = words.trim_matches('_').to_string();
    words.truncate(80);
    let words = words.trim_end_matches('_');
    let base = format!(
        "learned_{}_{}",
        route.method.to_ascii_lowercase(),
        if words.is_empty() { "root" } else { words }
    );
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

/// Whether some request matches both `learned` (one method; literal and `{id}` segments) and
/// `other`.
pub(super) fn overlaps(learned: &Route, method: &str, other: &Route) -> bool {
    if !other.methods().covers(method) {
        return false;
    }
    let mine = learned.segments();
    for (i, theirs) in other.segments().iter().enumerate() {
        let Some(seg) = mine.get(i) else {
            // `**` also matches nothing more; anything else needs one more segment.
            return matches!(theirs, Segment::Rest);
        };
        match (seg, theirs) {
            (_, Segment::Rest) | (Segment::Rest, _) => return true,
            (Segment::Literal(a), Segment::Literal(b)) if a != b => return false,
            _ => {}
        }
    }
    mine.len() == other.segments().len()
}

/// The existing permissions a generalised route would reach into: those with a route it
/// overlaps. Empty when it has no `{id}`, when there is no policy, and when an existing
/// permission covers the whole generalised route (that one is reused instead).
fn reaches_into(policy: Option<&Policy>, general: &RouteKey) -> Vec<String> {
    let Some(policy) = policy else {
        return Vec::new();
    };
    if !general.path.split('/').any(|s| s == "{id}")
        || !policy.covering(&general.method, &general.path).is_empty()
    {
        return Vec::new();
    }
    let Ok(route) = Route::parse(&general.text()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    for (name, other) in policy.routes() {
        if overlaps(&route, &general.method, other) && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// Why a proposed route would match more than the paths requested beyond the `{id}` rule, if it
/// would: a guard on what reaches the output, whatever the parsing above let through.
fn too_wide(key: &RouteKey, route: &Route) -> Option<&'static str> {
    if route.methods() != &Methods::List(vec![key.method.clone()]) {
        return Some("the method does not read as itself in a route");
    }
    let written: Vec<&str> = key.path.split('/').filter(|s| !s.is_empty()).collect();
    if written.len() != route.segments().len() {
        return Some("the path does not read as its own segments in a route");
    }
    let literal = written.iter().zip(route.segments()).all(|(w, s)| {
        matches!(s, Segment::Literal(_)) || (*w == "{id}" && s == &Segment::Wildcard)
    });
    (!literal).then_some("a path segment would read as a wildcard in a route")
}

/// What the policy already has for a (grantee, route) pair.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    /// The grantee holds a permission that covers the route (granted since the log was written).
    Allows,
    /// The narrowest permission that covers the route, first in file order among equals.
    Covers(String),
    /// No permission covers the route (or there is no policy).
    Nothing,
}

fn existing(policy: &Policy, who: &Principal<'_>, route: &RouteKey) -> Existing {
    if policy.decide(who, &route.method, &route.path).is_allowed() {
        return Existing::Allows;
    }
    // max_by_key keeps the last of equals: reversed, that is the first in file order.
    policy
        .covering(&route.method, &route.path)
        .iter()
        .rev()
        .max_by_key(|(_, r)| specificity(r))
        .map_or(Existing::Nothing, |(name, _)| {
            Existing::Covers(name.to_string())
        })
}

/// Turns what was seen into grants: an existing permission that covers a route (the narrowest
/// one) when the policy has one, else a new permission per route. A route is the requests'
/// generalised form unless that form would also cover routes of existing permissions, then each
/// requested path is a route of its own.
pub(super) fn propose(learner: &Learner, policy: Option<&Policy>, opts: &Options) -> Proposal {
    let mut out = Proposal::default();
    // Each requested route -> the route proposed for it.
    let mut target: BTreeMap<&RouteKey, RouteKey> = BTreeMap::new();
    // Generalised route -> the existing permissions it would reach into.
    let mut decided: BTreeMap<RouteKey, Vec<String>> = BTreeMap::new();
    for (anonymous, literal) in learner.routes.keys() {
        let general = literal.generalized();
        let into = decided
            .entry(general.clone())
            .or_insert_with(|| reaches_into(policy, &general));
        let keep = !into.is_empty();
        if keep && (!anonymous || opts.anonymous) {
            let text = general.text();
            if !out.kept_literal.iter().any(|k| k.route == text) {
                out.kept_literal.push(KeptLiteral {
                    route: text,
                    permissions: into.clone(),
                });
            }
        }
        target.insert(literal, if keep { literal.clone() } else { general });
    }
    let proposed = |literal: &RouteKey| {
        target
            .get(literal)
            .cloned()
            .unwrap_or_else(|| literal.clone())
    };
    let mut pairs: BTreeMap<(Grantee, RouteKey), Seen> = BTreeMap::new();
    for ((grantee, literal), seen) in &learner.pairs {
        pairs
            .entry((grantee.clone(), proposed(literal)))
            .or_default()
            .merge(seen);
    }
    let mut route_seen: BTreeMap<RouteKey, Seen> = BTreeMap::new();
    for ((anonymous, literal), seen) in &learner.routes {
        if !anonymous || opts.anonymous {
            route_seen.entry(proposed(literal)).or_default().merge(seen);
        }
    }

    let mut taken: BTreeSet<String> = policy
        .map(|p| p.permission_names().map(str::to_string).collect())
        .unwrap_or_default();
    let attr = policy.map(|p| p.group_attribute()).unwrap_or_default();
    let users_by_cn = policy.is_none_or(|p| p.users_from() == UsersFrom::Cn);
    // route -> learned permission index
    let mut learned: BTreeMap<RouteKey, usize> = BTreeMap::new();
    // grantee -> (permission -> grant), existing permissions before learned ones
    let mut grants: BTreeMap<Grantee, Vec<Grant>> = BTreeMap::new();
    for ((grantee, route), seen) in &pairs {
        if seen.count < opts.min_count.max(1) {
            out.below_min += 1;
            continue;
        }
        if matches!(grantee, Grantee::User(_)) && !users_by_cn {
            out.users_not_by_cn += 1;
            continue;
        }
        let one = match grantee {
            Grantee::Group(g) => vec![g.clone()],
            _ => Vec::new(),
        };
        let existing = match policy {
            None => Existing::Nothing,
            Some(p) => existing(p, &principal(grantee, attr, &one), route),
        };
        if existing == Existing::Allows {
            out.already_allowed += 1;
            continue;
        }
        // The log is written by whoever connects: without a certificate behind it, a refusal
        // is reported, not granted, unless the operator asked for it.
        if *grantee == Grantee::Anonymous && !opts.anonymous {
            out.anonymous.push((route.text(), seen.clone()));
            continue;
        }
        let (permission, is_learned) = match existing {
            Existing::Covers(name) => (name, false),
            Existing::Allows | Existing::Nothing => {
                let i = match learned.get(route) {
                    Some(&i) => i,
                    None => {
                        let problem = match Route::parse(&route.text()) {
                            Err(e) => Some(e.to_string()),
                            Ok(r) => too_wide(route, &r).map(str::to_string),
                        };
                        if let Some(problem) = problem {
                            out.unroutable.push(format!("{}: {problem}", route.text()));
                            continue;
                        }
                        let name = learned_name(route, &taken);
                        taken.insert(name.clone());
                        out.permissions.push(NewPermission {
                            name,
                            route: route.text(),
                            seen: route_seen.get(route).cloned().unwrap_or_default(),
                        });
                        learned.insert(route.clone(), out.permissions.len() - 1);
                        out.permissions.len() - 1
                    }
                };
                (out.permissions[i].name.clone(), true)
            }
        };
        let list = grants.entry(grantee.clone()).or_default();
        match list.iter_mut().find(|g| g.permission == permission) {
            Some(g) => g.routes.push((route.text(), seen.clone())),
            None => list.push(Grant {
                grantee: grantee.clone(),
                permission,
                learned: is_learned,
                routes: vec![(route.text(), seen.clone())],
            }),
        }
    }
    for (_, mut list) in grants {
        list.sort_by_key(|g| g.learned);
        out.grants.extend(list);
    }
    out.unroutable.sort();
    out.unroutable.dedup();
    out
}
