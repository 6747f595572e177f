//! Timeouts, limits and shutdown: slow or stuck clients are cut off on
//! time, the connection cap holds new clients back without hurting existing
//! ones, graceful shutdown drains in-flight work, and a client that stops
//! reading holds the origin back instead of filling the proxy's memory.
//! Every timeout is configured short so each test takes well under seconds.

mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Read from a socket until the peer closes it (or resets it), within
/// `wait`. Returns the time it took and the bytes that came first.
async fn until_closed(tcp: &mut TcpStream, wait: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(wait.saturating_sub(started.elapsed()), tcp.read(&mut buf)).await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), received)),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read frames until the proxy closes the connection, within `wait`;
/// returns the time it took.
async fn until_h2_closed(raw: &mut RawH2, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        match raw.next(wait.saturating_sub(started.elapsed())).await {
            RawEvent::Frame(_) => {}
            RawEvent::Closed => return Some(started.elapsed()),
            RawEvent::TimedOut => return None,
        }
    }
}

fn site() -> Routes {
    Routes::new()
        .route("/", Resp::new(200, "home"))
        .route("/big", Resp::new(200, vec![b'x'; 64 * 1024]))
}

// --- TLS handshake ---------------------------------------------------------

#[tokio::test]
async fn tls_client_that_never_sends_a_client_hello_is_closed_after_the_handshake_timeout() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy =
            TestProxy::start(&origin.url(), "[timeouts]\ntls_handshake = \"300ms\"\n").await;
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (elapsed, _) = until_closed(&mut tcp, Duration::from_secs(3))
            .await
            .expect("connection still open 3 s after a 300 ms handshake timeout");
        assert!(
            elapsed >= Duration::from_millis(250),
            "closed after {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(2), "closed after {elapsed:?}");
    })
    .await;
}

#[tokio::test]
async fn tls_client_hello_trickled_a_byte_at_a_time_is_closed_at_the_handshake_deadline() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = TestProxy::start(&origin.url(), "[timeouts]\ntls_handshake = \"300ms\"\n").await;
        let mut hello = Vec::new();
        let config = Arc::new(proxy.cert.client_config(&[b"h2"]));
        let name = ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(config, name)
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut read, mut write) = tcp.into_split();
        let started = Instant::now();
        // One byte every 100 ms: the whole hello would take many seconds.
        let trickle = async move {
            for byte in hello {
                if write.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let closed = async move {
            let mut buf = [0u8; 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = closed => {}
            _ = trickle => unreachable!(),
            _ = tokio::time::sleep(Duration::from_secs(3)) => panic!("trickled handshake still open after 3 s"),
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1500), "closed after {elapsed:?}");
    })
    .await;
}

#[tokio::test]
async fn tls_client_offering_no_supported_alpn_protocol_gets_a_handshake_alert() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let offers: [&[&[u8]]; 2] = [&[b"spdy/3.1"], &[b"h2c", b"http/1.0"]];
        for alpn in offers {
            let connector = TlsConnector::from(Arc::new(proxy.cert.client_config(alpn)));
            let tcp = TcpStream::connect(proxy.addr).await.unwrap();
            let result = step(
                "handshake",
                connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
            )
            .await;
            let error = result.expect_err("handshake without a common ALPN protocol");
            assert!(
                error.to_string().to_lowercase().contains("application"),
                "{alpn:?}: {error}"
            );
        }
        // Offering h2 (or http/1.1) negotiates it.
        let tls = proxy.tls(&[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    })
    .await;
}

