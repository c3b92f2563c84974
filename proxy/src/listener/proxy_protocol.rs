//! Inbound PROXY protocol v1/v2 (what an AWS NLB or HAProxy in TCP mode prepends), read before
//! the TLS handshake. We read exactly the header's bytes, never more, so the ClientHello that may
//! follow in the same segment stays in the stream for OpenSSL. Parsing is the `ppp` crate's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header the spec allows, CRLF included.
const V1_MAX: usize = 107;
/// AWS PrivateLink: the VPC endpoint id (`PP2_TYPE_AWS`, subtype 0x01).
const TLV_AWS: u8 = 0xEA;

/// What the PROXY header said about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: u8,
    /// The real client, or None for LOCAL/UNKNOWN (health checks): keep the socket address.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the load balancer's listener).
    pub destination: Option<SocketAddr>,
    /// AWS VPC endpoint id, when the NLB sent one.
    pub vpce_id: Option<String>,
    /// Every v2 TLV, kept for the log.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("connection from {0} is not in proxy_protocol_from")]
    UntrustedSource(IpAddr),
    #[error("no PROXY protocol header (plain connection to a proxy_protocol listener)")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("PROXY header not received within {0:?}")]
    Timeout(Duration),
    #[error("connection closed while reading the PROXY header: {0}")]
    Io(String),
}

impl ProxyProtocolError {
    pub fn label(&self) -> &'static str {
        match self {
            ProxyProtocolError::UntrustedSource(_) => "proxy_untrusted",
            ProxyProtocolError::Missing => "proxy_missing",
            ProxyProtocolError::Malformed(_) => "proxy_malformed",
            ProxyProtocolError::Timeout(_) => "proxy_timeout",
            ProxyProtocolError::Io(_) => "proxy_io",
        }
    }
}

/// The `proxy_protocol_from` rule: empty means any peer may send the header.
pub fn source_allowed(allowed: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    allowed.is_empty() || allowed.iter().any(|net| net.contains(&peer))
}

/// Reads one PROXY header from `io` within `limit`.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: Duration,
) -> Result<ProxyHeader, ProxyProtocolError> {
    match tokio::time::timeout(limit, read_header_bytes(io)).await {
        Ok(Ok(bytes)) => parse_header(&bytes),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyProtocolError::Timeout(limit)),
    }
}

async fn read_header_bytes<R: AsyncRead + Unpin>(
    io: &mut R,
) -> Result<Vec<u8>, ProxyProtocolError> {
    let io_err = |e: std::io::Error| ProxyProtocolError::Io(e.to_string());
    let mut buf = vec![0u8; 6];
    io.read_exact(&mut buf).await.map_err(io_err)?;
    if &buf[..] == b"PROXY " {
        // v1: a text line; read it a byte at a time so nothing after the CRLF is consumed.
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyProtocolError::Malformed(
                    "v1 header longer than 107 bytes".into(),
                ));
            }
            io.read_exact(&mut byte).await.map_err(io_err)?;
            buf.push(byte[0]);
        }
        return Ok(buf);
    }
    if buf[..] != V2_SIGNATURE[..6] {
        return Err(ProxyProtocolError::Missing);
    }
    buf.resize(16, 0);
    io.read_exact(&mut buf[6..]).await.map_err(io_err)?;
    if buf[..12] != V2_SIGNATURE[..] {
        return Err(ProxyProtocolError::Missing);
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    buf.resize(16 + len, 0);
    io.read_exact(&mut buf[16..]).await.map_err(io_err)?;
    Ok(buf)
}

