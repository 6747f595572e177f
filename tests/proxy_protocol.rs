//! Listeners behind a load balancer that speaks the PROXY protocol: the
//! client address of a v1 or v2 header from a trusted source reaches
//! X-Forwarded-For, Forwarded and the hints learning, over TLS and over
//! cleartext; untrusted sources, missing and malformed headers are closed
//! before anything reaches the origin, and counted.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// The load balancer's address: the only source whose headers are taken.
const BALANCER: &str = "127.0.0.2";
/// Another loopback address, not trusted.
const STRANGER: &str = "127.0.0.3";

/// A TLS and a cleartext listener, both behind the load balancer.
fn listen() -> String {
    let table = |tls: bool| {
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = {tls}\nproxy_protocol = true\n\
             proxy_protocol_from = [\"{BALANCER}/32\"]\n"
        )
    };
    format!("{}{}", table(true), table(false))
}

async fn start(origin: &TestOrigin, extra: &str) -> TestProxy {
    TestProxy::start_listening(&origin.url(), &listen(), extra).await
}

fn site() -> Routes {
    Routes::new().route("/", Resp::html("<p>hello</p>"))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a test address")
}

/// A connection to `to` from the loopback address `source`.
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("an address");
    let socket = TcpSocket::new_v4().expect("client socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("bind the client to {source}: {e}"));
    let tcp = socket.connect(to).await.expect("connect to the proxy");
    tcp.set_nodelay(true).unwrap();
    tcp
}

fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header; `local` sends the LOCAL command (addresses to be ignored).
/// It carries a TLV (an AWS VPC endpoint id), which is to be skipped.
fn v2(source: SocketAddr, destination: SocketAddr, local: bool) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            addresses.extend_from_slice(&s.octets());
            addresses.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("one family for both addresses"),
    };
    addresses.extend_from_slice(&source.port().to_be_bytes());
    addresses.extend_from_slice(&destination.port().to_be_bytes());
    let tlv = [&[0xea, 0x00, 0x0d, 0x01][..], b"vpce-0123abcd"].concat();
    let mut header = V2_SIGNATURE.to_vec();
    header.push(if local { 0x20 } else { 0x21 });
    header.push(family);
    let length = (addresses.len() + tlv.len()) as u16;
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&addresses);
    header.extend_from_slice(&tlv);
    header
}

