//! The PROXY protocol, versions 1 and 2 (HAProxy's `proxy-protocol.txt`):
//! the header a load balancer that relays TCP connections (HAProxy, an AWS
//! Network Load Balancer) puts before the client's first byte, to say whom
//! the connection is from.
//!
//! [`parse`] is pure: it takes the bytes read so far and says whether they
//! hold a whole header, need more, or cannot be one. [`read_header`] reads
//! a connection up to the end of its header. Which sources may send one is
//! the listener's decision ([`crate::server`]); nothing here trusts anyone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest v1 header, `\r\n` included (the specification's bound).
pub const V1_MAX: usize = 107;

/// The most address and TLV bytes a v2 header may carry here. The format
/// allows 65,535; what load balancers send (addresses, an endpoint id, a
/// few TLVs) is far less, and the bound keeps a client from making the
/// proxy buffer 64 KiB before it has said anything.
pub const V2_MAX_PAYLOAD: usize = 4096;

/// The v2 signature, which no v1 header or HTTP request starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed client connection: the client's address, and the address
    /// it connected to, as the load balancer saw them.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The load balancer's own connection (v2 `LOCAL`, as health checks
    /// send), or one whose addresses it cannot tell (v1 `UNKNOWN`, v2
    /// `AF_UNSPEC` or `AF_UNIX`): the socket's addresses stand.
    Unknown,
}

/// The outcome of [`parse`] on the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `length` bytes long; what follows is the client's.
    Complete { header: Header, length: usize },
    /// A header so far; more bytes are needed.
    Incomplete,
}

/// Why the bytes cannot be a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    #[error("PROXY v1 header without CRLF within {V1_MAX} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v2 header of {0} bytes after the first 16, more than {V2_MAX_PAYLOAD}")]
    V2TooLong(usize),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Read `buf`, the first bytes of a connection, as a PROXY header.
pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first == V1_PREFIX[0] {
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] {
        parse_v2(buf)
    } else {
        Err(ParseError::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ParseError> {
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(ParseError::Missing);
    }
    let Some(end) = buf.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ParseError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = buf[..end]
        .strip_suffix(b"\r")
        .ok_or(ParseError::V1("the line does not end in CRLF"))?;
    let line =
        std::str::from_utf8(&line[V1_PREFIX.len()..]).map_err(|_| ParseError::V1("not ASCII"))?;
    let length = end + 1;
    let mut fields = line.split(' ');
    let header = match fields.next() {
        // The rest of the line is to be ignored.
        Some("UNKNOWN") => Header::Unknown,
        Some(family @ ("TCP4" | "TCP6")) => {
            let v6 = family == "TCP6";
            let mut next = || fields.next().ok_or(ParseError::V1("too few fields"));
            let source = v1_ip(next()?, v6)?;
            let destination = v1_ip(next()?, v6)?;
            let source_port = v1_port(next()?)?;
            let destination_port = v1_port(next()?)?;
            if fields.next().is_some() {
                return Err(ParseError::V1("too many fields"));
            }
            Header::Proxied {
                source: SocketAddr::new(source, source_port),
                destination: SocketAddr::new(destination, destination_port),
            }
        }
        _ => return Err(ParseError::V1("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete { header, length })
}

fn v1_ip(text: &str, v6: bool) -> Result<IpAddr, ParseError> {
    let ip = if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6)
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4)
    };
    ip.map_err(|_| ParseError::V1("an address is not one of the protocol's family"))
}

fn v1_port(text: &str) -> Result<u16, ParseError> {
    // `u16::from_str` would take a sign; the format has digits only.
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let port = digits.then(|| text.parse::<u16>().ok()).flatten();
    port.ok_or(ParseError::V1("a port is not a number from 0 to 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ParseError> {
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] != V2_SIGNATURE[..seen] {
        return Err(ParseError::Missing);
    }
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ParseError::V2("the version is not 2"));
    }
    if command > 1 {
        return Err(ParseError::V2("the command is not LOCAL or PROXY"));
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    if family > 3 || transport > 2 {
        return Err(ParseError::V2("unknown address family or transport"));
    }
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ParseError::V2TooLong(payload));
    }
    let length = 16 + payload;
    if buf.len() < length {
        return Ok(Parsed::Incomplete);
    }
    // What follows the addresses is TLVs, which nothing here needs.
    let addresses = &buf[16..length];
    // LOCAL: the receiver uses the real endpoints and discards the
    // address block, whatever its family.
    if command == 0x0 {
        return Ok(Parsed::Complete {
            header: Header::Unknown,
            length,
        });
    }
    let header = match family {
        0x0 | 0x3 => Header::Unknown,
        0x1 => {
            let a: &[u8; 12] = addresses
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(ParseError::V2("too short for two IPv4 addresses"))?;
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(ip(4), u16::from_be_bytes([a[10], a[11]])),
            }
        }
        // 0x2, the only family left.
        _ => {
            let a: &[u8; 36] = addresses
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(ParseError::V2("too short for two IPv6 addresses"))?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::from(octets)
            };
            Header::Proxied {
                source: SocketAddr::new(ip(0), u16::from_be_bytes([a[32], a[33]])),
                destination: SocketAddr::new(ip(16), u16::from_be_bytes([a[34], a[35]])),
            }
        }
    };
    Ok(Parsed::Complete { header, length })
}

