//! Hostile clients and the upstream slots, through the real binary: one client (a certificate,
//! or an address when anonymous) flooding HTTP/2 streams that announce a huge body and trickle
//! it gets `limits.upstream_per_client` slots and 503 for the rest after `timeouts.connect`,
//! while another client is served at normal latency; a body that stalls for
//! `timeouts.request_body` ends with 408 and gives its slot back, on every forwarding path.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certgate::pki::Issued;
use common::*;

const POLICY: &str = r#"
permissions:
  health: ["GET /livez"]
  list_vms: ["GET /api/v1/vm"]
groups:
  admins: [list_vms]
authenticated: [health]
anonymous: [health]
"#;

/// The scaled-down release defaults the flood runs against: 64 listener slots, 8 per client.
const FLOOD_LIMITS: &str = "    policy: policy.yaml\n    timeouts: { connect: 1s }\n    limits: { upstream_connections: 64, upstream_per_client: 8 }\n";

/// What one flood stream got back: its status, JSON reason and how long it took.
struct Answered {
    status: u16,
    reason: String,
    took: Duration,
}

/// `conns` HTTP/2 connections as `who` (anonymous with None), each keeping `streams` streams of
/// `GET /livez` open that announce a 1 GB body and send one byte of it every 200 ms; a stream
/// that is answered is replaced by a new one, until `stop`. Returns every answer.
async fn flood(
    w: &World,
    p: &Proxy,
    who: Option<&Issued>,
    conns: usize,
    streams: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Answered>> {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let send = h2_connect(w, p, who).await;
        for _ in 0..streams {
            let (send, stop) = (send.clone(), stop.clone());
            let port = p.addr.port();
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut send) = send.clone().ready().await else {
                        break;
                    };
                    let req = http::Request::builder()
                        .method("GET")
                        .uri(format!("https://localhost:{port}/livez"))
                        .header("content-length", "1000000000")
                        .body(())
                        .unwrap();
                    let started = Instant::now();
                    let Ok((mut resp, mut body)) = send.send_request(req, false) else {
                        break;
                    };
                    let _ = body.send_data(Bytes::from_static(b"x"), false);
                    let answer = loop {
                        tokio::select! {
                            r = &mut resp => break r.ok(),
                            // The trickle's pace, not a wait for anything.
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                                if stop.load(Ordering::SeqCst) {
                                    return answers;
                                }
                                let _ = body.send_data(Bytes::from_static(b"x"), false);
                            }
                        }
                    };
                    let Some(resp) = answer else { break };
                    let took = started.elapsed();
                    let status = resp.status().as_u16();
                    let mut data = resp.into_body();
                    let mut text = Vec::new();
                    while let Some(Ok(chunk)) = data.data().await {
                        let _ = data.flow_control().release_capacity(chunk.len());
                        text.extend_from_slice(&chunk);
                    }
                    let reason = serde_json::from_slice::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["reason"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    answers.push(Answered {
                        status,
                        reason,
                        took,
                    });
                }
                answers
            }));
        }
    }
    tokio::spawn(async move {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    })
}

/// `n` requests one after the other as the well-behaved admin: each status and latency.
async fn measure(admin: &reqwest::Client, url: &str, n: usize) -> Vec<(u16, Duration)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = admin
            .get(url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        out.push((status, started.elapsed()));
    }
    out
}

fn p99(samples: &[(u16, Duration)]) -> Duration {
    let mut t: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    t.sort_unstable();
    t[((t.len() * 99).div_ceil(100)).saturating_sub(1)]
}

