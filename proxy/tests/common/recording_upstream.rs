//! A keep-alive plain-HTTP/1.1 upstream on raw sockets that records exactly what it received
//! (request line, header fields in order with their names as sent, the body decoded from either
//! framing) and answers by request target, for tests that compare what two ways of forwarding
//! deliver.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Which connection it came on: the upstream numbers its connections from 0 as it accepts
    /// them.
    pub conn: usize,
    /// The request line, byte for byte (without its CRLF).
    pub line: String,
    /// Every header field in the order received, the name as spelled on the wire.
    pub headers: Vec<(String, String)>,
    /// The body: Content-Length bytes, or the chunked body decoded; for `/early`, what had
    /// arrived when the upstream answered ([`EARLY_BYTES`]).
    pub body: Vec<u8>,
}

/// How much of an `/early` upload the upstream reads before it answers 413.
pub const EARLY_BYTES: usize = 40_000;

/// The upstream. Per request target (its path, the query ignored):
/// - a HEAD: `200`, `content-type: text/plain`, `content-length: 5`, no body;
/// - `/status/N`: `N` with `cache-control` and `etag` and no body (meant for 204 and 304);
/// - `/chunked-reply`: `200` with a chunked body `hello, world` in two chunks;
/// - `/close-delimited`: `200` with a body ended by closing the connection;
/// - `/early`: reads [`EARLY_BYTES`] of the body (the client announces far more), then answers
///   `413` with `connection: close` and reads on until the proxy stops sending;
/// - `/close-after`: `200` with `connection: close` and a `content-length` body, then closes;
/// - `/hop-reply`: `200` with a chunked `ok` and HTTP/1.1's connection-specific headers
///   (`connection` naming `x-hop` too, `keep-alive`, `proxy-connection`, `x-hop`);
/// - `/early-hints`: `103` with a `link`, then `200` with a `content-length` body;
/// - `/garbage`: answers bytes that are no HTTP response, and closes;
/// - `/truncated`: `200` with a chunked body whose first chunk (`0123456789`) comes at once; once
///   the test has seen it arrive ([`RecordingUpstream::release`]) the upstream closes without
///   ending the body;
/// - anything else: `200` with `content-type: application/json`, `cache-control: no-cache`,
///   `x-upstream: recorded` and a `content-length` body naming the body size received.
///
/// A request with `expect: 100-continue` and a body gets `100 Continue` first, as hyper and
/// nginx send it when they start reading the body.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    releases: Arc<Releases>,
}

/// Releases granted by the test and not yet used by a `/truncated` answer.
type Releases = (Mutex<usize>, Condvar);

impl RecordingUpstream {
    pub fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = RecordingUpstream {
            addr: listener.local_addr().unwrap(),
            received: Arc::new(Mutex::new(Vec::new())),
            releases: Arc::new((Mutex::new(0), Condvar::new())),
        };
        let (received, releases) = (up.received.clone(), up.releases.clone());
        std::thread::spawn(move || {
            for (id, conn) in listener.incoming().enumerate() {
                let Ok(conn) = conn else { continue };
                let (received, releases) = (received.clone(), releases.clone());
                std::thread::spawn(move || serve(id, conn, &received, &releases));
            }
        });
        up
    }

    /// Lets one `/truncated` answer end (the one under way, or the next).
    pub fn release(&self) {
        let (count, ready) = &*self.releases;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        ready.notify_all();
    }

    /// Every request received so far, in order. A request is recorded before it is answered.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A connection's bytes with what was read ahead kept for the next read.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more into `buf`; false when the connection ended or failed.
    fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next CRLF-ended line, without its CRLF.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.more() {
                return None;
            }
        }
    }

    /// Exactly `n` bytes.
    fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }
}

