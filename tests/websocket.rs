//! WebSocket and other protocol switches: an HTTP/1.1 upgrade the origin
//! accepts becomes a tunnel, an HTTP/2 extended CONNECT (RFC 8441) becomes
//! a WebSocket handshake toward the origin and a tunnel on the stream, and
//! an upgrade the origin refuses leaves the client's connection HTTP.
//!
//! Real WebSocket endpoints on both sides: a tokio-tungstenite echo server
//! as the origin, and tokio-tungstenite clients over the proxy's TLS.

mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::Response as WsResponse;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Messages per test, each of `MESSAGE` bytes: 1 MiB each way.
const MESSAGES: usize = 16;
const MESSAGE: usize = 64 * 1024;

/// A WebSocket echo server on plain TCP, keeping the handshake request
/// heads it accepted.
struct WsOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<HeaderMap>>>,
}

impl WsOrigin {
    async fn start() -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // The error type is tungstenite's callback signature.
                    #[allow(clippy::result_large_err)]
                    let keep = |request: &WsRequest, mut response: WsResponse| {
                        // The request target goes in as a field of its own.
                        let mut head = request.headers().clone();
                        if let Ok(target) = request.uri().to_string().parse() {
                            head.insert("x-seen-target", target);
                        }
                        seen.lock().unwrap().push(head);
                        // Agree to the subprotocol the client offered.
                        if let Some(offered) = request.headers().get("sec-websocket-protocol") {
                            response
                                .headers_mut()
                                .insert("sec-websocket-protocol", offered.clone());
                        }
                        Ok::<_, ErrorResponse>(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, keep).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_binary() || message.is_text() {
                            if ws.send(message).await.is_err() {
                                return;
                            }
                        } else if message.is_close() {
                            let _ = ws.close(None).await;
                            return;
                        }
                    }
                });
            }
        });
        WsOrigin { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn heads(&self) -> Vec<HeaderMap> {
        self.heads.lock().unwrap().clone()
    }
}

/// An origin that answers every request head with `reply` and keeps every
/// byte it is sent, so a test can tell what reached it, and how.
struct BytesOrigin {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    heads: watch::Receiver<usize>,
}