/// Runs the flood (from one certificate, or anonymous from one address), measures an admin
/// under it, and checks both sides.
async fn flood_leaves_room_for_another_client(with_cert: bool) {
    let label = if with_cert {
        "one certificate"
    } else {
        "anonymous"
    };
    let w = World::new();
    write(&w.path("policy.yaml"), POLICY.as_bytes());
    let up = upstream();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = FLOOD_LIMITS;
    let p = Proxy::start(&w, &cfg);
    let admin = https(
        &w,
        &p,
        Some(&client(&[("O", "admins"), ("CN", "admin")], &w.ca)),
    );
    let flooder = with_cert.then(|| client(&[("O", "nobody"), ("CN", "flooder")], &w.ca));
    let url = p.url("/api/v1/vm");
    let quiet = measure(&admin, &url, 20).await;
    eprintln!("{label}: admin p99 without a flood: {:?}", p99(&quiet));

    // 4 connections × 16 streams: on their own they would hold all 64 listener slots.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(&w, &p, flooder.as_ref(), 4, 16, stop.clone()).await;
    // The flood is in place once its own extra streams start coming back (or, without a
    // per-client bound, once it has had time to take every slot).
    let placed = Instant::now();
    wait_for(
        "the flood's first refusals",
        Duration::from_secs(30),
        || {
            let refused = metric(
                &p.metrics(),
                "certgate_requests_total",
                &[("code", "503"), ("listener", "test")],
            );
            (refused >= 8.0 || placed.elapsed() > Duration::from_secs(3)).then_some(())
        },
    );
    let under = measure(&admin, &url, 100).await;
    stop.store(true, Ordering::SeqCst);
    let answers = flooding.await.unwrap();

    let p99_under = p99(&under);
    let failed: Vec<_> = under.iter().filter(|s| s.0 != 200).collect();
    eprintln!(
        "{label}: admin p99 under the flood: {p99_under:?} ({} of {} not 200); flood answers: {}",
        failed.len(),
        under.len(),
        answers.len()
    );
    assert!(failed.is_empty(), "the admin was refused: {failed:?}");
    assert!(
        p99_under < Duration::from_secs(1),
        "the admin waited for a slot: p99 {p99_under:?}"
    );
    assert!(
        answers.len() >= 8,
        "the flood's extra streams were answered"
    );
    for a in &answers {
        assert_eq!(a.status, 503, "a flood stream got {}", a.status);
        assert_eq!(a.reason, "too many concurrent requests from this client");
        assert!(
            a.took >= Duration::from_millis(950) && a.took < Duration::from_secs(10),
            "a flood stream was refused after {:?}, not timeouts.connect",
            a.took
        );
    }
    let m = p.metrics();
    let counted = metric(
        &m,
        "certgate_upstream_errors_total",
        &[("kind", "busy_client"), ("listener", "test")],
    );
    assert!(
        counted >= answers.len() as f64,
        "{counted} refusals counted for {} answered",
        answers.len()
    );
    // A request is counted after its answer was sent: the last 503s read here may not be yet.
    // (More than answered is fine: streams answered as the flood stopped are not kept.)
    wait_for(
        "every 503 answered counted in certgate_requests_total",
        Duration::from_secs(15),
        || {
            let answered_503 = metric(
                &p.metrics(),
                "certgate_requests_total",
                &[("code", "503"), ("listener", "test")],
            );
            (answered_503 >= answers.len() as f64).then_some(())
        },
    );
    let line = p.access_line("status=\"503\"");
    assert!(line.contains("limits.upstream_per_client"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_flooding_http2_streams_gets_its_share_and_another_client_is_served() {
    flood_leaves_room_for_another_client(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_flood_from_one_address_gets_its_share_and_another_client_is_served() {
    flood_leaves_room_for_another_client(false).await;
}

/// The raw HTTP/1.1 answer to `head` followed by one byte of its announced body, and how long
/// it took.
fn stalled_h1(w: &World, p: &Proxy, who: &Issued, head: &str) -> (String, Duration) {
    let started = Instant::now();
    let raw = raw_https(w, p, Some(who), format!("{head}x").as_bytes());
    (raw, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_on_every_path_and_frees_its_slot() {
    let w = World::new();
    let up = upstream();
    let mut cfg = ProxyConfig::new(up);
    // One slot for the client: a stalled body that kept it would make the next request 503.
    cfg.listener_extra = "    timeouts: { connect: 1s, request_body: 1s }\n    limits: { upstream_per_connection: 2, upstream_connections: 2, upstream_per_client: 1 }\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "uploader")], &w.ca);
    let plain = https(&w, &p, Some(&who));
    let slot_is_free = |path: &'static str| {
        let (plain, url) = (plain.clone(), p.url("/after"));
        async move {
            let started = Instant::now();
            let (code, _) = get_json(&plain, &url).await;
            assert_eq!(code, 200, "after the stalled body on {path}");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "after {path}: waited {:?} for the slot",
                started.elapsed()
            );
        }
    };

    // HTTP/1.1 on certgate's forwarder, then on Pingora's HttpProxy (a Connection header
    // naming another header sends it there).
    let forwarder =
        "POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n".to_string();
    let fallback = "POST /up HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, x-trace\r\nX-Trace: 1\r\nContent-Length: 100\r\n\r\n".to_string();
    for (path, head) in [("h1 forwarder", forwarder), ("h1 HttpProxy", fallback)] {
        let (w2, p2, who2) = (&w, &p, &who);
        let (raw, took) = tokio::task::block_in_place(|| stalled_h1(w2, p2, who2, &head));
        eprintln!("{path}: answered after {took:?}");
        assert!(raw.starts_with("HTTP/1.1 408"), "{path}: {raw}");
        assert_eq!(raw_reason(&raw), "request body timeout", "{path}: {raw}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(8),
            "{path}: 408 after {took:?}, not timeouts.request_body"
        );
        slot_is_free(path).await;
    }

    // HTTP/2, on certgate's forwarder.
    let send = h2_connect(&w, &p, Some(&who)).await;
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost:{}/up", p.addr.port()))
        .header("content-length", "100")
        .body(())
        .unwrap();
    let started = Instant::now();
    let (resp, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from_static(b"x"), false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(8), resp)
        .await
        .expect("the stalled HTTP/2 stream was answered")
        .unwrap();
    let took = started.elapsed();
    eprintln!("h2: answered after {took:?}");
    assert_eq!(resp.status(), 408);
    let mut data = resp.into_body();
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = data.data().await {
        text.extend_from_slice(&chunk);
    }
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["message"], "Request Timeout");
    assert_eq!(v["reason"], "request body timeout");
    assert!(took >= Duration::from_millis(950), "h2: 408 after {took:?}");
    slot_is_free("h2").await;

    // Each 408 is counted, then logged, after it was sent: once the three lines are there, so
    // are their counts.
    wait_for("the three 408s logged", Duration::from_secs(15), || {
        let lines = p
            .log_text()
            .lines()
            .filter(|l| l.contains("certgate::access") && l.contains("status=\"408\""))
            .count();
        (lines >= 3).then_some(())
    });
    let m = p.metrics();
    assert_eq!(
        metric(&m, "certgate_requests_total", &[("code", "408")]),
        3.0,
        "each 408 counted once"
    );
    assert_eq!(
        metric(&m, "certgate_upstream_errors_total", &[("kind", "timeout")]),
        0.0,
        "a client's stall is not the upstream's timeout"
    );
    let line = p.access_line("status=\"408\"");
    assert!(line.contains("path=\"/up\""), "{line}");
}

#[test]
fn the_per_client_bound_holds_on_pingoras_path_too() {
    let w = World::new();
    let up = upstream();
    let mut cfg = ProxyConfig::new(up);
    cfg.listener_extra = "    timeouts: { connect: 1s, request_body: 3s }\n    limits: { upstream_per_connection: 2, upstream_connections: 4, upstream_per_client: 1 }\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "twice")], &w.ca);
    // A Connection header naming another header leaves the request to Pingora's HttpProxy.
    let head = "POST /up HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, x-trace\r\nX-Trace: 1\r\nContent-Length: 100\r\n\r\n";
    // Two stalled uploads of one client on two connections: one holds the client's slot until
    // its body times out (408), the other finds it taken for timeouts.connect (503), though
    // the listener has slots to spare.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| stalled_h1(&w, &p, &who, head));
        let b = s.spawn(|| stalled_h1(&w, &p, &who, head));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut answers = [a, b];
    answers.sort_by_key(|(_, took)| *took);
    let [(first, first_took), (second, second_took)] = answers;
    eprintln!("HttpProxy: 503 after {first_took:?}, 408 after {second_took:?}");
    assert!(first.starts_with("HTTP/1.1 503"), "{first}");
    assert_eq!(
        raw_reason(&first),
        "too many concurrent requests from this client"
    );
    assert!(
        first_took >= Duration::from_millis(950) && first_took < Duration::from_secs(3),
        "503 after {first_took:?}"
    );
    assert!(second.starts_with("HTTP/1.1 408"), "{second}");
    assert!(
        second_took >= Duration::from_millis(2950),
        "408 after {second_took:?}"
    );
    assert_eq!(
        metric(
            &p.metrics(),
            "certgate_upstream_errors_total",
            &[("kind", "busy_client")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_connections_of_one_client_share_its_slots() {
    let w = World::new();
    let up = RawUpstream::start(RawReply::Big(1 << 20));
    let mut cfg = ProxyConfig::new(up.addr);
    cfg.listener_extra = "    timeouts: { read: 2s, connect: 1s }\n    limits: { upstream_per_connection: 4, upstream_connections: 8, upstream_per_client: 2 }\n";
    let p = Proxy::start(&w, &cfg);
    let who = client(&[("O", "ci"), ("CN", "zero-window")], &w.ca);
    let port = p.addr.port();
    // Three connections × 4 streams that never read: the connection bound alone would let
    // them hold all 8 listener slots.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let send = h2_zero_window(&w, &p, &who).await;
        for i in 0..4 {
            let send = send.clone();
            streams.push(tokio::spawn(async move {
                let req = http::Request::get(format!("https://localhost:{port}/big/{i}"))
                    .body(())
                    .unwrap();
                let Ok(mut send) = send.ready().await else {
                    return;
                };
                let Ok((resp, _)) = send.send_request(req, true) else {
                    return;
                };
                let Ok(resp) = resp.await else { return };
                let mut body = resp.into_body();
                // Never released: the window stays at zero, so no DATA can arrive.
                while let Some(Ok(_)) = body.data().await {}
            }));
        }
    }
    for s in streams {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("a stalled stream was never ended by certgate")
            .unwrap();
    }
    let (_, max) = up.active();
    eprintln!("three zero-window connections of one client: at most {max} upstream connections");
    assert!(
        (1..=2).contains(&max),
        "{max} upstream connections for one client"
    );
    assert!(
        metric(
            &p.metrics(),
            "certgate_upstream_errors_total",
            &[("kind", "busy_client")]
        ) >= 1.0,
        "the streams beyond the client's share were refused"
    );
}
