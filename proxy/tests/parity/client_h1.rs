//! The HTTP/1.1 client: raw bytes on TLS, so every header goes out exactly as written.

use super::*;

pub(crate) struct H1Client {
    pub(crate) s: openssl::ssl::SslStream<TcpStream>,
    pub(crate) buf: Vec<u8>,
}

impl H1Client {
    pub(crate) fn connect(b: &Bench, who: Who) -> H1Client {
        let tcp = TcpStream::connect(b.p.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let s = tls_connector(&b.w, b.who(who), b"\x08http/1.1")
            .connect("localhost", tcp)
            .unwrap();
        H1Client { s, buf: Vec::new() }
    }

    pub(crate) fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        let target = match s.host {
            Host::Odd {
                h1_target: Some(t), ..
            } => b.port(t),
            _ => s.target.to_string(),
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", s.method);
        match s.host {
            Host::Plain => head.push_str(&b.port("Host: localhost:{port}\r\n")),
            Host::Odd { h1, .. } => {
                for line in h1 {
                    head.push_str(&b.port(line));
                    head.push_str("\r\n");
                }
            }
        }
        for (n, v) in s.headers.iter().chain(s.h1_only) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let mut body = Vec::new();
        match s.body {
            Body::None => {}
            Body::Length(n) => {
                head.push_str(&format!("Content-Length: {n}\r\n"));
                body = body_bytes(n);
            }
            Body::Chunked(pieces) => {
                head.push_str("Transfer-Encoding: chunked\r\n");
                let all = body_bytes(pieces.iter().sum());
                let mut at = 0;
                for n in pieces {
                    body.extend(format!("{n:x}\r\n").bytes());
                    body.extend(&all[at..at + n]);
                    body.extend(b"\r\n");
                    at += n;
                }
                body.extend(b"0\r\n\r\n");
            }
            Body::Early => {
                head.push_str("Content-Length: 100000000\r\n");
                body = body_bytes(EARLY_BYTES);
            }
        }
        if fallback {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        // All at once: a client may send the body without waiting for `100 Continue`.
        let mut bytes = head.into_bytes();
        bytes.extend(body);
        let _ = self.s.write_all(&bytes);
        self.answer(s.method == "HEAD", s.release_at.map(|at| (at, &b.up)))
    }

    pub(crate) fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub(crate) fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.more() {
                return None;
            }
        }
    }

    pub(crate) fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.more() {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// One response: interim ones, then the final head and its body, read by its framing
    /// (whatever arrived, if the connection ends first). `release`: see [`Scenario::release_at`].
    pub(crate) fn answer(
        &mut self,
        head_request: bool,
        mut release: Option<(usize, &RecordingUpstream)>,
    ) -> Answer {
        let mut a = Answer::default();
        loop {
            let Some(status_line) = self.line() else {
                a.error = "closed before a response".into();
                return a;
            };
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut headers = Vec::new();
            loop {
                let Some(h) = self.line() else {
                    a.error = "closed in the response head".into();
                    return a;
                };
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':').unwrap_or((&h, ""));
                headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
            if (100..200).contains(&status) && status != 101 {
                a.interim.push(status);
                continue;
            }
            a.status = status;
            a.headers = headers;
            break;
        }
        let get = |name: &str| {
            a.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (length, te) = (get("content-length"), get("transfer-encoding"));
        if head_request || matches!(a.status, 204 | 304) {
            a.framing = "no body".into();
        } else if te.is_some_and(|t| t.contains("chunked")) {
            a.framing = "chunked".into();
            loop {
                let Some(size) = self.line() else {
                    a.error = "closed in a chunked body".into();
                    return a;
                };
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .unwrap_or(0);
                if size == 0 {
                    while self.line().is_some_and(|l| !l.is_empty()) {}
                    break;
                }
                match self.exact(size + 2) {
                    Some(mut chunk) => {
                        chunk.truncate(size);
                        a.body.extend(chunk);
                        if let Some((_, up)) = release.take_if(|(at, _)| a.body.len() >= *at) {
                            up.release();
                        }
                    }
                    None => {
                        a.error = "closed in a chunk".into();
                        return a;
                    }
                }
            }
        } else if let Some(n) = length.and_then(|l| l.parse::<usize>().ok()) {
            a.framing = "content-length".into();
            loop {
                let take = self.buf.len().min(n - a.body.len());
                a.body.extend(self.buf.drain(..take));
                if a.body.len() == n {
                    break;
                }
                if !self.more() {
                    a.error = "closed before content-length bytes".into();
                    break;
                }
            }
        } else {
            a.framing = "until close".into();
            while self.more() {}
            a.body = std::mem::take(&mut self.buf);
        }
        a
    }

    pub(crate) fn leave(&mut self) {
        let _ = self.s.shutdown();
        let _ = self.s.get_ref().shutdown(std::net::Shutdown::Both);
    }

    pub(crate) fn probe(&mut self, b: &Bench) -> String {
        let probe = b.port("GET /probe HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
        if self.s.write_all(probe.as_bytes()).is_err() {
            return "closed".into();
        }
        let a = self.answer(false, None);
        if a.status == 0 {
            "closed".into()
        } else {
            format!("reused (probe {})", a.status)
        }
    }
}
