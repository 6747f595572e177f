//! Listener and origin variants: the cleartext listener (HTTP/1.1 and h2c
//! prior knowledge), a Unix-socket origin, and the metrics endpoint.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::{TcpStream, UnixListener};

fn page() -> Routes {
    Routes::new()
        .route(
            "/",
            Resp::html("cleartext").link("</a.css>; rel=preload; as=style"),
        )
        .route("/a.css", Resp::new(200, "a{}"))
}

#[tokio::test]
async fn cleartext_listener_speaks_h2c_prior_knowledge_with_pushes() {
    let origin = TestOrigin::routes(page()).await;
    let proxy = TestProxy::start_with(&origin.url(), "", true).await;
    let tcp = TcpStream::connect(proxy.plain_addr.unwrap()).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = H2Client::from_parts(send, "localhost".to_string());
    let request = Request::get("http://localhost/").body(()).unwrap();
    let exchange = client.exchange(request, None).await;
    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(exchange.pushed_paths(), vec!["/a.css"]);
    assert_eq!(exchange.body.unwrap(), Bytes::from("cleartext"));
    let seen = origin.seen();
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn cleartext_listener_speaks_http1() {
    let origin = TestOrigin::routes(page()).await;
    let proxy = TestProxy::start_with(&origin.url(), "", true).await;
    let tcp = TcpStream::connect(proxy.plain_addr.unwrap()).await.unwrap();
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get("/")
        .header("host", "localhost")
        .body(full(Bytes::new()))
        .unwrap();
    let response = bounded(send.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from("cleartext"));
}

#[tokio::test]
async fn unix_socket_origin_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("origin.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let host = request
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(http::Response::new(full(format!(
                        "unix says hi to {host}"
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let proxy = TestProxy::start(&format!("unix:{}", socket.display()), "").await;
    let mut client = proxy.h2(false).await;
    let exchange = client.get("/").await;
    assert_eq!(exchange.status, StatusCode::OK);
    let expected = format!("unix says hi to {}", client.authority);
    assert_eq!(exchange.body.unwrap(), Bytes::from(expected));
}

#[tokio::test]
async fn metrics_endpoint_counts_requests_and_pushes() {
    let origin = TestOrigin::routes(page()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = TestProxy::start(
        &origin.url(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    let mut client = proxy.h2(true).await;
    let exchange = client.get("/").await;
    assert_eq!(exchange.pushes.len(), 1);
    let text = bounded(async {
        loop {
            if let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                let (mut send, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(connection);
                let request = Request::get("/metrics")
                    .header("host", "localhost")
                    .body(full(Bytes::new()))
                    .unwrap();
                let response = send.send_request(request).await.unwrap();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                return String::from_utf8(body.to_vec()).unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(text.contains("linkpush_push_promises_total 1"), "{text}");
    assert!(
        text.contains("linkpush_push_decisions_total{reason=\"pushed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("linkpush_requests_total{protocol=\"HTTP/2\",class=\"2xx\"}"),
        "{text}"
    );
}
