//! `certgate policy learn`: reads JSON access logs, keeps the requests the policy refused, and
//! prints the grants (and new permissions) that would allow them, as a YAML fragment or, with
//! `--merged`, as the whole policy. It only reads files: the operator reviews the output and
//! puts it in place.
//!
//! Files: [`log`] (which access-log records are policy refusals), [`propose`] (generalising
//! routes, choosing permissions and grants), [`yaml`] (the fragment and the canonical policy),
//! [`splice`] (`--merged` as a text edit that keeps the policy's comments).

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Args;
use serde_yaml_ng::{Mapping, Value};

mod log;
mod propose;
mod splice;
mod yaml;

#[cfg(test)]
mod tests;

use crate::policy::Policy;
use log::{parse_line, Line};
use propose::{propose, Learner, Options, Proposal, METHODS};
use splice::merge_text;
use yaml::{canonical, comment_safe, expected, seen_text};

#[derive(Args, Debug)]
pub struct LearnArgs {
    /// JSON access log (`log.format: json`); several may follow, `-` is stdin; gzip is recognised.
    #[arg(long = "log", value_name = "FILE", required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    /// The listener's policy: permissions that already cover a route are reused.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Only this listener's requests.
    #[arg(long, value_name = "NAME")]
    pub listener: Option<String>,
    /// Leave out a (grantee, route) pair seen fewer times than this.
    #[arg(long = "min-count", value_name = "N", default_value_t = 1)]
    pub min_count: u64,
    /// Print the whole policy with the grants merged (needs --policy).
    #[arg(long, requires = "policy")]
    pub merged: bool,
    /// Also propose grants for requests without a certificate (else they are only listed).
    #[arg(long)]
    pub anonymous: bool,
}

const ERROR: u8 = 2;

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(ERROR)
}

/// A reader that undoes gzip when the stream starts with its magic bytes (files and pipes alike).
pub(crate) fn decompressing<'a>(r: impl Read + 'a) -> io::Result<Box<dyn BufRead + 'a>> {
    let mut br = BufReader::new(r);
    let head = br.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            br,
        ))))
    } else {
        Ok(Box::new(br))
    }
}

#[derive(Default)]
struct Counts {
    lines: u64,
    records: u64,
    other_listener: u64,
}

/// Feeds every line of one input to the learner.
fn read_log(
    name: &str,
    input: impl Read,
    listener: Option<&str>,
    learner: &mut Learner,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let mut reader = decompressing(input).map_err(|e| anyhow!("{name}: cannot read: {e}"))?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| anyhow!("{name}: cannot read after line {}: {e}", counts.lines))?;
        if n == 0 {
            return Ok(());
        }
        counts.lines += 1;
        match parse_line(&String::from_utf8_lossy(&buf)) {
            Line::NotAccess => {}
            Line::Ignored => counts.records += 1,
            Line::Refusal(r) => {
                counts.records += 1;
                if listener.is_some_and(|l| l != r.listener) {
                    counts.other_listener += 1;
                } else {
                    learner.add(&r);
                }
            }
        }
    }
}

/// How many anonymous routes the header lists: anyone can add to them.
const ANONYMOUS_LISTED: usize = 20;

