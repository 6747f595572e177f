//! A broken or hostile origin: unreachable, silent, truncating, badly
//! framed, oversized, chatty with 1xx, or answering before the upload ends.
//! The client gets a clean error status, or a stream reset when the response
//! had already started, and never a response that looks complete but is not.
//! Origins here are raw sockets writing exact bytes.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

const SHORT_HEADER_TIMEOUT: &str = "[timeouts]\norigin_response_header = \"300ms\"\n";

async fn h2_get(proxy: &TestProxy, path: &str) -> Result<H2Reply, h2::Error> {
    let mut client = proxy.h2(false).await;
    let request = client.request("GET", path).body(()).unwrap();
    client.try_exchange(request, None).await
}

async fn h2_status(proxy: &TestProxy, path: &str) -> StatusCode {
    let result = h2_get(proxy, path).await;
    match result {
        Ok(reply) => reply.status,
        Err(error) => panic!("{path}: no response: {error}"),
    }
}

/// The h2 response started and was then reset with INTERNAL_ERROR: never
/// an END_STREAM that would make a cut-off body look whole.
fn assert_reset_with_internal_error(case: &str, result: &Result<H2Reply, h2::Error>) {
    let reason = match result {
        Ok(reply) => reply.body_error.as_ref().and_then(h2::Error::reason),
        Err(error) => error.reason(),
    };
    assert_eq!(
        reason,
        Some(h2::Reason::INTERNAL_ERROR),
        "{case}: {}",
        describe(result)
    );
}

// --- Origin down -----------------------------------------------------------

#[tokio::test]
async fn origin_refusing_connections_gets_a_prompt_502_on_both_frontends() {
    bounded(async {
        let url = refused_origin_url().await;
        let proxy = TestProxy::start(&url, "").await;
        let started = Instant::now();
        assert_eq!(h2_status(&proxy, "/").await, StatusCode::BAD_GATEWAY);
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "502 took {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn silent_origin_gets_504_after_the_response_header_timeout() {
    bounded(async {
        let origin = RawOrigin::start(|_| vec![OriginStep::Hang]).await;
        let proxy = TestProxy::start(&origin.url(), SHORT_HEADER_TIMEOUT).await;
        let started = Instant::now();
        assert_eq!(h2_status(&proxy, "/").await, StatusCode::GATEWAY_TIMEOUT);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "h2 504 after {elapsed:?}"
        );
        let started = Instant::now();
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "h1 504 after {elapsed:?}"
        );
        // The abandoned origin connections are closed, not pooled.
        origin
            .wait_until("origin connections closed", |o| o.closed() >= 2)
            .await;
    })
    .await;
}

// --- Truncated bodies ------------------------------------------------------