/// Why no header could be read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("the connection closed before sending anything")]
    Empty,
    #[error("the connection closed before the PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Read `io` up to the end of its PROXY header. Returns the header and the
/// bytes read past it, which belong to the client and must be replayed.
/// No deadline here: the caller bounds the wait.
pub async fn read_header<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<(Header, Bytes), ReadError> {
    // One read usually brings the whole header and the start of the TLS
    // ClientHello or the request.
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Parsed::Complete { header, length } = parse(&buf)? {
            return Ok((header, buf.split_off(length).freeze()));
        }
        // `parse` refuses a header past its bound, so this stays below
        // the bound plus one read.
        buf.reserve(512);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(if buf.is_empty() {
                ReadError::Empty
            } else {
                ReadError::Closed
            });
        }
    }
}

/// A v2 `PROXY` header for a TCP connection from `source` to
/// `destination`, as sent toward an origin that wants one. Addresses of
/// different families are both written as IPv6 (an IPv4 one mapped).
pub fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(V2_SIGNATURE);
    // Version 2, command PROXY.
    out.push(0x21);
    let (source_ip, destination_ip) = (source.ip().to_canonical(), destination.ip().to_canonical());
    match (source_ip, destination_ip) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            // AF_INET, STREAM; 12 bytes of addresses and ports.
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&from.octets());
            out.extend_from_slice(&to.octets());
        }
        (from, to) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            // AF_INET6, STREAM; 36 bytes of addresses and ports.
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(from).octets());
            out.extend_from_slice(&v6(to).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// A v2 `LOCAL` header: a connection of the proxy's own (a health check),
/// on behalf of no client.
pub fn v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    // Version 2, command LOCAL, family UNSPEC, no addresses.
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_header_reads_back_as_local() {
        let header = v2_local();
        let parsed = parse(&header).expect("parses");
        assert_eq!(
            parsed,
            Parsed::Complete {
                header: Header::Unknown,
                length: 16
            }
        );
    }

    #[test]
    fn headers_sent_to_an_origin_read_back_as_written() {
        let cases = [
            (
                "192.0.2.7:51234",
                "10.0.0.1:443",
                "192.0.2.7:51234",
                "10.0.0.1:443",
            ),
            (
                "[2001:db8::7]:51234",
                "[2001:db8::1]:443",
                "[2001:db8::7]:51234",
                "[2001:db8::1]:443",
            ),
            // A dual-stack listener's IPv4 client is written as IPv4.
            (
                "[::ffff:192.0.2.7]:5",
                "[::ffff:10.0.0.1]:443",
                "192.0.2.7:5",
                "10.0.0.1:443",
            ),
            // Mixed families go as IPv6.
            (
                "192.0.2.7:5",
                "[2001:db8::1]:443",
                "[::ffff:192.0.2.7]:5",
                "[2001:db8::1]:443",
            ),
        ];
        for (source, destination, read_source, read_destination) in cases {
            let header = v2_header(addr(source), addr(destination));
            let mut with_request = header.clone();
            with_request.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let parsed = parse(&with_request).expect("parses");
            assert_eq!(
                parsed,
                Parsed::Complete {
                    header: proxied(read_source, read_destination),
                    length: header.len(),
                },
                "{source} -> {destination}"
            );
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a test address")
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    /// A v2 header: command, family/transport byte, address block, TLVs.
    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).expect("short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn v2_inet() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1];
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    fn v2_inet6() -> Vec<u8> {
        let mut a = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        a.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        a
    }

    #[test]
    fn whole_headers_are_read_with_their_length() {
        let tlv = [0x04, 0x00, 0x03, b'v', b'p', b'c'];
        let cases: Vec<(&str, Vec<u8>, Header)> = vec![
            (
                "v1 TCP4",
                b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n".to_vec(),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            (
                "v1 TCP6",
                b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n".to_vec(),
                proxied("[2001:db8::7]:51234", "[2001:db8::1]:443"),
            ),
            (
                "v1 UNKNOWN, the rest ignored",
                b"PROXY UNKNOWN ff:: 10.0.0.1 x y\r\n".to_vec(),
                Header::Unknown,
            ),
            (
                "v1 UNKNOWN alone",
                b"PROXY UNKNOWN\r\n".to_vec(),
                Header::Unknown,
            ),
            (
                "v1 ports at the ends of the range",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n".to_vec(),
                proxied("1.2.3.4:0", "5.6.7.8:65535"),
            ),
            (
                "v2 PROXY AF_INET STREAM",
                v2(1, 0x11, &v2_inet(), &[]),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            (
                "v2 PROXY AF_INET6 STREAM",
                v2(1, 0x21, &v2_inet6(), &[]),
                proxied("[2001:db8::7]:51234", "[2001:db8::1]:443"),
            ),
            (
                "v2 TLVs are skipped",
                v2(1, 0x11, &v2_inet(), &tlv),
                proxied("192.0.2.7:51234", "10.0.0.1:443"),
            ),
            (
                "v2 LOCAL keeps the socket's addresses",
                v2(0, 0x11, &v2_inet(), &[]),
                Header::Unknown,
            ),
            (
                "v2 LOCAL with no addresses",
                v2(0, 0x00, &[], &[]),
                Header::Unknown,
            ),
            ("v2 AF_UNSPEC", v2(1, 0x00, &[], &[]), Header::Unknown),
            ("v2 AF_UNIX", v2(1, 0x31, &[0; 216], &[]), Header::Unknown),
        ];
        for (name, bytes, header) in cases {
            let length = bytes.len();
            let mut with_data = bytes.clone();
            with_data.extend_from_slice(b"\x16\x03\x01 client hello");
            assert_eq!(
                parse(&with_data),
                Ok(Parsed::Complete { header, length }),
                "{name}"
            );
            // Every proper prefix asks for more.
            for end in 0..length {
                assert_eq!(
                    parse(&bytes[..end]),
                    Ok(Parsed::Incomplete),
                    "{name}, {end} bytes"
                );
            }
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        use ParseError::*;
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
            ("an HTTP request", b"GET / HTTP/1.1\r\n".to_vec(), Missing),
            (
                "a TLS ClientHello",
                b"\x16\x03\x01\x02\x00".to_vec(),
                Missing,
            ),
            ("lower case", b"proxy TCP4".to_vec(), Missing),
            (
                "P, then something else",
                b"PRI * HTTP/2.0".to_vec(),
                Missing,
            ),
            (
                "a CR, then not the signature",
                b"\r\n\r\nGET".to_vec(),
                Missing,
            ),
            ("v1 without CRLF in 107 bytes", long.into_bytes(), V1TooLong),
            (
                "v1 LF without CR",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
                V1("the line does not end in CRLF"),
            ),
            (
                "v1 unknown protocol",
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1("the protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                "v1 TCP4 with IPv6 addresses",
                b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
                V1("an address is not one of the protocol's family"),
            ),
            (
                "v1 TCP6 with IPv4 addresses",
                b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1("an address is not one of the protocol's family"),
            ),
            (
                "v1 a port too large",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
                V1("a port is not a number from 0 to 65535"),
            ),
            (
                "v1 a signed port",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(),
                V1("a port is not a number from 0 to 65535"),
            ),
            (
                "v1 two spaces",
                b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1("an address is not one of the protocol's family"),
            ),
            (
                "v1 a field missing",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
                V1("too few fields"),
            ),
            (
                "v1 a field too many",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
                V1("too many fields"),
            ),
            (
                "v2 version 1",
                [&V2_SIGNATURE[..], &[0x11, 0x11, 0, 0]].concat(),
                V2("the version is not 2"),
            ),
            (
                "v2 command 2",
                v2(2, 0x11, &v2_inet(), &[]),
                V2("the command is not LOCAL or PROXY"),
            ),
            (
                "v2 command 2, refused before its addresses come",
                [&V2_SIGNATURE[..], &[0x22, 0x11, 0x00, 0x0c]].concat(),
                V2("the command is not LOCAL or PROXY"),
            ),
            (
                "v2 family 4",
                v2(1, 0x41, &[], &[]),
                V2("unknown address family or transport"),
            ),
            (
                "v2 AF_INET too short",
                v2(1, 0x11, &v2_inet()[..11], &[]),
                V2("too short for two IPv4 addresses"),
            ),
            (
                "v2 AF_INET6 too short",
                v2(1, 0x21, &v2_inet(), &[]),
                V2("too short for two IPv6 addresses"),
            ),
            (
                "v2 longer than the bound",
                [&V2_SIGNATURE[..], &[0x21, 0x11, 0x10, 0x01]].concat(),
                V2TooLong(4097),
            ),
        ];
        for (name, bytes, error) in cases {
            assert_eq!(parse(&bytes), Err(error), "{name}");
        }
    }

    #[tokio::test]
    async fn read_header_returns_the_bytes_after_it() {
        let mut input = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n".as_slice();
        let (header, rest) = read_header(&mut input).await.expect("a header");
        assert_eq!(header, proxied("192.0.2.7:51234", "10.0.0.1:443"));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");

        let mut cut = b"PROXY TCP4 192.0.2.7".as_slice();
        assert!(matches!(
            read_header(&mut cut).await,
            Err(ReadError::Closed)
        ));
        let mut nothing = b"".as_slice();
        assert!(matches!(
            read_header(&mut nothing).await,
            Err(ReadError::Empty)
        ));
    }
}