impl BytesOrigin {
    async fn start(reply: &'static [u8]) -> BytesOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let (count, heads) = watch::channel(0usize);
        let all = received.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let all = all.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        all.lock().unwrap().extend_from_slice(&buf[..n]);
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = find(&pending, b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            count.send_modify(|c| *c += 1);
                            if tcp.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        BytesOrigin {
            addr,
            received,
            heads,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    async fn wait_for_heads(&mut self, n: usize) {
        step("origin request heads", self.heads.wait_for(|c| *c >= n))
            .await
            .expect("origin running");
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Read one HTTP/1.1 response (head and Content-Length body) off `io`;
/// `None` if the connection closed first.
async fn read_response<IO: AsyncRead + Unpin>(io: &mut IO) -> Option<String> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            if bytes.len() >= end + 4 + length {
                return Some(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `MESSAGES` binary messages and check each comes back, reading and
/// writing at once so that no window or socket buffer has to hold it all.
async fn echo_a_megabyte<S>(ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let message = |i: usize| {
        let mut data = vec![0u8; MESSAGE];
        for (j, byte) in data.iter_mut().enumerate() {
            *byte = (i * 31 + j * 7) as u8;
        }
        data
    };
    let send = async {
        for i in 0..MESSAGES {
            sink.send(Message::binary(message(i))).await.expect("send");
        }
        sink
    };
    let receive = async {
        for i in 0..MESSAGES {
            let echoed = stream.next().await.expect("echo").expect("echo ok");
            assert_eq!(echoed.into_data(), Bytes::from(message(i)), "message {i}");
        }
        stream
    };
    let (mut sink, _stream) = tokio::join!(send, receive);
    let _ = sink.close().await;
}

/// A WebSocket client over TLS, ALPN http/1.1.
async fn h1_websocket(
    proxy: &TestProxy,
    path: &str,
) -> WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = proxy.tls(&[b"http/1.1"]).await;
    let url = format!("wss://localhost:{}{path}", proxy.addr.port());
    let mut request = url.into_client_request().expect("request");
    // A hop-by-hop field named in Connection beside the upgrade.
    request.headers_mut().insert(
        "connection",
        http::HeaderValue::from_static("Upgrade, X-Hop"),
    );
    request
        .headers_mut()
        .insert("x-hop", http::HeaderValue::from_static("1"));
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("chat"),
    );
    let (ws, response) = step(
        "websocket handshake",
        tokio_tungstenite::client_async(request, tls),
    )
    .await
    .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

#[tokio::test]
async fn h1_websocket_echoes_a_megabyte_each_way() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let ws = h1_websocket(&proxy, "/chat?room=1").await;
        echo_a_megabyte(ws).await;
        let heads = origin.heads();
        assert_eq!(heads.len(), 1);
        let head = &heads[0];
        assert_eq!(head["upgrade"], "websocket");
        assert_eq!(head["connection"], "upgrade");
        assert_eq!(head["sec-websocket-protocol"], "chat");
        assert!(head.contains_key("sec-websocket-key"));
        assert!(!head.contains_key("x-hop"), "{head:?}");
        assert_eq!(head["x-forwarded-for"], "127.0.0.1");
    })
    .await;
}

/// The client's side of an HTTP/2 stream as bytes, for a WebSocket over
/// an extended CONNECT.
struct H2Io {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buffered: Bytes,
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.buffered.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.buffered = data;
                }
            }
        }
        let n = buf.remaining().min(this.buffered.len());
        buf.put_slice(&this.buffered.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.send.reserve_capacity(buf.len());
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let n = n.min(buf.len());
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// Send an extended CONNECT for `protocol` once the proxy's SETTINGS
/// allow it; the response head and the stream's send half.
async fn extended_connect(
    client: &H2Client,
    protocol: &'static str,
    path: &str,
) -> (http::Response<h2::RecvStream>, h2::SendStream<Bytes>) {
    let mut send = step("ready", client.send.clone().ready())
        .await
        .expect("h2 ready");
    // The proxy's SETTINGS come with the handshake; the client may not
    // have read them yet.
    while !send.is_extended_connect_protocol_enabled() {
        tokio::task::yield_now().await;
    }
    let mut request = client
        .request("CONNECT", path)
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .header("sec-websocket-extensions", "x-test-extension")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static(protocol));
    let (response, stream) = send.send_request(request, false).expect("CONNECT sent");
    let response = step("CONNECT response", response)
        .await
        .expect("CONNECT answered");
    (response, stream)
}

#[tokio::test]
async fn h2_extended_connect_websocket_echoes_a_megabyte_each_way() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let (response, send) = extended_connect(&client, "websocket", "/chat").await;
        assert_eq!(response.status(), StatusCode::OK);
        for gone in ["sec-websocket-accept", "upgrade", "connection"] {
            assert!(!response.headers().contains_key(gone), "{gone}");
        }
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        let io = H2Io {
            send,
            recv: response.into_body(),
            buffered: Bytes::new(),
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        echo_a_megabyte(ws).await;
        let heads = origin.heads();
        assert_eq!(heads.len(), 1);
        let head = &heads[0];
        assert_eq!(head["upgrade"], "websocket");
        assert_eq!(head["connection"], "upgrade");
        assert_eq!(head["sec-websocket-version"], "13");
        assert_eq!(head["sec-websocket-protocol"], "chat");
        assert_eq!(head["sec-websocket-extensions"], "x-test-extension");
        assert!(head.contains_key("sec-websocket-key"));
        // `:path` becomes the request target, `:authority` the Host.
        assert_eq!(head["x-seen-target"], "/chat");
        assert_eq!(
            head["host"],
            format!("localhost:{}", proxy.addr.port()).as_str()
        );
    })
    .await;
}

#[tokio::test]
async fn h2_extended_connect_with_another_protocol_gets_501() {
    bounded(async {
        let mut origin =
            BytesOrigin::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let (response, _send) = extended_connect(&client, "chat-over-h2", "/chat").await;
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
        // The connection still serves requests, and the origin saw only
        // those.
        let mut client = client;
        assert_eq!(client.get("/next").await.status, StatusCode::OK);
        origin.wait_for_heads(1).await;
        assert!(!origin.received().contains("/chat"));
    })
    .await;
}