/// A ClientHello that offers at most TLS 1.1 (legacy_version 0x0302 and no
/// supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    let suites: [u16; 5] = [0xc013, 0xc014, 0x002f, 0x0035, 0x000a];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_client_hello_below_tls_1_2_is_refused_and_tls_1_2_accepted() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(&tls11_client_hello()).await.unwrap();
        let (_, reply) = until_closed(&mut tcp, Duration::from_secs(3))
            .await
            .expect("TLS 1.1 hello left the connection open");
        // An alert record (0x15), or nothing: never a ServerHello (0x16).
        assert!(
            reply.is_empty() || reply[0] == 0x15,
            "server answered a TLS 1.1 hello with {}",
            show(&reply[..reply.len().min(16)])
        );

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(proxy.cert.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let tls = step(
            "TLS 1.2 handshake",
            TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("TLS 1.2 is accepted");
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
    })
    .await;
}

// --- Preface and header timeouts -------------------------------------------

#[tokio::test]
async fn h2_connection_without_a_preface_is_closed_after_the_header_timeout() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = TestProxy::start(
            &origin.url(),
            "[timeouts]\nclient_header_read = \"300ms\"\n",
        )
        .await;
        // Nothing at all, then only part of the preface.
        for sent in [&b""[..], &H2_PREFACE[..10]] {
            let mut raw = RawH2::without_preface(&proxy).await;
            raw.auto_ack = false;
            raw.write(sent).await;
            let elapsed = until_h2_closed(&mut raw, Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("{} sent: still open after 3 s", sent.len()));
            assert!(
                elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
                "{} bytes sent: closed after {elapsed:?}",
                sent.len()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn h2_header_block_trickled_in_continuation_frames_is_cut_off() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let extra = "[timeouts]\nclient_header_read = \"300ms\"\nclient_idle = \"500ms\"\nshutdown_grace = \"200ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let mut raw = RawH2::connect(&proxy).await;
        // Nothing may interleave with the header block: settle first, then
        // stop acknowledging (a PING or SETTINGS ACK mid-block is an error).
        raw.settle().await;
        raw.auto_ack = false;
        let fields = with_padding(raw.request("GET", "/"));
        let block = hpack_literals(&fields);
        let started = Instant::now();
        // HEADERS without END_HEADERS, then a few CONTINUATION frames well
        // apart: too few for the frame-count limit to matter.
        raw.frame(h2frame::HEADERS, h2frame::END_STREAM, 1, &block[..8])
            .await;
        let mut closed = false;
        for i in 0..3 {
            match raw.next(Duration::from_millis(300)).await {
                RawEvent::Closed => {
                    closed = true;
                    break;
                }
                RawEvent::Frame(frame) if frame.kind == h2frame::GOAWAY => break,
                _ => {}
            }
            raw.frame(h2frame::CONTINUATION, 0, 1, &block[8 + i..9 + i])
                .await;
        }
        if !closed {
            closed = until_h2_closed(&mut raw, Duration::from_secs(3))
                .await
                .is_some();
        }
        assert!(closed, "a never-finished header block kept the connection open");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(origin.seen().is_empty());
    })
    .await;
}

/// A request block long enough to split across several frames.
fn with_padding(mut fields: Vec<Field>) -> Vec<Field> {
    fields.push(field("x-pad", "p".repeat(64)));
    fields
}

// --- Idle and zero window --------------------------------------------------

#[tokio::test]
async fn h2_idle_connection_without_streams_gets_goaway_after_the_idle_timeout() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let extra = "[timeouts]\nclient_idle = \"300ms\"\nshutdown_grace = \"200ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let mut raw = RawH2::connect(&proxy).await;
        let started = Instant::now();
        let (goaways, _) = raw.until_goaway_or_close(Duration::from_secs(3)).await;
        let elapsed = started.elapsed();
        assert_eq!(
            goaways.first().map(|g| g.1),
            Some(h2code::NO_ERROR),
            "no GOAWAY within 3 s"
        );
        assert!(
            elapsed >= Duration::from_millis(250),
            "GOAWAY after {elapsed:?}"
        );
        assert!(
            until_h2_closed(&mut raw, Duration::from_secs(3))
                .await
                .is_some(),
            "connection left open after the idle GOAWAY"
        );
    })
    .await;
}

