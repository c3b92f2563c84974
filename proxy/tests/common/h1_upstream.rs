//! A keep-alive plain-HTTP/1.1 upstream on raw sockets, for tests of what certgate's own
//! forwarding does with each response framing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A keep-alive plain-HTTP upstream on raw sockets that counts its connections. Per request
/// target: `/status/N` answers N with no body, `/close-delimited` a body ended by closing,
/// `/early` a 413 as soon as the head is read (then it reads on), `/hop` a chunked `ok` with
/// HTTP/1.1's connection-specific headers, a HEAD a 200 with `content-length: 5` and no body,
/// anything else `200 ok`. Request bodies are read by Content-Length.
pub struct KeepAliveUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
}

impl KeepAliveUpstream {
    pub fn start() -> KeepAliveUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = KeepAliveUpstream {
            addr: listener.local_addr().unwrap(),
            connections: Arc::new(AtomicUsize::new(0)),
        };
        let connections = up.connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve_keepalive(conn));
            }
        });
        up
    }
}

fn serve_keepalive(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let Some(end) = super::read_head(&mut conn, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let target = head.split(' ').nth(1).unwrap_or_default().to_string();
        if target == "/early" {
            let _ = conn.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 7\r\nconnection: close\r\n\r\ntoo big",
            );
            // Reads on until the proxy stops sending, so it sees no reset while forwarding.
            while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
            return;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < length {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        let reply: Vec<u8> = if let Some(code) = target.strip_prefix("/status/") {
            format!("HTTP/1.1 {code} X\r\n\r\n").into_bytes()
        } else if target == "/close-delimited" {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end");
            return;
        } else if target == "/hop" {
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec()
        } else if head.starts_with("head ") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()
        } else {
            format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-body-bytes: {length}\r\n\r\nok")
                .into_bytes()
        };
        if conn.write_all(&reply).is_err() {
            return;
        }
    }
}