#[tokio::test]
async fn h2_extended_connect_the_origin_refuses_is_an_ordinary_response() {
    bounded(async {
        let origin = BytesOrigin::start(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\nUpgrade: websocket\r\n\r\nnope",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let (response, _send) = extended_connect(&client, "websocket", "/chat").await;
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert!(!response.headers().contains_key("upgrade"));
        let body = step("426 body", read_body(response.into_body())).await;
        assert_eq!(body, Ok(Bytes::from("nope")));
    })
    .await;
}

const UPGRADE_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn h1_upgrade_the_origin_refuses_leaves_the_connection_http() {
    bounded(async {
        let mut origin = BytesOrigin::start(
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\nUpgrade: websocket\r\n\r\nnope",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut tls = proxy.tls(&[b"http/1.1"]).await;
        tls.write_all(UPGRADE_REQUEST).await.unwrap();
        let first = step("first response", read_response(&mut tls)).await;
        let first = first.expect("426 response");
        assert!(first.starts_with("HTTP/1.1 426"), "{first}");
        // What would be tunnel bytes had the origin switched: a request.
        tls.write_all(b"GET /second HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let second = step("second response", read_response(&mut tls)).await;
        let second = second.expect("second response");
        assert!(second.starts_with("HTTP/1.1 426"), "{second}");
        origin.wait_for_heads(2).await;
        let received = origin.received();
        // The upgrade was asked of the origin ...
        assert!(received.contains("upgrade: websocket\r\n"), "{received}");
        // ... and the next bytes reached it as a request the proxy parsed
        // and rebuilt, never as the client wrote them.
        let at = received
            .find("GET /second HTTP/1.1\r\n")
            .expect("second request");
        let second_request = &received[at..];
        assert!(
            second_request.contains("x-forwarded-for: 127.0.0.1\r\n"),
            "{second_request}"
        );
        assert!(!received.contains("Host: localhost\r\n\r\n"), "{received}");
    })
    .await;
}

#[tokio::test]
async fn h1_garbage_after_a_refused_upgrade_never_reaches_the_origin() {
    bounded(async {
        let mut origin =
            BytesOrigin::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut tls = proxy.tls(&[b"http/1.1"]).await;
        tls.write_all(UPGRADE_REQUEST).await.unwrap();
        let first = step("first response", read_response(&mut tls)).await;
        assert!(first.expect("200").starts_with("HTTP/1.1 200"));
        origin.wait_for_heads(1).await;
        tls.write_all(b"\x81\x85smuggled-frame\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = step("proxy closes", tls.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 400"),
            "{rest}"
        );
        assert!(!origin.received().contains("smuggled"));
    })
    .await;
}

#[tokio::test]
async fn h1_upgrade_to_h2c_or_with_a_body_is_not_forwarded() {
    bounded(async {
        let mut origin = BytesOrigin::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut tls = proxy.tls(&[b"http/1.1"]).await;
        let requests: [&[u8]; 5] = [
            b"GET /h2c HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n",
            b"GET /body HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /chunked HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /post HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
            b"GET /both HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
        ];
        for (i, request) in requests.iter().enumerate() {
            tls.write_all(request).await.unwrap();
            let reply = step("response", read_response(&mut tls)).await;
            assert!(reply.expect("response").starts_with("HTTP/1.1 200"));
            origin.wait_for_heads(i + 1).await;
        }
        let received = origin.received();
        let before_last = received.find("GET /both").expect("last request");
        let (plain, last) = received.split_at(before_last);
        assert!(!plain.contains("upgrade"), "{plain}");
        assert!(!plain.to_ascii_lowercase().contains("http2-settings"), "{plain}");
        // Of "h2c, websocket", only websocket is asked of the origin.
        assert!(last.contains("upgrade: websocket\r\n"), "{last}");
        assert!(!last.contains("h2c"), "{last}");
    })
    .await;
}

#[tokio::test]
async fn a_tunnel_pinged_stays_open_and_one_idle_for_tunnel_idle_is_closed() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let proxy = TestProxy::start(&origin.url(), "[timeouts]\ntunnel_idle = \"300ms\"\n").await;
        let mut ws = h1_websocket(&proxy, "/idle").await;
        // Pings more often than tunnel_idle, for four times as long: bytes
        // keep crossing, so the tunnel stays open.
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
            let pong = step("pong", ws.next()).await;
            assert!(
                matches!(pong, Some(Ok(Message::Pong(_)))),
                "the tunnel closed while pinged: {pong:?}"
            );
        }
        ws.send(Message::text("still here")).await.unwrap();
        let echoed = step("echo", ws.next()).await;
        assert_eq!(
            echoed.expect("echo").expect("echo ok"),
            Message::text("still here")
        );
        // Then silence: closed.
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an idle tunnel is closed");
        assert!(
            !matches!(next, Some(Ok(Message::Binary(_) | Message::Text(_)))),
            "{next:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn tunnels_close_when_the_shutdown_grace_period_ends() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let mut proxy =
            TestProxy::start(&origin.url(), "[timeouts]\nshutdown_grace = \"300ms\"\n").await;
        let mut ws = h1_websocket(&proxy, "/long").await;
        ws.send(Message::text("hello")).await.unwrap();
        assert!(step("echo", ws.next()).await.is_some());
        let done = proxy.shutdown();
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the tunnel is closed after the grace period");
        assert!(
            !matches!(next, Some(Ok(Message::Binary(_) | Message::Text(_)))),
            "{next:?}"
        );
        tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .expect("the proxy drains")
            .expect("proxy task");
    })
    .await;
}