#[tokio::test]
async fn h2_zero_window_client_gets_goaway_after_the_idle_timeout() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        // The stalled stream is reset after client_write, and the then idle
        // connection gets its GOAWAY after client_idle.
        let extra = "[timeouts]\nclient_idle = \"400ms\"\nclient_write = \"200ms\"\nshutdown_grace = \"200ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let mut raw =
            RawH2::connect_with_settings(&proxy, &[(h2setting::INITIAL_WINDOW_SIZE, 0)]).await;
        let fields = raw.request("GET", "/big");
        raw.headers(1, &fields, true).await;
        let started = Instant::now();
        let mut data_bytes = 0;
        let mut goaway = None;
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(4) {
            match raw.next(Duration::from_secs(4) - started.elapsed()).await {
                RawEvent::Frame(frame) if frame.kind == h2frame::DATA => {
                    data_bytes += frame.payload.len();
                }
                RawEvent::Frame(frame) if frame.kind == h2frame::GOAWAY => {
                    goaway = Some((frame.last_stream_id(), frame.error_code()));
                    break;
                }
                RawEvent::Frame(_) => {}
                RawEvent::Closed => {
                    closed = true;
                    break;
                }
                RawEvent::TimedOut => break,
            }
        }
        assert_eq!(data_bytes, 0, "DATA sent into a zero window");
        assert!(
            goaway.is_some(),
            "no GOAWAY within 4 s (closed: {closed}) for a zero-window client"
        );
        assert!(started.elapsed() >= Duration::from_millis(350));
    })
    .await;
}

// --- Connection cap --------------------------------------------------------

#[tokio::test]
async fn connection_cap_holds_new_connections_back_and_leaves_existing_ones_working() {
    bounded(async {
        let origin = TestOrigin::routes(site()).await;
        let proxy = TestProxy::start(&origin.url(), "[limits]\nmax_connections = 2\n").await;
        let mut first = proxy.h2(false).await;
        let mut second = proxy.h2(false).await;
        for client in [&mut first, &mut second] {
            let request = client.request("GET", "/").body(()).unwrap();
            let reply = client.try_exchange(request, None).await.expect("served");
            assert_eq!(reply.status, StatusCode::OK);
        }

        let connector = TlsConnector::from(Arc::new(proxy.cert.client_config(&[b"h2"])));
        let addr = proxy.addr;
        let mut third = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await?;
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut third)
                .await
                .is_err(),
            "a connection over the cap was served at once"
        );
        // The existing connections are unaffected.
        for client in [&mut first, &mut second] {
            let request = client.request("GET", "/").body(()).unwrap();
            let reply = client.try_exchange(request, None).await.expect("served");
            assert_eq!(reply.status, StatusCode::OK);
        }
        // A slot frees up: the waiting connection is served.
        drop(first);
        let tls = step("held-back handshake", third)
            .await
            .unwrap()
            .expect("handshake once a slot is free");
        let (send, connection) = step("h2 handshake", h2::client::handshake(tls))
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut third = H2Client::from_parts(send, format!("localhost:{}", addr.port()));
        let request = third.request("GET", "/").body(()).unwrap();
        let reply = third.try_exchange(request, None).await.expect("served");
        assert_eq!(reply.status, StatusCode::OK);
    })
    .await;
}

// --- Graceful shutdown -----------------------------------------------------

/// An origin whose `/slow` answers only when released.
async fn gated_origin() -> (TestOrigin, Arc<tokio::sync::Notify>) {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let origin = TestOrigin::start(Arc::new(move |request| {
        let gate = gate.clone();
        Box::pin(async move {
            if request.uri().path() == "/slow" {
                gate.notified().await;
                Resp::new(200, "late").into_response()
            } else {
                Resp::new(200, "quick").into_response()
            }
        })
    }))
    .await;
    (origin, release)
}

