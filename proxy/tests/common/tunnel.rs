//! An open WebSocket tunnel through the proxy, and how long it takes to end.

use std::io::{Read, Write};
use std::time::Instant;

use certgate::pki::Issued;

use super::{tls_connector, Proxy, World};
use std::time::Duration;

/// An open WebSocket tunnel as `who`: the TLS stream after the 101, checked to echo.
pub fn open_tunnel(
    w: &World,
    p: &Proxy,
    who: &Issued,
) -> openssl::ssl::SslStream<std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(p.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = tls_connector(w, Some(who), b"\x08http/1.1")
        .connect("localhost", tcp)
        .unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    s
}

/// Reads until the tunnel ends; true if it ended before `deadline`.
pub fn closed_by(s: &mut openssl::ssl::SslStream<std::net::TcpStream>, deadline: Instant) -> bool {
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.get_ref().set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}
