//! What the proxy asks of the origin is bounded, whatever clients do:
//! clients that stop reading are cut off after `timeouts.client_write`,
//! origin connections never exceed `origin.max_concurrent_requests`
//! (pushes included), and other clients keep being served meanwhile.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::*;

/// 64 MiB: far more than loopback socket buffers hold, so a client that
/// never reads leaves the proxy with a write that cannot finish.
const BIG: u64 = 64 << 20;

/// `/big` streams `BIG` bytes, `/small` answers at once, `/page/N` names
/// ten assets of its own, and `/page/N/aK.css` serves 4 KiB.
fn site() -> Handler {
    Arc::new(|request: Request<hyper::body::Incoming>| {
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let mut response = if path == "/big" {
                Response::new(RepeatBody::new(64 * 1024, BIG).boxed())
            } else if path == "/small" {
                Response::new(full("small"))
            } else if path.ends_with(".css") {
                Response::new(full(vec![b'c'; 4096]))
            } else if path.starts_with("/page/") {
                let mut response = Response::new(full("<p>page</p>"));
                for k in 0..10 {
                    let link = format!("<{path}/a{k}.css>; rel=preload; as=style");
                    response
                        .headers_mut()
                        .append("link", link.parse().expect("link value"));
                }
                response
                    .headers_mut()
                    .insert("content-type", "text/html".parse().expect("value"));
                response
            } else {
                let mut response = Response::new(full("no"));
                *response.status_mut() = StatusCode::NOT_FOUND;
                response
            };
            response
                .headers_mut()
                .insert("cache-control", "max-age=60".parse().expect("value"));
            response
        })
    })
}

/// Poll `check` until it holds, within `limit`.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// An HTTP/1.1 client that asks for `/big` and then never reads a byte.
async fn stalled_h1_client(
    proxy: &TestProxy,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tls = proxy.tls(&[b"http/1.1"]).await;
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send request");
    tls.flush().await.expect("flush");
    tls
}

#[tokio::test]
async fn http1_clients_that_stop_reading_are_cut_off_and_free_their_slots() {
    bounded(async {
        let origin = TestOrigin::start(site()).await;
        let extra = "[limits]\nmax_connections = 3\n[timeouts]\nclient_write = \"1s\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        // Every connection slot taken by a client that stopped reading.
        let mut stalled = Vec::new();
        for _ in 0..3 {
            stalled.push(stalled_h1_client(&proxy).await);
        }
        assert!(
            eventually(Duration::from_secs(5), || origin.connections.open() == 3).await,
            "the three downloads reach the origin"
        );
        // A fourth client waits for a slot, and gets one once the stalled
        // writes time out.
        let started = Instant::now();
        let tls = proxy.tls(&[b"http/1.1"]).await;
        let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        tokio::spawn(connection);
        let request = Request::get("/small")
            .header("host", "localhost")
            .body(full(Bytes::new()))
            .expect("request");
        let response = send.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, Bytes::from("small"));
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "the fourth client waited {waited:?}"
        );
        // The stalled downloads' origin connections are closed, not held.
        assert!(
            eventually(Duration::from_secs(5), || origin.connections.open() <= 1).await,
            "origin connections still open: {}",
            origin.connections.open()
        );
        drop(stalled);
    })
    .await;
}

/// An HTTP/2 client whose streams get no flow-control window at all.
async fn zero_window_client(proxy: &TestProxy, enable_push: bool) -> H2Client {
    let tls = proxy.tls(&[b"h2"]).await;
    let (send, connection) = h2::client::Builder::new()
        .enable_push(enable_push)
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    H2Client::from_parts(send, format!("localhost:{}", proxy.addr.port()))
}

/// Open `paths` as streams on `client` without reading anything back.
async fn open_streams(
    client: &mut H2Client,
    paths: impl Iterator<Item = String>,
) -> Vec<h2::client::ResponseFuture> {
    let mut responses = Vec::new();
    for path in paths {
        client.send = client.send.clone().ready().await.expect("ready");
        let request = client.request("GET", &path).body(()).expect("request");
        let (response, _) = client.send.send_request(request, true).expect("send");
        responses.push(response);
    }
    responses
}

#[tokio::test]
async fn stalled_downloads_never_hold_more_origin_connections_than_the_limit() {
    bounded(async {
        let origin = TestOrigin::start(site()).await;
        // Appended to the [origin] table the test config ends with: one
        // client connection may hold 4 of these 32 (an eighth, and never
        // fewer than four).
        let extra = "max_concurrent_requests = 32\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        // Four clients, 100 downloads each, none ever read.
        let mut clients = Vec::new();
        let mut pending = Vec::new();
        for _ in 0..4 {
            let mut client = zero_window_client(&proxy, false).await;
            pending.push(open_streams(&mut client, (0..100).map(|_| "/big".to_string())).await);
            clients.push(client);
        }
        assert!(
            eventually(Duration::from_secs(5), || origin.connections.open() >= 4).await,
            "the stalled downloads reach the origin"
        );
        // Give the proxy time to (wrongly) open more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            origin.connections.peak() <= 16,
            "the origin saw {} connections at once",
            origin.connections.peak()
        );
        // Another client is still served, at once.
        let started = Instant::now();
        let mut other = proxy.h2(false).await;
        let exchange = other.get("/small").await;
        assert_eq!(exchange.status, StatusCode::OK);
        assert_eq!(exchange.body.expect("body"), Bytes::from("small"));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(origin.connections.peak() <= 32);
        drop(pending);
    })
    .await;
}

#[tokio::test]
async fn stalled_pushes_give_their_origin_connections_back() {
    bounded(async {
        let origin = TestOrigin::start(site()).await;
        // Appended to the [origin] table the test config ends with.
        let extra = "max_concurrent_requests = 8\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        // One push-enabled client with a zero window asks for 100 pages of
        // ten pushed assets each, and reads nothing.
        let mut client = zero_window_client(&proxy, true).await;
        let pending = open_streams(&mut client, (0..100).map(|n| format!("/page/{n}"))).await;
        assert!(
            eventually(Duration::from_secs(5), || {
                origin.seen_paths().iter().any(|p| p.ends_with(".css"))
            })
            .await,
            "pushes were fetched"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            origin.connections.peak() <= 8,
            "the origin saw {} connections at once",
            origin.connections.peak()
        );
        // The pushed bodies were read whole, so their connections went back
        // to the pool: another client is served at once.
        let started = Instant::now();
        let mut other = proxy.h2(false).await;
        let exchange = other.get("/small").await;
        assert_eq!(exchange.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(origin.connections.peak() <= 8);
        drop(pending);
    })
    .await;
}
