//! The analysis behind `certgate policy learn`: which access-log records are policy refusals,
//! how their paths generalise (`/vm/42` and `/vm/97` are both `/vm/{id}`), who should be granted
//! what, and whether an existing permission already covers the route. Reading files is the
//! command's job (`cli/learn.rs`); writing YAML is [`super::learn_yaml`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::route::{Methods, Segment};
use super::{GroupAttribute, Policy, Principal, Route};

/// Who a learned grant goes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grantee {
    /// A group value (under the policy's `group_attribute`).
    Group(String),
    /// A certificate CN, for identities without a group.
    User(String),
    /// Requests without a certificate.
    Anonymous,
}

/// A request as it will be written in a route: method and generalised path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub path: String,
    pub method: String,
}

impl RouteKey {
    /// `METHOD /path`, the route grammar's form.
    pub fn text(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// One refused request read from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub listener: String,
    pub route: RouteKey,
    /// One grantee per group, else the user, else anonymous.
    pub grantees: Vec<Grantee>,
    pub user: Option<String>,
    pub timestamp: Option<String>,
}

/// What one log line is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A request the policy refused (or, in audit mode, would have refused).
    Refusal(Refusal),
    /// An access record that is not a policy refusal: allowed, a 400, a certificate failure, an
    /// upstream error, or a certificate with neither group nor CN.
    Ignored,
    /// Not an access-log record (another log line, text, garbage).
    NotAccess,
}

/// Reads one line: a certgate JSON access record, also inside a CRI log prefix
/// (`<time> stdout F {...}`) or Docker's json-file wrapper (`{"log":"{...}\n",...}`).
pub fn parse_line(line: &str) -> Line {
    let Some(start) = line.find('{') else {
        return Line::NotAccess;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line[start..].trim_end()) else {
        return Line::NotAccess;
    };
    if let Some(inner) = v.get("log").and_then(|l| l.as_str()) {
        if v.get("method").is_none() && inner.trim_start().starts_with('{') {
            return parse_line(inner);
        }
    }
    classify(&v)
}

fn classify(v: &serde_json::Value) -> Line {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
    if v.get("target").is_some_and(|t| t != "certgate::access") {
        return Line::NotAccess;
    }
    let (method, path, decision) = (s("method"), s("path"), s("decision"));
    if method.is_empty() || !path.starts_with('/') || decision.is_empty() {
        return Line::NotAccess;
    }
    let status = match v.get("status") {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(t)) => t.parse().unwrap_or(0),
        _ => 0,
    };
    // In audit mode the request was forwarded, so the status is the upstream's: the reason
    // alone says what certgate would have answered.
    let audit = match decision {
        "audit_deny" => true,
        "deny" => false,
        _ => return Line::Ignored,
    };
    let reason = s("reason");
    let user = Some(s("user").to_string()).filter(|u| !u.is_empty());
    let grantees = if reason == "no certificate" && (audit || status == 401) {
        vec![Grantee::Anonymous]
    } else if (reason.contains(" requires one of: ")
        || reason.ends_with(" is covered by no permission"))
        && (audit || status == 403)
    {
        let groups = split_groups(s("groups"));
        if !groups.is_empty() {
            groups.into_iter().map(Grantee::Group).collect()
        } else if let Some(u) = &user {
            vec![Grantee::User(u.clone())]
        } else {
            return Line::Ignored;
        }
    } else {
        return Line::Ignored;
    };
    Line::Refusal(Refusal {
        listener: s("listener").to_string(),
        route: RouteKey {
            method: method.to_string(),
            path: generalize(path),
        },
        grantees,
        user,
        timestamp: Some(s("timestamp").to_string()).filter(|t| !t.is_empty()),
    })
}

/// The log's `groups` field: values written as in `x-certgate-groups` (RFC 2253 escapes, so a
/// comma inside a value is `\,`), joined by `,`.
pub fn split_groups(field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut bytes = field.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                let Some(n) = bytes.next() else { break };
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(n), bytes.peek().copied().and_then(hex)) {
                    (Some(h), Some(l)) => {
                        bytes.next();
                        cur.push((h * 16 + l) as u8);
                    }
                    _ => cur.push(n),
                }
            }
            b',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Replaces id-like segments with `{id}`; see [`is_id_like`].
