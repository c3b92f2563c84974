//! A real HTTP/1.1 server on 127.0.0.1 that publishes CRLs the way a CA's distribution point
//! does (ETag, Last-Modified, 304 on a match), and misbehaves on demand: 500, a hang, garbage,
//! an oversized body. It records every request head so tests can see conditional headers.
//! It answers any method with what is published at the path (so it can also replay a recorded
//! OCSP response).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The published body, 304 when the client's If-None-Match is its ETag.
    Serve,
    /// `500 Internal Server Error`.
    Fail,
    /// `503 Service Unavailable`, as a CDP behind a load balancer with no backend answers.
    Unavailable,
    /// Accepts and reads the request, then says nothing until the mode changes (or 60 s).
    Hang,
    /// 200 with an HTML error page instead of a CRL.
    Garbage,
    /// 200 with this many bytes.
    Oversized(usize),
}

#[derive(Default)]
struct State {
    /// path → (body, etag)
    bodies: HashMap<String, (Vec<u8>, String)>,
    /// path → Location of a 302
    redirects: HashMap<String, String>,
    mode: Option<Mode>,
    heads: Vec<String>,
    version: u64,
}

pub struct CrlServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl CrlServer {
    pub fn start() -> CrlServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode: Some(Mode::Serve),
            ..State::default()
        }));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(conn, s));
            }
        });
        CrlServer { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Publishes `body` at `path` with a new ETag.
    pub fn publish(&self, path: &str, body: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let etag = format!("\"v{}\"", s.version);
        s.bodies.insert(path.to_string(), (body, etag));
    }

    /// Answers `path` with `302 Found` to `location` (in every mode but Hang).
    pub fn redirect(&self, path: &str, location: &str) {
        let mut s = self.state.lock().unwrap();
        s.redirects.insert(path.to_string(), location.to_string());
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// Request heads received so far for `path`.
    pub fn heads(&self, path: &str) -> Vec<String> {
        let prefix = format!("GET {path} ");
        self.state
            .lock()
            .unwrap()
            .heads
            .iter()
            .filter(|h| h.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        // A POST body (an OCSP request) is read and dropped.
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if length > 0
            && conn
                .read_exact(&mut vec![0u8; length.min(1 << 20)])
                .is_err()
        {
            return;
        }
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (mode, published, redirect) = {
            let mut s = state.lock().unwrap();
            s.heads.push(head.clone());
            (
                s.mode.clone().unwrap_or(Mode::Serve),
                s.bodies.get(&path).cloned(),
                s.redirects.get(&path).cloned(),
            )
        };
        let reply = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
            let text = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n",
                body.len()
            );
            conn.write_all(text.as_bytes())
                .and_then(|_| conn.write_all(body))
                .is_ok()
        };
        let ok = match (mode, published) {
            (m, _) if m != Mode::Hang && redirect.is_some() => reply(
                &mut conn,
                "302 Found",
                &format!("location: {}\r\n", redirect.unwrap_or_default()),
                b"",
            ),
            (Mode::Fail, _) => reply(&mut conn, "500 Internal Server Error", "", b"oops"),
            (Mode::Unavailable, _) => reply(&mut conn, "503 Service Unavailable", "", b"later"),
            (Mode::Hang, _) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline && state.lock().unwrap().mode == Some(Mode::Hang) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            (Mode::Garbage, _) => reply(
                &mut conn,
                "200 OK",
                "content-type: text/html\r\n",
                b"<html><body>Service temporarily unavailable</body></html>",
            ),
            (Mode::Oversized(n), _) => reply(&mut conn, "200 OK", "", &vec![b'A'; n]),
            (Mode::Serve, None) => reply(&mut conn, "404 Not Found", "", b"no such CRL"),
            (Mode::Serve, Some((body, etag))) => {
                if header(&head, "if-none-match") == Some(etag.as_str()) {
                    reply(
                        &mut conn,
                        "304 Not Modified",
                        &format!("etag: {etag}\r\n"),
                        b"",
                    )
                } else {
                    reply(
                        &mut conn,
                        "200 OK",
                        &format!(
                            "etag: {etag}\r\nlast-modified: Sun, 29 Nov 2026 00:00:00 GMT\r\ncontent-type: application/pkix-crl\r\n"
                        ),
                        &body,
                    )
                }
            }
        };
        if !ok {
            return;
        }
    }
}