const TRUNCATED: [(&str, &[u8]); 4] = [
    (
        "chunked with no chunks",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "chunk cut short",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\na",
    ),
    (
        "chunk size line only",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
    ),
    (
        "body shorter than content-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    ),
];

#[tokio::test]
async fn h2_truncated_origin_bodies_end_in_rst_internal_error_never_end_stream() {
    bounded(async {
        for (case, bytes) in TRUNCATED {
            let origin = RawOrigin::always(bytes).await;
            let proxy = TestProxy::start(&origin.url(), "").await;
            let result = h2_get(&proxy, "/").await;
            assert_reset_with_internal_error(case, &result);
        }
    })
    .await;
}

#[tokio::test]
async fn h1_truncated_origin_bodies_close_the_connection_without_completing_the_body() {
    bounded(async {
        for (case, bytes) in TRUNCATED {
            let origin = RawOrigin::always(bytes).await;
            let proxy = TestProxy::start(&origin.url(), "").await;
            let host = format!("localhost:{}", proxy.addr.port());
            let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let reply = h1_raw(&proxy, request.as_bytes(), STEP_TIMEOUT).await;
            assert!(reply.closed, "{case}: connection left open");
            if reply.bytes.is_empty() {
                // Closed before even the head went out: nothing looks complete.
                continue;
            }
            assert_eq!(reply.status(), Some(200), "{case}: {}", reply.text());
            let text = reply.text();
            let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
            let head = head.to_ascii_lowercase();
            if head.contains("transfer-encoding: chunked") {
                assert!(
                    !body.ends_with("0\r\n\r\n"),
                    "{case}: chunked body was terminated: {body:?}"
                );
            } else {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .expect("a framed body")
                    .parse()
                    .unwrap();
                assert!(
                    body.len() < length,
                    "{case}: body of {} bytes looks complete",
                    body.len()
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn h2_origin_stalling_mid_body_is_reset_with_internal_error() {
    bounded(async {
        let origin = RawOrigin::start(|_| {
            vec![
                OriginStep::write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                OriginStep::Hang,
            ]
        })
        .await;
        let extra = "[timeouts]\norigin_response_header = \"300ms\"\norigin_read = \"300ms\"\nclient_idle = \"1s\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let result = tokio::time::timeout(Duration::from_secs(5), h2_get(&proxy, "/"))
            .await
            .expect("the stalled origin body was never cut off");
        assert_reset_with_internal_error("stalled body", &result);
    })
    .await;
}

#[tokio::test]
async fn h1_origin_stalling_mid_body_closes_the_client_connection() {
    bounded(async {
        let origin = RawOrigin::start(|_| {
            vec![
                OriginStep::write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                OriginStep::Hang,
            ]
        })
        .await;
        let extra = "[timeouts]\norigin_read = \"300ms\"\n";
        let proxy = TestProxy::start(&origin.url(), extra).await;
        let mut client = proxy.h1().await;
        let response = tokio::time::timeout(Duration::from_secs(5), client.get("/"))
            .await
            .expect("the stalled origin body was never cut off");
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            response.body.is_err(),
            "a truncated body looked complete: {:?}",
            response.body
        );
    })
    .await;
}

// --- Bad framing -----------------------------------------------------------

#[tokio::test]
async fn origin_responses_with_unparseable_framing_or_fields_get_502() {
    bounded(async {
        let cases: [(&str, &[u8]); 9] = [
            (
                "obs-fold",
                b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
            ),
            (
                "content-length list",
                b"HTTP/1.1 200 OK\r\nContent-Length: 1,2\r\n\r\nok",
            ),
            (
                "signed content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            ),
            (
                "two content-lengths",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok",
            ),
            (
                "NUL in a value",
                b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
            ),
            (
                "space in a name",
                b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nok",
            ),
            (
                "space before the colon",
                b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok",
            ),
            (
                "HTTP/1.0 with transfer-encoding",
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            ),
            ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        ];
        for (case, bytes) in cases {
            let origin = RawOrigin::always(bytes).await;
            let proxy = TestProxy::start(&origin.url(), "").await;
            assert_eq!(
                h2_status(&proxy, "/").await,
                StatusCode::BAD_GATEWAY,
                "{case}"
            );
            let reply = proxy.h1().await.get("/").await;
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "h1: {case}");
        }
    })
    .await;
}

#[tokio::test]
async fn origin_transfer_encoding_not_ending_in_chunked_gets_502() {
    bounded(async {
        let cases: [(&str, &[u8]); 2] = [
            (
                "unknown coding",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: foo\r\n\r\nhello",
            ),
            (
                "chunked not last",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nhello",
            ),
        ];
        for (case, bytes) in cases {
            let origin = RawOrigin::always(bytes).await;
            let proxy = TestProxy::start(&origin.url(), "").await;
            let result = h2_get(&proxy, "/").await;
            assert_eq!(
                result.as_ref().map(|r| r.status).ok(),
                Some(StatusCode::BAD_GATEWAY),
                "{case}: {}",
                describe(&result)
            );
        }
    })
    .await;
}

#[tokio::test]
async fn origin_chunk_size_overflow_never_completes_the_response() {
    bounded(async {
        let origin = RawOrigin::always(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabc",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let result = h2_get(&proxy, "/").await;
        if let Ok(reply) = &result {
            if reply.status == StatusCode::BAD_GATEWAY {
                return;
            }
        }
        assert_reset_with_internal_error("chunk size >= 2^64", &result);
    })
    .await;
}

#[tokio::test]
async fn origin_content_length_beside_chunked_is_dropped_and_the_chunked_body_relayed() {
    bounded(async {
        let origin = RawOrigin::always(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let reply = h2_get(&proxy, "/").await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
        assert_eq!(reply.body, Bytes::from("hello"));
        assert!(!reply.headers.contains_key("content-length"));
        assert!(!reply.headers.contains_key("transfer-encoding"));
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), Bytes::from("hello"));
        assert_ne!(
            reply.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"100"[..])
        );
    })
    .await;
}

// --- Responses without a body ----------------------------------------------

#[tokio::test]
async fn origin_204_declaring_a_body_gets_502() {
    bounded(async {
        let cases: [(&str, &[u8]); 2] = [
            (
                "204 with content-length 5",
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
            ),
            (
                "204 with transfer-encoding",
                b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ];
        for (case, bytes) in cases {
            let origin = RawOrigin::always(bytes).await;
            let proxy = TestProxy::start(&origin.url(), "").await;
            assert_eq!(
                h2_status(&proxy, "/").await,
                StatusCode::BAD_GATEWAY,
                "{case}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn origin_204_with_content_length_zero_is_relayed_without_it() {
    bounded(async {
        let origin =
            RawOrigin::always(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let reply = h2_get(&proxy, "/").await.expect("response");
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());
        assert!(
            !reply.headers.contains_key("content-length"),
            "{:?}",
            reply.headers
        );
    })
    .await;
}

#[tokio::test]
async fn origin_304_with_a_representation_length_has_no_body_and_keeps_the_pool_in_sync() {
    bounded(async {
        // RFC 9110 §8.6 lets a 304 carry the Content-Length of the selected
        // representation; no body follows it.
        let origin = RawOrigin::start(|index| {
            let response: &[u8] = if index == 0 {
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
            };
            vec![OriginStep::write(response)]
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let reply = h2_get(&proxy, "/cached").await.expect("response");
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
        assert!(reply.body.is_empty());
        assert!(reply.body_error.is_none(), "{:?}", reply.body_error);
        let next = h2_get(&proxy, "/next").await.expect("response");
        assert_eq!(next.status, StatusCode::OK);
        assert_eq!(next.body, Bytes::from("fresh"));
    })
    .await;
}

// --- Bytes after a complete response ---------------------------------------

#[tokio::test]
async fn origin_bytes_after_a_complete_response_are_discarded_with_its_connection() {
    bounded(async {
        let origin = RawOrigin::start(|index| {
            let response: &[u8] = if index == 0 {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
            };
            vec![OriginStep::write(response)]
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let first = h2_get(&proxy, "/first").await.expect("response");
        assert_eq!(first.body, Bytes::from("hello"));
        for path in ["/second", "/third"] {
            let reply = h2_get(&proxy, path).await.expect("response");
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.body, Bytes::from("fresh"), "{path} got stale bytes");
        }
        assert_eq!(origin.heads().len(), 3);
        assert!(origin.accepted() >= 2, "the tainted connection was reused");
    })
    .await;
}

// --- Oversized heads -------------------------------------------------------

#[tokio::test]
async fn origin_response_head_over_the_size_limit_gets_502() {
    bounded(async {
        let mut response = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        response.extend(std::iter::repeat_n(b'a', 200 * 1024));
        response.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        let origin = RawOrigin::always(response).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        assert_eq!(h2_status(&proxy, "/").await, StatusCode::BAD_GATEWAY);
    })
    .await;
}

#[tokio::test]
async fn origin_response_with_too_many_fields_gets_502() {
    bounded(async {
        let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..2000 {
            response.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
        }
        response.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        let origin = RawOrigin::always(response).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        assert_eq!(h2_status(&proxy, "/").await, StatusCode::BAD_GATEWAY);
    })
    .await;
}

// --- 1xx -------------------------------------------------------------------

#[tokio::test]
async fn origin_unsolicited_100_continue_is_skipped() {
    bounded(async {
        let origin = RawOrigin::always(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let reply = h2_get(&proxy, "/").await.expect("response");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, Bytes::from("hello"));
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), Bytes::from("hello"));
    })
    .await;
}

#[tokio::test]
async fn origin_103_early_hints_are_followed_by_the_final_response() {
    bounded(async {
        let origin = RawOrigin::always(
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut raw = RawH2::connect_with_settings(&proxy, &[(h2setting::ENABLE_PUSH, 0)]).await;
        let fields = raw.request("GET", "/");
        raw.headers(1, &fields, true).await;
        let outcome = raw.outcome(1).await;
        assert!(outcome.end_stream, "{outcome:?}");
        assert_eq!(outcome.statuses.last().copied().flatten(), Some(200), "{outcome:?}");
        assert_eq!(outcome.data, b"hello");
        for informational in &outcome.statuses[..outcome.statuses.len() - 1] {
            assert_eq!(*informational, Some(103), "{outcome:?}");
        }
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), Bytes::from("hello"));
    })
    .await;
}

#[tokio::test]
async fn origin_flood_of_103_responses_reaches_the_client_bounded() {
    bounded(async {
        let mut response = Vec::new();
        for _ in 0..10_000 {
            response.extend_from_slice(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload; as=style\r\n\r\n",
            );
        }
        response.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let origin = RawOrigin::always(response).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut raw = RawH2::connect_with_settings(&proxy, &[(h2setting::ENABLE_PUSH, 0)]).await;
        let fields = raw.request("GET", "/");
        raw.headers(1, &fields, true).await;
        let outcome = raw.outcome(1).await;
        assert!(
            outcome.statuses.len() <= 10,
            "{} header blocks relayed",
            outcome.statuses.len()
        );
        let completed = outcome.end_stream && outcome.data == b"hello";
        let refused = outcome.statuses.first() == Some(&Some(502));
        assert!(completed || refused, "{outcome:?}");
    })
    .await;
}

#[tokio::test]
async fn origin_101_to_a_plain_request_gets_502() {
    bounded(async {
        let origin = RawOrigin::start(|_| {
            vec![
                OriginStep::write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                ),
                OriginStep::Hang,
            ]
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), SHORT_HEADER_TIMEOUT).await;
        assert_eq!(h2_status(&proxy, "/").await, StatusCode::BAD_GATEWAY);
        let reply = proxy.h1().await.get("/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    })
    .await;
}

// --- Early response to an upload -------------------------------------------

#[tokio::test]
async fn h2_early_origin_413_is_delivered_then_the_upload_is_reset_with_no_error() {
    bounded(async {
        let origin = RawOrigin::start_before_body(|_| {
            vec![
                OriginStep::write(
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
                ),
                OriginStep::Close,
            ]
        })
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", (1u64 << 20).to_string())
            .body(())
            .unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, mut upload) = send.send_request(request, false).unwrap();
        upload
            .send_data(Bytes::from(vec![b'u'; 16 * 1024]), false)
            .unwrap();
        let response = step("413 head", response).await.expect("413 response");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = step("413 body", read_body(response.into_body())).await;
        assert_eq!(body, Ok(Bytes::from("too big\n")));
        let reason = step(
            "upload reset",
            std::future::poll_fn(|cx| upload.poll_reset(cx)),
        )
        .await
        .expect("reset reason");
        assert_eq!(reason, h2::Reason::NO_ERROR);
    })
    .await;
}
