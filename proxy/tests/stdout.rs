//! The commands that print, with nowhere to print to: a reader that has gone (`| head`) ends
//! them as SIGPIPE ends any Unix tool, and a full disk (`> /dev/full`) is one error line and
//! the command's error exit code. Never a panic or a backtrace.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const FULL: &str = "error: cannot write to stdout: No space left on device (os error 28)\n";

/// `certgate args` writing to a pipe whose reader is already gone.
fn into_closed_pipe(args: &[&str], tmp: &Path) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command(args, tmp).stdout(writer).output().unwrap()
}

/// `certgate args` writing to /dev/full.
fn into_full_disk(args: &[&str], tmp: &Path) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    command(args, tmp).stdout(full).output().unwrap()
}

fn command(args: &[&str], tmp: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ended_by_sigpipe(o: &Output, what: &str) {
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "{what}: {:?}\n{}",
        o.status,
        stderr(o)
    );
    assert_eq!(stderr(o), "", "{what}");
}

fn assert_full_disk_reported(o: &Output, code: i32, what: &str) {
    assert_eq!(o.status.code(), Some(code), "{what}: {:?}", o.status);
    assert_eq!(stderr(o), FULL, "{what}");
}

const CONFIG: &str = "tls:\n  cert: server.pem\n  key: server-key.pem\n  client_ca: ca.pem\n  crl: [crl.pem]\nlisteners:\n  - name: test\n    listen: 127.0.0.1:18443\n    upstream: http://127.0.0.1:80\n";

#[test]
fn check_explain_pki_and_learn_end_quietly_without_a_reader_and_report_a_full_disk() {
    let w = World::new();
    let config = w.path("c.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();
    let log = w.path("access.log");
    std::fs::write(
        &log,
        r#"{"listener":"test","method":"GET","path":"/a","status":403,"user":"u","groups":"g","decision":"deny","reason":"GET /a is covered by no permission","refusal":"not_permitted"}"#,
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let explain = [
        "explain",
        "-c",
        config,
        "--listener",
        "test",
        "--method",
        "GET",
        "--path",
        "/",
        "--anonymous",
    ];
    let pki = |name: &str| w.path(name).to_str().unwrap().to_string();
    let (pki_a, pki_b) = (pki("pki-a"), pki("pki-b"));
    let commands: [(&str, Vec<&str>, Vec<&str>, i32); 4] = [
        (
            "check",
            vec!["check", "-c", config],
            vec!["check", "-c", config],
            1,
        ),
        ("explain", explain.to_vec(), explain.to_vec(), 2),
        (
            "pki init",
            vec!["pki", "init", "--dir", &pki_a],
            vec!["pki", "init", "--dir", &pki_b],
            1,
        ),
        (
            "policy learn",
            vec!["policy", "learn", "--log", log],
            vec!["policy", "learn", "--log", log],
            2,
        ),
    ];
    for (what, closed, full, code) in commands {
        assert_ended_by_sigpipe(&into_closed_pipe(&closed, w.dir.path()), what);
        assert_full_disk_reported(&into_full_disk(&full, w.dir.path()), code, what);
    }
}

#[test]
fn clients_ends_quietly_without_a_reader_and_reports_a_full_disk() {
    let w = World::new();
    let p = Proxy::start(&w, &ProxyConfig::new(upstream()));
    let args = ["clients", "-c", p.config.to_str().unwrap()];
    assert_ended_by_sigpipe(&into_closed_pipe(&args, w.dir.path()), "clients");
    assert_full_disk_reported(&into_full_disk(&args, w.dir.path()), 2, "clients");
}

/// Processes whose command line names `dir` (the demo's proxy runs with its config there).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap().as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
    }
    found
}

#[test]
fn demo_stops_its_proxy_and_removes_its_files_when_its_reader_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let demo = command(&["demo", "--once"], tmp.path())
        .stdout(writer)
        .spawn()
        .unwrap();
    // The reader goes once the demo's proxy is running: the tour's next line finds no one.
    let mut lines = BufReader::new(reader).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with("== certgate run"));
    drop(lines);
    let out = demo.wait_with_output().unwrap();
    assert!(
        started,
        "the demo never started its proxy: {}",
        stderr(&out)
    );
    assert_ended_by_sigpipe(&out, "demo");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
    assert_eq!(processes_under(tmp.path()), Vec::<String>::new());

    let out = into_full_disk(&["demo", "--once"], tmp.path());
    assert_full_disk_reported(&out, 1, "demo");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