pub fn generalize(path: &str) -> String {
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
/// optionally followed by a file extension (`<uuid>.yaml`); and segments a route cannot spell
/// literally (`*`, `{`, `}`).
pub fn is_id_like(seg: &str) -> bool {
    if seg.contains(['*', '{', '}']) {
        return true;
    }
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

/// How often a (grantee, route) pair was seen, by whom, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    pub users: BTreeSet<String>,
    pub first: Option<String>,
    pub last: Option<String>,
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
    fn add(&mut self, user: Option<&str>, timestamp: Option<&str>) {
        self.count += 1;
        if let Some(u) = user {
            self.users.insert(u.to_string());
        }
        if let Some(t) = timestamp {
            self.note_time(t);
        }
    }

    fn note_time(&mut self, t: &str) {
        if self.first.as_deref().is_none_or(|f| earlier(t, f)) {
            self.first = Some(t.to_string());
        }
        if self.last.as_deref().is_none_or(|l| earlier(l, t)) {
            self.last = Some(t.to_string());
        }
    }
}

/// Every refusal, counted per (grantee, route).
#[derive(Debug, Default)]
pub struct Learner {
    pub pairs: BTreeMap<(Grantee, RouteKey), Seen>,
    /// Per route, each request once (a client with two groups makes two pairs).
    pub routes: BTreeMap<RouteKey, Seen>,
    pub refusals: u64,
    pub listeners: BTreeSet<String>,
}

impl Learner {
    pub fn add(&mut self, r: &Refusal) {
        self.refusals += 1;
        self.listeners.insert(r.listener.clone());
        self.routes
            .entry(r.route.clone())
            .or_default()
            .add(r.user.as_deref(), r.timestamp.as_deref());
        for g in &r.grantees {
            self.pairs
                .entry((g.clone(), r.route.clone()))
                .or_default()
                .add(r.user.as_deref(), r.timestamp.as_deref());
        }
    }
}

/// A permission to add: its name, its one route, and the traffic behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPermission {
    pub name: String,
    pub route: String,
    pub seen: Seen,
}

/// A permission to grant, with the routes (and their traffic) that made it needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: String,
    /// Learned in this run (else it exists in the policy).
    pub learned: bool,
    pub routes: Vec<(String, Seen)>,
}

/// What `learn` proposes.
#[derive(Debug, Default)]
pub struct Proposal {
    pub permissions: Vec<NewPermission>,
    pub grants: Vec<Grant>,
    /// Pairs the policy allows by now (granted since the log was written).
    pub already_allowed: u64,
    /// Pairs seen fewer than `--min-count` times.
    pub below_min: u64,
    /// Routes the route grammar cannot express, with the reason.
    pub unroutable: Vec<String>,
}

/// The principal a grantee stands for, to ask the policy whether it is allowed already.
fn principal<'a>(g: &'a Grantee, attr: GroupAttribute, one: &'a [String]) -> Principal<'a> {
    match g {
        Grantee::Anonymous => Principal::Anonymous,
        Grantee::User(u) => Principal::Certificate {
            user: Some(u.as_str()),
            organizations: &[],
            org_units: &[],
        },
        Grantee::Group(_) => Principal::Certificate {
            user: None,
            organizations: if attr == GroupAttribute::O { one } else { &[] },
            org_units: if attr == GroupAttribute::O { &[] } else { one },
        },
    }
}

/// How narrowly a route covers: the most literal segments, no `**`, the fewest methods.
fn specificity(r: &Route) -> (usize, bool, usize) {
    let literals = r
        .segments()
        .iter()
        .filter(|s| matches!(s, Segment::Literal(_)))
        .count();
    let no_rest = !r.segments().iter().any(|s| matches!(s, Segment::Rest));
    let methods = match r.methods() {
        Methods::Any => 0,
        Methods::List(l) => usize::MAX - l.len(),
    };
    (literals, no_rest, methods)
}

/// `learned_<method>_<path words>`, made unique against `taken`.
pub fn learned_name(route: &RouteKey, taken: &BTreeSet<String>) -> String {
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

/// Turns what was seen into grants: an existing permission that covers a route (the narrowest
/// one) when the policy has one, else a new permission per route.
pub fn propose(learner: &Learner, policy: Option<&Policy>, min_count: u64) -> Proposal {
    let mut out = Proposal::default();
    let mut taken: BTreeSet<String> = policy
        .map(|p| p.permission_names().map(str::to_string).collect())
        .unwrap_or_default();
    let attr = policy.map(|p| p.group_attribute()).unwrap_or_default();
    // route -> learned permission index
    let mut learned: BTreeMap<RouteKey, usize> = BTreeMap::new();
    // grantee -> (permission -> grant), existing permissions before learned ones
    let mut grants: BTreeMap<Grantee, Vec<Grant>> = BTreeMap::new();
    for ((grantee, route), seen) in &learner.pairs {
        if seen.count < min_count.max(1) {
            out.below_min += 1;
            continue;
        }
        let one = match grantee {
            Grantee::Group(g) => vec![g.clone()],
            _ => Vec::new(),
        };
        let existing = policy.and_then(|p| {
            if p.decide(&principal(grantee, attr, &one), &route.method, &route.path)
                .is_allowed()
            {
                return Some(None);
            }
            let covering = p.covering(&route.method, &route.path);
            let best = covering
                .iter()
                .enumerate()
                .max_by_key(|(i, (_, r))| (specificity(r), usize::MAX - i))
                .map(|(_, (name, _))| name.to_string());
            best.map(Some)
        });
        let (permission, is_learned) = match existing {
            Some(None) => {
                out.already_allowed += 1;
                continue;
            }
            Some(Some(name)) => (name, false),
            None => {
                let i = match learned.get(route) {
                    Some(&i) => i,
                    None => {
                        if let Err(e) = Route::parse(&route.text()) {
                            out.unroutable.push(format!("{}: {e}", route.text()));
                            continue;
                        }
                        let name = learned_name(route, &taken);
                        taken.insert(name.clone());
                        out.permissions.push(NewPermission {
                            name,
                            route: route.text(),
                            seen: learner.routes.get(route).cloned().unwrap_or_default(),
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
    out.unroutable.dedup();
    out
}

#[cfg(test)]
#[path = "learn_tests.rs"]
mod tests;