#[tokio::test]
async fn graceful_shutdown_sends_two_goaways_and_finishes_the_in_flight_stream() {
    bounded(async {
        let (mut origin, release) = gated_origin().await;
        let mut proxy =
            TestProxy::start(&origin.url(), "[timeouts]\nshutdown_grace = \"5s\"\n").await;
        let mut raw = RawH2::connect(&proxy).await;
        let fields = raw.request("GET", "/slow");
        raw.headers(1, &fields, true).await;
        origin.wait_for(&OriginEvent::Request("/slow".into())).await;
        let done = proxy.shutdown();

        let mut goaways = Vec::new();
        while goaways.len() < 2 {
            match raw.next(Duration::from_secs(3)).await {
                RawEvent::Frame(frame) if frame.kind == h2frame::GOAWAY => {
                    goaways.push((frame.last_stream_id(), frame.error_code()));
                }
                RawEvent::Frame(_) => {}
                other => panic!("{other:?} before two GOAWAYs ({goaways:?})"),
            }
        }
        assert_eq!(
            goaways,
            [(0x7fff_ffff, h2code::NO_ERROR), (1, h2code::NO_ERROR)]
        );

        // A stream opened after the GOAWAY is never served.
        let late = raw.request("GET", "/late");
        raw.headers(3, &late, true).await;

        release.notify_one();
        let outcome = raw.outcome(1).await;
        assert!(outcome.end_stream, "{outcome:?}");
        assert_eq!(outcome.status(), Some(200));
        assert_eq!(outcome.data, b"late");
        assert!(
            until_h2_closed(&mut raw, Duration::from_secs(3))
                .await
                .is_some(),
            "connection left open after draining"
        );
        step("proxy drained", done).await.unwrap();
        assert_eq!(origin.seen_paths(), ["/slow"]);
        // The listener is gone.
        let refused = match TcpStream::connect(proxy.addr).await {
            Err(_) => true,
            Ok(mut tcp) => until_closed(&mut tcp, Duration::from_secs(2))
                .await
                .is_some(),
        };
        assert!(refused, "a new connection was accepted after shutdown");
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_upload_complete() {
    bounded(async {
        let mut origin = TestOrigin::start(Arc::new(|request| {
            Box::pin(async move {
                let received = count_body(request.into_body()).await.unwrap_or(0);
                Resp::new(200, received.to_string()).into_response()
            })
        }))
        .await;
        let mut proxy =
            TestProxy::start(&origin.url(), "[timeouts]\nshutdown_grace = \"5s\"\n").await;
        let client = proxy.h2(false).await;
        let total: u64 = 256 * 1024;
        let request = client
            .request("POST", "/upload")
            .header("content-length", total.to_string())
            .body(())
            .unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, mut upload) = send.send_request(request, false).unwrap();
        let first: u64 = 16 * 1024;
        upload
            .send_data(Bytes::from(vec![b'u'; first as usize]), false)
            .unwrap();
        origin
            .wait_for(&OriginEvent::Request("/upload".into()))
            .await;
        let done = proxy.shutdown();
        step(
            "rest of the upload",
            send_h2_body(&mut upload, total - first, 16 * 1024),
        )
        .await;
        let response = step("response", response).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = step("body", read_body(response.into_body())).await;
        assert_eq!(body, Ok(Bytes::from(total.to_string())));
        step("proxy drained", done).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_closes_connections_still_busy_after_the_grace_period() {
    bounded(async {
        let origin = RawOrigin::start(|_| vec![OriginStep::Hang]).await;
        let mut proxy =
            TestProxy::start(&origin.url(), "[timeouts]\nshutdown_grace = \"300ms\"\n").await;
        let mut raw = RawH2::connect(&proxy).await;
        let fields = raw.request("GET", "/stuck");
        raw.headers(1, &fields, true).await;
        origin
            .wait_until("request at the origin", |o| o.heads().len() == 1)
            .await;
        let started = Instant::now();
        let done = proxy.shutdown();
        let outcome = raw.outcome_within(1, Duration::from_secs(4)).await;
        assert!(!outcome.end_stream, "{outcome:?}");
        assert!(
            outcome.closed || outcome.reset.is_some(),
            "stream neither reset nor closed: {outcome:?}"
        );
        step("proxy stopped", done).await.unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
            "hard close after {elapsed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn h1_graceful_shutdown_finishes_the_in_flight_request_with_connection_close() {
    bounded(async {
        let (mut origin, release) = gated_origin().await;
        let mut proxy =
            TestProxy::start(&origin.url(), "[timeouts]\nshutdown_grace = \"5s\"\n").await;
        let mut client = proxy.h1().await;
        let request = client
            .request("GET", "/slow")
            .body(full(Bytes::new()))
            .unwrap();
        let exchange = tokio::spawn(async move { client.exchange(request).await });
        origin.wait_for(&OriginEvent::Request("/slow".into())).await;
        let done = proxy.shutdown();
        release.notify_one();
        let reply = step("in-flight h1 response", exchange).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), Bytes::from("late"));
        assert_eq!(
            reply.headers.get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        step("proxy drained", done).await.unwrap();
    })
    .await;
}

// --- Slow and stalled readers ----------------------------------------------

#[tokio::test]
async fn h2_slow_reader_gets_the_whole_body_despite_short_unrelated_timeouts() {
    bounded(async {
        let total: u64 = 1536 * 1024;
        let origin = TestOrigin::start(Arc::new(move |_| {
            Box::pin(async move {
                let mut response = http::Response::new(RepeatBody::new(16 * 1024, total).boxed());
                *response.status_mut() = StatusCode::OK;
                response
            })
        }))
        .await;
        let extra = "[timeouts]\norigin_response_header = \"300ms\"\nclient_header_read = \"300ms\"\nclient_idle = \"500ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let client = proxy.h2(false).await;
        let request = client.request("GET", "/slow-reader").body(()).unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = step("head", response).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let started = Instant::now();
        let mut body = response.into_body();
        let mut received = 0u64;
        let mut since_pause = 0u64;
        // About 1.3 MB/s: slower than the proxy could send, and longer in
        // total than every configured timeout.
        while let Some(chunk) = step("next DATA", body.data()).await {
            let chunk = chunk.unwrap_or_else(|e| panic!("body cut off after {received} bytes: {e}"));
            received += chunk.len() as u64;
            since_pause += chunk.len() as u64;
            if since_pause >= 32 * 1024 {
                since_pause = 0;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        assert_eq!(received, total);
        assert!(started.elapsed() > Duration::from_millis(600), "read too fast to prove anything");
    })
    .await;
}

/// An endless body that counts what the origin has produced.
struct CountingBody {
    produced: Arc<AtomicU64>,
    chunk: Bytes,
    left: u64,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.left);
        self.left -= n;
        self.produced.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(
            self.chunk.slice(..n as usize),
        ))))
    }
}

#[tokio::test]
async fn h2_stalled_reader_holds_the_origin_back_instead_of_buffering_its_body() {
    bounded(async {
        let produced = Arc::new(AtomicU64::new(0));
        let counter = produced.clone();
        let origin = TestOrigin::start(Arc::new(move |_| {
            let counter = counter.clone();
            Box::pin(async move {
                use http_body_util::BodyExt;
                let body = CountingBody {
                    produced: counter,
                    chunk: Bytes::from(vec![b'z'; 64 * 1024]),
                    left: 1 << 30,
                };
                http::Response::new(body.boxed_unsync())
            })
        }))
        .await;
        let proxy = TestProxy::start(&origin.url(), "[timeouts]\nclient_idle = \"10s\"\n").await;
        let client = proxy.h2(false).await;
        let request = client.request("GET", "/huge").body(()).unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = step("head", response).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        // Read nothing. Watch the origin until it stops producing.
        let mut last = 0;
        let mut steady = 0;
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = produced.load(Ordering::SeqCst);
            if now == last && now > 0 {
                steady += 1;
                if steady == 3 {
                    break;
                }
            } else {
                steady = 0;
            }
            last = now;
        }
        assert_eq!(
            steady, 3,
            "the origin never stopped producing ({last} bytes)"
        );
        assert!(
            last < 32 << 20,
            "{} MiB read from the origin for a client that read nothing",
            last >> 20
        );
        drop(response);
    })
    .await;
}

#[tokio::test]
async fn h1_keep_alive_connection_idle_past_client_header_read_is_closed() {
    bounded(async {
        let origin = TestOrigin::routes(Routes::new().route("/", Resp::new(200, "ok"))).await;
        let extra = "[timeouts]\nclient_header_read = \"300ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        // The response comes, and then the idle keep-alive connection is
        // closed by the proxy well within the wait.
        let reply = wire::h1_raw(&proxy, request, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&reply.bytes);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(reply.closed, "idle keep-alive connection was left open");
    })
    .await;
}

// --- Uploads ---------------------------------------------------------------

/// An origin that reads the whole request body, then answers with its size.
async fn counting_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|request| {
        Box::pin(async move {
            let received = count_body(request.into_body()).await.unwrap_or(0);
            Resp::new(200, received.to_string()).into_response()
        })
    }))
    .await
}

