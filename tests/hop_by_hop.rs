//! Hop-by-hop and forwarding fields: connection-specific fields never cross
//! the proxy in either direction, and the client-address fields the origin
//! sees are the proxy's own statement about the TCP peer, not the client's.

mod support;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use support::*;

/// Fields an HTTP/2 response may not carry (RFC 9113 §8.2.2), plus the ones
/// named in the origin's `Connection` lines.
const HOP_BY_HOP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Connection: close, x-secret\r\n\
Connection: X-Other\r\n\
X-Secret: s\r\n\
X-Other: o\r\n\
Keep-Alive: timeout=5, max=100\r\n\
Upgrade: h2c\r\n\
Proxy-Connection: keep-alive\r\n\
Proxy-Authenticate: Basic realm=\"origin\"\r\n\
X-Kept: yes\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
5\r\nhello\r\n0\r\n\r\n";

const NEVER_RELAYED: [&str; 8] = [
    "connection",
    "x-secret",
    "x-other",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "transfer-encoding",
];

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

// --- Origin response fields (RFC 9110 §7.6.1) ------------------------------

#[tokio::test]
async fn origin_hop_by_hop_response_fields_are_removed_for_h2_clients() {
    bounded(async {
        let origin = RawOrigin::always(HOP_BY_HOP_RESPONSE).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h2(false).await;
        let request = client.request("GET", "/").body(()).unwrap();
        let reply = client.try_exchange(request, None).await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
        assert_eq!(reply.body, Bytes::from("hello"));
        for name in NEVER_RELAYED {
            assert!(
                !reply.headers.contains_key(name),
                "{name} relayed: {:?}",
                reply.headers
            );
        }
        assert_eq!(values(&reply.headers, "x-kept"), ["yes"]);
    })
    .await;
}

#[tokio::test]
async fn origin_hop_by_hop_response_fields_are_removed_for_h1_clients() {
    bounded(async {
        let origin = RawOrigin::always(HOP_BY_HOP_RESPONSE).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), Bytes::from("hello"));
        for name in [
            "x-secret",
            "x-other",
            "keep-alive",
            "upgrade",
            "proxy-connection",
            "proxy-authenticate",
        ] {
            assert!(
                !reply.headers.contains_key(name),
                "{name} relayed: {:?}",
                reply.headers
            );
        }
        // The proxy frames the body itself; the origin's fields do not leak.
        for value in values(&reply.headers, "connection") {
            assert!(
                !value.to_ascii_lowercase().contains("x-"),
                "connection: {value}"
            );
        }
        let framing = values(&reply.headers, "transfer-encoding");
        assert!(framing.is_empty() || framing == ["chunked"], "{framing:?}");
        assert_eq!(values(&reply.headers, "x-kept"), ["yes"]);
    })
    .await;
}

// --- Client request fields (RFC 9110 §7.6.1) -------------------------------

fn origin_routes() -> Routes {
    Routes::new().route("/", Resp::new(200, "home"))
}

#[tokio::test]
async fn client_hop_by_hop_request_fields_are_not_forwarded_from_h1() {
    bounded(async {
        let origin = TestOrigin::routes(origin_routes()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h1().await;
        let request = client
            .request("GET", "/")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("proxy-authorization", "Basic dXNlcjpwdw==")
            .header("x-kept", "yes")
            .body(full(Bytes::new()))
            .unwrap();
        let reply = client.exchange(request).await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        let headers = &seen[0].headers;
        for name in [
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert!(!headers.contains_key(name), "{name} forwarded: {headers:?}");
        }
        for value in values(headers, "connection") {
            assert!(!value.contains("x-hop"), "connection: {value}");
        }
        assert_eq!(values(headers, "x-kept"), ["yes"]);
    })
    .await;
}

#[tokio::test]
async fn client_hop_by_hop_request_fields_are_not_forwarded_from_h2() {
    bounded(async {
        let origin = TestOrigin::routes(origin_routes()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic dXNlcjpwdw==")
            .header("x-kept", "yes")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        let headers = &origin.seen()[0].headers;
        for name in [
            "te",
            "proxy-authorization",
            "connection",
            "keep-alive",
            "upgrade",
        ] {
            assert!(!headers.contains_key(name), "{name} forwarded: {headers:?}");
        }
        assert_eq!(values(headers, "x-kept"), ["yes"]);
    })
    .await;
}

// --- Forwarding fields (RFC 7239) ------------------------------------------

/// What the origin must see for a client on 127.0.0.1 that addressed
/// `authority` over TLS, whatever the client claimed.
fn assert_forwarding_is_the_proxys_own(headers: &HeaderMap, authority: &str) {
    assert_eq!(
        values(headers, "x-forwarded-for"),
        ["127.0.0.1"],
        "{headers:?}"
    );
    assert_eq!(
        values(headers, "x-forwarded-proto"),
        ["https"],
        "{headers:?}"
    );
    assert_eq!(
        values(headers, "x-forwarded-host"),
        [authority],
        "{headers:?}"
    );
    let forwarded = format!("for=127.0.0.1;host=\"{authority}\";proto=https");
    assert_eq!(
        values(headers, "forwarded"),
        [forwarded.as_str()],
        "{headers:?}"
    );
    assert!(!headers.contains_key("x-real-ip"), "{headers:?}");
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("");
        assert!(
            !value.contains("6.6.6.6") && !value.contains("evil.example"),
            "spoofed value reached the origin in {name}: {value}"
        );
    }
}

#[tokio::test]
async fn spoofed_forwarding_fields_from_h2_clients_are_replaced_with_the_peer_address() {
    bounded(async {
        let origin = TestOrigin::routes(origin_routes()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-for", "127.0.0.1")
            .header("forwarded", "for=6.6.6.6;proto=http;host=evil.example")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "evil.example")
            .header("x-real-ip", "6.6.6.6")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        assert_forwarding_is_the_proxys_own(&origin.seen()[0].headers, &client.authority);
    })
    .await;
}

#[tokio::test]
async fn spoofed_forwarding_fields_from_h1_clients_are_replaced_with_the_peer_address() {
    bounded(async {
        let origin = TestOrigin::routes(origin_routes()).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h1().await;
        let request = client
            .request("GET", "/")
            .header("x-forwarded-for", "6.6.6.6, 10.0.0.1")
            .header("forwarded", "for=6.6.6.6")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "evil.example")
            .header("x-real-ip", "6.6.6.6")
            .body(full(Bytes::new()))
            .unwrap();
        let reply = client.exchange(request).await;
        assert_eq!(reply.status, StatusCode::OK);
        let host = client.host.clone();
        assert_forwarding_is_the_proxys_own(&origin.seen()[0].headers, &host);
    })
    .await;
}

#[tokio::test]
async fn trusted_forwarding_fields_are_extended_with_the_peer_address() {
    bounded(async {
        let origin = TestOrigin::routes(origin_routes()).await;
        let proxy = TestProxy::start(&origin.url(), "[forwarding]\ntrust_incoming = true\n").await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("x-forwarded-for", "203.0.113.7")
            .header("forwarded", "for=203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        let headers = &origin.seen()[0].headers;
        assert_eq!(
            values(headers, "x-forwarded-for"),
            ["203.0.113.7, 127.0.0.1"]
        );
        let forwarded = format!(
            "for=203.0.113.7, for=127.0.0.1;host=\"{}\";proto=https",
            client.authority
        );
        assert_eq!(values(headers, "forwarded"), [forwarded.as_str()]);
        assert!(!headers.contains_key("x-real-ip"), "{headers:?}");
    })
    .await;
}