/// Parses a complete v1 or v2 header.
pub fn parse_header(bytes: &[u8]) -> Result<ProxyHeader, ProxyProtocolError> {
    if bytes.starts_with(b"PROXY ") {
        let h = ppp::v1::Header::try_from(bytes)
            .map_err(|e| ProxyProtocolError::Malformed(format!("v1: {e}")))?;
        let (source, destination) = match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => (
                Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Some(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                )),
            ),
            ppp::v1::Addresses::Tcp6(a) => (
                Some(SocketAddr::new(a.source_address.into(), a.source_port)),
                Some(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                )),
            ),
            ppp::v1::Addresses::Unknown => (None, None),
        };
        return Ok(ProxyHeader {
            version: 1,
            source,
            destination,
            vpce_id: None,
            tlvs: vec![],
        });
    }
    let h = ppp::v2::Header::try_from(bytes)
        .map_err(|e| ProxyProtocolError::Malformed(format!("v2: {e}")))?;
    let mut tlvs = Vec::new();
    let mut vpce_id = None;
    for tlv in h.tlvs() {
        let tlv = tlv.map_err(|e| ProxyProtocolError::Malformed(format!("v2 TLV: {e}")))?;
        if tlv.kind == TLV_AWS && tlv.value.first() == Some(&0x01) {
            vpce_id = Some(String::from_utf8_lossy(&tlv.value[1..]).into_owned());
        }
        tlvs.push((tlv.kind, tlv.value.to_vec()));
    }
    let (source, destination) = match (h.command, h.addresses) {
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => (
            Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            Some(SocketAddr::new(
                a.destination_address.into(),
                a.destination_port,
            )),
        ),
        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => (
            Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            Some(SocketAddr::new(
                a.destination_address.into(),
                a.destination_port,
            )),
        ),
        // LOCAL (load-balancer health checks), UNSPEC and UNIX: the socket address stands.
        _ => (None, None),
    };
    Ok(ProxyHeader {
        version: 2,
        source,
        destination,
        vpce_id,
        tlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | command);
        b.push(family);
        b.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        b.extend_from_slice(addrs);
        b.extend_from_slice(tlvs);
        b
    }

    #[tokio::test]
    async fn v1_tcp4_is_read_exactly_and_leaves_the_rest() {
        let mut input: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n\x16\x03\x01";
        let h = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(h.source, Some("203.0.113.7:5555".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:443".parse().unwrap()));
        assert_eq!(input, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn v1_tcp6_and_unknown() {
        let mut input: &[u8] = b"PROXY TCP6 2001:db8::7 2001:db8::1 6666 443\r\n";
        let h = read_header(&mut input, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::7]:6666".parse().unwrap()));
        let mut input: &[u8] = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            read_header(&mut input, Duration::from_secs(1))
                .await
                .unwrap()
                .source,
            None
        );
    }

    #[tokio::test]
    async fn v2_proxy_with_aws_tlv() {
        let addrs = [198, 51, 100, 9, 10, 0, 0, 1, 0x11, 0x5c, 0x01, 0xbb];
        let mut tlv = vec![TLV_AWS, 0, 23, 0x01];
        tlv.extend_from_slice(b"vpce-08d2bf15fac5001c9");
        let bytes = v2(1, 0x11, &addrs, &tlv);
        let mut input = [bytes.as_slice(), b"rest"].concat();
        let mut reader: &[u8] = &input;
        let h = read_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(h.source, Some("198.51.100.9:4444".parse().unwrap()));
        assert_eq!(h.vpce_id.as_deref(), Some("vpce-08d2bf15fac5001c9"));
        assert_eq!(reader, b"rest");
        input.clear();
    }

    #[tokio::test]
    async fn v2_local_keeps_socket_address() {
        let bytes = v2(0, 0x00, &[], &[]);
        let mut reader: &[u8] = &bytes;
        let h = read_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((h.version, h.source), (2, None));
    }

    #[tokio::test]
    async fn plain_tls_and_garbage_are_refused() {
        let mut reader: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert_eq!(
            read_header(&mut reader, Duration::from_secs(1)).await,
            Err(ProxyProtocolError::Missing)
        );
        let mut reader: &[u8] = b"PROXY TCP4 nonsense\r\n";
        assert!(matches!(
            read_header(&mut reader, Duration::from_secs(1)).await,
            Err(ProxyProtocolError::Malformed(_))
        ));
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        let mut reader: &[u8] = &long;
        assert!(matches!(
            read_header(&mut reader, Duration::from_secs(1)).await,
            Err(ProxyProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn source_rule() {
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(source_allowed(&nets, "10.1.2.3".parse().unwrap()));
        assert!(source_allowed(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!source_allowed(&nets, "192.0.2.1".parse().unwrap()));
        assert!(source_allowed(&[], "192.0.2.1".parse().unwrap()));
    }
}
