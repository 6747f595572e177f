//! Requests and responses pass through both frontends intact.

mod support;

use bytes::Bytes;
use http::StatusCode;
use support::*;

fn site() -> Routes {
    Routes::new()
        .route("/", Resp::html("<h1>hello</h1>"))
        .route(
            "/plain",
            Resp::new(200, "plain body").header("content-type", "text/plain"),
        )
}

#[tokio::test]
async fn h2_get_is_forwarded_with_its_body() {
    let origin = TestOrigin::routes(site()).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h2(true).await;
    let exchange = client.get("/plain").await;
    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(exchange.body.unwrap(), Bytes::from("plain body"));
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/plain");
    assert_eq!(seen[0].headers["host"], client.authority.as_str());
}

#[tokio::test]
async fn h1_get_is_forwarded_with_its_body() {
    let origin = TestOrigin::routes(site()).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h1().await;
    let response = client.get("/plain").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.unwrap(), Bytes::from("plain body"));
    let response = client.get("/missing").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(origin.seen_paths(), vec!["/plain", "/missing"]);
}

#[tokio::test]
async fn h1_pipelined_requests_are_answered_in_order() {
    let origin = TestOrigin::routes(
        Routes::new()
            .route("/a", Resp::new(200, "first"))
            .route("/b", Resp::new(200, "second")),
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    // Both requests in one write, the second closing the connection.
    let requests = b"GET /a HTTP/1.1\r\nHost: localhost\r\n\r\nGET /b HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let reply = wire::h1_raw(&proxy, requests, std::time::Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&reply.bytes);
    assert!(reply.closed, "{text}");
    let first = text.find("first").expect("first response");
    let second = text.find("second").expect("second response");
    assert!(first < second, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(origin.seen_paths(), vec!["/a", "/b"]);
}