#[tokio::test]
async fn an_open_tunnel_holds_its_origin_connection() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let extra = "max_concurrent_requests = 1\n[timeouts]\norigin_response_header = \"500ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let mut ws = h1_websocket(&proxy, "/one").await;
        // The one origin connection is the tunnel's: the next handshake
        // waits for it, then gets a 503.
        let mut tls = proxy.tls(&[b"http/1.1"]).await;
        tls.write_all(UPGRADE_REQUEST).await.unwrap();
        let waited = step("503", read_response(&mut tls)).await;
        assert!(waited.expect("503").starts_with("HTTP/1.1 503"));
        // Closing the tunnel gives the connection back.
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        let ws = h1_websocket(&proxy, "/two").await;
        echo_a_megabyte(ws).await;
    })
    .await;
}

#[tokio::test]
async fn h2_websocket_and_requests_share_a_connection() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let (first, first_send) = extended_connect(&client, "websocket", "/a").await;
        let (second, second_send) = extended_connect(&client, "websocket", "/b").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(second.status(), StatusCode::OK);
        let open = |response: http::Response<h2::RecvStream>, send| {
            WebSocketStream::from_raw_socket(
                H2Io {
                    send,
                    recv: response.into_body(),
                    buffered: Bytes::new(),
                },
                Role::Client,
                None,
            )
        };
        let (a, b) = tokio::join!(open(first, first_send), open(second, second_send));
        tokio::join!(echo_a_megabyte(a), echo_a_megabyte(b));
    })
    .await;
}

#[tokio::test]
async fn h2_reset_ends_the_tunnel_and_frees_its_origin_connection() {
    bounded(async {
        let origin = WsOrigin::start().await;
        let extra = "max_concurrent_requests = 1\n[timeouts]\norigin_response_header = \"5s\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let client = proxy.h2(false).await;
        let (response, mut send) = extended_connect(&client, "websocket", "/first").await;
        assert_eq!(response.status(), StatusCode::OK);
        send.send_reset(h2::Reason::CANCEL);
        // The only origin connection comes free for the next tunnel.
        let (response, send) = extended_connect(&client, "websocket", "/second").await;
        assert_eq!(response.status(), StatusCode::OK);
        let io = H2Io {
            send,
            recv: response.into_body(),
            buffered: Bytes::new(),
        };
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        ws.send(Message::text("after reset")).await.unwrap();
        let echoed = step("echo", ws.next()).await;
        assert_eq!(
            echoed.expect("echo").expect("echo ok"),
            Message::text("after reset")
        );
    })
    .await;
}

#[tokio::test]
async fn a_101_the_client_did_not_ask_for_gets_502() {
    bounded(async {
        // Switches to h2c, or answers a key that is not the proxy's.
        let origin = BytesOrigin::start(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut tls = proxy.tls(&[b"http/1.1"]).await;
        tls.write_all(UPGRADE_REQUEST).await.unwrap();
        let reply = step("response", read_response(&mut tls)).await;
        assert!(reply.expect("502").starts_with("HTTP/1.1 502"));

        let origin = BytesOrigin::start(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let (response, _send) = extended_connect(&client, "websocket", "/chat").await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    })
    .await;
}