#[tokio::test]
async fn an_upload_longer_than_the_response_header_timeout_still_gets_its_answer() {
    bounded(async {
        let origin = counting_origin().await;
        // The origin answers at once after the body; the upload itself takes
        // far longer than origin_response_header.
        let extra = "[timeouts]\norigin_response_header = \"300ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let client = proxy.h2(false).await;
        let total: u64 = 64 * 1024;
        let request = client
            .request("POST", "/upload")
            .header("content-length", total.to_string())
            .body(())
            .unwrap();
        let mut send = client.send.clone().ready().await.unwrap();
        let (response, mut upload) = send.send_request(request, false).unwrap();
        for _ in 0..8 {
            // 8 KiB every 150 ms: 1.2 s in all.
            tokio::time::sleep(Duration::from_millis(150)).await;
            send_h2_body_part(&mut upload, 8 * 1024, false).await;
        }
        upload.send_data(Bytes::new(), true).unwrap();
        let response = response.await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = read_body(response.into_body()).await;
        assert_eq!(body, Ok(Bytes::from(total.to_string())));
    })
    .await;
}

#[tokio::test]
async fn an_upload_the_client_stops_sending_gets_408_and_the_origin_request_ends() {
    bounded(async {
        let mut origin = counting_origin().await;
        let extra = "[timeouts]\nclient_body_read = \"300ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "100000")
            .body(())
            .unwrap();
        let mut send = client.send.clone().ready().await.unwrap();
        let (response, mut upload) = send.send_request(request, false).unwrap();
        send_h2_body_part(&mut upload, 1000, false).await;
        let started = Instant::now();
        let response = response.await.expect("response");
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() >= Duration::from_millis(250));
        // The origin saw the request end without its body.
        origin.wait_for(&OriginEvent::ConnectionClosed).await;
        drop(upload);
    })
    .await;
}

/// Send `len` bytes of body on `stream`, within its flow-control window.
async fn send_h2_body_part(stream: &mut h2::SendStream<Bytes>, len: usize, end: bool) {
    let mut left = len;
    while left > 0 {
        stream.reserve_capacity(left);
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .expect("stream open")
            .expect("capacity");
        let n = granted.min(left);
        if n == 0 {
            continue;
        }
        left -= n;
        stream
            .send_data(Bytes::from(vec![b'u'; n]), end && left == 0)
            .expect("send data");
    }
}