/// The comment lines before the YAML. Every line goes through [`comment_safe`]: file names,
/// listener names, methods, paths and users all end up here.
fn header(args: &LearnArgs, counts: &Counts, learner: &Learner, p: &Proposal) -> Vec<String> {
    let files: Vec<String> = args.logs.iter().map(|f| f.display().to_string()).collect();
    let mut h = vec![
        format!("certgate policy learn from {}", files.join(", ")),
        format!(
            "{} lines, {} access records, {} policy refusals{}",
            counts.lines,
            counts.records,
            learner.refusals,
            match &args.listener {
                Some(l) => format!(
                    " (listener {l}; {} of other listeners skipped)",
                    counts.other_listener
                ),
                None => String::new(),
            }
        ),
    ];
    if counts.lines > 0 && counts.records == 0 {
        h.push(
            "no JSON access records in the input: the log must come from `log.format: json`".into(),
        );
    }
    if args.listener.is_none() && learner.listeners.len() > 1 {
        let names: Vec<&str> = learner.listeners.iter().map(String::as_str).collect();
        h.push(format!(
            "WARNING: refusals of several listeners ({}) are mixed; use --listener NAME",
            names.join(", ")
        ));
    }
    if learner.bad_method.count > 0 {
        let quoted: Vec<String> = learner
            .bad_method
            .examples
            .iter()
            .map(|m| format!("\"{m}\""))
            .collect();
        h.push(format!(
            "{} requests skipped: their method ({}) is none of {}, and only those are proposed",
            learner.bad_method.count,
            quoted.join(", "),
            METHODS.join(", ")
        ));
    }
    if learner.route_syntax.count > 0 {
        h.push(format!(
            "{} requests skipped: a path segment is route syntax (*, {{ or }}), which no route can match literally: {}",
            learner.route_syntax.count,
            learner.route_syntax.examples.join(", ")
        ));
    }
    for k in &p.kept_literal {
        h.push(format!(
            "{} is proposed as the paths requested: it would also cover routes of {}",
            k.route,
            k.permissions.join(", ")
        ));
    }
    if !p.anonymous.is_empty() {
        h.push(format!(
            "{} routes refused to requests without a certificate, not granted (--anonymous proposes them):",
            p.anonymous.len()
        ));
        let mut busiest: Vec<&(String, _)> = p.anonymous.iter().collect();
        busiest.sort_by_key(|(_, seen)| std::cmp::Reverse(seen.count));
        for (route, seen) in busiest.iter().take(ANONYMOUS_LISTED) {
            h.push(format!("  {route}: {}", seen_text(seen)));
        }
        if p.anonymous.len() > ANONYMOUS_LISTED {
            h.push(format!(
                "  and {} more",
                p.anonymous.len() - ANONYMOUS_LISTED
            ));
        }
    }
    if p.already_allowed > 0 {
        h.push(format!(
            "{} (grantee, route) pairs are allowed by the policy already",
            p.already_allowed
        ));
    }
    if p.below_min > 0 {
        h.push(format!(
            "{} (grantee, route) pairs seen fewer than {} times left out (--min-count)",
            p.below_min, args.min_count
        ));
    }
    if p.users_not_by_cn > 0 {
        h.push(format!(
            "{} (user, route) pairs left out: the log names users by CN, but the policy's users_from is not cn; grant them under users: by hand (or through spiffe:)",
            p.users_not_by_cn
        ));
    }
    for u in &p.unroutable {
        h.push(format!("not expressible as a route, left out: {u}"));
    }
    if p.grants.is_empty() {
        h.push("nothing to learn: no grant to propose".into());
    } else {
        h.push("Review every grant before it goes into the policy: each one allows what the log shows.".into());
    }
    h.iter().map(|l| format!("# {}", comment_safe(l))).collect()
}

/// The policy with the proposal merged, checked: it parses to exactly the expected document and
/// loads as a policy.
fn merged_policy(path: &Path, p: &Proposal) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let original = match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => m,
        Ok(_) => Mapping::new(),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let want = Value::Mapping(expected(&original, p));
    let parses_to_want = |t: &str| serde_yaml_ng::from_str::<Value>(t).is_ok_and(|v| v == want);
    let out = match merge_text(&text, p).filter(|t| parses_to_want(t)) {
        Some(t) => t,
        None => {
            eprintln!(
                "note: {}: its layout could not be kept (flow-style sections?); the policy is written anew, without its comments",
                path.display()
            );
            let t = canonical(&original, p);
            if !parses_to_want(&t) {
                bail!("internal error: the merged policy does not read back as merged");
            }
            t
        }
    };
    Policy::from_yaml(&out, path).map_err(|e| anyhow!("the merged policy does not load: {e}"))?;
    Ok(out)
}

/// The proposal alone, checked to read back as exactly the proposal.
fn fragment(p: &Proposal) -> anyhow::Result<String> {
    let text = canonical(&Mapping::new(), p);
    let want = Value::Mapping(expected(&Mapping::new(), p));
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(v) if v == want => Ok(text),
        _ => bail!("internal error: the proposal does not read back as proposed"),
    }
}

pub(crate) fn learn(args: &LearnArgs) -> ExitCode {
    let policy = match args.policy.as_deref().map(Policy::load).transpose() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let mut learner = Learner::default();
    let mut counts = Counts::default();
    let mut stdin_read = false;
    for log in &args.logs {
        let listener = args.listener.as_deref();
        let result = if log.as_os_str() == "-" {
            if std::mem::replace(&mut stdin_read, true) {
                continue;
            }
            read_log(
                "stdin",
                io::stdin().lock(),
                listener,
                &mut learner,
                &mut counts,
            )
        } else {
            match std::fs::File::open(log) {
                Ok(f) => read_log(
                    &log.display().to_string(),
                    f,
                    listener,
                    &mut learner,
                    &mut counts,
                ),
                Err(e) => Err(anyhow!("{}: cannot open: {e}", log.display())),
            }
        };
        if let Err(e) = result {
            return fail(e);
        }
    }
    let opts = Options {
        min_count: args.min_count,
        anonymous: args.anonymous,
    };
    let proposal = propose(&learner, policy.as_ref(), &opts);
    let mut out = header(args, &counts, &learner, &proposal).join("\n") + "\n";
    match (&args.policy, args.merged) {
        (Some(path), true) if proposal.grants.is_empty() => match std::fs::read_to_string(path) {
            Ok(t) => out.push_str(&t),
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
        (Some(path), true) => match merged_policy(path, &proposal) {
            Ok(t) => out.push_str(&t),
            Err(e) => return fail(e),
        },
        _ if proposal.grants.is_empty() => {}
        _ => match fragment(&proposal) {
            Ok(t) => out.push_str(&t),
            Err(e) => return fail(e),
        },
    }
    use std::io::Write;
    match io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("cannot write to stdout: {e}")),
    }
}