async fn tls(proxy: &TestProxy, tcp: TcpStream, alpn: &[u8]) -> std::io::Result<impl Io> {
    let connector = TlsConnector::from(Arc::new(proxy.cert.client_config(&[alpn])));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// One HTTP/1.1 GET of `/` over `io`.
async fn h1_get(io: impl Io) -> StatusCode {
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get("/")
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    send.send_request(request).await.expect("response").status()
}

/// One HTTP/2 GET of `scheme://localhost/` over `io`.
async fn h2_get(io: impl Io, scheme: &str) -> StatusCode {
    let (send, connection) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = H2Client::from_parts(send, "localhost".to_owned());
    let request = Request::get(format!("{scheme}://localhost/"))
        .body(())
        .unwrap();
    client.exchange(request, None).await.status
}

/// The forwarding fields the origin saw on its only request.
fn forwarded_for(origin: &TestOrigin) -> (String, String) {
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let field = |name: &str| seen[0].headers[name].to_str().unwrap().to_owned();
    (field("x-forwarded-for"), field("forwarded"))
}

/// Read until the proxy closes the connection; what it sent before.
async fn until_closed(io: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    // A reset counts as closed too.
    let _ = bounded(io.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn v1_tcp4_over_tls_gives_the_client_address_to_the_origin() {
    bounded(async {
        for h2 in [false, true] {
            let origin = TestOrigin::routes(site()).await;
            let proxy = start(&origin, "").await;
            let mut tcp = connect_from(BALANCER, proxy.addr).await;
            tcp.write_all(&v1(addr("192.0.2.7:51234"), addr("198.51.100.1:443")))
                .await
                .unwrap();
            let status = if h2 {
                h2_get(tls(&proxy, tcp, b"h2").await.expect("TLS"), "https").await
            } else {
                h1_get(tls(&proxy, tcp, b"http/1.1").await.expect("TLS")).await
            };
            assert_eq!(status, StatusCode::OK, "h2: {h2}");
            let (xff, forwarded) = forwarded_for(&origin);
            assert_eq!(xff, "192.0.2.7", "h2: {h2}");
            assert!(forwarded.starts_with("for=192.0.2.7;"), "{forwarded}");
            assert!(forwarded.ends_with(";proto=https"), "{forwarded}");
        }
    })
    .await;
}

#[tokio::test]
async fn v2_ipv4_and_ipv6_over_cleartext_give_the_client_address_to_the_origin() {
    bounded(async {
        let cases = [
            (
                v2(addr("192.0.2.7:51234"), addr("198.51.100.1:80"), false),
                "192.0.2.7",
                "for=192.0.2.7;",
            ),
            (
                v2(addr("[2001:db8::7]:51234"), addr("[2001:db8::1]:80"), false),
                "2001:db8::7",
                "for=\"[2001:db8::7]\";",
            ),
            (
                v1(addr("[2001:db8::9]:51234"), addr("[2001:db8::1]:80")),
                "2001:db8::9",
                "for=\"[2001:db8::9]\";",
            ),
        ];
        for (header, xff_wanted, forwarded_wanted) in cases {
            for h2 in [false, true] {
                let origin = TestOrigin::routes(site()).await;
                let proxy = start(&origin, "").await;
                let mut tcp = connect_from(BALANCER, proxy.plain_addr.unwrap()).await;
                tcp.write_all(&header).await.unwrap();
                let status = if h2 {
                    h2_get(tcp, "http").await
                } else {
                    h1_get(tcp).await
                };
                assert_eq!(status, StatusCode::OK);
                let (xff, forwarded) = forwarded_for(&origin);
                assert_eq!(xff, xff_wanted, "h2: {h2}");
                assert!(forwarded.starts_with(forwarded_wanted), "{forwarded}");
                assert!(forwarded.ends_with(";proto=http"), "{forwarded}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn v2_over_tls_gives_the_client_address_to_the_origin() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, "").await;
        let mut tcp = connect_from(BALANCER, proxy.addr).await;
        let header = v2(
            addr("[2001:db8::7]:51234"),
            addr("[2001:db8::1]:443"),
            false,
        );
        tcp.write_all(&header).await.unwrap();
        let status = h2_get(tls(&proxy, tcp, b"h2").await.expect("TLS"), "https").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(forwarded_for(&origin).0, "2001:db8::7");
    })
    .await;
}

#[tokio::test]
async fn local_command_and_unknown_keep_the_socket_address() {
    bounded(async {
        let headers = [
            v2(addr("192.0.2.7:51234"), addr("198.51.100.1:80"), true),
            b"PROXY UNKNOWN\r\n".to_vec(),
        ];
        for header in headers {
            let origin = TestOrigin::routes(site()).await;
            let proxy = start(&origin, "").await;
            let mut tcp = connect_from(BALANCER, proxy.plain_addr.unwrap()).await;
            tcp.write_all(&header).await.unwrap();
            assert_eq!(h1_get(tcp).await, StatusCode::OK);
            assert_eq!(forwarded_for(&origin).0, BALANCER);
        }
    })
    .await;
}

#[tokio::test]
async fn a_header_split_across_writes_is_read_whole() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, "").await;
        for header in [
            v1(addr("192.0.2.7:51234"), addr("198.51.100.1:443")),
            v2(addr("192.0.2.7:51234"), addr("198.51.100.1:443"), false),
        ] {
            let mut tcp = connect_from(BALANCER, proxy.addr).await;
            // A byte at a time for the first 14 (past the v2 signature and
            // into its version byte), then the rest. The pause only spaces
            // the segments out, so that the proxy reads them apart.
            for byte in &header[..14] {
                tcp.write_all(std::slice::from_ref(byte)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tcp.write_all(&header[14..]).await.unwrap();
            let status = h1_get(tls(&proxy, tcp, b"http/1.1").await.expect("TLS")).await;
            assert_eq!(status, StatusCode::OK);
        }
        let seen = origin.seen();
        assert_eq!(seen.len(), 2);
        for request in seen {
            assert_eq!(request.headers["x-forwarded-for"], "192.0.2.7");
        }
    })
    .await;
}

#[tokio::test]
async fn the_bytes_after_the_header_in_the_same_write_are_the_clients() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, "").await;
        let mut tcp = connect_from(BALANCER, proxy.plain_addr.unwrap()).await;
        let mut bytes = v1(addr("192.0.2.7:51234"), addr("198.51.100.1:80"));
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(&bytes).await.unwrap();
        let reply = until_closed(&mut tcp).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert_eq!(forwarded_for(&origin).0, "192.0.2.7");
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_source_is_closed_even_with_a_valid_header() {
    bounded(async {
        let metrics_port = free_port();
        let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, &extra).await;
        let header = v1(addr("192.0.2.7:51234"), addr("198.51.100.1:80"));
        for listener in [proxy.plain_addr.unwrap(), proxy.addr] {
            let mut tcp = connect_from(STRANGER, listener).await;
            // The write may fail if the proxy has closed the connection.
            let _ = tcp.write_all(&header).await;
            let _ = tcp
                .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            assert!(until_closed(&mut tcp).await.is_empty());
        }
        // Without a header, too.
        let tcp = connect_from(STRANGER, proxy.addr).await;
        assert!(tls(&proxy, tcp, b"h2").await.is_err());
        // The balancer's address is served on the same listener.
        let mut tcp = connect_from(BALANCER, proxy.plain_addr.unwrap()).await;
        tcp.write_all(&header).await.unwrap();
        assert_eq!(h1_get(tcp).await, StatusCode::OK);
        assert_eq!(origin.seen().len(), 1);
        let metrics = metrics_text(metrics_port).await;
        assert!(
            metrics.contains("linkpush_proxy_protocol_rejections_total{reason=\"untrusted\"} 3"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_malformed_header_is_closed_before_the_origin() {
    bounded(async {
        let metrics_port = free_port();
        let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, &extra).await;
        let plain = proxy.plain_addr.unwrap();
        let bad: [&[u8]; 5] = [
            // A request with no header.
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            // A client's own header where the balancer's should be.
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 80 extra\r\nGET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51234\r\nGET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x0c",
        ];
        for bytes in bad {
            let mut tcp = connect_from(BALANCER, plain).await;
            tcp.write_all(bytes).await.unwrap();
            let reply = until_closed(&mut tcp).await;
            assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
        }
        // A v1 line that never ends within 107 bytes.
        let mut tcp = connect_from(BALANCER, plain).await;
        let long = format!("PROXY UNKNOWN {}", "x".repeat(200));
        tcp.write_all(long.as_bytes()).await.unwrap();
        assert!(until_closed(&mut tcp).await.is_empty());
        // A TLS client with no header.
        let tcp = connect_from(BALANCER, proxy.addr).await;
        assert!(tls(&proxy, tcp, b"h2").await.is_err());
        // A TCP health check: connected, closed, nothing sent. Not counted.
        let mut tcp = connect_from(BALANCER, plain).await;
        tcp.shutdown().await.unwrap();
        assert!(until_closed(&mut tcp).await.is_empty());
        assert!(origin.seen().is_empty(), "{:?}", origin.seen());
        let metrics = metrics_text(metrics_port).await;
        assert!(
            metrics.contains("linkpush_proxy_protocol_rejections_total{reason=\"invalid\"} 7"),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_header_that_does_not_come_in_time_closes_the_connection() {
    bounded(async {
        let metrics_port = free_port();
        let extra = format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [timeouts]\nclient_header_read = \"300ms\"\n"
        );
        let origin = TestOrigin::routes(site()).await;
        let proxy = start(&origin, &extra).await;
        let mut tcp = connect_from(BALANCER, proxy.plain_addr.unwrap()).await;
        tcp.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        assert!(until_closed(&mut tcp).await.is_empty());
        let metrics = metrics_text(metrics_port).await;
        assert!(
            metrics.contains("linkpush_proxy_protocol_rejections_total{reason=\"timeout\"} 1"),
            "{metrics}"
        );
    })
    .await;
}

/// One navigation to `/` through the balancer for the client `client`,
/// by a browser that takes no pushes; the links of the 103s before the
/// response.
async fn visit(proxy: &TestProxy, client: &str) -> Vec<String> {
    use std::future::poll_fn;
    let mut tcp = connect_from(BALANCER, proxy.addr).await;
    tcp.write_all(&v1(addr(client), addr("198.51.100.1:443")))
        .await
        .unwrap();
    let io = tls(proxy, tcp, b"h2").await.expect("TLS");
    let (send, connection) = h2::client::Builder::new()
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let client = H2Client::from_parts(send, "localhost".to_owned());
    let request = client
        .request("GET", "/")
        .header("sec-fetch-mode", "navigate")
        .header("accept", "text/html")
        .body(())
        .unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let mut hinted = Vec::new();
    while let Some(hint) = poll_fn(|cx| response.poll_informational(cx)).await {
        for value in hint.unwrap().headers().get_all("link") {
            hinted.push(value.to_str().unwrap().to_owned());
        }
    }
    let response = response.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    read_body(response.into_body()).await.unwrap();
    hinted
}

#[tokio::test]
async fn hints_are_learned_from_distinct_clients_behind_one_balancer() {
    bounded(async {
        let link = "</a.css>; rel=preload; as=style";
        let page = Routes::new().route("/", Resp::html("<p>page</p>").link(link));
        let origin = TestOrigin::routes(page).await;
        // Three distinct clients must have been sent a link (the default).
        let proxy = start(&origin, "[hints]\nlearn = true\n").await;
        // One client over and over, through the one balancer address: it
        // counts once, so nothing is learned.
        for _ in 0..4 {
            assert!(visit(&proxy, "192.0.2.1:40000").await.is_empty());
        }
        // Two more clients, on the same balancer connection address.
        for client in ["192.0.2.2:40000", "192.0.2.3:40000"] {
            assert!(visit(&proxy, client).await.is_empty());
        }
        assert_eq!(visit(&proxy, "192.0.2.4:40000").await, vec![link]);
    })
    .await;
}

/// What an origin that wants PROXY v2 headers saw: per connection, the
/// header's source and destination (`None` for `LOCAL`), and the requests
/// it carried.
#[derive(Default)]
struct Told {
    connections: std::sync::Mutex<Vec<(Named, usize)>>,
}

/// The source and destination a PROXY header named; `None` for `LOCAL`.
type Named = Option<(SocketAddr, SocketAddr)>;

/// An HTTP/1.1 origin on 127.0.0.1 that reads a PROXY v2 header at the
/// start of every connection (refusing one without), then serves requests
/// on it with keep-alive.
async fn origin_wanting_headers() -> (SocketAddr, Arc<Told>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let told = Arc::new(Told::default());
    let record = told.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let told = record.clone();
            tokio::spawn(async move {
                // Exactly the header: 16 bytes, then the length they give.
                let mut head = vec![0u8; 16];
                if stream.read_exact(&mut head).await.is_err() {
                    return;
                }
                let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
                let mut rest = vec![0u8; length];
                if stream.read_exact(&mut rest).await.is_err() {
                    return;
                }
                head.extend_from_slice(&rest);
                let header = match linkpush::proxy_protocol::parse(&head) {
                    Ok(linkpush::proxy_protocol::Parsed::Complete { header, .. }) => header,
                    _ => return,
                };
                let named = match header {
                    linkpush::proxy_protocol::Header::Proxied {
                        source,
                        destination,
                    } => Some((source, destination)),
                    linkpush::proxy_protocol::Header::Unknown => None,
                };
                let index = {
                    let mut connections = told.connections.lock().unwrap();
                    connections.push((named, 0));
                    connections.len() - 1
                };
                let service = hyper::service::service_fn(move |_request| {
                    let told = told.clone();
                    async move {
                        told.connections.lock().unwrap()[index].1 += 1;
                        Ok::<_, std::convert::Infallible>(Resp::new(200, "told").into_response())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, told)
}

#[tokio::test]
async fn an_upstream_that_wants_proxy_headers_is_told_each_client_and_never_mixes_them() {
    bounded(async {
        let (origin, told) = origin_wanting_headers().await;
        let extra = format!(
            "[upstreams.app]\nservers = [\"http://{origin}\"]\nproxy_protocol = true\n\
             health_check_path = \"/health\"\nhealth_check_interval = \"100ms\"\n\
             [[sites]]\ndefault = true\nupstream = \"app\"\n"
        );
        let proxy = TestProxy::start_listening(
            "http://127.0.0.1:9",
            "[[listen]]\naddress = \"127.0.0.1:0\"\n",
            &extra,
        )
        .await;
        // Two clients from their own addresses, three requests each on one
        // connection, one after the other.
        let mut seen_from = Vec::new();
        for source in ["127.0.0.2", "127.0.0.3"] {
            let mut client = proxy.h2_from(source.parse().unwrap(), false).await;
            for _ in 0..3 {
                assert_eq!(client.get("/").await.status, 200);
            }
            seen_from.push(source);
        }
        let connections = told.connections.lock().unwrap().clone();
        let proxied: Vec<(SocketAddr, SocketAddr, usize)> = connections
            .iter()
            .filter_map(|(named, requests)| named.map(|(s, d)| (s, d, *requests)))
            .collect();
        // One origin connection per client connection, its requests all
        // on it, and the header names that client and the proxy's address.
        assert_eq!(proxied.len(), 2, "{connections:?}");
        for ((source, destination, requests), client) in proxied.iter().zip(seen_from) {
            assert_eq!(source.ip().to_string(), client);
            assert_ne!(source.port(), 0);
            assert_eq!(*destination, proxy.addr);
            assert_eq!(*requests, 3, "{connections:?}");
        }
        // Health checks come on connections of their own, marked LOCAL.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let local = told
            .connections
            .lock()
            .unwrap()
            .iter()
            .filter(|(named, _)| named.is_none())
            .count();
        assert!(local >= 1, "no LOCAL health check connection");
    })
    .await;
}