fn serve(id: usize, s: TcpStream, received: &Mutex<Vec<Received>>, releases: &Releases) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut c = Conn { s, buf: Vec::new() };
    loop {
        // The request line (empty lines before it skipped) and the header fields.
        let line = loop {
            match c.line() {
                Some(l) if l.is_empty() => continue,
                Some(l) => break String::from_utf8_lossy(&l).into_owned(),
                None => return,
            }
        };
        let mut headers = Vec::new();
        loop {
            let Some(h) = c.line() else { return };
            if h.is_empty() {
                break;
            }
            let h = String::from_utf8_lossy(&h).into_owned();
            let (name, value) = h.split_once(':').unwrap_or((&h, ""));
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let get = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let chunked = get("transfer-encoding")
            .iter()
            .any(|v| v.contains("chunked"));
        let length: Option<usize> = get("content-length").first().and_then(|v| v.parse().ok());
        let has_body = chunked || length.is_some_and(|n| n > 0);
        let method = line.split(' ').next().unwrap_or_default().to_string();
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        let path = target.split('?').next().unwrap_or_default().to_string();
        let continues = has_body && get("expect").iter().any(|v| v == "100-continue");
        if continues && c.s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }

        if path == "/early" {
            let body = if chunked {
                read_chunked(&mut c, Some(EARLY_BYTES))
            } else {
                c.exact(EARLY_BYTES.min(length.unwrap_or(0)))
            };
            let Some(body) = body else { return };
            record(received, id, line, headers, body);
            let _ = c.s.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\ntoo big",
            );
            // Reads on until the proxy stops sending, so it sees no reset while forwarding.
            while c.more() {
                c.buf.clear();
            }
            return;
        }

        let body = if chunked {
            read_chunked(&mut c, None)
        } else {
            c.exact(length.unwrap_or(0))
        };
        let Some(body) = body else { return };
        let size = body.len();
        record(received, id, line, headers, body);

        let reply: Vec<u8> = if method == "HEAD" {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n".to_vec()
        } else if let Some(code) = path.strip_prefix("/status/") {
            format!("HTTP/1.1 {code} X\r\ncache-control: max-age=60\r\netag: \"v1\"\r\n\r\n")
                .into_bytes()
        } else if path == "/chunked-reply" {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n7\r\nhello, \r\n5\r\nworld\r\n0\r\n\r\n".to_vec()
        } else if path == "/close-after" {
            let _ = c.s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbye",
            );
            hang_up(&mut c);
            return;
        } else if path == "/hop-reply" {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: keep-alive, x-hop\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-hop: secret\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec()
        } else if path == "/early-hints" {
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok".to_vec()
        } else if path == "/garbage" {
            let _ = c.s.write_all(b"NOT HTTP AT ALL\r\n\r\n");
            hang_up(&mut c);
            return;
        } else if path == "/truncated" {
            let _ = c.s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
            );
            // Closing at once would race the chunk through the proxy: a proxy may drop what it
            // has not sent yet when it gives up on the response.
            let (count, ready) = releases;
            let count = count.lock().unwrap_or_else(|p| p.into_inner());
            let (mut count, _) = ready
                .wait_timeout_while(count, Duration::from_secs(30), |n| *n == 0)
                .unwrap_or_else(|p| p.into_inner());
            *count = count.saturating_sub(1);
            drop(count);
            hang_up(&mut c);
            return;
        } else if path == "/close-delimited" {
            let _ =
                c.s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end");
            return;
        } else {
            let body = format!("{{\"received\":{size}}}");
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-cache\r\nx-upstream: recorded\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        };
        if c.s.write_all(&reply).is_err() {
            return;
        }
    }
}

/// Ends the connection cleanly: no more from us, then whatever the proxy still sends (a close
/// with unread bytes would be a reset, which could overtake what was written).
fn hang_up(c: &mut Conn) {
    let _ = c.s.shutdown(std::net::Shutdown::Write);
    while c.more() {
        c.buf.clear();
    }
}

fn record(
    received: &Mutex<Vec<Received>>,
    conn: usize,
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) {
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            conn,
            line,
            headers,
            body,
        });
}

/// A chunked body, decoded (trailer fields read and dropped); with `stop`, returns as soon as
/// that many bytes are in.
fn read_chunked(c: &mut Conn, stop: Option<usize>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        if let Some(n) = stop.filter(|n| body.len() >= *n) {
            // Where the chunks were cut is the sender's timing: only the first `n` bytes count.
            body.truncate(n);
            return Some(body);
        }
        let size_line = String::from_utf8_lossy(&c.line()?).into_owned();
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while !c.line()?.is_empty() {}
            return Some(body);
        }
        body.extend(c.exact(size)?);
        c.exact(2)?;
    }
}
